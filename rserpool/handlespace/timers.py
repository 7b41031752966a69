"""Deadline queues for the handlespace: registration expiry and keep-alives.

A ``DeadlineQueue`` is a binary heap of ``(deadline, token, entry)`` items
with lazy cancellation: the entry keeps the token of its one live item in a
slot of its own (``slot``), so rescheduling or cancelling is O(1) plus one
O(log n) push, and a stale item is dropped when it reaches the top.  When
stale items outnumber live ones the heap is rebuilt, which keeps its size
below ``2 * live + COMPACT_SLACK`` and the cost amortised O(log n).

Pure Python: no clock, deadlines are plain floats given by the caller.
"""

from __future__ import annotations

import heapq
from typing import Any, Generic, TypeVar

__all__ = ["DeadlineQueue", "COMPACT_SLACK"]

COMPACT_SLACK = 1024

T = TypeVar("T")


class DeadlineQueue(Generic[T]):
    """Deadlines of entries; each entry has at most one live deadline.

    ``slot`` names the attribute of the entry that holds its live token
    (``None`` when the entry has no deadline in this queue).
    """

    __slots__ = ("_heap", "_slot", "_next_token", "_live", "_low")

    def __init__(self, slot: str) -> None:
        self._heap: list[tuple[float, int, Any]] = []
        self._slot = slot
        self._next_token = 0
        self._live = 0
        self._low: float | None = None

    def __len__(self) -> int:
        """The number of live deadlines."""
        return self._live

    def schedule(self, entry: T, deadline: float) -> None:
        """Set (or move) the deadline of ``entry``."""
        slot = self._slot
        if getattr(entry, slot) is None:
            self._live += 1
        token = self._next_token
        self._next_token = token + 1
        low = self._low
        if low is None or deadline < low:
            self._low = deadline
        setattr(entry, slot, token)
        heapq.heappush(self._heap, (deadline, token, entry))
        if len(self._heap) > 2 * self._live + COMPACT_SLACK:
            self._compact()

    def cancel(self, entry: T) -> None:
        """Forget the deadline of ``entry`` (no error if it has none)."""
        slot = self._slot
        if getattr(entry, slot) is not None:
            setattr(entry, slot, None)
            self._live -= 1
            if len(self._heap) > 2 * self._live + COMPACT_SLACK:
                self._compact()

    def pop_due(self, now: float, limit: int | None = None) -> list[T]:
        """Remove and return the entries whose deadline is ``<= now``,
        earliest first (at most ``limit`` of them)."""
        heap = self._heap
        slot = self._slot
        due: list[T] = []
        while heap and heap[0][0] <= now:
            if limit is not None and len(due) >= limit:
                break
            _, token, entry = heapq.heappop(heap)
            if getattr(entry, slot) == token:
                setattr(entry, slot, None)
                self._live -= 1
                due.append(entry)
        return due

    def next_deadline(self) -> float | None:
        """The earliest live deadline, or ``None``."""
        heap = self._heap
        slot = self._slot
        while heap:
            deadline, token, entry = heap[0]
            if getattr(entry, slot) == token:
                return deadline
            heapq.heappop(heap)
        return None

    def take_low(self) -> float | None:
        """The earliest deadline given to ``schedule`` since the last call
        (None if none): a timer armed at ``next_deadline()`` must move only
        if this is earlier."""
        low, self._low = self._low, None
        return low

    def heap_size(self) -> int:
        """Live plus stale items (for tests of the compaction bound)."""
        return len(self._heap)

    def _compact(self) -> None:
        slot = self._slot
        self._heap = [item for item in self._heap if getattr(item[2], slot) == item[1]]
        heapq.heapify(self._heap)
