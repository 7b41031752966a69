"""Pool-user side selection (the "Pool User Considerations" of RFC 5356).

A ``PuSelector`` wraps the PE list of one handle resolution response (or a
cache entry) and picks the PE for each new use, skipping PEs the PU has
found unusable (``exclude``).  Pure: no clock, randomness injected.

Rules, by the pool's overall policy type:

* RR, WRR, unknown and private types: round robin over the list, starting
  with the first entry (RFC 5356 4.1.3, 4.2.3; RFC 5352 6.5.2.1).
* RAND: a uniformly random entry each time (4.3.3).
* WRAND: a random entry with probability proportional to its weight (4.4.3
  says "randomly"; we keep the weights, as the policy is WRAND); RLU: the
  same with weight ``0xffffffff - load`` (5.4.3).  Weight 0: never.
* PRIO: the active entry of highest priority (4.5.3); ties: list order.
* LU, LUD, PLU: the entries in the order returned by the registrar (5.1.3):
  the first one not excluded.

Response lists are bounded by the message size, so selection may cost
O(list length) here; the server side is where O(log n) matters.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from itertools import accumulate
from typing import Collection, Generic, Protocol, Sequence, TypeVar

from rserpool.handlespace.types import (
    LEAST_USED,
    LEAST_USED_DEGRADATION,
    MAX_UINT32,
    PRIORITY,
    PRIORITY_LEAST_USED,
    RANDOM,
    RANDOMIZED_LEAST_USED,
    WEIGHTED_RANDOM,
    PolicySettings,
)

__all__ = ["PuEntry", "PuSelector", "pu_select"]


class PuEntry(Protocol):
    """What the PU side needs of a PE entry."""

    pe_id: int
    settings: PolicySettings


E = TypeVar("E", bound=PuEntry)

_ORDERED = (LEAST_USED, LEAST_USED_DEGRADATION, PRIORITY_LEAST_USED)
# Random draws rejected (because excluded) before a linear pass.
_MAX_MISSES = 8


def _weight(policy_type: int, settings: PolicySettings) -> int:
    if policy_type == RANDOMIZED_LEAST_USED:
        return MAX_UINT32 - settings.load
    return settings.weight


class PuSelector(Generic[E]):
    """Stateful selection over one PE list for the policy ``policy_type``."""

    __slots__ = ("policy_type", "_entries", "_rng", "_next", "_cumulative", "_order")

    def __init__(
        self, policy_type: int, entries: Sequence[E], rng: random.Random
    ) -> None:
        self.policy_type = policy_type
        self._entries = tuple(entries)
        self._rng = rng
        self._next = 0
        self._cumulative: list[int] = []
        self._order: tuple[E, ...] = self._entries
        if policy_type in (WEIGHTED_RANDOM, RANDOMIZED_LEAST_USED):
            self._cumulative = list(
                accumulate(_weight(policy_type, e.settings) for e in self._entries)
            )
        elif policy_type == PRIORITY:
            # Stable sort: equal priorities keep the registrar's order.
            self._order = tuple(
                sorted(self._entries, key=lambda e: -e.settings.priority)
            )

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> tuple[E, ...]:
        return self._entries

    def select(self, exclude: Collection[int] = ()) -> E | None:
        """The PE to use next, skipping PE identifiers in ``exclude``.

        ``None`` when no entry is usable.  Round robin advances past the
        returned entry; the other rules keep no state between calls.
        """
        entries = self._entries
        if not entries:
            return None
        policy_type = self.policy_type
        if policy_type == RANDOM:
            return self._random(exclude)
        if policy_type in (WEIGHTED_RANDOM, RANDOMIZED_LEAST_USED):
            return self._weighted(exclude)
        if policy_type == PRIORITY or policy_type in _ORDERED:
            for entry in self._order:
                if entry.pe_id not in exclude:
                    return entry
            return None
        # Round robin (also WRR, unknown and private types).
        size = len(entries)
        start = self._next
        for step in range(size):
            index = (start + step) % size
            entry = entries[index]
            if entry.pe_id not in exclude:
                self._next = (index + 1) % size
                return entry
        return None

    def _random(self, exclude: Collection[int]) -> E | None:
        entries = self._entries
        randrange = self._rng.randrange
        for _ in range(_MAX_MISSES):
            entry = entries[randrange(len(entries))]
            if entry.pe_id not in exclude:
                return entry
        usable = [e for e in entries if e.pe_id not in exclude]
        return usable[randrange(len(usable))] if usable else None

    def _weighted(self, exclude: Collection[int]) -> E | None:
        entries = self._entries
        cumulative = self._cumulative
        total = cumulative[-1]
        randrange = self._rng.randrange
        if total:
            for _ in range(_MAX_MISSES):
                entry = entries[bisect_right(cumulative, randrange(total))]
                if entry.pe_id not in exclude:
                    return entry
        usable = [
            (e, w)
            for e in entries
            if e.pe_id not in exclude
            and (w := _weight(self.policy_type, e.settings)) > 0
        ]
        if not usable:
            return None
        point = randrange(sum(w for _, w in usable))
        for entry, w in usable:
            if point < w:
                return entry
            point -= w
        raise AssertionError("unreachable")  # pragma: no cover


def pu_select(
    policy_type: int,
    entries: Sequence[E],
    rng: random.Random,
    exclude: Collection[int] = (),
) -> E | None:
    """One stateless choice (round robin policies give the first entry)."""
    return PuSelector(policy_type, entries, rng).select(exclude)
