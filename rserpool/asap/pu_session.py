"""The pool user's side of the PU-PE session layer, sans-IO (RFC 5352
sections 3.8, 3.9 and 6.9; RFC 5355 section 2.9).

:class:`PuSession` keeps only the latest cookie (3.8), the latest business
card of its pool (3.9, BC2), and runs failover: each failed PE is reported
unreachable once per failover, the business card's PEs are tried first in
their order, then the pool's selector; attempts are bounded and backed off;
after a failover the stored cookie is echoed as the *first* message on the
new connection, then the application is asked to re-establish its security
context (RFC 5355 2.9) and data flows again only once it says so.  Every
input returns a list of *actions* (frozen dataclasses) for the shell
(:mod:`rserpool.service.pu_session`) to carry out.  The layer as a whole is
described in :mod:`rserpool.asap.session`.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Union

from rserpool.asap.session import Ignored, SessionBusyError, SessionClosedError, SessionError
from rserpool.wire import AsapBusinessCard, AsapCookie, AsapCookieEcho, PoolElement

__all__ = [
    "Action",
    "Connect",
    "Established",
    "GiveUp",
    "PuSession",
    "PuSessionSettings",
    "PuState",
    "ReportUnreachable",
    "RunFailoverCallback",
    "Select",
    "SendControl",
    "SendData",
]


# --------------------------------------------------------------------------
# Actions (what the shell must do)


@dataclass(frozen=True, slots=True)
class Select:
    """Ask the pool's selector for a PE after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True, slots=True)
class Connect:
    """Connect (with TLS) to ``pe`` after ``delay`` seconds."""

    pe: PoolElement
    delay: float


@dataclass(frozen=True, slots=True)
class ReportUnreachable:
    """Send ASAP_ENDPOINT_UNREACHABLE for this PE to the home registrar."""

    pool_handle: bytes
    pe_id: int


@dataclass(frozen=True, slots=True)
class SendControl:
    """Send an ASAP message on the control channel (PPID 11)."""

    message: Any


@dataclass(frozen=True, slots=True)
class SendData:
    """Send application data on the data channel (the session's PPID)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class RunFailoverCallback:
    """Tell the application about the failover; call
    :meth:`PuSession.failover_complete` (or ``failover_refused``) when it is done."""

    old_pe: PoolElement
    new_pe: PoolElement
    cookie_echoed: bool


@dataclass(frozen=True, slots=True)
class Established:
    """Data flows to ``pe`` (``failover``: after a failover)."""

    pe: PoolElement
    failover: bool


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Failover failed for good; ``dropped`` queued messages are lost."""

    reason: str
    dropped: int


Action = Union[Select, Connect, ReportUnreachable, SendControl, SendData,
               RunFailoverCallback, Established, GiveUp, Ignored]



# --------------------------------------------------------------------------
# The state machine


class PuState(enum.Enum):
    IDLE = "idle"              # not started
    SELECTING = "selecting"    # waiting for the selector
    CONNECTING = "connecting"  # connecting / TLS handshake with a candidate
    RESUMING = "resuming"      # connected after a failover; the application's callback runs
    ESTABLISHED = "established"
    FAILED = "failed"          # gave up
    CLOSED = "closed"          # closed by the application


@dataclass(frozen=True, slots=True)
class PuSessionSettings:
    """Limits and timing of the PU side.

    ``max_attempts`` bounds the connection attempts of one failover (and of
    the first connection); before attempt ``k`` (from 0) the session waits
    0 s for ``k == 0`` and ``min(backoff_initial * 2**(k-1), backoff_max)``
    after that.  During a failover at most ``max_queued`` messages /
    ``max_queued_bytes`` bytes are queued; beyond that ``send`` raises
    :class:`SessionBusyError`.  Cookies longer than ``max_cookie_size`` and
    business cards with more than ``max_card_entries`` PEs are ignored.
    """

    max_attempts: int = 5
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    max_queued: int = 64
    max_queued_bytes: int = 256 * 1024
    max_cookie_size: int = 8192
    max_card_entries: int = 32

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff_initial < 0 or self.backoff_max < self.backoff_initial:
            raise ValueError("need 0 <= backoff_initial <= backoff_max")
        if self.max_queued < 0 or self.max_queued_bytes < 0:
            raise ValueError("queue limits must not be negative")
        if not 0 <= self.max_cookie_size <= 0xFFFF - 4:
            raise ValueError("max_cookie_size must fit a Cookie parameter")
        if self.max_card_entries < 1:
            raise ValueError("max_card_entries must be at least 1")

    def delay(self, attempt: int) -> float:
        if attempt <= 0:
            return 0.0
        return min(self.backoff_initial * 2 ** (attempt - 1), self.backoff_max)


_SENDABLE = (PuState.RESUMING, PuState.ESTABLISHED)


@dataclass(slots=True)
class _Episode:
    """One run of connection attempts (the first connection or a failover)."""

    old_pe: PoolElement | None
    attempts: int = 0
    tried: set[int] = field(default_factory=set)
    reported: set[int] = field(default_factory=set)
    # Why attempts failed, for GiveUp: a PE's connection failure says more
    # than the "no usable pool element" selection that follows it.
    connection_error: str = ""
    selection_error: str = ""

    @property
    def last_error(self) -> str:
        return self.connection_error or self.selection_error


class PuSession:
    """The pool user's side of a session with a pool (sans-IO).

    Drive it with :meth:`start`, :meth:`pe_selected` / :meth:`selection_failed`,
    :meth:`connected`, :meth:`connection_lost`, :meth:`control_received`,
    :meth:`failover_complete` / :meth:`failover_refused`, :meth:`send` and
    :meth:`close`; carry out the actions each returns, in order.
    """

    def __init__(self, pool_handle: bytes, settings: PuSessionSettings | None = None) -> None:
        if not isinstance(pool_handle, bytes) or not pool_handle:
            raise ValueError("pool_handle must be non-empty bytes")
        self.pool_handle = pool_handle
        self.settings = settings or PuSessionSettings()
        self.state = PuState.IDLE
        self.current: PoolElement | None = None  # candidate or established PE
        self.cookie: bytes | None = None
        self.business_card: tuple[PoolElement, ...] = ()
        self.failovers = 0
        self._episode: _Episode | None = None
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0

    # -- queries ---------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def attempts(self) -> int:
        """Connection attempts of the running failover (0 when none runs)."""
        return self._episode.attempts if self._episode is not None else 0

    @property
    def last_error(self) -> str:
        """Why the last attempt of the running failover failed ("" if none)."""
        return self._episode.last_error if self._episode is not None else ""

    # -- connection management ---------------------------------------------

    def start(self, now: float) -> list[Action]:
        """Begin: find a PE and connect to it."""
        if self.state is not PuState.IDLE:
            raise SessionError(f"session already started ({self.state.value})")
        self._episode = _Episode(old_pe=None)
        return self._next_attempt()

    def pe_selected(self, pe: PoolElement, now: float) -> list[Action]:
        """The selector chose ``pe`` (after a :class:`Select`)."""
        if self.state is not PuState.SELECTING:
            return [Ignored("selected PE", f"not selecting ({self.state.value})")]
        episode = self._episode
        assert episode is not None
        if pe.pe_id in episode.tried:
            # Stale cache: the selector offers a PE that already failed in
            # this failover.  It costs an attempt; the back-off gives the
            # registrar time to remove it.
            episode.attempts += 1
            return [Ignored("selected PE", f"PE 0x{pe.pe_id:08x} already failed"), *self._next_attempt()]
        return self._connect(pe, 0.0)

    def selection_failed(self, why: str, now: float) -> list[Action]:
        """The selector found no PE (or failed)."""
        if self.state is not PuState.SELECTING:
            return []
        assert self._episode is not None
        self._episode.attempts += 1
        self._episode.selection_error = why
        return [Ignored("selection", why), *self._next_attempt()]

    def connected(self, now: float) -> list[Action]:
        """The connection to the candidate is up (TLS handshake done)."""
        if self.state is not PuState.CONNECTING:
            return [Ignored("connection", f"not connecting ({self.state.value})")]
        episode = self._episode
        assert episode is not None and self.current is not None
        if episode.old_pe is None:
            return self._establish(failover=False)
        actions: list[Action] = []
        echoed = self.cookie is not None
        if echoed:
            # RFC 5352 3.8: the latest cookie, unmodified, as the first
            # message on the new control channel.
            actions.append(SendControl(AsapCookieEcho(self.cookie)))  # type: ignore[arg-type]
        self.state = PuState.RESUMING
        actions.append(RunFailoverCallback(episode.old_pe, self.current, echoed))
        return actions

    def failover_complete(self, now: float) -> list[Action]:
        """The application's failover callback succeeded: data may flow."""
        if self.state is not PuState.RESUMING:
            return [Ignored("failover completion", f"not resuming ({self.state.value})")]
        return self._establish(failover=True)

    def failover_refused(self, why: str, now: float) -> list[Action]:
        """The application could not re-establish its security context with
        the new PE.  The shell closes that connection; the next candidate is
        tried (the PE is reachable, so it is not reported)."""
        if self.state is not PuState.RESUMING:
            return []
        episode = self._episode
        assert episode is not None and self.current is not None
        episode.tried.add(self.current.pe_id)
        episode.attempts += 1
        self.current = None
        return [Ignored("PE", f"failover callback refused it: {why}"), *self._next_attempt()]

    def connection_lost(self, now: float, why: str = "") -> list[Action]:
        """The connection (or the attempt to make it) failed or died;
        ``why`` (one line) is kept for the GiveUp reason."""
        state = self.state
        if state is PuState.ESTABLISHED:
            assert self.current is not None
            lost = self.current
            self.failovers += 1
            self._episode = _Episode(old_pe=lost, tried={lost.pe_id})
            actions = self._report(lost)
            self.current = None
            return actions + self._next_attempt()
        if state in (PuState.CONNECTING, PuState.RESUMING):
            episode = self._episode
            assert episode is not None and self.current is not None
            failed = self.current
            episode.tried.add(failed.pe_id)
            episode.attempts += 1
            if why:
                episode.connection_error = f"PE {failed.pe_id:08x}: {why}"
            self.current = None
            return self._report(failed) + self._next_attempt()
        return []

    def close(self) -> list[Action]:
        """The application ends the session; queued data is dropped."""
        self.state = PuState.CLOSED
        self._clear_queue()
        self.current = None
        self._episode = None
        return []

    # -- control channel ---------------------------------------------------

    def control_received(self, message: Any, now: float) -> list[Action]:
        """An ASAP message from the PE on the control channel."""
        if self.state not in _SENDABLE:
            return [Ignored(getattr(message, "name", type(message).__name__),
                            f"no session ({self.state.value})")]
        kind = type(message)
        if kind is AsapCookie:
            if len(message.cookie) > self.settings.max_cookie_size:
                return [Ignored("ASAP_COOKIE", f"{len(message.cookie)} bytes exceed the limit "
                                f"of {self.settings.max_cookie_size}; the previous cookie is kept")]
            self.cookie = message.cookie  # only the latest is kept (3.8)
            return []
        if kind is AsapBusinessCard:
            if message.pool_handle != self.pool_handle:
                return [Ignored("ASAP_BUSINESS_CARD", "it names another pool")]
            if len(message.pool_elements) > self.settings.max_card_entries:
                return [Ignored("ASAP_BUSINESS_CARD", f"more than {self.settings.max_card_entries} PEs")]
            self.business_card = tuple(message.pool_elements)
            return []
        return [Ignored(getattr(message, "name", kind.__name__), "not expected by a pool user")]

    def send_business_card(self, pool_handle: bytes, pool_elements: tuple[PoolElement, ...]) -> list[Action]:
        """A PU/PE combination tells its PE its own pool and failover order."""
        if self.state not in _SENDABLE:
            raise SessionClosedError(f"no connection to send a business card on ({self.state.value})")
        return [SendControl(AsapBusinessCard(pool_handle, tuple(pool_elements)))]

    # -- data channel ---------------------------------------------------------

    def send(self, payload: bytes, *, during_failover: bool = False) -> list[Action]:
        """Application data for the PE.

        When established it goes out at once.  While a PE is being found or
        the failover callback runs it is queued (bounded: then
        :class:`SessionBusyError`) and sent, in order, once the session is
        established again.  ``during_failover=True`` lets the failover
        callback itself talk to the new PE (for example to re-key) while
        ordinary data is still held back.
        """
        if not isinstance(payload, bytes):
            raise TypeError("payload must be bytes")
        state = self.state
        if state is PuState.ESTABLISHED or (during_failover and state is PuState.RESUMING):
            return [SendData(payload)]
        if state in (PuState.CLOSED, PuState.FAILED):
            raise SessionClosedError(f"the session is {state.value}")
        if during_failover:
            raise SessionError("during_failover data needs a connected new PE")
        limits = self.settings
        if len(self._queue) >= limits.max_queued or self._queued_bytes + len(payload) > limits.max_queued_bytes:
            raise SessionBusyError(
                f"failover in progress and the send queue is full ({len(self._queue)} messages, "
                f"{self._queued_bytes} bytes)"
            )
        self._queue.append(payload)
        self._queued_bytes += len(payload)
        return []

    # -- internals -------------------------------------------------------------

    def _report(self, pe: PoolElement) -> list[Action]:
        episode = self._episode
        assert episode is not None
        if pe.pe_id in episode.reported:
            return []
        episode.reported.add(pe.pe_id)
        return [ReportUnreachable(self.pool_handle, pe.pe_id)]

    def _next_attempt(self) -> list[Action]:
        episode = self._episode
        assert episode is not None
        if episode.attempts >= self.settings.max_attempts:
            self.state = PuState.FAILED
            dropped = self._clear_queue()
            what = "failover" if episode.old_pe is not None else "connection"
            last = f" (last: {episode.last_error})" if episode.last_error else ""
            return [GiveUp(f"{what} failed after {episode.attempts} attempts{last}", dropped)]
        delay = self.settings.delay(episode.attempts)
        for pe in self.business_card:
            if pe.pe_id not in episode.tried:
                return self._connect(pe, delay)
        self.state = PuState.SELECTING
        return [Select(delay)]

    def _connect(self, pe: PoolElement, delay: float) -> list[Action]:
        self.state = PuState.CONNECTING
        self.current = pe
        return [Connect(pe, delay)]

    def _establish(self, failover: bool) -> list[Action]:
        assert self.current is not None
        self.state = PuState.ESTABLISHED
        self._episode = None
        actions: list[Action] = [Established(self.current, failover)]
        while self._queue:
            actions.append(SendData(self._queue.popleft()))
        self._queued_bytes = 0
        return actions

    def _clear_queue(self) -> int:
        dropped = len(self._queue)
        self._queue.clear()
        self._queued_bytes = 0
        return dropped
