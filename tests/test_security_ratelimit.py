import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# -- AttemptLimiter: failures only (a success gives the token back) ------------------------------


def test_attempt_limiter_bounds_memory() -> None:
    from rserpool.security.ratelimit import AttemptLimiter

    limiter = AttemptLimiter(capacity=3, refill_interval=10.0, max_keys=4)
    for i in range(10):
        assert limiter.try_acquire(f"id{i}", 0.0)
    assert len(limiter) == 4
    assert limiter.tokens("id9", 0.0) == 2.0
    assert limiter.tokens("id9", 10.0) == 3.0
    assert limiter.tokens("id9", 1000.0) == 3.0


def test_attempt_limit_is_checked() -> None:
    from rserpool.security.ratelimit import AttemptLimit, AttemptLimiter

    with pytest.raises(ValueError):
        AttemptLimit(capacity=0, refill_interval=1.0)
    with pytest.raises(ValueError):
        AttemptLimiter(capacity=1, refill_interval=0.0)
    limiter = AttemptLimiter.from_limit(AttemptLimit(2, 5.0, 7))
    assert (limiter.capacity, limiter.refill_interval, limiter.max_keys) == (2, 5.0, 7)


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(["acquire", "refund"]), st.floats(0, 30)), max_size=30))
def test_attempt_limiter_never_exceeds_budget(steps) -> None:
    from rserpool.security.ratelimit import AttemptLimiter

    limiter = AttemptLimiter(capacity=3, refill_interval=10.0)
    now = 0.0
    granted = refunded = 0
    for action, delta in steps:
        now += delta
        if action == "acquire":
            granted += limiter.try_acquire("k", now)
        else:
            limiter.refund("k", now)
            refunded += 1
        assert 0.0 <= limiter.tokens("k", now) <= 3.0
    # granted attempts never exceed the bucket plus refills plus refunds
    assert granted <= 3 + now / 10.0 + refunded


def test_a_new_limit_takes_effect_for_the_next_requests() -> None:
    limiter = RateLimiter(RateLimit(rate=1.0, burst=1.0))
    assert limiter.allow("a", 0.0) and not limiter.allow("a", 0.0)
    limiter.limit = RateLimit(rate=1.0, burst=3.0)
    assert limiter.limit == RateLimit(rate=1.0, burst=3.0)
    assert [limiter.allow("b", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("a", 2.0) and limiter.allow("a", 2.0) and not limiter.allow("a", 2.0)  # refilled to 2
