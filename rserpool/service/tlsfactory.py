"""Server-side TLS wrapping for rserpool's listeners: Twisted's
``TLSMemoryBIOFactory`` with two per-connection or per-read costs removed.

1. ``TLSMemoryBIOProtocol.makeConnection`` (Twisted 26) first calls
   ``directlyProvides(self, interface)`` once for every interface of the TCP
   transport, each call replacing the previous declaration, and then, through
   ``ProtocolWrapper.makeConnection``, declares all of them at once.  With a
   TCP server transport that loop is nine zope.interface declarations, about
   20 us per new connection, whose result is overwritten.  The protocol
   skips the loop and otherwise does exactly what Twisted does, in the same
   order.

2. After every read Twisted asks OpenSSL for more application data until
   pyOpenSSL raises ``WantReadError``, and after every read and every write
   asks the outgoing memory BIO for bytes until it raises ``WantReadError``.
   On a channel carrying one request per read that is two exceptions built
   and caught per request, about 3 us.  The protocol's loops first ask
   OpenSSL whether anything is there (``SSL_pending`` and the memory BIOs'
   fill level, a fraction of a microsecond) and skip a call that could only
   raise.  When there is something, the calls, and their error handling, are
   Twisted's own.

Both depend on private names of Twisted and pyOpenSSL, so the protocol
lives in :mod:`rserpool.security._internals` (``ServerTLSProtocol``, the
capabilities ``FAST_HANDSHAKE`` and ``FAST_TLS_IO``).  When one is missing
the stock behaviour is used and the reason is logged once.
``tests/test_service_tlsfactory.py`` checks both against Twisted's own
protocol over real loopback TLS.

The factory takes the reactor as its clock (Twisted would otherwise use the
global reactor for its write aggregation).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.protocols.tls import TLSMemoryBIOFactory

from rserpool.security import _internals

__all__ = ["TLSServerFactory"]


class TLSServerFactory(TLSMemoryBIOFactory):
    """``TLSMemoryBIOFactory(creator, False, wrapped, clock)`` for a listening port."""

    if _internals.FAST_HANDSHAKE.available:
        protocol = _internals.ServerTLSProtocol

    def __init__(self, creator: Any, wrapped_factory: Any, clock: IReactorTime) -> None:
        if clock is None:
            raise TypeError("TLSServerFactory needs the reactor (or a test clock) as its clock")
        _internals.FAST_HANDSHAKE.note_missing()
        _internals.FAST_TLS_IO.note_missing()
        super().__init__(creator, False, wrapped_factory, clock)
