"""Unit tests of rserpool.plugins.radius: discovery, options, providers,
sharing and life cycle (fake UDP reactor, no FreeRADIUS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pyrad import packet as _packet
from twisted.application.service import IService
from zope.interface.verify import verifyObject

from rserpool.backends.radius import BackendUnavailable, RadiusServer
from rserpool.config import load_config
from rserpool.errors import PluginError
from rserpool.interfaces import IBackendFactory, IChapVerifier, Identity, IPoolAuthorizer
from rserpool.plugin import find_factories, load_named
from rserpool.plugins.radius import (
    RADIUS_OPTIONS,
    RadiusAuthorizerService,
    RadiusChapVerifierService,
    options_from_section,
    shared_radius,
)
from tests.test_backends_radius import CHALLENGE, RESPONSE, FakeReactor, decode, reply_to, result_of


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "radius.secret"
    path.write_bytes(b"secret-a\n")
    path.chmod(0o600)
    return path


def opts(secret: Path, **extra: str) -> dict[str, str]:
    options = {"servers": "127.0.0.1:18121", "secret_file": str(secret),
               "authorization": "vsa,filter-id", "timeout": "0.5", "retries": "1"}
    options.update(extra)
    return options


def written(reactor: FakeReactor) -> list[bytes]:
    return [data for port in reactor.ports for data, _ in port.written]


def answer(reactor: FakeReactor, data: bytes, **kwargs: Any) -> None:
    server = RadiusServer("127.0.0.1", 18121, b"secret-a")
    reactor.ports[0].protocol.datagramReceived(reply_to(data, server, **kwargs), server.address)


# ------------------------------------------------------------ discovery


@pytest.mark.parametrize("kind", ["authorizer", "chap-verifier"])
def test_factories_found(kind: str) -> None:
    [factory] = [f for f in find_factories(kind) if f.name == "radius"]
    assert verifyObject(IBackendFactory, factory)
    assert factory.kind == kind and factory.description
    assert set(RADIUS_OPTIONS) <= set(factory.options)


def test_built_providers_verify(secret_file: Path) -> None:
    reactor = FakeReactor()
    authorizer = load_named("authorizer", "radius", opts(secret_file), reactor)
    verifier = load_named("chap-verifier", "radius", opts(secret_file), reactor)
    assert isinstance(authorizer, RadiusAuthorizerService)
    assert isinstance(verifier, RadiusChapVerifierService)
    assert verifyObject(IPoolAuthorizer, authorizer) and verifyObject(IService, authorizer)
    assert verifyObject(IChapVerifier, verifier) and verifyObject(IService, verifier)
    # the backend objects declare the interfaces too
    assert verifyObject(IPoolAuthorizer, authorizer.authorizer)
    assert verifyObject(IChapVerifier, verifier.shared.verifier)
    assert "secret-a" not in repr(authorizer) + repr(verifier)


# ------------------------------------------------------------ options


@pytest.mark.parametrize("bad, message", [
    ({"timout": "1"}, "unknown option 'timout'"),
    ({"servers": ""}, "'servers' is required"),
    ({"secret_file": ""}, "'secret_file' is required"),
    ({"timeout": "soon"}, "'timeout' must be a number"),
    ({"timeout": "0"}, "'timeout' must be > 0"),
    ({"retries": "two"}, "'retries' must be an integer"),
    ({"authorize_only": "maybe"}, "'authorize_only' must be yes or no"),
    ({"authorization": "class,ldap"}, "unknown authorization source"),
    ({"servers": "radius.example:1812"}, "does not appear to be an IPv4 or IPv6 address"),
    ({"max_in_flight": "0"}, "max_in_flight"),
])
def test_bad_options_rejected(secret_file: Path, bad: dict[str, str], message: str) -> None:
    with pytest.raises(PluginError, match=message):
        load_named("authorizer", "radius", opts(secret_file, **bad), FakeReactor())


def test_rules_is_an_authorizer_option_only(secret_file: Path) -> None:
    with pytest.raises(PluginError, match="unknown option 'rules'"):
        load_named("chap-verifier", "radius", opts(secret_file, rules="x"), FakeReactor())


def test_world_readable_or_missing_secret_refused(secret_file: Path, tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="No such file"):
        load_named("authorizer", "radius", opts(tmp_path / "missing"), FakeReactor())
    secret_file.chmod(0o644)
    with pytest.raises(PluginError, match="readable by everyone"):
        load_named("authorizer", "radius", opts(secret_file), FakeReactor())


def test_options_from_config_section(secret_file: Path) -> None:
    config = load_config(text=(
        "[radius]\nservers = 127.0.0.1:18121, 127.0.0.2:18122\n"
        f"secret_file = {secret_file}\nauthorize_only = no\ntimeout = 0.25\n"))
    options = options_from_section(config["radius"])
    assert options["servers"] == "127.0.0.1:18121, 127.0.0.2:18122"
    assert options["authorize_only"] == "no" and options["timeout"] == "0.25"
    assert "dictionary" not in options  # empty: the shipped dictionary
    provider = load_named("authorizer", "radius", options, FakeReactor())
    assert [s.port for s in provider.client.servers] == [18121, 18122]
    assert provider.client.timeout == 0.25
    assert provider.authorizer.use_authorize_only is False


# ------------------------------------------------------------ sharing and the cache


def test_one_client_per_configuration(secret_file: Path) -> None:
    reactor = FakeReactor()
    a = load_named("authorizer", "radius", opts(secret_file), reactor)
    v = load_named("chap-verifier", "radius", opts(secret_file, timeout="0.50"), reactor)
    assert a.shared is v.shared and a.client is v.client
    other = load_named("authorizer", "radius", opts(secret_file, retries="2"), reactor)
    assert other.client is not a.client
    elsewhere = load_named("authorizer", "radius", opts(secret_file), FakeReactor())
    assert elsewhere.client is not a.client


def test_chap_accept_authorizes_without_a_second_request(secret_file: Path) -> None:
    reactor = FakeReactor()
    authorizer = load_named("authorizer", "radius", opts(secret_file), reactor)
    verifier = load_named("chap-verifier", "radius", opts(secret_file), reactor)
    d = verifier.verify_chap("pe1", 7, CHALLENGE, RESPONSE)
    [request] = written(reactor)
    assert decode(request)["CHAP-Password"] == [bytes([7]) + RESPONSE]
    answer(reactor, request, Filter_Id="echo-servers", RSerPool_Allowed_Pool=["echo", "discard"])
    identity = result_of(d)
    assert isinstance(identity, Identity)
    assert identity.name == "pe1" and identity.groups == frozenset({"echo-servers"})
    assert identity.attributes["pools"] == ("echo", "discard")
    assert result_of(authorizer.authorize("pe1", frozenset(), "register", b"echo")) is True
    assert result_of(authorizer.authorize("pe1", frozenset(), "register", b"daytime")) is False
    assert authorizer.stats["requests"] == 1


def test_reject_is_none_and_outage_is_backend_unavailable(secret_file: Path) -> None:
    reactor = FakeReactor()
    verifier = load_named("chap-verifier", "radius", opts(secret_file), reactor)
    d = verifier.verify_chap("pe1", 7, CHALLENGE, RESPONSE)
    answer(reactor, written(reactor)[0], code=_packet.AccessReject)
    assert result_of(d) is None
    d = verifier.verify_chap("pe1", 8, CHALLENGE, RESPONSE)
    reactor.advance(0.5)  # timeout 0.5: one retransmission
    assert not d.called and len(written(reactor)) == 3
    reactor.advance(0.5)
    assert result_of(d).check(BackendUnavailable)


def test_rules_file_fallback(secret_file: Path, tmp_path: Path) -> None:
    rules = tmp_path / "authz.rules"
    rules.write_text("@echo-servers resolve echo\n")
    reactor = FakeReactor()
    authorizer = load_named("authorizer", "radius", opts(secret_file, rules=str(rules)), reactor)
    plain = load_named("authorizer", "radius", opts(secret_file), reactor)
    assert authorizer.shared is plain.shared
    d = authorizer.authorize("pe1", frozenset(), "resolve", b"echo")
    [request] = written(reactor)
    assert decode(request)["Service-Type"] == ["Authorize-Only"]
    answer(reactor, request, Filter_Id="echo-servers")
    assert result_of(d) is True  # the RADIUS group, through the rules file
    assert result_of(plain.authorize("pe1", frozenset(), "resolve", b"echo")) is False
    assert authorizer.stats["requests"] == 1  # one shared cache


# ------------------------------------------------------------ life cycle


def test_client_runs_while_a_provider_runs(secret_file: Path) -> None:
    reactor = FakeReactor()
    a = load_named("authorizer", "radius", opts(secret_file), reactor)
    v = load_named("chap-verifier", "radius", opts(secret_file), reactor)
    a.startService()
    v.startService()
    assert len(reactor.ports) == 1 and a.running and v.running
    pending = a.authorize("pe9", frozenset(), "register", b"echo")
    assert result_of(a.stopService()) is None
    assert not reactor.ports[0].stopped and not pending.called  # v still runs
    assert result_of(v.stopService()) is None
    assert reactor.ports[0].stopped
    assert result_of(pending).check(BackendUnavailable)


def test_tap_makes_the_authorizer_a_child_of_the_registrar(secret_file: Path) -> None:
    from rserpool.tap import build_registrar

    config = load_config(text=(
        "[tls]\nenabled = no\n[security]\nauthorizer = radius\n"
        f"[radius]\nservers = 127.0.0.1:18121\nsecret_file = {secret_file}\n"
        "[authorizer:radius]\ntimeout = 0.3\n"))
    registrar = build_registrar(config, FakeReactor())
    assert isinstance(registrar.authorizer, RadiusAuthorizerService)
    assert registrar.authorizer.parent is registrar
    assert registrar.authorizer.client.timeout == 0.3  # [authorizer:radius] overrides [radius]
    assert shared_radius(registrar.reactor, opts(secret_file, timeout="0.3",
                                                   authorization="class,filter-id,vsa",
                                                   retries="2")) is registrar.authorizer.shared
