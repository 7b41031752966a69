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
business (RFC 5352 3.8, RFC 5355 2.16); :class:`CookieSealer` is a small
HMAC helper for applications that want the usual pattern.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from rserpool.wire.codes import PPID_ASAP, PPID_ENRP

__all__ = [
    "DEFAULT_DATA_PPID",
    "CookieError",
    "CookieSealer",
    "Ignored",
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
# An application helper: sealed cookies


class CookieError(Exception):
    """A cookie that is forged, damaged, from another key or context, or too old."""


_COOKIE_HEADER = struct.Struct("!Bd")
_COOKIE_VERSION = 1
_TAG_SIZE = 32


class CookieSealer:
    """HMAC-SHA256 integrity for application cookies (the key is shared by
    the pool's PEs and never by its PUs; RFC 5355 2.16 leaves sharing it to
    the application).

    A sealed cookie is ``version(1) issued_at(8, float) state tag(32)``;
    ``context`` (e.g. the pool handle) is bound into the tag so a cookie of
    one pool is refused by another.  The state is *not* encrypted.
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

    def seal(self, state: bytes, now: float) -> bytes:
        body = _COOKIE_HEADER.pack(_COOKIE_VERSION, now) + state
        return body + self._tag(body)

    def open(self, cookie: bytes, now: float) -> bytes:
        """The state inside ``cookie``; :class:`CookieError` if it is not genuine or too old."""
        if len(cookie) < _COOKIE_HEADER.size + _TAG_SIZE:
            raise CookieError("cookie too short")
        body, tag = cookie[:-_TAG_SIZE], cookie[-_TAG_SIZE:]
        if not hmac.compare_digest(tag, self._tag(body)):
            raise CookieError("cookie signature does not verify")
        version, issued_at = _COOKIE_HEADER.unpack_from(body)
        if version != _COOKIE_VERSION:
            raise CookieError(f"unknown cookie version {version}")
        if self.max_age is not None and not (now - self.max_age <= issued_at <= now + 60.0):
            raise CookieError("cookie expired")
        return body[_COOKIE_HEADER.size:]
