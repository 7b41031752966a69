"""Server-side TLS wrapping for rserpool's listeners: Twisted's
``TLSMemoryBIOFactory`` with two per-connection or per-read costs removed.

1. ``TLSMemoryBIOProtocol.makeConnection`` (Twisted 26) first calls
   ``directlyProvides(self, interface)`` once for every interface of the TCP
   transport, each call replacing the previous declaration, and then, through
   ``ProtocolWrapper.makeConnection``, declares all of them at once.  With a
   TCP server transport that loop is nine zope.interface declarations, about
   20 us per new connection, whose result is overwritten.  ``TLSServerFactory``
   builds protocols that skip the loop and otherwise do exactly what Twisted
   does, in the same order.

2. After every read Twisted asks OpenSSL for more application data until
   pyOpenSSL raises ``WantReadError``, and after every read and every write
   asks the outgoing memory BIO for bytes until it raises ``WantReadError``.
   On a channel carrying one request per read that is two exceptions built
   and caught per request, about 3 us.  Here the same loops first ask OpenSSL
   whether anything is there (``SSL_pending`` and the memory BIOs' fill
   level, a fraction of a microsecond) and skip a call that could only
   raise.  When there is something, the calls, and their error handling, are
   Twisted's own.

Both shortcuts depend on private names, Twisted's and pyOpenSSL's.  Each is
used only when the code it replaces still refers to what it relies on
(``FAST_MAKE_CONNECTION``, ``FAST_TLS_IO``); otherwise the stock behaviour
is used and nothing changes.  ``tests/test_service_tlsfactory.py`` checks
both against Twisted's own protocol over real loopback TLS.
"""

from __future__ import annotations

from typing import Any

from OpenSSL.SSL import Error, WantReadError, ZeroReturnError
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure

__all__ = ["FAST_MAKE_CONNECTION", "FAST_TLS_IO", "TLSServerFactory"]

_NAMES_USED = {"_creatorCallable", "_appSendBuffer", "registerProtocol", "_connectWrapped",
               "_checkHandshakeStatus", "directlyProvides", "providedBy"}

#: Whether Twisted's makeConnection is the one this module shortens.
FAST_MAKE_CONNECTION = _NAMES_USED <= set(TLSMemoryBIOProtocol.makeConnection.__code__.co_names) and all(
    hasattr(TLSMemoryBIOProtocol, name) for name in ("_checkHandshakeStatus", "getHandle"))


def _fast_io_bindings() -> tuple[Any, Any, Any] | None:
    """``(SSL_pending, BIO_get_mem_data, scratch char**)`` from the OpenSSL
    bindings pyOpenSSL uses, or None when they are not there."""
    try:
        from OpenSSL._util import ffi, lib

        return lib.SSL_pending, lib.BIO_get_mem_data, ffi.new("char **")
    except (ImportError, AttributeError):  # pragma: no cover - other pyOpenSSL
        return None


_BINDINGS = _fast_io_bindings()
_RECEIVE_NAMES = {"_lostTLSConnection", "_tlsConnection", "recv", "_shutdownTLS", "_tlsShutdownFinished",
                  "_aborted", "dataReceived", "_flushSendBIO"}
_SEND_NAMES = {"_tlsConnection", "bio_read", "transport", "write"}

#: Whether Twisted's read and write loops are the ones this module shortens
#: (and pyOpenSSL exposes the two calls used to look before reading).
FAST_TLS_IO = (
    _BINDINGS is not None
    and _RECEIVE_NAMES <= set(TLSMemoryBIOProtocol._flushReceiveBIO.__code__.co_names)
    and _SEND_NAMES <= set(TLSMemoryBIOProtocol._flushSendBIO.__code__.co_names)
    and ProtocolWrapper.dataReceived.__code__.co_names == ("wrappedProtocol", "dataReceived")
)


class _TLSServerProtocol(BufferingTLSTransport):
    # The pyOpenSSL connection's SSL object and memory BIOs (cffi pointers,
    # kept alive by the connection), or None to use Twisted's loops.
    _ssl_ptr: Any = None
    _into_bio: Any = None
    _from_bio: Any = None

    def makeConnection(self, transport: Any) -> None:
        self._tlsConnection = connection = self.factory._creatorCallable(self)
        if FAST_TLS_IO:
            pointers = (getattr(connection, "_ssl", None), getattr(connection, "_into_ssl", None),
                        getattr(connection, "_from_ssl", None))
            if None not in pointers:
                self._ssl_ptr, self._into_bio, self._from_bio = pointers
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

    def _flushSendBIO(self) -> None:
        # Twisted's: one bio_read of up to 32 KiB, written to the transport;
        # an empty BIO (pyOpenSSL's WantReadError) is not asked.
        from_bio = self._from_bio
        if from_bio is not None and self._tlsConnection is not None \
                and _BINDINGS[1](from_bio, _BINDINGS[2]) <= 0:  # type: ignore[index]
            return
        TLSMemoryBIOProtocol._flushSendBIO(self)

    def _flushReceiveBIO(self) -> None:
        # Twisted's loop, which stops at the WantReadError of a read that
        # finds nothing; this one also stops, before that read, when OpenSSL
        # holds no decrypted bytes and no received bytes wait in the BIO.
        ssl = self._ssl_ptr
        if ssl is None:
            TLSMemoryBIOProtocol._flushReceiveBIO(self)
            return
        connection = self._tlsConnection
        into_bio = self._into_bio
        pending, filled, scratch = _BINDINGS  # type: ignore[misc]
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
                if pending(ssl) <= 0 and filled(into_bio, scratch) <= 0:
                    break
        self._flushSendBIO()

    def connectionLost(self, reason: Any) -> None:
        # Twisted's connectionLost shuts the incoming BIO down and reads until
        # OpenSSL reports the end, recording what that end was: that last
        # read goes through Twisted's own loop, never the shortcut.
        self._ssl_ptr = None
        super().connectionLost(reason)
        self._into_bio = self._from_bio = None


class TLSServerFactory(TLSMemoryBIOFactory):
    """``TLSMemoryBIOFactory(creator, False, wrapped)`` for a listening port."""

    if FAST_MAKE_CONNECTION:
        protocol = _TLSServerProtocol

    def __init__(self, creator: Any, wrapped_factory: Any, clock: Any = None) -> None:
        super().__init__(creator, False, wrapped_factory, clock)
