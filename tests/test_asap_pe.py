"""The sans-IO pool element (rserpool.asap.pe): registration, timers, keep-alives."""

from __future__ import annotations

import random
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings, strategies as st

from rserpool.asap.pe import (
    KEEPALIVE_OVER_LIMIT, CloseChannel, Deregistered, RegistrationFailed, HomeChanged,
    KeepAliveDropped, NeedServer, PeSettings, PeState, PeRegistration, Registered,
    RegistrationLost, RegistrationRefused, Send, random_pe_id, reregistration_delay,
)
from rserpool.outputs import Ignored
from rserpool.security.ratelimit import RateLimit
from rserpool.wire import (
    AsapDeregistration, AsapDeregistrationResponse, AsapEndpointKeepAlive,
    AsapEndpointKeepAliveAck, AsapError, AsapHandleResolution, AsapRegistration,
    AsapRegistrationResponse, LeastUsedPolicy, OperationError, RoundRobinPolicy, TcpTransport,
)
from rserpool.wire.codes import CAUSE_SECURITY

H = b"echo"
A, B = object(), object()  # two channels


def make(life: int = 300, **kw) -> PeRegistration:
    kw.setdefault("randbits", random.Random(7).getrandbits)
    return PeRegistration(H, TcpTransport(7, IPv4Address("127.0.0.1")), LeastUsedPolicy(3),
                              life, kw.pop("settings", None), **kw)


def sent(out, kind=None):
    return [o.message for o in out if type(o) is Send and (kind is None or type(o.message) is kind)]


def events(out, kind):
    return [o for o in out if type(o) is kind]


def registered(pe: PeRegistration, now: float = 0.0, channel=A) -> PeRegistration:
    pe.start(now)
    pe.channel_up(channel, now)
    pe.message_received(channel, AsapRegistrationResponse(H, pe.pe_id), now)
    assert pe.state is PeState.REGISTERED
    return pe


def test_pe_id_is_random_nonzero_and_from_the_injected_source():
    zeros_then_five = iter([0, 0, 5])
    assert random_pe_id(lambda bits: next(zeros_then_five)) == 5
    ids = {make(randbits=random.Random(seed).getrandbits).pe_id for seed in range(20)}
    assert len(ids) == 20 and 0 not in ids
    assert make(pe_id=0x1234).pe_id == 0x1234
    with pytest.raises(ValueError):
        make(pe_id=0)


def test_registration_sequence():
    pe = make()
    out = pe.start(0.0)
    assert events(out, NeedServer) == [NeedServer("starting")]
    assert pe.next_deadline() is None
    out = pe.channel_up(A, 1.0)
    (reg,) = sent(out)
    assert isinstance(reg, AsapRegistration)
    assert reg.pool_handle == H
    assert reg.pool_element.pe_id == pe.pe_id
    assert reg.pool_element.registration_life == 300
    assert reg.pool_element.policy == LeastUsedPolicy(3)
    assert reg.pool_element.asap_transport is None
    assert out[0].channel is A
    assert pe.next_deadline() == 31.0  # T2
    out = pe.message_received(A, AsapRegistrationResponse(H, pe.pe_id), 2.0)
    assert events(out, Registered) == [Registered(pe.pe_id, None, False)]
    assert pe.registered and pe.state is PeState.REGISTERED
    assert pe.next_deadline() == 1.0 + 280.0  # T4 from the send time


def test_t4_timing_and_reregistration_uses_the_same_pe_id():
    pe = registered(make(life=3600))
    assert pe.next_deadline() == 600.0  # min(10 min, life - 20 s)
    assert pe.timer(599.9) == []
    out = pe.timer(600.0)
    (reg,) = sent(out, AsapRegistration)
    assert reg.pool_element.pe_id == pe.pe_id
    out = pe.message_received(A, AsapRegistrationResponse(H, pe.pe_id), 600.5)
    assert events(out, Registered)[0].reregistration
    assert pe.next_deadline() == 1200.0


@pytest.mark.parametrize("life,expected", [(3600, 600.0), (300, 280.0), (40, 20.0), (30, 15.0),
                                           (1, 0.5), (-1, 600.0)])
def test_reregistration_delay(life, expected):
    assert reregistration_delay(life, PeSettings()) == expected


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=2**31 - 1))
def test_t4_never_later_than_the_life(life):
    delay = reregistration_delay(life, PeSettings())
    assert 0 < delay < life and delay <= 600.0


def test_t2_expiry_hunts_for_another_server_then_max_reg_attempt_fails():
    pe = make()
    pe.start(0.0)
    pe.channel_up(A, 0.0)
    out = pe.timer(30.0)
    assert events(out, CloseChannel) == [CloseChannel(A, "T2-registration expired")]
    assert events(out, NeedServer) == [NeedServer("T2-registration expired")]
    assert pe.state is PeState.HUNTING and pe.next_deadline() is None
    out = pe.channel_up(B, 31.0)
    assert sent(out, AsapRegistration) and out[0].channel is B
    out = pe.timer(61.0)  # second attempt (MAX-REG-ATTEMPT = 2) times out as well
    assert events(out, RegistrationFailed) == [RegistrationFailed("T2-registration expired", 2)]
    assert events(out, NeedServer) == []
    assert pe.state is PeState.FAILED
    # The application may try again: counts start over.
    out = pe.retry(100.0)
    assert events(out, NeedServer) and pe.attempts == 0


def test_channel_lost_while_registering_counts_as_an_attempt():
    pe = make(settings=PeSettings(max_reg_attempts=1))
    pe.start(0.0)
    pe.channel_up(A, 0.0)
    out = pe.channel_down(A, 1.0)
    assert events(out, RegistrationFailed) and not events(out, CloseChannel)


def test_a_registration_sent_behind_a_refused_authentication_is_taken_back():
    # The PE library sends the registration right behind its SRP proof; the
    # registrar refuses the proof, so it never handled the registration.
    pe = make(settings=PeSettings(max_reg_attempts=1))
    pe.start(0.0)
    assert sent(pe.channel_up(A, 0.0), AsapRegistration)
    assert pe.channel_refused(A, 0.5) == []
    assert pe.state is PeState.HUNTING and pe.home is None and pe.attempts == 0
    assert pe.next_deadline() is None  # no T2 left for it
    assert pe.channel_down(A, 0.6) == []  # its close afterwards changes nothing
    # Another registrar: still the first attempt of one allowed.
    out = pe.channel_up(B, 1.0)
    assert sent(out, AsapRegistration) and pe.attempts == 1
    assert pe.channel_refused(A, 1.1) == [] and pe.home is B  # not the home channel: ignored
    pe.message_received(B, AsapRegistrationResponse(H, pe.pe_id), 1.2)
    assert pe.state is PeState.REGISTERED


def test_unlimited_attempts():
    pe = make(settings=PeSettings(max_reg_attempts=None))
    pe.start(0.0)
    for i in range(10):
        pe.channel_up(A, i * 100.0)
        out = pe.timer(i * 100.0 + 30.0)
        assert events(out, NeedServer)


def test_success_resets_the_attempt_count():
    pe = make()
    pe.start(0.0)
    pe.channel_up(A, 0.0)
    pe.timer(30.0)
    pe.channel_up(B, 31.0)
    pe.message_received(B, AsapRegistrationResponse(H, pe.pe_id), 32.0)
    assert pe.attempts == 0
    pe.timer(pe.next_deadline())  # T4: re-registration
    out = pe.timer(pe.next_deadline())  # its T2 expires: one failure is not yet fatal
    assert events(out, NeedServer) and not events(out, RegistrationFailed)


def test_refusal_stops_retrying_until_corrected():
    pe = make()
    pe.start(0.0)
    pe.channel_up(A, 0.0)
    error = OperationError.of(CAUSE_SECURITY)
    out = pe.message_received(A, AsapRegistrationResponse(H, pe.pe_id, True, error), 1.0)
    assert events(out, RegistrationRefused) == [RegistrationRefused(error)]
    assert pe.state is PeState.REFUSED
    assert pe.next_deadline() is None
    for t in (30.0, 1000.0, 10_000.0):
        assert pe.timer(t) == []
    out = pe.update(20_000.0, policy=RoundRobinPolicy())
    (reg,) = sent(out, AsapRegistration)
    assert reg.pool_element.policy == RoundRobinPolicy()


def test_keepalive_answered_and_wrong_handle_discarded():
    pe = registered(make())
    out = pe.message_received(A, AsapEndpointKeepAlive(99, H), 5.0)
    assert out == [Send(A, AsapEndpointKeepAliveAck(H, pe.pe_id))]
    assert pe.home_server_id == 99  # learnt from the home channel
    out = pe.message_received(A, AsapEndpointKeepAlive(99, b"other"), 5.0)
    assert sent(out) == [] and events(out, Ignored)
    # A keep-alive from another registrar's channel is answered on that channel.
    out = pe.message_received(B, AsapEndpointKeepAlive(7, H), 6.0)
    assert out == [Send(B, AsapEndpointKeepAliveAck(H, pe.pe_id))]
    assert pe.home is A and pe.home_server_id == 99


def test_keepalive_with_another_pe_id_is_not_acknowledged():
    pe = registered(make())
    out = pe.message_received(A, AsapEndpointKeepAlive(1, H, pe_id=(pe.pe_id + 1) & 0xFFFFFFFF), 1.0)
    assert sent(out) == []


def test_h_flag_changes_the_home_server_and_its_channel():
    pe = registered(make())
    pe.message_received(A, AsapEndpointKeepAlive(1, H), 2.0)
    out = pe.message_received(B, AsapEndpointKeepAlive(2, H, home=True), 3.0)
    assert out[0] == Send(B, AsapEndpointKeepAliveAck(H, pe.pe_id))
    assert events(out, HomeChanged) == [HomeChanged(2, 1, B)]
    assert pe.home is B and pe.home_server_id == 2
    # H flag from the home server itself: nothing changes.
    out = pe.message_received(B, AsapEndpointKeepAlive(2, H, home=True), 4.0)
    assert not events(out, HomeChanged)
    # Re-registrations now go to B; losing A no longer matters.
    assert pe.channel_down(A, 5.0) == []
    out = pe.update(6.0, policy=LeastUsedPolicy(9))
    assert out[0].channel is B


def test_h_flag_without_a_known_home_id():
    pe = registered(make())
    out = pe.message_received(A, AsapEndpointKeepAlive(5, H, home=True), 1.0)
    assert events(out, HomeChanged) == [HomeChanged(5, None, A)]


# -- RFC 5355 2.14: the keep-alives a PE answers are bounded per channel ---------------------


def flood(pe: PeRegistration, channel, count: int, now: float, **kw) -> list:
    out = []
    for _ in range(count):
        out += pe.message_received(channel, AsapEndpointKeepAlive(1, H, **kw), now)
    return out


def test_keepalive_limit_defaults_and_validation():
    settings = PeSettings()
    assert (settings.keepalive_rate, settings.keepalive_burst) == (5.0, 40.0)
    assert settings.keepalive_limit == RateLimit(5.0, 40.0)
    assert PeSettings(keepalive_rate=0.1, keepalive_burst=1).keepalive_limit == RateLimit(0.1, 1.0)
    for bad in (0, -1, 0.0, float("nan"), float("inf"), True, "5", None):
        with pytest.raises(ValueError, match="keepalive_rate"):
            PeSettings(keepalive_rate=bad)
    for bad in (0, 0.5, -3, float("nan"), float("inf"), True, "40", None):
        with pytest.raises(ValueError, match="keepalive_burst"):
            PeSettings(keepalive_burst=bad)


def test_keepalive_burst_is_answered_and_the_excess_ignored_and_counted():
    pe = registered(make())
    out = flood(pe, A, 1000, 10.0)
    assert sent(out) == [AsapEndpointKeepAliveAck(H, pe.pe_id)] * 40  # the default burst
    assert all(o.channel is A for o in out if type(o) is Send)
    dropped = events(out, KeepAliveDropped)
    assert len(dropped) == 960 and len(out) == 1000
    assert dropped[0] == KeepAliveDropped(AsapEndpointKeepAlive(1, H), KEEPALIVE_OVER_LIMIT, A)
    assert isinstance(dropped[0], Ignored) and "RFC 5355 2.14" in dropped[0].reason
    assert (pe.keepalives_answered, pe.keepalives_dropped) == (40, 960)
    # Nothing else changed: still registered, same timers.
    assert pe.state is PeState.REGISTERED and pe.home is A
    assert pe.next_deadline() == 280.0
    # Over the limit, even a keep-alive for another pool is only counted.
    out = pe.message_received(A, AsapEndpointKeepAlive(1, b"other"), 10.0)
    assert [type(o) for o in out] == [KeepAliveDropped] and pe.keepalives_dropped == 961


def test_keepalive_bucket_refills_with_now():
    pe = registered(make(settings=PeSettings(keepalive_rate=4.0, keepalive_burst=8)))
    assert len(sent(flood(pe, A, 20, 1.0))) == 8
    # 4 tokens a second: after 0.125 s half a token (dropped), after 0.25 s one.
    assert events(pe.message_received(A, AsapEndpointKeepAlive(1, H), 1.125), KeepAliveDropped)
    assert sent(pe.message_received(A, AsapEndpointKeepAlive(1, H), 1.25))
    assert events(pe.message_received(A, AsapEndpointKeepAlive(1, H), 1.25), KeepAliveDropped)
    # At the limit rate every keep-alive is answered, for as long as it lasts.
    for step in range(1, 401):
        assert sent(pe.message_received(A, AsapEndpointKeepAlive(1, H), 1.25 + step * 0.25))
    # Time going backwards refills nothing.
    assert events(pe.message_received(A, AsapEndpointKeepAlive(1, H), 50.0), KeepAliveDropped)
    # A long pause refills the whole burst, no more.
    assert len(sent(flood(pe, A, 20, 1000.0))) == 8
    assert pe.keepalives_answered == 8 + 1 + 400 + 8
    assert pe.keepalives_dropped == 12 + 1 + 1 + 1 + 12


def test_the_home_registrars_spaced_keepalives_are_always_answered():
    # RFC 5355 2.13/2.14 together: whatever the bucket says, a keep-alive on
    # the home channel a spacing after the last one processed there is
    # answered, so the home registrar's probes never fail for the limiter.
    pe = registered(make(settings=PeSettings(keepalive_rate=0.01, keepalive_burst=1)))
    assert pe.home is A
    assert len(sent(flood(pe, A, 10, 1.0))) == 1  # the burst; the flood is dropped
    for step in range(1, 200):  # then one a second: every one answered
        assert sent(pe.message_received(A, AsapEndpointKeepAlive(1, H), 1.0 + step))
    # A flood from the home still gets at most one more answer per spacing.
    assert len(sent(flood(pe, A, 1000, 201.0))) == 1
    assert not sent(pe.message_received(A, AsapEndpointKeepAlive(1, H), 201.5))
    assert sent(pe.message_received(A, AsapEndpointKeepAlive(1, H), 202.0))
    # Another registrar's channel has only its bucket.
    assert len(sent(flood(pe, B, 10, 203.0))) == 1
    assert not sent(pe.message_received(B, AsapEndpointKeepAlive(2, H), 205.0))
    for bad in (0, -1, float("nan"), float("inf"), True, None):
        with pytest.raises(ValueError, match="home_keepalive_spacing"):
            PeSettings(home_keepalive_spacing=bad)


def test_normal_rate_is_answered_under_the_default_limit():
    pe = registered(make())
    # Every 0.25 s (4/s, close to the 5/s rate) for 10 minutes: all answered.
    for step in range(2400):
        assert sent(pe.message_received(A, AsapEndpointKeepAlive(1, H), step * 0.25))
    assert pe.keepalives_dropped == 0


def test_buckets_are_per_channel():
    pe = registered(make(settings=PeSettings(keepalive_burst=3)))
    assert len(sent(flood(pe, B, 10, 5.0))) == 3
    assert len(sent(flood(pe, A, 10, 5.0))) == 3  # B's flood did not use A's tokens
    assert pe.keepalive_channels == 2


def test_dropped_keepalive_h_flag_changes_nothing():
    pe = registered(make(settings=PeSettings(keepalive_burst=2)))
    pe.message_received(A, AsapEndpointKeepAlive(1, H), 1.0)
    assert (pe.home, pe.home_server_id) == (A, 1)
    flood(pe, B, 2, 2.0)  # B (another registrar's channel) spends its burst
    out = pe.message_received(B, AsapEndpointKeepAlive(2, H, home=True), 2.0)
    assert [type(o) for o in out] == [KeepAliveDropped]
    assert (pe.home, pe.home_server_id) == (A, 1)  # no KA2.4 for a dropped keep-alive
    out = pe.update(3.0, policy=LeastUsedPolicy(4))
    assert out[0].channel is A
    pe.message_received(A, AsapRegistrationResponse(H, pe.pe_id), 3.0)
    # Once B's bucket has a token again, the H flag is acted on as usual.
    out = pe.message_received(B, AsapEndpointKeepAlive(2, H, home=True), 3.0)
    assert sent(out) == [AsapEndpointKeepAliveAck(H, pe.pe_id)]
    assert events(out, HomeChanged) == [HomeChanged(2, 1, B)]
    assert (pe.home, pe.home_server_id) == (B, 2)


def test_home_id_is_not_learnt_from_a_dropped_keepalive():
    pe = registered(make(settings=PeSettings(keepalive_burst=1)))
    flood(pe, A, 1, 1.0, pe_id=7)  # not ours: not answered, but takes the token
    assert pe.home_server_id is None
    out = pe.message_received(A, AsapEndpointKeepAlive(9, H), 1.0)
    assert [type(o) for o in out] == [KeepAliveDropped]
    assert pe.home_server_id is None


def test_keepalive_state_is_released_when_the_channel_goes():
    pe = registered(make())
    flood(pe, A, 50, 1.0)
    flood(pe, B, 50, 1.0)
    assert pe.keepalive_channels == 2
    assert pe.channel_down(B, 2.0) == []  # not the home channel: only its bucket goes
    assert pe.keepalive_channels == 1
    out = pe.channel_down(A, 2.0)
    assert events(out, NeedServer) and pe.keepalive_channels == 0
    # The new home channel starts with a full bucket.
    C = object()
    pe.channel_up(C, 2.5)
    pe.message_received(C, AsapRegistrationResponse(H, pe.pe_id), 2.5)
    assert len(sent(flood(pe, C, 50, 2.5))) == 40
    assert pe.keepalive_channels == 1


def test_keepalive_state_is_bounded_without_channel_down():
    pe = registered(make())
    channels = [object() for _ in range(100)]
    for n, channel in enumerate(channels):
        pe.message_received(channel, AsapEndpointKeepAlive(1, H), float(n))
        assert pe.keepalive_channels <= 16
    assert pe.keepalive_channels == 16
    for channel in channels:
        pe.channel_down(channel, 200.0)
    assert pe.keepalive_channels == 0


def test_unsolicited_deregistration_response_reregisters():
    pe = registered(make())
    out = pe.message_received(A, AsapDeregistrationResponse(H, pe.pe_id), 50.0)
    assert events(out, RegistrationLost)
    (reg,) = sent(out, AsapRegistration)
    assert reg.pool_element.pe_id == pe.pe_id
    assert pe.state is PeState.REGISTERING and pe.next_deadline() == 80.0


def test_stop_deregisters_with_t3():
    pe = registered(make())
    out = pe.stop(10.0)
    assert sent(out) == [AsapDeregistration(H, pe.pe_id)]
    assert pe.state is PeState.DEREGISTERING and pe.next_deadline() == 40.0
    out = pe.message_received(A, AsapDeregistrationResponse(H, pe.pe_id), 11.0)
    assert events(out, Deregistered) == [Deregistered(True)]
    assert pe.state is PeState.STOPPED and pe.next_deadline() is None
    assert pe.stop(12.0) == []


def test_t3_expiry_gives_up():
    pe = registered(make())
    pe.stop(10.0)
    assert pe.timer(39.0) == []
    assert events(pe.timer(40.0), Deregistered) == [Deregistered(False)]
    # Late keep-alives are no longer answered.
    assert sent(pe.message_received(A, AsapEndpointKeepAlive(1, H), 41.0)) == []


def test_deregistration_continues_through_another_registrar_within_t3():
    pe = registered(make())
    pe.stop(10.0)
    out = pe.channel_down(A, 11.0)
    assert events(out, NeedServer)
    out = pe.channel_up(B, 12.0)
    assert out == [Send(B, AsapDeregistration(H, pe.pe_id))]
    assert pe.next_deadline() == 40.0


def test_stop_without_registrar():
    pe = make()
    pe.start(0.0)
    assert events(pe.stop(1.0), Deregistered) == [Deregistered(True)]
    pe = registered(make())
    pe.channel_down(A, 2.0)
    assert events(pe.stop(3.0), Deregistered) == [Deregistered(False)]


def test_failover_reregisters_same_pe_id_elsewhere():
    pe = registered(make())
    pe_id = pe.pe_id
    out = pe.channel_down(A, 100.0)
    assert events(out, NeedServer) == [NeedServer("home registrar's channel closed", failover=True)]
    assert not pe.registered and pe.next_deadline() is None
    out = pe.channel_up(B, 101.0, server_id=42)
    assert sent(out)[0].pool_element.pe_id == pe_id
    out = pe.message_received(B, AsapRegistrationResponse(H, pe_id), 101.5)
    (ev,) = events(out, Registered)
    assert ev.failover and ev.reregistration and ev.server_id == 42


@pytest.mark.parametrize("how", ["channel closed", "T2 expired"])
def test_a_reregistration_lost_with_its_registrar_is_a_failover(how):
    """The home registrar dies while a re-registration (T4) is in flight:
    the registration that ends the hunt is a failover, like one after a
    channel lost while registered (found by bench_storm: such PEs said
    failover=False)."""
    pe = registered(make(life=30))
    pe_id = pe.pe_id
    t4 = pe.next_deadline()
    out = pe.timer(t4)
    assert pe.state is PeState.REGISTERING and sent(out, AsapRegistration)
    if how == "channel closed":
        out = pe.channel_down(A, t4 + 0.1)
    else:
        out = pe.timer(pe.next_deadline())
    (need,) = events(out, NeedServer)
    assert need.failover
    pe.channel_up(B, t4 + 40.0, server_id=42)
    out = pe.message_received(B, AsapRegistrationResponse(H, pe_id), t4 + 40.5)
    (ev,) = events(out, Registered)
    assert ev.failover and ev.reregistration and ev.server_id == 42
    # the next one at the new home is an ordinary re-registration
    out = pe.timer(pe.next_deadline())
    out = pe.message_received(B, AsapRegistrationResponse(H, pe_id), t4 + 60.0)
    (ev,) = events(out, Registered)
    assert not ev.failover


def test_update_while_registering_is_sent_after_the_response():
    pe = make()
    pe.start(0.0)
    pe.channel_up(A, 0.0)
    assert pe.update(0.5, policy=LeastUsedPolicy(50)) == []
    out = pe.message_received(A, AsapRegistrationResponse(H, pe.pe_id), 1.0)
    (reg,) = sent(out, AsapRegistration)
    assert reg.pool_element.policy == LeastUsedPolicy(50)
    assert events(out, Registered)


def test_unexpected_input_is_ignored():
    pe = registered(make())
    for msg in (AsapHandleResolution(H), AsapError(OperationError.of(1)),
                AsapRegistrationResponse(H, pe.pe_id ^ 1),
                AsapRegistrationResponse(b"x", pe.pe_id)):
        out = pe.message_received(A, msg, 1.0)
        assert [type(o) for o in out] == [Ignored]
    # A stray registration response from a non-home channel changes nothing.
    assert events(pe.message_received(B, AsapRegistrationResponse(H, pe.pe_id), 1.0), Ignored)
    assert pe.state is PeState.REGISTERED
    # A second channel while registered is not needed.
    assert pe.channel_up(B, 2.0) == [CloseChannel(B, "not needed (registered)")]


def test_registration_warning_is_reported():
    pe = make()
    pe.start(0.0)
    pe.channel_up(A, 0.0)
    warning = OperationError.of(0x5)
    out = pe.message_received(A, AsapRegistrationResponse(H, pe.pe_id, False, warning), 0.1)
    assert events(out, Registered)[0].warning == warning


def test_start_twice_is_an_error():
    pe = make()
    pe.start(0.0)
    with pytest.raises(RuntimeError):
        pe.start(0.0)


_INPUTS = st.lists(st.tuples(
    st.sampled_from(["up_a", "up_b", "down_a", "down_b", "ok", "reject", "ka", "kah", "dereg",
                     "timer", "update", "stop"]),
    st.floats(min_value=0, max_value=100)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(_INPUTS)
def test_random_inputs_keep_the_invariants(steps):
    pe = make(life=60)
    pe.start(0.0)
    now = 0.0
    for action, dt in steps:
        now += dt
        channel = B if action.endswith("_b") else (pe.home or A)
        if action.startswith("up"):
            out = pe.channel_up(channel, now)
        elif action.startswith("down"):
            out = pe.channel_down(channel, now)
        elif action == "ok":
            out = pe.message_received(channel, AsapRegistrationResponse(H, pe.pe_id), now)
        elif action == "reject":
            out = pe.message_received(channel, AsapRegistrationResponse(H, pe.pe_id, True), now)
        elif action in ("ka", "kah"):
            out = pe.message_received(channel, AsapEndpointKeepAlive(3, H, home=action == "kah"), now)
        elif action == "dereg":
            out = pe.message_received(channel, AsapDeregistrationResponse(H, pe.pe_id), now)
        elif action == "timer":
            out = pe.timer(now)
        elif action == "update":
            out = pe.update(now, policy=LeastUsedPolicy(int(dt)))
        else:
            out = pe.stop(now)
        for o in out:
            if type(o) is Send:
                assert o.channel is not None
                if type(o.message) in (AsapRegistration, AsapDeregistration):
                    assert o.channel is pe.home
        deadline = pe.next_deadline()
        if pe.state in (PeState.REGISTERING, PeState.REGISTERED, PeState.DEREGISTERING):
            assert deadline is not None
        if pe.state in (PeState.STOPPED, PeState.REFUSED, PeState.FAILED, PeState.IDLE):
            assert deadline is None
        if pe.state is PeState.REGISTERING:
            assert pe.home is not None
        assert pe.keepalive_channels <= 2
