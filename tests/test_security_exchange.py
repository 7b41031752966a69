"""The SRP/CHAP exchange state machines over the wire messages, both sides,
with the real checkers answering (``now`` passed in, no reactor)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.cred.error import UnauthorizedLogin
from twisted.python.failure import Failure

from rserpool.errors import BackendUnavailable
from rserpool.identity import Identity, normalize_identity
from rserpool.outputs import Send
from rserpool.security import srp
from rserpool.security.credentials import Authenticator, ChapChecker, SrpChecker
from rserpool.security.exchange import (
    FAIL_AUTHENTICATION, FAIL_CHANNEL_BINDING, FAIL_PROTOCOL, FAIL_RATE_LIMITED, FAIL_TIMEOUT,
    FAIL_UNAVAILABLE, FAIL_UNSUPPORTED_MECHANISM, MECH_CHAP_MD5, MECH_SRP_SHA256_2048, Admit, AuthFailed,
    Authenticated, AuthenticationFailed, AuthSucceeded, AuthUnavailable, ClientExchange, ServerExchange,
    StartSrp, Verify, channel_refusal,
)
from rserpool.testing import MemoryChapStore, MemorySrpStore
from rserpool.wire import AsapError, WireError, codes, decode_message, error_reply
from rserpool.wire.auth import (
    AsapAuthChapResponse, AsapAuthFailure, AsapAuthHello, AsapAuthOffer, AsapAuthRequest, AsapAuthSrpProof,
    AsapAuthSuccess,
)

CB = b"\xaa" * 32
CB_OTHER = b"\xbb" * 32
SERVER_SECRET = b"server-secret-0123456789"
SRP, CHAP = MECH_SRP_SHA256_2048, MECH_CHAP_MD5


def wire(message):
    """Every message crosses the codec, as on a real channel."""
    return decode_message(message.encode(), codes.PPID_ASAP)


def result(d):
    out = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    return out[0]


class Checkers:
    """The registrar's checkers over in-memory stores."""

    def __init__(self) -> None:
        self.srp_store = MemorySrpStore({"pe1": "pe1-password"})
        self.chap_store = MemoryChapStore({"pe1": b"pe1-secret", "pe2": b"chap secret of pe2"})
        self.srp = SrpChecker(self.srp_store, SERVER_SECRET)
        self.authenticator = Authenticator([self.srp, ChapChecker(self.chap_store)])


class Run:
    """Pumps messages between a ServerExchange and a ClientExchange, answering
    the server's questions: the gate (``admit``: None, or (code, final)) and
    the checkers."""

    def __init__(self, server: ServerExchange, client: ClientExchange, checkers: Checkers | None = None,
                 now: float = 100.0, admit=None) -> None:
        self.server, self.client = server, client
        self.checkers = checkers or Checkers()
        self.now = now
        self.admit = admit
        self.to_server: list = []
        self.to_client: list = []
        self.transcript: list = []
        self.server_results: list = []
        self.client_results: list = []
        self.verified: list = []

    def server_events(self, events) -> None:
        now = self.now
        for event in events:
            kind = type(event)
            if kind is Send:
                self.to_client.append(wire(event.message))
            elif kind is Admit:
                refusal = self.admit(event) if self.admit is not None else None
                self.server_events(self.server.attempt_admitted(now) if refusal is None
                                   else self.server.attempt_refused(*refusal, "refused by the test", now))
            elif kind is StartSrp:
                answer = result(self.checkers.srp.challenge(event.identity, event.channel_binding))
                self.server_events(self.answer(answer, self.server.challenge_issued))
            elif kind is Verify:
                self.verified.append(event.credentials)
                answer = result(self.checkers.authenticator.authenticate(event.credentials, event.mechanism))
                self.server_events(self.answer(answer, self.server.verified))
            else:
                self.server_results.append(event)

    def answer(self, answer, success):
        if isinstance(answer, Failure):
            if answer.check(UnauthorizedLogin):
                return self.server.rejected("refused", self.now)
            return self.server.unavailable(answer.getErrorMessage(), self.now)
        return success(answer, self.now)

    def client_events(self, events) -> None:
        for event in events:
            if type(event) is Send:
                self.to_server.append(wire(event.message))
            else:
                self.client_results.append(event)

    def go(self, pipelined: bool = False) -> "Run":
        self.client_events(self.client.start_pipelined() if pipelined else (self.client.start(),))
        for _ in range(40):
            if self.to_server:
                message = self.to_server.pop(0)
                self.transcript.append(message)
                self.server_events(self.server.receive(message, self.now))
            elif self.to_client:
                message = self.to_client.pop(0)
                self.transcript.append(message)
                self.client_events(self.client.receive(message, self.now))
            else:
                break
        return self


def server(cb: bytes = CB, now: float = 100.0, **kw) -> ServerExchange:
    return ServerExchange(cb, now, **kw)


def client(identity: str, secret, cb: bytes = CB, now: float = 100.0, **kw) -> ClientExchange:
    return ClientExchange(identity, secret, cb, now, **kw)


def messages(events) -> list:
    return [e.message for e in events if type(e) is Send]


@pytest.mark.parametrize("mechanism, secret", [(SRP, "pe1-password"), (CHAP, b"pe1-secret")])
def test_full_exchange_succeeds(mechanism, secret):
    run = Run(server(), client("pe1", secret, preferences=(mechanism,))).go()
    assert run.client_results == [Authenticated(mechanism)]
    assert [type(r) for r in run.server_results] == [AuthSucceeded]
    identity = run.server_results[0].identity
    assert (identity.name, identity.mechanism) == ("pe1", mechanism)
    assert run.server.identity == identity and run.server.deadline is None
    assert [m.name for m in run.transcript] == (
        ["ASAP_AUTH_REQUEST", "ASAP_AUTH_OFFER", "ASAP_AUTH_HELLO",
         "ASAP_AUTH_SRP_CHALLENGE" if mechanism == SRP else "ASAP_AUTH_CHAP_CHALLENGE",
         "ASAP_AUTH_SRP_PROOF" if mechanism == SRP else "ASAP_AUTH_CHAP_RESPONSE", "ASAP_AUTH_SUCCESS"])


def test_the_credentials_are_twisted_cred_credentials():
    from twisted.cred.credentials import ICredentials
    from zope.interface.verify import verifyObject

    from rserpool.interfaces import IChapCredentials, ISrpCredentials

    for mechanism, secret, interface in ((SRP, "pe1-password", ISrpCredentials),
                                         (CHAP, b"pe1-secret", IChapCredentials)):
        run = Run(server(), client("pe1", secret, preferences=(mechanism,))).go()
        (credentials,) = run.verified
        assert ICredentials.providedBy(credentials) and verifyObject(interface, credentials)


def test_client_picks_its_first_preference_that_is_offered():
    run = Run(server(mechanisms=(CHAP,)), client("pe1", b"pe1-secret")).go()  # prefers SRP
    assert run.client_results == [Authenticated(CHAP)]


def test_no_common_mechanism():
    run = Run(server(mechanisms=(CHAP,)), client("pe1", "pw", preferences=(SRP,))).go()
    assert run.client_results == [AuthenticationFailed("no common mechanism")]


@pytest.mark.parametrize("mechanism, secret", [(SRP, "pe1-password"), (CHAP, b"pe1-secret")])
def test_relay_across_tls_sessions_fails(mechanism, secret):
    """A client on another TLS channel (a relay) cannot complete the exchange."""
    run = Run(server(cb=CB), client("pe1", secret, cb=CB_OTHER, preferences=(mechanism,))).go()
    assert [type(r) for r in run.server_results] == [AuthFailed]
    assert run.client_results[-1].code == FAIL_AUTHENTICATION
    assert run.server.identity is None


@pytest.mark.parametrize("mechanism", [SRP, CHAP])
def test_wrong_secret_fails_and_may_be_retried(mechanism):
    run = Run(server(), client("pe1", "not-it", preferences=(mechanism,))).go()
    (failed,) = run.server_results
    assert type(failed) is AuthFailed and failed.final is False and failed.identity == "pe1"
    assert run.client_results == [AuthenticationFailed(
        "authentication refused (wrong secret or unknown identity)", FAIL_AUTHENTICATION, True)]


@pytest.mark.parametrize("mechanism", [SRP, CHAP])
def test_unknown_identity_looks_like_a_wrong_secret(mechanism):
    runs = {name: Run(server(), client(name, "wrong-password", preferences=(mechanism,))).go()
            for name in ("pe1", "pe9")}  # pe9 is unknown; same length
    shapes = {name: [(m.name, len(m.encode()), m.flags) for m in run.transcript if m.name != "ASAP_AUTH_HELLO"]
              for name, run in runs.items()}
    assert shapes["pe1"] == shapes["pe9"]
    failures = {name: [m.encode() for m in run.transcript if type(m) is AsapAuthFailure]
                for name, run in runs.items()}
    assert failures["pe1"] == failures["pe9"]
    assert runs["pe1"].client_results == runs["pe9"].client_results


def test_a_replayed_srp_proof_is_rejected():
    first = Run(server(), client("pe1", "pe1-password", preferences=(SRP,))).go()
    proof = next(m for m in first.transcript if type(m) is AsapAuthSrpProof)
    checkers = Checkers()
    second = server()
    second.receive(AsapAuthRequest(), 100.0)
    run = Run(second, client("pe1", "x"), checkers)
    run.server_events(second.receive(AsapAuthHello(SRP, "pe1"), 100.0))  # a fresh b
    run.server_events(second.receive(proof, 100.0))
    assert [type(r) for r in run.server_results] == [AuthFailed]
    assert [m.name for m in run.to_client] == ["ASAP_AUTH_SRP_CHALLENGE", "ASAP_AUTH_FAILURE"]
    assert run.to_client[-1].code == FAIL_AUTHENTICATION


def test_a_replayed_chap_response_is_rejected():
    first = Run(server(), client("pe2", b"chap secret of pe2", preferences=(CHAP,))).go()
    response = next(m for m in first.transcript if type(m) is AsapAuthChapResponse)
    # The same channel: the challenge is single use, and success ended the exchange.
    again = first.server.receive(response, 101.0)
    assert type(again[-1]) is AuthFailed and again[-1].final
    # A new channel: a new challenge; the attacker copies its identifier, the response is old.
    second = server()
    second.receive(AsapAuthRequest(), 100.0)
    run = Run(second, client("pe2", b"x"))
    run.server_events(second.receive(AsapAuthHello(CHAP, "pe2"), 100.0))
    challenge = run.to_client.pop()
    run.server_events(second.receive(AsapAuthChapResponse(challenge.identifier, response.response), 100.0))
    assert [type(r) for r in run.server_results] == [AuthFailed]
    assert second.identity is None


def test_a_chap_response_twice_in_one_exchange_is_a_protocol_error():
    run = Run(server(), client("pe1", b"pe1-secret", preferences=(CHAP,))).go()
    response = next(m for m in run.transcript if type(m) is AsapAuthChapResponse)
    events = run.server.receive(response, 100.0)
    assert messages(events) == [AsapAuthFailure(FAIL_PROTOCOL, False)] and events[-1].final


@pytest.mark.parametrize("value", ["zero", "N"])
def test_srp_a_zero_or_n_is_rejected(value):
    s = server()
    run = Run(s, client("pe1", "x"))
    s.receive(AsapAuthRequest(), 100.0)
    run.server_events(s.receive(AsapAuthHello(SRP, "pe1"), 100.0))
    number = 0 if value == "zero" else srp.DEFAULT_GROUP.n
    run.server_events(s.receive(AsapAuthSrpProof(number.to_bytes(256, "big"), b"\x00" * 32), 100.0))
    assert [m.code for m in run.to_client[1:]] == [FAIL_AUTHENTICATION]
    assert [type(r) for r in run.server_results] == [AuthFailed]


def test_attempts_per_exchange_are_bounded():
    s = server(max_attempts=2)
    run = Run(s, client("pe1", "x"))
    s.receive(AsapAuthRequest(), 100.0)
    for _ in range(2):
        run.server_events(s.receive(AsapAuthHello(CHAP, "pe1"), 100.0))
        challenge = run.to_client.pop()
        run.server_events(s.receive(AsapAuthChapResponse(challenge.identifier, b"\x00" * 16), 100.0))
    assert [r.final for r in run.server_results] == [False, True]
    assert s.state == "closed" and s.receive(AsapAuthHello(CHAP, "pe1"), 100.0) == ()


def test_the_gate_refuses_an_attempt_before_any_credential_work():
    checkers = Checkers()
    # Not final (the identity's budget is spent): the client may try again later.
    run = Run(server(), client("pe1", "pe1-password"), checkers,
              admit=lambda event: (FAIL_RATE_LIMITED, False)).go()
    assert run.client_results[-1].code == FAIL_RATE_LIMITED
    assert checkers.srp_store.asked == [] and run.verified == []
    # Final (the address's budget is spent, another identity than the certificate's).
    run = Run(server(), client("pe1", "pe1-password"), admit=lambda event: (FAIL_AUTHENTICATION, True)).go()
    assert run.server_results[-1].final and run.server.state == "closed"
    assert run.client_results[-1] == AuthenticationFailed(
        "authentication refused (wrong secret or unknown identity)", FAIL_AUTHENTICATION, False)


def test_the_gate_is_asked_with_the_normalized_identity():
    asked = []
    Run(server(), client("pe\uff11", "pe1-password"), admit=lambda event: asked.append(event)).go()
    assert asked == [Admit("pe1", SRP)]  # NFKC: the fullwidth digit is "1"


@pytest.mark.parametrize("mechanism", [SRP, CHAP])
def test_a_backend_outage_is_not_a_credential_failure(mechanism):
    checkers = Checkers()
    checkers.srp_store.fail()
    checkers.chap_store.fail()
    secret = "pe1-password" if mechanism == SRP else b"pe1-secret"
    run = Run(server(), client("pe1", secret, preferences=(mechanism,)), checkers).go()
    assert [type(r) for r in run.server_results] == [AuthUnavailable]
    assert run.server_results[0].identity == "pe1"
    (failure,) = [m for m in run.transcript if type(m) is AsapAuthFailure]
    assert (failure.code, failure.may_retry) == (FAIL_UNAVAILABLE, False)
    assert failure.error.causes[0].code == codes.CAUSE_SECURITY
    assert run.server.state == "closed"


def test_a_checker_answering_for_another_name_is_refused():
    s = server()
    run = Run(s, client("pe1", b"x"))
    s.receive(AsapAuthRequest(), 100.0)
    run.server_events(s.receive(AsapAuthHello(CHAP, "pe1"), 100.0))
    challenge = run.to_client.pop()
    (verify,) = s.receive(AsapAuthChapResponse(challenge.identifier, b"\x00" * 16), 100.0)
    events = s.verified(Identity("pe2", CHAP), 100.0)
    assert messages(events) == [AsapAuthFailure(FAIL_AUTHENTICATION, True)]
    assert s.identity is None


def test_expired_challenges_and_timers():
    s = server(now=0.0, step_lifetime=10.0, exchange_lifetime=100.0)
    assert s.deadline is None  # nothing started yet
    s.receive(AsapAuthRequest(), 0.0)
    assert s.deadline == 100.0
    (admit,) = s.receive(AsapAuthHello(CHAP, "pe1"), 1.0)
    challenge = messages(s.attempt_admitted(1.0))[0]
    assert s.deadline == 11.0 and s.timer_expired(5.0) == ()
    events = s.receive(AsapAuthChapResponse(challenge.identifier, b"\x00" * 16), 11.5)
    assert messages(events) == [AsapAuthFailure(FAIL_TIMEOUT, True)]  # expired, may retry
    s.receive(AsapAuthHello(SRP, "pe1"), 20.0)
    (start,) = s.attempt_admitted(20.0)
    assert type(start) is StartSrp
    events = s.timer_expired(30.0)  # the challenge never came: the backend is stuck
    assert messages(events) == [AsapAuthFailure(FAIL_UNAVAILABLE, False)]
    assert type(events[-1]) is AuthUnavailable and s.state == "closed"
    late = s.challenge_issued(object(), 31.0)
    assert late == ()  # a late answer is ignored

    s = server(now=0.0, exchange_lifetime=5.0)
    s.receive(AsapAuthRequest(), 0.0)
    events = s.timer_expired(5.0)
    assert messages(events) == [AsapAuthFailure(FAIL_TIMEOUT, False)] and events[-1].final

    c = client("pe1", "pw", now=100.0, timeout=30.0)
    c.start()
    assert c.deadline == 130.0 and c.timer_expired(129.0) == ()
    (failed,) = c.timer_expired(130.0)
    assert type(failed) is AuthenticationFailed and c.deadline is None


@pytest.mark.parametrize("message", [AsapAuthSrpProof(b"\x01" * 256, b"\x00" * 32),
                                     AsapAuthChapResponse(1, b"\x00" * 16), AsapAuthSuccess(CHAP, b"")])
def test_protocol_errors_are_final(message):
    s = server()
    events = s.receive(message, 100.0)  # before the request
    assert messages(events) == [AsapAuthFailure(FAIL_PROTOCOL, False)] and events[-1].final
    s = server()
    s.receive(AsapAuthRequest(), 100.0)
    events = s.receive(message, 100.0)  # out of order
    assert messages(events) == [AsapAuthFailure(FAIL_PROTOCOL, False)] and events[-1].final
    s = server()
    s.receive(AsapAuthRequest(), 100.0)
    assert s.receive(AsapAuthRequest(), 100.0)[-1].final


def test_a_message_while_the_server_waits_for_its_checker_is_a_protocol_error():
    s = server()
    s.receive(AsapAuthRequest(), 100.0)
    s.receive(AsapAuthHello(SRP, "pe1"), 100.0)
    s.attempt_admitted(100.0)  # StartSrp: the challenge is being made
    events = s.receive(AsapAuthHello(SRP, "pe1"), 100.0)
    assert messages(events) == [AsapAuthFailure(FAIL_PROTOCOL, False)] and events[-1].final


def test_success_then_more_messages_closes():
    run = Run(server(), client("pe1", "pe1-password")).go()
    events = run.server.receive(AsapAuthHello(SRP, "pe1"), 101.0)
    assert events[-1] == AuthFailed("ASAP_AUTH_HELLO after successful authentication", "pe1", SRP, final=True)
    assert run.server.identity is None


def test_unsupported_mechanism_and_bad_identity():
    s = server(mechanisms=(SRP,))
    s.receive(AsapAuthRequest(), 100.0)
    assert messages(s.receive(AsapAuthHello(CHAP, "pe1"), 100.0)) == [
        AsapAuthFailure(FAIL_UNSUPPORTED_MECHANISM, True)]
    events = s.receive(AsapAuthHello(SRP, "bad\u200bname"), 100.0)  # not printable
    assert messages(events) == [AsapAuthFailure(FAIL_PROTOCOL, False)] and events[-1].final


def test_weak_configurations_are_refused():
    with pytest.raises(ValueError):
        ServerExchange(b"x", 0.0)
    with pytest.raises(ValueError):
        ServerExchange(CB, 0.0, mechanisms=("SRP-6a-SHA1-1024",))
    with pytest.raises(ValueError):
        ClientExchange("pe1", "pw", CB, 0.0, preferences=("SRP-6a-SHA1-1024",))
    with pytest.raises(ValueError):
        ClientExchange("pe1", "pw", b"short", 0.0)
    with pytest.raises(ValueError):
        ClientExchange("bad\nname", "pw", CB, 0.0)


def test_the_client_detects_a_registrar_without_the_verifier():
    c = client("pe1", "pe1-password", preferences=(SRP,))
    c.start()
    from rserpool.wire.auth import AsapAuthOffer, AsapAuthSrpChallenge

    c.receive(AsapAuthOffer((SRP,)), 100.0)
    fake = srp.SrpServerRun(srp.DEFAULT_GROUP, b"pe1", b"s" * 16, 12345, CB)
    c.receive(AsapAuthSrpChallenge(fake.salt, fake.server_public), 100.0)
    assert c.receive(AsapAuthSuccess(SRP, b"\x00" * 32), 100.0) == (
        AuthenticationFailed("registrar proof mismatch"),)


@pytest.mark.parametrize("mechanism, secret", [(SRP, "pe1-password"), (CHAP, b"pe1-secret")])
def test_a_pipelined_hello_saves_a_round_trip(mechanism, secret):
    run = Run(server(), client("pe1", secret, preferences=(mechanism,))).go(pipelined=True)
    assert run.client_results == [Authenticated(mechanism)]
    assert [type(r) for r in run.server_results] == [AuthSucceeded]
    challenge = "ASAP_AUTH_SRP_CHALLENGE" if mechanism == SRP else "ASAP_AUTH_CHAP_CHALLENGE"
    # Both go before anything comes back; the registrar answers them in order.
    assert [m.name for m in run.transcript] == [
        "ASAP_AUTH_REQUEST", "ASAP_AUTH_HELLO", "ASAP_AUTH_OFFER", challenge,
        "ASAP_AUTH_SRP_PROOF" if mechanism == SRP else "ASAP_AUTH_CHAP_RESPONSE", "ASAP_AUTH_SUCCESS"]


def test_a_pipelined_hello_for_a_mechanism_not_offered_falls_back_to_the_offer():
    run = Run(server(mechanisms=(CHAP,)), client("pe1", b"pe1-secret", preferences=(SRP, CHAP))).go(pipelined=True)
    assert run.client_results == [Authenticated(CHAP)]
    names = [m.name for m in run.transcript]
    assert names[:4] == ["ASAP_AUTH_REQUEST", "ASAP_AUTH_HELLO", "ASAP_AUTH_OFFER", "ASAP_AUTH_FAILURE"]
    assert names[4:] == ["ASAP_AUTH_HELLO", "ASAP_AUTH_CHAP_CHALLENGE", "ASAP_AUTH_CHAP_RESPONSE",
                         "ASAP_AUTH_SUCCESS"]
    refusal = run.transcript[3]
    assert (refusal.code, refusal.may_retry) == (FAIL_UNSUPPORTED_MECHANISM, True)
    # The guess cost one of the channel's attempts, and the server saw no identity in it.
    (failed, succeeded) = run.server_results
    assert type(failed) is AuthFailed and failed.identity is None and not failed.final
    assert type(succeeded) is AuthSucceeded


def test_a_pipelined_hello_with_no_common_mechanism_fails():
    run = Run(server(mechanisms=(CHAP,)), client("pe1", "pw", preferences=(SRP,))).go(pipelined=True)
    assert run.client_results == [AuthenticationFailed("no common mechanism")]


def test_a_pipelined_start_is_a_start():
    c = client("pe1", "pw", preferences=(SRP,))
    request, hello = messages(c.start_pipelined())
    assert type(request) is AsapAuthRequest and (hello.mechanism, hello.identity) == (SRP, "pe1")
    with pytest.raises(RuntimeError):
        c.start()
    with pytest.raises(RuntimeError):
        c.start_pipelined()
    # An offer after the pipelined hello is no second hello.
    assert c.receive(AsapAuthOffer((SRP, CHAP)), 100.0) == ()
    # A second offer is a protocol error.
    (failed,) = c.receive(AsapAuthOffer((SRP,)), 100.0)
    assert type(failed) is AuthenticationFailed and "unexpected" in failed.reason


def test_an_rfc_only_registrar_means_unsupported_also_when_pipelined():
    c = client("pe1", "pw")
    request, _ = messages(c.start_pipelined())
    report = error_reply(WireError(codes.CAUSE_UNRECOGNIZED_MESSAGE, "unknown", request.encode()),
                         codes.PPID_ASAP)
    (failed,) = c.receive(wire(report), 100.0)
    assert failed.unsupported and "does not support" in failed.reason
    assert c.receive(wire(report), 100.0) == ()  # the hello's error changes nothing


def test_an_rfc_only_registrar_means_unsupported():
    c = client("pe1", "pw")
    request = c.start().message
    report = error_reply(WireError(codes.CAUSE_UNRECOGNIZED_MESSAGE, "unknown", request.encode()),
                         codes.PPID_ASAP)
    (failed,) = c.receive(wire(report), 100.0)
    assert failed.unsupported and "does not support" in failed.reason
    c = client("pe1", "pw")
    c.start()
    other = AsapError(error_reply(WireError(codes.CAUSE_INVALID_VALUES, "x", b"\x01"), codes.PPID_ASAP).error)
    (failed,) = c.receive(other, 100.0)
    assert not failed.unsupported


def test_the_channel_refusal_reaches_the_client_with_its_code():
    events = channel_refusal("TLSv1.2 without extended master secret")
    assert events[-1].final
    c = client("pe1", "pw")
    c.start()
    (failed,) = c.receive(wire(events[0].message), 100.0)
    assert failed.code == FAIL_CHANNEL_BINDING and "TLS" in failed.reason


def test_the_client_retries_only_what_may_get_better():
    c = client("pe1", "pw", max_retries=1, preferences=(CHAP,))
    c.start()
    from rserpool.wire.auth import AsapAuthOffer

    c.receive(AsapAuthOffer((CHAP,)), 100.0)
    again = c.receive(AsapAuthFailure(FAIL_TIMEOUT, True), 100.0)
    assert [m.name for m in messages(again)] == ["ASAP_AUTH_HELLO"]  # the challenge expired: once more
    (failed,) = c.receive(AsapAuthFailure(FAIL_AUTHENTICATION, True), 100.0)
    assert failed.code == FAIL_AUTHENTICATION  # a wrong secret never gets better


@settings(max_examples=8, deadline=None)
@given(identity=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FFF), min_size=1, max_size=30),
       password=st.text(max_size=30))
def test_random_identities_round_trip(identity, password):
    name = normalize_identity(identity)
    if name is None:
        return
    checkers = Checkers()
    checkers.srp_store.add(name, password)
    checkers.chap_store.secrets[name] = srp.normalize_text(password, 1024, "p")
    for mechanism in (SRP, CHAP):
        run = Run(server(), client(identity, password, preferences=(mechanism,)), checkers).go()
        assert [(type(r), r.identity.name) for r in run.server_results] == [(AuthSucceeded, name)]
