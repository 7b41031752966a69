"""The pool user's sans-IO core: cache (C1-C4), T1, shared requests,
unreachability reports, limits and local selection per policy."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from rserpool.asap.pu import (
    ResolutionFailed, NoUsablePoolElement, PuBusy, PuCore, PuSettings, Resolved, ResolutionRefused,
    ResolutionTimeout, Send, StartHunt, UnknownPool,
)
from rserpool.wire import (
    AsapEndpointUnreachable, AsapError, AsapHandleResolution, AsapHandleResolutionResponse,
    ErrorCause, LeastUsedPolicy, OperationError, PriorityPolicy, RandomizedLeastUsedPolicy,
    RandomPolicy, RoundRobinPolicy, WeightedRandomPolicy, WeightedRoundRobinPolicy,
    decode_message,
)
from rserpool.wire.codes import (
    CAUSE_LACK_OF_RESOURCES, CAUSE_SECURITY, CAUSE_UNKNOWN_POOL_HANDLE, PPID_ASAP,
)
from tests.asaphelpers import make_pe

H = b"echo"


def core(**kw) -> PuCore:
    c = PuCore(PuSettings(**kw), rng=random.Random(7))
    assert c.home_up(0.0) == []
    return c


def response(handle=H, pes=(), policy=None, cause=None) -> AsapHandleResolutionResponse:
    error = OperationError((ErrorCause(cause),)) if cause is not None else None
    return AsapHandleResolutionResponse(handle, tuple(pes), policy, error)


def rr_pes(n: int, policy_of=lambda i: RoundRobinPolicy()):
    return [make_pe(i, port=1000 + i, policy=policy_of(i)) for i in range(1, n + 1)]


def sends(outputs):
    return [o.message for o in outputs if type(o) is Send]


def fill(c: PuCore, pes, policy=None, now=0.0, handle=H, token=1):
    out = c.resolve(handle, token, now)
    assert sends(out) == [AsapHandleResolution(handle)]
    out = c.message_received(response(handle, pes, policy), now)
    assert [type(o) for o in out] == [Resolved]
    return out[0]


# --- cache ----------------------------------------------------------------------------


def test_miss_sends_one_request_and_response_fills_the_cache():
    c = core()
    result = fill(c, rr_pes(3))
    assert result.tokens == (1,)
    assert [pe.pe_id for pe in result.pool_elements] == [1, 2, 3]
    assert c.cached(H) is not None and c.is_fresh(H, 1.0)


def test_fresh_hit_answers_without_a_request():
    c = core(stale_cache_value=10.0)
    fill(c, rr_pes(2))
    out = c.resolve(H, 2, 9.9)
    assert out == [Resolved((2,), H, c.cached(H).pool_elements)]
    assert c.stats["requests"] == 1 and c.stats["cache_hits"] == 1


def test_stale_entry_is_refreshed_and_caller_waits():
    c = core(stale_cache_value=10.0)
    fill(c, rr_pes(2))
    out = c.resolve(H, 2, 10.0)
    assert sends(out) == [AsapHandleResolution(H)]
    assert not [o for o in out if type(o) is Resolved]
    out = c.message_received(response(pes=rr_pes(1)), 10.5)
    assert [pe.pe_id for pe in out[0].pool_elements] == [1]
    assert c.is_fresh(H, 20.0) and not c.is_fresh(H, 20.5)


def test_serve_stale_answers_and_refreshes_in_parallel():
    c = core(stale_cache_value=1.0, serve_stale=True)
    fill(c, rr_pes(2))
    out = c.resolve(H, 2, 5.0)
    assert [type(o) for o in out] == [Resolved, Send]
    assert c.message_received(response(pes=rr_pes(3)), 5.1) == []  # nobody waits
    assert len(c.cached(H)) == 3


def test_clock_going_backwards_counts_as_stale():
    c = core()
    fill(c, rr_pes(1), now=100.0)
    assert not c.is_fresh(H, 50.0)


def test_force_resolves_despite_fresh_entry():
    c = core()
    fill(c, rr_pes(1))
    assert sends(c.resolve(H, 2, 0.1, force=True)) == [AsapHandleResolution(H)]


def test_invalidate_one_pe_and_whole_pool():
    c = core()
    fill(c, rr_pes(3))
    assert c.invalidate(H, 2)
    assert [pe.pe_id for pe in c.cached(H).pool_elements] == [1, 3]
    assert not c.invalidate(H, 2)
    assert c.invalidate(H)
    assert c.cached(H) is None
    assert not c.invalidate(H)


# --- pending requests, T1 -------------------------------------------------------------------


def test_concurrent_callers_share_one_request():
    c = core()
    out = [c.resolve(H, token, 0.0) for token in range(1, 6)]
    assert sum(len(sends(o)) for o in out) == 1
    done = c.message_received(response(pes=rr_pes(2)), 1.0)
    assert done[0].tokens == (1, 2, 3, 4, 5)


def test_cancelled_caller_is_not_answered():
    c = core()
    c.resolve(H, 1, 0.0)
    c.resolve(H, 2, 0.0)
    c.cancel(1)
    c.cancel(99)  # unknown: ignored
    assert c.message_received(response(pes=rr_pes(1)), 1.0)[0].tokens == (2,)


def test_same_token_twice_is_a_programming_error():
    c = core()
    c.resolve(H, 1, 0.0)
    with pytest.raises(ValueError):
        c.resolve(b"other", 1, 0.0)


def test_t1_retransmits_then_gives_up():
    c = core(t1=15.0, max_request_retransmit=2)
    assert sends(c.resolve(H, 1, 0.0)) == [AsapHandleResolution(H)]
    assert c.next_deadline() == 15.0
    assert c.on_timer(14.9) == []
    out = c.on_timer(15.0)
    assert sends(out) == [AsapHandleResolution(H)]
    assert [o for o in out if type(o) is StartHunt]  # 3.7.2: hunt in parallel
    assert c.next_deadline() == 30.0
    out = c.on_timer(30.0)
    assert sends(out) == [AsapHandleResolution(H)]
    assert not [o for o in out if type(o) is StartHunt]  # the hunt is already asked for
    out = c.on_timer(45.0)
    assert len(out) == 1 and type(out[0]) is ResolutionFailed
    assert isinstance(out[0].error, ResolutionTimeout)
    assert out[0].error.attempts == 3
    assert c.next_deadline() is None
    # A late answer is ignored and not cached.
    assert c.message_received(response(pes=rr_pes(1)), 46.0) == []
    assert c.cached(H) is None
    assert c.stats["retransmissions"] == 2


def test_new_home_gets_the_pending_requests_and_t1_restarts():
    c = core(t1=15.0)
    c.resolve(H, 1, 0.0)
    c.on_timer(15.0)
    out = c.home_up(20.0)
    assert sends(out) == [AsapHandleResolution(H)]
    assert c.next_deadline() == 35.0


def test_without_home_a_hunt_is_requested_and_the_request_sent_later():
    c = PuCore(PuSettings(t1=15.0), rng=random.Random(1))
    out = c.resolve(H, 1, 0.0)
    assert out == [StartHunt("no home registrar")]
    assert c.resolve(b"other", 2, 0.0) == []  # one hunt at a time
    out = c.home_up(3.0)
    assert sorted(m.pool_handle for m in sends(out)) == [H, b"other"]
    assert c.next_deadline() == 18.0


def test_no_home_ever_times_out():
    c = PuCore(PuSettings(t1=1.0, max_request_retransmit=1), rng=random.Random(1))
    c.resolve(H, 1, 0.0)
    assert sends(c.on_timer(1.0)) == []
    out = c.on_timer(2.0)
    assert isinstance(out[0].error, ResolutionTimeout) and out[0].error.attempts == 0


def test_home_lost_with_pending_requests_asks_for_a_hunt():
    c = core()
    assert c.home_lost(1.0) == []  # nothing waiting: hunt lazily
    c.resolve(H, 1, 1.0)
    c.home_up(1.0)
    assert c.home_lost(2.0) == [StartHunt("home registrar lost")]


# --- negative responses ---------------------------------------------------------------------


def test_unknown_pool_fails_the_callers_and_drops_the_entry():
    c = core(stale_cache_value=1.0)
    fill(c, rr_pes(1))
    c.resolve(H, 2, 5.0)
    c.resolve(H, 3, 5.0)
    out = c.message_received(response(cause=CAUSE_UNKNOWN_POOL_HANDLE), 5.1)
    assert out[0].tokens == (2, 3)
    assert isinstance(out[0].error, UnknownPool)
    assert c.cached(H) is None


@pytest.mark.parametrize("cause", [CAUSE_SECURITY, CAUSE_LACK_OF_RESOURCES, 0x1234])
def test_other_causes_are_refusals(cause):
    c = core()
    c.resolve(H, 1, 0.0)
    out = c.message_received(response(cause=cause), 0.1)
    assert isinstance(out[0].error, ResolutionRefused)
    assert out[0].error.cause == cause


def test_unsolicited_responses_and_errors_are_ignored():
    c = core()
    assert c.message_received(response(pes=rr_pes(2)), 0.0) == []
    assert c.message_received(AsapError(OperationError((ErrorCause(2),))), 0.0) == []
    assert c.cached(H) is None
    assert c.stats["ignored"] == 2


# --- limits ------------------------------------------------------------------------------------


def test_thousands_of_pes_are_truncated():
    c = core(max_pes_per_pool=50)
    pes = [make_pe(i) for i in range(1, 1501)]
    # As a registrar would send them: one decoded message of ~50 KB.
    wire = decode_message(response(pes=pes).encode(), PPID_ASAP)
    c.resolve(H, 1, 0.0)
    out = c.message_received(wire, 0.1)
    assert [pe.pe_id for pe in out[0].pool_elements] == list(range(1, 51))
    assert c.cached(H).truncated and c.stats["truncated"] == 1


def test_duplicate_pe_ids_are_kept_once():
    c = core()
    r = fill(c, [make_pe(1), make_pe(2), make_pe(1, port=99)])
    assert [(pe.pe_id, pe.user_transport.port) for pe in r.pool_elements] == [(1, 7), (2, 7)]


def test_pool_count_is_bounded_lru():
    c = core(max_pools=3)
    for i in range(5):
        fill(c, rr_pes(1), handle=b"p%d" % i, token=i)
    assert c.pool_count() == 3
    assert c.cached(b"p0") is None and c.cached(b"p4") is not None
    c.resolve(b"p2", 100, 0.1)  # a hit refreshes its LRU position
    fill(c, rr_pes(1), handle=b"p5", token=101)
    assert c.cached(b"p2") is not None and c.cached(b"p3") is None


def test_pending_and_waiters_are_bounded():
    c = core(max_pending=2, max_waiters=2)
    c.resolve(b"a", 1, 0.0)
    c.resolve(b"b", 2, 0.0)
    out = c.resolve(b"c", 3, 0.0)
    assert isinstance(out[0].error, PuBusy)
    c.resolve(b"a", 4, 0.0)
    out = c.resolve(b"a", 5, 0.0)
    assert isinstance(out[0].error, PuBusy)


def test_settings_are_checked():
    for bad in ({"t1": 0}, {"stale_cache_value": -1}, {"max_pools": 0},
                {"max_request_retransmit": -1}):
        with pytest.raises(ValueError):
            PuSettings(**bad)


# --- unreachability reports ------------------------------------------------------------------


def test_report_once_removes_from_cache_until_resolved_again():
    c = core()
    fill(c, rr_pes(3))
    sent, out = c.report_unreachable(H, 2, 1.0)
    assert sent and sends(out) == [AsapEndpointUnreachable(H, 2)]
    assert [pe.pe_id for pe in c.cached(H).pool_elements] == [1, 3]
    for _ in range(5):
        assert c.report_unreachable(H, 2, 1.5) == (False, [])
    assert c.stats["reports"] == 1 and c.stats["reports_suppressed"] == 5
    # Resolved again (the registrar still lists it): a new failure is a new event.
    c.resolve(H, 9, 2.0, force=True)
    c.message_received(response(pes=rr_pes(3)), 2.1)
    assert not c.was_reported(H, 2)
    assert c.report_unreachable(H, 2, 3.0)[0]


def test_report_of_a_pe_absent_from_a_new_response_stays_deduplicated():
    c = core()
    fill(c, rr_pes(3))
    c.report_unreachable(H, 3, 1.0)
    c.resolve(H, 9, 2.0, force=True)
    c.message_received(response(pes=rr_pes(2)), 2.1)
    assert c.report_unreachable(H, 3, 3.0) == (False, [])


def test_reports_without_home_are_queued_and_bounded():
    c = PuCore(PuSettings(max_queued_reports=2), rng=random.Random(1))
    sent, out = c.report_unreachable(H, 1, 0.0)
    assert sent and out == [StartHunt("unreachability report to send")]
    c.report_unreachable(H, 2, 0.0)
    c.report_unreachable(H, 3, 0.0)
    assert sends(c.home_up(1.0)) == [AsapEndpointUnreachable(H, 2), AsapEndpointUnreachable(H, 3)]


def test_reported_set_is_bounded():
    c = core(max_reported=10)
    for pe_id in range(1, 101):
        c.report_unreachable(H, pe_id, 0.0)
    assert not c.was_reported(H, 1) and c.was_reported(H, 100)
    assert len(c._reported) == 10


# --- selection per policy ----------------------------------------------------------------------


def test_select_needs_a_cached_pool():
    with pytest.raises(KeyError):
        core().select(H)


def test_round_robin_from_the_first_entry_and_skips_removed():
    c = core()
    fill(c, rr_pes(3))  # no policy parameter: round robin
    assert [c.select(H).pe_id for _ in range(4)] == [1, 2, 3, 1]
    c.report_unreachable(H, 3, 0.0)
    assert [c.select(H).pe_id for _ in range(4)] == [2, 1, 2, 1]
    c.invalidate(H, 1)
    c.invalidate(H, 2)
    with pytest.raises(NoUsablePoolElement):
        c.select(H)


def test_weighted_round_robin_never_picks_weight_zero():
    c = core()
    fill(c, rr_pes(3, lambda i: WeightedRoundRobinPolicy([5, 0, 1][i - 1])),
         policy=WeightedRoundRobinPolicy(5))
    assert [c.select(H).pe_id for _ in range(4)] == [1, 3, 1, 3]


def test_weighted_random_follows_the_weights_and_skips_weight_zero():
    c = core()
    fill(c, rr_pes(3, lambda i: WeightedRandomPolicy([1, 3, 0][i - 1])),
         policy=WeightedRandomPolicy(1))
    counts = Counter(c.select(H).pe_id for _ in range(4000))
    assert counts[3] == 0
    assert 0.70 < counts[2] / 4000 < 0.80


def test_randomized_least_used_prefers_low_loads():
    full = 0xFFFFFFFF
    c = core()
    fill(c, rr_pes(3, lambda i: RandomizedLeastUsedPolicy([full // 4, (3 * full) // 4, full][i - 1])),
         policy=RandomizedLeastUsedPolicy(0))
    counts = Counter(c.select(H).pe_id for _ in range(4000))
    assert counts[3] == 0  # 100 % load: weight 0
    assert 0.70 < counts[1] / 4000 < 0.80


def test_random_is_roughly_uniform():
    c = core()
    fill(c, rr_pes(4, lambda i: RandomPolicy()), policy=RandomPolicy())
    counts = Counter(c.select(H).pe_id for _ in range(4000))
    assert set(counts) == {1, 2, 3, 4}
    assert all(800 < n < 1200 for n in counts.values())


def test_priority_takes_the_highest_active():
    c = core()
    fill(c, rr_pes(3, lambda i: PriorityPolicy([2, 9, 5][i - 1])), policy=PriorityPolicy(2))
    assert {c.select(H).pe_id for _ in range(5)} == {2}
    c.report_unreachable(H, 2, 0.0)
    assert c.select(H).pe_id == 3


def test_least_used_keeps_the_registrars_order():
    c = core()
    fill(c, rr_pes(3, lambda i: LeastUsedPolicy([9, 1, 5][i - 1])), policy=LeastUsedPolicy(9))
    assert [c.select(H).pe_id for _ in range(3)] == [1, 1, 1]
    c.report_unreachable(H, 1, 0.0)
    assert c.select(H).pe_id == 2


def test_round_robin_state_survives_cache_hits():
    c = core()
    fill(c, rr_pes(3))
    assert c.select(H).pe_id == 1
    c.resolve(H, 2, 0.5)
    assert c.select(H).pe_id == 2


# --- a model check -----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["resolve", "answer", "tick", "report"]),
                          st.integers(0, 3), st.floats(0, 5)), max_size=40))
def test_every_caller_gets_exactly_one_answer(ops):
    c = core(t1=2.0, max_request_retransmit=1, stale_cache_value=3.0)
    now = 0.0
    token = 0
    open_tokens: set[int] = set()
    answered: Counter = Counter()
    handles = [b"a", b"b", b"c", b"d"]

    def take(out):
        for o in out:
            if type(o) in (Resolved, ResolutionFailed):
                for t in o.tokens:
                    answered[t] += 1
                    open_tokens.discard(t)

    for op, index, dt in ops:
        now += dt
        handle = handles[index]
        if op == "resolve":
            token += 1
            open_tokens.add(token)
            take(c.resolve(handle, token, now))
        elif op == "answer":
            take(c.message_received(response(handle, rr_pes(index + 1)), now))
        elif op == "tick":
            take(c.on_timer(now))
        else:
            c.report_unreachable(handle, 1, now)
        assert set(c._token_handle) == open_tokens
    for _ in range(4):
        now += 2.0
        take(c.on_timer(now))
    assert not open_tokens
    assert all(n == 1 for n in answered.values())
    assert len(answered) == token
