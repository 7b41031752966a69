"""The echo pool element's side of the PU-PE session layer.

:class:`EchoSessionApplication` echoes every data message back and keeps one
piece of per-session state, the number of messages echoed, in an
HMAC-sealed, session-bound cookie (``rserpool.asap.session.SessionCookies``):
after each echo it sends the PU a fresh ASAP_COOKIE; when a PU fails over to
this PE and echoes a cookie, the PE checks the seal (key shared by the
pool's PEs, context = the pool handle) and its freshness (not older than
what this PE has seen of the session, the session not live on another
connection here) and continues the count.  A cookie that fails ends the
session: the PE never trusts state it did not seal, nor a stale copy of it.

Plug it into the demo echo PE (``rserpool.demo.echo_pe``)::

    server = echo_session_server(reactor, cookie_key=key)
    EchoPoolElement(reactor, server_tls_options=..., protocol_factory=server, ...)
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rserpool.asap.session import DEFAULT_DATA_PPID, CookieError, SessionCookies
from rserpool.interfaces import ISessionApplication
from rserpool.service.channel import ChannelSettings
from rserpool.service.pe_session import AcceptedSession, SessionServer

__all__ = ["EchoSessionApplication", "echo_session_server"]

_log = Logger()
_COUNT = struct.Struct("!Q")


@implementer(ISessionApplication)
class EchoSessionApplication:
    """An :class:`~rserpool.interfaces.ISessionApplication` that echoes."""

    def __init__(self, cookie_key: bytes, *, pool_handle: bytes = b"echo", clock: Any,
                 cookie_max_age: float | None = 3600.0, business_card: Any = None) -> None:
        self.cookies = SessionCookies(cookie_key, context=pool_handle, max_age=cookie_max_age)
        self.pool_handle = pool_handle
        self.clock = clock
        #: ``callable() -> tuple[PoolElement, ...]`` giving the failover order to send
        #: to new PUs (None: no business card).
        self.business_card = business_card
        self.sessions_started = 0
        self.cookies_accepted = 0
        self.cookies_refused = 0

    def session_started(self, session: AcceptedSession) -> None:
        self.sessions_started += 1
        session.state = 0
        self.cookies.start(session)
        if self.business_card is not None:
            pes = tuple(self.business_card())
            if pes:
                session.send_business_card(self.pool_handle, pes)

    def cookie_echoed(self, session: AcceptedSession, cookie: bytes) -> None:
        try:
            opened = self.cookies.resume(cookie, session, self.clock.seconds())
            state = opened.state
            if len(state) != _COUNT.size:
                raise CookieError("unexpected cookie contents")
        except CookieError as exc:
            self.cookies_refused += 1
            _log.warn("closing session from {peer}: its cookie is not ours ({error})",
                      peer=session.channel.peer if session.channel else None, error=exc)
            session.abort()
            return
        self.cookies_accepted += 1
        (session.state,) = _COUNT.unpack(state)
        _log.info("session resumed after failover at message {count}", count=session.state)

    def business_card_received(self, session: AcceptedSession, pool_handle: bytes,
                               pool_elements: tuple[Any, ...]) -> None:
        pass

    def data_received(self, session: AcceptedSession, payload: bytes) -> None:
        session.send(payload)
        session.state = (session.state or 0) + 1
        session.send_cookie(self.cookies.issue(session, _COUNT.pack(session.state), self.clock.seconds()))

    def session_ended(self, session: AcceptedSession, reason: Failure) -> None:
        self.cookies.end(session)


def echo_session_server(
    reactor: Any,
    *,
    cookie_key: bytes,
    pool_handle: bytes = b"echo",
    ppid: int = DEFAULT_DATA_PPID,
    channel_settings: ChannelSettings | None = None,
    business_card: Any = None,
) -> SessionServer:
    """A ``SessionServer`` running :class:`EchoSessionApplication`; pass it to
    ``EchoPoolElement(protocol_factory=...)`` (which adds TLS)."""
    app = EchoSessionApplication(cookie_key, pool_handle=pool_handle, clock=reactor,
                                 business_card=business_card)
    return SessionServer(app, reactor=reactor, ppid=ppid, channel_settings=channel_settings)
