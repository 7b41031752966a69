"""The random selection policies of RFC 5356: Random, Weighted Random and
Randomized Least Used.

* RAND keeps an array and draws by a partial Fisher-Yates shuffle.
* WRAND and RLU keep a 16-ary prefix-sum tree (``_trees.SumTree``); RLU's
  weight is ``0xffffffff - load``.  Weight 0 is never selected.

Pure Python: no Twisted, no clock; randomness only from the injected
``random.Random``.  :func:`rserpool.handlespace.policies.make_policy` picks
the policy of a pool; the details and the reasons are in docs/policies.md.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from rserpool.handlespace._trees import SumTree
from rserpool.handlespace.types import (
    MAX_UINT32,
    RANDOM,
    RANDOMIZED_LEAST_USED,
    WEIGHTED_RANDOM,
    Member,
    PolicySettings,
    policy_mismatch,
)

__all__ = [
    "RandomSelection",
    "RandomizedLeastUsedSelection",
    "WeightedRandomSelection",
]

# WRAND: rejected duplicate draws per response before switching to exact
# exclusion (taking the drawn members' weights out of the tree).
_MAX_MISSES = 4


class RandomSelection:
    """RFC 5356 4.3: up to n distinct members, uniformly at random.

    Members live in an array (``policy_state`` is the index); a response is
    a partial Fisher-Yates shuffle of it: O(n) per response, O(1) add and
    remove.
    """

    __slots__ = ("policy_type", "_getrandbits", "_items")

    def __init__(self, rng: random.Random, policy_type: int = RANDOM) -> None:
        self.policy_type = policy_type
        self._getrandbits = rng.getrandbits
        self._items: list[Member] = []

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Any:
        return iter(list(self._items))

    def add(self, member: Member) -> None:
        settings = member.settings
        if settings.policy_type != self.policy_type:
            raise policy_mismatch(self.policy_type, settings)
        member.policy_state = len(self._items)
        self._items.append(member)

    def remove(self, member: Member) -> None:
        items = self._items
        index = member.policy_state
        if index is None or index >= len(items) or items[index] is not member:
            raise ValueError("not a member of this pool")
        last = items.pop()
        if last is not member:
            items[index] = last
            last.policy_state = index
        member.policy_state = None

    def update(self, member: Member, settings: PolicySettings) -> None:
        if settings.policy_type != self.policy_type:
            raise policy_mismatch(self.policy_type, settings)
        member.settings = settings

    def select(self, n: int) -> Sequence[Member]:
        items = self._items
        size = len(items)
        if n <= 0 or not size:
            return []
        k = n if n < size else size
        getrandbits = self._getrandbits
        for i in range(k):
            span = size - i
            if span == 1:
                break
            bits = span.bit_length()
            r = getrandbits(bits)
            while r >= span:
                r = getrandbits(bits)
            if r:
                j = i + r
                a = items[i]
                b = items[j]
                items[i] = b
                items[j] = a
                b.policy_state = i
                a.policy_state = j
        return items[:k]


class WeightedRandomSelection:
    """RFC 5356 4.4: up to n distinct members, each draw with probability
    weight / (sum of the weights not yet drawn).  Weight 0: never selected.

    ``policy_state`` is the member's slot in a prefix-sum tree.  Duplicate
    draws are rejected (which gives the same distribution as drawing from
    the remaining weight); after a few misses per response the drawn
    members' weights are taken out of the tree until the response is done,
    so a dominant weight cannot make a response loop.
    """

    __slots__ = ("policy_type", "_getrandbits", "_tree", "_members", "_positive")

    def __init__(self, rng: random.Random, policy_type: int = WEIGHTED_RANDOM) -> None:
        self.policy_type = policy_type
        self._getrandbits = rng.getrandbits
        self._tree = SumTree()
        self._members: list[Member | None] = [None] * self._tree.capacity
        self._positive = 0

    @staticmethod
    def _weight(settings: PolicySettings) -> int:
        return settings.weight

    def __len__(self) -> int:
        return len(self._tree)

    def __iter__(self) -> Any:
        return iter([m for m in self._members if m is not None])

    @property
    def selectable(self) -> int:
        """How many members have a weight above 0."""
        return self._positive

    def add(self, member: Member) -> None:
        settings = member.settings
        if settings.policy_type != self.policy_type:
            raise policy_mismatch(self.policy_type, settings)
        weight = self._weight(settings)
        tree = self._tree
        slot = tree.allocate(weight)
        members = self._members
        if len(members) < tree.capacity:
            members.extend([None] * (tree.capacity - len(members)))
        members[slot] = member
        member.policy_state = slot
        if weight:
            self._positive += 1

    def remove(self, member: Member) -> None:
        slot = member.policy_state
        members = self._members
        if slot is None or slot >= len(members) or members[slot] is not member:
            raise ValueError("not a member of this pool")
        tree = self._tree
        if tree.weight(slot):
            self._positive -= 1
        tree.release(slot)
        members[slot] = None
        member.policy_state = None
        if tree.should_shrink():
            tree.compact(self._moved)
            del members[tree.capacity :]

    def _moved(self, old: int, new: int) -> None:
        members = self._members
        member = members[old]
        members[new] = member
        members[old] = None
        member.policy_state = new

    def update(self, member: Member, settings: PolicySettings) -> None:
        if settings.policy_type != self.policy_type:
            raise policy_mismatch(self.policy_type, settings)
        slot = member.policy_state
        tree = self._tree
        old = tree.weight(slot)
        new = self._weight(settings)
        if old != new:
            if not old:
                self._positive += 1
            elif not new:
                self._positive -= 1
            tree.set(slot, new)
        member.settings = settings

    def select(self, n: int) -> Sequence[Member]:
        positive = self._positive
        k = n if n < positive else positive
        if k <= 0:
            return []
        tree = self._tree
        find = tree.find
        getrandbits = self._getrandbits
        members = self._members
        total = tree.total
        bits = total.bit_length()
        picked: list[int] = []
        if k == 1:
            r = getrandbits(bits)
            while r >= total:
                r = getrandbits(bits)
            return [members[find(r)]]
        seen: set[int] = set()
        misses = 0
        while True:
            r = getrandbits(bits)
            if r >= total:
                continue
            slot = find(r)
            if slot in seen:
                misses += 1
                if misses > _MAX_MISSES:
                    break
                continue
            seen.add(slot)
            picked.append(slot)
            if len(picked) == k:
                return [members[s] for s in picked]
        # Exact exclusion for the rest of this response.
        weight_of = tree.weight
        set_weight = tree.set
        saved = [(s, weight_of(s)) for s in picked]
        try:
            for s, _ in saved:
                set_weight(s, 0)
            while len(picked) < k:
                total = tree.total
                bits = total.bit_length()
                r = getrandbits(bits)
                while r >= total:
                    r = getrandbits(bits)
                slot = find(r)
                picked.append(slot)
                saved.append((slot, weight_of(slot)))
                set_weight(slot, 0)
        finally:
            for s, w in saved:
                set_weight(s, w)
        return [members[s] for s in picked]


class RandomizedLeastUsedSelection(WeightedRandomSelection):
    """RFC 5356 5.4: WRAND with weight ``0xffffffff - load``.

    A PE reporting load 0xffffffff (100 %) has weight 0 and is never
    selected, as the RFC's probability formula gives it probability 0.
    """

    __slots__ = ()

    def __init__(self, rng: random.Random, policy_type: int = RANDOMIZED_LEAST_USED) -> None:
        super().__init__(rng, policy_type)

    @staticmethod
    def _weight(settings: PolicySettings) -> int:
        return MAX_UINT32 - settings.load
