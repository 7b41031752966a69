"""LDAP for the registrar: the pool authorizer and the ``[ldap]`` configuration.

- :class:`LdapAuthorizer` (``authorize(identity, groups, action, pool_handle)
  -> Deferred[bool]``) decides from the directory entry of the identity:
  by group membership (a group named like the pool, optionally with a
  prefix, or an explicit group-to-pools table) and/or by the pools
  attribute.  Default deny.
- :func:`ldap_from_config` builds the directory and the authorizer from an
  ``[ldap]`` section (keys in docs/ldap.md).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Mapping

from twisted.internet import defer
from zope.interface import implementer

from rserpool.backends.ldap import LdapDirectory
from rserpool.backends.ldap_schema import LdapEntry, LdapError, LdapSchema, LdapTls
from rserpool.interfaces import IPoolAuthorizer
from rserpool.security.authz import pool_matches

__all__ = [
    "AUTHORIZATION_MODES",
    "CONFIG_KEYS",
    "LdapAuthorizer",
    "ldap_from_config",
    "parse_group_pools",
    "read_password_file",
]

#: ``groups``: a group grants the pool named like it; ``attribute``: the
#: entry's pools attribute lists pool-handle patterns.
AUTHORIZATION_MODES = frozenset({"groups", "attribute"})


@implementer(IPoolAuthorizer)
class LdapAuthorizer:
    """The registrar's pool authorizer from the directory.

    For an identity with an entry, and ``action`` in ``pool_actions``:

    - ``groups`` mode: each of the entry's groups (plus the ``groups`` the
      registrar passes in) grants pools: those listed for it in
      ``group_pools`` when that table is given (patterns, as in
      :func:`~rserpool.security.authz.pool_matches`), else, for a group
      whose name starts with ``group_prefix``, the one pool whose handle
      (UTF-8) equals the rest of the name (``cn=echo`` -> pool ``echo``).
    - ``attribute`` mode: a pattern of the entry's pools attribute matches.

    Anything else (another action, an anonymous PU, an unknown identity, no
    match) is left to the optional ``rules`` authorizer (an object with
    ``decide`` or ``authorize`` answering synchronously), else denied.  A
    directory failure fails the Deferred with ``BackendUnavailable``.
    """

    def __init__(
        self,
        directory: LdapDirectory,
        *,
        modes: Iterable[str] = ("groups",),
        group_pools: Mapping[str, Iterable[str]] | None = None,
        group_prefix: str = "",
        pool_actions: Iterable[str] = ("register", "deregister"),
        rules: Any = None,
    ) -> None:
        self.directory = directory
        self.modes = frozenset(modes)
        unknown = self.modes - AUTHORIZATION_MODES
        if unknown or not self.modes:
            raise LdapError(f"authorization must be one or both of "
                            f"{', '.join(sorted(AUTHORIZATION_MODES))}, not {sorted(unknown)}")
        self.group_pools = (None if group_pools is None else
                            {name: tuple(patterns) for name, patterns in group_pools.items()})
        self.group_prefix = group_prefix
        self.pool_actions = frozenset(pool_actions)
        self.rules = rules

    def __repr__(self) -> str:
        return f"<LdapAuthorizer {'+'.join(sorted(self.modes))} via {self.directory!r}>"

    def grants(self, entry: LdapEntry, groups: frozenset[str], pool_handle: bytes) -> bool:
        """Does the entry (with ``groups`` added) grant ``pool_handle``?"""
        if "attribute" in self.modes and any(
                pool_matches(pattern, pool_handle) for pattern in entry.pools):
            return True
        if "groups" in self.modes:
            for group in entry.groups | groups:
                if self.group_pools is not None:
                    if any(pool_matches(p, pool_handle) for p in self.group_pools.get(group, ())):
                        return True
                elif group.startswith(self.group_prefix):
                    name = group[len(self.group_prefix):]
                    if name and name.encode("utf-8") == pool_handle:
                        return True
        return False

    def authorize(self, identity: str | None, groups: Iterable[str], action: str,
                  pool_handle: bytes) -> defer.Deferred[bool]:
        given = frozenset(groups)
        if identity is None:
            return defer.succeed(self._rules(None, given, action, pool_handle))

        def decide(entry: LdapEntry | None) -> bool:
            if entry is None:
                return self._rules(identity, given, action, pool_handle)
            if action in self.pool_actions and self.grants(entry, given, pool_handle):
                return True
            return self._rules(identity, given | entry.groups, action, pool_handle)

        return self.directory.entry(identity).addCallback(decide)

    def _rules(self, identity: str | None, groups: frozenset[str], action: str,
               pool_handle: bytes) -> bool:
        if self.rules is None:
            return False
        decide: Callable[..., Any] = getattr(self.rules, "decide", None) or self.rules.authorize
        return decide(identity, groups, action, pool_handle) is True


# ------------------------------------------------------------ configuration

#: The ``[ldap]`` keys :func:`ldap_from_config` reads (docs/ldap.md).
CONFIG_KEYS: tuple[str, ...] = (
    "uri", "bind_dn", "bind_password_file", "base_dn", "user_filter", "cert_filter",
    "identity_attribute", "salt_attribute", "verifier_attribute", "pools_attribute",
    "group_attribute", "group_base", "group_filter", "group_name_attribute", "authorization",
    "group_prefix", "group_pools", "ca_file", "starttls", "tls_server_names",
    "allow_plaintext", "connect_timeout", "receive_timeout", "timeout", "pool_size",
    "max_pending", "cache_ttl", "negative_cache_ttl", "cache_size",
)


def read_password_file(path: str) -> str:
    """The bind password: the file's first line.  A file readable by others
    than its owner and group is refused."""
    if not path:
        raise LdapError("bind_password_file is required")
    mode = os.stat(path).st_mode
    if mode & 0o004:
        raise LdapError(f"LDAP password file {path} is readable by everyone (chmod 600 it)")
    with open(path, "r", encoding="utf-8") as handle:
        password = handle.readline(4096).rstrip("\r\n")
    if not password:
        raise LdapError(f"LDAP password file {path} is empty")
    return password


def parse_group_pools(text: str) -> dict[str, tuple[str, ...]] | None:
    """``"echo-pes=echo echo2; admins=*"`` -> ``{"echo-pes": ("echo", "echo2"), ...}``;
    empty text -> None (groups are named like their pool)."""
    if not text.strip():
        return None
    table: dict[str, tuple[str, ...]] = {}
    for item in text.split(";"):
        if not item.strip():
            continue
        group, sep, patterns = item.partition("=")
        if not sep or not group.strip() or not patterns.split():
            raise LdapError(f"bad group_pools item {item.strip()!r} (want group=pool ...)")
        table[group.strip()] = tuple(patterns.replace(",", " ").split())
    return table


def _words(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.replace("|", ",").replace(",", " ").split()
    return [str(v).strip() for v in value if str(v).strip()]


def ldap_from_config(
    reactor: Any, section: Mapping[str, Any], *, rules: Any = None,
) -> tuple[LdapDirectory, LdapAuthorizer]:
    """Build the directory and the authorizer from an ``[ldap]`` section
    (values as strings or already typed).  Unknown keys are errors."""
    unknown = sorted(set(section) - set(CONFIG_KEYS))
    if unknown:
        raise LdapError(f"unknown [ldap] option(s): {', '.join(unknown)}")

    def get(key: str, default: Any, kind: Callable[[Any], Any] = str) -> Any:
        value = section.get(key, default)
        if value is None or (isinstance(value, str) and not value.strip()):
            value = default
        if isinstance(value, str):
            value = value.strip()
            if kind is bool:
                if value.lower() in ("1", "yes", "true", "on"):
                    return True
                if value.lower() in ("0", "no", "false", "off"):
                    return False
                raise LdapError(f"[ldap] {key}: not a yes/no value: {value!r}")
        return kind(value)

    defaults = LdapSchema()
    schema = LdapSchema(
        user_filter=get("user_filter", defaults.user_filter),
        cert_filter=get("cert_filter", defaults.cert_filter),
        identity_attribute=get("identity_attribute", defaults.identity_attribute),
        salt_attribute=get("salt_attribute", defaults.salt_attribute),
        verifier_attribute=get("verifier_attribute", defaults.verifier_attribute),
        pools_attribute=get("pools_attribute", defaults.pools_attribute),
        group_attribute=(section.get("group_attribute", defaults.group_attribute) or "").strip(),
        group_base=get("group_base", ""),
        group_filter=get("group_filter", defaults.group_filter),
        group_name_attribute=get("group_name_attribute", defaults.group_name_attribute),
    )
    ca_file = get("ca_file", "")
    tls = None
    if ca_file:
        tls = LdapTls(ca_file=ca_file, starttls=get("starttls", True, bool),
                      server_names=tuple(_words(section.get("tls_server_names", ""))))
    pool_size = get("pool_size", 4, int)
    directory = LdapDirectory(
        reactor,
        get("uri", ""),
        get("bind_dn", ""),
        read_password_file(get("bind_password_file", "")),
        get("base_dn", ""),
        schema=schema,
        tls=tls,
        allow_plaintext=get("allow_plaintext", False, bool),
        connect_timeout=get("connect_timeout", 2.0, float),
        receive_timeout=get("receive_timeout", 2.0, float),
        timeout=get("timeout", 0.0, float) or None,
        pool_min=1,
        pool_max=pool_size,
        max_pending=get("max_pending", 0, int) or None,
        cache_ttl=get("cache_ttl", 300.0, float),
        negative_cache_ttl=get("negative_cache_ttl", 30.0, float),
        max_cache=get("cache_size", 10_000, int),
    )
    authorizer = LdapAuthorizer(
        directory,
        modes=_words(section.get("authorization", "groups")),
        group_pools=parse_group_pools(get("group_pools", "")),
        group_prefix=get("group_prefix", ""),
        rules=rules,
    )
    return directory, authorizer
