"""Attacks on the registrar's connection slots, over real loopback TLS
(docs/threats.md, RFC 5355 2.1; issue 12).

- A client that has started a chunk and sends one more byte now and then
  keeps a slot forever if only "nothing heard for dead_after" is checked.
- Idle anonymous connections fill the per-address limit (everyone behind
  that address is locked out) or the global limit (everyone is).
- A client that never finishes its TLS handshake, or never sends a message.

Timeouts are shortened (a second or less) so the module runs in seconds;
the shipped defaults are ten times longer and work the same way.
"""

from __future__ import annotations

import random
import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, endpoints, reactor, task
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from rserpool.asap.registrar import RegistrarSettings
from rserpool.gate import GatePolicy
from rserpool.security import tls
from rserpool.service.channel import Channel, ChannelSettings
from rserpool.service.registrar import RegistrarService
from rserpool.wire import AsapHandleResolution, AsapRegistration
from rserpool.wire.codes import PPID_ASAP
from rserpool.wire.tcpmap import TcpMapConnection
from tests.asaphelpers import AllowAll, RawClient, make_pe
from tests.tlshelpers import make_test_pki

pytestmark = pytest.mark.integration

H = b"echo"
WAIT = 10.0


def within(d: defer.Deferred, seconds: float = WAIT) -> defer.Deferred:
    return d.addTimeout(seconds, reactor)


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


class _Raw(Protocol):
    """A TLS client that writes only what the test tells it to."""

    def __init__(self) -> None:
        self.closed: defer.Deferred = defer.Deferred()

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802 (Twisted)
        if not self.closed.called:
            self.closed.callback(None)


class ConnectionSlotAttacks(unittest.TestCase):
    timeout = 60

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.pki = make_test_pki(Path(cls._tmp.name))

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def setUp(self):
        self.clients: list[Any] = []

    @defer.inlineCallbacks
    def tearDown(self):
        for client in self.clients:
            transport = getattr(getattr(client, "channel", None), "transport", None) or getattr(
                client, "transport", None)
            if transport is not None and not client.closed.called:
                transport.abortConnection()
            yield within(client.closed)

    @defer.inlineCallbacks
    def registrar(self, channel_settings: ChannelSettings | None = None, **limits: Any):
        options = tls.server_options(self.pki.server.cert, self.pki.server.key, [self.pki.ca.cert],
                                     require_client_cert=False)
        service = RegistrarService(
            RegistrarSettings(server_id=random.randrange(1, 2**32)), reactor=reactor,
            listen=["tcp:0:interface=127.0.0.1"], tls_options=options, authorizer=AllowAll(),
            gate_policy=GatePolicy(**limits),
            channel_settings=channel_settings or ChannelSettings())
        yield service.startService()
        self.addCleanup(service.stopService)
        return service

    def endpoint(self, registrar: RegistrarService, cert: Any = None, bind: str | None = None):
        creator = tls.client_options("localhost", [self.pki.ca.cert],
                                     client_cert=cert.pair if cert is not None else None)
        tcp = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", registrar.listening_addresses[0].port,
                                           timeout=5, bindAddress=(bind, 0) if bind else None)
        return endpoints.wrapClientTLS(creator, tcp)

    @defer.inlineCallbacks
    def client(self, registrar: RegistrarService, cert: Any = None, bind: str | None = None):
        """A RawClient; fires once it is ready or closed."""
        client = RawClient()
        self.clients.append(client)
        factory = Factory.forProtocol(
            lambda: Channel(client, reactor, ChannelSettings(), tls=True, initiator=True))
        try:
            yield within(self.endpoint(registrar, cert, bind).connect(factory))
        except Exception:
            client.closed.callback(None)
            raise
        yield within(defer.DeferredList([client.ready, client.closed], fireOnOneCallback=True,
                                        consumeErrors=True))
        return client

    @defer.inlineCallbacks
    def raw(self, registrar: RegistrarService, bind: str | None = None):
        raw = _Raw()
        self.clients.append(raw)
        yield within(endpoints.connectProtocol(self.endpoint(registrar, bind=bind), raw))
        return raw

    # -- a chunk trickled byte by byte -------------------------------------------------------

    @defer.inlineCallbacks
    def test_a_chunk_trickled_byte_by_byte_loses_its_slot(self):
        settings = ChannelSettings(heartbeat_interval=1.0, dead_after=3.0, chunk_timeout=1.0)
        registrar = yield self.registrar(settings, max_connections_per_address=2)
        peer = TcpMapConnection()
        data = peer.initiate() + peer.send_message(PPID_ASAP, AsapHandleResolution(H).encode())
        slow = yield self.raw(registrar)
        started = reactor.seconds()
        for n in range(len(data)):  # one byte every 0.4 s: "something heard" all the time
            if slow.closed.called:
                break
            slow.transport.write(data[n:n + 1])
            yield sleep(0.4)
        yield within(slow.closed)
        self.assertLess(reactor.seconds() - started, 3.0)  # chunk deadline, not dead_after
        # The slot is free again, and a normal client is served.
        yield self.client(registrar)
        fresh = yield self.client(registrar)
        reply = yield within(fresh.request(AsapHandleResolution(H)))
        self.assertIsNotNone(reply)

    # -- a handshake or a first message that never comes --------------------------------------

    @defer.inlineCallbacks
    def test_silent_connections_are_dropped(self):
        settings = ChannelSettings(handshake_timeout=0.5, first_message_timeout=0.5)
        registrar = yield self.registrar(settings)
        port = registrar.listening_addresses[0].port
        # No TLS handshake at all (a plain TCP connection that says nothing).
        with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
            plain.settimeout(5)
            started = reactor.seconds()
            yield sleep(0.8)
            try:
                self.assertEqual(plain.recv(1), b"")  # closed by the registrar ...
            except ConnectionResetError:
                pass  # ... or reset (an aborted connection)
        # A finished handshake, then nothing.
        quiet = yield self.raw(registrar)
        yield within(quiet.closed, 3.0)
        self.assertLess(reactor.seconds() - started, 3.0)
        self.assertEqual(registrar.gate.connections, {})

    # -- idle anonymous connections hold every slot -------------------------------------------

    @defer.inlineCallbacks
    def test_idle_anonymous_connections_do_not_lock_out_their_address(self):
        registrar = yield self.registrar(max_connections_per_address=4, evict_idle_after=0.5)
        squatters = []
        for _ in range(4):
            client = yield self.client(registrar)
            yield within(client.request(AsapHandleResolution(H)))  # one message, then idle
            squatters.append(client)
        self.assertEqual(registrar.gate.connections, {"127.0.0.1": 4})
        yield sleep(0.7)
        # A PE behind the same address gets a slot: the longest idle squatter goes.
        pe = yield self.client(registrar, self.pki.pe1)
        reply = yield within(pe.request(AsapRegistration(H, make_pe(0x51))))
        self.assertFalse(reply.reject, reply)
        yield within(defer.DeferredList([c.closed for c in squatters], fireOnOneCallback=True))
        self.assertEqual(sum(c.closed.called for c in squatters), 1)
        self.assertEqual(registrar.eviction.evictions, 1)
        # A channel with an identity (and a PE) is never evicted.
        for _ in range(3):
            yield sleep(0.6)
            extra = yield self.client(registrar)
            yield within(extra.request(AsapHandleResolution(H)))
        self.assertFalse(pe.closed.called)
        self.assertIsNotNone(registrar.handlespace.get(H, 0x51))

    @defer.inlineCallbacks
    def test_idle_anonymous_connections_do_not_lock_out_everyone(self):
        registrar = yield self.registrar(max_connections=4, evict_idle_after=0.5)
        for n in range(4):
            client = yield self.client(registrar, bind=f"127.0.0.{n + 2}")
            yield within(client.request(AsapHandleResolution(H)))
        # While they are busy (not idle long enough), a newcomer is refused ...
        early = yield self.client(registrar, self.pki.pe1)
        yield within(early.closed)
        self.assertFalse(early.ready.called and early.messages)
        yield sleep(0.7)
        # ... once idle, a PE and a PU (from addresses of their own) get in.
        pe = yield self.client(registrar, self.pki.pe1)
        reply = yield within(pe.request(AsapRegistration(H, make_pe(0x52))))
        self.assertFalse(reply.reject, reply)
        pu = yield self.client(registrar, bind="127.0.0.9")
        answer = yield within(pu.request(AsapHandleResolution(H)))
        self.assertEqual([p.pe_id for p in answer.pool_elements], [0x52])
        self.assertEqual(registrar.eviction.evictions, 2)
        self.assertEqual(len(registrar.gate.channels), 4)
