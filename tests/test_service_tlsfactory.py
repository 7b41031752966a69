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
        self.assertEqual(set(providedBy(fast)), set(providedBy(stock)))
        self.assertTrue(interfaces.ITCPTransport.providedBy(fast))
        self.assertTrue(interfaces.ISSLTransport.providedBy(fast))
        self.assertIsNotNone(fast.getPeerCertificate.__func__)
