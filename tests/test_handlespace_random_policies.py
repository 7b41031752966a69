"""The random selection policies (RAND, WRAND, RLU): exact rules."""

from __future__ import annotations

import random

import pytest

from rserpool.handlespace.types import (
    MAX_UINT32,
    RANDOM,
    RANDOMIZED_LEAST_USED,
    WEIGHTED_RANDOM,
    PolicySettings,
)
from tests.policyhelpers import filled, ids, pes


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
