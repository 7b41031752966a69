"""The sorted selection policies of RFC 5356: Round Robin (and every
unknown type), Priority, Least Used, Priority Least Used, Least Used with
Degradation, and Weighted Round Robin by stride scheduling.

* Every policy here keeps the members' integer keys
  ``(rank << 64) | seq`` in a ``SortedList`` (plus a dict key -> member).
  ``seq`` is a per-pool counter: a member gets a fresh one when it is added
  and when it is the first member of a response ("the head advances by
  one"), which moves it behind the members of equal rank.  Ranks: RR 0 (the
  sorted list is then the circular list, index 0 its head), PRIO
  ``2**32-1 - priority``, LU ``load``, PLU ``load + load_degradation``, LUD
  ``load + counter * load_degradation`` (every returned member's counter is
  incremented; (re-)registration resets it).
* WRR is stride scheduling: the key is ``(pass << 64) | seq``; the head is
  the member with the smallest pass, and advancing it adds
  ``2 * lcm(1..64) // weight`` to its pass; a new member starts half a
  stride after the virtual time.  The circular list of RFC 5356 4.2.2 is
  the sequence of heads.  With equal weights it is a plain round robin.

Pure Python: no Twisted, no clock.  :func:`rserpool.handlespace.policies.make_policy`
picks the policy of a pool; the details and the reasons are in docs/policies.md.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from sortedcontainers import SortedList

from rserpool.handlespace.types import (
    LEAST_USED,
    LEAST_USED_DEGRADATION,
    MAX_UINT32,
    PRIORITY,
    PRIORITY_LEAST_USED,
    ROUND_ROBIN,
    WEIGHTED_ROUND_ROBIN,
    Member,
    PolicySettings,
    policy_mismatch,
)

__all__ = [
    "LeastUsedDegradationSelection",
    "LeastUsedSelection",
    "PriorityLeastUsedSelection",
    "PrioritySelection",
    "RoundRobinSelection",
    "WeightedRoundRobinSelection",
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


class _SortedSelection:
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
            raise policy_mismatch(self.policy_type, settings)
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
            raise policy_mismatch(self.policy_type, settings)
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


class RoundRobinSelection(_SortedSelection):
    """RFC 5356 4.1: circular list, response from the head, head += 1.

    Also serves unknown and private policy types (``policy_type`` is then
    that type; the settings, opaque bytes included, are kept untouched).
    """

    __slots__ = ()

    def __init__(self, policy_type: int = ROUND_ROBIN) -> None:
        super().__init__(policy_type)

    def update(self, member: Member, settings: PolicySettings) -> None:
        if settings.policy_type != self.policy_type:
            raise policy_mismatch(self.policy_type, settings)
        member.settings = settings  # the position in the circle is kept


class PrioritySelection(_SortedSelection):
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


class LeastUsedSelection(_SortedSelection):
    """RFC 5356 5.1: lowest loads, ascending; round robin among equals."""

    __slots__ = ()

    def __init__(self, policy_type: int = LEAST_USED) -> None:
        super().__init__(policy_type)

    @staticmethod
    def _rank(settings: PolicySettings) -> int:
        return settings.load


class PriorityLeastUsedSelection(_SortedSelection):
    """RFC 5356 5.3: lowest load + load degradation, ascending; round robin
    among equal sums."""

    __slots__ = ()

    def __init__(self, policy_type: int = PRIORITY_LEAST_USED) -> None:
        super().__init__(policy_type)

    @staticmethod
    def _rank(settings: PolicySettings) -> int:
        return settings.load + settings.load_degradation


class LeastUsedDegradationSelection(_SortedSelection):
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


class WeightedRoundRobinSelection(_SortedSelection):
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
            raise policy_mismatch(self.policy_type, settings)
        self._insert_new(member, settings.weight)

    def remove(self, member: Member) -> None:
        if member.policy_state == _ZERO_WEIGHT:
            self._zero -= 1
            member.policy_state = None
        else:
            super().remove(member)

    def update(self, member: Member, settings: PolicySettings) -> None:
        if settings.policy_type != self.policy_type:
            raise policy_mismatch(self.policy_type, settings)
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
