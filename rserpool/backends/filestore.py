"""The embedded credentials file as the registrar's store: SRP verifiers,
CHAP secrets, certificate mappings and groups, with no external server;
and the rules file as its pool authorizer.

The file's format, its parser and its editor are in
:mod:`rserpool.backends.filestore_format`.  Here: :class:`FileStore` stats
the file on each access and re-reads it when it changed; a file that became
malformed makes lookups fail with :class:`~rserpool.errors.BackendUnavailable`
(fail closed, never with stale data) until it is fixed.  Writes
(:func:`update_file`) take a lock, edit the text, re-parse it, and replace
the file atomically with mode 0600.  A credentials file holding CHAP
secrets must not be readable by group or others (refused).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from cryptography import x509
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from rserpool.backends.filestore_format import (
    MAX_FILE_SIZE,
    CredentialsData,
    FileStoreError,
    parse_credentials,
)
from rserpool.errors import BackendUnavailable
from rserpool.identity import normalize_identity
from rserpool.interfaces import (
    ICertificateMapping,
    IChapSecretStore,
    Identity,
    IGroupSource,
    IPoolAuthorizer,
    ISrpVerifierStore,
)
from rserpool.security.certidentity import fingerprint_sha256

__all__ = [
    "FileStore",
    "RulesFileAuthorizer",
    "load_file",
    "read_text",
    "update_file",
    "write_atomic",
]

_log = Logger()

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

    # -- synchronous lookups (tools and tests), by the normalized form of the
    # identity (rserpool.identity)
    def lookup_srp(self, identity: str) -> tuple[bytes, bytes] | None:
        entry = self.data().srp.get(normalize_identity(identity))  # type: ignore[arg-type]
        return None if entry is None else (entry.salt, entry.verifier)

    def lookup_chap_secret(self, identity: str) -> bytes | None:
        return self.data().chap.get(normalize_identity(identity))  # type: ignore[arg-type]

    def groups_of(self, identity: str) -> frozenset[str]:
        name = normalize_identity(identity)
        return self.data().groups_of(name) if name is not None else frozenset()

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
