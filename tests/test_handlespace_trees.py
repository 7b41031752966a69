"""rserpool.handlespace._trees: the prefix-sum tree of WRAND and RLU."""

from __future__ import annotations

import bisect
import itertools
import random

import pytest

from rserpool.handlespace._trees import SumTree


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
