"""What the handlespace stores and answers: one registered pool element
(``PoolElementEntry``, the policies' ``Member``), a pool's fixed settings
(``PoolInfo``), the outcome of a registration (``RegistrationResult``), the bounds on
everything a registering party controls (``HandlespaceLimits``) and the
refusals (``HandlespaceError`` with its RFC 5354 cause).

Pure data: no Twisted, no clock, no wire framing.  The store itself is
:class:`rserpool.handlespace.handlespace.Handlespace`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rserpool.handlespace.types import PolicySettings

__all__ = [
    "CAUSE_INVALID_VALUES",
    "CAUSE_NON_UNIQUE_PE_ID",
    "CAUSE_INCONSISTENT_POLICY",
    "CAUSE_LACK_OF_RESOURCES",
    "CAUSE_INCONSISTENT_TRANSPORT",
    "CAUSE_INCONSISTENT_DATA_CONTROL",
    "CAUSE_UNKNOWN_POOL_HANDLE",
    "CAUSE_SECURITY",
    "TRANSPORT_DCCP",
    "TRANSPORT_SCTP",
    "TRANSPORT_TCP",
    "TRANSPORT_UDP",
    "TRANSPORT_UDP_LITE",
    "TRANSPORT_OPAQUE",
    "TRANSPORT_TYPES",
    "USE_DATA_ONLY",
    "USE_DATA_AND_CONTROL",
    "INFINITE_LIFE",
    "HandlespaceError",
    "HandlespaceLimits",
    "PoolElementEntry",
    "PoolInfo",
    "RegistrationResult",
]

# RFC 5354 section 3.12 cause codes used here.
CAUSE_INVALID_VALUES = 0x3
CAUSE_NON_UNIQUE_PE_ID = 0x4
CAUSE_INCONSISTENT_POLICY = 0x5
CAUSE_LACK_OF_RESOURCES = 0x6
CAUSE_INCONSISTENT_TRANSPORT = 0x7
CAUSE_INCONSISTENT_DATA_CONTROL = 0x8
CAUSE_UNKNOWN_POOL_HANDLE = 0x9
CAUSE_SECURITY = 0xA

# RFC 5354 parameter types of the user transport.
TRANSPORT_DCCP = 0x3
TRANSPORT_SCTP = 0x4
TRANSPORT_TCP = 0x5
TRANSPORT_UDP = 0x6
TRANSPORT_UDP_LITE = 0x7
TRANSPORT_OPAQUE = 0x10
TRANSPORT_TYPES = frozenset(
    {TRANSPORT_DCCP, TRANSPORT_SCTP, TRANSPORT_TCP, TRANSPORT_UDP, TRANSPORT_UDP_LITE, TRANSPORT_OPAQUE}
)

# Transport Use (RFC 5354 section 3.3).
USE_DATA_ONLY = 0
USE_DATA_AND_CONTROL = 1

INFINITE_LIFE = -1
MAX_INT32 = 0x7FFFFFFF


class HandlespaceError(Exception):
    """A refused operation; ``cause`` is the RFC 5354 cause code.

    ``field`` names the registration argument that holds the offending
    value ("pool_handle", "transport", "registration_life", "policy") when
    there is one, so that the protocol layer can quote that parameter in an
    Invalid Values report (RFC 5354 3.12.4); None otherwise.
    """

    def __init__(self, cause: int, detail: str, field: str | None = None) -> None:
        super().__init__(f"cause 0x{cause:x}: {detail}")
        self.cause = cause
        self.detail = detail
        self.field = field


@dataclass(frozen=True, slots=True)
class HandlespaceLimits:
    """Bounds on everything a registering party controls.

    ``max_pes_per_identity`` counts PEs bound to one authenticated identity
    (PEs with no identity, e.g. learned from ENRP peers, are not counted
    there, only in ``max_pes``).  ``max_unreachable_reporters`` bounds the
    distinct reporters remembered per PE; ``unreachable_window`` is how long
    (seconds) a series of reports counts before it starts again.
    """

    max_pools: int = 10_000
    max_pes_per_pool: int = 100_000
    max_pes: int = 1_000_000
    max_pes_per_identity: int = 1_000
    max_pool_handle_length: int = 64
    max_registration_life: int = MAX_INT32
    max_unreachable_reporters: int = 16
    unreachable_window: float = 60.0

    def __post_init__(self) -> None:
        for name in (
            "max_pools",
            "max_pes_per_pool",
            "max_pes",
            "max_pes_per_identity",
            "max_pool_handle_length",
            "max_registration_life",
            "max_unreachable_reporters",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.unreachable_window <= 0:
            raise ValueError("unreachable_window must be positive")


class PoolElementEntry:
    """One registered pool element (implements the policies' ``Member``).

    Mutated only by its ``Handlespace`` (and ``policy_state`` only by the
    pool's policy); others read it.  ``payload`` is opaque here: the
    registrar keeps the wire Pool Element parameter there, and may keep
    what it derives from it in ``payload_cache`` (the handlespace never
    reads that slot; the registrar stores ``(payload, derived)`` and checks
    that the payload is still the same object).  ``reply_cache`` is the
    registrar's too, for what depends only on the pool handle and the PE
    identifier (its answer to a registration); it goes with the entry.

    ``expires_at`` and ``keepalive_due`` are the deadlines of the entry in
    the handlespace's two ``DeadlineQueue``s, which write them (their
    ``wanted_slot``); the ``_*_token`` and ``_*_queued`` slots are the
    queues' own.
    """

    __slots__ = (
        "pool_handle",
        "pe_id",
        "settings",
        "policy_state",
        "transport_type",
        "transport_use",
        "registration_life",
        "home_server_id",
        "identity",
        "payload",
        "payload_cache",
        "reply_cache",
        "expires_at",
        "keepalive_due",
        "unreachable",
        "_expiry_token",
        "_expiry_queued",
        "_keepalive_token",
        "_keepalive_queued",
    )

    def __init__(
        self,
        pool_handle: bytes,
        pe_id: int,
        settings: PolicySettings,
        transport_type: int,
        transport_use: int,
        registration_life: int,
        home_server_id: int,
        identity: str | None = None,
        payload: Any = None,
    ) -> None:
        self.pool_handle = pool_handle
        self.pe_id = pe_id
        self.settings = settings
        self.policy_state: Any = None
        self.transport_type = transport_type
        self.transport_use = transport_use
        self.registration_life = registration_life
        self.home_server_id = home_server_id
        self.identity = identity
        self.payload = payload
        self.payload_cache: Any = None
        self.reply_cache: Any = None
        self.expires_at: float | None = None
        self.keepalive_due: float | None = None
        # None, or (first report time, tuple of distinct reporters).
        self.unreachable: tuple[float, tuple[Any, ...]] | None = None
        self._expiry_token: int | None = None
        self._expiry_queued: tuple | None = None
        self._keepalive_token: int | None = None
        self._keepalive_queued: tuple | None = None

    def __repr__(self) -> str:
        return (
            f"PoolElementEntry(pool_handle={self.pool_handle!r}, pe_id=0x{self.pe_id:08x}, "
            f"policy=0x{self.settings.policy_type:08x}, home=0x{self.home_server_id:08x})"
        )


@dataclass(frozen=True, slots=True)
class PoolInfo:
    """The pool-wide settings fixed by its first PE (for error causes and
    resolution responses)."""

    pool_handle: bytes
    policy_type: int
    transport_type: int
    transport_use: int
    size: int


@dataclass(frozen=True, slots=True)
class RegistrationResult:
    """The outcome of an accepted registration."""

    entry: PoolElementEntry
    created: bool  # a new PE (False: re-registration in place)
    previous_owner: int | None  # owner before a re-registration
