"""Negotiation and exchange state machines, server and client, end to end."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rserpool.security import srp
from rserpool.security.chap import ChapVerdict
from rserpool.security.exchange import (
    DEFAULT_MECHANISMS,
    FAIL_AUTHENTICATION,
    FAIL_PROTOCOL,
    FAIL_RATE_LIMITED,
    FAIL_TIMEOUT,
    FAIL_UNAVAILABLE,
    FAIL_UNSUPPORTED_MECHANISM,
    MECH_CHAP_MD5,
    MECH_SRP_SHA256_2048,
    AttemptLimiter,
    AuthFailed,
    AuthFailure,
    AuthSucceeded,
    AuthSuccess,
    ChapResponse,
    ClientAuthenticated,
    ClientExchange,
    ClientFailed,
    ClientHello,
    MechanismOffer,
    Send,
    ServerExchange,
    SrpChallenge,
    SrpProof,
    VerifyChap,
    resolve_chap_locally,
)

CB = b"\xaa" * 32
CB_OTHER = b"\xbb" * 32
SERVER_SECRET = b"server-secret-0123456789"


@dataclass
class Store:
    srp_entries: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)
    chap_secrets: dict[str, bytes] = field(default_factory=dict)

    def lookup_srp(self, identity: str) -> tuple[bytes, bytes] | None:
        return self.srp_entries.get(identity)

    def lookup_chap_secret(self, identity: str) -> bytes | None:
        return self.chap_secrets.get(identity)


@pytest.fixture(scope="module")
def store() -> Store:
    s = Store()
    s.srp_entries["pe1"] = srp.make_verifier("pe1", "pe1-password")
    s.chap_secrets["pe1"] = b"pe1-secret"
    return s


def server_for(store: Store, cb: bytes = CB, now: float = 0.0, **kw) -> ServerExchange:
    return ServerExchange(store, cb, SERVER_SECRET, now, **kw)


def sends(events) -> list:
    return [e.message for e in events if isinstance(e, Send)]


def results(events) -> list:
    return [e for e in events if isinstance(e, (AuthSucceeded, AuthFailed))]


def run(server: ServerExchange, client: ClientExchange, store: Store, now: float = 0.0,
        transcript: list | None = None) -> tuple[list, list]:
    """Pump messages between the two sides; return (server results, client results)."""
    server_results: list = []
    client_results: list = []
    to_client = [server.start().message]
    while to_client:
        to_server = []
        for message in to_client:
            if transcript is not None:
                transcript.append(message)
            for event in client.receive(message):
                if isinstance(event, Send):
                    to_server.append(event.message)
                else:
                    client_results.append(event)
        to_client = []
        for message in to_server:
            if transcript is not None:
                transcript.append(message)
            events = list(server.receive(message, now))
            while any(isinstance(e, VerifyChap) for e in events):
                request = next(e for e in events if isinstance(e, VerifyChap))
                events.remove(request)
                events += server.chap_verified(resolve_chap_locally(store, request), now)
            server_results += results(events)
            to_client += sends(events)
    return server_results, client_results


@pytest.mark.parametrize("mechanism", [MECH_SRP_SHA256_2048, MECH_CHAP_MD5])
def test_full_exchange_succeeds(store: Store, mechanism: str) -> None:
    server = server_for(store)
    secret = "pe1-password" if mechanism == MECH_SRP_SHA256_2048 else "pe1-secret"
    client = ClientExchange("pe1", secret, CB, preferences=(mechanism,))
    server_results, client_results = run(server, client, store)
    assert server_results == [AuthSucceeded("pe1", mechanism)]
    assert client_results == [ClientAuthenticated(mechanism)]
    assert server.authenticated_identity == "pe1"
    assert server.deadline is None


def test_client_picks_first_preference_in_offer(store: Store) -> None:
    server = server_for(store, mechanisms=(MECH_CHAP_MD5,))
    client = ClientExchange("pe1", "pe1-secret", CB)  # prefers SRP, falls back
    server_results, _ = run(server, client, store)
    assert server_results == [AuthSucceeded("pe1", MECH_CHAP_MD5)]


def test_no_common_mechanism(store: Store) -> None:
    server = server_for(store, mechanisms=(MECH_CHAP_MD5,))
    client = ClientExchange("pe1", "pw", CB, preferences=(MECH_SRP_SHA256_2048,))
    events = client.receive(server.start().message)
    assert events == (ClientFailed("no common mechanism"),)


@pytest.mark.parametrize("mechanism", [MECH_SRP_SHA256_2048, MECH_CHAP_MD5])
def test_relay_across_tls_sessions_fails(store: Store, mechanism: str) -> None:
    server = server_for(store, cb=CB)
    secret = "pe1-password" if mechanism == MECH_SRP_SHA256_2048 else "pe1-secret"
    client = ClientExchange("pe1", secret, CB_OTHER, preferences=(mechanism,))
    server_results, client_results = run(server, client, store)
    assert [type(r) for r in server_results] == [AuthFailed]
    assert client_results == [ClientFailed("server refused", FAIL_AUTHENTICATION, True)]


@pytest.mark.parametrize("mechanism", [MECH_SRP_SHA256_2048, MECH_CHAP_MD5])
def test_wrong_password_fails(store: Store, mechanism: str) -> None:
    server = server_for(store)
    client = ClientExchange("pe1", "not-it", CB, preferences=(mechanism,))
    server_results, client_results = run(server, client, store)
    assert len(server_results) == 1 and isinstance(server_results[0], AuthFailed)
    assert server_results[0].final is False
    assert client_results == [ClientFailed("server refused", FAIL_AUTHENTICATION, True)]


def _shape(transcript: list) -> list:
    return [
        (type(m).__name__, tuple(len(v) if isinstance(v, (bytes, str, tuple)) else type(v)
                                 for v in (getattr(m, f) for f in m.__slots__)))
        for m in transcript
    ]


@pytest.mark.parametrize("mechanism", [MECH_SRP_SHA256_2048, MECH_CHAP_MD5])
def test_unknown_identity_indistinguishable(store: Store, mechanism: str) -> None:
    transcripts = {}
    outcomes = {}
    for name in ("pe1", "pe2"):  # pe2 is unknown; same length
        server = server_for(store)
        client = ClientExchange(name, "wrong-password", CB, preferences=(mechanism,))
        transcript: list = []
        server_results, client_results = run(server, client, store, transcript=transcript)
        transcripts[name] = transcript
        outcomes[name] = (server_results, client_results)
    assert _shape(transcripts["pe1"]) == _shape(transcripts["pe2"])
    assert transcripts["pe1"][-1] == transcripts["pe2"][-1] == AuthFailure(
        FAIL_AUTHENTICATION, True
    )
    assert outcomes["pe1"][1] == outcomes["pe2"][1]
    # only the log reason differs
    assert outcomes["pe2"][0][0].reason_for_log == "unknown identity"
    assert outcomes["pe1"][0][0].reason_for_log != "unknown identity"


def test_unknown_identity_gets_a_stable_fake_salt(store: Store) -> None:
    salts = []
    for _ in range(2):
        server = server_for(store)
        server.start()
        events = server.receive(ClientHello(MECH_SRP_SHA256_2048, "ghost"), 0.0)
        challenge = sends(events)[0]
        assert isinstance(challenge, SrpChallenge)
        salts.append(challenge.salt)
        assert len(challenge.salt) == srp.DEFAULT_SALT_LEN
        assert len(challenge.server_public) == 256
    assert salts[0] == salts[1]
    other = server_for(store)
    other.start()
    other_salt = sends(other.receive(ClientHello(MECH_SRP_SHA256_2048, "ghost2"), 0.0))[0].salt
    assert other_salt != salts[0]
    # another server secret gives other fake salts
    third = ServerExchange(store, CB, b"another-secret-0123456", 0.0)
    third.start()
    assert sends(third.receive(ClientHello(MECH_SRP_SHA256_2048, "ghost"), 0.0))[0].salt != salts[0]


def test_replayed_srp_proof_rejected(store: Store) -> None:
    transcript: list = []
    run(server_for(store), ClientExchange("pe1", "pe1-password", CB,
        preferences=(MECH_SRP_SHA256_2048,)), store, transcript=transcript)
    proof = next(m for m in transcript if isinstance(m, SrpProof))
    # a fresh server state (new b) for the replayed exchange
    server = server_for(store)
    server.start()
    server.receive(ClientHello(MECH_SRP_SHA256_2048, "pe1"), 0.0)
    events = server.receive(proof, 0.0)
    assert sends(events) == [AuthFailure(FAIL_AUTHENTICATION, True)]
    assert results(events)[0].reason_for_log.startswith("SRP: client proof")


def test_replayed_chap_response_rejected(store: Store) -> None:
    transcript: list = []
    run(server_for(store), ClientExchange("pe1", "pe1-secret", CB,
        preferences=(MECH_CHAP_MD5,)), store, transcript=transcript)
    response = next(m for m in transcript if isinstance(m, ChapResponse))
    server = server_for(store)
    server.start()
    challenge = sends(server.receive(ClientHello(MECH_CHAP_MD5, "pe1"), 0.0))[0]
    forged = ChapResponse(challenge.identifier, response.response)
    events = list(server.receive(forged, 0.0))
    request = events[0]
    assert isinstance(request, VerifyChap)
    events = server.chap_verified(resolve_chap_locally(store, request), 0.0)
    assert sends(events) == [AuthFailure(FAIL_AUTHENTICATION, True)]


def test_chap_response_twice_in_one_exchange_rejected(store: Store) -> None:
    server = server_for(store)
    client = ClientExchange("pe1", "pe1-secret", CB, preferences=(MECH_CHAP_MD5,))
    hello = sends(client.receive(server.start().message))[0]
    challenge = sends(server.receive(hello, 0.0))[0]
    response = sends(client.receive(challenge))[0]
    (request,) = server.receive(response, 0.0)
    events = server.chap_verified(resolve_chap_locally(store, request), 0.0)
    assert isinstance(results(events)[0], AuthSucceeded)
    again = server.receive(response, 0.0)
    assert sends(again) == [AuthFailure(FAIL_PROTOCOL, False)]
    assert results(again)[0].final is True


@pytest.mark.parametrize("value", ["zero", "N"])
def test_srp_a_zero_or_n_rejected(store: Store, value: str) -> None:
    server = server_for(store)
    server.start()
    server.receive(ClientHello(MECH_SRP_SHA256_2048, "pe1"), 0.0)
    number = 0 if value == "zero" else srp.DEFAULT_GROUP.n
    events = server.receive(SrpProof(number.to_bytes(256, "big"), b"\x00" * 32), 0.0)
    assert sends(events) == [AuthFailure(FAIL_AUTHENTICATION, True)]
    assert "A " in results(events)[0].reason_for_log


def test_attempts_per_exchange_bounded(store: Store) -> None:
    server = server_for(store, max_attempts=2)
    client = ClientExchange("pe1", "wrong", CB, preferences=(MECH_CHAP_MD5,))
    first, _ = run(server, client, store)
    assert first[0].final is False
    events = client.retry()
    challenge = sends(server.receive(sends(events)[0], 0.0))[0]
    (request,) = server.receive(sends(client.receive(challenge))[0], 0.0)
    final = server.chap_verified(resolve_chap_locally(store, request), 0.0)
    assert sends(final) == [AuthFailure(FAIL_AUTHENTICATION, False)]
    assert results(final)[0].final is True
    assert server.state == "closed"
    assert server.receive(ClientHello(MECH_CHAP_MD5, "pe1"), 0.0) == (
        AuthFailed("message after the exchange was closed", final=True),
    )


def test_attempts_per_identity_bounded_across_exchanges(store: Store) -> None:
    limiter = AttemptLimiter(capacity=2, refill_interval=60.0)
    outcomes = []
    for i in range(3):
        server = server_for(store, limiter=limiter)
        client = ClientExchange("pe1", "wrong", CB, preferences=(MECH_CHAP_MD5,))
        server_results, client_results = run(server, client, store, now=float(i))
        outcomes.append((server_results[0].reason_for_log, client_results[0].code))
    assert outcomes[2] == ("rate limited", FAIL_RATE_LIMITED)
    assert [code for _, code in outcomes[:2]] == [FAIL_AUTHENTICATION] * 2
    # even the right secret is refused until a token comes back
    server = server_for(store, limiter=limiter)
    client = ClientExchange("pe1", "pe1-secret", CB, preferences=(MECH_CHAP_MD5,))
    assert run(server, client, store, now=3.0)[1][0].code == FAIL_RATE_LIMITED
    server = server_for(store, limiter=limiter, now=70.0)
    client = ClientExchange("pe1", "pe1-secret", CB, preferences=(MECH_CHAP_MD5,))
    assert run(server, client, store, now=70.0)[0] == [AuthSucceeded("pe1", MECH_CHAP_MD5)]
    # unknown identities are limited the same way
    for _ in range(2):
        run(server_for(store, limiter=limiter),
            ClientExchange("ghost", "x", CB, preferences=(MECH_CHAP_MD5,)), store)
    blocked = run(server_for(store, limiter=limiter),
                  ClientExchange("ghost", "x", CB, preferences=(MECH_CHAP_MD5,)), store)
    assert blocked[1][0].code == FAIL_RATE_LIMITED


def test_success_refunds_the_token(store: Store) -> None:
    limiter = AttemptLimiter(capacity=1, refill_interval=1000.0)
    for i in range(3):
        server = server_for(store, limiter=limiter)
        client = ClientExchange("pe1", "pe1-secret", CB, preferences=(MECH_CHAP_MD5,))
        assert run(server, client, store, now=float(i))[0] == [AuthSucceeded("pe1", MECH_CHAP_MD5)]


@pytest.mark.parametrize("mechanism", [MECH_SRP_SHA256_2048, MECH_CHAP_MD5])
def test_expired_challenge_rejected(store: Store, mechanism: str) -> None:
    server = server_for(store, step_lifetime=10.0)
    secret = "pe1-password" if mechanism == MECH_SRP_SHA256_2048 else "pe1-secret"
    client = ClientExchange("pe1", secret, CB, preferences=(mechanism,))
    hello = sends(client.receive(server.start().message))[0]
    challenge = sends(server.receive(hello, 0.0))[0]
    answer = sends(client.receive(challenge))[0]
    assert server.deadline == 10.0
    events = server.receive(answer, 10.5)
    assert sends(events) == [AuthFailure(FAIL_TIMEOUT, True)]
    assert "expired" in results(events)[0].reason_for_log


def test_timer_expiry(store: Store) -> None:
    server = server_for(store, step_lifetime=10.0, exchange_lifetime=100.0)
    server.start()
    assert server.deadline == 100.0
    server.receive(ClientHello(MECH_SRP_SHA256_2048, "pe1"), 1.0)
    assert server.timer_expired(5.0) == ()
    events = server.timer_expired(11.0)
    assert sends(events) == [AuthFailure(FAIL_TIMEOUT, True)] and server.state == "await-hello"
    events = server.timer_expired(100.0)
    assert sends(events) == [AuthFailure(FAIL_TIMEOUT, False)] and server.state == "closed"


def test_backend_unavailable_is_not_a_credential_failure(store: Store) -> None:
    limiter = AttemptLimiter(capacity=1)
    server = server_for(store, limiter=limiter)
    client = ClientExchange("pe1", "pe1-secret", CB, preferences=(MECH_CHAP_MD5,))
    hello = sends(client.receive(server.start().message))[0]
    response = sends(client.receive(sends(server.receive(hello, 0.0))[0]))[0]
    (request,) = server.receive(response, 0.0)
    assert isinstance(request, VerifyChap) and request.identity == "pe1"
    events = server.chap_unavailable("RADIUS timeout", 0.0)
    assert sends(events) == [AuthFailure(FAIL_UNAVAILABLE, False)]
    assert limiter.tokens("pe1", 0.0) == 1.0  # the attempt was given back


def test_delegated_verdict_drives_result(store: Store) -> None:
    server = server_for(store)
    server.start()
    challenge = sends(server.receive(ClientHello(MECH_CHAP_MD5, "radius-user"), 0.0))[0]
    (request,) = server.receive(ChapResponse(challenge.identifier, b"\x01" * 16), 0.0)
    events = server.chap_verified(ChapVerdict(True), 0.0)  # e.g. RADIUS Access-Accept
    assert results(events) == [AuthSucceeded("radius-user", MECH_CHAP_MD5)]
    assert sends(events) == [AuthSuccess(MECH_CHAP_MD5, b"")]


@pytest.mark.parametrize(
    "message",
    [
        SrpProof(b"\x01" * 256, b"\x00" * 32),
        ChapResponse(1, b"\x00" * 16),
        AuthSuccess(MECH_CHAP_MD5, b""),
        "garbage",
    ],
)
def test_unexpected_message_closes(store: Store, message: object) -> None:
    server = server_for(store)
    server.start()
    events = server.receive(message, 0.0)
    assert sends(events) == [AuthFailure(FAIL_PROTOCOL, False)]
    assert results(events)[0].final


def test_unsupported_mechanism_and_bad_identity(store: Store) -> None:
    server = server_for(store, mechanisms=(MECH_SRP_SHA256_2048,))
    server.start()
    events = server.receive(ClientHello(MECH_CHAP_MD5, "pe1"), 0.0)
    assert sends(events) == [AuthFailure(FAIL_UNSUPPORTED_MECHANISM, True)]
    events = server.receive(ClientHello(MECH_SRP_SHA256_2048, "bad\nname"), 0.0)
    assert sends(events) == [AuthFailure(FAIL_PROTOCOL, False)]


def test_server_refuses_weak_configuration(store: Store) -> None:
    with pytest.raises(ValueError):
        ServerExchange(store, CB, b"short", 0.0)
    with pytest.raises(ValueError):
        ServerExchange(store, b"x", SERVER_SECRET, 0.0)
    with pytest.raises(ValueError):
        ServerExchange(store, CB, SERVER_SECRET, 0.0, mechanisms=("SRP-6a-SHA1-1024",))
    with pytest.raises(ValueError):
        ClientExchange("pe1", "pw", CB, preferences=("SRP-6a-SHA1-1024",))
    with pytest.raises(ValueError):
        ClientExchange("pe1", "pw", b"short")


def test_client_detects_server_without_verifier(store: Store) -> None:
    # A server that does not hold the verifier cannot produce M2.
    client = ClientExchange("pe1", "pe1-password", CB, preferences=(MECH_SRP_SHA256_2048,))
    client.receive(MechanismOffer(DEFAULT_MECHANISMS))
    g = srp.DEFAULT_GROUP
    fake = srp.SrpServerSession(g, b"pe1", b"s" * 16, 12345, CB)
    client.receive(SrpChallenge(fake.salt, fake.server_public))
    events = client.receive(AuthSuccess(MECH_SRP_SHA256_2048, b"\x00" * 32))
    assert events == (ClientFailed("server proof mismatch"),)


def test_attempt_limiter_bounds_memory() -> None:
    limiter = AttemptLimiter(capacity=3, refill_interval=10.0, max_keys=4)
    for i in range(10):
        assert limiter.try_acquire(f"id{i}", 0.0)
    assert len(limiter) == 4
    assert limiter.tokens("id9", 0.0) == 2.0
    assert limiter.tokens("id9", 10.0) == 3.0
    assert limiter.tokens("id9", 1000.0) == 3.0


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["acquire", "refund"]), st.floats(0, 30)), max_size=30
    )
)
def test_attempt_limiter_never_exceeds_budget(steps) -> None:
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


@settings(max_examples=8, deadline=None)
@given(
    identity=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FFF), min_size=1,
                     max_size=30),
    password=st.text(max_size=30),
)
def test_random_identities_round_trip(identity: str, password: str) -> None:
    from rserpool.security.exchange import normalize_identity

    name = normalize_identity(identity)
    if name is None:
        return
    store = Store()
    store.srp_entries[name] = srp.make_verifier(name, password)
    store.chap_secrets[name] = srp.normalize_text(password, 1024, "p")
    for mechanism in (MECH_SRP_SHA256_2048, MECH_CHAP_MD5):
        server = server_for(store)
        client = ClientExchange(identity, password, CB, preferences=(mechanism,))
        assert run(server, client, store)[0] == [AuthSucceeded(name, mechanism)]


def test_late_chap_verdict_after_timeout_is_ignored(store: Store) -> None:
    server = server_for(store, step_lifetime=5.0)
    server.start()
    challenge = sends(server.receive(ClientHello(MECH_CHAP_MD5, "pe1"), 0.0))[0]
    (request,) = server.receive(ChapResponse(challenge.identifier, b"\x00" * 16), 1.0)
    assert isinstance(request, VerifyChap)
    events = server.timer_expired(6.0)
    assert sends(events) == [AuthFailure(FAIL_UNAVAILABLE, False)]
    assert server.chap_verified(ChapVerdict(True), 7.0) == ()
    assert server.authenticated_identity is None
    with pytest.raises(RuntimeError):
        server_for(store).chap_verified(ChapVerdict(True), 0.0)
