"""Server-side TLS wrapping for rserpool's listeners: Twisted's
``TLSMemoryBIOFactory`` with one per-connection cost removed.

``TLSMemoryBIOProtocol.makeConnection`` (Twisted 26) first calls
``directlyProvides(self, interface)`` once for every interface of the TCP
transport, each call replacing the previous declaration, and then, through
``ProtocolWrapper.makeConnection``, declares all of them at once.  With a
TCP server transport that loop is nine zope.interface declarations, about
20 us per new connection, whose result is overwritten.  ``TLSServerFactory``
builds protocols that skip the loop and otherwise do exactly what Twisted
does, in the same order.

The shortcut depends on Twisted's private names.  It is used only when
Twisted's ``makeConnection`` still refers to all of them; otherwise the
stock protocol is used and nothing changes (``FAST_MAKE_CONNECTION`` says
which).  ``tests/test_service_tlsfactory.py`` checks both the interfaces the
connection ends up providing and a real handshake.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory, TLSMemoryBIOProtocol

__all__ = ["FAST_MAKE_CONNECTION", "TLSServerFactory"]

_NAMES_USED = {"_creatorCallable", "_appSendBuffer", "registerProtocol", "_connectWrapped",
               "_checkHandshakeStatus", "directlyProvides", "providedBy"}

#: Whether Twisted's makeConnection is the one this module shortens.
FAST_MAKE_CONNECTION = _NAMES_USED <= set(TLSMemoryBIOProtocol.makeConnection.__code__.co_names) and all(
    hasattr(TLSMemoryBIOProtocol, name) for name in ("_checkHandshakeStatus", "getHandle"))


class _TLSServerProtocol(BufferingTLSTransport):
    def makeConnection(self, transport: Any) -> None:
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
