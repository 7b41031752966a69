"""The gate's vocabulary: doors, actions, its configuration and its outputs.

Pure values; the decisions are made in :mod:`rserpool.gate.gate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from rserpool.gate.attempts import REFUSED_RATE_ADDRESS, REFUSED_RATE_IDENTITY, Slowdown
from rserpool.identity import Identity
from rserpool.security.ratelimit import AttemptLimit, RateLimit
from rserpool.wire.codes import CAUSE_SECURITY

__all__ = [
    "ACTIONS",
    "ACTION_ADMIN",
    "ACTION_DEREGISTER",
    "ACTION_OPAQUE",
    "ACTION_PEER",
    "ACTION_REGISTER",
    "ACTION_RESOLVE",
    "ACTION_UNREACHABLE",
    "Admission",
    "AskAuthorizer",
    "AttemptDelayed",
    "AttemptRefused",
    "CLOSING",
    "CloseChannel",
    "DOORS",
    "DOOR_ACTIONS",
    "DOOR_ADMIN",
    "DOOR_ASAP",
    "DOOR_PEER",
    "GatePolicy",
    "IDENTIFYING",
    "NOT_OPEN",
    "NeedRoom",
    "ROOM_ADDRESS",
    "ROOM_TOTAL",
    "OPEN",
    "Opened",
    "Output",
    "RemovePoolElements",
    "Slowdown",
    "REFUSED_AFTER_SUCCESS",
    "REFUSED_CLOSING",
    "REFUSED_IDENTITY_MISMATCH",
    "REFUSED_RATE_ADDRESS",
    "REFUSED_RATE_IDENTITY",
    "REPORT_COUNTED",
    "REPORT_PROBE",
    "REPORT_REMOVE",
]

# -- doors and actions ----------------------------------------------------------------------------

#: ASAP: pool elements and pool users (RFC 5352).
DOOR_ASAP = "asap"
#: ENRP: peer registrars (RFC 5353, issue 13).
DOOR_PEER = "peer"
#: The operators' endpoint: status, metrics, handlespace dump (issue 15).
DOOR_ADMIN = "admin"
DOORS: tuple[str, ...] = (DOOR_ASAP, DOOR_PEER, DOOR_ADMIN)

ACTION_REGISTER = "register"
ACTION_DEREGISTER = "deregister"
ACTION_RESOLVE = "resolve"
ACTION_PEER = "peer"
ACTION_ADMIN = "admin"
#: Registering an Opaque Transport (parameter 0x10): its address cannot be
#: checked, so the authorizer must allow it by name for the identity and pool.
ACTION_OPAQUE = "opaque-transport"
#: An ENDPOINT_UNREACHABLE report: rate limited, never asked of an authorizer.
ACTION_UNREACHABLE = "unreachable"

#: What the authorization plugins answer (default deny for each).
ACTIONS: tuple[str, ...] = (ACTION_REGISTER, ACTION_DEREGISTER, ACTION_RESOLVE, ACTION_PEER, ACTION_ADMIN,
                            ACTION_OPAQUE)

#: The requests each door serves.
DOOR_ACTIONS: dict[str, frozenset[str]] = {
    DOOR_ASAP: frozenset({ACTION_REGISTER, ACTION_DEREGISTER, ACTION_RESOLVE, ACTION_UNREACHABLE}),
    DOOR_PEER: frozenset({ACTION_PEER}),
    DOOR_ADMIN: frozenset({ACTION_ADMIN}),
}

# -- why an authentication attempt is refused (AttemptRefused.kind) ------------------------------

REFUSED_IDENTITY_MISMATCH = "identity differs from the channel's"
REFUSED_AFTER_SUCCESS = "already authenticated"
REFUSED_CLOSING = "channel closing"

# -- what an admitted ENDPOINT_UNREACHABLE report does (Gate.report_counted) --------------------

#: Counted only: a probe is outstanding, or the PE was sent a keep-alive
#: less than one keep-alive interval ago.
REPORT_COUNTED = "counted"
#: Probe the PE at once (RFC 5352 3.5); an unanswered probe removes it.
REPORT_PROBE = "probe"
#: Remove the PE now (MAX-BAD-PE-REPORT distinct reporters; only with
#: ``unreachable_removal_needs_failed_probe`` off).
REPORT_REMOVE = "remove"


# -- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GatePolicy:
    """What the gate lets through.  The defaults are the secure ones; every
    ``allow_*`` is insecure and logged as such by the application."""

    allow_insecure_channels: bool = False  # INSECURE: accept non-TLS channels
    allow_unauthenticated: bool = False  # INSECURE: registrations without identity
    authorize_resolution: bool = False  # ask the authorizer about resolutions too
    check_pe_addresses: bool = True  # a PE may register only its channel's address
    unreachable_requires_identity: bool = False  # RFC 5355 2.13 hardening
    # RFC 5355 2.13: reports alone never remove a PE; each admitted report may
    # probe it (at most one keep-alive per PE per keep-alive interval) and
    # only a probe left unanswered removes it.  False (INSECURE): RFC 5352's
    # rule, ``max_bad_pe_reports`` distinct reporters remove a PE.
    unreachable_removal_needs_failed_probe: bool = True
    max_bad_pe_reports: int = 3  # MAX-BAD-PE-REPORT (RFC 5352 section 5)
    # Per authenticated identity, and per source address (threat 2.1).
    registration_rate: RateLimit = RateLimit(rate=50.0, burst=100.0)
    registration_rate_per_address: RateLimit = RateLimit(rate=500.0, burst=1000.0)
    # Per identity, or per source address for anonymous pool users.
    resolution_rate: RateLimit = RateLimit(rate=2000.0, burst=4000.0)
    # All anonymous resolutions together (whatever their addresses): what
    # is left of the registrar is kept for pool users with an identity.
    anonymous_resolution_rate: RateLimit = RateLimit(rate=20_000.0, burst=40_000.0)
    # A channel refused for a resolution rate is not read for this long
    # (seconds): a flood costs the registrar one refusal per pause.
    rate_limited_pause: float = 0.25
    unreachable_rate: RateLimit = RateLimit(rate=1.0, burst=10.0)
    # Requests at the peer and admin doors, per identity.
    door_request_rate: RateLimit = RateLimit(rate=100.0, burst=200.0)
    # Failed SRP/CHAP attempts (rserpool.gate.attempts): a token per attempt,
    # refunded on success, per (identity, source address) and per source
    # address; per identity only a slowdown, so that outsiders cannot lock
    # an identity out.
    attempts_per_identity_and_address: AttemptLimit = AttemptLimit(capacity=5, refill_interval=60.0)
    attempts_per_address: AttemptLimit = AttemptLimit(capacity=20, refill_interval=6.0)
    identity_slowdown: Slowdown = Slowdown()
    # Connections open at once, in all and from one address (counted from
    # the moment a connection is accepted, before its TLS handshake).
    max_connections: int = 10_000
    max_connections_per_address: int = 256
    # IPv6 addresses in one prefix of this length count as one address
    # (rserpool.addresses.address_key): one host owns a whole /64.
    ipv6_prefix: int = 64
    # The share of max_connections anonymous ASAP channels can never hold:
    # kept for channels with an identity (PEs), however many anonymous
    # clients are connected.
    authenticated_reserve: float = 0.1
    # An anonymous ASAP channel with no PE and no message for this long may
    # be dropped to make room for a newcomer when a connection limit is reached.
    evict_idle_after: float = 5.0
    # Pools one identity (or, unauthenticated, one address) may have PEs in:
    # well below the handlespace's max_pools (10000), so that a few
    # identities cannot fill the pool table for everyone.
    max_pools_per_identity: int = 100
    # Per channel: authorizations waiting, decisions remembered, inputs held
    # while the channel's identity is being established.
    max_pending_per_channel: int = 32
    max_cached_decisions: int = 1024
    max_held_per_channel: int = 16
    # Refusal log lines: per source address and in all (the rest are counted).
    refusal_log_per_address: RateLimit = RateLimit(rate=1.0, burst=10.0)
    refusal_log_total: RateLimit = RateLimit(rate=20.0, burst=100.0)

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_connections_per_address", "max_pending_per_channel",
                     "max_cached_decisions", "max_held_per_channel", "max_bad_pe_reports",
                     "max_pools_per_identity"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 1 <= self.ipv6_prefix <= 128:
            raise ValueError("ipv6_prefix must be 1-128")
        if not 0.0 <= self.authenticated_reserve < 1.0:
            raise ValueError("authenticated_reserve must be at least 0 and below 1")
        if self.evict_idle_after <= 0:
            raise ValueError("evict_idle_after must be positive")
        if self.rate_limited_pause < 0:
            raise ValueError("rate_limited_pause must not be negative")


# -- which connection limit a newcomer meets (Gate.room_needed) ----------------------------------

ROOM_ADDRESS = "address"  # max_connections_per_address: room must come from the same address
ROOM_TOTAL = "total"  # max_connections: room may come from anywhere


# -- per channel ------------------------------------------------------------------------------

#: A channel's states: its identity is being established, it is served, it
#: is closing (refused, revoked or its identity lost: every request refused).
IDENTIFYING = "identifying"
OPEN = "open"
CLOSING = "closing"
NOT_OPEN = {IDENTIFYING: "identity not established yet", CLOSING: "channel closing"}


class Admission:
    """One channel as the gate sees it.  The doors read ``identity``,
    ``principal`` (the identity, or ``addr:<address>`` for an anonymous
    channel: what PEs are bound to), ``address`` and ``state``; only the gate
    changes them.  ``channel`` is the shell's handle for the connection and
    ``session`` the door's own per-channel state."""

    __slots__ = ("door", "address", "source", "tls", "fingerprint", "state", "identity", "mechanism", "groups",
                 "principal", "rate_key", "base", "exchanged", "attempt", "anonymous", "allowed", "pending",
                 "held", "epoch", "change_barrier", "session", "channel", "paused_until", "_last_address")

    def __init__(self, door: str, address: str, tls: bool, fingerprint: str | None, source: str = "") -> None:
        self.door = door
        self.address = address
        # The address key per-address limits count by (an IPv6 /64 is one).
        self.source = source or address
        self.tls = tls
        self.fingerprint = fingerprint  # of the client certificate, if any
        self.state = IDENTIFYING
        self.identity: str | None = None
        self.mechanism: str | None = None
        self.groups: frozenset[str] = frozenset()
        self.principal = "addr:" + address
        # What per-requester rate limits key on: the identity, or the source.
        self.rate_key = "addr:" + self.source
        self.base: Identity | None = None  # the identity TLS proved (certificate, PSK)
        self.exchanged: Identity | None = None  # the identity an SRP/CHAP exchange proved
        self.attempt: str | None = None  # the identity an admitted SRP/CHAP attempt tries to prove
        self.anonymous = False  # counted among the open anonymous ASAP channels
        self.paused_until = 0.0  # rate limited: read nothing more before then
        self.allowed: dict[tuple[str, bytes], bool] = {}
        self.pending = 0
        self.held = 0
        self.epoch = 0
        self.change_barrier: tuple[int, str] | None = (CAUSE_SECURITY, NOT_OPEN[IDENTIFYING])
        self.session: Any = None
        self.channel: Any = None
        self._last_address: tuple[Any, str] = (None, "")

    def __repr__(self) -> str:
        return f"<Admission {self.door} {self.address} {self.identity or 'anonymous'} {self.state}>"

    @property
    def who(self) -> str:
        return self.identity if self.identity is not None else "anonymous"

    def address_text(self, address: Any) -> str:
        """``str(address)``, remembered for the last address object (the
        decoder shares equal address objects, so re-registrations hit it)."""
        last = self._last_address
        if last[0] is address:
            return last[1]
        text = str(address)
        self._last_address = (address, text)
        return text



# -- outputs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AskAuthorizer:
    """Ask the authorization plugins: may ``identity`` (with ``groups``) do
    ``action`` on ``pool_handle``?  Answer with ``Gate.authorization_answered``."""

    token: int
    admission: Admission
    action: str
    identity: str | None
    groups: frozenset[str]
    pool_handle: bytes
    epoch: int


@dataclass(frozen=True, slots=True)
class Opened:
    """The channel's identity is established: its door may serve it."""

    admission: Admission


@dataclass(frozen=True, slots=True)
class CloseChannel:
    """Close the channel (its inputs are refused from now on)."""

    admission: Admission
    reason: str


@dataclass(frozen=True, slots=True)
class RemovePoolElements:
    """Remove, now, every PE the channel registered (its identity was revoked)."""

    admission: Admission
    reason: str


@dataclass(frozen=True, slots=True)
class NeedRoom:
    """The channel turned out anonymous while anonymous channels hold all
    they may (``max_connections`` less the ``authenticated_reserve``): drop
    an idle anonymous channel (one ``Gate.evictable`` allows) and report the
    identity again, or else tell the gate ``no_room``."""

    admission: Admission


@dataclass(frozen=True, slots=True)
class AttemptDelayed:
    """Let the SRP/CHAP attempt go ahead after ``delay`` seconds (its
    identity failed recently: the per-identity slowdown)."""

    delay: float


@dataclass(frozen=True, slots=True)
class AttemptRefused:
    """An SRP/CHAP attempt the gate refuses before any credential work;
    ``final``: the exchange ends and the channel closes."""

    kind: str
    final: bool


Output = Union[AskAuthorizer, Opened, CloseChannel, RemovePoolElements, NeedRoom]
