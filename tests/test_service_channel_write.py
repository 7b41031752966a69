"""The channel's direct write under Twisted's TLS transport: one batched
write per read is encrypted at once (no ``callLater(0)`` round), and bytes
written earlier through the transport's aggregating ``write`` still come
first.  In memory: a real TLS handshake between a pyOpenSSL client and the
server side of ``TLSMemoryBIOFactory`` on a ``task.Clock``."""

from __future__ import annotations

import tempfile
from pathlib import Path

from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory

from rserpool.security import tls
from rserpool.service.channel import Channel, ChannelSettings, _direct_writer
from rserpool.wire.codes import PPID_ASAP
from rserpool.wire.tcpmap import MessageReceived, TcpMapConnection
from tests.tlshelpers import make_test_pki

_PKI = None


def _pki():
    global _PKI
    if _PKI is None:
        _PKI = make_test_pki(Path(tempfile.mkdtemp(prefix="rserpool-chanwrite-")))
    return _PKI


class _Echo:
    """A handler answering every application payload with ``b"re:" + payload``."""

    def __init__(self):
        self.channel = None

    def channel_ready(self, channel):
        self.channel = channel

    def data_received(self, channel, ppid, payload, now):
        channel.send_data(ppid, b"re:" + payload)

    def message_received(self, channel, message, now):
        raise AssertionError("no ASAP expected")

    def wire_error(self, channel, ppid, error, now):
        raise AssertionError("no wire error expected")

    def channel_closed(self, channel, reason):
        pass


def _connected():
    pki = _pki()
    clock = Clock()
    handler = _Echo()
    options = tls.server_options(pki.server.cert, pki.server.key, [pki.ca.cert], require_client_cert=False)
    settings = ChannelSettings()
    factory = TLSMemoryBIOFactory(options, False,
                                  Factory.forProtocol(lambda: Channel(handler, clock, settings)), clock=clock)
    server = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
    wire = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5001))
    server.makeConnection(wire)
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    client = SSL.Connection(context, None)
    client.set_connect_state()
    for _ in range(10):
        try:
            client.do_handshake()
        except SSL.WantReadError:
            pass
        try:
            server.dataReceived(client.bio_read(65536))
        except SSL.WantReadError:
            pass
        clock.advance(0)
        if wire.value():
            client.bio_write(wire.value())
            wire.clear()
        if handler.channel is not None:
            break
    assert handler.channel is not None, "handshake did not complete"
    return clock, server, wire, client, handler.channel


def _client_reads(client, wire):
    if wire.value():
        client.bio_write(wire.value())
        wire.clear()
    data = b""
    while True:
        try:
            data += client.recv(65536)
        except SSL.WantReadError:
            return data


def _payloads(receiver, data):
    return [e.payload for e in receiver.receive_data(data, 0.0) if type(e) is MessageReceived]


def test_the_answer_is_encrypted_within_the_read():
    clock, server, wire, client, channel = _connected()
    _client_reads(client, wire)  # session tickets and the like
    sender = receiver = TcpMapConnection()
    client.send(sender.initiate() + sender.send_message(99, b"ping"))
    server.dataReceived(client.bio_read(65536))
    # No clock.advance(0): the answer is on the wire already.
    assert _payloads(receiver, _client_reads(client, wire)) == [b"re:ping"]
    assert not clock.getDelayedCalls() or all(c.getTime() > 0 for c in clock.getDelayedCalls())


def test_earlier_aggregated_writes_keep_their_place():
    clock, server, wire, client, channel = _connected()
    _client_reads(client, wire)
    sender = receiver = TcpMapConnection()
    client.send(sender.initiate())
    server.dataReceived(client.bio_read(65536))
    _client_reads(client, wire)
    # Written outside dataReceived: held by Twisted's aggregator until the
    # next reactor iteration ...
    channel.send_data(PPID_ASAP + 100, b"first")
    assert _client_reads(client, wire) == b""
    # ... and a read's answer written directly comes after it, not before.
    client.send(sender.send_message(99, b"second"))
    server.dataReceived(client.bio_read(65536))
    assert _payloads(receiver, _client_reads(client, wire)) == [b"first", b"re:second"]
    clock.advance(0)  # the aggregator's scheduled flush finds nothing left
    assert _client_reads(client, wire) == b""


def test_other_transports_use_their_own_write():
    transport = StringTransport()
    assert _direct_writer(transport) == transport.write
