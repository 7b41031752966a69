"""The demo echo PE (rserpool.demo.echo_pe): its protocol, and
EchoPoolElement / echo_pool_element registering with a real registrar and
echoing over loopback TLS."""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from rserpool.demo.echo_pe import EchoPoolElement, EchoProtocol, echo_pool_element
from rserpool.security import tls
from tests.asaphelpers import LoopbackRegistrarsMixin, registrar_port, within


def test_echo_protocol_pauses_reading_when_the_peer_does_not_read():
    transport = StringTransport()
    echo = EchoProtocol()
    echo.makeConnection(transport)
    assert transport.producer is transport and transport.streaming
    echo.dataReceived(b"ping")
    assert transport.value() == b"ping"


@pytest.mark.integration
class EchoPoolElementOverTLS(LoopbackRegistrarsMixin, unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_echo_pe_registers_and_echoes(self):
        registrar = yield self.registrar()
        echo = echo_pool_element(
            self.reactor, registrars=[f"127.0.0.1:{registrar_port(registrar)} localhost"],
            ca=self.pki.ca.cert, cert=self.pki.pe1.cert, key=self.pki.pe1.key,
            server_cert=self.pki.server.cert, server_key=self.pki.server.key,
            hunt_options=dict(t5_initial=1.0, attempt_timeout=2.0))
        self.services.append(echo)
        yield echo.start()
        yield within(echo.pe.registered(), 10, self.reactor)
        (entry,) = registrar.handlespace.pool_members(b"echo")
        self.assertEqual(entry.identity, "pe1")
        port = entry.payload.user_transport.port
        self.assertEqual(port, echo.address[1])
        reply = yield within(echo_once(self.reactor, port, self.pki, b"hello pool\n"), 10, self.reactor)
        self.assertEqual(reply, b"hello pool\n")
        yield within(echo.stopService(), 10, self.reactor)
        self.assertEqual(len(registrar.handlespace), 0)
        self.assertIsNone(echo.listening_port)

    @defer.inlineCallbacks
    def test_echo_pe_protocol_is_pluggable(self):
        registrar = yield self.registrar()
        server_options = tls.server_options(self.pki.server.cert, self.pki.server.key,
                                            [self.pki.ca.cert], require_client_cert=False)
        echo = EchoPoolElement(self.reactor, server_tls_options=server_options, pool_handle=b"upper",
                               protocol_factory=Factory.forProtocol(_Upper),
                               **self.pe_options(registrar))
        self.services.append(echo)
        yield echo.start()
        yield within(echo.pe.registered(), 10, self.reactor)
        self.assertEqual(len(registrar.handlespace.pool_members(b"upper")), 1)
        reply = yield within(echo_once(self.reactor, echo.address[1], self.pki, b"abc"), 10, self.reactor)
        self.assertEqual(reply, b"ABC")


class _Upper(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data.upper())


class _EchoClient(Protocol):
    def __init__(self, payload: bytes, done: defer.Deferred) -> None:
        self.payload = payload
        self.done = done
        self.buffer = b""

    def connectionMade(self) -> None:
        self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= len(self.payload):
            self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        if not self.done.called:
            self.done.callback(self.buffer)


def echo_once(reactor, port: int, pki, payload: bytes) -> defer.Deferred:
    from twisted.internet import endpoints
    done: defer.Deferred = defer.Deferred()
    endpoint = endpoints.wrapClientTLS(tls.client_options("127.0.0.1", [pki.ca.cert]),
                                       endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port))
    connecting = endpoints.connectProtocol(endpoint, _EchoClient(payload, done))
    connecting.addErrback(lambda f: done.errback(f) if not done.called else None)
    return done
