"""CHAP core: RFC 1994 response, channel-bound challenge, single use, expiry."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rserpool.security import chap
from rserpool.security.chap import (
    ChapClient,
    ChapError,
    ChapServer,
    ChapVerdict,
    ChapCredentials,
    chap_response,
    effective_challenge,
    verify_locally,
)

CB = b"\x11" * 32
CB_OTHER = b"\x22" * 32
SECRET = b"pe1-secret"


def test_rfc1994_response_by_hand() -> None:
    # Independent check: MD5 over identifier byte, secret, challenge.
    challenge = bytes(range(16))
    expected = hashlib.md5(b"\x2a" + b"pe1-secret" + challenge).digest()
    assert chap_response(0x2A, b"pe1-secret", challenge) == expected
    # a fixed known value: MD5(0x00 || "" || "") = MD5(b"\x00")
    assert chap_response(0, b"", b"").hex() == "93b885adfe0da089cdf634904fd59f71"


def test_identifier_must_be_a_byte() -> None:
    with pytest.raises(ChapError):
        chap_response(256, b"s", b"c")
    with pytest.raises(ChapError):
        chap_response(-1, b"s", b"c")


def test_effective_challenge_construction() -> None:
    nonce = b"\x05" * 32
    expected = hmac.new(CB, b"rserpool CHAP challenge" + nonce, hashlib.sha256).digest()[:16]
    assert effective_challenge(CB, nonce) == expected
    assert len(expected) == 16
    assert effective_challenge(CB_OTHER, nonce) != expected
    with pytest.raises(ChapError):
        effective_challenge(b"short", nonce)
    with pytest.raises(ChapError):
        effective_challenge(CB, b"short")


def test_round_trip_local_verification() -> None:
    server = ChapServer("pe1", CB, now=100.0)
    response = ChapClient(SECRET, CB).respond(server.identifier, server.nonce)
    request = server.response_received(response, now=101.0)
    assert request == ChapCredentials("pe1", server.identifier, server.challenge, response)
    verdict = verify_locally(SECRET, request)
    assert verdict == ChapVerdict(True, "")
    assert server.verification_result(verdict.ok) is True
    assert server.state == "succeeded"


def test_request_is_a_standard_radius_chap_pair() -> None:
    # What a RADIUS server checks: CHAP-Password = ident || MD5(ident||pw||CHAP-Challenge)
    server = ChapServer("pe1", CB, now=0.0)
    response = ChapClient(SECRET, CB).respond(server.identifier, server.nonce)
    request = server.response_received(response, now=0.0)
    chap_password = bytes((request.identifier,)) + request.response
    assert len(chap_password) == 17 and len(request.challenge) == 16
    assert chap_password[1:] == hashlib.md5(
        chap_password[:1] + SECRET + request.challenge
    ).digest()


def test_wrong_secret_and_unknown_identity_look_alike() -> None:
    server = ChapServer("pe1", CB, now=0.0)
    response = ChapClient(b"wrong", CB).respond(server.identifier, server.nonce)
    request = server.response_received(response, now=0.0)
    wrong = verify_locally(SECRET, request)
    unknown = verify_locally(None, request)
    assert wrong.ok is False and unknown.ok is False
    assert wrong.reason == "wrong CHAP response" and unknown.reason == "unknown identity"


def test_relayed_response_fails() -> None:
    server = ChapServer("pe1", CB, now=0.0)
    # the victim's client runs in another TLS session (different binding)
    response = ChapClient(SECRET, CB_OTHER).respond(server.identifier, server.nonce)
    request = server.response_received(response, now=0.0)
    assert verify_locally(SECRET, request).ok is False


def test_replay_rejected_challenge_single_use() -> None:
    server = ChapServer("pe1", CB, now=0.0)
    response = ChapClient(SECRET, CB).respond(server.identifier, server.nonce)
    server.response_received(response, now=0.0)
    with pytest.raises(ChapError, match="already used"):
        server.response_received(response, now=0.0)
    server.verification_result(True)
    with pytest.raises(ChapError, match="already used"):
        server.response_received(response, now=0.0)


def test_replay_into_new_challenge_fails() -> None:
    first = ChapServer("pe1", CB, now=0.0)
    response = ChapClient(SECRET, CB).respond(first.identifier, first.nonce)
    second = ChapServer("pe1", CB, now=1.0, identifier=first.identifier)
    request = second.response_received(response, now=1.0)
    assert verify_locally(SECRET, request).ok is False


def test_expired_challenge_rejected_and_consumed() -> None:
    server = ChapServer("pe1", CB, now=10.0, lifetime=5.0)
    response = ChapClient(SECRET, CB).respond(server.identifier, server.nonce)
    with pytest.raises(ChapError, match="expired"):
        server.response_received(response, now=15.5)
    with pytest.raises(ChapError, match="already used"):
        server.response_received(response, now=11.0)


def test_in_lifetime_boundary_accepted() -> None:
    server = ChapServer("pe1", CB, now=10.0, lifetime=5.0)
    response = ChapClient(SECRET, CB).respond(server.identifier, server.nonce)
    assert server.response_received(response, now=15.0).response == response


def test_malformed_response_rejected() -> None:
    server = ChapServer("pe1", CB, now=0.0)
    with pytest.raises(ChapError, match="16 bytes"):
        server.response_received(b"\x00" * 15, now=0.0)
    assert server.state == "failed"


def test_verification_result_needs_pending_check() -> None:
    server = ChapServer("pe1", CB, now=0.0)
    with pytest.raises(ChapError):
        server.verification_result(True)


def test_nonces_and_identifiers_are_random() -> None:
    servers = [ChapServer("pe1", CB, now=0.0) for _ in range(64)]
    assert len({s.nonce for s in servers}) == 64
    assert all(len(s.nonce) == chap.NONCE_LEN for s in servers)
    assert len({s.identifier for s in servers}) > 1
    assert len({s.challenge for s in servers}) == 64


def test_client_answers_once() -> None:
    client = ChapClient(SECRET, CB)
    client.respond(1, b"\x00" * 32)
    with pytest.raises(ChapError):
        client.respond(1, b"\x00" * 32)


@settings(max_examples=50, deadline=None)
@given(
    secret=st.binary(max_size=64),
    other=st.binary(max_size=64),
    identifier=st.integers(0, 255),
    nonce=st.binary(min_size=32, max_size=32),
)
def test_random_secrets_round_trip(
    secret: bytes, other: bytes, identifier: int, nonce: bytes
) -> None:
    server = ChapServer("x", CB, now=0.0, nonce=nonce, identifier=identifier)
    response = ChapClient(secret, CB).respond(identifier, nonce)
    request = server.response_received(response, now=0.0)
    assert verify_locally(secret, request).ok
    assert verify_locally(other, request).ok is (other == secret)


def test_pyrad_accepts_the_request_as_radius_chap() -> None:
    # Independent implementation: pyrad's RADIUS-side CHAP check
    # (CHAP-Password = ident || response, CHAP-Challenge = challenge).
    import io

    from pyrad import packet
    from pyrad.dictionary import Dictionary

    dictionary = Dictionary(io.StringIO(
        "ATTRIBUTE User-Name 1 string\n"
        "ATTRIBUTE CHAP-Password 3 octets\n"
        "ATTRIBUTE CHAP-Challenge 60 octets\n"
    ))
    server = ChapServer("pe1", CB, now=0.0)
    response = ChapClient(SECRET, CB).respond(server.identifier, server.nonce)
    request = server.response_received(response, now=0.0)
    pkt = packet.AuthPacket(dict=dictionary, secret=b"radius-shared-secret")
    pkt["User-Name"] = request.identity
    pkt["CHAP-Password"] = bytes((request.identifier,)) + request.response
    pkt["CHAP-Challenge"] = request.challenge
    assert pkt.VerifyChapPasswd(SECRET.decode())
    assert not pkt.VerifyChapPasswd("wrong")
