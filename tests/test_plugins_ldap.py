"""Unit tests of rserpool.plugins.ldap: discovery, options, providers,
sharing and life cycle (ldap3's MOCK_SYNC directory and a synchronous pool
on a task.Clock; no slapd: that is tests/test_service_ldap.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import IService
from twisted.python.threadpool import ThreadPool
from zope.interface.verify import verifyObject

from rserpool.backends.ldap_authz import CONFIG_KEYS
from rserpool.config import load_config
from rserpool.errors import BackendUnavailable, PluginError
from rserpool.interfaces import (
    KIND_INTERFACES,
    IBackendFactory,
    ICertificateMapping,
    IGroupSource,
    IPoolAuthorizer,
    ISrpVerifierStore,
)
from rserpool.plugin import find_factories, load_named
from rserpool.security import pki
from rserpool.security.certidentity import fingerprint_sha256
from rserpool.plugins.ldap import (
    AUTHORIZER_OPTIONS,
    LDAP_OPTIONS,
    LdapAuthorizerService,
    LdapCertMappingService,
    LdapGroupsService,
    LdapSrpStoreService,
    ldap_options,
    shared_ldap,
)
from tests.test_backends_ldap import (
    BASE,
    SALT,
    SVC_DN,
    SVC_PW,
    VERIFIER,
    SyncPool,
    ThreadlessClock,
    failure_of,
    mock_connection,
    result_of,
)

KINDS = {"authorizer": LdapAuthorizerService, "srp-store": LdapSrpStoreService,
         "cert-mapping": LdapCertMappingService, "groups": LdapGroupsService}


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "ldap.pw"
    path.write_text(SVC_PW + "\n")
    path.chmod(0o600)
    return path


def opts(password: Path, **extra: str) -> dict[str, str]:
    options = {"uri": "ldap://127.0.0.1:1", "bind_dn": SVC_DN, "bind_password_file": str(password),
               "base_dn": BASE, "allow_plaintext": "yes", "group_base": f"ou=pools,{BASE}",
               "cache_ttl": "60"}
    options.update(extra)
    return options


class CountingConnections:
    """Opens MOCK_SYNC connections and counts the searches made on them."""

    def __init__(self, extra: Any = None) -> None:
        self.searches = 0
        self.extra = extra

    def __call__(self) -> Any:
        conn = mock_connection(self.extra)
        conn.bind()
        search = conn.search

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.searches += 1
            return search(*args, **kwargs)

        conn.search = counted
        return conn


def mocked(provider: Any) -> CountingConnections:
    """Point the provider's shared directory at the mock directory, with a
    synchronous pool (no threads)."""
    directory = provider.shared.directory
    connections = CountingConnections()
    directory._connection_factory = connections
    directory._own_pool = False
    directory._pool = SyncPool()
    return connections


# ------------------------------------------------------------ discovery


def test_options_are_the_backend_config_keys() -> None:
    assert LDAP_OPTIONS == CONFIG_KEYS
    assert AUTHORIZER_OPTIONS == CONFIG_KEYS + ("rules",)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_factories_found(kind: str) -> None:
    [factory] = [f for f in find_factories(kind) if f.name == "ldap"]
    assert verifyObject(IBackendFactory, factory)
    assert factory.kind == kind and factory.description
    assert set(LDAP_OPTIONS) <= set(factory.options)
    assert ("rules" in factory.options) is (kind == "authorizer")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_built_providers_verify(kind: str, password_file: Path) -> None:
    provider = load_named(kind, "ldap", opts(password_file), ThreadlessClock())
    assert isinstance(provider, KINDS[kind])
    assert verifyObject(KIND_INTERFACES[kind], provider)
    assert verifyObject(IService, provider)
    assert SVC_PW not in repr(provider) and SVC_PW not in repr(provider.shared)


def test_the_backend_objects_declare_the_interfaces(password_file: Path) -> None:
    provider = load_named("authorizer", "ldap", opts(password_file), ThreadlessClock())
    assert verifyObject(IPoolAuthorizer, provider.authorizer)
    for interface in (ISrpVerifierStore, ICertificateMapping, IGroupSource):
        assert verifyObject(interface, provider.directory)


# ------------------------------------------------------------ options


@pytest.mark.parametrize("bad, message", [
    ({"url": "ldap://x"}, "unknown option 'url'"),
    ({"uri": ""}, "'uri' is required"),
    ({"base_dn": " "}, "'base_dn' is required"),
    ({"bind_dn": ""}, "'bind_dn' is required"),
    ({"uri": "http://127.0.0.1"}, "ldap:// or ldaps://"),
    ({"allow_plaintext": "no"}, "allow_plaintext"),
    ({"allow_plaintext": "perhaps"}, "not a yes/no value"),
    ({"timeout": "soon"}, "could not convert"),
    ({"authorization": "groups,magic"}, "authorization must be"),
    ({"user_filter": "(uid=fixed)"}, "must contain {identity}"),
    ({"group_pools": "echo"}, "bad group_pools item"),
])
def test_bad_options_rejected(password_file: Path, bad: dict[str, str], message: str) -> None:
    for kind in ("authorizer", "groups"):
        with pytest.raises(PluginError, match=message):
            load_named(kind, "ldap", opts(password_file, **bad), ThreadlessClock())


def test_rules_is_an_authorizer_option_only(password_file: Path) -> None:
    for kind in ("srp-store", "cert-mapping", "groups"):
        with pytest.raises(PluginError, match="unknown option 'rules'"):
            load_named(kind, "ldap", opts(password_file, rules="x"), ThreadlessClock())


def test_password_file_missing_or_world_readable(password_file: Path, tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="No such file"):
        load_named("authorizer", "ldap", opts(tmp_path / "missing"), ThreadlessClock())
    password_file.chmod(0o644)
    with pytest.raises(PluginError, match="readable by everyone"):
        load_named("authorizer", "ldap", opts(password_file), ThreadlessClock())


def test_options_from_the_configuration(password_file: Path, tmp_path: Path) -> None:
    ini = tmp_path / "registrar.ini"
    ini.write_text(
        "[security]\nauthorizer = ldap\n"
        f"[ldap]\nuri = ldap://127.0.0.1:3890\nbind_dn = {SVC_DN}\n"
        f"bind_password_file = {password_file.name}\nbase_dn = {BASE}\nca_file = ca.pem\n"
        "timeout = 1.5\n"
        "[authorizer:ldap]\ntimeout = 0.5\nrules = authz.rules\n")
    config = load_config(str(ini))
    options = ldap_options(config, "authorizer")
    assert options["bind_password_file"] == str(password_file)  # resolved against the file
    assert options["ca_file"] == str(tmp_path / "ca.pem")
    assert options["timeout"] == "0.5" and options["rules"] == str(tmp_path / "authz.rules")
    store = ldap_options(config, "srp-store")
    assert store["timeout"] == "1.5" and "rules" not in store
    assert ldap_options(load_config(text=""), "groups") == {}


# ------------------------------------------------------------ sharing


def test_one_directory_per_configuration(password_file: Path) -> None:
    reactor = ThreadlessClock()
    providers = {kind: load_named(kind, "ldap", opts(password_file), reactor) for kind in KINDS}
    shared = providers["authorizer"].shared
    assert all(p.shared is shared for p in providers.values())
    # blanks and empty keys do not make another configuration
    same = load_named("groups", "ldap", {**opts(password_file, uri=" ldap://127.0.0.1:1 "),
                                         "group_prefix": ""}, reactor)
    assert same.shared is shared
    other = load_named("groups", "ldap", opts(password_file, cache_ttl="5"), reactor)
    assert other.shared is not shared
    elsewhere = load_named("groups", "ldap", opts(password_file), ThreadlessClock())
    assert elsewhere.shared is not shared
    assert shared_ldap(reactor, opts(password_file)) is shared


def test_lookups_share_one_cache(password_file: Path) -> None:
    reactor = ThreadlessClock()
    store = load_named("srp-store", "ldap", opts(password_file), reactor)
    groups = load_named("groups", "ldap", opts(password_file), reactor)
    authorizer = load_named("authorizer", "ldap", opts(password_file), reactor)
    connections = mocked(store)
    store.startService()
    assert result_of(store.srp_verifier("pe1")) == (SALT, VERIFIER)
    assert connections.searches == 1
    # answered from the entry the SRP lookup fetched: no second search
    assert result_of(groups.groups("pe1")) == frozenset({"echo", "discard"})
    assert result_of(authorizer.authorize("pe1", frozenset(), "register", b"echo")) is True
    assert result_of(authorizer.authorize("pe1", frozenset(), "register", b"daytime")) is False
    assert connections.searches == 1
    reactor.advance(61)  # cache_ttl 60
    assert result_of(authorizer.authorize("pe1", frozenset(), "register", b"discard")) is True
    assert connections.searches == 2
    assert result_of(store.srp_verifier("nobody")) is None
    assert result_of(authorizer.authorize("nobody", frozenset(), "register", b"echo")) is False
    store.stopService()


def test_certificate_mapping(password_file: Path) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    ca = pki.create_ca("unit CA", now)
    cert = pki.create_client_certificate(ca, "pe9", now).certificate
    reactor = ThreadlessClock()
    mapping = load_named("cert-mapping", "ldap", opts(password_file), reactor)
    mocked(mapping)

    def add(conn: Any) -> None:
        conn.strategy.add_entry(f"uid=pe9,ou=elements,{BASE}", {
            "objectClass": ["account", "rserpoolPoolElement"], "uid": "pe9",
            "rserpoolCertFingerprint": fingerprint_sha256(cert),
            "memberOf": [f"cn=echo,ou=pools,{BASE}"]})

    mapping.directory._connection_factory = CountingConnections(add)
    mapping.startService()
    identity = result_of(mapping.identity_for(cert))
    assert identity.name == "pe9" and identity.mechanism == "certificate"
    assert identity.groups == frozenset({"echo"})
    other = pki.create_client_certificate(ca, "pe10", now).certificate
    assert result_of(mapping.identity_for(other)) is None
    mapping.stopService()


def test_rules_file_fallback(password_file: Path, tmp_path: Path) -> None:
    rules = tmp_path / "authz.rules"
    rules.write_text("@echo resolve echo\n")
    reactor = ThreadlessClock()
    with_rules = load_named("authorizer", "ldap", opts(password_file, rules=str(rules)), reactor)
    plain = load_named("authorizer", "ldap", opts(password_file), reactor)
    assert with_rules.shared is plain.shared
    connections = mocked(plain)
    plain.startService()
    # the directory group "echo" resolves echo through the rules file
    assert result_of(with_rules.authorize("pe1", frozenset(), "resolve", b"echo")) is True
    assert result_of(plain.authorize("pe1", frozenset(), "resolve", b"echo")) is False
    assert result_of(with_rules.authorize("pe1", frozenset(), "register", b"echo")) is True
    assert connections.searches == 1  # one shared cache
    plain.stopService()


# ------------------------------------------------------------ life cycle


def test_directory_runs_while_a_provider_runs(password_file: Path) -> None:
    reactor = ThreadlessClock()
    authorizer = load_named("authorizer", "ldap", opts(password_file), reactor)
    store = load_named("srp-store", "ldap", opts(password_file), reactor)
    directory = authorizer.directory
    # not started: fails closed, as an outage
    assert failure_of(store.srp_verifier("pe1")).check(BackendUnavailable)
    authorizer.startService()
    store.startService()
    assert directory.started and isinstance(directory._pool, ThreadPool)
    assert len(reactor.triggers) == 1  # the shutdown trigger of the pool
    authorizer.stopService()
    assert directory.started and store.running and not authorizer.running
    store.stopService()
    assert not directory.started and directory._pool is None and reactor.triggers == []
    assert failure_of(store.srp_verifier("pe1")).check(BackendUnavailable)
    # and again
    store.startService()
    assert directory.started
    store.stopService()
    assert not directory.started


def test_tap_makes_the_authorizer_a_child_of_the_registrar(password_file: Path) -> None:
    from rserpool.tap import build_registrar

    config = load_config(text=(
        "[tls]\nenabled = no\n[security]\nauthorizer = ldap\n"
        f"[ldap]\nuri = ldap://127.0.0.1:1\nbind_dn = {SVC_DN}\n"
        f"bind_password_file = {password_file}\nbase_dn = {BASE}\nallow_plaintext = yes\n"
        "timeout = 2\n[authorizer:ldap]\ntimeout = 0.3\n"))
    registrar = build_registrar(config, ThreadlessClock())
    assert isinstance(registrar.authorizer, LdapAuthorizerService)
    assert registrar.authorizer.parent is registrar
    assert registrar.authorizer.directory.timeout == 0.3  # [authorizer:ldap] overrides [ldap]


def test_tap_rejects_an_incomplete_ldap_section(password_file: Path) -> None:
    from rserpool.config import ConfigError
    from rserpool.tap import build_registrar

    config = load_config(text=(
        "[tls]\nenabled = no\n[security]\nauthorizer = ldap\n"
        f"[ldap]\nuri = ldap://127.0.0.1:1\nbind_dn = {SVC_DN}\n"
        f"bind_password_file = {password_file}\nallow_plaintext = yes\n"))
    with pytest.raises(ConfigError, match="'base_dn' is required"):
        build_registrar(config, ThreadlessClock())
