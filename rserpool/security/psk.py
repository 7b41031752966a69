"""TLS-PSK (RFC 5355 section 4: "TLS with PSK is mandatory to implement").

pyOpenSSL 26 has no PSK API.  The OpenSSL PSK callbacks are reached through
the private bindings pyOpenSSL itself uses, which only
:mod:`rserpool.security._internals` touches (capability ``PSK``, checked once
at import).  When it is missing, enabling PSK raises
:class:`PskUnavailableError` naming what is missing; it never falls back to
something weaker.

What is negotiated:

- **TLS 1.3**: the PSK is used with (EC)DHE (OpenSSL's default ``psk_dhe_ke``
  mode, forward secrecy).  OpenSSL accepts the legacy callbacks only with a
  SHA-256 cipher suite, so ``TLS_AES_128_GCM_SHA256`` stays enabled.
- **TLS 1.2**: ECDHE-PSK suites only (:data:`TLS12_PSK_CIPHERS`); plain PSK,
  DHE-PSK and RSA-PSK suites are never offered nor accepted.

Server side (:func:`enable_server_psk`): a PSK identity is looked up in an
:class:`~rserpool.interfaces.IPskKeyStore` (``psk_key(identity) -> bytes |
None``, e.g. :class:`FilePskStore`).  An unknown identity gets a random key,
so it fails exactly like a wrong key (the binder or Finished check).  The
identity whose key completed the handshake is then available through
:func:`psk_identity` and becomes the channel's authenticated identity
(mechanism :data:`MECHANISM`).

Client side (:func:`client_options`): a PSK-only client (a PE or PU that
holds an identity and key).  Knowing the key authenticates the server as
well, so no certificate is expected; a server that answers with a
certificate instead of the PSK is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Union

from OpenSSL import SSL
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from zope.interface import implementer

from rserpool.identity import normalize_identity
from rserpool.interfaces import IPskKeyStore
from rserpool.security import _internals, tls

__all__ = [
    "MECHANISM",
    "MIN_KEY_LENGTH",
    "TLS12_PSK_CIPHERS",
    "TLS13_PSK_SUITES",
    "FilePskStore",
    "PskClientOptions",
    "PskError",
    "PskServerOptions",
    "PskUnavailableError",
    "client_options",
    "enable_server_psk",
    "load_psk_file",
    "negotiated_cipher",
    "psk_identity",
    "psk_identity_offered",
    "require_bindings",
    "server_options",
]

#: The authentication mechanism name of a PSK-authenticated session.
MECHANISM = "tls-psk"
#: Shortest key accepted (128 bits).
MIN_KEY_LENGTH = 16
#: Longest key (OpenSSL's PSK_MAX_PSK_LEN).
MAX_KEY_LENGTH = 512
#: Longest identity (RFC 4279: up to 2^16-1 octets; OpenSSL takes 128).
MAX_IDENTITY_LENGTH = 128
#: TLS 1.2 suites: ECDHE-PSK only (forward secrecy).
TLS12_PSK_CIPHERS = (
    "ECDHE-PSK-CHACHA20-POLY1305",
    "ECDHE-PSK-AES256-CBC-SHA384",
    "ECDHE-PSK-AES128-CBC-SHA256",
)
#: TLS 1.3 suites a PSK client offers (the legacy callbacks need SHA-256).
TLS13_PSK_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256")
#: TLS 1.3 suites of a PSK server: the SHA-256 ones first (see enable_server_psk).
_SERVER_TLS13_SUITES = b"TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"
#: TLS 1.2 certificate suites kept on a server that also does PSK.
_TLS12_CERT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"

PathLike = Union[str, "os.PathLike[str]"]


class PskError(ValueError):
    """A PSK file, identity or key is invalid."""


class PskUnavailableError(RuntimeError):
    """The OpenSSL bindings needed for TLS-PSK are not there (or changed)."""


def require_bindings() -> None:
    """Raise :class:`PskUnavailableError` unless the ``PSK`` capability is there."""
    if not _internals.PSK.available:
        _internals.PSK.note_missing()
        raise PskUnavailableError(
            f"TLS-PSK needs OpenSSL bindings that pyOpenSSL does not expose: {_internals.PSK.reason} "
            "(pyOpenSSL/cryptography upgrade?); refusing to run without PSK rather than silently weaker"
        )


# --- identities and keys -------------------------------------------------------------


def _valid_identity(identity: str) -> str:
    encoded = identity.encode("utf-8")
    if not 1 <= len(encoded) <= MAX_IDENTITY_LENGTH:
        raise PskError(f"a PSK identity has 1 to {MAX_IDENTITY_LENGTH} bytes")
    if not identity.isprintable() or any(c.isspace() for c in identity):
        raise PskError("a PSK identity is printable and has no white space")
    return identity


def _valid_key(key: bytes) -> bytes:
    if not MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH:
        raise PskError(f"a PSK has {MIN_KEY_LENGTH} to {MAX_KEY_LENGTH} bytes")
    return key


@implementer(IPskKeyStore)
class FilePskStore:
    """Identities and keys in memory, looked up without comparing identities
    byte by byte: the table is keyed by an HMAC of the identity under a
    per-process random key, so lookup time does not depend on how much of a
    guessed identity matches a real one."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        self._salt = os.urandom(32)
        self._keys: dict[bytes, bytes] = {}
        for identity, key in keys.items():
            if normalize_identity(identity) != identity:  # the server looks up normalized names
                raise PskError(f"PSK identity {identity!r} is not in normalized form "
                               f"(write {normalize_identity(identity)!r}; see rserpool.identity)")
            self._keys[self._index(_valid_identity(identity))] = _valid_key(bytes(key))

    def _index(self, identity: str) -> bytes:
        return hmac.new(self._salt, identity.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    def __len__(self) -> int:
        return len(self._keys)

    def psk_key(self, identity: str) -> bytes | None:
        return self._keys.get(self._index(identity))

    @classmethod
    def from_file(cls, path: PathLike, *, check_mode: bool = True) -> "FilePskStore":
        return cls(load_psk_file(path, check_mode=check_mode))


def load_psk_file(path: PathLike, *, check_mode: bool = True) -> dict[str, bytes]:
    """``identity key-hex`` per line (``#`` comments, blank lines).

    The file must not be readable by group or others (mode 0600 or
    stricter) unless ``check_mode`` is false.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if check_mode and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PskError(f"{path}: PSK file is accessible by group or others "
                           f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it")
        data = handle.read(1024 * 1024 + 1)
    if len(data) > 1024 * 1024:
        raise PskError(f"{path}: PSK file over 1 MiB")
    keys: dict[str, bytes] = {}
    for number, raw in enumerate(data.decode("utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise PskError(f"{path}:{number}: expected 'identity key-hex'")
        identity, key_hex = parts
        try:
            key = bytes.fromhex(key_hex)
        except ValueError:
            raise PskError(f"{path}:{number}: the key is not hexadecimal") from None
        if identity in keys:
            raise PskError(f"{path}:{number}: duplicate identity {identity!r}")
        try:
            keys[_valid_identity(identity)] = _valid_key(key)
        except PskError as exc:
            raise PskError(f"{path}:{number}: {exc}") from None
    return keys


# --- server ----------------------------------------------------------------------------


def psk_identity(transport_or_connection: Any) -> str | None:
    """The PSK identity a server connection authenticated, or None.

    Only valid once the handshake has completed.  The server callback runs
    before the key is proven and also when OpenSSL then skips the PSK (a
    TLS 1.3 suite whose hash does not match, chosen by a client that offers
    only such suites and a PSK it does not hold), so the identity counts only
    when the handshake really used it: TLS 1.3 must report the session as a
    PSK ("reused") handshake, TLS 1.2 must have negotiated a PSK suite.
    Resumption is off on PSK servers, so nothing else sets those flags.
    """
    connection = transport_or_connection
    if not isinstance(connection, SSL.Connection):
        try:
            connection = tls.tls_connection(transport_or_connection)
        except tls.NotTLSError:
            return None
    if connection.get_finished() is None or connection.get_peer_finished() is None:
        return None
    name = _internals.psk_identity_accepted(connection)
    if name is None:
        return None
    version = connection.get_protocol_version_name()
    if version == "TLSv1.3":
        if not _internals.session_reused(connection):
            return None
    elif version == "TLSv1.2":
        if (connection.get_cipher_name() or "") not in TLS12_PSK_CIPHERS:
            return None
    else:
        return None
    return normalize_identity(name)


def _server_cipher_list() -> bytes:
    return (_TLS12_CERT_CIPHERS + ":" + ":".join(TLS12_PSK_CIPHERS)).encode("ascii")


#: Server Connection -> the (normalized) identity its client offered a PSK for.
_offered: "weakref.WeakKeyDictionary[SSL.Connection, str]" = weakref.WeakKeyDictionary()

#: ``admit(identity, connection) -> bool``: may the connection's client try
#: the key of ``identity`` now (the security gate's failure budgets)?  No:
#: the handshake fails as with a wrong key, whatever key the client holds.
PskAdmit = Callable[[str, Any], bool]


def psk_identity_offered(transport_or_connection: Any) -> str | None:
    """The identity a client offered a PSK for on this server connection
    (known or not, proven or not), or None."""
    connection = transport_or_connection
    if not isinstance(connection, SSL.Connection):
        try:
            connection = tls.tls_connection(transport_or_connection)
        except tls.NotTLSError:
            return None
    return _offered.get(connection)


def enable_server_psk(context: SSL.Context, store: IPskKeyStore, hint: str | None = None,
                      admit: PskAdmit | None = None) -> Any:
    """Install PSK on a server context that has not made a connection yet.

    ``admit`` is asked before a key is handed to OpenSSL (see
    :data:`PskAdmit`).  Returns the callback handle: keep it referenced as
    long as the context (:class:`PskServerOptions` does).
    """
    require_bindings()
    if not isinstance(context, SSL.Context):
        raise PskUnavailableError(f"{context!r} is not a pyOpenSSL Context")
    context.set_cipher_list(_server_cipher_list())
    # The server picks the suite before it looks at the PSK, and a PSK from
    # the legacy callbacks only works with a SHA-256 suite: prefer those.
    context.set_tls13_ciphersuites(_SERVER_TLS13_SUITES)
    if hint is not None and not _internals.set_psk_identity_hint(context, _valid_identity(hint).encode()):
        raise PskUnavailableError("OpenSSL refused the PSK identity hint")
    # No resumption: a TLS 1.3 "reused" flag then always means the external
    # PSK was used (see psk_identity), and every connection proves the key.
    context.set_options(SSL.OP_NO_TICKET)
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    def lookup(offered: str, connection: Any) -> bytes | None:
        # Any spelling of an identity is that identity (rserpool.identity).
        name = normalize_identity(offered)
        if name is None:
            return None
        if connection is not None:
            _offered[connection] = name
            if admit is not None and not admit(name, connection):
                return None  # refused: fails like a wrong key (no oracle)
        return store.psk_key(name)

    return _internals.enable_psk_server(context, lookup, MIN_KEY_LENGTH)


@implementer(IOpenSSLServerConnectionCreator)
class PskServerOptions:
    """Server creator: certificates as configured in ``base`` plus TLS-PSK.

    ``base`` must be fresh (no connection made from its context yet).
    """

    def __init__(self, base: tls.ServerTLSOptions, store: IPskKeyStore, hint: str | None = None,
                 admit: Callable[[str, Any], bool] | None = None) -> None:
        """``admit(identity, tls_protocol) -> bool``: asked before the key
        of ``identity`` is used on the connection of ``tls_protocol`` (the
        Twisted TLS protocol that asked for the connection)."""
        self.base = base
        self.store = store
        self.context = base.context
        self._protocols: weakref.WeakKeyDictionary[SSL.Connection, Any] = weakref.WeakKeyDictionary()
        admit_connection = None
        if admit is not None:
            protocols = self._protocols

            def admit_connection(name: str, connection: Any) -> bool:
                return admit(name, protocols.get(connection))
        self._callback = enable_server_psk(self.context, store, hint, admit_connection)

    @property
    def settings(self) -> tls.ServerTLSSettings:
        return self.base.settings

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:  # noqa: N802 (Twisted)
        connection = _internals.psk_server_connection(self.context)
        self._protocols[connection] = tlsProtocol
        return connection


def server_options(
    cert_path: PathLike,
    key_path: PathLike,
    trust_roots: tls.TrustRoots = (),
    *,
    psk_store: IPskKeyStore,
    hint: str | None = None,
    admit: Callable[[str, Any], bool] | None = None,
    require_client_cert: bool = False,
    **kwargs: Any,
) -> PskServerOptions:
    """:func:`rserpool.security.tls.server_options` plus TLS-PSK.

    A client authenticates with a certificate or a PSK, so client
    certificates are optional by default (``require_client_cert=True`` still
    admits PSK clients: they prove a key instead).
    """
    base = tls.server_options(cert_path, key_path, trust_roots,
                              require_client_cert=require_client_cert, **kwargs)
    return PskServerOptions(base, psk_store, hint, admit)


# --- client ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PskClientSettings:
    identity: str
    min_version: Any = tls.MINIMUM_VERSION
    max_version: Any = None
    server_name: str | None = None


_PROTOCOL_VERSIONS: dict[Any, int] = {
    tls.TLSVersion.TLSv1_2: SSL.TLS1_2_VERSION,
    tls.TLSVersion.TLSv1_3: SSL.TLS1_3_VERSION,
}


@implementer(IOpenSSLClientConnectionCreator)
class PskClientOptions:
    """A PSK-only client creator (no certificates either way)."""

    def __init__(self, identity: str, key: bytes, *, min_version: Any = tls.MINIMUM_VERSION,
                 max_version: Any = None, server_name: str | None = None,
                 keylog_path: PathLike | None = None, environ: Mapping[str, str] | None = None) -> None:
        require_bindings()
        tls._check_versions(min_version, max_version)
        identity = _valid_identity(identity)
        key = _valid_key(bytes(key))
        self.settings = PskClientSettings(identity, min_version, max_version, server_name)
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_TICKET)
        context.set_min_proto_version(_PROTOCOL_VERSIONS[min_version])
        if max_version is not None:
            context.set_max_proto_version(_PROTOCOL_VERSIONS[max_version])
        context.set_cipher_list(":".join(TLS12_PSK_CIPHERS).encode("ascii"))
        context.set_tls13_ciphersuites(":".join(TLS13_PSK_SUITES).encode("ascii"))
        self._callback = _internals.enable_psk_client(context, identity.encode("utf-8"), key)
        # A server that did not take the PSK and sends a certificate instead
        # is not the holder of the key: refuse it.
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _refuse_certificate)
        writer = tls.keylog_writer(keylog_path, environ)
        if writer is not None:
            context.set_keylog_callback(writer)
        self.context = context
        self._sni = server_name.encode("idna") if server_name else None

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)
        if self._sni is not None:
            connection.set_tlsext_host_name(self._sni)
        return connection


def _refuse_certificate(conn: SSL.Connection, cert: Any, errno: int, depth: int, ok: int) -> bool:
    return False


def client_options(identity: str, key: bytes, **kwargs: Any) -> PskClientOptions:
    """A PSK client creator; usable as a hunt's ``tls_options_factory`` with
    ``lambda name: psk.client_options(identity, key)`` (the key, not the
    name, authenticates the registrar)."""
    return PskClientOptions(identity, key, **kwargs)


def negotiated_cipher(transport: Any) -> str | None:
    """The cipher suite name of an established TLS connection."""
    return tls.tls_connection(transport).get_cipher_name()
