"""ENRP settings (RFC 5353 section 4 thresholds, per-peer limits) and the
outputs the sans-IO core hands to its shell.

Pure data: no Twisted, no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

# The one Send and Close: their ``channel`` is the PeerLink to write on or drop.
from rserpool.outputs import Close, Send
from rserpool.security.ratelimit import RateLimit

__all__ = [
    "PeerLimits",
    "EnrpSettings",
    "Send",
    "Close",
    "Connect",
    "Announce",
    "PeerUp",
    "PeerDown",
    "PeerDead",
    "Initialized",
    "ApplyPage",
    "TakeoverStarted",
    "TakeoverAborted",
    "TookOver",
    "TakenOver",
    "Restarted",
    "Output",
]


@dataclass(frozen=True, slots=True)
class PeerLimits:
    """What one authenticated peer may do to this registrar's handlespace
    (RFC 5355 2.17: a compromised peer's damage stays bounded).

    ``max_pes`` and ``max_pools`` count the PEs homed at the peer and the
    pools holding them; ``update_rate`` bounds its ENRP_HANDLE_UPDATEs;
    ``max_response_pes`` the PEs of one ENRP_HANDLE_TABLE_RESPONSE (its
    bytes are bounded by the channel's ``max_message_bytes``); a whole table
    download is bounded by ``max_pes`` (or, from a mentor, by the
    handlespace's own size limit)."""

    max_pes: int = 200_000
    max_pools: int = 10_000
    update_rate: RateLimit = RateLimit(rate=10_000.0, burst=20_000.0)
    max_response_pes: int = 4096
    max_message_bytes: int = 65535

    def __post_init__(self) -> None:
        for name in ("max_pes", "max_pools", "max_response_pes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 16 <= self.max_message_bytes <= 65535:
            raise ValueError("max_message_bytes must be within 16..65535")


@dataclass(frozen=True, slots=True)
class EnrpSettings:
    """Timers (seconds) and limits of the ENRP core.

    RFC 5353 section 4.2 defaults: PEER-HEARTBEAT-CYCLE 30, MAX-TIME-LAST-HEARD
    61, MAX-TIME-NO-RESPONSE 5.  The heartbeat is varied by +/-50 % like the
    ASAP keep-alives (``jitter``).  ``mentor_discovery_timeout``: a joining
    registrar that has no mentor by then starts alone; ``mentor_retry``: the
    wait after a mentor refused (R flag) before asking again.
    """

    server_id: int
    heartbeat_cycle: float = 30.0
    max_time_last_heard: float = 61.0
    max_time_no_response: float = 5.0
    jitter: float = 0.5
    mentor_discovery_timeout: float = 5.0
    mentor_retry: float = 1.0
    page_pes: int = 1024
    page_bytes: int = 60_000
    max_serving_downloads: int = 8
    max_peers: int = 64
    peer_limits: PeerLimits = field(default_factory=PeerLimits)
    takeover_ack_timeout: float = 5.0
    max_adopted_life: float = 300.0

    def __post_init__(self) -> None:
        if type(self.server_id) is not int or not 1 <= self.server_id <= 0xFFFFFFFF:
            raise ValueError("the server ID is a non-zero 32-bit number")
        for name in ("heartbeat_cycle", "max_time_last_heard", "max_time_no_response",
                     "mentor_discovery_timeout", "mentor_retry", "takeover_ack_timeout",
                     "max_adopted_life"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be within [0, 1)")
        if self.page_pes < 1 or not 1024 <= self.page_bytes <= 65000:
            raise ValueError("page_pes must be >= 1 and page_bytes within 1024..65000")
        if self.page_pes > self.peer_limits.max_response_pes:
            raise ValueError("page_pes must not exceed what peers accept (max_response_pes)")
        if self.max_serving_downloads < 1 or self.max_peers < 1:
            raise ValueError("max_serving_downloads and max_peers must be at least 1")
        if self.heartbeat_cycle * (1.0 + self.jitter) >= self.max_time_last_heard:
            raise ValueError("heartbeat_cycle (with its jitter) must be shorter than max_time_last_heard")

    @property
    def claim_ttl(self) -> float:
        """How long a contested claim (docs/takeover.md) waits for the PE's
        current home to let it go: beyond the time a silent home needs to
        be declared dead and taken over."""
        return 2.0 * (self.max_time_last_heard + self.max_time_no_response) + self.takeover_ack_timeout


# -- outputs --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connect:
    """A hint (from an ENRP_LIST_RESPONSE): a server worth connecting to.
    It becomes a peer only through an authenticated, authorized channel."""

    server_id: int
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Announce:
    """The periodic ENRP_PRESENCE, for the shell's UDP presence targets."""

    message: Any


@dataclass(frozen=True, slots=True)
class PeerUp:
    link: Any


@dataclass(frozen=True, slots=True)
class PeerDown:
    link: Any
    reason: str


@dataclass(frozen=True, slots=True)
class PeerDead:
    """A peer missed MAX-TIME-LAST-HEARD and then MAX-TIME-NO-RESPONSE
    (RFC 5353 3.4.3): the point where takeover (RFC 5353 3.5) starts."""

    server_id: int
    identity: str
    owned: int  # PEs still homed at it


@dataclass(frozen=True, slots=True)
class Initialized:
    """The registrar finished joining (RFC 5353 3.2) or starts alone."""

    mentor: int | None
    pes: int


@dataclass(frozen=True, slots=True)
class ApplyPage:
    """A table page of ``link`` was received and its successor asked for
    (the ``Send`` before this output); the shell calls
    ``EnrpCore.apply_page(link, now)`` once that request has left, so that
    the peer builds the next page while this one is applied.  A page still
    waiting when the next message of its link arrives is applied first, so
    the order of a channel always holds (a shell that never calls it is
    still correct, one page behind)."""

    link: Any


@dataclass(frozen=True, slots=True)
class TakeoverStarted:
    """ENRP_INIT_TAKEOVER went to ``peers`` (server IDs) about ``target``."""

    target: int
    peers: tuple


@dataclass(frozen=True, slots=True)
class TakeoverAborted:
    target: int
    reason: str


@dataclass(frozen=True, slots=True)
class TookOver:
    """This registrar won the takeover of ``target`` and is now the home of
    its ``pes`` PEs (``missing``: peers whose ACK never came)."""

    target: int
    pes: int
    missing: tuple


@dataclass(frozen=True, slots=True)
class TakenOver:
    """``winner`` took ``target`` over (its ENRP_TAKEOVER_SERVER): ``pes``
    PEs now homed at the winner."""

    target: int
    winner: int
    pes: int


@dataclass(frozen=True, slots=True)
class Restarted:
    """This registrar was not run for ``gap`` seconds (more than
    MAX-TIME-LAST-HEARD: stopped, or frozen): it dropped its state and
    rejoins as ``new_id`` (docs/takeover.md).  The shell closes the PEs'
    channels (they re-register through their server hunt) and holds
    resolutions until ``Initialized``."""

    old_id: int
    new_id: int
    gap: float


Output = Union[Send, Close, Connect, Announce, PeerUp, PeerDown, PeerDead, Initialized, ApplyPage,
               TakeoverStarted, TakeoverAborted, TookOver, TakenOver, Restarted]
