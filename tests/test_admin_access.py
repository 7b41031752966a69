"""Admission to the admin door (rserpool.admin.access), without sockets."""

from __future__ import annotations

import os

import pytest
from twisted.internet import defer, task

from rserpool.admin.access import AdminAccess, Grant, TokenError, admin_gate, load_token
from rserpool.gate import CLOSING, DOOR_ADMIN, Gate, GatePolicy
from rserpool.security.ratelimit import RateLimit
from rserpool.security.certidentity import CertIdentityError

TOKEN = b"0123456789abcdef-token"


def _token_file(tmp_path, content: bytes = TOKEN + b"\n", mode: int = 0o600):
    path = tmp_path / "token"
    path.write_bytes(content)
    os.chmod(path, mode)
    return path


def test_a_safe_token_file_is_read(tmp_path):
    assert load_token(str(_token_file(tmp_path))) == TOKEN
    assert load_token(str(_token_file(tmp_path, mode=0o640))) == TOKEN


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o602, 0o660, 0o601])
def test_a_token_file_others_can_read_or_change_is_refused(tmp_path, mode):
    with pytest.raises(TokenError, match="mode"):
        load_token(str(_token_file(tmp_path, mode=mode)))


@pytest.mark.parametrize("content", [b"", b"short\n", b"has space in it here\n", b"x" * 5000, b"\xff" * 20])
def test_bad_tokens_are_refused(tmp_path, content):
    with pytest.raises(TokenError):
        load_token(str(_token_file(tmp_path, content)))


def test_symlinks_directories_and_missing_files_are_refused(tmp_path):
    target = _token_file(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(target)
    for path in (link, tmp_path, tmp_path / "missing"):
        with pytest.raises(TokenError):
            load_token(str(path))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file to another user")
def test_a_token_file_of_another_user_is_refused(tmp_path):
    path = _token_file(tmp_path)
    os.chown(path, 65534, 65534)
    with pytest.raises(TokenError, match="belong to root"):
        load_token(str(path))


class _Authorizer:
    def __init__(self, answer):
        self.answer = answer
        self.asked = []

    def authorize(self, identity, groups, action, pool_handle):
        self.asked.append((identity, groups, action, pool_handle))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class _Channel:
    """Stands in for the HTTP channel (it keeps the gate admission)."""


def _access(authorizer, identity_of=lambda cert, transport: "ops", policy=None, **kwargs):
    return AdminAccess(authorizer=authorizer, identity_of=identity_of, gate=Gate(policy or GatePolicy()),
                       clock=task.Clock(), **kwargs)


def _admit(access, cert=None, authorization=None, monkeypatch=None, channel=None):
    import rserpool.admin.access as module

    monkeypatch.setattr(module, "peer_certificate", lambda transport: cert)
    results = []
    access.admit(channel or _Channel(), object(), "127.0.0.1", authorization).addBoth(results.append)
    (grant,) = results
    return grant


def test_a_certificate_identity_goes_through_the_gate_to_the_authorizer(monkeypatch):
    authorizer = _Authorizer(True)
    access = _access(authorizer, groups_of=lambda identity: defer.succeed(["operators"]))
    channel = _Channel()
    grant = _admit(access, cert="CERT", monkeypatch=monkeypatch, channel=channel)
    assert grant == Grant(True, 200, "ops")
    assert authorizer.asked == [("ops", frozenset({"operators"}), "admin", b"")]
    assert grant.covers("/api/v1/status") and grant.covers("/metrics")
    assert channel.admission.door == DOOR_ADMIN and channel.admission.identity == "ops"
    # The gate remembers the answer for the connection: not asked again.
    assert _admit(access, cert="CERT", monkeypatch=monkeypatch, channel=channel).allowed
    assert len(authorizer.asked) == 1
    access.channel_closed(channel)
    assert channel.admission not in access.gate.channels


@pytest.mark.parametrize("answer", [False, None, "yes", 1])
def test_anything_but_true_is_a_refusal(monkeypatch, answer):
    access = _access(_Authorizer(answer), identity_of=lambda cert, transport: "pe1")
    grant = _admit(access, cert="CERT", monkeypatch=monkeypatch)
    assert (grant.allowed, grant.status, grant.who) == (False, 403, "pe1")


def test_an_authorizer_outage_refuses_and_is_reported(monkeypatch):
    outages = []
    access = _access(_Authorizer(RuntimeError("down")), on_outage=lambda: outages.append(1))
    grant = _admit(access, cert="CERT", monkeypatch=monkeypatch)
    assert (grant.allowed, grant.status) == (False, 403) and outages == [1]
    assert access.gate.stats["authorizer_unavailable"] == 1


def test_the_gate_rate_limits_requests_per_identity(monkeypatch):
    policy = GatePolicy(door_request_rate=RateLimit(rate=0.001, burst=2.0))
    access = _access(_Authorizer(True), policy=policy)
    channel = _Channel()
    statuses = [_admit(access, cert="CERT", monkeypatch=monkeypatch, channel=channel).status for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_a_certificate_without_identity_closes_the_gate_channel(monkeypatch):
    def no_identity(cert, transport):
        raise CertIdentityError("no name")

    for identity_of in (no_identity, lambda cert, transport: None):
        authorizer = _Authorizer(True)
        access = _access(authorizer, identity_of=identity_of)
        channel = _Channel()
        grant = _admit(access, cert="CERT", monkeypatch=monkeypatch, channel=channel)
        assert (grant.allowed, grant.status) == (False, 403) and authorizer.asked == []
        assert channel.admission.state == CLOSING


def test_a_failing_certificate_check_refuses_and_is_an_outage(monkeypatch):
    def broken(cert, transport):
        raise RuntimeError("OCSP responder down")

    outages = []
    access = _access(_Authorizer(True), identity_of=broken, on_outage=lambda: outages.append(1))
    grant = _admit(access, cert="CERT", monkeypatch=monkeypatch)
    assert grant.status == 403 and outages == [1]


def test_the_token_and_its_scope(monkeypatch):
    access = _access(_Authorizer(True), token=TOKEN)
    grant = _admit(access, authorization=b"Bearer " + TOKEN, monkeypatch=monkeypatch)
    assert grant.allowed and grant.who == "bearer token" and grant.scope == "metrics"
    assert grant.covers("/metrics") and not grant.covers("/") and not grant.covers("/api/v1/status")
    assert _admit(access, authorization=b"bearer " + TOKEN, monkeypatch=monkeypatch).allowed
    for wrong in (b"Bearer " + TOKEN[:-1], b"Basic " + TOKEN, TOKEN, b"Bearer"):
        assert _admit(access, authorization=wrong, monkeypatch=monkeypatch).status == 403
    assert _admit(access, monkeypatch=monkeypatch).status == 401
    everything = _access(_Authorizer(True), token=TOKEN, token_scope="all")
    assert _admit(everything, authorization=b"Bearer " + TOKEN, monkeypatch=monkeypatch).covers("/")


def test_without_a_configured_token_a_bearer_header_is_refused(monkeypatch):
    access = _access(_Authorizer(True))
    assert _admit(access, authorization=b"Bearer anything-at-all-here", monkeypatch=monkeypatch).status == 403


def test_a_refused_certificate_may_still_carry_the_token(monkeypatch):
    access = _access(_Authorizer(False), identity_of=lambda cert, transport: "pe1", token=TOKEN)
    grant = _admit(access, cert="CERT", authorization=b"Bearer " + TOKEN, monkeypatch=monkeypatch)
    assert grant.allowed and grant.scope == "metrics"
    refused = _admit(access, cert="CERT", monkeypatch=monkeypatch)
    assert (refused.status, refused.who) == (403, "pe1")


def test_the_scope_is_checked():
    with pytest.raises(ValueError):
        _access(None, token_scope="write")


def test_the_registrars_gate_is_used_when_it_has_one():
    class Registrar:
        gate = Gate()

    assert admin_gate(Registrar()) is Registrar.gate
    assert isinstance(admin_gate(object()), Gate)
