"""Rate limits and quotas keyed by identity or source address (pure, no clock).

A ``RateLimiter`` holds one token bucket per key: ``rate`` tokens per second
up to ``burst``.  ``allow(key, now)`` takes a token or says no.  The number
of keys is bounded (``max_keys``): when full, buckets that have refilled
completely (they carry no information) are dropped first, then the oldest
ones; a flood of new keys (spoofed identities cannot exist behind TLS, but
source addresses are many) therefore costs bounded memory.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable

__all__ = ["RateLimit", "RateLimiter"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    rate: float  # tokens per second
    burst: float  # bucket size

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")


class RateLimiter:
    """Token buckets per key, bounded in the number of keys."""

    __slots__ = ("limit", "max_keys", "_buckets", "refused")

    def __init__(self, limit: RateLimit, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.limit = limit
        self.max_keys = max_keys
        # key -> [tokens, last refill time]; most recently used last.
        self._buckets: OrderedDict[Hashable, list[float]] = OrderedDict()
        self.refused = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        buckets = self._buckets
        bucket = buckets.get(key)
        limit = self.limit
        if bucket is None:
            if len(buckets) >= self.max_keys:
                self._evict(now)
            bucket = buckets[key] = [limit.burst, now]
        else:
            buckets.move_to_end(key)
            elapsed = now - bucket[1]
            if elapsed > 0:
                bucket[0] = min(limit.burst, bucket[0] + elapsed * limit.rate)
                bucket[1] = now
        if bucket[0] >= cost:
            bucket[0] -= cost
            return True
        self.refused += 1
        return False

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        limit = self.limit
        # Oldest first; drop at most a few full buckets, else the oldest one.
        for key in list(buckets)[:8]:
            tokens, last = buckets[key]
            if tokens + (now - last) * limit.rate >= limit.burst:
                del buckets[key]
                return
        buckets.popitem(last=False)
