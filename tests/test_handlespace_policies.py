"""RFC 5356 server-side selection policies: exact rules and a model test."""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rserpool.handlespace import policies as pol
from rserpool.handlespace._trees import SumTree
from rserpool.handlespace.types import (
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
    PolicySettings,
)


@dataclass(eq=False)
class PE:
    pe_id: int
    settings: PolicySettings
    policy_state: Any = None

    def __repr__(self) -> str:
        return f"PE{self.pe_id}"


def pes(policy_type: int, **values: list[int]) -> list[PE]:
    count = len(next(iter(values.values()))) if values else 0
    return [
        PE(i + 1, PolicySettings(policy_type, **{k: v[i] for k, v in values.items()}))
        for i in range(count)
    ]


def filled(policy_type: int, members: list[PE], seed: int = 1) -> Any:
    policy = pol.make_policy(policy_type, random.Random(seed))
    for m in members:
        policy.add(m)
    return policy


def ids(selection: Any) -> list[int]:
    return [m.pe_id for m in selection]


# ---------------------------------------------------------------- factory


@pytest.mark.parametrize(
    "code, cls",
    [
        (ROUND_ROBIN, pol.RoundRobinPolicy),
        (WEIGHTED_ROUND_ROBIN, pol.WeightedRoundRobinPolicy),
        (RANDOM, pol.RandomPolicy),
        (WEIGHTED_RANDOM, pol.WeightedRandomPolicy),
        (PRIORITY, pol.PriorityPolicy),
        (LEAST_USED, pol.LeastUsedPolicy),
        (LEAST_USED_DEGRADATION, pol.LeastUsedDegradationPolicy),
        (PRIORITY_LEAST_USED, pol.PriorityLeastUsedPolicy),
        (RANDOMIZED_LEAST_USED, pol.RandomizedLeastUsedPolicy),
    ],
)
def test_make_policy_maps_every_rfc_type(code: int, cls: type) -> None:
    policy = pol.make_policy(code, random.Random(0))
    assert type(policy) is cls
    assert policy.policy_type == code
    assert len(policy) == 0
    assert list(policy.select(3)) == []


@pytest.mark.parametrize("code", [0x80000001, 0xB0001001, 0x00000006, 0x40000005])
def test_unknown_and_private_types_are_hosted_as_round_robin(code: int) -> None:
    members = [PE(i, PolicySettings(code, opaque=b"\x01\x02")) for i in (1, 2, 3)]
    policy = filled(code, members)
    assert isinstance(policy, pol.RoundRobinPolicy)
    assert policy.policy_type == code
    assert pol.server_policy_type(code) == ROUND_ROBIN
    assert [ids(policy.select(2)) for _ in range(3)] == [[1, 2], [2, 3], [3, 1]]
    new = PolicySettings(code, opaque=b"\x09")
    policy.update(members[0], new)
    assert members[0].settings.opaque == b"\x09"


def test_reserved_and_known_classification() -> None:
    assert pol.is_reserved_policy_type(0) and pol.is_reserved_policy_type(0x40000000)
    assert not pol.is_reserved_policy_type(ROUND_ROBIN)
    assert not pol.is_reserved_policy_type(0x80000000)
    assert all(pol.is_known_policy_type(c) for c in POLICY_NAMES)
    assert not pol.is_known_policy_type(0x80000001)
    with pytest.raises(ValueError):
        pol.make_policy(1 << 32, random.Random(0))


@pytest.mark.parametrize("code", sorted(POLICY_NAMES))
def test_policy_type_mismatch_is_rejected_without_change(code: int) -> None:
    policy = filled(code, pes(code, weight=[1, 2], load=[1, 2]))
    stranger = PE(9, PolicySettings(0x80000009))
    with pytest.raises(ValueError):
        policy.add(stranger)
    member = next(iter(policy))
    before = member.settings
    with pytest.raises(ValueError):
        policy.update(member, PolicySettings(0x80000009))
    assert member.settings is before
    assert len(policy) == 2


@pytest.mark.parametrize("code", sorted(POLICY_NAMES))
def test_n_zero_negative_larger_than_pool_and_no_duplicates(code: int) -> None:
    members = pes(code, weight=[1, 2, 3, 4], load=[4, 3, 2, 1], priority=[1, 1, 2, 2])
    policy = filled(code, members)
    assert list(policy.select(0)) == []
    assert list(policy.select(-5)) == []
    for _ in range(10):
        chosen = ids(policy.select(10))
        assert sorted(chosen) == [1, 2, 3, 4]
        three = ids(policy.select(3))
        assert len(three) == 3 and len(set(three)) == 3


@pytest.mark.parametrize("code", sorted(POLICY_NAMES))
def test_remove_then_empty(code: int) -> None:
    members = pes(code, weight=[1, 1, 1], load=[0, 0, 0])
    policy = filled(code, members)
    for m in members:
        policy.remove(m)
        assert m.policy_state is None
        assert m not in policy.select(5)
    assert len(policy) == 0 and list(policy.select(1)) == []
    with pytest.raises(ValueError):
        policy.remove(members[0])


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


# ---------------------------------------------------------------- RAND / WRAND / RLU


def test_random_is_seeded_and_uses_only_the_injected_source() -> None:
    def run(seed: int) -> list[list[int]]:
        policy = filled(RANDOM, pes(RANDOM, weight=[0] * 10), seed)
        return [ids(policy.select(3)) for _ in range(20)]

    state = random.getstate()
    assert run(5) == run(5)
    assert run(5) != run(6)
    assert random.getstate() == state


@pytest.mark.parametrize("code", [WEIGHTED_RANDOM, RANDOMIZED_LEAST_USED])
def test_weight_zero_is_never_selected(code: int) -> None:
    if code == WEIGHTED_RANDOM:
        members = pes(code, weight=[0, 5, 0, 1])
    else:
        members = pes(code, load=[MAX_UINT32, 5, MAX_UINT32, 1])
    policy = filled(code, members)
    assert len(policy) == 4 and policy.selectable == 2
    for _ in range(200):
        assert sorted(ids(policy.select(4))) == [2, 4]
    other = PolicySettings(code, weight=0, load=MAX_UINT32)
    policy.update(members[1], other)
    policy.update(members[3], other)
    assert list(policy.select(3)) == []


def test_weighted_random_dominant_weight_still_fills_the_response() -> None:
    members = pes(WEIGHTED_RANDOM, weight=[MAX_UINT32, 1, 1, 1])
    policy = filled(WEIGHTED_RANDOM, members)
    for _ in range(50):
        assert sorted(ids(policy.select(4))) == [1, 2, 3, 4]
        assert len(set(ids(policy.select(3)))) == 3


def test_weighted_random_update_moves_the_probability() -> None:
    members = pes(WEIGHTED_RANDOM, weight=[1, 1])
    policy = filled(WEIGHTED_RANDOM, members)
    policy.update(members[0], PolicySettings(WEIGHTED_RANDOM, weight=0))
    assert all(ids(policy.select(1)) == [2] for _ in range(50))
    policy.update(members[0], PolicySettings(WEIGHTED_RANDOM, weight=1))
    policy.update(members[1], PolicySettings(WEIGHTED_RANDOM, weight=0))
    assert all(ids(policy.select(1)) == [1] for _ in range(50))


def test_weighted_random_shrinks_and_keeps_members_consistent() -> None:
    members = pes(WEIGHTED_RANDOM, weight=list(range(1, 301)))
    policy = filled(WEIGHTED_RANDOM, members)
    for m in members[:290]:
        policy.remove(m)
    assert policy._tree.capacity < 300
    assert sorted(ids(policy.select(20))) == list(range(291, 301))
    for m in members[290:]:
        assert policy._members[m.policy_state] is m


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


# ---------------------------------------------------------------- sum tree


def test_sum_tree_against_a_prefix_list() -> None:
    rng = random.Random(3)
    tree = SumTree()
    ref: dict[int, int] = {}
    for step in range(3000):
        op = rng.random()
        if op < 0.5 or not ref:
            w = rng.choice([0, 1, 5, rng.randrange(1 << 32)])
            slot = tree.allocate(w)
            assert slot not in ref
            ref[slot] = w
        elif op < 0.75:
            slot = rng.choice(list(ref))
            ref[slot] = rng.randrange(100)
            tree.set(slot, ref[slot])
        else:
            slot = rng.choice(list(ref))
            tree.release(slot)
            del ref[slot]
            if tree.should_shrink():
                mapping: dict[int, int] = {}
                tree.compact(mapping.__setitem__)
                ref = {mapping.get(k, k): v for k, v in ref.items()}
        assert tree.total == sum(ref.values()) and len(tree) == len(ref)
        if step % 25 == 0 and tree.total:
            slots = sorted(ref)
            cum = list(itertools.accumulate(ref[s] for s in slots))
            for _ in range(10):
                point = rng.randrange(tree.total)
                assert tree.find(point) == slots[bisect.bisect_right(cum, point)]
    with pytest.raises(ValueError):
        tree.set(next(iter(ref)), -1)


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


small = st.integers(0, 6)
ops = st.lists(
    st.tuples(st.sampled_from(["add", "remove", "update", "select"]), small, small, small),
    max_size=60,
)
SORTED_TYPES = [ROUND_ROBIN, PRIORITY, LEAST_USED, PRIORITY_LEAST_USED, LEAST_USED_DEGRADATION]


def drive(code: int, script: list[tuple[str, int, int, int]], check: Any) -> None:
    policy = pol.make_policy(code, random.Random(7))
    live: dict[int, PE] = {}
    next_id = 1
    for op, a, b, c in script:
        values = {"weight": a % 4, "priority": a, "load": b, "load_degradation": c}
        if code == RANDOMIZED_LEAST_USED:
            values["load"] = MAX_UINT32 - (a % 4)
        new = PolicySettings(code, **values)
        if op == "add" or (op != "select" and not live):
            member = PE(next_id, new)
            next_id += 1
            live[member.pe_id] = member
            policy.add(member)
            check("add", member, None)
        elif op == "remove":
            member = list(live.values())[a % len(live)]
            del live[member.pe_id]
            policy.remove(member)
            check("remove", member, None)
        elif op == "update":
            member = list(live.values())[b % len(live)]
            policy.update(member, new)
            assert member.settings is new
            check("update", member, None)
        else:
            got = list(policy.select(a - 1))
            check("select", a - 1, got)
        assert len(policy) == len(live)


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
        return pol._STRIDE_ONE // m.settings.weight

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
        s_one = pol._STRIDE_ONE
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
    policy = pol.WeightedRoundRobinPolicy()
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


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([RANDOM, WEIGHTED_RANDOM, RANDOMIZED_LEAST_USED, WEIGHTED_ROUND_ROBIN]), ops)
def test_other_policies_select_distinct_live_selectable_members(code: int, script: Any) -> None:
    live: dict[int, PE] = {}

    def weight(m: PE) -> int:
        if code == RANDOMIZED_LEAST_USED:
            return MAX_UINT32 - m.settings.load
        if code == RANDOM:
            return 1
        return m.settings.weight

    def check(op: str, arg: Any, got: Any) -> None:
        if op == "add":
            live[arg.pe_id] = arg
        elif op == "remove":
            del live[arg.pe_id]
        elif op == "select":
            chosen = ids(got)
            assert len(chosen) == len(set(chosen))
            assert all(i in live and weight(live[i]) > 0 for i in chosen)
            selectable = sum(1 for m in live.values() if weight(m) > 0)
            assert len(chosen) == max(0, min(arg, selectable))

    drive(code, script, check)
