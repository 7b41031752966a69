"""Server-side TLS wrapping for rserpool's listeners: Twisted's
``TLSMemoryBIOFactory`` with two costs removed.

Eager sends.  Twisted's TCP transport never sends in ``write``: it buffers,
registers for writability (an ``epoll_ctl``), sends on the next reactor
iteration and unregisters (another ``epoll_ctl``).  For a server answering
small requests that is two system calls and a reactor iteration per
answer.  ``_TLSServerProtocol`` hands the TLS records it produces straight
to the socket when the TCP transport has nothing buffered (so the order of
bytes cannot change) and is connected and not closing; whatever the socket
does not take, or any error, goes through the transport's own ``write``,
which buffers it and lets Twisted's ``doWrite`` deal with it as usual.

``TLSMemoryBIOProtocol.makeConnection`` (Twisted 26) first calls
``directlyProvides(self, interface)`` once for every interface of the TCP
transport, each call replacing the previous declaration, and then, through
``ProtocolWrapper.makeConnection``, declares all of them at once.  With a
TCP server transport that loop is nine zope.interface declarations, about
20 us per new connection, whose result is overwritten.  ``TLSServerFactory``
builds protocols that skip the loop and otherwise do exactly what Twisted
does, in the same order.

The shortcuts depend on Twisted's private names.  They are used only when
Twisted's ``makeConnection`` still refers to all of them and the TCP
transport has the buffer attributes read here; otherwise the stock protocol
or the transport's ``write`` is used and nothing changes
(``FAST_MAKE_CONNECTION`` and ``eager_sender`` say which).  ``tests/test_service_tlsfactory.py`` checks both the interfaces the
connection ends up providing and a real handshake.
"""

from __future__ import annotations

from typing import Any, Callable

from OpenSSL.SSL import WantReadError
from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory, TLSMemoryBIOProtocol

__all__ = ["FAST_MAKE_CONNECTION", "TLSServerFactory", "eager_sender", "send_eagerly"]

_NAMES_USED = {"_creatorCallable", "_appSendBuffer", "registerProtocol", "_connectWrapped",
               "_checkHandshakeStatus", "directlyProvides", "providedBy"}

#: Whether Twisted's makeConnection is the one this module shortens.
FAST_MAKE_CONNECTION = _NAMES_USED <= set(TLSMemoryBIOProtocol.makeConnection.__code__.co_names) and all(
    hasattr(TLSMemoryBIOProtocol, name) for name in ("_checkHandshakeStatus", "getHandle", "_flushSendBIO"))


_TCP_BUFFER_NAMES = ("connected", "disconnecting", "_writeDisconnected", "dataBuffer", "offset",
                     "_tempDataLen", "producer", "socket", "TLS")


def send_eagerly(transport: Any, data: bytes) -> None:
    """Send ``data`` on ``transport``'s socket now if nothing is buffered
    before it; the rest (or all of it) through ``transport.write``."""
    if (transport.connected and not transport.disconnecting and not transport._writeDisconnected
            and not transport._tempDataLen and transport.offset == len(transport.dataBuffer)
            and transport.producer is None and not transport.TLS):
        try:
            sent = transport.socket.send(data)
        except OSError:  # EAGAIN, EINTR, or an error doWrite will report
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


def eager_sender(transport: Any) -> Callable[[bytes], None] | None:
    """``send_eagerly`` bound to ``transport`` if it is a Twisted TCP
    connection with the expected buffer attributes, else None."""
    if not isinstance(transport, tcp.Connection) or not all(hasattr(transport, n) for n in _TCP_BUFFER_NAMES):
        return None

    def send(data: bytes) -> None:
        send_eagerly(transport, data)

    return send


class _TLSServerProtocol(BufferingTLSTransport):
    _send_now: Callable[[bytes], None] | None = None

    def _flushSendBIO(self) -> None:
        try:
            data = self._tlsConnection.bio_read(2**15)
        except WantReadError:
            return  # nothing to send
        send = self._send_now
        if send is None:
            self.transport.write(data)
        else:
            send(data)

    def makeConnection(self, transport: Any) -> None:
        self._send_now = eager_sender(transport)
        self._tlsConnection = self.factory._creatorCallable(self)
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


class TLSServerFactory(TLSMemoryBIOFactory):
    """``TLSMemoryBIOFactory(creator, False, wrapped)`` for a listening port."""

    if FAST_MAKE_CONNECTION:
        protocol = _TLSServerProtocol

    def __init__(self, creator: Any, wrapped_factory: Any, clock: Any = None) -> None:
        super().__init__(creator, False, wrapped_factory, clock)
