"""Every private name of pyOpenSSL and Twisted that rserpool relies on, in one place.

pyOpenSSL 26 binds neither TLS-PSK nor the extended-master-secret query, and
Twisted's TLS protocol has two per-request costs that can only be removed by
reaching inside it.  Those uses are kept here and nowhere else: this module
looks at the private names once, at import, and exposes one named
:class:`Capability` per feature.  Each feature checks its capability and,
when it is missing, either **fails closed** or **falls back** to the stock
behaviour with a logged reason (logged once per process):

=====================  =======================================  =================================
capability             what it gives                            when missing
=====================  =======================================  =================================
``EXTENDED_MASTER``    :func:`extended_master_secret`: did a    fail closed: a TLS 1.2 channel
                       TLS 1.2 handshake use RFC 7627's EMS?    cannot be bound (SRP/CHAP refused
                                                                with the channel-binding code)
``PSK``                TLS-PSK callbacks, identity hint,        fail closed: enabling TLS-PSK
                       "session reused" query                   raises ``PskUnavailableError``
``NUM_TICKETS``        :func:`disable_tickets`: no TLS 1.3      fall back: OpenSSL sends its two
                       NewSessionTicket at all                  (unusable) tickets per handshake
``FAST_HANDSHAKE``     :class:`ServerTLSProtocol` skips a loop  fall back: Twisted's protocol
                       of interface declarations per connection
``FAST_TLS_IO``        :class:`ServerTLSProtocol` looks at      fall back: Twisted's read and
                       ``SSL_pending`` and the memory BIOs      flush loops
                       before reading
``CERT_DIGEST``        :func:`certificate_sha256` in one        fall back: the DER copied out
                       OpenSSL call (``X509_digest``)           and hashed by ``hashlib``
=====================  =======================================  =================================

``tests/test_security_internals.py`` tests each capability, present and
missing.  Nothing outside this module may touch ``OpenSSL._util``,
``OpenSSL.SSL._lib``/``_ffi``, a ``Connection``'s ``_ssl`` or a
``Context``'s ``_context`` (``python3 ../shared/tools/layering rserpool``
reports the files that do).
"""

from __future__ import annotations

import hashlib
import os
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from OpenSSL import SSL, crypto
from OpenSSL.SSL import Error, WantReadError, ZeroReturnError
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOProtocol
from twisted.python.failure import Failure

__all__ = [
    "CERT_DIGEST",
    "Capability",
    "CapabilityUnavailable",
    "EXTENDED_MASTER",
    "FAST_HANDSHAKE",
    "FAST_TLS_IO",
    "NUM_TICKETS",
    "PSK",
    "PskCallbackHandle",
    "ServerTLSProtocol",
    "disable_tickets",
    "enable_psk_client",
    "enable_psk_server",
    "extended_master_secret",
    "psk_identity_accepted",
    "psk_server_connection",
    "certificate_sha256",
    "session_reused",
    "set_psk_identity_hint",
]

_log = Logger()


class CapabilityUnavailable(RuntimeError):
    """A feature was used whose private bindings are not there."""


@dataclass(eq=False)
class Capability:
    """One feature built on private names: ``available``, and if not, why.

    ``fallback`` says what rserpool does instead; :meth:`note_missing` logs
    that once per process, at warning level when security is affected (a
    feature refused) and at debug level when only a cost is (an operator
    can do nothing about it; ``--log-level debug`` shows it)."""

    name: str
    available: bool
    reason: str
    fallback: str
    security: bool = True
    _noted: bool = field(default=False, repr=False)

    def note_missing(self) -> None:
        if self.available or self._noted:
            return
        self._noted = True
        emit = _log.warn if self.security else _log.debug
        emit("{capability} unavailable ({reason}): {fallback}", capability=self.name,
             reason=self.reason, fallback=self.fallback)

    def require(self) -> None:
        if not self.available:
            raise CapabilityUnavailable(f"{self.name} is unavailable: {self.reason}")


# -- the bindings, looked at once --------------------------------------------------------


def _bindings() -> tuple[Any, Any, str]:
    """(ffi, lib, "") of the cffi binding pyOpenSSL uses, or (None, None, why)."""
    try:
        from OpenSSL._util import ffi, lib
    except ImportError as exc:  # pragma: no cover - another pyOpenSSL
        return None, None, f"pyOpenSSL no longer exposes its cffi bindings ({exc})"
    return ffi, lib, ""


_FFI, _LIB, _NO_BINDINGS = _bindings()


def _probe_objects() -> tuple[bool, bool, str]:
    """Whether a Context still has ``_context`` (SSL_CTX*) and a Connection
    ``_ssl`` (SSL*) plus its two memory BIOs ``_into_ssl``/``_from_ssl``."""
    context = SSL.Context(SSL.TLS_METHOD)
    connection = SSL.Connection(context, None)
    has_context = getattr(context, "_context", None) is not None
    has_connection = all(getattr(connection, name, None) is not None
                         for name in ("_ssl", "_into_ssl", "_from_ssl"))
    missing = [what for what, ok in (("Context._context", has_context),
                                     ("Connection._ssl/_into_ssl/_from_ssl", has_connection)) if not ok]
    return has_context, has_connection, ", ".join(missing)


_HAS_CTX_POINTER, _HAS_SSL_POINTER, _MISSING_POINTERS = _probe_objects()


def _capability(name: str, symbols: tuple[str, ...], needs_ctx: bool, needs_ssl: bool,
                fallback: str, security: bool = True) -> Capability:
    problems = []
    if _LIB is None:
        problems.append(_NO_BINDINGS)
    else:
        missing = [symbol for symbol in symbols if not hasattr(_LIB, symbol)]
        if missing:
            problems.append(f"OpenSSL functions not bound by pyOpenSSL: {', '.join(missing)}")
    if needs_ctx and not _HAS_CTX_POINTER:
        problems.append("pyOpenSSL Context has no _context (SSL_CTX*) attribute any more")
    if needs_ssl and not _HAS_SSL_POINTER:
        problems.append("pyOpenSSL Connection has no _ssl (SSL*) attribute any more")
    return Capability(name, not problems, "; ".join(problems), fallback, security)


#: RFC 7627 query on a TLS 1.2 connection (``SSL_get_extms_support``).
EXTENDED_MASTER = _capability(
    "extended master secret query", ("SSL_get_extms_support",), False, True,
    "TLS 1.2 channels cannot be bound to an SRP/CHAP exchange (use TLS 1.3)")

#: TLS-PSK (RFC 5355 section 4): OpenSSL's PSK callbacks, hint and reuse query.
PSK_SYMBOLS = (
    "SSL_CTX_set_psk_server_callback",
    "SSL_CTX_set_psk_client_callback",
    "SSL_CTX_use_psk_identity_hint",
    "SSL_session_reused",
)
PSK = _capability("TLS-PSK", PSK_SYMBOLS, True, True,
                  "TLS-PSK cannot be enabled (refusing to run without it rather than weaker)")

#: ``SSL_CTX_set_num_tickets`` (pyOpenSSL 26 binds neither it nor a Context method).
NUM_TICKETS = _capability(
    "TLS 1.3 ticket count", ("SSL_CTX_set_num_tickets",), True, False,
    "OpenSSL sends two TLS 1.3 session tickets per handshake (a cost only: resumption stays refused)",
    security=False)


# -- extended master secret -----------------------------------------------------------------


def extended_master_secret(connection: SSL.Connection) -> bool | None:
    """Whether the connection's TLS 1.2 handshake used the extended master
    secret; None when this cannot be told (the capability is missing)."""
    if not EXTENDED_MASTER.available:
        EXTENDED_MASTER.note_missing()
        return None
    return bool(_LIB.SSL_get_extms_support(connection._ssl) == 1)


# -- TLS 1.3 tickets --------------------------------------------------------------------------


def disable_tickets(context: SSL.Context) -> bool:
    """``SSL_CTX_set_num_tickets(ctx, 0)``: whether it was done (logged once if not)."""
    setter = getattr(context, "set_num_tickets", None)  # a future pyOpenSSL's public API
    if setter is not None:
        setter(0)
        return True
    if not NUM_TICKETS.available:
        NUM_TICKETS.note_missing()
        return False
    return bool(_LIB.SSL_CTX_set_num_tickets(context._context, 0))


# -- certificate digests ------------------------------------------------------------------------


def _cert_digest() -> tuple[Capability, Any]:
    """The capability and OpenSSL's SHA-256 (an ``EVP_MD*``, None when missing)."""
    problems = []
    md = None
    if _LIB is None:
        problems.append(_NO_BINDINGS)
    else:
        missing = [symbol for symbol in ("X509_digest", "EVP_get_digestbyname") if not hasattr(_LIB, symbol)]
        if missing:
            problems.append(f"OpenSSL functions not bound by pyOpenSSL: {', '.join(missing)}")
        else:
            md = _LIB.EVP_get_digestbyname(b"SHA256")
            if md == _FFI.NULL:
                problems.append("OpenSSL knows no SHA256 digest by that name")
                md = None
    if getattr(crypto.X509(), "_x509", None) is None:
        problems.append("pyOpenSSL X509 has no _x509 (X509*) attribute any more")
        md = None
    capability = Capability("certificate digest in one call", not problems, "; ".join(problems),
                            "the DER is copied out and hashed with hashlib", security=False)
    return capability, md


#: ``certificate_sha256`` by ``X509_digest``.
CERT_DIGEST, _SHA256 = _cert_digest()


def certificate_sha256(certificate: crypto.X509) -> bytes:
    """SHA-256 of ``certificate``'s DER encoding (what
    ``hashlib.sha256(crypto.dump_certificate(FILETYPE_ASN1, certificate))``
    gives), computed by OpenSSL without copying the DER into Python: a TLS
    verify callback pays it once per handshake."""
    md = _SHA256
    if md is not None:
        digest = _FFI.new("unsigned char[64]")  # EVP_MAX_MD_SIZE
        length = _FFI.new("unsigned int *")
        if _LIB.X509_digest(certificate._x509, md, digest, length) == 1:
            return _FFI.buffer(digest, length[0])[:]
    else:
        CERT_DIGEST.note_missing()
    return hashlib.sha256(crypto.dump_certificate(crypto.FILETYPE_ASN1, certificate)).digest()


# -- TLS-PSK ----------------------------------------------------------------------------------

#: Longest PSK identity handed to the server's key lookup (OpenSSL takes 128).
PSK_MAX_IDENTITY = 128

# SSL* address -> Connection, while the Connection lives (an entry vanishes
# before OpenSSL can reuse the address for another connection).
_server_connections: "weakref.WeakValueDictionary[int, SSL.Connection]" = weakref.WeakValueDictionary()
# Connection -> the PSK identity whose key the server callback handed out.
_accepted: "weakref.WeakKeyDictionary[SSL.Connection, str]" = weakref.WeakKeyDictionary()


class PskCallbackHandle:
    """Keeps a PSK callback (and its cffi handle) alive as long as the context."""

    __slots__ = ("callback", "handle")

    def __init__(self, callback: Any, handle: Any) -> None:
        self.callback = callback
        self.handle = handle


def _require_psk() -> None:
    if not PSK.available:
        PSK.note_missing()
        PSK.require()


def _pointer_key(ssl: Any) -> int:
    return int(_FFI.cast("uintptr_t", ssl))


class _ServerCallback:
    """OpenSSL's server PSK callback around ``lookup(name, connection) -> key
    | None`` (``connection``: the server Connection, None if not made by
    :func:`psk_server_connection`)."""

    def __init__(self, lookup: Callable[[str, Any], bytes | None], min_key: int) -> None:
        self.lookup = lookup
        self.min_key = min_key

    def __call__(self, ssl: Any, identity: Any, psk: Any, max_psk_len: int) -> int:
        try:
            if identity == _FFI.NULL:
                return 0
            raw = _FFI.string(identity, PSK_MAX_IDENTITY + 1)
            name: str | None
            try:
                name = raw.decode("utf-8") if len(raw) <= PSK_MAX_IDENTITY else None
            except UnicodeDecodeError:
                name = None
            key = None
            connection = _server_connections.get(_pointer_key(ssl))
            if name is not None:
                try:
                    key = self.lookup(name, connection)
                except Exception:
                    _log.failure("PSK key store failed; refusing the handshake")
                    return 0
            if key is None or not self.min_key <= len(key) <= max_psk_len:
                # Unknown identity: a random key makes it fail like a wrong key.
                key = os.urandom(32)
                name = None
            _FFI.memmove(psk, key, len(key))
            if connection is not None:
                if name is None:
                    _accepted.pop(connection, None)
                else:
                    _accepted[connection] = name
            return len(key)
        except BaseException:  # never raise into OpenSSL
            _log.failure("in the TLS-PSK server callback")
            return 0


def enable_psk_server(context: SSL.Context, lookup: Callable[[str, Any], bytes | None],
                      min_key: int) -> PskCallbackHandle:
    """Install the server PSK callback on a context that has made no
    connection yet; connections must come from :func:`psk_server_connection`
    for :func:`psk_identity_accepted` to know them."""
    _require_psk()
    callback = _ServerCallback(lookup, min_key)
    handle = _FFI.callback("unsigned int(*)(SSL *, char *, unsigned char *, unsigned int)", callback)
    _LIB.SSL_CTX_set_psk_server_callback(context._context, handle)
    return PskCallbackHandle(callback, handle)


def set_psk_identity_hint(context: SSL.Context, hint: bytes) -> bool:
    """Whether OpenSSL took the identity hint."""
    _require_psk()
    return bool(_LIB.SSL_CTX_use_psk_identity_hint(context._context, hint) == 1)


def psk_server_connection(context: SSL.Context) -> SSL.Connection:
    """A server Connection the PSK callback can attribute an identity to."""
    _require_psk()
    connection = SSL.Connection(context, None)
    _server_connections[_pointer_key(connection._ssl)] = connection
    return connection


def psk_identity_accepted(connection: SSL.Connection) -> str | None:
    """The identity whose key the server callback handed to this connection
    (not yet proof that the handshake used it: see ``psk.psk_identity``)."""
    return _accepted.get(connection)


def session_reused(connection: SSL.Connection) -> bool:
    """``SSL_session_reused``: for a TLS 1.3 server without resumption, the
    handshake used an external PSK."""
    if not PSK.available:
        PSK.note_missing()
        return False
    return bool(_LIB.SSL_session_reused(connection._ssl) == 1)


class _ClientCallback:
    def __init__(self, identity: bytes, key: bytes) -> None:
        self.identity = identity
        self.key = key

    def __call__(self, ssl: Any, hint: Any, identity: Any, max_identity_len: int, psk: Any,
                 max_psk_len: int) -> int:
        try:
            if len(self.identity) + 1 > max_identity_len or len(self.key) > max_psk_len:
                return 0
            _FFI.memmove(identity, self.identity + b"\0", len(self.identity) + 1)
            _FFI.memmove(psk, self.key, len(self.key))
            return len(self.key)
        except BaseException:  # never raise into OpenSSL
            _log.failure("in the TLS-PSK client callback")
            return 0


def enable_psk_client(context: SSL.Context, identity: bytes, key: bytes) -> PskCallbackHandle:
    """Install the client PSK callback offering ``identity`` and ``key``."""
    _require_psk()
    callback = _ClientCallback(identity, key)
    handle = _FFI.callback(
        "unsigned int(*)(SSL *, char *, char *, unsigned int, unsigned char *, unsigned int)", callback)
    _LIB.SSL_CTX_set_psk_client_callback(context._context, handle)
    return PskCallbackHandle(callback, handle)


# -- the fast server TLS protocol ---------------------------------------------------------------

_MAKE_CONNECTION_NAMES = {"_creatorCallable", "_appSendBuffer", "registerProtocol", "_connectWrapped",
                          "_checkHandshakeStatus", "directlyProvides", "providedBy"}
_RECEIVE_NAMES = {"_lostTLSConnection", "_tlsConnection", "recv", "_shutdownTLS", "_tlsShutdownFinished",
                  "_aborted", "dataReceived", "_flushSendBIO"}
_SEND_NAMES = {"_tlsConnection", "bio_read", "transport", "write"}


def _fast_handshake() -> Capability:
    used = set(TLSMemoryBIOProtocol.makeConnection.__code__.co_names)
    missing = sorted(_MAKE_CONNECTION_NAMES - used)
    missing += [name for name in ("_checkHandshakeStatus", "getHandle")
                if not hasattr(TLSMemoryBIOProtocol, name)]
    reason = f"Twisted's TLSMemoryBIOProtocol.makeConnection changed ({', '.join(missing)})" if missing else ""
    return Capability("fast TLS connection set-up", not missing, reason,
                      "Twisted's own makeConnection is used", security=False)


def _fast_io() -> Capability:
    problems = []
    if _LIB is None:
        problems.append(_NO_BINDINGS)
    elif not (hasattr(_LIB, "SSL_pending") and hasattr(_LIB, "BIO_get_mem_data")):
        problems.append("SSL_pending or BIO_get_mem_data not bound by pyOpenSSL")
    if not _HAS_SSL_POINTER:
        problems.append(f"pyOpenSSL objects changed ({_MISSING_POINTERS})")
    if not _RECEIVE_NAMES <= set(TLSMemoryBIOProtocol._flushReceiveBIO.__code__.co_names):
        problems.append("Twisted's TLSMemoryBIOProtocol._flushReceiveBIO changed")
    if not _SEND_NAMES <= set(TLSMemoryBIOProtocol._flushSendBIO.__code__.co_names):
        problems.append("Twisted's TLSMemoryBIOProtocol._flushSendBIO changed")
    if ProtocolWrapper.dataReceived.__code__.co_names != ("wrappedProtocol", "dataReceived"):
        problems.append("Twisted's ProtocolWrapper.dataReceived changed")
    return Capability("fast TLS read/flush", not problems, "; ".join(problems),
                      "Twisted's read and flush loops are used", security=False)


#: ``ServerTLSProtocol.makeConnection`` without Twisted's per-interface loop.
FAST_HANDSHAKE = _fast_handshake()
#: ``ServerTLSProtocol``'s look-before-read loops.
FAST_TLS_IO = _fast_io()

_SSL_PENDING = _LIB.SSL_pending if FAST_TLS_IO.available else None
_BIO_FILLED = _LIB.BIO_get_mem_data if FAST_TLS_IO.available else None
_SCRATCH = _FFI.new("char **") if FAST_TLS_IO.available else None


class ServerTLSProtocol(BufferingTLSTransport):
    """Twisted's server TLS protocol with two costs removed (see
    ``rserpool/service/tlsfactory.py``); used only when ``FAST_HANDSHAKE``
    is available, and its read/flush shortcut only when ``FAST_TLS_IO`` is."""

    # The pyOpenSSL connection's SSL object and memory BIOs (cffi pointers,
    # kept alive by the connection), or None to use Twisted's loops.
    _ssl_ptr: Any = None
    _into_bio: Any = None
    _from_bio: Any = None
    #: Class switch for A/B measurements and tests: use the read/flush shortcut.
    fast_io: bool = FAST_TLS_IO.available

    def makeConnection(self, transport: Any) -> None:  # noqa: N802 (Twisted)
        self._tlsConnection = connection = self.factory._creatorCallable(self)
        if self.fast_io:
            self._ssl_ptr, self._into_bio, self._from_bio = (
                connection._ssl, connection._into_ssl, connection._from_ssl)
        self._appSendBuffer = []
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        if self._connectWrapped:
            # Declares the transport's interfaces on this wrapper (once), then
            # connects the application protocol, as Twisted's version does.
            ProtocolWrapper.makeConnection(self, transport)
        else:  # pragma: no cover - rserpool always connects the wrapped protocol
            from zope.interface import directlyProvides, providedBy

            directlyProvides(self, providedBy(transport))
        self._checkHandshakeStatus()

    def _flushSendBIO(self) -> None:  # noqa: N802 (Twisted)
        # Twisted's: one bio_read of up to 32 KiB, written to the transport;
        # an empty BIO (pyOpenSSL's WantReadError) is not asked.
        from_bio = self._from_bio
        if from_bio is not None and self._tlsConnection is not None \
                and _BIO_FILLED(from_bio, _SCRATCH) <= 0:
            return
        TLSMemoryBIOProtocol._flushSendBIO(self)

    def _flushReceiveBIO(self) -> None:  # noqa: N802 (Twisted)
        # Twisted's loop, which stops at the WantReadError of a read that
        # finds nothing; this one also stops, before that read, when OpenSSL
        # holds no decrypted bytes and no received bytes wait in the BIO.
        ssl = self._ssl_ptr
        if ssl is None:
            TLSMemoryBIOProtocol._flushReceiveBIO(self)
            return
        connection = self._tlsConnection
        into_bio = self._into_bio
        while not self._lostTLSConnection:
            try:
                data = connection.recv(2**15)
            except WantReadError:
                break
            except ZeroReturnError:
                self._shutdownTLS()
                self._tlsShutdownFinished(None)
            except Error:
                self._tlsShutdownFinished(Failure())
            else:
                if not self._aborted:
                    self.wrappedProtocol.dataReceived(data)
                if _SSL_PENDING(ssl) <= 0 and _BIO_FILLED(into_bio, _SCRATCH) <= 0:
                    break
        self._flushSendBIO()

    def connectionLost(self, reason: Any) -> None:  # noqa: N802 (Twisted)
        # Twisted's connectionLost shuts the incoming BIO down and reads until
        # OpenSSL reports the end, recording what that end was: that last
        # read goes through Twisted's own loop, never the shortcut.
        self._ssl_ptr = None
        super().connectionLost(reason)
        self._into_bio = self._from_bio = None
