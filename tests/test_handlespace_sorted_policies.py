"""The sorted selection policies (RR, WRR, PRIO, LU, PLU, LUD): exact rules
and model tests."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rserpool.handlespace import sorted_policies as srt
from rserpool.handlespace.types import (
    LEAST_USED,
    LEAST_USED_DEGRADATION,
    MAX_UINT32,
    PRIORITY,
    PRIORITY_LEAST_USED,
    ROUND_ROBIN,
    WEIGHTED_ROUND_ROBIN,
    PolicySettings,
)
from tests.policyhelpers import PE, drive, filled, ids, ops, pes


SORTED_TYPES = [ROUND_ROBIN, PRIORITY, LEAST_USED, PRIORITY_LEAST_USED, LEAST_USED_DEGRADATION]


# ---------------------------------------------------------------- RR


def test_round_robin_starts_at_head_and_advances_by_one() -> None:
    policy = filled(ROUND_ROBIN, pes(ROUND_ROBIN, weight=[0] * 4))
    got = [ids(policy.select(3)) for _ in range(5)]
    assert got == [[1, 2, 3], [2, 3, 4], [3, 4, 1], [4, 1, 2], [1, 2, 3]]


def test_round_robin_removing_the_head_makes_the_next_the_head() -> None:
    members = pes(ROUND_ROBIN, weight=[0] * 4)
    policy = filled(ROUND_ROBIN, members)
    policy.select(1)  # head -> PE2
    policy.remove(members[1])
    assert ids(policy.select(4)) == [3, 4, 1]


def test_round_robin_new_member_goes_behind_the_tail() -> None:
    members = pes(ROUND_ROBIN, weight=[0] * 3)
    policy = filled(ROUND_ROBIN, members)
    policy.select(1)  # circle 1 2 3, head -> 2
    policy.add(PE(4, PolicySettings(ROUND_ROBIN)))
    assert ids(policy.select(4)) == [2, 3, 1, 4]


def test_round_robin_update_keeps_the_position() -> None:
    members = pes(ROUND_ROBIN, weight=[0] * 3)
    policy = filled(ROUND_ROBIN, members)
    policy.update(members[0], PolicySettings(ROUND_ROBIN))
    assert ids(policy.select(3)) == [1, 2, 3]


# ---------------------------------------------------------------- WRR


def test_weighted_round_robin_pattern_1_2_3() -> None:
    policy = filled(WEIGHTED_ROUND_ROBIN, pes(WEIGHTED_ROUND_ROBIN, weight=[1, 2, 3]))
    heads = [policy.select(1)[0].pe_id for _ in range(12)]
    assert heads == [3, 2, 1, 3, 2, 3] * 2
    # A response lists the next distinct members of the circle from the head.
    assert ids(policy.select(3)) == [3, 2, 1]
    assert ids(policy.select(3)) == [2, 1, 3]


def test_weighted_round_robin_with_equal_weights_is_round_robin() -> None:
    policy = filled(WEIGHTED_ROUND_ROBIN, pes(WEIGHTED_ROUND_ROBIN, weight=[7] * 4))
    got = [ids(policy.select(3)) for _ in range(5)]
    assert got == [[1, 2, 3], [2, 3, 4], [3, 4, 1], [4, 1, 2], [1, 2, 3]]


def test_weighted_round_robin_weight_zero_never_and_update_moves() -> None:
    members = pes(WEIGHTED_ROUND_ROBIN, weight=[0, 1, 1])
    policy = filled(WEIGHTED_ROUND_ROBIN, members)
    assert len(policy) == 3
    for _ in range(10):
        assert 1 not in ids(policy.select(5))
    policy.update(members[0], PolicySettings(WEIGHTED_ROUND_ROBIN, weight=2))
    heads = [policy.select(1)[0].pe_id for _ in range(40)]
    assert heads.count(1) == 20 and heads.count(2) == 10 and heads.count(3) == 10
    policy.update(members[1], PolicySettings(WEIGHTED_ROUND_ROBIN, weight=0))
    assert sorted(ids(policy.select(5))) == [1, 3]
    policy.remove(members[1])
    assert len(policy) == 2


# ---------------------------------------------------------------- PRIO / LU / PLU / LUD


def test_priority_highest_first_round_robin_among_equal() -> None:
    policy = filled(PRIORITY, pes(PRIORITY, priority=[1, 5, 5, 3, MAX_UINT32, 0]))
    got = [ids(policy.select(4)) for _ in range(3)]
    assert got == [[5, 2, 3, 4], [5, 2, 3, 4], [5, 2, 3, 4]]
    policy.update(next(m for m in policy if m.pe_id == 5), PolicySettings(PRIORITY, priority=5))
    got = [ids(policy.select(3)) for _ in range(3)]
    assert got == [[2, 3, 5], [3, 5, 2], [5, 2, 3]]


def test_least_used_ascending_and_round_robin_among_equal_loads() -> None:
    members = pes(LEAST_USED, load=[30, 10, 10, 20, 10])
    policy = filled(LEAST_USED, members)
    got = [ids(policy.select(4)) for _ in range(4)]
    assert got == [[2, 3, 5, 4], [3, 5, 2, 4], [5, 2, 3, 4], [2, 3, 5, 4]]
    # A load change (re-registration) moves the PE at once.
    policy.update(members[0], PolicySettings(LEAST_USED, load=0))
    assert ids(policy.select(2)) == [1, 3]


def test_priority_least_used_ranks_by_load_plus_degradation() -> None:
    # RFC 5356 5.3.1: A 50 % + 10 % beats B 50 % + 50 %.
    policy = filled(
        PRIORITY_LEAST_USED,
        pes(PRIORITY_LEAST_USED, load=[50, 50, 40, 30], load_degradation=[50, 10, 20, 30]),
    )
    assert ids(policy.select(4)) == [2, 3, 4, 1]  # 60, 60, 60, 100
    assert ids(policy.select(4)) == [3, 4, 2, 1]  # round robin among the 60s
    assert ids(policy.select(1)) == [4]


def test_least_used_degradation_counters() -> None:
    members = pes(LEAST_USED_DEGRADATION, load=[10, 12, 30], load_degradation=[5, 5, 1])
    policy = filled(LEAST_USED_DEGRADATION, members)
    a, b, c = members
    assert ids(policy.select(2)) == [1, 2]  # ranks 10, 12 -> counters 1, 1
    assert (policy.counter(a), policy.counter(b), policy.counter(c)) == (1, 1, 0)
    assert ids(policy.select(2)) == [1, 2]  # 15, 17 -> counters 2, 2
    assert ids(policy.select(3)) == [1, 2, 3]  # 20, 22, 30
    assert ids(policy.select(3)) == [1, 2, 3]  # 25, 27, 31
    assert ids(policy.select(1)) == [1]  # 30, 32, 32
    assert (policy.counter(a), policy.counter(b), policy.counter(c)) == (5, 4, 2)
    # Re-registration resets the counter to 0 (RFC 5356 5.2.2).
    policy.update(b, PolicySettings(LEAST_USED_DEGRADATION, load=12, load_degradation=5))
    assert policy.counter(b) == 0
    assert ids(policy.select(3)) == [2, 3, 1]  # 12, 32, 35


def test_least_used_degradation_with_zero_degradation_is_least_used() -> None:
    loads = [5, 1, 1, 3, 1, 5]
    lu = filled(LEAST_USED, pes(LEAST_USED, load=loads))
    lud = filled(
        LEAST_USED_DEGRADATION, pes(LEAST_USED_DEGRADATION, load=loads, load_degradation=[0] * 6)
    )
    for n in [1, 3, 2, 6, 4] * 4:
        assert ids(lu.select(n)) == ids(lud.select(n))


# ---------------------------------------------------------------- model test


class NaiveModel:
    """The RFC rules written the obvious O(n) way.

    ``queue`` is the round robin order: the least recently served first
    (members join at the back; the first member of a response moves to the
    back).  Sorted policies return the members stably sorted by rank.
    """

    def __init__(self, code: int) -> None:
        self.code = code
        self.queue: list[PE] = []
        self.counters: dict[int, int] = {}

    def rank(self, m: PE) -> int:
        s = m.settings
        if self.code == PRIORITY:
            return -s.priority
        if self.code == LEAST_USED:
            return s.load
        if self.code == PRIORITY_LEAST_USED:
            return s.load + s.load_degradation
        if self.code == LEAST_USED_DEGRADATION:
            return s.load + self.counters.get(m.pe_id, 0) * s.load_degradation
        return 0

    def add(self, m: PE) -> None:
        self.queue.append(m)

    def remove(self, m: PE) -> None:
        self.queue.remove(m)
        self.counters.pop(m.pe_id, None)

    def update(self, m: PE) -> None:
        self.counters.pop(m.pe_id, None)

    def select(self, n: int) -> list[PE]:
        if n <= 0 or not self.queue:
            return []
        out = sorted(self.queue, key=self.rank)[:n]
        self.queue.remove(out[0])
        self.queue.append(out[0])
        if self.code == LEAST_USED_DEGRADATION:
            for m in out:
                self.counters[m.pe_id] = self.counters.get(m.pe_id, 0) + 1
        return out


class NaiveCircle:
    """RFC 5356 4.1.2 literally: a circular list and a head index."""

    def __init__(self) -> None:
        self.circle: list[PE] = []
        self.head = 0

    def add(self, m: PE) -> None:
        self.circle.insert(self.head, m)  # just before the head: the tail
        if len(self.circle) > 1:
            self.head += 1

    def remove(self, m: PE) -> None:
        i = self.circle.index(m)
        del self.circle[i]
        if i < self.head:
            self.head -= 1
        if self.head >= len(self.circle):
            self.head = 0

    def select(self, n: int) -> list[PE]:
        size = len(self.circle)
        if n <= 0 or not size:
            return []
        out = [self.circle[(self.head + j) % size] for j in range(min(n, size))]
        self.head = (self.head + 1) % size
        return out


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(SORTED_TYPES), ops)
def test_sorted_policies_match_the_naive_model(code: int, script: Any) -> None:
    model = NaiveModel(code)
    circle = NaiveCircle()

    def check(op: str, arg: Any, got: Any) -> None:
        if op == "select":
            expected = model.select(arg)
            assert ids(got) == ids(expected)
            if code == ROUND_ROBIN:
                assert ids(circle.select(arg)) == ids(got)
        else:
            getattr(model, op)(arg)
            if code == ROUND_ROBIN and op != "update":
                getattr(circle, op)(arg)

    drive(code, script, check)


class NaiveStride:
    """WRR's stride rule with explicit pass values and a linear scan."""

    def __init__(self) -> None:
        self.passes: dict[int, tuple[int, int]] = {}  # pe_id -> (pass, seq)
        self.members: dict[int, PE] = {}
        self.vtime = 0
        self.seq = 0

    def stride(self, m: PE) -> int:
        return srt._STRIDE_ONE // m.settings.weight

    def add(self, m: PE) -> None:
        self.members[m.pe_id] = m
        if m.settings.weight:
            self.seq += 1
            self.passes[m.pe_id] = (self.vtime + self.stride(m) // 2, self.seq)

    def remove(self, m: PE) -> None:
        del self.members[m.pe_id]
        self.passes.pop(m.pe_id, None)

    def update(self, m: PE, old: PolicySettings) -> None:
        new_w, old_w = m.settings.weight, old.weight
        if new_w == old_w:
            return
        entry = self.passes.pop(m.pe_id, None)
        if not new_w:
            return
        if not old_w or entry is None:
            self.seq += 1
            self.passes[m.pe_id] = (self.vtime + self.stride(m) // 2, self.seq)
            return
        s_one = srt._STRIDE_ONE
        remaining = (entry[0] - self.vtime) * (s_one // new_w) // (s_one // old_w)
        self.passes[m.pe_id] = (self.vtime + remaining, entry[1])

    def select(self, n: int) -> list[PE]:
        if n <= 0 or not self.passes:
            return []
        order = sorted(self.passes, key=self.passes.__getitem__)[:n]
        head = order[0]
        self.vtime = self.passes[head][0]
        self.seq += 1
        self.passes[head] = (self.vtime + self.stride(self.members[head]), self.seq)
        return [self.members[i] for i in order]


@settings(max_examples=60, deadline=None)
@given(ops)
def test_weighted_round_robin_matches_the_naive_stride_model(script: Any) -> None:
    policy = srt.WeightedRoundRobinSelection()
    model = NaiveStride()
    live: list[PE] = []
    next_id = 1
    for op, a, b, c in script:
        new = PolicySettings(WEIGHTED_ROUND_ROBIN, weight=[0, 1, 2, 3, 5, 97, 2**32 - 1][c])
        if op == "add" or (op != "select" and not live):
            m = PE(next_id, new)
            next_id += 1
            live.append(m)
            policy.add(m)
            model.add(m)
        elif op == "remove":
            m = live.pop(a % len(live))
            policy.remove(m)
            model.remove(m)
        elif op == "update":
            m = live[b % len(live)]
            old = m.settings
            policy.update(m, new)
            model.update(m, old)
        else:
            assert ids(policy.select(a)) == ids(model.select(a))
        assert len(policy) == len(live)
