"""Value types shared by the handlespace store and the selection policies.

Pure data: no Twisted, no clock, no wire framing.  The registrar maps the
wire's Pool Member Selection Policy parameter onto ``PolicySettings``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

# RFC 5356 section 7 (IANA "RSerPool Policy Types").
ROUND_ROBIN = 0x00000001
WEIGHTED_ROUND_ROBIN = 0x00000002
RANDOM = 0x00000003
WEIGHTED_RANDOM = 0x00000004
PRIORITY = 0x00000005
LEAST_USED = 0x40000001
LEAST_USED_DEGRADATION = 0x40000002
PRIORITY_LEAST_USED = 0x40000003
RANDOMIZED_LEAST_USED = 0x40000004

POLICY_NAMES = {
    ROUND_ROBIN: "RoundRobin",
    WEIGHTED_ROUND_ROBIN: "WeightedRoundRobin",
    RANDOM: "Random",
    WEIGHTED_RANDOM: "WeightedRandom",
    PRIORITY: "Priority",
    LEAST_USED: "LeastUsed",
    LEAST_USED_DEGRADATION: "LeastUsedDegradation",
    PRIORITY_LEAST_USED: "PriorityLeastUsed",
    RANDOMIZED_LEAST_USED: "RandomizedLeastUsed",
}

ADAPTIVE_BIT = 0x40000000
MAX_UINT32 = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """A PE's member-selection policy and its per-PE values.

    Only the fields of ``policy_type`` are meaningful; the others stay 0.
    ``opaque`` keeps the policy-specific bytes of an unknown or private
    policy type unchanged.
    """

    policy_type: int
    weight: int = 0  # WRR, WRAND
    priority: int = 0  # PRIO (larger is better)
    load: int = 0  # LU, LUD, PLU, RLU (0 = 0 %, 0xffffffff = 100 %)
    load_degradation: int = 0  # LUD, PLU
    opaque: bytes = b""

    def __post_init__(self) -> None:
        for name in ("policy_type", "weight", "priority", "load", "load_degradation"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_UINT32:
                raise ValueError(f"{name} out of the 32-bit range: {value}")


class Member(Protocol):
    """What a selection policy needs of a pool element record.

    ``policy_state`` belongs to the policy object that holds the member: it
    may store anything there (sort keys, counters) and nobody else touches it.
    """

    pe_id: int
    settings: PolicySettings
    policy_state: Any


class SelectionPolicy(Protocol):
    """Server-side selection state of one pool (one instance per pool)."""

    policy_type: int

    def add(self, member: Member) -> None: ...

    def remove(self, member: Member) -> None: ...

    def update(self, member: Member, settings: PolicySettings) -> None:
        """Replace ``member.settings`` (a re-registration) and re-index it."""

    def select(self, n: int) -> Sequence[Member]:
        """Choose up to ``n`` distinct members for one handle resolution,
        updating the policy state as the RFC says (RR head, degradation...)."""

    def __len__(self) -> int: ...


def policy_mismatch(pool_type: int, settings: PolicySettings) -> ValueError:
    """The error a policy raises for a member whose policy type is not its pool's."""
    return ValueError(
        f"policy type 0x{settings.policy_type:08x} does not match the "
        f"pool's 0x{pool_type:08x}"
    )
