import pytest

from rserpool.security.ratelimit import RateLimit, RateLimiter


def test_burst_then_rate():
    limiter = RateLimiter(RateLimit(rate=2.0, burst=4.0))
    assert [limiter.allow("a", 0.0) for _ in range(5)] == [True] * 4 + [False]
    assert limiter.allow("a", 0.5)  # one token back after 0.5 s
    assert not limiter.allow("a", 0.5)
    assert limiter.allow("b", 0.5)  # keys are independent
    assert limiter.refused == 2


def test_bounded_keys():
    limiter = RateLimiter(RateLimit(rate=1.0, burst=1.0), max_keys=100)
    for i in range(10_000):
        limiter.allow(i, float(i) / 1000)
    assert len(limiter) <= 100


def test_invalid():
    with pytest.raises(ValueError):
        RateLimit(rate=0, burst=1)
