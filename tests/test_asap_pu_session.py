"""The sans-IO PU side of the PU-PE session layer: cookies, business cards, failover."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from rserpool.asap.pu_session import (
    Connect, Established, GiveUp, PuSession, PuSessionSettings, PuState, ReportUnreachable,
    RunFailoverCallback, Select, SendControl, SendData,
)
from rserpool.asap.session import Ignored, SessionBusyError, SessionClosedError
from rserpool.wire import AsapBusinessCard, AsapCookie, AsapCookieEcho, AsapHandleResolution
from tests.asaphelpers import make_pe

POOL = b"echo"
A, B, C, D = (make_pe(i, 7000 + i) for i in (0xA, 0xB, 0xC, 0xD))


def kinds(actions):
    return [type(a) for a in actions]


def established(pe=A, **kw) -> PuSession:
    """A session established with ``pe``."""
    s = PuSession(POOL, PuSessionSettings(**kw))
    assert s.start(0.0) == [Select(0.0)]
    assert s.pe_selected(pe, 0.0) == [Connect(pe, 0.0)]
    assert s.connected(0.0) == [Established(pe, False)]
    assert s.state is PuState.ESTABLISHED
    return s


# -- cookies --------------------------------------------------------------------


def test_pu_keeps_only_the_latest_cookie():
    s = established()
    assert s.cookie is None
    s.control_received(AsapCookie(b"one"), 1.0)
    s.control_received(AsapCookie(b"two"), 2.0)
    assert s.cookie == b"two"


def test_oversized_cookie_is_ignored_and_the_old_one_kept():
    s = established(max_cookie_size=8)
    s.control_received(AsapCookie(b"ok"), 1.0)
    out = s.control_received(AsapCookie(b"x" * 9), 2.0)
    assert kinds(out) == [Ignored]
    assert s.cookie == b"ok"


def test_cookie_echo_is_the_first_thing_sent_after_failover():
    s = established()
    s.control_received(AsapCookie(b"state-1"), 1.0)
    assert s.send(b"before", during_failover=False) == [SendData(b"before")]
    out = s.connection_lost(2.0)
    assert out == [ReportUnreachable(POOL, A.pe_id), Select(0.0)]
    # data sent while failing over is queued, not sent
    assert s.send(b"queued-1") == []
    assert s.send(b"queued-2") == []
    assert s.pe_selected(B, 2.1) == [Connect(B, 0.0)]
    out = s.connected(2.2)
    assert out == [SendControl(AsapCookieEcho(b"state-1")), RunFailoverCallback(A, B, True)]
    assert s.state is PuState.RESUMING
    # the callback may talk to B, ordinary data is still held back
    assert s.send(b"rekey", during_failover=True) == [SendData(b"rekey")]
    assert s.send(b"queued-3") == []
    out = s.failover_complete(2.3)
    assert out == [Established(B, True), SendData(b"queued-1"), SendData(b"queued-2"),
                   SendData(b"queued-3")]
    assert s.send(b"after") == [SendData(b"after")]
    assert s.failovers == 1


def test_no_echo_without_a_cookie_and_none_on_the_first_connection():
    s = established()
    s.connection_lost(1.0)
    s.pe_selected(B, 1.0)
    assert s.connected(1.0) == [RunFailoverCallback(A, B, False)]


def test_cookie_from_the_new_pe_replaces_the_old_one():
    s = established()
    s.control_received(AsapCookie(b"from-a"), 0.0)
    s.connection_lost(1.0)
    s.pe_selected(B, 1.0)
    s.connected(1.0)
    s.failover_complete(1.0)
    s.control_received(AsapCookie(b"from-b"), 2.0)
    s.connection_lost(3.0)
    s.pe_selected(C, 3.0)
    assert s.connected(3.0)[0] == SendControl(AsapCookieEcho(b"from-b"))


def test_latest_cookie_is_echoed_again_if_the_new_pe_sent_none():
    s = established()
    s.control_received(AsapCookie(b"from-a"), 0.0)
    s.connection_lost(1.0)
    s.pe_selected(B, 1.0)
    s.connected(1.0)
    s.failover_complete(1.0)
    s.connection_lost(2.0)
    s.pe_selected(C, 2.0)
    assert s.connected(2.0)[0] == SendControl(AsapCookieEcho(b"from-a"))


# -- business cards ----------------------------------------------------------------


def test_business_card_order_is_used_on_failover():
    s = established()
    s.control_received(AsapBusinessCard(POOL, (A, C, B)), 0.5)
    out = s.connection_lost(1.0)
    # A itself (the lost PE) is skipped; C before B as the card says
    assert out == [ReportUnreachable(POOL, A.pe_id), Connect(C, 0.0)]
    out = s.connection_lost(1.1)  # C refuses too
    assert out == [ReportUnreachable(POOL, C.pe_id), Connect(B, 0.5)]
    out = s.connection_lost(1.7)  # and B: the card is used up, ask the selector
    assert out == [ReportUnreachable(POOL, B.pe_id), Select(1.0)]
    assert s.pe_selected(D, 2.7) == [Connect(D, 0.0)]
    assert s.connected(2.8) == [RunFailoverCallback(A, D, False)]


def test_business_card_of_another_pool_or_too_long_is_ignored():
    s = established(max_card_entries=2)
    assert kinds(s.control_received(AsapBusinessCard(b"other", (B,)), 0.0)) == [Ignored]
    assert kinds(s.control_received(AsapBusinessCard(POOL, (B, C, D)), 0.0)) == [Ignored]
    assert s.business_card == ()
    assert s.control_received(AsapBusinessCard(POOL, (B, C)), 0.0) == []
    assert s.business_card == (B, C)


def test_pu_sends_its_business_card_as_a_pu_pe_combination():
    s = established()
    out = s.send_business_card(b"mypool", (D,))
    assert out == [SendControl(AsapBusinessCard(b"mypool", (D,)))]
    s.close()
    with pytest.raises(SessionClosedError):
        s.send_business_card(b"mypool", (D,))


# -- failover bounds ---------------------------------------------------------------


def test_each_failed_pe_is_reported_once_and_attempts_are_bounded_with_backoff():
    s = established(max_attempts=4, backoff_initial=0.5, backoff_max=1.5)
    s.send(b"x")  # established: sent at once
    out = s.connection_lost(0.0)
    assert out == [ReportUnreachable(POOL, A.pe_id), Select(0.0)]
    s.send(b"lost-1")
    s.pe_selected(B, 0.0)
    assert s.connection_lost(0.1) == [ReportUnreachable(POOL, B.pe_id), Select(0.5)]
    # a stale selector offers A again: no connection, no second report
    out = s.pe_selected(A, 0.6)
    assert kinds(out) == [Ignored, Select]
    assert out[1] == Select(1.0)
    out = s.selection_failed("pool empty", 1.6)
    assert kinds(out) == [Ignored, Select]
    assert out[1] == Select(1.5)  # capped
    s.pe_selected(B, 3.1)  # B again, but it was tried: Ignored + give up
    assert s.state is PuState.FAILED
    with pytest.raises(SessionClosedError):
        s.send(b"late")


def test_give_up_reports_dropped_messages():
    s = established(max_attempts=1)
    s.connection_lost(0.0)
    s.send(b"a")
    s.send(b"b")
    s.pe_selected(B, 0.0)
    out = s.connection_lost(0.1)
    assert out == [ReportUnreachable(POOL, B.pe_id), GiveUp("failover failed after 1 attempts", 2)]
    assert s.queued == 0


def test_send_queue_is_bounded():
    s = established(max_queued=2, max_queued_bytes=10)
    s.connection_lost(0.0)
    s.send(b"12345")
    with pytest.raises(SessionBusyError):
        s.send(b"123456")  # bytes
    s.send(b"1")
    with pytest.raises(SessionBusyError):
        s.send(b"2")  # count
    assert s.queued == 2


def test_failover_refused_by_the_application_tries_the_next_pe_without_reporting():
    s = established()
    s.control_received(AsapBusinessCard(POOL, (B, C)), 0.0)
    s.connection_lost(0.0)
    s.connected(0.1)
    out = s.failover_refused("no trust", 0.2)
    assert kinds(out) == [Ignored, Connect]
    assert out[1].pe == C
    assert not any(isinstance(a, ReportUnreachable) for a in out)


def test_failure_of_the_new_pe_during_the_callback_fails_over_again():
    s = established()
    s.control_received(AsapBusinessCard(POOL, (B, C)), 0.0)
    s.connection_lost(0.0)
    s.connected(0.1)
    out = s.connection_lost(0.2)
    assert out == [ReportUnreachable(POOL, B.pe_id), Connect(C, 0.5)]
    assert kinds(s.failover_complete(0.3)) == [Ignored]  # a late callback result
    assert s.connected(0.8) == [RunFailoverCallback(A, C, False)]


def test_first_connection_failure_is_retried_without_failover_callback():
    s = PuSession(POOL)
    s.start(0.0)
    s.pe_selected(A, 0.0)
    assert s.connection_lost(0.0) == [ReportUnreachable(POOL, A.pe_id), Select(0.0 + 0.5)]
    s.pe_selected(B, 0.5)
    assert s.connected(0.6) == [Established(B, False)]


def test_data_before_the_first_connection_is_queued():
    s = PuSession(POOL)
    s.send(b"early")
    s.start(0.0)
    s.pe_selected(A, 0.0)
    assert s.connected(0.0) == [Established(A, False), SendData(b"early")]


def test_close_drops_queue_and_refuses_data():
    s = established()
    s.connection_lost(0.0)
    s.send(b"q")
    s.close()
    assert s.queued == 0
    assert s.connection_lost(1.0) == []
    with pytest.raises(SessionClosedError):
        s.send(b"x")


def test_control_messages_outside_a_session_or_unexpected_are_ignored():
    s = PuSession(POOL)
    assert kinds(s.control_received(AsapCookie(b"c"), 0.0)) == [Ignored]
    assert s.cookie is None
    s = established()
    assert kinds(s.control_received(AsapCookieEcho(b"c"), 0.0)) == [Ignored]
    assert kinds(s.control_received(AsapHandleResolution(POOL), 0.0)) == [Ignored]


def test_settings_validation():
    with pytest.raises(ValueError):
        PuSessionSettings(max_attempts=0)
    with pytest.raises(ValueError):
        PuSessionSettings(backoff_initial=2.0, backoff_max=1.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["lost", "select_a", "select_b", "select_c", "connected",
                                 "complete", "refuse", "send", "cookie", "none"]), max_size=40))
def test_random_event_sequences_keep_the_invariants(events):
    """Whatever happens: reports are never repeated within one failover, the
    queue stays bounded, and the number of attempts per failover is bounded."""
    s = PuSession(POOL, PuSessionSettings(max_attempts=3, max_queued=4))
    s.start(0.0)
    reported: list[int] = []
    for i, event in enumerate(events):
        now = float(i)
        if event == "lost":
            before = s.state
            out = s.connection_lost(now)
            if before is PuState.ESTABLISHED:
                reported = []
        elif event.startswith("select_"):
            out = s.pe_selected({"a": A, "b": B, "c": C}[event[-1]], now)
        elif event == "connected":
            out = s.connected(now)
        elif event == "complete":
            out = s.failover_complete(now)
        elif event == "refuse":
            out = s.failover_refused("x", now)
        elif event == "cookie":
            out = s.control_received(AsapCookie(b"c%d" % i), now)
        elif event == "send":
            try:
                out = s.send(b"d")
            except (SessionBusyError, SessionClosedError):
                out = []
        else:
            out = s.selection_failed("none", now)
        for action in out:
            if isinstance(action, ReportUnreachable):
                assert action.pe_id not in reported
                reported.append(action.pe_id)
            if isinstance(action, Established):
                reported = []
            if isinstance(action, RunFailoverCallback):
                assert s.state is PuState.RESUMING
        assert s.queued <= 4
        assert s.attempts <= 3
        if s.state is PuState.FAILED:
            assert s.queued == 0


def test_give_up_says_why_the_last_attempt_failed():
    s = PuSession(POOL, PuSessionSettings(max_attempts=2))
    assert s.start(0.0) == [Select(0.0)]
    s.selection_failed("unknown pool handle echo", 0.0)
    s.pe_selected(A, 1.0)
    out = s.connection_lost(1.1, "connection refused (nothing listens there)")
    assert out[-1] == GiveUp(f"connection failed after 2 attempts (last: PE {A.pe_id:08x}: "
                             "connection refused (nothing listens there))", 0)
    s = PuSession(POOL, PuSessionSettings(max_attempts=1))
    s.start(0.0)
    assert s.selection_failed("unknown pool handle echo", 0.0)[-1] == GiveUp(
        "connection failed after 1 attempts (last: unknown pool handle echo)", 0)
