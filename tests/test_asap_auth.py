"""The sans-IO glue: ServerAuth and ClientAuth over the wire messages, ``now`` passed in."""

from __future__ import annotations

import pytest

from rserpool.asap import auth
from rserpool.asap.auth import (
    AuthFailed, Authenticated, AuthenticationFailed, AuthSucceeded, ClientAuth, LookupSrp,
    SendMessage, ServerAuth, VerifyChap,
)
from rserpool.security import exchange as ex
from rserpool.security.chap import verify_locally
from rserpool.security.srp import make_verifier
from rserpool.wire import AsapError, codes, decode_message, error_reply
from rserpool.wire.auth import (
    AsapAuthChapResponse, AsapAuthFailure, AsapAuthHello, AsapAuthRequest, AsapAuthSrpProof,
    AsapAuthSuccess,
)

CB = bytes(range(32))
OTHER_CB = bytes(range(1, 33))
SECRET = b"registrar secret for fake salts"
SRP = ex.MECH_SRP_SHA256_2048
CHAP = ex.MECH_CHAP_MD5

SRP_ENTRIES = {"pe1": make_verifier("pe1", "correct horse")}
CHAP_SECRETS = {"pe2": b"chap secret of pe2"}


def wire(message):
    """Every message crosses the codec, as on a real channel."""
    return decode_message(message.encode(), codes.PPID_ASAP)


class Run:
    """Drives a ServerAuth and a ClientAuth against each other."""

    def __init__(self, server: ServerAuth, client: ClientAuth, now: float = 100.0) -> None:
        self.server, self.client, self.now = server, client, now
        self.to_server: list = []
        self.to_client: list = []
        self.server_results: list = []
        self.client_results: list = []
        self.lookups = 0
        self.chap_checks: list[VerifyChap] = []

    def server_events(self, events) -> None:
        for event in events:
            if type(event) is SendMessage:
                self.to_client.append(wire(event.message))
            elif type(event) is LookupSrp:
                self.lookups += 1
                self.server_events(self.server.srp_entry(SRP_ENTRIES.get(event.identity), self.now))
            elif type(event) is VerifyChap:
                self.chap_checks.append(event)
                verdict = verify_locally(CHAP_SECRETS.get(event.identity), event)
                self.server_events(self.server.chap_verified(verdict, self.now))
            else:
                self.server_results.append(event)

    def client_events(self, events) -> None:
        for event in events:
            if type(event) is SendMessage:
                self.to_server.append(wire(event.message))
            else:
                self.client_results.append(event)

    def go(self):
        self.to_client_log: list = []
        self.client_events((self.client.start(),))
        for _ in range(20):
            if self.to_server:
                self.server_events(self.server.receive(self.to_server.pop(0), self.now))
            elif self.to_client:
                msg = self.to_client.pop(0)
                self.to_client_log.append(msg)
                self.client_events(self.client.receive(msg, self.now))
            else:
                break
        return self


def server(cb=CB, **kw) -> ServerAuth:
    return ServerAuth(cb, SECRET, 100.0, address="127.0.0.1", **kw)


def client(identity, secret, cb=CB, **kw) -> ClientAuth:
    return ClientAuth(identity, secret, cb, 100.0, **kw)


def test_srp_success():
    run = Run(server(), client("pe1", "correct horse")).go()
    assert run.client_results == [Authenticated(SRP)]
    assert run.server_results == [AuthSucceeded("pe1", SRP)]
    assert run.server.identity == "pe1" and run.server.mechanism == SRP
    assert run.lookups == 1
    assert run.server.deadline is None


def test_chap_success_and_preferences():
    run = Run(server(), client("pe2", b"chap secret of pe2", preferences=(CHAP, SRP))).go()
    assert run.client_results == [Authenticated(CHAP)]
    assert run.server_results == [AuthSucceeded("pe2", CHAP)]
    assert run.lookups == 0  # CHAP never reads the SRP store
    assert len(run.chap_checks) == 1 and len(run.chap_checks[0].challenge) == 16


def test_wrong_password_is_refused_and_may_be_retried():
    run = Run(server(), client("pe1", "wrong")).go()
    assert run.server_results[0].final is False
    assert run.server.identity is None
    failed = run.client_results[-1]
    assert type(failed) is AuthenticationFailed
    assert failed.code == ex.FAIL_AUTHENTICATION and failed.may_retry and not failed.unsupported


@pytest.mark.parametrize("mechanism", [SRP, CHAP])
def test_unknown_identity_looks_like_a_wrong_secret(mechanism):
    CHAP_SECRETS["pe1"] = b"chap secret of pe1"
    try:
        wrong = _collect_with("pe1", "wrong", (mechanism,))
        unknown = _collect_with("nobody", "wrong", (mechanism,))
    finally:
        CHAP_SECRETS.pop("pe1")
    assert wrong[0] == unknown[0]  # message types, sizes and flags
    assert wrong[1] == unknown[1]  # the failure bytes themselves
    assert wrong[2] == unknown[2]


def _collect_with(identity, password, prefs):
    run = Run(server(), client(identity, password, preferences=prefs))
    run.go()
    return ([(m.name, len(m.encode()), m.flags) for m in run.to_client_log],
            [m.encode() for m in run.to_client_log if type(m) is AsapAuthFailure],
            run.client_results)


@pytest.mark.parametrize("prefs", [(SRP,), (CHAP,)])
def test_other_channel_binding_fails(prefs):
    """A client on another TLS channel (a relay) cannot complete the exchange."""
    identity, secret = ("pe1", "correct horse") if prefs == (SRP,) else ("pe2", b"chap secret of pe2")
    run = Run(server(cb=CB), client(identity, secret, cb=OTHER_CB, preferences=prefs)).go()
    assert run.server.identity is None
    assert type(run.server_results[0]) is AuthFailed
    assert type(run.client_results[-1]) is AuthenticationFailed
    assert run.client_results[-1].code == ex.FAIL_AUTHENTICATION


def test_replayed_chap_response_is_rejected():
    first = Run(server(), client("pe2", b"chap secret of pe2", preferences=(CHAP,))).go()
    assert first.client_results == [Authenticated(CHAP)]
    captured = next(m for m in first.to_client_log if m.name == "ASAP_AUTH_CHAP_CHALLENGE")
    response = AsapAuthChapResponse(captured.identifier,
                                    first.chap_checks[0].response)
    # Same channel: the challenge is single use (success closed the exchange).
    again = first.server.receive(response, 101.0)
    assert any(type(e) is AuthFailed and e.final for e in again)
    # A new channel (same binding even): a new challenge, the old response fails.
    second = server()
    second.receive(AsapAuthRequest(), 100.0)
    events = second.receive(AsapAuthHello(CHAP, "pe2"), 100.0)
    assert [type(e.message).__name__ for e in events] == ["AsapAuthChapChallenge"]
    # The attacker copies the new identifier; only the 16-byte response is old.
    response = AsapAuthChapResponse(events[0].message.identifier, response.response)
    check = second.receive(response, 100.0)
    assert len(check) == 1 and type(check[0]) is VerifyChap
    verdict = verify_locally(CHAP_SECRETS["pe2"], check[0])
    result = second.chap_verified(verdict, 100.0)
    assert not verdict.ok
    assert [type(e) for e in result] == [SendMessage, AuthFailed]
    assert result[0].message.code == ex.FAIL_AUTHENTICATION
    assert second.identity is None


def test_replayed_srp_proof_is_rejected():
    # Capture a proof by running a client step by step.
    s1 = server()
    c1 = client("pe1", "correct horse")
    c1.start()
    offer = s1.receive(AsapAuthRequest(), 100.0)[0].message
    hello = c1.receive(wire(offer), 100.0)[0].message
    lookup = s1.receive(wire(hello), 100.0)
    challenge = s1.srp_entry(SRP_ENTRIES["pe1"], 100.0)[0].message
    proof = c1.receive(wire(challenge), 100.0)[0].message
    assert type(proof) is AsapAuthSrpProof and type(lookup[0]) is LookupSrp
    # Replay it into a fresh exchange on a new channel: fresh b, so it fails.
    s2 = server()
    s2.receive(AsapAuthRequest(), 100.0)
    s2.receive(wire(hello), 100.0)
    s2.srp_entry(SRP_ENTRIES["pe1"], 100.0)
    events = s2.receive(wire(proof), 100.0)
    assert [type(e) for e in events] == [SendMessage, AuthFailed]
    assert s2.identity is None


def test_certificate_identity_takes_precedence():
    other = Run(server(certificate_identity="pe9"), client("pe1", "correct horse")).go()
    assert other.server.identity is None
    assert other.server_results[0].final and "certificate" in other.server_results[0].reason_for_log
    same = Run(server(certificate_identity="pe1"), client("pe1", "correct horse")).go()
    assert same.server_results == [AuthSucceeded("pe1", SRP)]


def test_attempts_per_session_are_bounded():
    s = server(max_attempts=2)
    s.receive(AsapAuthRequest(), 100.0)
    results = []
    for _ in range(3):
        (challenge,) = s.receive(AsapAuthHello(CHAP, "pe2"), 100.0)
        identifier = challenge.message.identifier
        for event in s.receive(AsapAuthChapResponse(identifier, b"\x00" * 16), 100.0):
            if type(event) is VerifyChap:
                results.extend(s.chap_verified(verify_locally(b"x", event), 100.0))
            else:
                results.append(event)
        if s.state == "done":
            break
    failures = [e for e in results if type(e) is AuthFailed]
    assert [f.final for f in failures] == [False, True]
    assert s.receive(AsapAuthHello(CHAP, "pe2"), 100.0) == ()


def test_attempts_per_identity_are_bounded_across_channels():
    limiter = ex.AttemptLimiter(capacity=2, refill_interval=60.0)
    codes_seen = []
    lookups = []
    for _ in range(3):
        run = Run(server(limiter=limiter), client("pe1", "wrong", preferences=(SRP,))).go()
        codes_seen.append(run.client_results[-1].code)
        lookups.append(run.lookups)
    assert codes_seen == [ex.FAIL_AUTHENTICATION, ex.FAIL_AUTHENTICATION, ex.FAIL_RATE_LIMITED]
    assert lookups == [1, 1, 0]  # no store access once limited
    # The right password is limited too until a token refills (no oracle).
    run = Run(server(limiter=limiter), client("pe1", "correct horse")).go()
    assert run.client_results[-1].code == ex.FAIL_RATE_LIMITED
    run = Run(server(limiter=limiter), client("pe1", "correct horse"), now=161.0).go()
    assert run.client_results == [Authenticated(SRP)]


def test_attempts_per_address_are_bounded():
    limiter = ex.AttemptLimiter(capacity=2, refill_interval=60.0)
    results = []
    for name in ("a", "b", "c"):
        run = Run(server(address_limiter=limiter), client(name, "x")).go()
        results.append(run.client_results[-1].code)
    assert results == [ex.FAIL_AUTHENTICATION, ex.FAIL_AUTHENTICATION, ex.FAIL_RATE_LIMITED]


def test_store_and_backend_outages_fail_closed():
    s = server()
    s.receive(AsapAuthRequest(), 100.0)
    assert type(s.receive(AsapAuthHello(SRP, "pe1"), 100.0)[0]) is LookupSrp
    events = s.store_unavailable("file unreadable", 100.0)
    assert events[0].message == AsapAuthFailure(ex.FAIL_UNAVAILABLE, False)
    assert events[0].message.error.causes[0].code == codes.CAUSE_SECURITY
    assert events[1].final and "unavailable" in events[1].reason_for_log
    assert s.srp_entry(SRP_ENTRIES["pe1"], 100.0) == ()  # late answer ignored

    s = server()
    s.receive(AsapAuthRequest(), 100.0)
    (challenge,) = s.receive(AsapAuthHello(CHAP, "pe2"), 100.0)
    (check,) = s.receive(AsapAuthChapResponse(challenge.message.identifier, b"\x01" * 16), 100.0)
    assert type(check) is VerifyChap
    events = s.chap_unavailable("RADIUS timeout", 100.0)
    assert events[0].message.code == ex.FAIL_UNAVAILABLE and events[1].final
    assert s.identity is None


def test_timers():
    s = server(step_lifetime=10.0)
    s.receive(AsapAuthRequest(), 100.0)
    s.receive(AsapAuthHello(CHAP, "pe2"), 100.0)
    assert s.deadline == 110.0
    assert s.timer_expired(109.0) == ()
    events = s.timer_expired(110.0)
    assert events[0].message.code == ex.FAIL_TIMEOUT

    s = server(exchange_lifetime=5.0)
    s.receive(AsapAuthRequest(), 100.0)
    s.receive(AsapAuthHello(SRP, "pe1"), 100.0)  # lookup pending
    assert s.timer_expired(106.0)[0].message.code == ex.FAIL_UNAVAILABLE

    c = client("pe1", "pw", timeout=30.0)
    c.start()
    assert c.deadline == 130.0
    assert c.timer_expired(129.0) == ()
    (failed,) = c.timer_expired(130.0)
    assert type(failed) is AuthenticationFailed and c.deadline is None


def test_protocol_errors_are_final():
    s = server()
    events = s.receive(AsapAuthHello(SRP, "pe1"), 100.0)  # no request first
    assert events[0].message.code == ex.FAIL_PROTOCOL and events[1].final
    s = server()
    s.receive(AsapAuthRequest(), 100.0)
    events = s.receive(AsapAuthSuccess(CHAP), 100.0)  # a registrar's message
    assert events[0].message.code == ex.FAIL_PROTOCOL and events[1].final
    s = server()
    s.receive(AsapAuthRequest(), 100.0)
    assert s.receive(AsapAuthRequest(), 100.0)[1].final


def test_success_then_more_messages_closes():
    run = Run(server(), client("pe1", "correct horse")).go()
    events = run.server.receive(AsapAuthHello(SRP, "pe1"), 101.0)
    assert any(type(e) is AuthFailed and e.final for e in events)
    assert run.server.identity is None


def test_rfc_only_registrar_means_unsupported():
    c = client("pe1", "pw")
    request = c.start().message
    from rserpool.wire import WireError
    report = error_reply(WireError(codes.CAUSE_UNRECOGNIZED_MESSAGE, "unknown", request.encode()),
                         codes.PPID_ASAP)
    (failed,) = c.receive(wire(report), 100.0)
    assert failed.unsupported and "does not support" in failed.reason
    c = client("pe1", "pw")
    c.start()
    other = AsapError(error_reply(WireError(codes.CAUSE_INVALID_VALUES, "x", b"\x01"),
                                  codes.PPID_ASAP).error)
    (failed,) = c.receive(other, 100.0)
    assert not failed.unsupported


def test_channel_refusal_reaches_the_client_with_its_code():
    events = auth.channel_refusal("TLSv1.2 without extended master secret")
    assert events[1].final
    c = client("pe1", "pw")
    c.start()
    (failed,) = c.receive(wire(events[0].message), 100.0)
    assert failed.code == auth.FAIL_CHANNEL_BINDING and "TLS" in failed.reason


def test_no_common_mechanism():
    run = Run(server(mechanisms=(CHAP,)), client("pe1", "pw", preferences=(SRP,))).go()
    assert type(run.client_results[-1]) is AuthenticationFailed
    assert "no common mechanism" in run.client_results[-1].reason


def test_conversions_cover_every_message():
    for msg in (ex.MechanismOffer((SRP,)), ex.ClientHello(SRP, "x"),
                ex.SrpChallenge(b"s" * 16, b"B" * 256), ex.SrpProof(b"A" * 256, b"M" * 32),
                ex.ChapChallenge(1, b"n" * 32), ex.ChapResponse(1, b"r" * 16),
                ex.AuthSuccess(CHAP, b""), ex.AuthFailure(3, False)):
        assert auth.from_wire(auth.to_wire(msg)) == msg
    with pytest.raises(TypeError):
        auth.to_wire(object())
