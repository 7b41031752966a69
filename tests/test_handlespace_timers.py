"""Unit tests of rserpool.handlespace.timers."""

from __future__ import annotations

import random

from rserpool.handlespace.timers import COMPACT_SLACK, DeadlineQueue


class _Item:
    __slots__ = ("token",)

    def __init__(self) -> None:
        self.token = None


def test_deadline_queue_compaction_bound() -> None:
    queue: DeadlineQueue[_Item] = DeadlineQueue("token")
    items = [_Item() for _ in range(100)]
    rnd = random.Random(3)
    for step in range(20_000):
        queue.schedule(rnd.choice(items), rnd.random() * 1000)
        assert queue.heap_size() <= 2 * len(queue) + COMPACT_SLACK + 1
    assert len(queue) == len([i for i in items if i.token is not None])
    due = queue.pop_due(2000.0)
    assert len(due) == len(set(map(id, due))) == 100 - sum(1 for i in items if i.token is not None)
    assert len(queue) == 0 and queue.next_deadline() is None
