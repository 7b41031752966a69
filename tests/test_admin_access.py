"""Admission to the admin door (rserpool.admin.access), without sockets."""

from __future__ import annotations

import os

import pytest
from twisted.internet import defer

from rserpool.admin.access import AdminAccess, Grant, TokenError, load_token
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


def _admit(access, cert=None, authorization=None, monkeypatch=None):
    import rserpool.admin.access as module

    monkeypatch.setattr(module, "peer_certificate", lambda transport: cert)
    results = []
    access.admit(object(), authorization).addBoth(results.append)
    (grant,) = results
    return grant


def test_a_certificate_identity_is_put_to_the_authorizer_for_admin(monkeypatch):
    authorizer = _Authorizer(True)
    access = AdminAccess(authorizer=authorizer, identity_of=lambda cert, transport: "ops",
                         groups_of=lambda identity: defer.succeed(["operators"]))
    grant = _admit(access, cert="CERT", monkeypatch=monkeypatch)
    assert grant == Grant(True, 200, "ops")
    assert authorizer.asked == [("ops", frozenset({"operators"}), "admin", b"")]
    assert grant.covers("/api/v1/status") and grant.covers("/metrics")


@pytest.mark.parametrize("answer", [False, None, "yes", 1])
def test_anything_but_true_is_a_refusal(monkeypatch, answer):
    access = AdminAccess(authorizer=_Authorizer(answer), identity_of=lambda cert, transport: "pe1")
    grant = _admit(access, cert="CERT", monkeypatch=monkeypatch)
    assert (grant.allowed, grant.status, grant.who) == (False, 403, "pe1")


def test_an_authorizer_outage_refuses_and_is_reported(monkeypatch):
    outages = []
    access = AdminAccess(authorizer=_Authorizer(RuntimeError("down")), identity_of=lambda cert, transport: "ops",
                         on_outage=lambda: outages.append(1))
    grant = _admit(access, cert="CERT", monkeypatch=monkeypatch)
    assert (grant.allowed, grant.status) == (False, 403) and outages == [1]


def test_a_certificate_without_identity_is_refused(monkeypatch):
    def no_identity(cert, transport):
        raise CertIdentityError("no name")

    for identity_of in (no_identity, lambda cert, transport: None):
        authorizer = _Authorizer(True)
        access = AdminAccess(authorizer=authorizer, identity_of=identity_of)
        grant = _admit(access, cert="CERT", monkeypatch=monkeypatch)
        assert (grant.allowed, grant.status) == (False, 403) and authorizer.asked == []


def test_the_token_and_its_scope(monkeypatch):
    access = AdminAccess(authorizer=_Authorizer(True), identity_of=lambda cert, transport: "ops", token=TOKEN)
    grant = _admit(access, authorization=b"Bearer " + TOKEN, monkeypatch=monkeypatch)
    assert grant.allowed and grant.who == "bearer token" and grant.scope == "metrics"
    assert grant.covers("/metrics") and not grant.covers("/") and not grant.covers("/api/v1/status")
    assert _admit(access, authorization=b"bearer " + TOKEN, monkeypatch=monkeypatch).allowed
    for wrong in (b"Bearer " + TOKEN[:-1], b"Basic " + TOKEN, TOKEN, b"Bearer"):
        assert _admit(access, authorization=wrong, monkeypatch=monkeypatch).status == 403
    assert _admit(access, monkeypatch=monkeypatch).status == 401
    everything = AdminAccess(authorizer=_Authorizer(True), identity_of=lambda cert, transport: "x", token=TOKEN,
                             token_scope="all")
    assert _admit(everything, authorization=b"Bearer " + TOKEN, monkeypatch=monkeypatch).covers("/")


def test_without_a_configured_token_a_bearer_header_is_refused(monkeypatch):
    access = AdminAccess(authorizer=_Authorizer(True), identity_of=lambda cert, transport: "ops")
    assert _admit(access, authorization=b"Bearer anything-at-all-here", monkeypatch=monkeypatch).status == 403


def test_a_refused_certificate_may_still_carry_the_token(monkeypatch):
    access = AdminAccess(authorizer=_Authorizer(False), identity_of=lambda cert, transport: "pe1", token=TOKEN)
    grant = _admit(access, cert="CERT", authorization=b"Bearer " + TOKEN, monkeypatch=monkeypatch)
    assert grant.allowed and grant.scope == "metrics"
    refused = _admit(access, cert="CERT", monkeypatch=monkeypatch)
    assert (refused.status, refused.who) == (403, "pe1")


def test_the_scope_is_checked():
    with pytest.raises(ValueError):
        AdminAccess(authorizer=None, identity_of=None, token_scope="write")
