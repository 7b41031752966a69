"""Unit tests of rserpool.backends.ldap_authz: the LDAP pool authorizer (on
the MOCK_SYNC directory of test_backends_ldap) and the [ldap] configuration."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from ldap3.core.exceptions import LDAPSocketOpenError
from twisted.internet.task import Clock

from rserpool.backends.ldap import LdapError, LdapUnavailable
from rserpool.backends.ldap_authz import (
    CONFIG_KEYS,
    LdapAuthorizer,
    ldap_from_config,
    parse_group_pools,
    read_password_file,
)
from rserpool.interfaces import IPoolAuthorizer
from rserpool.security.authz import RulesAuthorizer, parse_rules
from tests.test_backends_ldap import (
    BASE,
    SVC_DN,
    SVC_PW,
    CountingFactory,
    failure_of,
    make,
    result_of,
)


def authorizer(**kwargs: Any) -> tuple[LdapAuthorizer, CountingFactory]:
    factory = CountingFactory()
    directory, _ = make(factory=factory)
    return LdapAuthorizer(directory, **kwargs), factory


def test_provides_the_interface() -> None:
    assert IPoolAuthorizer.providedBy(authorizer()[0])


def test_by_group_named_like_the_pool() -> None:
    authz, factory = authorizer()
    assert result_of(authz.authorize("pe1", frozenset(), "register", b"echo")) is True
    assert result_of(authz.authorize("pe1", frozenset(), "deregister", b"discard")) is True
    assert result_of(authz.authorize("pe2", frozenset(), "register", b"discard")) is False
    assert result_of(authz.authorize("pe2", frozenset(), "register", b"echo")) is True
    assert result_of(authz.authorize("pe2", frozenset(), "register", b"ech")) is False
    assert result_of(authz.authorize("pe2", frozenset(), "register", b"echo2")) is False
    assert factory.searches == 2  # one cached entry per identity


def test_default_deny() -> None:
    authz, _ = authorizer()
    assert result_of(authz.authorize("nobody", frozenset(), "register", b"echo")) is False
    assert result_of(authz.authorize(None, frozenset({"echo"}), "resolve", b"echo")) is False
    assert result_of(authz.authorize("pe1", frozenset(), "resolve", b"echo")) is False
    assert result_of(authz.authorize("pe1", frozenset(), "peer", b"")) is False
    assert result_of(authz.authorize("pe1", frozenset(), "admin", b"")) is False
    assert result_of(authz.authorize("pe1", frozenset(), "register", b"\xff")) is False


def test_given_groups_count_for_known_identities_only() -> None:
    authz, _ = authorizer()
    assert result_of(authz.authorize("pe2", frozenset({"discard"}), "register", b"discard"))
    assert not result_of(authz.authorize("nobody", frozenset({"echo"}), "register", b"echo"))


def test_group_prefix() -> None:
    authz, _ = authorizer(group_prefix="ech")
    assert result_of(authz.authorize("pe1", frozenset(), "register", b"o")) is True
    assert result_of(authz.authorize("pe1", frozenset(), "register", b"echo")) is False
    assert result_of(authz.authorize("pe1", frozenset(), "register", b"discard")) is False


def test_group_pools_table() -> None:
    authz, _ = authorizer(group_pools=parse_group_pools("echo = echo-*, hex:00*; staff=*"))
    assert result_of(authz.authorize("pe2", frozenset(), "register", b"echo-1")) is True
    assert result_of(authz.authorize("pe2", frozenset(), "register", b"\x00\x01")) is True
    assert result_of(authz.authorize("pe2", frozenset(), "register", b"echo")) is False
    assert result_of(authz.authorize("pe1", frozenset(), "register", b"anything")) is True


def test_by_pools_attribute() -> None:
    authz, _ = authorizer(modes=["attribute"])
    assert result_of(authz.authorize("pe2", frozenset(), "register", b"echo")) is True
    assert result_of(authz.authorize("pe2", frozenset(), "register", b"\xff\x01")) is True
    assert result_of(authz.authorize("pe1", frozenset(), "register", b"echo")) is False
    both, _ = authorizer(modes=["attribute", "groups"])
    assert result_of(both.authorize("pe1", frozenset(), "register", b"echo")) is True


def test_rules_fallback() -> None:
    rules = RulesAuthorizer(parse_rules("allow @echo resolve *\nallow pe9 register echo\n"))
    authz, _ = authorizer(rules=rules)
    assert result_of(authz.authorize("pe1", frozenset(), "resolve", b"x")) is True  # LDAP group
    assert result_of(authz.authorize("nobody", frozenset(), "register", b"echo")) is False
    assert result_of(authz.authorize("pe9", frozenset(), "register", b"echo")) is True


def test_directory_failure_is_not_a_no() -> None:
    authz, factory = authorizer()
    factory.fail_open.append(LDAPSocketOpenError("refused"))
    assert failure_of(authz.authorize("pe1", frozenset(), "register", b"echo")).check(
        LdapUnavailable)


def test_bad_modes() -> None:
    directory, _ = make()
    with pytest.raises(LdapError):
        LdapAuthorizer(directory, modes=["group"])
    with pytest.raises(LdapError):
        LdapAuthorizer(directory, modes=[])


# ------------------------------------------------------------ configuration

def password_file(tmp_path: Path, text: str = SVC_PW + "\n", mode: int = 0o600) -> str:
    path = tmp_path / "ldap.pw"
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def test_read_password_file(tmp_path: Path) -> None:
    assert read_password_file(password_file(tmp_path)) == SVC_PW
    with pytest.raises(LdapError, match="everyone"):
        read_password_file(password_file(tmp_path, mode=0o644))
    with pytest.raises(LdapError, match="empty"):
        read_password_file(password_file(tmp_path, "\n"))
    with pytest.raises(LdapError):
        read_password_file("")


def test_parse_group_pools() -> None:
    assert parse_group_pools("") is None
    assert parse_group_pools("a=x y; b = z,w") == {"a": ("x", "y"), "b": ("z", "w")}
    for bad in ("a", "=x", "a="):
        with pytest.raises(LdapError):
            parse_group_pools(bad)


def test_from_config(tmp_path: Path) -> None:
    section = {
        "uri": "ldap://127.0.0.1:3890",
        "bind_dn": SVC_DN,
        "bind_password_file": password_file(tmp_path),
        "base_dn": BASE,
        "group_base": f"ou=pools,{BASE}",
        "authorization": "groups, attribute",
        "ca_file": "/ca.pem",
        "starttls": "yes",
        "connect_timeout": "1.5",
        "receive_timeout": "3",
        "pool_size": "6",
        "cache_ttl": "120",
        "negative_cache_ttl": "10",
        "cache_size": "50",
        "group_pools": "echo=echo*",
    }
    directory, authz = ldap_from_config(Clock(), section)
    assert directory.tls is not None and directory.tls.starttls and directory.encrypted
    assert directory.connect_timeout == 1.5 and directory.receive_timeout == 3.0
    assert directory.timeout == 7.5 and directory.pool_max == 6 and directory.max_pending == 48
    assert directory.cache_ttl == 120 and directory.negative_cache_ttl == 10
    assert directory.schema.group_base == f"ou=pools,{BASE}"
    assert authz.modes == {"groups", "attribute"} and authz.group_pools == {"echo": ("echo*",)}
    assert SVC_PW not in repr(directory) + repr(authz)
    assert set(section) <= set(CONFIG_KEYS)


def test_from_config_memberof_off_and_plaintext(tmp_path: Path) -> None:
    section = {"uri": "ldap://127.0.0.1", "bind_dn": SVC_DN, "base_dn": BASE,
               "bind_password_file": password_file(tmp_path), "group_attribute": "",
               "group_base": f"ou=pools,{BASE}"}
    with pytest.raises(LdapError, match="allow_plaintext"):
        ldap_from_config(Clock(), section)
    directory, _ = ldap_from_config(Clock(), {**section, "allow_plaintext": "yes"})
    assert directory.schema.group_attribute == "" and directory.plaintext_warning


@pytest.mark.parametrize("extra", [{"bind_pasword_file": "x"}, {"starttls": "maybe"},
                                   {"authorization": "everyone"}])
def test_from_config_errors(tmp_path: Path, extra: dict[str, str]) -> None:
    section = {"uri": "ldap://127.0.0.1", "bind_dn": SVC_DN, "base_dn": BASE,
               "bind_password_file": password_file(tmp_path), "ca_file": "/ca.pem", **extra}
    with pytest.raises(LdapError):
        ldap_from_config(Clock(), section)


def test_an_opaque_transport_is_granted_by_the_rules_file_only() -> None:
    # The directory grants pools for register/deregister; registering an
    # Opaque Transport (no address to check) needs a rule naming the action.
    authz, _ = authorizer()
    assert result_of(authz.authorize("pe1", frozenset(), "register", b"echo")) is True
    assert result_of(authz.authorize("pe1", frozenset(), "opaque-transport", b"echo")) is False
    rules = RulesAuthorizer(parse_rules("pe1 all echo\npe2 opaque-transport echo\n"))
    with_rules, _ = authorizer(rules=rules)
    assert result_of(with_rules.authorize("pe1", frozenset(), "opaque-transport", b"echo")) is False
    assert result_of(with_rules.authorize("pe2", frozenset(), "opaque-transport", b"echo")) is True
    assert result_of(with_rules.authorize("pe2", frozenset(), "opaque-transport", b"discard")) is False
