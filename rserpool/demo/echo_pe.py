"""The demo echo pool element: a TLS echo server on 127.0.0.1 whose address
is registered in pool ``echo`` through the PE library.

The listener's protocol is pluggable (``protocol_factory``): by default it
echoes bytes back; the PU-PE session layer can plug its own factory in.

    pe = EchoPoolElement(reactor, server_tls_options=tls.server_options(cert, key, [ca]),
                         candidates=RegistrarCandidates(static=["127.0.0.1:3864 localhost"]),
                         tls_options_factory=lambda name: tls.client_options(
                             name, [ca], client_cert=(cert, key)))
    yield pe.start()        # listening and registering
    yield pe.pe.registered()
    yield pe.stopService()  # deregisters, then stops listening
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Iterable

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from rserpool.service.pe import PoolElementService
from rserpool.service.tlsfactory import TLSServerFactory
from rserpool.wire import LeastUsedPolicy, TcpTransport

__all__ = ["EchoProtocol", "EchoPoolElement", "echo_pool_element"]

_log = Logger()

#: Echo connections open at once; more are refused.
_MAX_CONNECTIONS = 1024


class EchoProtocol(Protocol):
    """Sends every byte back.  Reading pauses while the peer does not read
    what was echoed (the TCP connection is registered as the producer of
    the echo, so a full send buffer stops the reads)."""

    def connectionMade(self) -> None:
        tcp = getattr(self.transport, "transport", None)  # under TLS: the TCP connection
        source = tcp if hasattr(tcp, "pauseProducing") else self.transport
        if hasattr(source, "pauseProducing") and getattr(self.transport, "producer", None) is None:
            self.transport.registerProducer(source, True)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class _LimitedFactory(Factory):
    def __init__(self, inner: Factory, limit: int) -> None:
        self.inner = inner
        self.limit = limit
        self.open = 0

    def buildProtocol(self, addr: Any) -> Protocol | None:
        if self.open >= self.limit:
            _log.warn("refusing echo connection from {addr}: {n} open", addr=addr, n=self.open)
            return None
        protocol = self.inner.buildProtocol(addr)
        if protocol is None:
            return None
        self.open += 1
        lost = protocol.connectionLost

        def connection_lost(reason: Any = None) -> None:
            self.open -= 1
            lost(reason)

        protocol.connectionLost = connection_lost  # type: ignore[method-assign]
        return protocol


class EchoPoolElement(MultiService):
    """A TLS listener plus the ``PoolElementService`` that registers it.

    ``pe_options`` go to ``PoolElementService`` (``hunt`` or ``candidates``
    and ``tls_options_factory``, ``settings``, ``channel_settings``...).
    ``server_tls_options``: the listener's TLS (``rserpool.security.tls.server_options``);
    ``None`` only with ``insecure_plaintext=True`` (loudly logged).
    """

    def __init__(
        self,
        reactor: Any,
        *,
        server_tls_options: Any,
        pool_handle: bytes = b"echo",
        host: str = "127.0.0.1",
        port: int = 0,
        protocol_factory: Factory | None = None,
        policy: Any = None,
        registration_life: int = 300,
        transport_use: int = 0,
        max_connections: int = _MAX_CONNECTIONS,
        insecure_plaintext: bool = False,
        **pe_options: Any,
    ) -> None:
        super().__init__()
        if server_tls_options is None and not insecure_plaintext:
            raise ValueError("the echo listener needs TLS options (or insecure_plaintext=True)")
        self.reactor = reactor
        self.server_tls_options = server_tls_options
        self.pool_handle = pool_handle
        self.host = host
        self.port = port
        self.protocol_factory = protocol_factory or Factory.forProtocol(EchoProtocol)
        self.policy = policy if policy is not None else LeastUsedPolicy(0)
        self.registration_life = registration_life
        self.transport_use = transport_use
        self.max_connections = max_connections
        self.pe_options = pe_options
        self.listening_port: Any = None
        self.pe: PoolElementService | None = None
        self._starting: defer.Deferred[Any] | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        if self.listening_port is None:
            return None
        bound = self.listening_port.getHost()
        return (bound.host, bound.port)

    def startService(self) -> None:
        self._starting = self.start()

    def start(self) -> defer.Deferred["EchoPoolElement"]:
        """Listen, then start registering; fires once listening (not yet registered)."""
        MultiService.startService(self)
        factory: Factory = _LimitedFactory(self.protocol_factory, self.max_connections)
        if self.server_tls_options is not None:
            factory = TLSServerFactory(self.server_tls_options, factory, self.reactor)
        else:
            _log.critical("INSECURE: the echo PE listens WITHOUT TLS")
        ip = ipaddress.ip_address(self.host)
        endpoint_class = TCP6ServerEndpoint if ip.version == 6 else TCP4ServerEndpoint
        endpoint = endpoint_class(self.reactor, self.port, interface=self.host)
        d = endpoint.listen(factory)

        def listening(port: Any) -> "EchoPoolElement":
            self.listening_port = port
            bound = port.getHost()
            _log.info("echo PE listening on {host}:{port} ({tls})", host=bound.host, port=bound.port,
                      tls="TLS" if self.server_tls_options is not None else "PLAINTEXT")
            self.pe = PoolElementService(
                self.reactor, self.pool_handle,
                TcpTransport(bound.port, ip, self.transport_use), self.policy,
                registration_life=self.registration_life, **self.pe_options)
            self.pe.setServiceParent(self)  # starts it: hunt, then register
            return self

        d.addCallback(listening)
        return d

    def stopService(self) -> defer.Deferred[None]:
        """Deregister (bounded by T3), then stop listening."""
        d = defer.maybeDeferred(MultiService.stopService, self)

        def stop_listening(_: Any) -> Any:
            # The registering service belongs to this listener: a restart
            # listens anew and registers a new PE.
            if self.pe is not None:
                self.removeService(self.pe)
                self.pe = None
            port, self.listening_port = self.listening_port, None
            if port is not None:
                return port.stopListening()
            return None

        d.addBoth(stop_listening)
        d.addCallback(lambda _: None)
        return d


def echo_pool_element(
    reactor: Any,
    *,
    registrars: Iterable[str],
    ca: str | Path,
    cert: str | Path,
    key: str | Path,
    pool_handle: bytes = b"echo",
    host: str = "127.0.0.1",
    port: int = 0,
    server_cert: str | Path | None = None,
    server_key: str | Path | None = None,
    **options: Any,
) -> EchoPoolElement:
    """An ``EchoPoolElement`` from file paths: ``registrars`` are static hunt
    entries (``"host:port [tls-name]"``); ``cert``/``key`` are the PE's client
    certificate towards the registrar and, unless ``server_cert``/``server_key``
    are given, also the listener's certificate; ``ca`` is the trust root for
    both directions."""
    from rserpool.security import tls
    from rserpool.service.candidates import RegistrarCandidates

    server_options = tls.server_options(server_cert or cert, server_key or key, [ca],
                                        require_client_cert=False)

    def client_options(name: str) -> Any:
        return tls.client_options(name, [ca], client_cert=(cert, key))

    return EchoPoolElement(
        reactor, server_tls_options=server_options, pool_handle=pool_handle, host=host, port=port,
        candidates=RegistrarCandidates(static=list(registrars)), tls_options_factory=client_options,
        **options)
