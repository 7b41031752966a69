"""TLS connection creators for registrars, PEs and PUs (Twisted + pyOpenSSL shell).

What is checked, and by whom:

- **Both sides**: TLS 1.2 or newer.  In TLS 1.2 only the suites of
  :data:`TLS12_CIPHERS` (ECDHE key exchange, so forward secrecy, and an
  AEAD: AES-GCM or ChaCha20-Poly1305; no CBC, no SHA-1 MAC, no static RSA,
  no anonymous or NULL suite); TLS 1.3 keeps OpenSSL's three suites.
- **Server side** (:func:`server_options`): when ``require_client_cert`` the
  client must present a certificate that chains to one of the *configured*
  roots (never the system store), is inside its validity window, has an
  extended key usage extension that includes clientAuth (a certificate
  without the extension is refused too: OpenSSL's ``ssl_client`` purpose
  alone would accept it) and, when CRLs are loaded, is not revoked
  (``CRL_CHECK``; ``CRL_CHECK_ALL`` on request).  An optional client
  certificate, when sent, is checked the same way.
- **Client side** (:func:`client_options`): the server is authenticated
  before anything else: chain to the configured roots, validity, EKU
  serverAuth (OpenSSL), optional CRLs, then the host name or IP address with
  ``service_identity`` exactly like :func:`twisted.internet.ssl.optionsForClientTLS`
  (a refused certificate or a wrong name ends the connection with a
  ``rserpool.security.tlserrors.CertificateRejected`` saying why).

A ``Context`` cannot be changed once it has made a connection (pyOpenSSL 26),
so every creator builds its context completely up front.  To change CRLs on a
running server, build new options and swap them into a
:class:`ReloadableServerOptions`; existing connections keep the old context.

``SSLKEYLOGFILE`` (or ``keylog_path``) is honoured, opt-in only, with a loud
warning logged once per file.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

from cryptography import x509
from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from twisted.internet import ssl as tssl
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rserpool.security import _internals, pki
from rserpool.security.tlserrors import CertificateRejected, name_mismatch_text, verify_error_text

__all__ = [
    "disable_session_tickets",
    "ClientTLSOptions",
    "ClientTLSSettings",
    "KeyLogWriter",
    "NotTLSError",
    "ReloadableServerOptions",
    "ServerTLSOptions",
    "ServerTLSSettings",
    "TLS12_CIPHERS",
    "TLSVersion",
    "client_options",
    "close_keylog_writers",
    "export_keying_material",
    "has_client_auth_usage",
    "keylog_writer",
    "load_crls",
    "load_trust_roots",
    "negotiated_protocol_version",
    "peer_certificate",
    "server_options",
    "tls_connection",
]

_log = Logger()

TLSVersion = tssl.TLSVersion
PathLike = Union[str, "os.PathLike[str]"]
TrustRoots = Union[PathLike, x509.Certificate, Iterable[Union[PathLike, x509.Certificate]]]
CRLs = Iterable[Union[PathLike, x509.CertificateRevocationList]]

#: The oldest protocol version these helpers will ever negotiate.
MINIMUM_VERSION = TLSVersion.TLSv1_2
#: TLS 1.2 cipher suites (OpenSSL syntax): ECDHE with AES-GCM or
#: ChaCha20-Poly1305 only.  DHE is left out (no parameters are configured),
#: CBC suites (SHA-1 or SHA-2 MAC), static RSA key exchange and CCM too.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!PSK:!SRP:!DSS"
_ACCEPTABLE_CIPHERS = tssl.AcceptableCiphers.fromOpenSSLCipherString(TLS12_CIPHERS)
#: Upper bound for one exporter call (RFC 5705 allows more; nobody needs it).
MAX_EXPORT_LENGTH = 1024


class NotTLSError(TypeError):
    """The transport is not a TLS transport (or its handshake is not done)."""


# --- loading ----------------------------------------------------------------


def _is_pathlike(value: object) -> bool:
    return isinstance(value, (str, os.PathLike))


def load_trust_roots(roots: TrustRoots) -> tuple[x509.Certificate, ...]:
    """Certificates from PEM files/bundles, certificate objects, or a mix."""
    items: Iterable[Any] = [roots] if _is_pathlike(roots) or isinstance(
        roots, x509.Certificate
    ) else roots  # type: ignore[assignment]
    result: list[x509.Certificate] = []
    for item in items:
        if isinstance(item, x509.Certificate):
            result.append(item)
        else:
            result.extend(pki.load_certificates(item))
    return tuple(result)


def load_crls(crls: CRLs) -> tuple[x509.CertificateRevocationList, ...]:
    """CRLs from PEM/DER files or CRL objects."""
    items: Iterable[Any] = [crls] if _is_pathlike(crls) else crls
    return tuple(
        c if isinstance(c, x509.CertificateRevocationList) else pki.load_crl(c)
        for c in items
    )


def _check_versions(min_version: Any, max_version: Any) -> None:
    if min_version < MINIMUM_VERSION:
        raise ValueError("TLS versions older than 1.2 are not supported")
    if max_version is not None and max_version < min_version:
        raise ValueError("max_version is older than min_version")


# --- SSLKEYLOGFILE -----------------------------------------------------------


class KeyLogWriter:
    """Appends NSS key log lines to a file (mode 0600); a pyOpenSSL keylog callback."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
        )

    def __call__(self, connection: SSL.Connection, line: bytes) -> None:
        if self._fd is not None:
            os.write(self._fd, line + b"\n")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


_keylog_writers: dict[Path, KeyLogWriter] = {}


def keylog_writer(
    keylog_path: PathLike | None = None, environ: Mapping[str, str] | None = None
) -> KeyLogWriter | None:
    """The writer for ``keylog_path`` or ``$SSLKEYLOGFILE``; None when neither is set.

    One writer (and one warning) per file per process.
    """
    if keylog_path is None:
        env = os.environ if environ is None else environ
        keylog_path = env.get("SSLKEYLOGFILE") or None
    if keylog_path is None:
        return None
    path = Path(keylog_path).absolute()
    writer = _keylog_writers.get(path)
    if writer is None:
        writer = _keylog_writers[path] = KeyLogWriter(path)
        _log.warn(
            "TLS KEY LOGGING IS ON: session secrets are written to {path}; anyone "
            "who can read that file can decrypt captured traffic. Unset "
            "SSLKEYLOGFILE (or keylog_path) outside debugging.",
            path=str(path),
        )
    return writer


def close_keylog_writers() -> None:
    """Close every key log file (tests and orderly shutdown)."""
    for writer in _keylog_writers.values():
        writer.close()
    _keylog_writers.clear()


# --- context building ---------------------------------------------------------


def _install_crls(
    ctx: SSL.Context, crls: tuple[x509.CertificateRevocationList, ...], check_all: bool
) -> None:
    if not crls:
        return
    store = ctx.get_cert_store()
    if store is None:  # pragma: no cover - OpenSSL always has one
        raise RuntimeError("context has no certificate store")
    for crl in crls:
        store.add_crl(crl)
    flags = crypto.X509StoreFlags.CRL_CHECK
    if check_all:
        flags |= crypto.X509StoreFlags.CRL_CHECK_ALL
    store.set_flags(flags)


def _load_identity(
    cert_path: PathLike, key_path: PathLike
) -> tuple[pki.PrivateKey, x509.Certificate, list[x509.Certificate]]:
    """Key, leaf and chain (pyOpenSSL 26 takes ``cryptography`` objects directly)."""
    certs = pki.load_certificates(cert_path)
    key = pki.load_private_key(key_path)
    pki.check_key_pair(certs[0], key, cert_path, key_path)
    return key, certs[0], certs[1:]


def _finish_context(
    options: tssl.CertificateOptions,
    crls: tuple[x509.CertificateRevocationList, ...],
    crl_check_all: bool,
    writer: KeyLogWriter | None,
) -> SSL.Context:
    ctx = options.getContext()
    _install_crls(ctx, crls, crl_check_all)
    if writer is not None:
        ctx.set_keylog_callback(writer)
    return ctx


@dataclass(frozen=True, slots=True)
class ServerTLSSettings:
    """Everything a server context is built from (see :func:`server_options`)."""

    cert_path: Path
    key_path: Path
    trust_roots: tuple[x509.Certificate, ...] = ()
    require_client_cert: bool = True
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    crl_check_all: bool = False
    min_version: Any = MINIMUM_VERSION
    max_version: Any = None
    keylog_path: Path | None = None
    session_tickets: bool = False
    session_cache: bool = False
    verify_depth: int = 4

    def replace(self, **changes: Any) -> ServerTLSSettings:
        if "crls" in changes:
            changes["crls"] = load_crls(changes["crls"])
        return dataclasses.replace(self, **changes)


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLSOptions:
    """A fully built server context; use with ``SSL4ServerEndpoint`` or ``TLSMemoryBIOFactory``."""

    def __init__(
        self, settings: ServerTLSSettings, environ: Mapping[str, str] | None = None
    ) -> None:
        _check_versions(settings.min_version, settings.max_version)
        if settings.require_client_cert and not settings.trust_roots:
            raise ValueError("require_client_cert needs trust_roots for client certificates")
        key, cert, chain = _load_identity(settings.cert_path, settings.key_path)
        verify = bool(settings.trust_roots)
        options = tssl.CertificateOptions(
            privateKey=key,
            certificate=cert,
            extraCertChain=chain,
            verify=verify,
            caCerts=[crypto.X509.from_cryptography(c) for c in settings.trust_roots]
            if verify
            else None,
            requireCertificate=settings.require_client_cert,
            verifyDepth=settings.verify_depth,
            raiseMinimumTo=settings.min_version,
            lowerMaximumSecurityTo=settings.max_version,
            enableSessions=settings.session_cache,
            enableSessionTickets=settings.session_tickets,
            acceptableCiphers=_ACCEPTABLE_CIPHERS,
        )
        self.settings = settings
        self.writer = keylog_writer(settings.keylog_path, environ)
        self.context = _finish_context(
            options, settings.crls, settings.crl_check_all, self.writer
        )
        if verify:
            self.context.set_verify(self.context.get_verify_mode(), _verify_client_certificate)
        if not settings.session_tickets and not settings.session_cache:
            # No resumption: with SSL_OP_NO_TICKET alone OpenSSL still sends
            # two (stateful) TLS 1.3 tickets after every handshake.
            self.tickets_disabled = disable_session_tickets(self.context)
        else:
            self.tickets_disabled = False

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        return SSL.Connection(self.context, None)


def has_client_auth_usage(cert: x509.Certificate) -> bool:
    """Whether ``cert`` has an extended key usage extension naming clientAuth.

    A certificate without the extension is *not* a client certificate here
    (RFC 5280 would allow any use); ``anyExtendedKeyUsage`` does not count.
    """
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in usage


#: SHA-256 of a client certificate's DER -> it has clientAuth (a property of
#: the bytes alone): the key usage is parsed once per certificate, not once
#: per handshake (about 30 us of the registrar's work per TLS handshake).
#: The digest is OpenSSL's, in one call (``_internals.certificate_sha256``).
_CLIENT_AUTH_SEEN: OrderedDict[bytes, bool] = OrderedDict()
_CLIENT_AUTH_SEEN_MAX = 4096


def _verify_client_certificate(
    conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int
) -> bool:
    """Server-side verify callback: OpenSSL's verdict, plus clientAuth on the leaf."""
    if not ok or depth != 0:
        return bool(ok)
    try:
        key = _internals.certificate_sha256(cert)
        if _CLIENT_AUTH_SEEN.get(key):
            return True
        leaf = cert.to_cryptography()
        if has_client_auth_usage(leaf):
            _CLIENT_AUTH_SEEN[key] = True
            while len(_CLIENT_AUTH_SEEN) > _CLIENT_AUTH_SEEN_MAX:
                _CLIENT_AUTH_SEEN.popitem(last=False)
            return True
        _log.info(
            "Client certificate refused: no clientAuth extended key usage ({subject})",
            subject=leaf.subject.rfc4514_string()[:200],
        )
        return False
    except BaseException:  # never raise into OpenSSL
        _log.failure("while checking a client certificate's key usage")
        return False


def disable_session_tickets(context: SSL.Context) -> bool:
    """Make ``context`` send no TLS 1.3 NewSessionTicket (OpenSSL's
    ``SSL_CTX_set_num_tickets(ctx, 0)``) when the bindings offer it
    (capability ``NUM_TICKETS`` of :mod:`rserpool.security._internals`).

    Returns whether it was done; without the binding (pyOpenSSL 26 exposes
    neither ``Context.set_num_tickets`` nor the cffi function) the context is
    left as it is, and that is logged once: the tickets are only a cost,
    resumption stays refused.
    """
    return _internals.disable_tickets(context)


def server_options(
    cert_path: PathLike,
    key_path: PathLike,
    trust_roots: TrustRoots = (),
    *,
    require_client_cert: bool = True,
    crls: CRLs = (),
    crl_check_all: bool = False,
    min_version: Any = MINIMUM_VERSION,
    max_version: Any = None,
    keylog_path: PathLike | None = None,
    session_tickets: bool = False,
    session_cache: bool = False,
    verify_depth: int = 4,
    environ: Mapping[str, str] | None = None,
) -> ServerTLSOptions:
    """Server connection creator.

    ``cert_path`` may hold the leaf followed by intermediates.  Client
    certificates are required by default and verified against ``trust_roots``
    only.  With ``require_client_cert=False`` and ``trust_roots`` given, a
    client certificate is optional but verified if sent; without roots none
    is requested.  ``crls`` enables ``CRL_CHECK`` (a CRL must then be loaded
    for every CA that issues client certificates, or their handshakes fail).
    ``environ`` defaults to ``os.environ`` (for ``SSLKEYLOGFILE``).
    """
    settings = ServerTLSSettings(
        cert_path=Path(cert_path),
        key_path=Path(key_path),
        trust_roots=load_trust_roots(trust_roots),
        require_client_cert=require_client_cert,
        crls=load_crls(crls),
        crl_check_all=crl_check_all,
        min_version=min_version,
        max_version=max_version,
        keylog_path=Path(keylog_path) if keylog_path is not None else None,
        session_tickets=session_tickets,
        session_cache=session_cache,
        verify_depth=verify_depth,
    )
    return ServerTLSOptions(settings, environ)


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableServerOptions:
    """Server creator whose context can be replaced while the server runs.

    New connections use the current options; established ones keep theirs.
    """

    def __init__(self, options: ServerTLSOptions) -> None:
        self._current = options

    @property
    def current(self) -> ServerTLSOptions:
        return self._current

    def replace(self, options: ServerTLSOptions) -> None:
        self._current = options

    def reload(self, environ: Mapping[str, str] | None = None, **changes: Any) -> ServerTLSOptions:
        """Rebuild from the current settings with ``changes`` (e.g. ``crls=...``).

        Files (certificate, key) are re-read.  If building fails, the current
        options stay in place and the error propagates.
        """
        options = ServerTLSOptions(self._current.settings.replace(**changes), environ)
        self._current = options
        return options

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        return self._current.serverConnectionForTLS(tlsProtocol)


# --- client -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientTLSSettings:
    hostname: str
    trust_roots: tuple[x509.Certificate, ...] = ()
    system_trust: bool = False
    client_cert_path: Path | None = None
    client_key_path: Path | None = None
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    crl_check_all: bool = False
    min_version: Any = MINIMUM_VERSION
    max_version: Any = None
    keylog_path: Path | None = None
    send_server_name: bool | None = None


def _is_ip(hostname: str) -> bool:
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return True


@implementer(IOpenSSLClientConnectionCreator)
class ClientTLSOptions:
    """Client creator: chain and expiry by OpenSSL, then the host name by service-identity."""

    def __init__(
        self, settings: ClientTLSSettings, environ: Mapping[str, str] | None = None
    ) -> None:
        _check_versions(settings.min_version, settings.max_version)
        if not settings.hostname:
            raise ValueError("a host name (or IP address) to verify is required")
        if not settings.trust_roots and not settings.system_trust:
            raise ValueError("no trust roots configured (pass system_trust=True to use the OS store)")
        trust: Any
        if settings.trust_roots:
            trust = tssl.trustRootFromCertificates(
                [tssl.Certificate(crypto.X509.from_cryptography(c)) for c in settings.trust_roots]
            )
        else:
            trust = tssl.platformTrust()
        extra: dict[str, Any] = {}
        if settings.client_cert_path is not None:
            if settings.client_key_path is None:
                raise ValueError("a client certificate needs its key")
            key, cert, chain = _load_identity(settings.client_cert_path, settings.client_key_path)
            extra = {"privateKey": key, "certificate": cert, "extraCertChain": chain}
        options = tssl.CertificateOptions(
            trustRoot=trust,
            raiseMinimumTo=settings.min_version,
            lowerMaximumSecurityTo=settings.max_version,
            acceptableCiphers=_ACCEPTABLE_CIPHERS,
            **extra,
        )
        self.settings = settings
        self.writer = keylog_writer(settings.keylog_path, environ)
        self.context = _finish_context(
            options, settings.crls, settings.crl_check_all, self.writer
        )
        self._is_ip = _is_ip(settings.hostname)
        send = settings.send_server_name
        self._sni: bytes | None = None
        if (send is None and not self._is_ip) or send:
            self._sni = settings.hostname.encode("idna")

    def _verify_identity(self, cert: x509.Certificate) -> None:
        if self._is_ip:
            verify_certificate_ip_address(cert, self.settings.hostname)
        else:
            verify_certificate_hostname(cert, self.settings.hostname)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)
        if self._sni is not None:
            connection.set_tlsext_host_name(self._sni)
        holder: list[Any] = [tlsProtocol]

        def fail(reason: str) -> None:
            # The connection ends with this reason (one readable line)
            # rather than OpenSSL's "certificate verify failed".
            if holder[0] is not None:
                holder[0].failVerification(Failure(CertificateRejected(reason)))
                holder[0] = None

        def verify(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
            try:
                if not ok:
                    fail(verify_error_text(errno, depth, cert))
                    return False
                if depth != 0:
                    return True
                try:
                    self._verify_identity(cert.to_cryptography())
                except (VerificationError, CertificateError):
                    fail(name_mismatch_text(self.settings.hostname, cert.to_cryptography()))
                    return False
                return True
            except BaseException:  # never raise into OpenSSL
                _log.failure("while verifying the server certificate")
                return False
            finally:
                if depth == 0:
                    holder[0] = None

        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verify)
        return connection


def client_options(
    hostname: str,
    trust_roots: TrustRoots = (),
    *,
    client_cert: tuple[PathLike, PathLike] | None = None,
    crls: CRLs = (),
    crl_check_all: bool = False,
    min_version: Any = MINIMUM_VERSION,
    max_version: Any = None,
    keylog_path: PathLike | None = None,
    system_trust: bool = False,
    send_server_name: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> ClientTLSOptions:
    """Client connection creator for a server expected to be ``hostname`` (DNS name or IP).

    ``client_cert`` is ``(cert_path, key_path)``; the cert file may carry the
    chain after the leaf.  Trust roots must be configured; the system store is
    used only with ``system_trust=True``.  ``crls`` make the client check the
    server's certificate for revocation.
    """
    cert_path, key_path = client_cert if client_cert is not None else (None, None)
    settings = ClientTLSSettings(
        hostname=hostname,
        trust_roots=load_trust_roots(trust_roots),
        system_trust=system_trust,
        client_cert_path=Path(cert_path) if cert_path is not None else None,
        client_key_path=Path(key_path) if key_path is not None else None,
        crls=load_crls(crls),
        crl_check_all=crl_check_all,
        min_version=min_version,
        max_version=max_version,
        keylog_path=Path(keylog_path) if keylog_path is not None else None,
        send_server_name=send_server_name,
    )
    return ClientTLSOptions(settings, environ)


# --- established connections -----------------------------------------------------


def tls_connection(transport: Any) -> SSL.Connection:
    """The pyOpenSSL ``Connection`` behind a Twisted TLS transport.

    ``TLSMemoryBIOProtocol.getHandle()`` (the transport an application protocol
    sees on a TLS endpoint) returns it.
    """
    get_handle: Callable[[], Any] | None = getattr(transport, "getHandle", None)
    handle = get_handle() if get_handle is not None else None
    if not isinstance(handle, SSL.Connection):
        raise NotTLSError(f"{type(transport).__name__} is not a TLS transport")
    return handle


def export_keying_material(
    transport: Any, label: bytes, length: int, context: bytes | None = None
) -> bytes:
    """The TLS exporter (RFC 5705 / RFC 8446 section 7.5) of an established connection.

    Both ends get the same bytes for the same ``label``/``context``; every
    connection gets different ones.  Use for channel binding.
    """
    if not isinstance(label, bytes) or not label:
        raise ValueError("label must be non-empty bytes")
    if not 1 <= length <= MAX_EXPORT_LENGTH:
        raise ValueError(f"length must be 1-{MAX_EXPORT_LENGTH}")
    connection = tls_connection(transport)
    if connection.get_finished() is None:
        raise NotTLSError("the TLS handshake has not completed")
    return connection.export_keying_material(label, length, context)


def peer_certificate(transport: Any) -> x509.Certificate | None:
    """The peer's (verified) leaf certificate, or None if it sent none."""
    cert = tls_connection(transport).get_peer_certificate()
    return cert.to_cryptography() if cert is not None else None


def negotiated_protocol_version(transport: Any) -> str:
    """E.g. ``"TLSv1.3"``."""
    return tls_connection(transport).get_protocol_version_name()
