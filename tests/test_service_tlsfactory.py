"""``TLSServerFactory``: the shortened makeConnection leaves a connection
exactly as Twisted's does (interfaces, handshake, application protocol), and
the read and flush loops that look before asking OpenSSL deliver and send
exactly what Twisted's do."""

from __future__ import annotations

import tempfile
import hashlib
from pathlib import Path

from hypothesis import given, settings, strategies as st
from twisted.internet import interfaces, reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectionDone
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import TestCase
from zope.interface import providedBy

from rserpool.security import _internals, tls
from rserpool.service import tlsfactory
from tests.tlshelpers import make_test_pki


@inlineCallbacks
def connect_pair(pki, factory_class, server_protocol, client_protocol):
    """Listen on loopback with ``factory_class`` (``TLSServerFactory`` or
    Twisted's ``TLSMemoryBIOFactory``) around ``server_protocol`` and connect
    a TLS client running ``client_protocol``.  Returns (server factory with
    ``made`` and ``gone``, client factory with ``answer``, client protocol,
    listening port)."""
    app = Factory.forProtocol(server_protocol)
    app.made = []
    app.gone = Deferred()
    server_options = tls.server_options(pki.server.cert, pki.server.key, [pki.ca.cert],
                                        require_client_cert=False)
    wrapper = (TLSMemoryBIOFactory(server_options, False, app, reactor) if factory_class is TLSMemoryBIOFactory
               else factory_class(server_options, app, reactor))
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(wrapper)
    client = Factory.forProtocol(client_protocol)
    client.answer = Deferred()
    endpoint = wrapClientTLS(tls.client_options("localhost", [pki.ca.cert]),
                             TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port))
    protocol = yield endpoint.connect(client)
    return app, client, protocol, port


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
        self.assertTrue(_internals.FAST_HANDSHAKE.available, _internals.FAST_HANDSHAKE.reason)
        self.assertIs(tlsfactory.TLSServerFactory.protocol, _internals.ServerTLSProtocol)

    def test_the_factory_needs_a_clock(self):
        from twisted.internet.task import Clock

        options = tls.server_options(self.pki.server.cert, self.pki.server.key, [self.pki.ca.cert],
                                     require_client_cert=False)
        with self.assertRaises(TypeError):
            tlsfactory.TLSServerFactory(options, Factory(), None)
        clock = Clock()
        self.assertIs(tlsfactory.TLSServerFactory(options, Factory(), clock)._clock, clock)

    @inlineCallbacks
    def _serve(self, factory_class):
        app, client, _, port = yield connect_pair(self.pki, factory_class, _Answer, _Ask)
        self.addCleanup(port.stopListening)
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
        self.assertIsInstance(fast, _internals.ServerTLSProtocol)
        self.assertEqual(set(providedBy(fast)), set(providedBy(stock)))
        self.assertTrue(interfaces.ITCPTransport.providedBy(fast))
        self.assertTrue(interfaces.ISSLTransport.providedBy(fast))
        self.assertIsNotNone(fast.getPeerCertificate.__func__)


class _Collect(Protocol):
    """Receives everything up to b"END", then answers with the SHA-256 of it,
    the number of reads it arrived in and 100 KiB (more than one flush of
    the outgoing BIO can carry), and closes."""

    def connectionMade(self):
        self.received = bytearray()
        self.reads = 0
        self.factory.made.append(self)

    def dataReceived(self, data):
        self.reads += 1
        self.received += data
        if self.received.endswith(b"END"):
            digest = hashlib.sha256(bytes(self.received)).hexdigest().encode()
            self.transport.write(digest + b"|" + b"x" * 100_000 + b"|DONE")
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.factory.gone.callback(reason.value)


class _Send(Protocol):
    def connectionMade(self):
        self.answer = bytearray()
        # Many small writes (several TLS records in one TCP read), a large one
        # (more than the 32 KiB one read returns), then the end mark.
        for index in range(200):
            self.transport.write(b"%d;" % index)
        self.transport.write(bytes(range(256)) * 800)
        self.transport.write(b"END")

    def dataReceived(self, data):
        self.answer += data

    def connectionLost(self, reason):
        self.factory.answer.callback(bytes(self.answer))


class FastTLSIOTests(TestCase):
    def setUp(self):
        self.pki = make_test_pki(Path(tempfile.mkdtemp(prefix="rserpool-tlsio-")))

    def test_the_shortcut_is_in_use_on_this_twisted_and_pyopenssl(self):
        self.assertTrue(_internals.FAST_TLS_IO.available, _internals.FAST_TLS_IO.reason)
        self.assertTrue(_internals.ServerTLSProtocol.fast_io)

    @inlineCallbacks
    def _exchange(self, factory_class):
        app, client, _, port = yield connect_pair(self.pki, factory_class, _Collect, _Send)
        self.addCleanup(port.stopListening)
        answer = yield client.answer
        reason = yield app.gone
        (server,) = app.made
        return answer, bytes(server.received), server.transport, reason

    @inlineCallbacks
    def test_delivers_and_sends_what_twisted_does(self):
        answer, received, fast, _ = yield self._exchange(tlsfactory.TLSServerFactory)
        stock_answer, stock_received, _, _ = yield self._exchange(TLSMemoryBIOFactory)
        self.assertIsInstance(fast, _internals.ServerTLSProtocol)
        self.assertEqual(received, stock_received)
        self.assertTrue(received.startswith(b"0;1;2;") and received.endswith(b"END"))
        self.assertEqual(len(received), len(b"".join(b"%d;" % i for i in range(200))) + 256 * 800 + 3)
        self.assertEqual(answer, stock_answer)
        digest, body, done = answer.split(b"|")
        self.assertEqual(digest, hashlib.sha256(received).hexdigest().encode())
        self.assertEqual((len(body), done), (100_000, b"DONE"))
        # The connection's OpenSSL objects are let go with it.
        self.assertIsNone(fast._ssl_ptr)
        self.assertIsNone(fast._from_bio)

    @inlineCallbacks
    def test_a_clean_close_from_the_client_is_seen_as_twisted_sees_it(self):
        _, _, _, reason = yield self._serve_and_close(tlsfactory.TLSServerFactory)
        _, _, _, stock_reason = yield self._serve_and_close(TLSMemoryBIOFactory)
        self.assertEqual(type(reason), type(stock_reason))
        self.assertIsInstance(reason, ConnectionDone)

    @inlineCallbacks
    def _serve_and_close(self, factory_class):
        app, _, protocol, port = yield connect_pair(self.pki, factory_class, _Collect, _Ask)
        self.addCleanup(port.stopListening)
        # _Ask writes "hello" and waits; close it with a TLS close_notify.
        protocol.transport.loseConnection()
        reason = yield app.gone
        (server,) = app.made
        return None, bytes(server.received), server.transport, reason


class _Record(Protocol):
    def connectionMade(self):
        self.received = bytearray()

    def dataReceived(self, data):
        self.received += data


def _in_memory_server(pki, factory_class):
    """A server protocol of ``factory_class`` on a StringTransport, and a
    pyOpenSSL client connection that has completed its handshake with it."""
    from OpenSSL import SSL
    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    app = Factory.forProtocol(_Record)
    options = tls.server_options(pki.server.cert, pki.server.key, [pki.ca.cert], require_client_cert=False)
    wrapper = (TLSMemoryBIOFactory(options, False, app, Clock()) if factory_class is TLSMemoryBIOFactory
               else factory_class(options, app, Clock()))
    address = IPv4Address("TCP", "127.0.0.1", 40000)
    server = wrapper.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    server.makeConnection(transport)
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_verify(SSL.VERIFY_NONE)
    client = SSL.Connection(context, None)
    client.set_connect_state()
    for _ in range(10):
        try:
            client.do_handshake()
            done = True
        except SSL.WantReadError:
            done = False
        try:
            server.dataReceived(client.bio_read(65536))
        except SSL.WantReadError:
            pass
        answer = transport.value()
        transport.clear()
        if answer:
            client.bio_write(answer)
        if done and server._handshakeDone:
            return server, client
    raise AssertionError("the in-memory handshake did not finish")


_PIECES = st.lists(st.binary(min_size=1, max_size=20_000), min_size=1, max_size=6)


class FastTLSIOSplitTests(TestCase):
    """Whatever the TCP reads look like (records split anywhere, several in
    one read), the fast loops deliver the same bytes as Twisted's."""

    def setUp(self):
        self.pki = make_test_pki(Path(tempfile.mkdtemp(prefix="rserpool-tlssplit-")))

    def test_any_split_of_the_stream_delivers_every_byte(self):
        pki = self.pki

        @settings(max_examples=40, deadline=None)
        @given(_PIECES, st.lists(st.integers(1, 40_000), max_size=12))
        def check(pieces, cuts):
            results = []
            for factory_class in (tlsfactory.TLSServerFactory, TLSMemoryBIOFactory):
                server, client = _in_memory_server(pki, factory_class)
                stream = bytearray()
                for piece in pieces:
                    client.send(piece)
                    stream += client.bio_read(1 << 20)
                points = sorted({cut % (len(stream) + 1) for cut in cuts} | {0, len(stream)})
                for start, end in zip(points, points[1:]):
                    server.dataReceived(bytes(stream[start:end]))
                results.append(bytes(server.wrappedProtocol.received))
            fast, stock = results
            self.assertEqual(fast, b"".join(pieces))
            self.assertEqual(fast, stock)

        check()
