"""Server-side pool member selection policies (RFC 5356), O(log n) each.

One policy object per pool holds the pool's members (the store's PE
records, see ``rserpool.handlespace.types.Member``) in a structure suited to
its rule and answers ``select(n)`` for a handle resolution.  Pure Python: no
Twisted, no clock; randomness only from the injected ``random.Random``.

Rules as implemented (the details and the reasons are in docs/policies.md):

* Round Robin and every sorted policy keep the members' integer keys
  ``(rank << 64) | seq`` in a ``SortedList`` (plus a dict key -> member).
  ``seq`` is a per-pool counter: a member gets a fresh one when it is added and when it
  is the first member of a response ("the head advances by one"), which
  moves it behind the members of equal rank.  Ranks: RR 0 (the sorted list
  is then the circular list, index 0 its head), PRIO ``2**32-1 - priority``,
  LU ``load``, PLU ``load + load_degradation``, LUD
  ``load + counter * load_degradation`` (every returned member's counter is
  incremented; (re-)registration resets it).
* WRR is stride scheduling: the key is ``(pass << 64) | seq``; the head is
  the member with the smallest pass, and advancing it adds
  ``2 * lcm(1..64) // weight`` to its pass; a new member starts half a
  stride after the virtual time.  The circular list of RFC 5356 4.2.2 is
  the sequence of heads.  With equal weights it is a plain round robin.
* RAND keeps an array and draws by a partial Fisher-Yates shuffle.
* WRAND and RLU keep a 16-ary prefix-sum tree (``_trees.SumTree``); RLU's weight
  is ``0xffffffff - load``.  Weight 0 is never selected.
* Unknown, private and reserved policy types are served as Round Robin.
"""

from __future__ import annotations

import math
import random
from typing import Any, Sequence

from sortedcontainers import SortedList

from rserpool.handlespace._trees import SumTree
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
    Member,
    PolicySettings,
    SelectionPolicy,
)

__all__ = [
    "LeastUsedDegradationPolicy",
    "LeastUsedPolicy",
    "PriorityLeastUsedPolicy",
    "PriorityPolicy",
    "RandomPolicy",
    "RandomizedLeastUsedPolicy",
    "RoundRobinPolicy",
    "WeightedRandomPolicy",
    "WeightedRoundRobinPolicy",
    "is_known_policy_type",
    "is_reserved_policy_type",
    "make_policy",
    "server_policy_type",
]

_SEQ_BITS = 64
_SEQ_MASK = (1 << _SEQ_BITS) - 1
_RANK_MASK = ~_SEQ_MASK
# WRR: pass increment of a PE of weight w is _STRIDE_ONE // w.  2 * lcm(1..64)
# (about 2**89) makes the strides (and half strides) of all weights up to 64
# exact, so such weights produce exact ties, and keeps the relative rounding
# error of any 32-bit weight's stride below 2**-55.
_STRIDE_ONE = 2 * math.lcm(*range(1, 65))
_ZERO_WEIGHT = -1  # WRR policy_state of a member that is never selected
# WRAND: rejected duplicate draws per response before switching to exact
# exclusion (taking the drawn members' weights out of the tree).
_MAX_MISSES = 4


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


def _mismatch(pool_type: int, settings: PolicySettings) -> ValueError:
    return ValueError(
        f"policy type 0x{settings.policy_type:08x} does not match the "
        f"pool's 0x{pool_type:08x}"
    )


# --------------------------------------------------------------------------
# Sorted policies: RR (and unknown types), PRIO, LU, PLU, LUD
# --------------------------------------------------------------------------


class _SortedPolicy:
    """Members ordered by ``policy_state = (rank << 64) | seq``.

    A ``SortedList`` of the integer keys plus a dict from key to member:
    cheaper than a ``SortedKeyList`` of members (one list per operation, no
    key function, no member comparisons).
    """

    __slots__ = ("policy_type", "_sl", "_by_key", "_seq")

    def __init__(self, policy_type: int) -> None:
        self.policy_type = policy_type
        self._sl = SortedList()
        self._by_key: dict[int, Member] = {}
        self._seq = 0

    @staticmethod
    def _rank(settings: PolicySettings) -> int:
        return 0

    def __len__(self) -> int:
        return len(self._sl)

    def __iter__(self) -> Any:
        """Members in their current selection order (head first)."""
        by_key = self._by_key
        return iter([by_key[key] for key in self._sl])

    def add(self, member: Member) -> None:
        settings = member.settings
        if settings.policy_type != self.policy_type:
            raise _mismatch(self.policy_type, settings)
        self._seq += 1
        key = (self._rank(settings) << _SEQ_BITS) | self._seq
        member.policy_state = key
        self._sl.add(key)
        self._by_key[key] = member

    def remove(self, member: Member) -> None:
        key = member.policy_state
        if self._by_key.get(key) is not member:
            raise ValueError("not a member of this pool")
        del self._by_key[key]
        self._sl.remove(key)
        member.policy_state = None

    def update(self, member: Member, settings: PolicySettings) -> None:
        if settings.policy_type != self.policy_type:
            raise _mismatch(self.policy_type, settings)
        state = member.policy_state
        key = (self._rank(settings) << _SEQ_BITS) | (state & _SEQ_MASK)
        member.settings = settings
        if key != state:
            sl = self._sl
            by_key = self._by_key
            sl.remove(state)
            del by_key[state]
            member.policy_state = key
            sl.add(key)
            by_key[key] = member

    def select(self, n: int) -> Sequence[Member]:
        sl = self._sl
        if n <= 0 or not sl:
            return []
        by_key = self._by_key
        # Fast path: the SortedList's first sublist holds more than the n
        # keys wanted and the head's new key (same rank, fresh seq) still
        # sorts before the second key (the head is alone in its rank, as in
        # a Least-Used pool of distinct loads): the head keeps index 0, so
        # its key is replaced in place.  The sublist's length and maximum
        # (its last key: not the head, the sublist has two keys or more) do
        # not change, nor does the SortedList's positional index.  Otherwise
        # the pop-and-add below (same result).
        first = sl._lists[0]
        if len(first) > n:
            old = first[0]
            seq = self._seq + 1
            key = (old & _RANK_MASK) | seq
            if key < first[1]:
                out = [by_key[k] for k in first[:n]]
                self._seq = seq
                first[0] = key
                head = by_key.pop(old)
                head.policy_state = key
                by_key[key] = head
                return out
        keys = sl[0:n]
        out = [by_key[key] for key in keys]
        old = sl.pop(0)
        head = by_key.pop(old)
        self._seq = seq = self._seq + 1
        key = (old & _RANK_MASK) | seq
        head.policy_state = key
        sl.add(key)
        by_key[key] = head
        return out


class RoundRobinPolicy(_SortedPolicy):
    """RFC 5356 4.1: circular list, response from the head, head += 1.

    Also serves unknown and private policy types (``policy_type`` is then
    that type; the settings, opaque bytes included, are kept untouched).
    """

    __slots__ = ()

    def __init__(self, policy_type: int = ROUND_ROBIN) -> None:
        super().__init__(policy_type)

    def update(self, member: Member, settings: PolicySettings) -> None:
        if settings.policy_type != self.policy_type:
            raise _mismatch(self.policy_type, settings)
        member.settings = settings  # the position in the circle is kept


class PriorityPolicy(_SortedPolicy):
    """RFC 5356 4.5: highest priorities first, in decreasing order.

    Among equal priorities: round robin (the first member of a response goes
    behind the others of its priority).
    """

    __slots__ = ()

    def __init__(self, policy_type: int = PRIORITY) -> None:
        super().__init__(policy_type)

    @staticmethod
    def _rank(settings: PolicySettings) -> int:
        return MAX_UINT32 - settings.priority


class LeastUsedPolicy(_SortedPolicy):
    """RFC 5356 5.1: lowest loads, ascending; round robin among equals."""

    __slots__ = ()

    def __init__(self, policy_type: int = LEAST_USED) -> None:
        super().__init__(policy_type)

    @staticmethod
    def _rank(settings: PolicySettings) -> int:
        return settings.load


class PriorityLeastUsedPolicy(_SortedPolicy):
    """RFC 5356 5.3: lowest load + load degradation, ascending; round robin
    among equal sums."""

    __slots__ = ()

    def __init__(self, policy_type: int = PRIORITY_LEAST_USED) -> None:
        super().__init__(policy_type)

    @staticmethod
    def _rank(settings: PolicySettings) -> int:
        return settings.load + settings.load_degradation


class LeastUsedDegradationPolicy(_SortedPolicy):
    """RFC 5356 5.2: like LU, ranked by load + counter * load degradation.

    The degradation counters live in a dict by member; a counter is 0 after
    add and after every update (a re-registration) and is incremented for
    every member returned by ``select``.  Round robin among equal ranks as
    LU: only the first member of a response gets a fresh ``seq``.
    """

    __slots__ = ("_counters",)

    def __init__(self, policy_type: int = LEAST_USED_DEGRADATION) -> None:
        super().__init__(policy_type)
        self._counters: dict[int, int] = {}  # pe_id -> counter, if > 0

    @staticmethod
    def _rank(settings: PolicySettings) -> int:
        return settings.load

    def counter(self, member: Member) -> int:
        """The member's degradation counter."""
        return self._counters.get(member.pe_id, 0)

    def remove(self, member: Member) -> None:
        super().remove(member)
        self._counters.pop(member.pe_id, None)

    def update(self, member: Member, settings: PolicySettings) -> None:
        self._counters.pop(member.pe_id, None)
        super().update(member, settings)

    def select(self, n: int) -> Sequence[Member]:
        sl = self._sl
        if n <= 0 or not sl:
            return []
        by_key = self._by_key
        counters = self._counters
        keys = sl[0:n]
        out = [by_key[key] for key in keys]
        pop = sl.pop
        for old in keys:
            pop(0)
            del by_key[old]
        self._seq = seq = self._seq + 1
        add = sl.add
        first = True
        for member, old in zip(out, keys):
            ident = member.pe_id
            counter = counters.get(ident, 0) + 1
            counters[ident] = counter
            settings = member.settings
            rank = settings.load + counter * settings.load_degradation
            if first:
                key = (rank << _SEQ_BITS) | seq
                first = False
            else:
                key = (rank << _SEQ_BITS) | (old & _SEQ_MASK)
            member.policy_state = key
            add(key)
            by_key[key] = member
        return out


# --------------------------------------------------------------------------
# Weighted Round Robin
# --------------------------------------------------------------------------


class WeightedRoundRobinPolicy(_SortedPolicy):
    """RFC 5356 4.2 by stride scheduling (virtual time).

    Each member of weight w > 0 has a pass value; the circular list is the
    order of increasing ``(pass, seq)`` (``policy_state`` is
    ``(pass << 64) | seq``).  A response lists the n distinct members of
    smallest pass, i.e. the next n distinct members of the circular list
    from the head; then the head's pass grows by its stride
    ``2 * lcm(1..64) // w`` and it gets a fresh ``seq`` (goes behind the
    members with the same pass).  The virtual time is the head's pass at its last
    selection; a new member starts half a stride after it (its first turn
    is the midpoint of its first period, which keeps every member's count
    of turns within about one of its share at every point of the list); a
    weight change rescales the member's remaining distance to the virtual
    time.
    Weight 0: kept aside, never selected.
    """

    __slots__ = ("_vtime", "_zero")

    def __init__(self, policy_type: int = WEIGHTED_ROUND_ROBIN) -> None:
        super().__init__(policy_type)
        self._vtime = 0
        self._zero = 0

    def __len__(self) -> int:
        return len(self._sl) + self._zero

    def _insert(self, member: Member, key: int) -> None:
        member.policy_state = key
        self._sl.add(key)
        self._by_key[key] = member

    def _insert_new(self, member: Member, weight: int) -> None:
        if weight == 0:
            member.policy_state = _ZERO_WEIGHT
            self._zero += 1
            return
        self._seq += 1
        start = self._vtime + (_STRIDE_ONE // weight >> 1)
        self._insert(member, (start << _SEQ_BITS) | self._seq)

    def add(self, member: Member) -> None:
        settings = member.settings
        if settings.policy_type != self.policy_type:
            raise _mismatch(self.policy_type, settings)
        self._insert_new(member, settings.weight)

    def remove(self, member: Member) -> None:
        if member.policy_state == _ZERO_WEIGHT:
            self._zero -= 1
            member.policy_state = None
        else:
            super().remove(member)

    def update(self, member: Member, settings: PolicySettings) -> None:
        if settings.policy_type != self.policy_type:
            raise _mismatch(self.policy_type, settings)
        old_weight = member.settings.weight
        new_weight = settings.weight
        if old_weight == new_weight:
            member.settings = settings
            return
        state = member.policy_state
        self.remove(member)
        member.settings = settings
        if old_weight == 0 or new_weight == 0:
            self._insert_new(member, new_weight)
            return
        vtime = self._vtime
        remaining = (state >> _SEQ_BITS) - vtime
        remaining = remaining * (_STRIDE_ONE // new_weight) // (_STRIDE_ONE // old_weight)
        self._insert(member, ((vtime + remaining) << _SEQ_BITS) | (state & _SEQ_MASK))

    def select(self, n: int) -> Sequence[Member]:
        sl = self._sl
        if n <= 0 or not sl:
            return []
        by_key = self._by_key
        keys = sl[0:n]
        out = [by_key[key] for key in keys]
        old = sl.pop(0)
        head = by_key.pop(old)
        pass_ = old >> _SEQ_BITS
        self._vtime = pass_
        self._seq = seq = self._seq + 1
        pass_ += _STRIDE_ONE // head.settings.weight
        key = (pass_ << _SEQ_BITS) | seq
        head.policy_state = key
        sl.add(key)
        by_key[key] = head
        return out


# --------------------------------------------------------------------------
# Random, Weighted Random, Randomized Least Used
# --------------------------------------------------------------------------


class RandomPolicy:
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
            raise _mismatch(self.policy_type, settings)
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
            raise _mismatch(self.policy_type, settings)
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


class WeightedRandomPolicy:
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
            raise _mismatch(self.policy_type, settings)
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
            raise _mismatch(self.policy_type, settings)
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


class RandomizedLeastUsedPolicy(WeightedRandomPolicy):
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
        return RoundRobinPolicy()
    if policy_type == WEIGHTED_ROUND_ROBIN:
        return WeightedRoundRobinPolicy()
    if policy_type == RANDOM:
        return RandomPolicy(rng)
    if policy_type == WEIGHTED_RANDOM:
        return WeightedRandomPolicy(rng)
    if policy_type == PRIORITY:
        return PriorityPolicy()
    if policy_type == LEAST_USED:
        return LeastUsedPolicy()
    if policy_type == LEAST_USED_DEGRADATION:
        return LeastUsedDegradationPolicy()
    if policy_type == PRIORITY_LEAST_USED:
        return PriorityLeastUsedPolicy()
    if policy_type == RANDOMIZED_LEAST_USED:
        return RandomizedLeastUsedPolicy(rng)
    return RoundRobinPolicy(policy_type)

