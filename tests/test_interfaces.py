"""rserpool.interfaces: the Identity value and every provider against its interface."""

from __future__ import annotations

import pytest
from twisted.cred.checkers import ICredentialsChecker
from zope.interface.verify import verifyClass, verifyObject

from rserpool.backends.filestore import FileStore, RulesFileAuthorizer
from rserpool.interfaces import (
    ACTIONS,
    KIND_INTERFACES,
    KINDS,
    IBackendFactory,
    ICertificateMapping,
    IChapSecretStore,
    Identity,
    IGroupSource,
    IPoolAuthorizer,
    ISrpVerifierStore,
)
from rserpool.plugin import find_factories
from rserpool.security import credentials as cred


def test_identity_value() -> None:
    ident = Identity.create("pe1", "certificate", ["b", "a"], {"fp": "ab", "multi": ["x", "y"]})
    assert ident.groups == frozenset({"a", "b"})
    assert ident.attributes["fp"] == ("ab",)
    assert ident.attributes["multi"] == ("x", "y")
    with pytest.raises(TypeError):
        ident.attributes["new"] = ("z",)  # type: ignore[index]
    more = ident.with_groups({"c"}).with_mechanism("psk")
    assert more.groups == {"a", "b", "c"} and more.mechanism == "psk" and ident.mechanism == "certificate"
    assert Identity("pe1", "x") == Identity.create("pe1", "x", attributes={"ignored": "in equality"})
    assert hash(Identity("pe1")) == hash(Identity("pe1"))


@pytest.mark.parametrize("bad", ["", "a\nb", "x" * 256])
def test_identity_names_are_checked(bad: str) -> None:
    with pytest.raises(ValueError):
        Identity(bad)


def test_kinds_map_to_interfaces() -> None:
    assert set(KINDS) == set(KIND_INTERFACES)
    assert set(ACTIONS) == {"register", "deregister", "resolve", "peer", "admin", "opaque-transport"}


def test_file_store_provides_every_store_interface(tmp_path) -> None:
    store = FileStore(str(tmp_path / "credentials"))
    for interface in (ISrpVerifierStore, IChapSecretStore, ICertificateMapping, IGroupSource):
        assert verifyObject(interface, store)


def test_rules_file_authorizer_provides_ipoolauthorizer(tmp_path) -> None:
    assert verifyObject(IPoolAuthorizer, RulesFileAuthorizer(str(tmp_path / "rules")))


@pytest.mark.parametrize("checker_class", [cred.CertificateChecker, cred.PskChecker, cred.ChapChecker,
                                           cred.SrpChecker])
def test_checkers_implement_icredentialschecker(checker_class: type) -> None:
    assert verifyClass(ICredentialsChecker, checker_class)


def test_built_checkers_verify(tmp_path) -> None:
    store = FileStore(str(tmp_path / "credentials"))
    for checker in (cred.CertificateChecker(store, store), cred.PskChecker(store), cred.ChapChecker(store),
                    cred.SrpChecker(store, b"s" * 16, store)):
        assert verifyObject(ICredentialsChecker, checker)


def test_builtin_factories_provide_ibackendfactory() -> None:
    factories = find_factories()
    assert factories
    for factory in factories:
        assert verifyObject(IBackendFactory, factory)
        assert factory.kind in KINDS
