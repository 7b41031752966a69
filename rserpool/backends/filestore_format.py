"""The embedded credentials file: SRP verifiers, CHAP secrets, certificate
mappings and groups, with no external server.

One text file, one entry per line, fields separated by blanks; lines
starting with ``#`` and blank lines are ignored::

    srp    IDENTITY  GROUP-NAME  SALT-BASE64  VERIFIER-BASE64
    chap   IDENTITY  SECRET-BASE64
    group  IDENTITY  GROUP[,GROUP...]
    cert   IDENTITY  GROUPS|-  sha256:HEX-FINGERPRINT
    cert   IDENTITY  GROUPS|-  subject:RFC-4514-SUBJECT (rest of the line)

- ``srp`` lines are made by ``rserpool srp add`` with
  :func:`rserpool.security.srp.make_verifier`; the group name must be a
  negotiable group (``SRP-6a-SHA256-2048``).
- ``chap`` secrets are cleartext-equivalent (RFC 1994 needs the secret):
  a file holding one must not be readable by group or others (refused).
- An identity's groups are the union of its ``group`` line and the groups
  of its ``cert`` lines.
- Identities and groups are written the way authorization rules name them:
  no blanks, ``,`` or ``#``, not ``*``, not starting with ``@``; identities
  in normalized form (:func:`rserpool.identity.normalize_identity`: lower
  case), since every lookup is by the normalized form.

This module is the format alone, pure: parsing (:func:`parse_credentials`)
is strict (any malformed line is an error that names its line number;
sizes are bounded) and editing (:func:`set_entry`, :func:`remove_entry` and
the ``*_line`` builders) works on text.  Reading, writing and serving the
file are :mod:`rserpool.backends.filestore`.
"""

from __future__ import annotations

import base64
import binascii
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from rserpool.identity import normalize_identity
from rserpool.security import srp as _srp

__all__ = [
    "CertEntry",
    "CredentialsData",
    "FileStoreError",
    "SrpEntry",
    "cert_key",
    "cert_line",
    "chap_line",
    "check_group",
    "check_identity",
    "group_line",
    "parse_credentials",
    "remove_entry",
    "set_entry",
    "srp_line",
]

MAX_FILE_SIZE = 8 * 1024 * 1024
MAX_LINE_LENGTH = 8192
MAX_ENTRIES = 100_000
MAX_GROUPS = 256
MAX_NAME_LENGTH = 255
MAX_SECRET_LENGTH = 1024
KINDS = ("srp", "chap", "group", "cert")

_NAME = re.compile(r"^[^\s,#@*][^\s,#]*$")


class FileStoreError(ValueError):
    """A malformed or unsafe credentials file (with its line number)."""


# ---------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class SrpEntry:
    identity: str
    group: str
    salt: bytes
    verifier: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class CertEntry:
    key: str  # "sha256:<hex>" or "subject:<normalised RFC 4514>"
    identity: str
    groups: frozenset[str]


def _proxy(mapping: dict[str, Any]) -> Mapping[str, Any]:
    return types.MappingProxyType(mapping)


@dataclass(frozen=True, slots=True)
class CredentialsData:
    """The parsed content of a credentials file."""

    srp: Mapping[str, SrpEntry] = field(default_factory=lambda: _proxy({}))
    chap: Mapping[str, bytes] = field(default_factory=lambda: _proxy({}), repr=False)
    groups: Mapping[str, frozenset[str]] = field(default_factory=lambda: _proxy({}))
    certs: Mapping[str, CertEntry] = field(default_factory=lambda: _proxy({}))

    def groups_of(self, identity: str) -> frozenset[str]:
        return self.groups.get(identity, frozenset())

    def __len__(self) -> int:
        return len(self.srp) + len(self.chap) + len(self.groups) + len(self.certs)


# ------------------------------------------------------------ validation


def check_identity(name: str) -> str:
    """``name`` if it can be stored and named in rules, else FileStoreError."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
        raise FileStoreError(f"an identity is 1-{MAX_NAME_LENGTH} characters")
    if not _NAME.match(name) or not name.isprintable():
        raise FileStoreError(
            f"bad identity {name!r}: no blanks, ',', '#' or control characters, "
            "and not '*' or starting with '@'")
    normalized = normalize_identity(name)
    if normalized != name:
        raise FileStoreError(f"identity {name!r} is not in normalized form (write {normalized!r}: "
                             "identities are compared without case, see rserpool.identity)")
    return name


def check_group(name: str) -> str:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
        raise FileStoreError(f"a group is 1-{MAX_NAME_LENGTH} characters")
    if not _NAME.match(name) or not name.isprintable():
        raise FileStoreError(f"bad group name {name!r}")
    return name


def _groups(text: str) -> frozenset[str]:
    if text == "-":
        return frozenset()
    names = [check_group(g) for g in text.split(",")]
    if len(names) > MAX_GROUPS:
        raise FileStoreError(f"more than {MAX_GROUPS} groups")
    return frozenset(names)


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise FileStoreError(f"{what} is not base64") from None


def cert_key(text: str) -> str:
    """Normalise ``sha256:HEX`` / a bare fingerprint / ``subject:DN`` / a DN."""
    from rserpool.security.certidentity import CertIdentityError, normalize_fingerprint

    text = text.strip()
    if text.startswith("sha256:"):
        text = text[len("sha256:"):]
    elif text.startswith("subject:"):
        return "subject:" + _subject(text[len("subject:"):])
    else:
        try:
            return "sha256:" + normalize_fingerprint(text)
        except CertIdentityError:
            return "subject:" + _subject(text)
    try:
        return "sha256:" + normalize_fingerprint(text)
    except CertIdentityError as exc:
        raise FileStoreError(str(exc)) from None


def _subject(text: str) -> str:
    text = text.strip()
    try:
        name = x509.Name.from_rfc4514_string(text)
    except ValueError:
        raise FileStoreError(f"not an RFC 4514 subject: {text!r}") from None
    if not len(name):
        raise FileStoreError("empty subject")
    return name.rfc4514_string()


# ---------------------------------------------------------------- parser


def _entry_key(kind: str, fields: list[str], line: str) -> str:
    """The key a line is indexed by (identity, or the certificate key)."""
    if kind == "cert":
        return cert_key(line.split(None, 3)[3])
    return check_identity(fields[1])


def parse_credentials(text: str, source: str = "<credentials>") -> CredentialsData:
    """Parse a credentials file (pure).  Raises FileStoreError naming the line."""
    if len(text) > MAX_FILE_SIZE:
        raise FileStoreError(f"{source}: larger than {MAX_FILE_SIZE} bytes")
    srp: dict[str, SrpEntry] = {}
    chap: dict[str, bytes] = {}
    groups: dict[str, frozenset[str]] = {}
    certs: dict[str, CertEntry] = {}
    cert_groups: dict[str, set[str]] = {}
    count = 0
    for number, raw in enumerate(text.splitlines(), 1):
        where = f"{source}:{number}"
        if len(raw) > MAX_LINE_LENGTH:
            raise FileStoreError(f"{where}: line longer than {MAX_LINE_LENGTH} characters")
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        count += 1
        if count > MAX_ENTRIES:
            raise FileStoreError(f"{source}: more than {MAX_ENTRIES} entries")
        fields = line.split()
        kind = fields[0]
        try:
            if kind == "srp":
                if len(fields) != 5:
                    raise FileStoreError("expected 'srp IDENTITY GROUP SALT VERIFIER'")
                identity = check_identity(fields[1])
                group = _srp.GROUPS.get(fields[2])
                if group is None:
                    raise FileStoreError(f"unknown SRP group {fields[2]!r} "
                                         f"(known: {', '.join(_srp.GROUPS)})")
                salt, verifier = _b64(fields[3], "salt"), _b64(fields[4], "verifier")
                if not _srp.MIN_SALT_LEN <= len(salt) <= _srp.MAX_SALT_LEN:
                    raise FileStoreError(f"salt must be {_srp.MIN_SALT_LEN}-{_srp.MAX_SALT_LEN} bytes")
                value = int.from_bytes(verifier, "big")
                if len(verifier) != group.n_len or not 1 < value < group.n - 1:
                    raise FileStoreError(f"verifier is not a {group.n_len}-byte value of the group")
                if identity in srp:
                    raise FileStoreError(f"second srp entry for {identity!r}")
                srp[identity] = SrpEntry(identity, group.name, salt, verifier)
            elif kind == "chap":
                if len(fields) != 3:
                    raise FileStoreError("expected 'chap IDENTITY SECRET'")
                identity = check_identity(fields[1])
                secret = _b64(fields[2], "secret")
                if not 0 < len(secret) <= MAX_SECRET_LENGTH:
                    raise FileStoreError(f"a CHAP secret is 1-{MAX_SECRET_LENGTH} bytes")
                if identity in chap:
                    raise FileStoreError(f"second chap entry for {identity!r}")
                chap[identity] = secret
            elif kind == "group":
                if len(fields) != 3:
                    raise FileStoreError("expected 'group IDENTITY GROUP[,GROUP...]'")
                identity = check_identity(fields[1])
                if identity in groups:
                    raise FileStoreError(f"second group entry for {identity!r}")
                groups[identity] = _groups(fields[2])
            elif kind == "cert":
                if len(fields) < 4:
                    raise FileStoreError("expected 'cert IDENTITY GROUPS|- sha256:HEX|subject:DN'")
                identity = check_identity(fields[1])
                member_of = _groups(fields[2])
                key = _entry_key(kind, fields, line)
                if key in certs:
                    raise FileStoreError(f"second cert entry for {key!r}")
                certs[key] = CertEntry(key, identity, member_of)
                cert_groups.setdefault(identity, set()).update(member_of)
            else:
                raise FileStoreError(f"unknown entry type {kind!r} (known: {', '.join(KINDS)})")
        except FileStoreError as exc:
            raise FileStoreError(f"{where}: {exc}") from None
    for identity, extra in cert_groups.items():
        if not extra:
            continue
        merged = groups.get(identity, frozenset()) | extra
        if len(merged) > MAX_GROUPS:
            raise FileStoreError(f"{source}: {identity!r} has more than {MAX_GROUPS} groups")
        groups[identity] = frozenset(merged)
    return CredentialsData(_proxy(srp), _proxy(chap), _proxy(groups), _proxy(certs))


# ------------------------------------------------------- editing (pure)


def srp_line(identity: str, salt: bytes, verifier: bytes,
             group: str = _srp.DEFAULT_GROUP.name) -> str:
    return (f"srp {check_identity(identity)} {group} {base64.b64encode(salt).decode()} "
            f"{base64.b64encode(verifier).decode()}")


def chap_line(identity: str, secret: bytes) -> str:
    return f"chap {check_identity(identity)} {base64.b64encode(secret).decode()}"


def group_line(identity: str, groups: Iterable[str]) -> str:
    names = sorted({check_group(g) for g in groups})
    if not names:
        raise FileStoreError("at least one group")
    return f"group {check_identity(identity)} {','.join(names)}"


def cert_line(key: str, identity: str, groups: Iterable[str] = ()) -> str:
    names = sorted({check_group(g) for g in groups})
    return f"cert {check_identity(identity)} {','.join(names) or '-'} {cert_key(key)}"


def _line_key(line: str) -> tuple[str, str] | None:
    fields = line.split()
    if not fields or fields[0].startswith("#") or fields[0] not in KINDS or len(fields) < 2:
        return None
    try:
        if fields[0] == "cert":
            return "cert", (cert_key(line.strip().split(None, 3)[3]) if len(fields) >= 4 else "")
        return fields[0], fields[1]
    except FileStoreError:
        return None


def remove_entry(text: str, kind: str, key: str) -> tuple[str, int]:
    """``text`` without the ``kind`` lines for ``key`` (an identity, or a
    certificate key for ``cert``), and how many lines went.  Comments and
    other lines are kept as they are."""
    if kind not in KINDS:
        raise FileStoreError(f"unknown entry type {kind!r}")
    wanted = (kind, cert_key(key) if kind == "cert" else key)
    kept, removed = [], 0
    for line in text.splitlines():
        if _line_key(line) == wanted:
            removed += 1
        else:
            kept.append(line)
    return "".join(f"{line}\n" for line in kept), removed


def set_entry(text: str, new_line: str) -> tuple[str, bool]:
    """Replace the entry ``new_line`` is keyed by (or append it).  Returns the
    new text and whether an entry was replaced."""
    key = _line_key(new_line)
    if key is None:
        raise FileStoreError(f"not an entry line: {new_line.split()[:1]}")
    text, removed = remove_entry(text, key[0], key[1])
    return text + new_line + "\n", removed > 0
