"""rserpool.gate beyond the decision table: identity changes and the cache,
revocation of live channels, the refusal log, bounds."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rserpool.gate import (
    CLOSING, DOOR_ADMIN, DOOR_ASAP, DOOR_PEER, OPEN, AskAuthorizer, AttemptRefused, CloseChannel, Gate, GatePolicy,
    RemovePoolElements, pool_handle_text,
)
from rserpool.identity import MECH_CERTIFICATE, MECH_CHAP, MECH_SRP, Identity
from rserpool.security.ratelimit import RateLimit

CERT = Identity.create("pe1", MECH_CERTIFICATE, attributes={"fingerprint_sha256": "aa" * 32})


def opened(gate: Gate, identity: Identity | None = None, address: str = "127.0.0.1", door: str = DOOR_ASAP):
    adm = gate.open_channel(door, address, True, 0.0)
    gate.identified(adm, identity, 0.0)
    return adm


def allow(gate: Gate, adm, action: str = "register", handle: bytes = b"echo", now: float = 0.0):
    ask = (gate.admit_change(adm, action, handle, None, now) if action != "resolve"
           else gate.admit_resolution(adm, handle, now))
    assert isinstance(ask, AskAuthorizer), ask
    assert gate.authorization_answered(ask, True, now) is None


# -- identity changes (issue 11: the cache must not outlive the identity) -------------------------


def test_an_exchange_after_anonymous_use_clears_the_remembered_decisions():
    # Anonymous resolutions of "secret" were refused and remembered; pe1 then
    # proves its identity with SRP: pe1's own answer must be asked for.
    gate = Gate(GatePolicy(authorize_resolution=True))
    adm = opened(gate)
    ask = gate.admit_resolution(adm, b"secret", 0.0)
    assert ask.identity is None
    assert gate.authorization_answered(ask, False, 0.0) == 0xA
    assert gate.admit_resolution(adm, b"secret", 0.1) == 0xA  # remembered for the anonymous channel
    assert gate.authentication_attempt(adm, "pe1", MECH_SRP, 1.0) is None
    assert gate.authenticated(adm, Identity("pe1", MECH_SRP, frozenset({"g"})), 1.0) == []
    again = gate.admit_resolution(adm, b"secret", 2.0)
    assert isinstance(again, AskAuthorizer)  # asked again, for pe1 and its groups
    assert (again.identity, again.groups) == ("pe1", frozenset({"g"}))


def test_a_second_exchange_after_success_is_refused_and_forgets_everything():
    gate = Gate(GatePolicy(allow_unauthenticated=True))
    adm = opened(gate)
    assert gate.authentication_attempt(adm, "pe1", MECH_SRP, 0.0) is None
    gate.authenticated(adm, Identity("pe1", MECH_SRP), 0.0)
    allow(gate, adm)
    assert gate.admit_change(adm, "register", b"echo", None, 1.0) is None  # remembered
    refused = gate.authentication_attempt(adm, "pe2", MECH_CHAP, 2.0)
    assert refused is not None and refused.final
    assert adm.state == CLOSING and adm.identity is None and adm.allowed == {}
    # What was already read from the channel is refused, even though
    # anonymous registrations are allowed and pe1's answer was "yes".
    assert gate.admit_change(adm, "register", b"echo", None, 2.0) == 0xA
    assert gate.authentication_failed(adm, "pe2", MECH_CHAP, "second exchange", True, 2.0) == [
        CloseChannel(adm, "second exchange")]


def test_a_failed_exchange_after_success_loses_the_identity_and_closes():
    gate = Gate(GatePolicy(allow_unauthenticated=True))
    adm = opened(gate)
    gate.authentication_attempt(adm, "pe1", MECH_SRP, 0.0)
    gate.authenticated(adm, Identity("pe1", MECH_SRP), 0.0)
    allow(gate, adm)
    out = gate.authentication_failed(adm, "pe1", MECH_SRP, "protocol violation", False, 1.0)
    assert [type(o) for o in out] == [CloseChannel]
    assert (adm.identity, adm.principal, adm.allowed, adm.state) == (None, "addr:127.0.0.1", {}, CLOSING)
    assert gate.admit_change(adm, "register", b"echo", None, 1.0) == 0xA


@pytest.mark.parametrize("second", [
    "attempt same identity", "attempt other identity", "success same identity", "success other identity",
    "failure", "final failure", "backend outage",
])
def test_every_second_exchange_or_failure_after_success_forgets_every_decision(second):
    # Issue 11/12: whatever a channel does after its exchange succeeded, the
    # decisions made for its identity are gone and nothing else is let through.
    gate = Gate(GatePolicy(allow_unauthenticated=True, authorize_resolution=True))
    adm = opened(gate)
    assert gate.authentication_attempt(adm, "pe1", MECH_SRP, 0.0) is None
    gate.authenticated(adm, Identity("pe1", MECH_SRP), 0.0)
    allow(gate, adm)
    allow(gate, adm, "resolve")
    pending = gate.admit_change(adm, "deregister", b"echo", None, 0.5)  # asked, not answered yet
    assert isinstance(pending, AskAuthorizer) and len(adm.allowed) == 2
    name = "pe2" if "other" in second else "pe1"
    if second.startswith("attempt"):
        refused = gate.authentication_attempt(adm, name, MECH_CHAP, 1.0)
        assert refused is not None and refused.final
    elif second.startswith("success"):
        assert [type(o) for o in gate.authenticated(adm, Identity(name, MECH_CHAP), 1.0)] == [CloseChannel]
    elif second == "backend outage":
        assert [type(o) for o in gate.authentication_unavailable(adm, "pe1", MECH_SRP, "down", 1.0)] \
            == [CloseChannel]
    else:
        out = gate.authentication_failed(adm, "pe1", MECH_SRP, "protocol violation", second == "final failure", 1.0)
        assert [type(o) for o in out] == [CloseChannel]
    assert (adm.identity, adm.exchanged, adm.allowed, adm.state) == (None, None, {}, CLOSING)
    assert gate.admit_change(adm, "register", b"echo", None, 2.0) == 0xA
    assert gate.admit_resolution(adm, b"echo", 2.0) == 0xA
    assert gate.authorization_answered(pending, True, 2.0) == 0xA
    assert adm.allowed == {}


def test_an_answer_for_the_previous_identity_is_not_used():
    gate = Gate()
    adm = opened(gate, CERT)
    ask = gate.admit_change(adm, "register", b"echo", None, 0.0)
    gate.authentication_attempt(adm, "pe1", MECH_SRP, 0.0)
    gate.authenticated(adm, Identity("pe1", MECH_SRP, frozenset({"other"})), 0.0)
    assert gate.authorization_answered(ask, True, 0.0) == 0xA
    assert adm.allowed == {}
    assert adm.pending == 0


def test_an_exchange_must_name_the_certificates_identity():
    gate = Gate()
    adm = opened(gate, CERT)
    refused = gate.authentication_attempt(adm, "pe2", MECH_SRP, 0.0)
    assert refused.final and adm.state == CLOSING
    assert gate.authenticated(adm, Identity("pe2", MECH_SRP), 0.0) == []  # too late: closing
    assert adm.identity is None


class CacheFollowsIdentity(RuleBasedStateMachine):
    """Whatever happens on a channel, a request is let through only on an
    answer given for the channel's present identity."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = Gate(GatePolicy(allow_unauthenticated=True, authorize_resolution=True,
                                    registration_rate=RateLimit(1e9, 1e9),
                                    registration_rate_per_address=RateLimit(1e9, 1e9),
                                    resolution_rate=RateLimit(1e9, 1e9)))
        self.adm = opened(self.gate)
        self.now = 0.0
        self.asks: list[AskAuthorizer] = []
        self.granted: set[tuple[str | None, int, str, bytes]] = set()  # (identity, epoch, action, handle)

    def tick(self) -> float:
        self.now += 0.01
        return self.now

    @rule(action=st.sampled_from(["register", "deregister", "resolve"]), handle=st.sampled_from([b"a", b"b"]))
    def request(self, action, handle):
        adm = self.adm
        key = (adm.identity, adm.epoch, action, handle)
        result = (self.gate.admit_resolution(adm, handle, self.tick()) if action == "resolve"
                  else self.gate.admit_change(adm, action, handle, None, self.tick()))
        if isinstance(result, AskAuthorizer):
            self.asks.append(result)
        elif result is None:
            assert key in self.granted, (key, self.granted)

    @precondition(lambda self: self.asks)
    @rule(index=st.integers(0, 10), answer=st.sampled_from([True, False, None]))
    def answer(self, index, answer):
        ask = self.asks.pop(index % len(self.asks))
        adm = self.adm
        fresh = ask.epoch == adm.epoch and adm.state == OPEN
        result = self.gate.authorization_answered(ask, answer, self.tick())
        if result is None:
            assert fresh and answer is True
            self.granted.add((adm.identity, adm.epoch, ask.action, ask.pool_handle))

    @rule(name=st.sampled_from(["pe1", "pe2"]), succeed=st.booleans(), final=st.booleans())
    def exchange(self, name, succeed, final):
        refused = self.gate.authentication_attempt(self.adm, name, MECH_SRP, self.tick())
        if isinstance(refused, AttemptRefused):
            self.gate.authentication_failed(self.adm, name, MECH_SRP, refused.kind, True, self.now)
        elif succeed:
            self.gate.authenticated(self.adm, Identity(name, MECH_SRP), self.tick())
        else:
            self.gate.authentication_failed(self.adm, name, MECH_SRP, "wrong", final, self.tick())

    @rule()
    def revoke(self):
        if self.adm.identity is not None:
            self.gate.revoke(identity=self.adm.identity, reason="test", now=self.tick())

    @invariant()
    def closing_channels_hold_nothing(self):
        if self.adm.state == CLOSING:
            assert self.adm.identity is None and self.adm.allowed == {}


TestCacheFollowsIdentity = CacheFollowsIdentity.TestCase
TestCacheFollowsIdentity.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


# -- revocation of live channels ------------------------------------------------------------------


def test_revoking_an_identity_closes_its_channels_and_removes_their_pes():
    gate = Gate()
    mine = [opened(gate, CERT), opened(gate, Identity("pe1", MECH_SRP), "127.0.0.2")]
    other = opened(gate, Identity("pe2", MECH_CERTIFICATE))
    out = gate.revoke(identity="pe1", reason="account removed", now=0.0)
    assert sorted((type(o).__name__, o.admission.address) for o in out) == [
        ("CloseChannel", "127.0.0.1"), ("CloseChannel", "127.0.0.2"),
        ("RemovePoolElements", "127.0.0.1"), ("RemovePoolElements", "127.0.0.2")]
    assert all(adm.state == CLOSING for adm in mine) and other.state == OPEN
    assert gate.revoke(identity="pe1", reason="again", now=1.0) == []  # once
    assert gate.stats["revoked"] == 2


def test_revoking_a_certificate_reaches_channels_still_being_identified():
    gate = Gate()
    identifying = gate.open_channel(DOOR_ASAP, "127.0.0.1", True, 0.0, fingerprint="bb" * 32)
    live = opened(gate, CERT)
    assert live.fingerprint == "aa" * 32  # from the certificate identity
    out = gate.revoke(fingerprint="bb" * 32, reason="CRL", now=0.0)
    assert out == [CloseChannel(identifying, "revoked: CRL")]
    out = gate.revoke(fingerprint="aa" * 32, reason="CRL", now=0.0)
    assert out == [RemovePoolElements(live, "CRL"), CloseChannel(live, "revoked: CRL")]
    assert gate.identified(identifying, CERT, 1.0) == []  # too late
    with pytest.raises(ValueError):
        gate.revoke(reason="nothing named", now=0.0)


def test_revoking_closes_peer_and_admin_channels_but_only_asap_channels_have_pes():
    gate = Gate()
    peer = opened(gate, Identity("reg-b.test", MECH_CERTIFICATE), "127.0.0.2", DOOR_PEER)
    admin = opened(gate, Identity("reg-b.test", MECH_CERTIFICATE), "127.0.0.3", DOOR_ADMIN)
    asap = opened(gate, Identity("reg-b.test", MECH_CERTIFICATE), "127.0.0.4")
    out = gate.revoke(identity="reg-b.test", reason="CRL", now=0.0)
    assert sorted((type(o).__name__, o.admission.door) for o in out) == [
        ("CloseChannel", DOOR_ADMIN), ("CloseChannel", DOOR_ASAP), ("CloseChannel", DOOR_PEER),
        ("RemovePoolElements", DOOR_ASAP)]
    assert peer.state == admin.state == asap.state == CLOSING


def test_connection_limits_count_from_accept_to_close():
    lines = []
    gate = Gate(GatePolicy(max_connections=3, max_connections_per_address=2),
                log=lambda level, fmt, **fields: lines.append(fmt.format(**fields)))
    first = [gate.open_channel(DOOR_ASAP, "127.0.0.1", True, 0.0) for _ in range(2)]
    assert gate.open_channel(DOOR_ASAP, "127.0.0.1", True, 0.0) is None
    assert lines[-1] == ("refused connection from 127.0.0.1 (anonymous): 2 connections open from this "
                         "address; channel closed")
    other = gate.open_channel(DOOR_PEER, "127.0.0.2", True, 0.0)
    assert gate.open_channel(DOOR_ASAP, "127.0.0.3", True, 0.0) is None
    assert lines[-1] == "refused connection from 127.0.0.3 (anonymous): 3 connections open; channel closed"
    gate.channel_closed(first[0])
    gate.channel_closed(first[0])  # once only
    assert gate.open_channel(DOOR_ASAP, "127.0.0.1", True, 0.0) is not None
    assert other in gate.channels and len(gate.channels) == 3


def test_ipv6_connections_count_per_prefix():
    # One host owns a whole /64: its addresses share one per-address limit.
    gate = Gate(GatePolicy(max_connections_per_address=2), log=lambda *a, **k: None)
    first = [gate.open_channel(DOOR_ASAP, f"2001:db8:1:2::{n}", True, 0.0) for n in (1, 2)]
    assert gate.open_channel(DOOR_ASAP, "2001:db8:1:2:ffff::3", True, 0.0) is None
    assert gate.open_channel(DOOR_ASAP, "2001:db8:1:3::1", True, 0.0) is not None
    assert gate.connections == {"2001:db8:1:2::/64": 2, "2001:db8:1:3::/64": 1}
    gate.channel_closed(first[0])
    assert gate.connections["2001:db8:1:2::/64"] == 1
    exact = Gate(GatePolicy(max_connections_per_address=1, ipv6_prefix=128), log=lambda *a, **k: None)
    assert all(exact.open_channel(DOOR_ASAP, f"2001:db8::{n}", True, 0.0) for n in (1, 2))
    with pytest.raises(ValueError):
        GatePolicy(ipv6_prefix=0)


def test_closed_channels_are_forgotten():
    gate = Gate()
    adm = opened(gate, CERT)
    gate.channel_closed(adm)
    assert adm not in gate.channels and adm.state == CLOSING
    assert gate.revoke(identity="pe1", reason="x", now=0.0) == []


# -- doors --------------------------------------------------------------------------------------


def test_unknown_door_is_an_error_and_known_ones_are_canonical():
    gate = Gate()
    with pytest.raises(ValueError, match="unknown door"):
        gate.open_channel("telnet", "127.0.0.1", True, 0.0)
    door = "".join(["pe", "er"])  # an equal string that is another object
    assert gate.open_channel(door, "127.0.0.1", True, 0.0).door is DOOR_PEER


def test_peer_and_admin_doors_serve_only_their_action():
    gate = Gate()
    peer = opened(gate, CERT, door=DOOR_PEER)
    admin = opened(gate, CERT, door=DOOR_ADMIN)
    assert gate.admit(peer, "admin", b"", 0.0) == 0x2
    assert gate.admit(admin, "peer", b"", 0.0) == 0x2
    assert gate.admit_resolution(peer, b"echo", 0.0) == 0x2
    assert gate.admit_report(admin, b"echo", 0.0) == 0x2
    assert isinstance(gate.admit(peer, "peer", b"", 0.0), AskAuthorizer)


# -- bounds -------------------------------------------------------------------------------------


def test_remembered_decisions_are_bounded_per_channel():
    gate = Gate(GatePolicy(max_cached_decisions=3, registration_rate=RateLimit(1e9, 1e9)))
    adm = opened(gate, CERT)
    for number in range(5):
        allow(gate, adm, handle=b"pool%d" % number)
    assert len(adm.allowed) == 3


def test_pending_authorizations_are_bounded_and_released():
    gate = Gate(GatePolicy(max_pending_per_channel=2))
    adm = opened(gate, CERT)
    asks = [gate.admit_change(adm, "register", b"p%d" % n, None, 0.0) for n in range(2)]
    assert gate.admit_change(adm, "register", b"p9", None, 0.0) == 0x6
    gate.authorization_answered(asks[0], True, 0.0)
    assert isinstance(gate.admit_change(adm, "register", b"p9", None, 0.0), AskAuthorizer)


# -- the refusal log ------------------------------------------------------------------------------


def test_refusals_over_the_log_rate_are_counted_and_reported_with_the_next_line():
    lines = []
    policy = replace(GatePolicy(), refusal_log_per_address=RateLimit(rate=1.0, burst=2.0),
                     refusal_log_total=RateLimit(rate=100.0, burst=100.0))
    gate = Gate(policy, log=lambda level, fmt, **fields: lines.append(fmt.format(**fields)))
    anonymous = opened(gate)
    for _ in range(50):  # a flood from one address
        assert gate.admit_change(anonymous, "register", b"echo", None, 0.0) == 0xA
    assert len(lines) == 2 and gate.refused[0xA] == 50
    assert gate.refusals.suppressed == 48
    gate.admit_change(anonymous, "register", b"echo", None, 1.5)  # a token back
    assert lines[-1].endswith("; cause 0xa (48 more refusals not logged)")
    assert gate.refusals.suppressed == 0


def test_pool_handles_are_written_one_way():
    assert pool_handle_text(b"echo") == "echo"
    assert pool_handle_text(b"\xff\x00") == "hex:ff00"
    assert pool_handle_text(b"a\nb") == "hex:610a62"
    assert pool_handle_text("gr\u00fc\u00df".encode()) == "gr\u00fc\u00df"


def test_open_anonymous_asap_channels_are_counted_through_every_change():
    # The reserve for channels with an identity (issue 12) rests on this count.
    gate = Gate(GatePolicy(max_connections=10))
    assert gate.anonymous_limit == 9
    anonymous = [opened(gate, address=f"127.0.0.{n}") for n in range(1, 4)]
    opened(gate, CERT, address="127.0.0.9")
    opened(gate, CERT, door=DOOR_PEER)
    assert gate.anonymous == 3
    assert gate.authentication_attempt(anonymous[0], "pe1", MECH_SRP, 1.0) is None
    gate.authenticated(anonymous[0], Identity("pe1", MECH_SRP), 1.0)
    assert gate.anonymous == 2  # it has an identity now
    gate.authentication_failed(anonymous[0], "pe1", MECH_SRP, "after success", True, 2.0)
    assert gate.anonymous == 2  # closing: neither anonymous nor counted
    gate.channel_closed(anonymous[1], 3.0)
    gate.channel_closed(anonymous[1], 3.0)
    assert gate.anonymous == 1
    gate.channel_closed(anonymous[0], 3.0)
    gate.channel_closed(anonymous[2], 3.0)
    assert gate.anonymous == 0


def test_an_ipv6_prefix_is_one_source_for_failure_budgets_and_anonymous_rates():
    # One host owns a /64 (issue 12): rotating addresses inside it gets no
    # fresh budget.
    from rserpool.security.ratelimit import AttemptLimit

    gate = Gate(GatePolicy(attempts_per_address=AttemptLimit(capacity=2, refill_interval=1e9),
                           resolution_rate=RateLimit(1e-9, 2)))
    for n in range(2):
        adm = opened(gate, address=f"2001:db8:1:2::{n + 1}")
        assert gate.authentication_attempt(adm, f"pe{n}", MECH_SRP, 0.0) is None
        gate.authentication_failed(adm, f"pe{n}", MECH_SRP, "wrong", True, 0.0)
    other_host = opened(gate, address="2001:db8:1:2::ff")
    assert gate.authentication_attempt(other_host, "pe9", MECH_SRP, 0.0).kind == "too many failed attempts from this address"
    elsewhere = opened(gate, address="2001:db8:1:3::1")
    assert gate.authentication_attempt(elsewhere, "pe9", MECH_SRP, 0.0) is None
    resolvers = [opened(gate, address=f"2001:db8:9:9::{n + 1}") for n in range(3)]
    assert [gate.admit_resolution(adm, b"echo", 0.0) for adm in resolvers] == [None, None, 0x6]
