"""Deadline queues for the handlespace: registration expiry and keep-alives.

A ``DeadlineQueue`` is a binary heap of ``(deadline, token, entry)`` items
with lazy cancellation: the entry keeps the token of its one live item in a
slot of its own (``slot``), so rescheduling or cancelling is O(1) plus one
O(log n) push, and a stale item is dropped when it reaches the top.  When
stale items outnumber live ones the heap is rebuilt, which keeps its size
below ``2 * live + COMPACT_SLACK`` and the cost amortised O(log n).

Lazy postponement (optional, ``queued_slot`` and ``wanted_slot``): moving a
deadline to one at or after the deadline of the entry's item in the heap,
the common case of a re-registration or of the keep-alive that follows it,
then pushes nothing.  The entry records the deadline it wants
(``wanted_slot``) and the token of that deadline (``slot``), while its item
(kept in ``queued_slot``) stays where it is, at an earlier deadline.  When
that item reaches the top it is moved to the wanted deadline in one
``heapreplace`` instead of being reported; an earlier deadline is pushed.
Every schedule draws one token in both modes, and a moved item takes the
token of the wanted deadline, so a lazy queue orders entries exactly as a
plain one does (ties by the order of the ``schedule`` calls): ``pop_due``
and ``next_deadline`` answer the same.  Only ``take_low`` differs: it
leaves out the deadlines it did not push, which no timer armed at
``next_deadline()`` needs to follow (see its docstring).

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

    With ``queued_slot`` and ``wanted_slot`` (both or neither) the queue
    postpones lazily: ``wanted_slot`` holds the entry's deadline (written
    by ``schedule``; valid while ``slot`` is not None) and ``queued_slot``
    the entry's live item of the heap itself, whose deadline is at or
    before the wanted one (``None`` when there is none: no reference
    cycle outlives the entry's deadline).  Whoever owns the entries sets
    all three slots to ``None`` at first and leaves them to the queue
    afterwards.
    """

    __slots__ = ("_heap", "_slot", "_queued", "_wanted", "_next_token", "_live", "_low")

    def __init__(self, slot: str, queued_slot: str | None = None, wanted_slot: str | None = None) -> None:
        if (queued_slot is None) != (wanted_slot is None):
            raise ValueError("queued_slot and wanted_slot go together")
        self._heap: list[tuple[float, int, Any]] = []
        self._slot = slot
        self._queued = queued_slot
        self._wanted = wanted_slot
        self._next_token = 0
        self._live = 0
        self._low: float | None = None

    def __len__(self) -> int:
        """The number of live deadlines."""
        return self._live

    def schedule(self, entry: T, deadline: float) -> None:
        """Set (or move) the deadline of ``entry``."""
        slot = self._slot
        queued = self._queued
        token = self._next_token
        self._next_token = token + 1
        if getattr(entry, slot) is None:
            self._live += 1
        elif queued is not None and getattr(entry, queued)[0] <= deadline:
            # Not before the queued item: it is moved when it reaches the top.
            setattr(entry, slot, token)
            setattr(entry, self._wanted, deadline)
            return
        low = self._low
        if low is None or deadline < low:
            self._low = deadline
        setattr(entry, slot, token)
        item = (deadline, token, entry)
        if queued is not None:
            setattr(entry, queued, item)
            setattr(entry, self._wanted, deadline)
        heapq.heappush(self._heap, item)
        if len(self._heap) > 2 * self._live + COMPACT_SLACK:
            self._compact()

    def cancel(self, entry: T) -> None:
        """Forget the deadline of ``entry`` (no error if it has none)."""
        slot = self._slot
        if getattr(entry, slot) is not None:
            setattr(entry, slot, None)
            if self._queued is not None:
                setattr(entry, self._queued, None)
            self._live -= 1
            if len(self._heap) > 2 * self._live + COMPACT_SLACK:
                self._compact()

    def pop_due(self, now: float, limit: int | None = None) -> list[T]:
        """Remove and return the entries whose deadline is ``<= now``,
        earliest first (at most ``limit`` of them)."""
        heap = self._heap
        slot = self._slot
        due: list[T] = []
        queued = self._queued
        if queued is None:
            while heap and heap[0][0] <= now:
                if limit is not None and len(due) >= limit:
                    break
                _, token, entry = heapq.heappop(heap)
                if getattr(entry, slot) == token:
                    setattr(entry, slot, None)
                    self._live -= 1
                    due.append(entry)
            return due
        wanted = self._wanted
        while heap and heap[0][0] <= now:
            if limit is not None and len(due) >= limit:
                break
            item = heap[0]
            _, token, entry = item
            if getattr(entry, queued) is not item:
                heapq.heappop(heap)  # stale
                continue
            live = getattr(entry, slot)
            if live != token:  # postponed: move it, it may still be due
                item = (getattr(entry, wanted), live, entry)
                heapq.heapreplace(heap, item)
                setattr(entry, queued, item)
                continue
            heapq.heappop(heap)
            setattr(entry, slot, None)
            setattr(entry, queued, None)
            self._live -= 1
            due.append(entry)
        return due

    def next_deadline(self) -> float | None:
        """The earliest live deadline, or ``None``."""
        heap = self._heap
        slot = self._slot
        queued = self._queued
        if queued is None:
            while heap:
                deadline, token, entry = heap[0]
                if getattr(entry, slot) == token:
                    return deadline
                heapq.heappop(heap)
            return None
        while heap:
            item = heap[0]
            deadline, token, entry = item
            if getattr(entry, queued) is not item:
                heapq.heappop(heap)
                continue
            live = getattr(entry, slot)
            if live == token:
                return deadline
            item = (getattr(entry, self._wanted), live, entry)
            heapq.heapreplace(heap, item)
            setattr(entry, queued, item)
        return None

    def take_low(self) -> float | None:
        """The earliest deadline given to ``schedule`` since the last call
        (None if none): a timer armed at ``next_deadline()`` must move only
        if this is earlier.

        A lazy queue leaves out the deadlines it did not push: each is at
        or after the deadline of the entry's item in the heap, and that is
        at or after what such a timer covers (the item was in the heap at
        or after ``next_deadline()`` when the timer was armed, or it was
        pushed since and counted here; items only ever move later)."""
        low, self._low = self._low, None
        return low

    def heap_size(self) -> int:
        """Live plus stale items (for tests of the compaction bound)."""
        return len(self._heap)

    def _compact(self) -> None:
        slot = self._slot
        queued = self._queued
        if queued is None:
            self._heap = [item for item in self._heap if getattr(item[2], slot) == item[1]]
        else:
            # Keep the live items, each moved to its wanted deadline.
            wanted = self._wanted
            heap = []
            for item in self._heap:
                entry = item[2]
                if getattr(entry, queued) is item:
                    item = (getattr(entry, wanted), getattr(entry, slot), entry)
                    setattr(entry, queued, item)
                    heap.append(item)
            self._heap = heap
        heapq.heapify(self._heap)
