"""Rate limits keyed by identity or source address (pure, no clock).

A ``RateLimiter`` holds one token bucket per key: ``rate`` tokens per second
up to ``burst``.  ``allow(key, now)`` takes a token or says no.  The number
of keys is bounded (``max_keys``): when full, buckets that have refilled
completely (they carry no information) are dropped first, then the oldest
ones; a flood of new keys (spoofed identities cannot exist behind TLS, but
source addresses are many) therefore costs bounded memory.

An ``AttemptLimiter`` counts failures rather than requests: an attempt takes
a token and a success gives it back (authentication attempts).

The security gate (:mod:`rserpool.gate`) owns every limiter of the registrar.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable

__all__ = ["AttemptLimit", "AttemptLimiter", "RateLimit", "RateLimiter"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    rate: float  # tokens per second
    burst: float  # bucket size

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")


class RateLimiter:
    """Token buckets per key, bounded in the number of keys."""

    __slots__ = ("_limit", "_rate", "_burst", "max_keys", "_buckets", "refused")

    def __init__(self, limit: RateLimit, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.limit = limit
        self.max_keys = max_keys
        # key -> [tokens, last refill time]; most recently used last.
        self._buckets: OrderedDict[Hashable, list[float]] = OrderedDict()
        self.refused = 0

    @property
    def limit(self) -> RateLimit:
        return self._limit

    @limit.setter
    def limit(self, limit: RateLimit) -> None:
        self._limit = limit
        self._rate, self._burst = limit.rate, limit.burst  # read by every allow()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self.max_keys:
                self._evict(now)
            bucket = buckets[key] = [self._burst, now]
        else:
            buckets.move_to_end(key)
            elapsed = now - bucket[1]
            if elapsed > 0:
                bucket[0] = min(self._burst, bucket[0] + elapsed * self._rate)
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


@dataclass(frozen=True, slots=True)
class AttemptLimit:
    capacity: int  # failed attempts a key may make at once
    refill_interval: float  # seconds per regained attempt
    max_keys: int = 100_000

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.refill_interval <= 0 or self.max_keys < 1:
            raise ValueError("capacity, refill_interval and max_keys must be positive")


class AttemptLimiter:
    """Token bucket per key (identity, or source address), ``now`` passed in.

    Each key holds up to ``capacity`` tokens and regains one every
    ``refill_interval`` seconds.  An attempt takes a token
    (:meth:`try_acquire`); a success gives it back (:meth:`refund`), so only
    failures use up the budget.  At most ``max_keys`` keys are kept; the
    least recently used (hence most refilled) bucket is dropped first.
    """

    __slots__ = ("capacity", "refill_interval", "max_keys", "_buckets")

    def __init__(
        self, capacity: int = 5, refill_interval: float = 60.0, max_keys: int = 100_000
    ) -> None:
        if capacity < 1 or refill_interval <= 0 or max_keys < 1:
            raise ValueError("capacity, refill_interval and max_keys must be positive")
        self.capacity = capacity
        self.refill_interval = refill_interval
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @classmethod
    def from_limit(cls, limit: AttemptLimit) -> "AttemptLimiter":
        return cls(limit.capacity, limit.refill_interval, limit.max_keys)

    def __len__(self) -> int:
        return len(self._buckets)

    def tokens(self, key: str, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return float(self.capacity)
        tokens, updated = entry
        elapsed = max(0.0, now - updated)
        return min(float(self.capacity), tokens + elapsed / self.refill_interval)

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def try_acquire(self, key: str, now: float) -> bool:
        tokens = self.tokens(key, now)
        if tokens < 1.0:
            self._store(key, tokens, now)
            return False
        self._store(key, tokens - 1.0, now)
        return True

    def refund(self, key: str, now: float) -> None:
        tokens = min(float(self.capacity), self.tokens(key, now) + 1.0)
        self._store(key, tokens, now)
