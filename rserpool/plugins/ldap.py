"""LDAP plugins: ``authorizer``, ``srp-store``, ``cert-mapping`` and
``groups``, all named ``ldap``.

Cheap to import: ``build`` imports the LDAP backend (ldap3) when it runs.

Every factory takes the keys of the registrar's ``[ldap]`` section
(``docs/ldap.md``; ``uri``, ``bind_dn``, ``bind_password_file`` and
``base_dn`` are required) as options; the authorizer also takes ``rules``,
a rules file (``docs/authorization.md``) consulted for what the directory
does not grant (``resolve``, ``@group`` rules over the directory groups).
Unknown options and bad values are ``ValueError``.  :func:`ldap_options`
gives a plugin its options from a configuration: ``[ldap]``, overridden by
``[<kind>:ldap]``.

One :class:`~rserpool.backends.ldap.LdapDirectory` (one thread pool, one
service connection, one cache) is shared by every provider built with the
same ``[ldap]`` options on the same reactor: the entry fetched to check an
SRP verifier also answers the authorization that follows.  The providers are
:class:`twisted.application.service.IService` objects: made children of the
registrar service (``rserpool.tap.build_registrar`` does it for the
authorizer), the directory's thread pool starts when the first of them
starts and stops when the last one stops.  A provider used while no
provider runs fails with ``BackendUnavailable`` ("backend not started").
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from zope.interface import implementer

from rserpool.interfaces import (
    ICertificateMapping,
    IGroupSource,
    IPoolAuthorizer,
    ISrpVerifierStore,
)
from rserpool.plugins.builtin import BuiltinFactory

__all__ = [
    "AUTHORIZER_OPTIONS",
    "LDAP_OPTIONS",
    "LdapAuthorizerService",
    "LdapCertMappingService",
    "LdapGroupsService",
    "LdapSrpStoreService",
    "SharedLdap",
    "ldap_options",
    "shared_ldap",
]

#: The ``[ldap]`` keys (``rserpool.backends.ldap_authz.CONFIG_KEYS``, kept
#: here so that finding the plugins does not import ldap3; a test checks
#: that the two agree).
LDAP_OPTIONS: tuple[str, ...] = (
    "uri", "bind_dn", "bind_password_file", "base_dn", "user_filter", "cert_filter",
    "identity_attribute", "salt_attribute", "verifier_attribute", "pools_attribute",
    "group_attribute", "group_base", "group_filter", "group_name_attribute", "authorization",
    "group_prefix", "group_pools", "ca_file", "starttls", "tls_server_names",
    "allow_plaintext", "connect_timeout", "receive_timeout", "timeout", "pool_size",
    "max_pending", "cache_ttl", "negative_cache_ttl", "cache_size",
)
AUTHORIZER_OPTIONS: tuple[str, ...] = LDAP_OPTIONS + ("rules",)
_REQUIRED = ("uri", "bind_dn", "bind_password_file", "base_dn")


def ldap_options(config: Any, kind: str = "authorizer") -> dict[str, str]:
    """The options of the ``ldap`` plugin of ``kind`` from a
    :class:`~rserpool.config.Config`: the ``[ldap]`` section, overridden by
    ``[<kind>:ldap]`` (relative ``*_file`` paths already resolved)."""
    return {**config.plugin_options("ldap"), **config.plugin_options(kind, "ldap")}


def _canonical(options: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The directory's options, stripped, without empty values (so that an
    empty key and an absent one share a directory)."""
    values = {k: v.strip() for k, v in options.items() if k in LDAP_OPTIONS and v.strip()}
    for key in _REQUIRED:
        if key not in values:
            raise ValueError(f"option {key!r} is required (the [ldap] section)")
    return tuple(sorted(values.items()))


class SharedLdap:
    """One directory (thread pool, connection, cache) and its authorizer,
    shared by the providers of one configuration: started by the first and
    stopped by the last of them."""

    def __init__(self, reactor: Any, options: Mapping[str, str]) -> None:
        from rserpool.backends.ldap import LdapError
        from rserpool.backends.ldap_authz import ldap_from_config

        self.reactor = reactor
        try:
            self.directory, self.authorizer = ldap_from_config(reactor, options)
        except LdapError as exc:
            raise ValueError(str(exc)) from None
        self.users = 0

    def __repr__(self) -> str:
        return f"<SharedLdap {self.directory!r} ({self.users} running)>"

    def acquire(self) -> None:
        self.users += 1
        self.directory.start()

    def release(self) -> None:
        self.users = max(0, self.users - 1)
        if not self.users:
            self.directory.stop()


_SHARED: "weakref.WeakValueDictionary[tuple[Any, ...], SharedLdap]" = weakref.WeakValueDictionary()


def shared_ldap(reactor: Any, options: Mapping[str, str]) -> SharedLdap:
    """The :class:`SharedLdap` for these ``[ldap]`` options on ``reactor``
    (built on first use; kept while a provider refers to it)."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    canonical = _canonical(options)
    key = (id(reactor),) + canonical
    shared = _SHARED.get(key)
    if shared is None or shared.reactor is not reactor:
        shared = SharedLdap(reactor, dict(canonical))
        _SHARED[key] = shared
    return shared


class _LdapService(Service):
    kind = "provider"

    def __init__(self, shared: SharedLdap) -> None:
        self.shared = shared

    def __repr__(self) -> str:
        return f"<LDAP {self.kind} {self.shared.directory!r}>"

    @property
    def directory(self) -> Any:
        return self.shared.directory

    def startService(self) -> None:  # noqa: N802 (Twisted)
        super().startService()
        self.shared.acquire()

    def stopService(self) -> None:  # noqa: N802 (Twisted)
        super().stopService()
        self.shared.release()


@implementer(IPoolAuthorizer)
class LdapAuthorizerService(_LdapService):
    """:class:`IPoolAuthorizer` by directory groups or pools attribute
    (:class:`~rserpool.backends.ldap_authz.LdapAuthorizer`) and an
    :class:`IService`."""

    kind = "authorizer"

    def __init__(self, shared: SharedLdap, rules: Any = None) -> None:
        super().__init__(shared)
        base = shared.authorizer
        if rules is None:
            self.authorizer = base
        else:
            from rserpool.backends.ldap_authz import LdapAuthorizer

            self.authorizer = LdapAuthorizer(
                shared.directory, modes=base.modes, group_pools=base.group_pools,
                group_prefix=base.group_prefix, pool_actions=base.pool_actions, rules=rules)

    def authorize(self, identity: str | None, groups: frozenset[str], action: str,
                  pool_handle: bytes) -> defer.Deferred[bool]:
        return self.authorizer.authorize(identity, groups, action, pool_handle)


@implementer(ISrpVerifierStore)
class LdapSrpStoreService(_LdapService):
    """:class:`ISrpVerifierStore`: ``(salt, verifier)`` from the directory."""

    kind = "srp-store"

    def srp_verifier(self, identity: str) -> defer.Deferred[tuple[bytes, bytes] | None]:
        return self.shared.directory.srp_verifier(identity)


@implementer(ICertificateMapping)
class LdapCertMappingService(_LdapService):
    """:class:`ICertificateMapping`: the entry listing the certificate's
    SHA-256 fingerprint or subject, with its directory groups."""

    kind = "cert-mapping"

    def identity_for(self, certificate: Any) -> defer.Deferred[Any]:
        return self.shared.directory.identity_for(certificate)


@implementer(IGroupSource)
class LdapGroupsService(_LdapService):
    """:class:`IGroupSource`: the entry's groups (``memberOf`` or a search)."""

    kind = "groups"

    def groups(self, identity: str) -> defer.Deferred[frozenset[str]]:
        return self.shared.directory.groups(identity)


# ---------------------------------------------------------------- builders


def _authorizer(options: Mapping[str, str], reactor: Any) -> LdapAuthorizerService:
    rules = None
    path = options.get("rules", "").strip()
    if path:
        from rserpool.backends.filestore import RulesFileAuthorizer

        rules = RulesFileAuthorizer(path)
    return LdapAuthorizerService(shared_ldap(reactor, options), rules)


def _builder(cls: type[_LdapService]) -> Any:
    def build(options: Mapping[str, str], reactor: Any) -> _LdapService:
        return cls(shared_ldap(reactor, options))

    return build


ldap_authorizer = BuiltinFactory(
    "authorizer", "ldap",
    "LDAP directory: pools by group membership or a pools attribute, cached",
    AUTHORIZER_OPTIONS, _authorizer)
ldap_srp_store = BuiltinFactory(
    "srp-store", "ldap", "SRP verifiers stored in an LDAP directory (rserpoolSrpVerifier)",
    LDAP_OPTIONS, _builder(LdapSrpStoreService))
ldap_cert_mapping = BuiltinFactory(
    "cert-mapping", "ldap", "certificate fingerprint or subject to an LDAP entry's identity",
    LDAP_OPTIONS, _builder(LdapCertMappingService))
ldap_groups = BuiltinFactory(
    "groups", "ldap", "identity groups from an LDAP directory (memberOf or a group search)",
    LDAP_OPTIONS, _builder(LdapGroupsService))
