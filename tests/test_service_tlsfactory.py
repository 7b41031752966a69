"""``TLSServerFactory``: the shortened makeConnection leaves a connection
exactly as Twisted's does (interfaces, handshake, application protocol)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from twisted.internet import interfaces, reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import TestCase
from zope.interface import providedBy

from rserpool.security import tls
from rserpool.service import tlsfactory
from tests.tlshelpers import make_test_pki


class _Answer(Protocol):
    def connectionMade(self):
        self.factory.made.append(self)

    def connectionLost(self, reason):
        self.factory.gone.callback(None)

    def dataReceived(self, data):
        self.transport.write(b"re:" + data)


class _Ask(Protocol):
    def connectionMade(self):
        self.transport.write(b"hello")

    def dataReceived(self, data):
        self.factory.answer.callback(data)
        self.transport.loseConnection()


class TLSServerFactoryTests(TestCase):
    def setUp(self):
        self.pki = make_test_pki(Path(tempfile.mkdtemp(prefix="rserpool-tlsfactory-")))

    def test_the_shortcut_is_in_use_on_this_twisted(self):
        # If Twisted's makeConnection changes, the stock one is used (and this
        # test says so, so that the shortcut is reviewed against the new code).
        self.assertTrue(tlsfactory.FAST_MAKE_CONNECTION)
        self.assertIs(tlsfactory.TLSServerFactory.protocol, tlsfactory._TLSServerProtocol)

    @inlineCallbacks
    def _serve(self, factory_class):
        app = Factory.forProtocol(_Answer)
        app.made = []
        app.gone = Deferred()
        server_options = tls.server_options(self.pki.server.cert, self.pki.server.key, [self.pki.ca.cert],
                                            require_client_cert=False)
        if factory_class is TLSMemoryBIOFactory:
            wrapper = TLSMemoryBIOFactory(server_options, False, app)
        else:
            wrapper = factory_class(server_options, app)
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(wrapper)
        self.addCleanup(port.stopListening)
        client = Factory.forProtocol(_Ask)
        client.answer = Deferred()
        endpoint = wrapClientTLS(tls.client_options("localhost", [self.pki.ca.cert]),
                                 TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port))
        yield endpoint.connect(client)
        answer = yield client.answer
        yield app.gone
        (protocol,) = app.made
        return answer, protocol.transport

    @inlineCallbacks
    def test_same_connection_as_twisted_makes(self):
        answer, fast = yield self._serve(tlsfactory.TLSServerFactory)
        stock_answer, stock = yield self._serve(TLSMemoryBIOFactory)
        self.assertEqual(answer, b"re:hello")
        self.assertEqual(stock_answer, b"re:hello")
        self.assertIsInstance(fast, tlsfactory._TLSServerProtocol)
        self.assertIsNotNone(fast._send_now)  # a real TCP connection: eager sends
        self.assertEqual(set(providedBy(fast)), set(providedBy(stock)))
        self.assertTrue(interfaces.ITCPTransport.providedBy(fast))
        self.assertTrue(interfaces.ISSLTransport.providedBy(fast))
        self.assertIsNotNone(fast.getPeerCertificate.__func__)


class _FakeSocket:
    def __init__(self, take=None, error=None):
        self.take = take
        self.error = error
        self.sent = []

    def send(self, data):
        if self.error is not None:
            raise self.error
        n = len(data) if self.take is None else min(self.take, len(data))
        self.sent.append(bytes(data[:n]))
        return n


class _FakeTCP:
    """The attributes of twisted.internet.tcp.Connection that send_eagerly reads."""

    def __init__(self, socket, **state):
        self.socket = socket
        self.connected = True
        self.disconnecting = False
        self._writeDisconnected = False
        self.dataBuffer = b""
        self.offset = 0
        self._tempDataLen = 0
        self.producer = None
        self.TLS = False
        self.__dict__.update(state)
        self.written = []

    def write(self, data):
        self.written.append(bytes(data))


class EagerSendTests(TestCase):
    def test_all_sent_at_once_when_nothing_is_buffered(self):
        transport = _FakeTCP(_FakeSocket())
        tlsfactory.send_eagerly(transport, b"record")
        self.assertEqual(transport.socket.sent, [b"record"])
        self.assertEqual(transport.written, [])

    def test_what_the_socket_does_not_take_is_buffered_in_order(self):
        transport = _FakeTCP(_FakeSocket(take=2))
        tlsfactory.send_eagerly(transport, b"record")
        self.assertEqual(transport.socket.sent, [b"re"])
        self.assertEqual(transport.written, [b"cord"])

    def test_a_socket_error_leaves_everything_to_twisted(self):
        for error in (BlockingIOError(), InterruptedError(), ConnectionResetError()):
            transport = _FakeTCP(_FakeSocket(error=error))
            tlsfactory.send_eagerly(transport, b"record")
            self.assertEqual(transport.written, [b"record"])

    def test_buffered_data_or_a_closing_transport_keeps_the_twisted_path(self):
        for state in ({"_tempDataLen": 3}, {"dataBuffer": b"abc", "offset": 1}, {"disconnecting": True},
                      {"connected": False}, {"_writeDisconnected": True}, {"producer": object()},
                      {"TLS": True}):
            transport = _FakeTCP(_FakeSocket(), **state)
            tlsfactory.send_eagerly(transport, b"record")
            self.assertEqual(transport.socket.sent, [], state)
            self.assertEqual(transport.written, [b"record"], state)
        # A buffer written out entirely (offset at its end) is nothing pending.
        transport = _FakeTCP(_FakeSocket(), dataBuffer=b"abc", offset=3)
        tlsfactory.send_eagerly(transport, b"record")
        self.assertEqual(transport.socket.sent, [b"record"])

    def test_only_twisted_tcp_connections_get_an_eager_sender(self):
        self.assertIsNone(tlsfactory.eager_sender(_FakeTCP(_FakeSocket())))
