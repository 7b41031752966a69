"""A B-ary prefix-sum tree for weighted random selection.

Pure data structure: no randomness of its own, no clock.  Each entry lives in
a *slot*; ``find(r)`` maps a point ``0 <= r < total`` of the cumulative weight
line onto the slot that covers it, so drawing ``r`` uniformly selects a slot
with probability ``weight / total``.  Slots of weight 0 cover nothing and are
never found.

Layout: every node has ``FANOUT`` (16) children and stores their running
(prefix) sums in one flat ``array('Q')`` per level, so ``find`` does one C
``bisect_right`` per level (5 levels for a million slots) and touches a few
cache lines per level; ``set`` adds the change to the prefix sums right of the
slot in each level (at most 16 per level).  Costs: ``set`` and ``find``
O(FANOUT * log_FANOUT capacity) = O(log n); ``allocate``/``release``
amortised O(1) (the capacity doubles when full and shrinks, by a compacting
rebuild the owner is told about, when three quarters are free).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from itertools import accumulate
from typing import Callable

FANOUT = 16
_MIN_CAPACITY = FANOUT


class SumTree:
    """Non-negative integer weights in slots, with prefix-sum search."""

    __slots__ = ("_cap", "_levels", "_weights", "_free", "_used", "total")

    def __init__(self, capacity: int = _MIN_CAPACITY) -> None:
        cap = _MIN_CAPACITY
        while cap < capacity:
            cap <<= 1
        self._cap = cap
        self._weights = [0] * cap
        self._free = list(range(cap - 1, -1, -1))  # pop() gives the lowest
        self._used = 0
        self.total = 0
        self._levels: list[array] = []
        self._build()

    def __len__(self) -> int:
        """Number of allocated slots (including those of weight 0)."""
        return self._used

    @property
    def capacity(self) -> int:
        return self._cap

    def weight(self, slot: int) -> int:
        return self._weights[slot]

    def allocate(self, weight: int) -> int:
        """Take a free slot, give it ``weight`` and return it.

        Grows the tree (O(capacity), amortised O(1)) when no slot is free.
        """
        if not self._free:
            self._rebuild(self._cap << 1, None)
        slot = self._free.pop()
        self._used += 1
        if weight:
            self.set(slot, weight)
        return slot

    def release(self, slot: int) -> None:
        """Free ``slot`` (its weight becomes 0)."""
        if self._weights[slot]:
            self.set(slot, 0)
        self._free.append(slot)
        self._used -= 1

    def set(self, slot: int, weight: int) -> None:
        """Change the weight of an allocated slot."""
        if weight < 0:
            raise ValueError("negative weight")
        weights = self._weights
        delta = weight - weights[slot]
        if not delta:
            return
        weights[slot] = weight
        self.total += delta
        levels = self._levels
        index = len(levels) - 1
        while index >= 0:
            pre = levels[index]
            node = slot // FANOUT
            for j in range(slot, node * FANOUT + FANOUT):
                pre[j] += delta
            slot = node
            index -= 1

    def find(self, point: int) -> int:
        """The slot covering ``point`` (``0 <= point < total``)."""
        node = 0
        for pre in self._levels:
            base = node * FANOUT
            node = bisect_right(pre, point, base, base + FANOUT)
            if node > base:
                point -= pre[node - 1]
        return node

    def should_shrink(self) -> bool:
        return self._cap > _MIN_CAPACITY and self._used * 4 < self._cap

    def compact(self, moved: Callable[[int, int], None]) -> None:
        """Halve the capacity, renumbering the allocated slots densely.

        ``moved(old_slot, new_slot)`` is called for every allocated slot, in
        increasing old-slot order, so the owner can follow its entries.
        """
        cap = self._cap
        while cap > _MIN_CAPACITY and self._used * 4 < cap:
            cap >>= 1
        self._rebuild(cap, moved)

    def _rebuild(self, cap: int, moved: Callable[[int, int], None] | None) -> None:
        free = set(self._free)
        old_weights = self._weights
        weights = [0] * cap
        if moved is None:
            # Growing: slots keep their numbers.
            weights[: len(old_weights)] = old_weights
            self._free = list(range(cap - 1, len(old_weights) - 1, -1))
        else:
            new = 0
            for old in range(len(old_weights)):
                if old in free:
                    continue
                weights[new] = old_weights[old]
                if old != new:
                    moved(old, new)
                new += 1
            self._free = list(range(cap - 1, new - 1, -1))
        self._cap = cap
        self._weights = weights
        self._build()

    def _build(self) -> None:
        """Recompute every level from ``_weights``: O(capacity)."""
        levels: list[array] = []
        sums = self._weights
        while True:
            count = len(sums)
            padded = -(-count // FANOUT) * FANOUT
            prefix: list[int] = []
            parents: list[int] = []
            for base in range(0, padded, FANOUT):
                chunk = list(accumulate(sums[base : base + FANOUT]))
                last = chunk[-1]
                chunk.extend([last] * (FANOUT - len(chunk)))
                prefix.extend(chunk)
                parents.append(last)
            levels.append(array("Q", prefix))
            if len(parents) == 1:
                break
            sums = parents
        levels.reverse()
        self._levels = levels
