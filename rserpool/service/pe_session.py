"""The pool element's end of the PU-PE session layer over TLS (the Twisted
shell around ``rserpool.asap.pe_session``; the PU's end is
``rserpool.service.pu_session``).

One TLS connection per session carries both channels (RFC 5355 2.16), framed
by the TCP mapping: ASAP control messages (ASAP_COOKIE, ASAP_COOKIE_ECHO,
ASAP_BUSINESS_CARD) with PPID 11, the application's data with the session's
data PPID (default 0, configurable, never 11 or 12).

:class:`SessionServer` is a Twisted factory of channels whose control
messages go to a :class:`~rserpool.asap.pe_session.PeSession` and whose data
goes to a :class:`~rserpool.interfaces.ISessionApplication`; the application sends data, cookies
and business cards through its :class:`AcceptedSession`.
:func:`listen_sessions` puts it behind TLS on an endpoint string.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet import defer, endpoints
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from rserpool.asap.pe_session import (
    BusinessCardReceived, CookieEchoReceived, PeSession, PeSessionSettings,
)
from rserpool.asap.session import DEFAULT_DATA_PPID, check_data_ppid
from rserpool.outputs import Ignored
from rserpool.interfaces import ISessionApplication
from rserpool.security import tls
from rserpool.service.channel import Channel, ChannelSettings, address_text
from rserpool.service.tlsfactory import TLSServerFactory
from rserpool.wire import PoolElement, WireError

__all__ = [
    "SessionServer",
    "AcceptedSession",
    "listen_sessions",
]

_log = Logger()


class AcceptedSession:
    """One PU connection at a PE: the channel handler and the application's handle."""

    def __init__(self, server: SessionServer) -> None:
        self.server = server
        self.core = PeSession(server.pe_settings)
        self.channel: Channel | None = None
        self.ready = False
        self.peer_certificate: Any = None
        self.state: Any = None  # the application's per-session state

    @property
    def ppid(self) -> int:
        return self.server.ppid

    # -- sending ---------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        if self.ready and self.channel is not None:
            self.channel.send_encoded(self.server.ppid, payload)

    def send_cookie(self, cookie: bytes) -> None:
        """Send ASAP_COOKIE; the PU keeps only the latest one."""
        if self.ready and self.channel is not None:
            self.channel.send(self.core.cookie(cookie))

    def send_business_card(self, pool_handle: bytes, pool_elements: Iterable[PoolElement]) -> None:
        """Send ASAP_BUSINESS_CARD: the PEs the PU should fail over to, in order."""
        if self.ready and self.channel is not None:
            self.channel.send(self.core.business_card(pool_handle, tuple(pool_elements)))

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()

    def abort(self) -> None:
        if self.channel is not None:
            self.channel.abort()

    # -- ChannelHandler -------------------------------------------------------------

    def channel_ready(self, channel: Channel) -> None:
        self.channel = channel
        self.ready = True
        if channel.tls:
            try:
                self.peer_certificate = tls.peer_certificate(channel.transport)
            except tls.NotTLSError:
                self.peer_certificate = None
        self.server.application.session_started(self)

    def message_received(self, channel: Channel, message: Any, now: float) -> None:
        app = self.server.application
        for event in self.core.control_received(message, now):
            if type(event) is CookieEchoReceived:
                app.cookie_echoed(self, event.cookie)
            elif type(event) is BusinessCardReceived:
                app.business_card_received(self, event.pool_handle, event.pool_elements)
            elif type(event) is Ignored:
                _log.info("session from {peer} ignored {what}: {why}", peer=address_text(channel.peer),
                          what=event.what_text, why=event.reason)

    def wire_error(self, channel: Channel, ppid: int, error: WireError, now: float) -> None:
        _log.warn("undecodable control message from {peer}: {error}", peer=address_text(channel.peer), error=error)

    def data_received(self, channel: Channel, ppid: int, payload: bytes, now: float) -> None:
        if ppid != self.server.ppid:
            _log.warn("dropped {size} bytes with unexpected PPID {ppid} from {peer}",
                      size=len(payload), ppid=ppid, peer=address_text(channel.peer))
            return
        self.core.data_received(payload)
        if self.ready:
            self.server.application.data_received(self, payload)

    def channel_closed(self, channel: Channel, reason: Failure) -> None:
        self.server.sessions.discard(self)
        if self.ready:
            self.ready = False
            self.server.application.session_ended(self, reason)


class _Refuse(Protocol):
    """Drops the connection at once (over the session limit)."""

    def connectionMade(self) -> None:
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            self.transport.loseConnection()


class SessionServer(Factory):
    """A factory of PE-side session channels (wrap it in TLS: :func:`listen_sessions`)."""

    def __init__(
        self,
        application: ISessionApplication,
        *,
        reactor: Any,
        ppid: int = DEFAULT_DATA_PPID,
        channel_settings: ChannelSettings | None = None,
        pe_settings: PeSessionSettings | None = None,
        tls: bool = True,
        max_sessions: int = 1024,
    ) -> None:
        self.application = application
        self.reactor = reactor
        self.ppid = check_data_ppid(ppid)
        self.channel_settings = channel_settings or ChannelSettings()
        self.pe_settings = pe_settings or PeSessionSettings()
        self.tls = tls
        self.max_sessions = max_sessions
        self.sessions: set[AcceptedSession] = set()

    def buildProtocol(self, addr: Any) -> Protocol:
        if len(self.sessions) >= self.max_sessions:
            # Not None: a TLS wrapping factory cannot wrap "no protocol".
            _log.warn("refusing session from {addr}: {n} sessions open", addr=addr, n=len(self.sessions))
            return _Refuse()
        session = AcceptedSession(self)
        self.sessions.add(session)
        channel = Channel(session, self.reactor, self.channel_settings, tls=self.tls)
        channel.factory = self
        session.channel = channel
        return channel

    def abort_all(self) -> None:
        """Drop every session at once (a PE that dies)."""
        for session in list(self.sessions):
            if session.channel is not None:
                session.channel.abort()


def listen_sessions(
    reactor: Any,
    description: str,
    server: SessionServer,
    tls_options: Any,
    *,
    allow_plaintext: bool = False,
) -> defer.Deferred[Any]:
    """Listen on the endpoint string ``description`` (e.g.
    ``tcp:0:interface=127.0.0.1``) with TLS; fires with the listening port.

    ``tls_options`` is a server connection creator (:func:`rserpool.security.tls.server_options`);
    ``None`` is refused unless ``allow_plaintext`` (logged as critical).
    """
    factory: Any = server
    if tls_options is None:
        if not allow_plaintext:
            raise ValueError("PU-PE sessions need TLS (pass allow_plaintext=True to override)")
        _log.critical("INSECURE: PU-PE sessions on {where} run WITHOUT TLS", where=description)
        server.tls = False
    else:
        factory = TLSServerFactory(tls_options, server, reactor)
    return endpoints.serverFromString(reactor, description).listen(factory)
