"""Pool-user side selection rules (RFC 5356 "Pool User Considerations")."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from rserpool.handlespace.pu_selection import PuSelector, pu_select
from rserpool.handlespace.types import (
    LEAST_USED,
    LEAST_USED_DEGRADATION,
    MAX_UINT32,
    PRIORITY,
    PRIORITY_LEAST_USED,
    RANDOM,
    RANDOMIZED_LEAST_USED,
    ROUND_ROBIN,
    WEIGHTED_RANDOM,
    WEIGHTED_ROUND_ROBIN,
    PolicySettings,
)


@dataclass(frozen=True)
class Entry:
    pe_id: int
    settings: PolicySettings


def entries(code: int, **values: list[int]) -> list[Entry]:
    count = len(next(iter(values.values()))) if values else 3
    return [
        Entry(i + 1, PolicySettings(code, **{k: v[i] for k, v in values.items()}))
        for i in range(count)
    ]


@pytest.mark.parametrize("code", [ROUND_ROBIN, WEIGHTED_ROUND_ROBIN, 0x80000042])
def test_round_robin_from_the_first_and_around(code: int) -> None:
    sel = PuSelector(code, entries(code, weight=[1, 5, 9]), random.Random(0))
    assert [sel.select().pe_id for _ in range(7)] == [1, 2, 3, 1, 2, 3, 1]


def test_round_robin_skips_excluded_entries() -> None:
    sel = PuSelector(ROUND_ROBIN, entries(ROUND_ROBIN, weight=[0, 0, 0]), random.Random(0))
    assert [sel.select({2}).pe_id for _ in range(4)] == [1, 3, 1, 3]
    assert sel.select({1, 2, 3}) is None


@pytest.mark.parametrize("code", [LEAST_USED, LEAST_USED_DEGRADATION, PRIORITY_LEAST_USED])
def test_least_used_family_uses_the_returned_order(code: int) -> None:
    # The list is used as the registrar sorted it, whatever the loads say.
    sel = PuSelector(code, entries(code, load=[9, 1, 5]), random.Random(0))
    assert [sel.select().pe_id for _ in range(3)] == [1, 1, 1]
    assert sel.select({1}).pe_id == 2
    assert sel.select({1, 2}).pe_id == 3
    assert sel.select({1, 2, 3}) is None


def test_priority_highest_active_first() -> None:
    sel = PuSelector(PRIORITY, entries(PRIORITY, priority=[3, 7, 7, 1]), random.Random(0))
    assert sel.select().pe_id == 2
    assert sel.select({2}).pe_id == 3
    assert sel.select({2, 3}).pe_id == 1
    assert sel.select({1, 2, 3}).pe_id == 4


def test_random_uniform_and_exclusion() -> None:
    sel = PuSelector(RANDOM, entries(RANDOM, weight=[0] * 4), random.Random(3))
    counts = Counter(sel.select().pe_id for _ in range(8000))
    assert set(counts) == {1, 2, 3, 4}
    assert all(abs(c - 2000) < 200 for c in counts.values())
    assert {sel.select({1, 2, 3}).pe_id for _ in range(20)} == {4}
    assert sel.select({1, 2, 3, 4}) is None


@pytest.mark.parametrize("code", [WEIGHTED_RANDOM, RANDOMIZED_LEAST_USED])
def test_weighted_random_follows_weights_and_never_weight_zero(code: int) -> None:
    if code == WEIGHTED_RANDOM:
        es = entries(code, weight=[1, 3, 0])
    else:
        es = entries(code, load=[MAX_UINT32 - 1, MAX_UINT32 - 3, MAX_UINT32])
    sel = PuSelector(code, es, random.Random(4))
    counts = Counter(sel.select().pe_id for _ in range(8000))
    assert counts[3] == 0
    assert abs(counts[2] / 8000 - 0.75) < 0.03
    assert {sel.select({2}).pe_id for _ in range(30)} == {1}
    assert sel.select({1, 2}) is None


def test_empty_list_and_stateless_helper() -> None:
    assert PuSelector(ROUND_ROBIN, [], random.Random(0)).select() is None
    es = entries(LEAST_USED, load=[5, 1])
    assert pu_select(LEAST_USED, es, random.Random(0)).pe_id == 1
    assert pu_select(ROUND_ROBIN, es, random.Random(0), exclude={1}).pe_id == 2
