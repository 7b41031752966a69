"""The gate's refusal log: one line per refusal, rate limited.

Every refusal is logged with its cause, the peer's address and identity,
unless the peer's address or the registrar as a whole has logged too many
lately (a flood must not fill a disk); refusals left out are counted and the
count is carried by the next line that is written.
"""

from __future__ import annotations

from typing import Any, Callable

from rserpool.security.ratelimit import RateLimit, RateLimiter
# The one form of a pool handle in every log line (the PE and PU libraries use it too).
from rserpool.wire.params import pool_handle_text

__all__ = ["REFUSAL_FORMAT", "RefusalLog", "cause_text", "pool_handle_text"]

#: The format of every refusal line (Twisted logger format fields).
REFUSAL_FORMAT = "refused {what} from {address} ({who}): {reason}; {cause}{suppressed}"


def cause_text(cause: int, dropped: bool = False) -> str:
    """``cause 0xa``; ``cause 0xa, no reply`` for a request that is dropped
    (an unreachability report is never answered); ``channel closed`` when
    the channel itself is refused (a negative cause)."""
    if cause < 0:
        return "channel closed"
    return f"cause 0x{cause:x}, no reply" if dropped else f"cause 0x{cause:x}"


class RefusalLog:
    """Writes refusal lines through ``log(level, format, **fields)``, at
    most ``per_address`` per source address and ``total`` in all."""

    __slots__ = ("_log", "_per_address", "_total", "suppressed", "written")

    def __init__(self, log: Callable[..., Any], per_address: RateLimit, total: RateLimit) -> None:
        self._log = log
        self._per_address = RateLimiter(per_address, max_keys=10_000)
        self._total = RateLimiter(total, max_keys=1)
        self.suppressed = 0  # refusals not written since the last line
        self.written = 0

    def refused(self, now: float, what: str, address: str, who: str, reason: str, cause: int,
                level: str = "info", dropped: bool = False) -> None:
        if not (self._per_address.allow(address, now) and self._total.allow(None, now)):
            self.suppressed += 1
            return
        suppressed = ""
        if self.suppressed:
            suppressed = f" ({self.suppressed} more refusals not logged)"
            self.suppressed = 0
        self.written += 1
        self._log(level, REFUSAL_FORMAT, what=what, address=address, who=who, reason=reason,
                  cause=cause_text(cause, dropped), suppressed=suppressed)
