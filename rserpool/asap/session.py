"""The PU-PE session layer, sans-IO (RFC 5352 sections 3.8, 3.9 and 6.9;
RFC 5355 sections 2.9 and 2.16).

A *session* is one PU talking to one PE of a pool over one connection on
which the ASAP control channel (PPID 11: ASAP_COOKIE, ASAP_COOKIE_ECHO,
ASAP_BUSINESS_CARD) and the application's data channel (any other PPID) are
multiplexed (RFC 5355 2.16: over TCP they MUST share one connection, so both
are protected by the same TLS session or neither is).

This module holds what both ends share: the data PPID rule, the errors
raised to the application, :class:`Ignored` input, and :class:`CookieSealer`.
The two state machines, neither of which touches a socket or a clock, are
in their own modules:

- :class:`rserpool.asap.pu_session.PuSession`, the pool user's side:
  cookie and business card storage, failover, the send queue;
- :class:`rserpool.asap.pe_session.PeSession`, the pool element's side of
  one connection: the one cookie echo it accepts, the messages it sends.

The cookie is opaque here.  Signing or encrypting it is the application's
business (RFC 5352 3.8, RFC 5355 2.16); :class:`SessionCookies` (over
:class:`CookieSealer`, HMAC) is a helper for applications that want the
usual pattern with freshness: a cookie bound to one session and ordered
within it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from rserpool.wire.codes import PPID_ASAP, PPID_ENRP

__all__ = [
    "DEFAULT_DATA_PPID",
    "CookieError",
    "CookieSealer",
    "Ignored",
    "OpenedCookie",
    "SESSION_ID_SIZE",
    "SessionCookies",
    "SessionBusyError",
    "SessionClosedError",
    "SessionError",
    "check_data_ppid",
]

#: The PPID of application data unless configured otherwise: 0, SCTP's
#: "unspecified", which is what an application that sets no PPID sends.
DEFAULT_DATA_PPID = 0


def check_data_ppid(ppid: int) -> int:
    """``ppid`` if it may carry application data (not ASAP's or ENRP's)."""
    if type(ppid) is not int or not 0 <= ppid <= 0xFFFFFFFF:
        raise ValueError(f"PPID must be a 32-bit unsigned integer: {ppid!r}")
    if ppid in (PPID_ASAP, PPID_ENRP):
        raise ValueError(f"PPID {ppid} is reserved for ASAP/ENRP control messages (RFC 5352 5)")
    return ppid


class SessionError(Exception):
    """Base of the errors the session layer raises to its application."""


class SessionClosedError(SessionError):
    """The session was closed, or gave up after its failover attempts."""


class SessionBusyError(SessionError):
    """A failover is under way and the bounded send queue is full."""


@dataclass(frozen=True, slots=True)
class Ignored:
    """Input that was dropped, with the reason (for the shell's log)."""

    what: str
    why: str


# --------------------------------------------------------------------------
# An application helper: sealed, session-bound cookies


class CookieError(Exception):
    """A cookie that is forged, damaged, from another key or context, too old,
    or not fresh (an older cookie of a session, or one that is already live)."""


_COOKIE_HEADER = struct.Struct("!Bd16sQ")  # version, issued_at, session id, sequence number
_COOKIE_VERSION = 2
_TAG_SIZE = 32
SESSION_ID_SIZE = 16


@dataclass(frozen=True, slots=True)
class OpenedCookie:
    """What a genuine cookie says: which session, which of its cookies
    (``seq``, 1 for the first), when it was sealed, and the state."""

    session_id: bytes
    seq: int
    issued_at: float
    state: bytes


class CookieSealer:
    """HMAC-SHA256 integrity for application cookies (the key is shared by
    the pool's PEs and never by its PUs; RFC 5355 2.16 leaves sharing it to
    the application).

    A sealed cookie is ``version(1) issued_at(8, float) session_id(16)
    seq(8) state tag(32)``; ``context`` (e.g. the pool handle) is bound into
    the tag so a cookie of one pool is refused by another.  The state is
    *not* encrypted.  :class:`SessionCookies` adds the freshness rules.
    """

    def __init__(self, key: bytes, *, context: bytes = b"", max_age: float | None = None) -> None:
        if not isinstance(key, bytes) or len(key) < 16:
            raise ValueError("the cookie key must be at least 16 bytes")
        self._key = key
        self._context = context
        self.max_age = max_age

    def _tag(self, body: bytes) -> bytes:
        prefix = struct.pack("!H", len(self._context)) + self._context
        return hmac.new(self._key, prefix + body, hashlib.sha256).digest()

    def seal(self, state: bytes, now: float, *, session_id: bytes, seq: int) -> bytes:
        if len(session_id) != SESSION_ID_SIZE or not 0 < seq < 2**64:
            raise ValueError("a 16-byte session id and a sequence number from 1 are needed")
        body = _COOKIE_HEADER.pack(_COOKIE_VERSION, now, session_id, seq) + state
        return body + self._tag(body)

    def open(self, cookie: bytes, now: float) -> OpenedCookie:
        """What ``cookie`` says; :class:`CookieError` if it is not genuine or too old."""
        if len(cookie) < _COOKIE_HEADER.size + _TAG_SIZE:
            raise CookieError("cookie too short")
        body, tag = cookie[:-_TAG_SIZE], cookie[-_TAG_SIZE:]
        if not hmac.compare_digest(tag, self._tag(body)):
            raise CookieError("cookie signature does not verify")
        version, issued_at, session_id, seq = _COOKIE_HEADER.unpack_from(body)
        if version != _COOKIE_VERSION:
            raise CookieError(f"unknown cookie version {version}")
        if self.max_age is not None and not (now - self.max_age <= issued_at <= now + 60.0):
            raise CookieError("cookie expired")
        return OpenedCookie(session_id, seq, issued_at, body[_COOKIE_HEADER.size:])


class _Seen:
    __slots__ = ("seq", "owner")

    def __init__(self, seq: int, owner: Any) -> None:
        self.seq = seq  # the highest sequence number issued or accepted here
        self.owner = owner  # the connection the session is live on, or None


class SessionCookies:
    """Sealed cookies bound to one session, for a pool element (sans-IO).

    Each session gets a random 16-byte id; every cookie the PE issues in it
    carries that id and the next sequence number, inside the seal.  The PE
    remembers, for up to ``max_sessions`` sessions (least recently used
    forgotten first), the highest sequence number it issued or accepted and
    the connection (``owner``, any hashable: the application's session
    object) the session is live on.  An echoed cookie is accepted by
    :meth:`resume` only when it is genuine, younger than ``max_age``, not
    older than what this PE has seen of its session (no rollback), and its
    session is not live on another connection here (one cookie, one
    session).  docs/sessions.md states the rule and its limits.
    """

    def __init__(self, key: bytes, *, context: bytes = b"", max_age: float | None = 3600.0,
                 max_sessions: int = 100_000, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.sealer = CookieSealer(key, context=context, max_age=max_age)
        self.max_sessions = max_sessions
        self._random = random_bytes
        self._seen: OrderedDict[bytes, _Seen] = OrderedDict()
        self._owned: dict[Any, bytes] = {}  # owner -> the session id it runs

    def __len__(self) -> int:
        return len(self._seen)

    def _remember(self, session_id: bytes, seen: _Seen) -> None:
        self._seen[session_id] = seen
        self._seen.move_to_end(session_id)
        while len(self._seen) > self.max_sessions:
            old_id, old = self._seen.popitem(last=False)
            if old.owner is not None and self._owned.get(old.owner) == old_id:
                del self._owned[old.owner]

    def start(self, owner: Any) -> bytes:
        """A new session on ``owner``'s connection; its id."""
        self.end(owner)
        session_id = self._random(SESSION_ID_SIZE)
        self._remember(session_id, _Seen(0, owner))
        self._owned[owner] = session_id
        return session_id

    def issue(self, owner: Any, state: bytes, now: float) -> bytes:
        """The next cookie of ``owner``'s session (started or resumed)."""
        session_id = self._owned.get(owner)
        seen = self._seen.get(session_id) if session_id is not None else None
        if seen is None or seen.owner is not owner:
            raise CookieError("no session is live on this connection")
        seen.seq += 1
        self._seen.move_to_end(session_id)  # type: ignore[arg-type]
        return self.sealer.seal(state, now, session_id=session_id, seq=seen.seq)  # type: ignore[arg-type]

    def resume(self, cookie: bytes, owner: Any, now: float) -> OpenedCookie:
        """The echoed ``cookie``'s contents, its session now live on ``owner``;
        :class:`CookieError` (nothing changed) when it must not be trusted."""
        opened = self.sealer.open(cookie, now)
        seen = self._seen.get(opened.session_id)
        if seen is not None:
            if seen.owner is not None and seen.owner is not owner:
                raise CookieError("its session is already live on another connection")
            if opened.seq < seen.seq:
                raise CookieError(f"an older cookie of its session ({opened.seq} < {seen.seq})")
        self.end(owner)
        self._remember(opened.session_id, _Seen(opened.seq, owner))
        self._owned[owner] = opened.session_id
        return opened

    def end(self, owner: Any) -> None:
        """``owner``'s connection ended: its session may be resumed elsewhere
        (from its latest cookie on)."""
        session_id = self._owned.pop(owner, None)
        if session_id is not None:
            seen = self._seen.get(session_id)
            if seen is not None and seen.owner is owner:
                seen.owner = None
