"""RFC 5356 server-side selection policies: the registry (make_policy,
the type predicates) and what every policy must do."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rserpool.handlespace import policies as pol
from rserpool.handlespace import random_policies as rnd
from rserpool.handlespace import sorted_policies as srt
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
from tests.policyhelpers import PE, drive, filled, ids, ops, pes


# ---------------------------------------------------------------- factory


@pytest.mark.parametrize(
    "code, cls",
    [
        (ROUND_ROBIN, srt.RoundRobinSelection),
        (WEIGHTED_ROUND_ROBIN, srt.WeightedRoundRobinSelection),
        (RANDOM, rnd.RandomSelection),
        (WEIGHTED_RANDOM, rnd.WeightedRandomSelection),
        (PRIORITY, srt.PrioritySelection),
        (LEAST_USED, srt.LeastUsedSelection),
        (LEAST_USED_DEGRADATION, srt.LeastUsedDegradationSelection),
        (PRIORITY_LEAST_USED, srt.PriorityLeastUsedSelection),
        (RANDOMIZED_LEAST_USED, rnd.RandomizedLeastUsedSelection),
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
    assert isinstance(policy, srt.RoundRobinSelection)
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
