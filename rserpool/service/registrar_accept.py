"""The registrar's listening side: the protocol each accepted connection gets.

Connections count from the moment they are accepted, before the TLS
handshake, so a burst of handshakes cannot get past the gate's connection
limits.  A full listener (or address) first makes room by dropping an idle
anonymous channel (:mod:`rserpool.service.slots`), if there is one; a
connection the gate refuses gets a protocol that drops it at once.

The service (``rserpool.service.registrar.RegistrarService``) is passed in;
this module does not import it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Factory, Protocol

from rserpool.gate import DOOR_ASAP
from rserpool.service.channel import Channel

__all__ = ["RegistrarFactory", "Refused", "drop"]


def drop(transport: Any) -> None:
    """Reset a TCP connection (close any other transport)."""
    if ITCPTransport.providedBy(transport):
        transport.abortConnection()
    else:
        transport.loseConnection()


class Refused(Protocol):
    """Stands in for a refused connection: drops it at once (returning None
    from buildProtocol would break the TLS wrapper around the factory)."""

    def connectionMade(self) -> None:  # noqa: N802 (Twisted)
        drop(self.transport)


class RegistrarFactory(Factory):
    """Builds the registrar service's ASAP channels (``tls``: under a TLS wrapper)."""

    def __init__(self, service: Any, tls: bool) -> None:
        self.service = service
        self.tls = tls

    def buildProtocol(self, addr: Any) -> Protocol:  # noqa: N802 (Twisted)
        service = self.service
        host = getattr(addr, "host", "")
        now = service.clock.seconds()
        service.make_room(host, now, addr)
        channel = Channel(service, service.clock, service.channel_settings, tls=self.tls)
        channel.peer = addr  # what the transport's getPeer() would give
        admission = service.gate.open_channel(DOOR_ASAP, host, self.tls, now, channel=channel,
                                              port=getattr(addr, "port", None))
        if admission is None:
            return Refused()
        service.channels[channel] = admission
        return channel
