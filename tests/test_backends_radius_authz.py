"""Unit tests of rserpool.backends.radius_authz (verifier, authorizer, config)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pyrad import packet as _packet
from twisted.internet import defer, task

from rserpool.backends.radius import BackendUnavailable
from rserpool.backends.radius_decision import RadiusDecision
from rserpool.backends.radius_authz import (
    RadiusAuthorizer,
    RadiusChapVerifier,
    radius_from_config,
    read_secret_file,
)
from rserpool.security.authz import RulesAuthorizer, parse_rules
from tests.test_backends_radius import (
    CHALLENGE, RESPONSE, A, B, FakeReactor, deliver, make_client, reply_to, result_of, writes,
)


class FakeClient:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.pending: list[Any] = []

    def authorize_only(self, identity: str):
        self.calls.append(identity)
        d = defer.Deferred()
        self.pending.append(d)
        return d


def test_authorizer_cache_coalescing_ttl() -> None:
    clock = task.Clock()
    client = FakeClient()
    authz = RadiusAuthorizer(client, clock, ttl=60, negative_ttl=5, sources=["vsa"])
    d1 = authz.authorize("pe-cert", frozenset(), "register", b"daytime-1")
    d2 = authz.authorize("pe-cert", frozenset(), "register", b"echo")
    assert client.calls == ["pe-cert"] and not d1.called
    client.pending[0].callback(RadiusDecision(True, "pe-cert", attributes={
        "RSerPool-Allowed-Pool": ("daytime-*",)}))
    assert result_of(d1) is True and result_of(d2) is False
    assert result_of(authz.authorize("pe-cert", frozenset(), "deregister", b"daytime-2")) is True
    assert result_of(authz.authorize("pe-cert", frozenset(), "resolve", b"daytime-2")) is False
    assert client.calls == ["pe-cert"]
    clock.advance(60)
    authz.authorize("pe-cert", frozenset(), "register", b"daytime-1")
    assert client.calls == ["pe-cert", "pe-cert"]


def test_authorizer_refusal_rules_and_errors() -> None:
    clock = task.Clock()
    client = FakeClient()
    rules = RulesAuthorizer(parse_rules("@ops resolve *\n* register public-*\n"))
    authz = RadiusAuthorizer(client, clock, rules=rules, max_entries=2)
    authz.remember(RadiusDecision(True, "a", frozenset({"ops"})))
    assert result_of(authz.authorize("a", frozenset(), "resolve", b"x")) is True
    assert result_of(authz.authorize("a", frozenset(), "register", b"public-1")) is True
    authz.remember(RadiusDecision(False, "b"))
    assert result_of(authz.authorize("b", frozenset(), "register", b"public-1")) is False
    assert result_of(authz.authorize(None, frozenset(), "register", b"public-1")) is False
    authz.remember(RadiusDecision(True, "c"))
    assert len(authz) == 2 and authz.cached("a") is None  # LRU bound
    d = authz.authorize("d", frozenset(), "register", b"public-1")
    client.pending[-1].errback(BackendUnavailable("down"))
    failure = result_of(d)
    assert failure.check(BackendUnavailable)
    assert authz.cached("d") is None


def test_authorizer_without_authorize_only() -> None:
    authz = RadiusAuthorizer(FakeClient(), task.Clock(), authorize_only=False)
    assert result_of(authz.authorize("pe1", frozenset(), "register", b"echo")) is False


def test_chap_verifier_maps_decisions() -> None:
    client, reactor = make_client()
    authz = RadiusAuthorizer(None, reactor, sources=["class"])
    verifier = RadiusChapVerifier(client, ["class"], authz)
    request = ("pe1", 7, CHALLENGE, RESPONSE)
    d = verifier.verify_chap(*request)
    deliver(reactor, reply_to(writes(reactor)[0][0], Class=b"rserpool:pools=echo"))
    accepted = result_of(d)
    assert (accepted.name, accepted.mechanism) == ("pe1", "CHAP-MD5")
    assert authz.cached("pe1").pools == ("echo",)
    d = verifier.verify_chap(*request)
    deliver(reactor, reply_to(writes(reactor)[1][0], code=_packet.AccessReject))
    assert result_of(d) is None
    d = verifier.verify_chap(*request)
    reactor.pump([1.0] * 3)
    assert result_of(d).check(BackendUnavailable)


def test_from_config(tmp_path: Path) -> None:
    secret = tmp_path / "radius.secret"
    secret.write_bytes(b"s3cret\n")
    secret.chmod(0o600)
    reactor = FakeReactor()
    client, verifier, authorizer = radius_from_config(reactor, {
        "servers": "127.0.0.1:18121, 127.0.0.2:18122", "secret_file": str(secret),
        "timeout": "0.5", "retries": "1", "authorization": "class|vsa", "cache_ttl": "10",
        "authorize_only": "no", "nas_identifier": "enrp-1",
    })
    assert [s.address for s in client.servers] == [A.address, B.address]
    assert client.servers[0].secret == b"s3cret" and client.timeout == 0.5 and client.retries == 1
    assert authorizer.sources == {"class", "vsa"} and verifier.sources == {"class", "vsa"}
    assert authorizer.ttl == 10 and not authorizer.use_authorize_only
    secret.chmod(0o644)
    with pytest.raises(ValueError, match="readable by everyone"):
        read_secret_file(str(secret))
    secret.chmod(0o600)
    secret.write_bytes(b"\n")
    with pytest.raises(ValueError, match="empty"):
        read_secret_file(str(secret))
    secret.write_bytes(b"x")
    with pytest.raises(ValueError, match="authorization source"):
        radius_from_config(reactor, {"servers": "127.0.0.1", "secret_file": str(secret),
                                     "authorization": "ldap"})


def test_an_opaque_transport_is_granted_by_the_rules_file_only() -> None:
    # The reply's pools grant register/deregister; registering an Opaque
    # Transport (no address to check) needs a rule naming the action.
    rules = RulesAuthorizer(parse_rules("a all echo\nb opaque-transport echo\n"))
    for authz in (RadiusAuthorizer(FakeClient(), task.Clock()),
                  RadiusAuthorizer(FakeClient(), task.Clock(), rules=rules)):
        for name in ("a", "b"):
            authz.remember(RadiusDecision(True, name, pools=("echo",)))
        assert result_of(authz.authorize("a", frozenset(), "register", b"echo")) is True
        assert result_of(authz.authorize("a", frozenset(), "opaque-transport", b"echo")) is False
        expected = authz.rules is not None
        assert result_of(authz.authorize("b", frozenset(), "opaque-transport", b"echo")) is expected
