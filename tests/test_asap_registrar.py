"""RegistrarCore, the sans-IO registrar: every rule with time passed in."""

from __future__ import annotations

import random

import pytest

from dataclasses import fields

from rserpool.asap.registrar import PoolElementAdded, PoolElementRemoved, RegistrarCore, RegistrarSettings, Send
from rserpool.gate import DOOR_ASAP, AskAuthorizer, Gate, GatePolicy
from rserpool.handlespace import Handlespace, HandlespaceLimits
from rserpool.identity import MECH_CERTIFICATE, Identity
from rserpool.security.ratelimit import RateLimit
from rserpool.wire import (
    AsapDeregistration, AsapDeregistrationResponse, AsapEndpointKeepAlive, AsapEndpointKeepAliveAck,
    AsapEndpointUnreachable, AsapError, AsapHandleResolution, AsapHandleResolutionResponse,
    AsapRegistration, AsapRegistrationResponse, LeastUsedPolicy, RandomPolicy, RoundRobinPolicy,
    WireError, decode_message,
)
from rserpool.wire.codes import (
    CAUSE_INCONSISTENT_POLICY, CAUSE_INVALID_VALUES, CAUSE_LACK_OF_RESOURCES, CAUSE_SECURITY,
    CAUSE_UNKNOWN_POOL_HANDLE, PPID_ASAP,
)
from tests.asaphelpers import make_pe

SERVER = 0x5EED


_GATE_FIELDS = {f.name for f in fields(GatePolicy)}


def make_core(log=None, **overrides):
    """A core whose RegistrarSettings and GatePolicy take ``overrides``
    (``log``: the gate's log function)."""
    policy = GatePolicy(**{k: v for k, v in overrides.items() if k in _GATE_FIELDS})
    settings = RegistrarSettings(server_id=SERVER, **{k: v for k, v in overrides.items() if k not in _GATE_FIELDS})
    return RegistrarCore(settings, Handlespace(HandlespaceLimits(), rng=random.Random(1)), Gate(policy, log=log),
                         rng=random.Random(2))


def open_session(core, address, secure=True, identity=None):
    """A session whose channel the gate identified (``identity``: a certificate's name)."""
    admission = core.gate.open_channel(DOOR_ASAP, address, secure, 0.0)
    core.gate.identified(admission, None if identity is None else Identity(identity, MECH_CERTIFICATE), 0.0)
    return core.open_session(object(), admission)


def sends(outputs, session=None):
    return [o.message for o in outputs if type(o) is Send and (session is None or o.channel is session)]


def authorize_all(core, session, outputs, now, allowed=True):
    """Answer every Authorize output; returns everything that followed."""
    result = [o for o in outputs if type(o) is not AskAuthorizer]
    for o in outputs:
        if type(o) is AskAuthorizer:
            result += authorize_all(core, session, core.authorization_done(o, allowed, now), now, allowed)
    return result


def register(core, session, pe_id, now=0.0, handle=b"echo", **pe_kwargs):
    out = core.message_received(session, AsapRegistration(handle, make_pe(pe_id, **pe_kwargs)), now)
    return authorize_all(core, session, out, now)


@pytest.fixture
def core():
    return make_core()


@pytest.fixture
def pe_session(core):
    return open_session(core, "127.0.0.1", secure=True, identity="pe1")


def test_registration_is_authorized_before_any_state(core, pe_session):
    out = core.message_received(pe_session, AsapRegistration(b"echo", make_pe(1)), 0.0)
    assert [type(o) for o in out] == [AskAuthorizer]
    assert out[0].action == "register" and out[0].pool_handle == b"echo"
    assert len(core.handlespace) == 0  # nothing before the answer
    done = core.authorization_done(out[0], True, 0.0)
    (reply,) = sends(done)
    assert isinstance(reply, AsapRegistrationResponse) and not reply.reject
    assert any(type(o) is PoolElementAdded for o in done)
    entry = core.handlespace.get(b"echo", 1)
    assert entry.identity == "pe1" and entry.home_server_id == SERVER
    assert entry.payload.home_server_id == SERVER


def test_refused_authorization_creates_nothing_and_is_cached(core, pe_session):
    out = register_refused = core.message_received(pe_session, AsapRegistration(b"secret", make_pe(1)), 0.0)
    done = core.authorization_done(out[0], False, 0.0)
    (reply,) = sends(done)
    assert reply.reject and reply.error.causes[0].code == CAUSE_SECURITY
    assert len(core.handlespace) == 0
    # The decision is cached for the session: no second Authorize.
    again = core.message_received(pe_session, AsapRegistration(b"secret", make_pe(2)), 1.0)
    assert [type(o) for o in again] == [Send]
    assert register_refused is not again


def test_insecure_or_anonymous_sessions_are_refused_with_0xa(core):
    plain = open_session(core, "127.0.0.1", secure=False, identity="pe1")
    anonymous = open_session(core, "127.0.0.1", secure=True, identity=None)
    for session in (plain, anonymous):
        (reply,) = sends(core.message_received(session, AsapRegistration(b"echo", make_pe(1)), 0.0))
        assert reply.reject and reply.error.causes[0].code == CAUSE_SECURITY
        (dereg,) = sends(core.message_received(session, AsapDeregistration(b"echo", 1), 0.0))
        assert dereg.error.causes[0].code == CAUSE_SECURITY
    assert len(core.handlespace) == 0


def test_insecure_options_allow_it_explicitly():
    core = make_core(allow_insecure_channels=True, allow_unauthenticated=True)
    session = open_session(core, "127.0.0.1", secure=False, identity=None)
    (reply,) = sends(register(core, session, 1))
    assert not reply.reject
    assert core.handlespace.get(b"echo", 1).identity == "addr:127.0.0.1"


def test_address_must_match_channel(core, pe_session):
    (reply,) = sends(register(core, pe_session, 1, address="10.1.2.3"))
    assert reply.reject and reply.error.causes[0].code == CAUSE_INVALID_VALUES
    assert len(core.handlespace) == 0


def test_pe_identifier_bound_to_identity(core, pe_session):
    register(core, pe_session, 7)
    other = open_session(core, "127.0.0.1", secure=True, identity="pe2")
    (reply,) = sends(register(core, other, 7, port=99))
    assert reply.reject and reply.error.causes[0].code == CAUSE_SECURITY
    (dereg,) = sends(authorize_all(core, other, core.message_received(other, AsapDeregistration(b"echo", 7), 0), 0))
    assert dereg.error.causes[0].code == CAUSE_SECURITY
    assert core.handlespace.get(b"echo", 7).payload.user_transport.port == 7


def test_inconsistent_policy_reports_pool_policy(core, pe_session):
    register(core, pe_session, 1, policy=LeastUsedPolicy(3))
    (reply,) = sends(register(core, pe_session, 2, policy=RandomPolicy()))
    assert reply.reject
    cause = reply.error.causes[0]
    assert cause.code == CAUSE_INCONSISTENT_POLICY
    assert cause.info == LeastUsedPolicy(3).encode()


def test_reregistration_updates_in_place(core, pe_session):
    register(core, pe_session, 1, policy=LeastUsedPolicy(3))
    out = register(core, pe_session, 1, policy=LeastUsedPolicy(9))
    added = [o for o in out if type(o) is PoolElementAdded]
    assert added and not added[0].created
    assert core.handlespace.get(b"echo", 1).settings.load == 9
    assert core.stats["reregistrations"] == 1


def test_resolution_answers_policy_and_unknown_handle(core, pe_session):
    register(core, pe_session, 1, policy=LeastUsedPolicy(3))
    register(core, pe_session, 2, policy=LeastUsedPolicy(1))
    pu = open_session(core, "127.0.0.2", secure=True, identity=None)
    (answer,) = sends(core.message_received(pu, AsapHandleResolution(b"echo"), 0.0))
    assert [p.pe_id for p in answer.pool_elements] == [2, 1]
    assert answer.policy is not None
    (missing,) = sends(core.message_received(pu, AsapHandleResolution(b"none"), 0.0))
    assert missing.error.causes[0].code == CAUSE_UNKNOWN_POOL_HANDLE


def test_round_robin_response_omits_policy(core, pe_session):
    register(core, pe_session, 1, policy=RoundRobinPolicy())
    pu = open_session(core, "127.0.0.2", secure=True, identity=None)
    (answer,) = sends(core.message_received(pu, AsapHandleResolution(b"echo"), 0.0))
    assert answer.policy is None


def test_resolution_authorization_optional():
    core = make_core(authorize_resolution=True)
    pu = open_session(core, "127.0.0.2", secure=True, identity="pu1")
    out = core.message_received(pu, AsapHandleResolution(b"echo"), 0.0)
    assert [type(o) for o in out] == [AskAuthorizer] and out[0].action == "resolve"
    (answer,) = sends(core.authorization_done(out[0], False, 0.0))
    assert answer.error.causes[0].code == CAUSE_SECURITY


def test_keepalive_cycle_and_timeout(core, pe_session):
    register(core, pe_session, 1)
    interval = core.settings.keepalive_interval
    deadline = core.next_deadline()
    assert 0.5 * interval <= deadline <= 1.5 * interval  # RFC 5352 3.5: +/- 50 %
    (ka,) = sends(core.on_timer(deadline))
    assert isinstance(ka, AsapEndpointKeepAlive) and ka.server_id == SERVER and not ka.home
    # The ACK schedules the next keep-alive.
    core.message_received(pe_session, AsapEndpointKeepAliveAck(b"echo", 1), deadline + 0.1)
    nxt = core.next_deadline()
    assert deadline + 0.1 + 0.5 * interval <= nxt <= deadline + 0.1 + 1.5 * interval
    (ka,) = sends(core.on_timer(nxt))
    # No ACK: removed when the timeout passes, not before.
    assert sends(core.on_timer(nxt + core.settings.keepalive_timeout - 0.01)) == []
    assert core.handlespace.get(b"echo", 1) is not None
    out = core.on_timer(nxt + core.settings.keepalive_timeout)
    assert any(type(o) is PoolElementRemoved for o in out)
    assert core.handlespace.get(b"echo", 1) is None


def test_keepalive_ack_from_other_session_ignored(core, pe_session):
    register(core, pe_session, 1)
    deadline = core.next_deadline()
    core.on_timer(deadline)
    intruder = open_session(core, "127.0.0.1", secure=True, identity="pe2")
    core.message_received(intruder, AsapEndpointKeepAliveAck(b"echo", 1), deadline)
    core.on_timer(deadline + core.settings.keepalive_timeout)
    assert core.handlespace.get(b"echo", 1) is None


def test_closed_channel_removes_its_pes(core, pe_session):
    register(core, pe_session, 1)
    register(core, pe_session, 2)
    out = core.close_session(pe_session, 1.0)
    assert len([o for o in out if type(o) is PoolElementRemoved]) == 2
    assert len(core.handlespace) == 0


def test_expiry_sends_deregistration_response(core, pe_session):
    register(core, pe_session, 1, life=3)
    out = core.on_timer(3.0)
    assert any(isinstance(m, AsapDeregistrationResponse) for m in sends(out))
    assert len(core.handlespace) == 0


def test_distinct_reporters_remove_only_when_configured():
    # RFC 5352's rule (INSECURE, RFC 5355 2.13): MAX-BAD-PE-REPORT distinct
    # reporters remove the PE even though it answered its probe.
    core = make_core(max_bad_pe_reports=3, unreachable_removal_needs_failed_probe=False)
    pe = open_session(core, "127.0.0.1", secure=True, identity="pe1")
    register(core, pe, 1)
    pus = [open_session(core, f"127.0.0.{i}", secure=True, identity=None) for i in (2, 3, 4)]
    out = core.message_received(pus[0], AsapEndpointUnreachable(b"echo", 1), 1.0)
    (probe,) = sends(out, pe)
    assert isinstance(probe, AsapEndpointKeepAlive)  # RFC 5352 3.5: immediate probe
    core.message_received(pe, AsapEndpointKeepAliveAck(b"echo", 1), 1.01)
    core.message_received(pus[1], AsapEndpointUnreachable(b"echo", 1), 1.1)
    assert core.handlespace.get(b"echo", 1) is not None
    out = core.message_received(pus[2], AsapEndpointUnreachable(b"echo", 1), 1.2)
    assert any(type(o) is PoolElementRemoved for o in out)


def test_reports_never_remove_a_pe_that_answers_its_probe():
    # The default (RFC 5355 2.13): distinct reporters do not remove a PE that
    # answers its probe; one that leaves the probe unanswered goes.
    core = make_core()
    assert core.gate.policy.unreachable_removal_needs_failed_probe
    pe = open_session(core, "127.0.0.1", secure=True, identity="pe1")
    register(core, pe, 1)
    interval = core.settings.keepalive_interval
    pus = [open_session(core, f"127.0.0.{i}", secure=True, identity=None) for i in (2, 3, 4, 5)]
    now = 1.0
    probes = 0
    for pu in pus:
        now += interval  # each report comes after a keep-alive interval: each may probe
        out = core.message_received(pu, AsapEndpointUnreachable(b"echo", 1), now)
        assert not any(type(o) is PoolElementRemoved for o in out)
        for message in sends(out, pe):
            assert isinstance(message, AsapEndpointKeepAlive)
            probes += 1
            core.message_received(pe, AsapEndpointKeepAliveAck(b"echo", 1), now)
    assert probes == 4
    assert core.handlespace.get(b"echo", 1) is not None
    # Now the PE stops answering: the next report's probe times out.
    now += interval
    out = core.message_received(open_session(core, "127.0.0.6", secure=True, identity=None),
                                AsapEndpointUnreachable(b"echo", 1), now)
    assert [type(m) for m in sends(out, pe)] == [AsapEndpointKeepAlive]
    removed = [o for o in core.on_timer(now + core.settings.keepalive_timeout)
               if type(o) is PoolElementRemoved]
    assert [o.entry.pe_id for o in removed] == [1]


def test_many_reporters_probe_a_pe_at_most_once_per_keepalive_interval():
    # Issue 12: twelve anonymous reporters at one report a second each must
    # not make the registrar's keep-alives exceed what the PE library's
    # limiter answers (RFC 5355 2.14): every keep-alive to the PE, periodic or
    # probe, is at least half a keep-alive interval after the previous one.
    core = make_core()
    pe = open_session(core, "127.0.0.1", secure=True, identity="pe1")
    register(core, pe, 1, life=1000)
    reporters = [open_session(core, f"127.0.1.{i}", secure=True, identity=None) for i in range(12)]
    sent: list[float] = []
    now = 0.0
    while now < 120.0:
        now = round(now + 0.05, 2)
        outputs = core.on_timer(now)
        if abs(now - round(now)) < 1e-9:  # each reporter once a second
            for reporter in reporters:
                outputs += core.message_received(reporter, AsapEndpointUnreachable(b"echo", 1), now)
        for message in sends(outputs, pe):
            assert isinstance(message, AsapEndpointKeepAlive)
            sent.append(now)
            core.message_received(pe, AsapEndpointKeepAliveAck(b"echo", 1), now + 0.01)
        assert not any(type(o) is PoolElementRemoved for o in outputs)
    assert core.handlespace.get(b"echo", 1) is not None
    gaps = [b - a for a, b in zip(sent, sent[1:])]
    assert min(gaps) >= 0.5 * core.settings.keepalive_interval - 0.06
    assert len(sent) <= 120.0 / (0.5 * core.settings.keepalive_interval) + 1
    assert core.stats["unreachable_reports"] == 12 * 120


def test_reports_from_anonymous_pool_users_dropped_when_configured():
    core = make_core(max_bad_pe_reports=2, unreachable_requires_identity=True,
                     unreachable_removal_needs_failed_probe=False)
    pe = open_session(core, "127.0.0.1", secure=True, identity="pe1")
    register(core, pe, 1)
    anonymous = [open_session(core, f"127.0.0.{i}", secure=True, identity=None) for i in (2, 3, 4)]
    for i, pu in enumerate(anonymous):
        assert sends(core.message_received(pu, AsapEndpointUnreachable(b"echo", 1), 1.0 + i), pe) == []
    assert core.handlespace.get(b"echo", 1) is not None
    assert core.stats["refused"] == 3
    # Authenticated pool users are heard as before (probe, then removal).
    known = [open_session(core, "127.0.0.9", secure=True, identity=f"pu{i}") for i in (1, 2)]
    assert [type(m) for m in sends(core.message_received(known[0], AsapEndpointUnreachable(b"echo", 1), 5.0), pe)] \
        == [AsapEndpointKeepAlive]
    out = core.message_received(known[1], AsapEndpointUnreachable(b"echo", 1), 5.1)
    assert any(type(o) is PoolElementRemoved for o in out)


def test_unreachable_flood_from_one_reporter_does_not_remove_healthy_pe():
    core = make_core(max_bad_pe_reports=3)
    pe = open_session(core, "127.0.0.1", secure=True, identity="pe1")
    register(core, pe, 1)
    attacker = open_session(core, "127.0.0.9", secure=True, identity=None)
    now = 1.0
    probes = 0
    for i in range(1000):
        now += 0.001
        for message in sends(core.message_received(attacker, AsapEndpointUnreachable(b"echo", 1), now), pe):
            probes += 1
            core.message_received(pe, AsapEndpointKeepAliveAck(b"echo", 1), now)
    assert core.handlespace.get(b"echo", 1) is not None
    assert probes <= 10  # the rate limit bounds the probes the flood can cause
    assert core.stats["refused"] >= 990


def test_registration_rate_limited_per_identity():
    core = make_core(registration_rate=RateLimit(1.0, 5.0))
    session = open_session(core, "127.0.0.1", secure=True, identity="pe1")
    replies = [sends(register(core, session, i, now=0.0))[0] for i in range(1, 11)]
    accepted = [r for r in replies if not r.reject]
    refused = [r for r in replies if r.reject]
    assert len(accepted) == 5
    assert all(r.error.causes[0].code == CAUSE_LACK_OF_RESOURCES for r in refused)
    assert len(core.handlespace) == 5


def test_pending_authorizations_bounded(core, pe_session):
    outs = [core.message_received(pe_session, AsapRegistration(f"p{i}".encode(), make_pe(i + 1)), 0.0)
            for i in range(core.gate.policy.max_pending_per_channel + 3)]
    authorizes = [o for out in outs for o in out if type(o) is AskAuthorizer]
    assert len(authorizes) == core.gate.policy.max_pending_per_channel
    refusals = [m for out in outs for m in sends(out)]
    assert len(refusals) == 3 and all(m.error.causes[0].code == CAUSE_LACK_OF_RESOURCES for m in refusals)


def test_wire_errors_answered_per_rfc5354(core, pe_session):
    with pytest.raises(WireError) as report:
        decode_message(bytes([0x7F, 0, 0, 8, 1, 2, 3, 4]), PPID_ASAP)
    (reply,) = sends(core.wire_error(pe_session, report.value))
    assert isinstance(reply, AsapError) and reply.error.causes[0].code == 0x2
    with pytest.raises(WireError) as silent:
        decode_message(bytes([0x3F, 0, 0, 4]), PPID_ASAP)
    assert core.wire_error(pe_session, silent.value) == []


def test_answer_after_session_closed_is_dropped(core, pe_session):
    out = core.message_received(pe_session, AsapRegistration(b"echo", make_pe(1)), 0.0)
    core.close_session(pe_session, 0.5)
    assert core.authorization_done(out[0], True, 1.0) == []
    assert len(core.handlespace) == 0


def test_backend_outage_is_refused_but_not_remembered(core, pe_session):
    out = core.message_received(pe_session, AsapRegistration(b"echo", make_pe(1)), 0.0)
    (reply,) = sends(core.authorization_done(out[0], None, 0.0))
    assert reply.reject and reply.error.causes[0].code == CAUSE_SECURITY
    retry = core.message_received(pe_session, AsapRegistration(b"echo", make_pe(1)), 1.0)
    assert [type(o) for o in retry] == [AskAuthorizer]  # asked again, not answered from a cache


def test_every_refusal_is_logged_once_by_the_gate():
    lines = []
    core = make_core(log=lambda level, fmt, **fields: lines.append(fmt.format(**fields)))
    pe = open_session(core, "127.0.0.1", identity="pe1")
    register(core, pe, 1, policy=LeastUsedPolicy(3))
    (reply,) = sends(register(core, pe, 2, policy=RandomPolicy()))  # the handlespace refuses
    assert reply.error.causes[0].code == CAUSE_INCONSISTENT_POLICY
    anonymous = open_session(core, "127.0.0.2")
    sends(core.message_received(anonymous, AsapRegistration(b"echo", make_pe(3, address="127.0.0.2")), 0.0))
    assert [line.split(": ", 1)[0] for line in lines] == [
        "refused register in pool echo from 127.0.0.1 (pe1)",
        "refused register in pool echo from 127.0.0.2 (anonymous)"]
    assert lines[0].endswith("; cause 0x5") and lines[1].endswith("no authenticated identity; cause 0xa")


def test_a_revoked_channels_pes_are_removed_at_once(core, pe_session):
    register(core, pe_session, 1)
    register(core, pe_session, 2)
    decisions = core.gate.revoke(identity="pe1", reason="CRL", now=1.0)
    removal = next(d for d in decisions if type(d).__name__ == "RemovePoolElements")
    out = core.remove_pool_elements(removal.admission.session, removal.reason, 1.0)
    assert sorted(o.entry.pe_id for o in out if type(o) is PoolElementRemoved) == [1, 2]
    assert len(core.handlespace) == 0
    (reply,) = sends(core.message_received(pe_session, AsapRegistration(b"echo", make_pe(3)), 2.0))
    assert reply.reject and reply.error.causes[0].code == CAUSE_SECURITY  # the channel is closing

def test_enrp_on_the_asap_port_is_refused(core, pe_session):
    """ENRP belongs on the ENRP port: an ENRP message on an ASAP channel is
    answered with ENRP_ERROR (Unrecognized Message, RFC 5354) and changes nothing."""
    from ipaddress import IPv4Address

    from rserpool.wire import EnrpError, EnrpHandleUpdate, PoolElement, TcpTransport
    from rserpool.wire.codes import CAUSE_UNRECOGNIZED_MESSAGE, UPDATE_ADD_PE

    pe = PoolElement(7, 0x99, 30, TcpTransport(7, IPv4Address("127.0.0.1")), RoundRobinPolicy())
    update = EnrpHandleUpdate(0x99, 0, UPDATE_ADD_PE, b"echo", pe)
    [reply] = sends(core.message_received(pe_session, update, 0.0))
    assert type(reply) is EnrpError and (reply.sender_id, reply.receiver_id) == (SERVER, 0x99)
    assert [c.code for c in reply.error.causes] == [CAUSE_UNRECOGNIZED_MESSAGE]
    assert reply.error.causes[0].info == update.encode()
    assert len(core.handlespace) == 0


def test_unreachable_report_about_a_pe_homed_elsewhere_is_only_logged(core):
    """A PE learned by ENRP is kept alive and removed by its home registrar."""
    from rserpool.asap.registrar import policy_settings

    core.handlespace.register(0.0, pool_handle=b"echo", pe_id=7, settings=policy_settings(RoundRobinPolicy()),
                              transport_type=5, transport_use=0,
                              registration_life=30, home_server_id=0x99)
    for n in range(5):
        pu = open_session(core, f"127.0.0.{n + 2}")
        assert core.message_received(pu, AsapEndpointUnreachable(b"echo", 7), 0.0) == []
    assert core.handlespace.get(b"echo", 7) is not None


def test_an_opaque_transport_needs_its_own_authorization():
    # Issue 12: an Opaque Transport has no address the gate can compare with
    # the channel's: "register" is not enough, "opaque-transport" is asked too.
    from rserpool.wire import OpaqueTransport, PoolElement

    core = make_core()
    pe = open_session(core, "127.0.0.1", secure=True, identity="pe1")
    element = PoolElement(5, 0, 30, OpaqueTransport(b"http://10.1.2.3/evil"), RoundRobinPolicy())
    out = core.message_received(pe, AsapRegistration(b"echo", element), 0.0)
    (ask,) = out
    assert (ask.action, ask.pool_handle) == ("register", b"echo")
    out = core.authorization_done(ask, True, 0.0)
    (ask,) = out
    assert (ask.action, ask.identity, ask.pool_handle) == ("opaque-transport", "pe1", b"echo")
    (refused,) = sends(core.authorization_done(ask, False, 0.0), pe)
    assert refused.reject and refused.error.causes[0].code == CAUSE_SECURITY
    assert len(core.handlespace) == 0
    # Remembered: the next one is refused without asking; a TCP transport is fine.
    assert sends(core.message_received(pe, AsapRegistration(b"echo", element), 1.0), pe)[0].reject
    assert not sends(register(core, pe, 6, now=1.0), pe)[0].reject
    # Allowed by name: registered.
    other = open_session(core, "127.0.0.2", secure=True, identity="pe2")
    out = core.message_received(other, AsapRegistration(b"legacy", PoolElement(
        8, 0, 30, OpaqueTransport(b"x"), RoundRobinPolicy())), 2.0)
    assert [type(o) for o in out] == [AskAuthorizer]
    out = authorize_all(core, other, out, 2.0)
    assert not sends(out, other)[0].reject
    assert core.handlespace.get(b"legacy", 8) is not None
