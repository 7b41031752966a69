"""An in-memory TCP network on a ``task.Clock``, for deterministic tests of
code that listens and connects through a reactor (endpoints, TLS included).

``MemoryNetwork`` is a ``MemoryReactorClock`` whose ``listenTCP`` and
``connectTCP`` really connect: a connection to a listening port builds both
protocols and links them with in-memory transports; a connection to a port
nobody listens on is refused.  Nothing moves by itself: ``run()`` delivers
the buffered bytes, the closes and the calls due now until nothing is left
to do, and ``pass_time(seconds)`` moves the clock in small steps with a
``run()`` after each.  Real TLS (pyOpenSSL memory BIOs) runs over it
unchanged, with no socket and no wall clock.

A client's ``bindAddress`` host is its source address (default
127.0.0.1), so that tests can play clients from several addresses.

``Link.hang_server()`` makes the accepting side stop reading (a process
that hangs with its connection open); ``Link.break_()`` drops a connection
as a reset would.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, error
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IConnector, IListeningPort, ITCPTransport
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["Link", "MemoryNetwork"]


@implementer(ITCPTransport)
class _End:
    """One end of a link: the transport of one protocol."""

    def __init__(self, link: Link, protocol: Any, host: IPv4Address, peer: IPv4Address) -> None:
        self.link = link
        self.protocol = protocol
        self.host = host
        self.peer = peer
        self.outgoing: list[bytes] = []
        self.closing: Failure | None = None  # set by loseConnection / abortConnection
        self.paused = False  # does not read (the bytes wait in the peer's buffer)
        self.producer: Any = None
        self.disconnected = False

    # ITransport
    def write(self, data: bytes) -> None:
        if self.closing is None and not self.disconnected:
            self.outgoing.append(bytes(data))

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if self.closing is None:
            self.closing = Failure(error.ConnectionDone("connection closed"))

    def abortConnection(self) -> None:
        self.outgoing.clear()
        self.closing = Failure(error.ConnectionLost("connection aborted"))

    def getPeer(self) -> IPv4Address:
        return self.peer

    def getHost(self) -> IPv4Address:
        return self.host

    # ITCPTransport extras used by the code under test
    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def getTcpNoDelay(self) -> bool:
        return True

    def setTcpKeepAlive(self, enabled: bool) -> None:
        pass

    def getTcpKeepAlive(self) -> bool:
        return False

    def loseWriteConnection(self) -> None:
        self.loseConnection()

    # IConsumer / IPushProducer
    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.loseConnection()


class Link:
    """One connection between a client end and a server end."""

    def __init__(self, network: MemoryNetwork, client: Any, server: Any,
                 client_address: IPv4Address, server_address: IPv4Address) -> None:
        self.network = network
        self.client = _End(self, client, client_address, server_address)
        self.server = _End(self, server, server_address, client_address)
        self.closed = False

    def hang_server(self) -> None:
        """The accepting side stops reading: what the client sends waits."""
        self.server.paused = True

    def break_(self) -> None:
        """Both sides see the connection lost at once (a reset)."""
        self.client.abortConnection()

    def _move(self) -> bool:
        moved = False
        for src, dst in ((self.client, self.server), (self.server, self.client)):
            if src.outgoing and not dst.paused and not dst.disconnected:
                data = b"".join(src.outgoing)
                src.outgoing.clear()
                dst.protocol.dataReceived(data)
                moved = True
        return moved

    def _close(self) -> bool:
        if self.closed:
            return False
        for end, other in ((self.client, self.server), (self.server, self.client)):
            if end.closing is None:
                continue
            aborted = end.closing.check(error.ConnectionLost) is not None
            if not aborted and (end.outgoing and not other.paused):
                return False  # a graceful close delivers what was written first
            self.closed = True
            end.outgoing.clear()
            other.outgoing.clear()
            reason = end.closing
            for side in (end, other):
                side.disconnected = True
            end.protocol.connectionLost(reason)
            other.protocol.connectionLost(Failure(error.ConnectionLost("closed by the peer"))
                                          if aborted else reason)
            self.network.links.remove(self)
            return True
        return False


@implementer(IListeningPort)
class _Port:
    def __init__(self, network: MemoryNetwork, factory: Any, address: IPv4Address) -> None:
        self.network = network
        self.factory = factory
        self.address = address

    def startListening(self) -> None:
        pass

    def stopListening(self) -> defer.Deferred[None]:
        key = (self.address.host, self.address.port)
        if self.network.listening.get(key) is self:
            del self.network.listening[key]
            self.factory.doStop()
        return defer.succeed(None)

    loseConnection = stopListening

    def getHost(self) -> IPv4Address:
        return self.address


@implementer(IConnector)
class _Connector:
    def __init__(self, address: IPv4Address) -> None:
        self.address = address

    def stopConnecting(self) -> None:
        pass

    def disconnect(self) -> None:
        pass

    def connect(self) -> None:
        pass

    def getDestination(self) -> IPv4Address:
        return self.address


class MemoryNetwork(MemoryReactorClock):
    """A reactor whose TCP connections stay in memory, on a test clock."""

    def __init__(self) -> None:
        super().__init__()
        self.listening: dict[tuple[str, int], _Port] = {}
        self.links: list[Link] = []
        self.refused: list[tuple[str, int]] = []
        self._next_port = 20000

    def _port_number(self) -> int:
        self._next_port += 1
        return self._next_port

    def listenTCP(self, port: int, factory: Any, backlog: int = 50,
                  interface: str = "") -> _Port:
        address = IPv4Address("TCP", interface or "127.0.0.1", port or self._port_number())
        key = (address.host, address.port)
        if key in self.listening:
            raise error.CannotListenError(address.host, address.port, "address in use")
        listener = self.listening[key] = _Port(self, factory, address)
        factory.doStart()
        return listener

    def connectTCP(self, host: str, port: int, factory: Any, timeout: float = 30,
                   bindAddress: Any = None) -> _Connector:
        connector = _Connector(IPv4Address("TCP", host, port))
        factory.doStart()
        factory.startedConnecting(connector)
        source = bindAddress[0] if bindAddress and bindAddress[0] else "127.0.0.1"
        self.callLater(0, self._complete, host, port, factory, connector, source)
        return connector

    def _complete(self, host: str, port: int, factory: Any, connector: _Connector,
                  source: str = "127.0.0.1") -> None:
        listener = self.listening.get((host, port))
        server_address = IPv4Address("TCP", host, port)
        client_address = IPv4Address("TCP", source, self._port_number())
        server = listener.factory.buildProtocol(client_address) if listener else None
        if server is None:
            self.refused.append((host, port))
            factory.clientConnectionFailed(connector, Failure(error.ConnectionRefusedError()))
            factory.doStop()
            return
        client = factory.buildProtocol(server_address)
        link = Link(self, client, server, client_address, server_address)
        self.links.append(link)
        server.makeConnection(link.server)
        client.makeConnection(link.client)

    def run(self, limit: int = 10_000) -> None:
        """Deliver bytes, closes and the calls due now until nothing moves."""
        for _ in range(limit):
            self.advance(0)
            moved = False
            for link in list(self.links):
                moved = link._move() or moved
            for link in list(self.links):
                moved = link._close() or moved
            if not moved and not any(c.getTime() <= self.seconds() for c in self.getDelayedCalls()):
                return
        raise AssertionError("the network never became quiet")

    def pass_time(self, seconds: float, step: float = 0.05) -> None:
        """Move the clock by ``seconds`` in steps of ``step``, running after each."""
        self.run()
        end = self.seconds() + seconds
        while self.seconds() + step < end:
            self.advance(step)
            self.run()
        self.advance(max(0.0, end - self.seconds()))
        self.run()

    def links_to(self, port: int) -> list[Link]:
        return [link for link in self.links if link.server.host.port == port]
