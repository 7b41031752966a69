"""The pool element's side of the PU-PE session layer, sans-IO (RFC 5352
sections 3.8 and 3.9; RFC 5355 section 2.16).

:class:`PeSession` is the pool element's side of one PU connection: it
accepts one ASAP_COOKIE_ECHO, and only as the first thing the PU sends, and
ignores any later one; it builds the ASAP_COOKIE and ASAP_BUSINESS_CARD
messages the application sends.  The shell is
:mod:`rserpool.service.pe_session`; the layer as a whole is described in
:mod:`rserpool.asap.session`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from rserpool.outputs import Ignored
from rserpool.wire import AsapBusinessCard, AsapCookie, AsapCookieEcho, PoolElement

__all__ = [
    "BusinessCardReceived",
    "CookieEchoReceived",
    "PeEvent",
    "PeSession",
    "PeSessionSettings",
]


@dataclass(frozen=True, slots=True)
class CookieEchoReceived:
    """PE side: the PU echoed this cookie (the first and only one accepted)."""

    cookie: bytes


@dataclass(frozen=True, slots=True)
class BusinessCardReceived:
    """PE side: the PU (a PU/PE combination) sent its business card."""

    pool_handle: bytes
    pool_elements: tuple[PoolElement, ...]


@dataclass(frozen=True, slots=True)
class PeSessionSettings:
    max_cookie_size: int = 8192
    max_card_entries: int = 32

    def __post_init__(self) -> None:
        if not 0 <= self.max_cookie_size <= 0xFFFF - 4:
            raise ValueError("max_cookie_size must fit a Cookie parameter")


PeEvent = Union[CookieEchoReceived, BusinessCardReceived, Ignored]


class PeSession:
    """The pool element's side of one PU connection (sans-IO).

    Only the first thing the PU sends may be its ASAP_COOKIE_ECHO (RFC 5352
    3.8: "the first message on the control channel"; over one multiplexed
    connection that also means before any data).  It is accepted once;
    any later echo, or one after data, is ignored, so a PU cannot swap the
    state of a running session.
    """

    def __init__(self, settings: PeSessionSettings | None = None) -> None:
        self.settings = settings or PeSessionSettings()
        self.echoed_cookie: bytes | None = None
        self.peer_card: BusinessCardReceived | None = None
        self._anything_received = False

    def control_received(self, message: Any, now: float) -> list[PeEvent]:
        first = not self._anything_received
        self._anything_received = True
        kind = type(message)
        if kind is AsapCookieEcho:
            if not first:
                why = "a cookie was already echoed" if self.echoed_cookie is not None \
                    else "it was not the first message of the session"
                return [Ignored("ASAP_COOKIE_ECHO", why)]
            if len(message.cookie) > self.settings.max_cookie_size:
                return [Ignored("ASAP_COOKIE_ECHO", f"{len(message.cookie)} bytes exceed the limit")]
            self.echoed_cookie = message.cookie
            return [CookieEchoReceived(message.cookie)]
        if kind is AsapBusinessCard:
            if len(message.pool_elements) > self.settings.max_card_entries:
                return [Ignored("ASAP_BUSINESS_CARD", f"more than {self.settings.max_card_entries} PEs")]
            self.peer_card = BusinessCardReceived(message.pool_handle, tuple(message.pool_elements))
            return [self.peer_card]
        return [Ignored(getattr(message, "name", kind.__name__), "not expected by a pool element")]

    def data_received(self, payload: bytes) -> None:
        """Application data arrived (a cookie echo after it is refused)."""
        self._anything_received = True

    def cookie(self, cookie: bytes) -> AsapCookie:
        """The ASAP_COOKIE carrying ``cookie`` (opaque: seal it yourself)."""
        if not isinstance(cookie, bytes):
            raise TypeError("cookie must be bytes")
        if len(cookie) > self.settings.max_cookie_size:
            raise ValueError(f"cookie of {len(cookie)} bytes exceeds {self.settings.max_cookie_size}")
        return AsapCookie(cookie)

    def business_card(self, pool_handle: bytes, pool_elements: tuple[PoolElement, ...]) -> AsapBusinessCard:
        """The ASAP_BUSINESS_CARD listing the PEs to fail over to, in order."""
        pes = tuple(pool_elements)
        if len(pes) > self.settings.max_card_entries:
            raise ValueError(f"a business card holds at most {self.settings.max_card_entries} PEs")
        return AsapBusinessCard(pool_handle, pes)
