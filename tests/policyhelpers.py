"""Helpers shared by the selection policy tests: a stand-in member, pools
filled through ``make_policy`` and a scripted driver for model tests."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from rserpool.handlespace import policies as pol
from rserpool.handlespace.types import MAX_UINT32, RANDOMIZED_LEAST_USED, PolicySettings


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


small = st.integers(0, 6)
ops = st.lists(
    st.tuples(st.sampled_from(["add", "remove", "update", "select"]), small, small, small),
    max_size=60,
)


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
