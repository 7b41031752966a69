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
  no blanks, ``,`` or ``#``, not ``*``, not starting with ``@``.

Parsing (:func:`parse_credentials`) is pure and strict: any malformed line
is an error that names its line number; sizes are bounded.  The shell
(:class:`FileStore`) stats the file on each access and re-reads it when it
changed; a file that became malformed makes lookups fail with
:class:`~rserpool.errors.BackendUnavailable` (fail closed, never with stale
data) until it is fixed.  Writes (:func:`update_file`) take a lock, edit the
text, re-parse it, and replace the file atomically with mode 0600.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import stat
import tempfile
import time
import types
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from rserpool.errors import BackendUnavailable
from rserpool.interfaces import (
    ICertificateMapping,
    IChapSecretStore,
    Identity,
    IGroupSource,
    IPoolAuthorizer,
    ISrpVerifierStore,
)
from rserpool.security import srp as _srp
from rserpool.security.certidentity import fingerprint_sha256

__all__ = [
    "CertEntry",
    "CredentialsData",
    "FileStore",
    "FileStoreError",
    "RulesFileAuthorizer",
    "SrpEntry",
    "cert_key",
    "cert_line",
    "chap_line",
    "check_group",
    "check_identity",
    "group_line",
    "parse_credentials",
    "read_text",
    "remove_entry",
    "set_entry",
    "srp_line",
    "update_file",
    "write_atomic",
]

_log = Logger()

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
    if _srp.normalize_text(name, 4 * MAX_NAME_LENGTH, "identity") != name.encode("utf-8"):
        raise FileStoreError(f"identity {name!r} is not in NFKC normal form")
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


# --------------------------------------------------------------- file I/O


def _check_mode(st: os.stat_result, path: str, data: CredentialsData | None) -> list[str]:
    """Refuse unsafe modes; return warnings for merely loose ones."""
    if st.st_mode & stat.S_IWOTH:
        raise FileStoreError(f"{path}: world-writable credentials file refused (chmod 600)")
    warnings = []
    readable = st.st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    if data is not None and readable:
        if data.chap:
            raise FileStoreError(f"{path}: holds CHAP secrets (cleartext-equivalent) but is "
                                 f"readable by group or others (mode {st.st_mode & 0o777:o}); "
                                 "chmod 600")
        if data.srp:
            warnings.append(f"{path}: SRP verifiers readable by group or others (mode "
                            f"{st.st_mode & 0o777:o}) allow offline password guessing; chmod 600")
    return warnings


def read_text(path: str) -> tuple[str, os.stat_result]:
    """The file's text and its stat, bounded in size."""
    with open(path, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise FileStoreError(f"{path}: not a regular file")
        data = handle.read(MAX_FILE_SIZE + 1)
    if len(data) > MAX_FILE_SIZE:
        raise FileStoreError(f"{path}: larger than {MAX_FILE_SIZE} bytes")
    try:
        return data.decode("utf-8"), st
    except UnicodeDecodeError as exc:
        raise FileStoreError(f"{path}: not UTF-8 (byte {exc.start})") from None


def write_atomic(path: str, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync, rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    import fcntl

    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update_file(path: str, edit: Callable[[str], str]) -> CredentialsData:
    """Lock, read (a missing file is empty), ``edit`` the text, check it
    parses, write it atomically with mode 0600.  Returns the new data."""
    with _locked(path):
        try:
            text, st = read_text(path)
            _check_mode(st, path, None)
        except FileNotFoundError:
            text = ""
        new_text = edit(text)
        data = parse_credentials(new_text, path)
        write_atomic(path, new_text)
        return data


def load_file(path: str) -> tuple[CredentialsData, list[str]]:
    """Parse the file and check its mode; returns the data and warnings."""
    text, st = read_text(path)
    data = parse_credentials(text, path)
    return data, _check_mode(st, path, data)


# ----------------------------------------------------------------- store

_SHARED: "weakref.WeakValueDictionary[str, FileStore]" = weakref.WeakValueDictionary()


def _stat_key(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


@implementer(ISrpVerifierStore, IChapSecretStore, ICertificateMapping, IGroupSource)
class FileStore:
    """The credentials file as a store, re-read when it changes.

    Provides the Deferred interfaces of :mod:`rserpool.interfaces` and the
    synchronous ``lookup_srp`` / ``lookup_chap_secret`` that
    :class:`rserpool.security.exchange.ServerExchange` asks, plus
    ``groups_of`` for the registrar.  Every access stats the file (no clock);
    a changed file is parsed again.  A missing file is an empty store
    (logged); an unreadable, unsafe or malformed one raises
    :class:`BackendUnavailable` until it is fixed.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._key: tuple[int, ...] | None = None
        self._data = CredentialsData()
        self._error: str | None = None
        self.warnings: tuple[str, ...] = ()
        self.reloads = 0

    def __repr__(self) -> str:
        return f"FileStore({self.path!r})"

    @classmethod
    def shared(cls, path: str) -> FileStore:
        """One store per file in this process (the plugins for SRP, CHAP,
        certificates and groups built from one file share it)."""
        key = os.path.abspath(path)
        store = _SHARED.get(key)
        if store is None:
            store = _SHARED[key] = cls(key)
        return store

    # -- loading
    def data(self) -> CredentialsData:
        """The current content (re-read if the file changed)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._key != ():
                _log.warn("credentials file {path} does not exist: no credentials", path=self.path)
                self._key, self._data, self._error, self.warnings = (), CredentialsData(), None, ()
            return self._data
        except OSError as exc:
            raise BackendUnavailable(f"credentials file {self.path}: {exc.strerror}") from exc
        key = _stat_key(st)
        if key != self._key:
            self._load(key)
        if self._error is not None:
            raise BackendUnavailable(self._error)
        return self._data

    def reload(self) -> CredentialsData:
        """Re-read now, whatever the file's stat says."""
        self._key = None
        return self.data()

    def _load(self, key: tuple[int, ...]) -> None:
        self._key = key
        self.reloads += 1
        try:
            data, warnings = load_file(self.path)
        except (OSError, FileStoreError) as exc:
            self._error = f"credentials file unusable: {exc}"
            self._data = CredentialsData()
            _log.error("{error}; authentication from it fails until it is fixed", error=self._error)
            return
        self._error, self._data, self.warnings = None, data, tuple(warnings)
        for warning in warnings:
            _log.warn("{warning}", warning=warning)
        _log.info("credentials file {path}: {srp} SRP, {chap} CHAP, {certs} certificate entries, "
                  "{groups} identities with groups", path=self.path, srp=len(data.srp),
                  chap=len(data.chap), certs=len(data.certs), groups=len(data.groups))

    # -- synchronous lookups (tools and tests)
    def lookup_srp(self, identity: str) -> tuple[bytes, bytes] | None:
        entry = self.data().srp.get(identity)
        return None if entry is None else (entry.salt, entry.verifier)

    def lookup_chap_secret(self, identity: str) -> bytes | None:
        return self.data().chap.get(identity)

    def groups_of(self, identity: str) -> frozenset[str]:
        return self.data().groups_of(identity)

    def identity_for_certificate(self, certificate: x509.Certificate) -> Identity | None:
        data = self.data()
        fingerprint = fingerprint_sha256(certificate)
        entry = data.certs.get("sha256:" + fingerprint)
        if entry is None:
            entry = data.certs.get("subject:" + certificate.subject.rfc4514_string())
        if entry is None:
            return None
        return Identity.create(entry.identity, "certificate", data.groups_of(entry.identity),
                               {"fingerprint_sha256": fingerprint,
                                "subject": certificate.subject.rfc4514_string(),
                                "mapped_by": entry.key.split(":", 1)[0]})

    # -- the interfaces (Deferred)
    def srp_verifier(self, identity: str) -> defer.Deferred[tuple[bytes, bytes] | None]:
        return defer.maybeDeferred(self.lookup_srp, identity)

    def chap_secret(self, identity: str) -> defer.Deferred[bytes | None]:
        return defer.maybeDeferred(self.lookup_chap_secret, identity)

    def identity_for(self, certificate: x509.Certificate) -> defer.Deferred[Identity | None]:
        return defer.maybeDeferred(self.identity_for_certificate, certificate)

    def groups(self, identity: str) -> defer.Deferred[frozenset[str]]:
        return defer.maybeDeferred(self.groups_of, identity)



# ------------------------------------------------------- rules authorizer


@implementer(IPoolAuthorizer)
class RulesFileAuthorizer:
    """The rules authorizer (:mod:`rserpool.security.authz`) over a file that
    is re-read when it changes.  The file is stat'ed at most once every
    ``recheck_interval`` seconds of ``clock`` (``time.monotonic`` unless
    injected; 0 stats on every call), so a change takes effect within that
    interval.  A missing or malformed file denies everything: a malformed
    one fails with BackendUnavailable (logged as an outage) until it is
    fixed."""

    def __init__(self, path: str, *, recheck_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.recheck_interval = recheck_interval
        self.clock = clock
        self._next_check: float | None = None
        self._key: tuple[int, ...] | None = None
        self._authorizer: Any = None
        self._error: str | None = None
        self.reloads = 0

    def __repr__(self) -> str:
        return f"RulesFileAuthorizer({self.path!r})"

    def current(self) -> Any:
        """The current :class:`rserpool.security.authz.RulesAuthorizer`."""
        interval = self.recheck_interval
        if interval > 0:
            now = self.clock()
            next_check = self._next_check
            if next_check is not None and now < next_check:
                if self._error is not None:
                    raise BackendUnavailable(self._error)
                return self._authorizer
            self._next_check = None
            try:
                authorizer = self._reload_if_changed()
            except BackendUnavailable:
                if self._error is not None:  # a malformed file (not a failed stat): checked again later
                    self._next_check = now + interval
                raise
            self._next_check = now + interval
            return authorizer
        return self._reload_if_changed()

    def _reload_if_changed(self) -> Any:
        from rserpool.security.authz import RulesAuthorizer, RulesError, parse_rules

        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._key != ():
                _log.warn("no authorization rules file {path}: everything is refused", path=self.path)
                self._key, self._authorizer, self._error = (), RulesAuthorizer(()), None
            return self._authorizer
        except OSError as exc:
            raise BackendUnavailable(f"rules file {self.path}: {exc.strerror}") from exc
        key = _stat_key(st)
        if key != self._key:
            self._key = key
            self.reloads += 1
            try:
                if st.st_mode & stat.S_IWOTH:
                    raise FileStoreError(f"{self.path}: world-writable rules file refused")
                text, _ = read_text(self.path)
                self._authorizer, self._error = RulesAuthorizer(parse_rules(text, self.path)), None
                _log.info("authorization rules from {path}: {n} rules", path=self.path,
                          n=len(self._authorizer.rules))
            except (OSError, FileStoreError, RulesError) as exc:
                self._authorizer, self._error = None, f"rules file unusable: {exc}"
                _log.error("{error}; every request is refused until it is fixed", error=self._error)
        if self._error is not None:
            raise BackendUnavailable(self._error)
        return self._authorizer

    def authorize(self, identity: str | None, groups: frozenset[str], action: str,
                  pool_handle: bytes) -> bool:
        return bool(self.current().authorize(identity, groups, action, pool_handle))
