"""The LDAP backend's vocabulary, without a connection: its settings
(:class:`LdapTls`, :class:`LdapSchema`), its errors, filter templates, DN
parsing, and how a directory's answer becomes an :class:`LdapEntry`.

:mod:`rserpool.backends.ldap` runs the queries (ldap3 on a bounded thread
pool) and re-exports the public names; see ``docs/ldap.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import urlsplit

from ldap3.core import exceptions as ldap_exceptions
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from rserpool.errors import BackendUnavailable

__all__ = [
    "LdapEntry",
    "LdapError",
    "LdapOverloaded",
    "LdapSchema",
    "LdapTls",
    "LdapUnavailable",
    "entry_from_answer",
    "fill_filter",
    "group_name_from_dn",
    "group_names",
    "parse_uri",
    "raw_values",
    "search_result",
    "text_values",
    "valid_identity",
]

MAX_IDENTITY = 255
MAX_VALUES = 256  # values read from one attribute
MAX_SALT = 64
MAX_VERIFIER = 1024


class LdapError(ValueError):
    """Bad configuration or misuse (raised at once, never from a lookup)."""


class LdapUnavailable(BackendUnavailable):
    """The directory could not answer: down, slow, refused our bind, TLS
    failed, or its answer was unusable (ambiguous, malformed).  Not a "no"."""


class LdapOverloaded(LdapUnavailable):
    """Too many requests pending; this one was not sent."""


@dataclass(frozen=True, slots=True)
class LdapTls:
    """TLS to the directory.

    ``starttls``: upgrade an ``ldap://`` connection (ignored for
    ``ldaps://``).  ``verify=False`` is for tests only and logged loudly.
    ``server_names``: further names accepted in the server certificate
    besides the URI's host.
    """

    ca_file: str
    starttls: bool = True
    verify: bool = True
    server_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.ca_file:
            raise LdapError("TLS to the directory needs a CA file (ca_file)")


@dataclass(frozen=True, slots=True)
class LdapSchema:
    """Where things are in the directory (docs/ldap.md, etc/ldap/rserpool.schema).

    ``group_attribute`` (``memberOf``) lists an entry's groups; empty means
    "search ``group_base`` with ``group_filter``" instead (for directories
    without the memberof overlay).  Only groups under ``group_base`` count
    (when it is set); a group's name is the value of its first RDN when that
    RDN's type is ``group_name_attribute``.
    """

    user_filter: str = "(&(objectClass=rserpoolPoolElement)(uid={identity}))"
    cert_filter: str = ("(&(objectClass=rserpoolPoolElement)(|(rserpoolCertFingerprint="
                        "{fingerprint})(rserpoolCertSubject={subject})))")
    identity_attribute: str = "uid"
    salt_attribute: str = "rserpoolSrpSalt"
    verifier_attribute: str = "rserpoolSrpVerifier"
    pools_attribute: str = "rserpoolPool"
    group_attribute: str = "memberOf"
    group_base: str = ""
    group_filter: str = "(&(objectClass=groupOfNames)(member={dn}))"
    group_name_attribute: str = "cn"

    def __post_init__(self) -> None:
        _check_template(self.user_filter, ("{identity}",), "user_filter")
        _check_template(self.cert_filter, ("{fingerprint}", "{subject}"), "cert_filter",
                        any_of=True)
        if not self.group_attribute:
            _check_template(self.group_filter, ("{dn}",), "group_filter")
            if not self.group_base:
                raise LdapError("group_base is required when group_attribute is empty")
        for name in (self.identity_attribute, self.salt_attribute, self.verifier_attribute,
                     self.group_name_attribute):
            if not name or not name.replace("-", "").replace(";", "").isalnum():
                raise LdapError(f"bad attribute name {name!r}")

    def attributes(self) -> list[str]:
        names = [self.identity_attribute, self.salt_attribute, self.verifier_attribute]
        for extra in (self.pools_attribute, self.group_attribute):
            if extra:
                names.append(extra)
        return names


def _check_template(template: str, placeholders: tuple[str, ...], what: str,
                    any_of: bool = False) -> None:
    found = [p in template for p in placeholders]
    if not (any(found) if any_of else all(found)):
        raise LdapError(f"{what} must contain {' or '.join(placeholders)}: {template!r}")
    if not (template.startswith("(") and template.endswith(")")):
        raise LdapError(f"{what} must be a parenthesised LDAP filter: {template!r}")


def fill_filter(template: str, **values: str) -> str:
    """Replace ``{name}`` placeholders with RFC 4515-escaped values."""
    result = template
    for name, value in values.items():
        result = result.replace("{" + name + "}", escape_filter_chars(value))
    return result


def _unescape_dn_value(value: str) -> str:
    out = bytearray()
    i = 0
    raw = value.encode("utf-8")
    while i < len(raw):
        char = raw[i:i + 1]
        if char == b"\\" and i + 1 < len(raw):
            pair = raw[i + 1:i + 3]
            try:
                if len(pair) == 2:
                    out.append(int(pair, 16))
                    i += 3
                    continue
            except ValueError:
                pass
            out += raw[i + 1:i + 2]
            i += 2
            continue
        out += char
        i += 1
    return out.decode("utf-8", errors="replace")


def _norm_dn(dn: str) -> tuple[tuple[str, str], ...]:
    return tuple((attr.lower(), _unescape_dn_value(value).lower())
                 for attr, value, _sep in parse_dn(dn))


def group_name_from_dn(dn: str, name_attribute: str = "cn", base: str = "") -> str | None:
    """``cn=echo,ou=pools,dc=x`` -> ``echo`` (None when outside ``base``, or
    its first RDN is not ``name_attribute``, or the DN is malformed)."""
    try:
        parts = parse_dn(dn)
        if base:
            tail = _norm_dn(base)
            if len(parts) <= len(tail) or _norm_dn(dn)[-len(tail):] != tail:
                return None
    except (ldap_exceptions.LDAPException, ValueError):
        return None
    if not parts or parts[0][0].lower() != name_attribute.lower() or parts[0][2] == "+":
        return None
    name = _unescape_dn_value(parts[0][1])
    return name if name and name.isprintable() else None


@dataclass(frozen=True, slots=True)
class LdapEntry:
    """What the directory says about one identity (cached as a whole)."""

    dn: str
    identity: str
    salt: bytes | None = field(default=None, repr=False)
    verifier: bytes | None = field(default=None, repr=False)
    pools: tuple[str, ...] = ()
    groups: frozenset[str] = frozenset()

    @property
    def srp(self) -> tuple[bytes, bytes] | None:
        if self.salt is None or self.verifier is None:
            return None
        return (self.salt, self.verifier)


def valid_identity(identity: Any) -> bool:
    return (isinstance(identity, str) and 0 < len(identity) <= MAX_IDENTITY
            and identity.isprintable())


def parse_uri(uri: str) -> tuple[str, int, bool]:
    parts = urlsplit(uri)
    if parts.scheme not in ("ldap", "ldaps"):
        raise LdapError(f"LDAP URI must be ldap:// or ldaps://: {uri!r}")
    if not parts.hostname:
        raise LdapError(f"LDAP URI without a host: {uri!r}")
    ldaps = parts.scheme == "ldaps"
    try:
        port = parts.port or (636 if ldaps else 389)
    except ValueError:
        raise LdapError(f"bad port in LDAP URI {uri!r}") from None
    return parts.hostname, port, ldaps


def search_result(outcome: Any, conn: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(result, entries) from SAFE_SYNC's 4-tuple or a SYNC/MOCK_SYNC bool."""
    if isinstance(outcome, tuple):
        _status, result, response, _request = outcome
    else:
        result, response = conn.result, conn.response
    entries = [item for item in (response or []) if item.get("type") == "searchResEntry"]
    return result or {}, entries


def raw_values(entry: dict[str, Any], name: str) -> list[bytes]:
    if not name:
        return []
    attributes = entry.get("raw_attributes") or {}
    for key, values in attributes.items():
        if key.lower() == name.lower():
            if isinstance(values, (bytes, str)):
                values = [values]
            return [v.encode("utf-8") if isinstance(v, str) else bytes(v)
                    for v in list(values)[:MAX_VALUES]]
    return []


def text_values(values: Iterable[bytes]) -> list[str]:
    out = []
    for value in values:
        try:
            text = value.decode("utf-8").strip()
        except UnicodeDecodeError:
            continue
        if text and text.isprintable():
            out.append(text)
    return out


def group_names(dns: Iterable[str], schema: LdapSchema) -> frozenset[str]:
    """The group names of the group DNs ``dns`` (from the entry's
    ``group_attribute`` or a group search), by :func:`group_name_from_dn`."""
    names = set()
    for dn in dns:
        name = group_name_from_dn(dn, schema.group_name_attribute, schema.group_base)
        if name:
            names.add(name)
    return frozenset(names)


def entry_from_answer(entry: dict[str, Any], identity: str, schema: LdapSchema,
                      groups: frozenset[str]) -> LdapEntry:
    """The :class:`LdapEntry` of one search answer: a salt and a verifier only
    when the entry holds exactly one of each, of a sane size."""
    salts = raw_values(entry, schema.salt_attribute)
    verifiers = raw_values(entry, schema.verifier_attribute)
    salt = salts[0] if len(salts) == 1 and 0 < len(salts[0]) <= MAX_SALT else None
    verifier = (verifiers[0] if len(verifiers) == 1
                and 0 < len(verifiers[0]) <= MAX_VERIFIER else None)
    return LdapEntry(dn=entry.get("dn", ""), identity=identity, salt=salt, verifier=verifier,
                     pools=tuple(text_values(raw_values(entry, schema.pools_attribute))),
                     groups=groups)

