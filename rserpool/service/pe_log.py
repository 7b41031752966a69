"""The registrar's log of PE changes: routine ones counted, a summary line
a minute (issue 12: a written log line costs about 100 us, and a new
session made two).

``added`` and ``removed`` are told of every PE registered and removed.  With
``every_change`` off (the default) registrations and the removals that
happen in every PE's life (deregistered, channel lost, registration
expired) are only counted, and :meth:`summary` (every ``interval`` seconds
once started) writes one info line when there was any; with it on
(``twistd ... --log-level debug``) each is a debug line.  A PE removed for
any other reason (a missed keep-alive, unreachability, revocation) is
always an info line of its own.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from rserpool.wire.params import pool_handle_text

__all__ = ["PeChangeLog", "ROUTINE_REMOVALS"]

#: Removals that happen in every PE's life: counted, not logged one by one.
ROUTINE_REMOVALS = ("deregistered", "ASAP channel lost", "registration life expired")


class PeChangeLog:
    """See the module docstring; ``size()`` is the handlespace's PE count."""

    def __init__(self, clock: IReactorTime, size: Callable[[], int], log: Logger, *,
                 interval: float = 60.0) -> None:
        self.clock = clock
        self.size = size
        self.log = log
        self.interval = interval
        self.every_change = False
        self.counts = dict.fromkeys(("registered", *ROUTINE_REMOVALS), 0)
        self._call: IDelayedCall | None = None

    def start(self) -> None:
        self._call = self.clock.callLater(self.interval, self._tick)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _tick(self) -> None:
        self._call = self.clock.callLater(self.interval, self._tick)
        self.summary()

    def added(self, entry: Any) -> None:
        if self.every_change:
            self.log.debug("PE {pe_id:08x} registered in pool {handle} by {identity}", pe_id=entry.pe_id,
                           handle=pool_handle_text(entry.pool_handle), identity=entry.identity)
        else:
            self.counts["registered"] += 1

    def removed(self, entry: Any, reason: str) -> None:
        routine = reason in ROUTINE_REMOVALS
        if routine and not self.every_change:
            self.counts[reason] += 1
            return
        (self.log.debug if routine else self.log.info)(
            "PE {pe_id:08x} left pool {handle}: {reason}", pe_id=entry.pe_id,
            handle=pool_handle_text(entry.pool_handle), reason=reason)

    def summary(self) -> None:
        """One line for the routine changes counted since the last one (none: no line)."""
        counts = self.counts
        if not any(counts.values()):
            return
        self.log.info("PEs in the last {interval:g} s: {registered} registered, {left} left ({details}); "
                      "{now} in the handlespace", interval=self.interval, registered=counts["registered"],
                      left=sum(counts[r] for r in ROUTINE_REMOVALS),
                      details=", ".join(f"{counts[r]} {r}" for r in ROUTINE_REMOVALS if counts[r]) or "none",
                      now=self.size())
        self.counts = dict.fromkeys(counts, 0)
