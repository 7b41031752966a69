"""Server-side pool member selection policies (RFC 5356), O(log n) each.

One policy object per pool holds the pool's members (the store's PE
records, see ``rserpool.handlespace.types.Member``) in a structure suited to
its rule and answers ``select(n)`` for a handle resolution.  Pure Python: no
Twisted, no clock; randomness only from the injected ``random.Random``.

This module is the registry (:func:`make_policy` and the policy type
predicates); the policies live in :mod:`rserpool.handlespace.sorted_policies`
and :mod:`rserpool.handlespace.random_policies`.

Unknown, private and reserved policy types are served as Round Robin.  The
rules as implemented are in the two modules' docstrings, the details and
the reasons in docs/policies.md.
"""

from __future__ import annotations

import random

from rserpool.handlespace.random_policies import (
    RandomizedLeastUsedSelection,
    RandomSelection,
    WeightedRandomSelection,
)
from rserpool.handlespace.sorted_policies import (
    LeastUsedDegradationSelection,
    LeastUsedSelection,
    PriorityLeastUsedSelection,
    PrioritySelection,
    RoundRobinSelection,
    WeightedRoundRobinSelection,
)
from rserpool.handlespace.types import (
    ADAPTIVE_BIT,
    LEAST_USED,
    LEAST_USED_DEGRADATION,
    MAX_UINT32,
    POLICY_NAMES,
    PRIORITY,
    PRIORITY_LEAST_USED,
    RANDOM,
    RANDOMIZED_LEAST_USED,
    ROUND_ROBIN,
    WEIGHTED_RANDOM,
    WEIGHTED_ROUND_ROBIN,
    SelectionPolicy,
)

__all__ = [
    "is_known_policy_type",
    "is_reserved_policy_type",
    "make_policy",
    "server_policy_type",
]


def is_known_policy_type(policy_type: int) -> bool:
    """One of the nine policy types of RFC 5356."""
    return policy_type in POLICY_NAMES


def is_reserved_policy_type(policy_type: int) -> bool:
    """0x00000000 and 0x40000000: "reserved, invalid value" (RFC 5356 7.1).

    A registrar should reject a registration carrying one of them (ASAP
    cause 0x3, Invalid Values); ``make_policy`` still accepts them.
    """
    return policy_type & ~ADAPTIVE_BIT == 0


def server_policy_type(policy_type: int) -> int:
    """The policy whose server-side rule ``make_policy`` applies."""
    return policy_type if policy_type in POLICY_NAMES else ROUND_ROBIN


def make_policy(policy_type: int, rng: random.Random) -> SelectionPolicy:
    """The selection state for a new pool of ``policy_type``.

    Every 32-bit value is accepted.  Types other than the nine of RFC 5356
    (private ones with bit 31 set, unassigned IETF ones and the two
    reserved-invalid values) get the Round Robin rule; the object's
    ``policy_type`` is still the pool's type.  See ``is_reserved_policy_type``.
    """
    if not 0 <= policy_type <= MAX_UINT32:
        raise ValueError(f"policy type out of the 32-bit range: {policy_type}")
    if policy_type == ROUND_ROBIN:
        return RoundRobinSelection()
    if policy_type == WEIGHTED_ROUND_ROBIN:
        return WeightedRoundRobinSelection()
    if policy_type == RANDOM:
        return RandomSelection(rng)
    if policy_type == WEIGHTED_RANDOM:
        return WeightedRandomSelection(rng)
    if policy_type == PRIORITY:
        return PrioritySelection()
    if policy_type == LEAST_USED:
        return LeastUsedSelection()
    if policy_type == LEAST_USED_DEGRADATION:
        return LeastUsedDegradationSelection()
    if policy_type == PRIORITY_LEAST_USED:
        return PriorityLeastUsedSelection()
    if policy_type == RANDOMIZED_LEAST_USED:
        return RandomizedLeastUsedSelection(rng)
    return RoundRobinSelection(policy_type)

