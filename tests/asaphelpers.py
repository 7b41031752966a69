"""Test helpers: a raw ASAP client over a real (TLS) channel, and a registrar
started on a loopback port.  Used by the registrar, PE and PU tests."""

from __future__ import annotations

import random
from typing import Any

from twisted.internet import defer, endpoints
from twisted.internet.protocol import Factory

from zope.interface import implementer

from rserpool.asap.registrar import RegistrarSettings
from rserpool.interfaces import IChannelHandler, IPoolAuthorizer
from rserpool.testing import AllowAll
from rserpool.security import tls
from rserpool.service.channel import Channel, ChannelSettings
from rserpool.service.registrar import RegistrarService
from rserpool.wire import PoolElement, RoundRobinPolicy, TcpTransport
from ipaddress import IPv4Address


@implementer(IPoolAuthorizer)
class RulesFromDict:
    def __init__(self, allowed: set[tuple[str, str, bytes]]) -> None:
        self.allowed = allowed

    def authorize(self, identity, groups, action, pool_handle):
        return (identity, action, pool_handle) in self.allowed


@implementer(IChannelHandler)
class RawClient:
    """A channel handler that queues every message; ``next()`` waits for one."""

    def __init__(self) -> None:
        self.channel: Channel | None = None
        self.ready = defer.Deferred()
        self.closed = defer.Deferred()
        self.messages: list[Any] = []
        self._waiting: list[defer.Deferred] = []
        self.data: list[tuple[int, bytes]] = []
        self.auto_ack_keepalives = False

    def channel_ready(self, channel: Channel) -> None:
        self.channel = channel
        self.ready.callback(self)

    def message_received(self, channel: Channel, message: Any, now: float) -> None:
        from rserpool.wire import AsapEndpointKeepAlive, AsapEndpointKeepAliveAck
        if self.auto_ack_keepalives and type(message) is AsapEndpointKeepAlive and self.pe_ids:
            for handle, pe_id in self.pe_ids:
                if handle == message.pool_handle:
                    channel.send(AsapEndpointKeepAliveAck(handle, pe_id))
            return
        if self._waiting:
            self._waiting.pop(0).callback(message)
        else:
            self.messages.append(message)

    pe_ids: list[tuple[bytes, int]] = []

    def wire_error(self, channel, ppid, error, now) -> None:
        self.message_received(channel, error, now)

    def data_received(self, channel, ppid, payload, now) -> None:
        self.data.append((ppid, payload))

    def channel_closed(self, channel, reason) -> None:
        if not self.closed.called:
            self.closed.callback(None)
        while self._waiting:
            self._waiting.pop(0).errback(reason)

    def next(self) -> defer.Deferred:
        if self.messages:
            return defer.succeed(self.messages.pop(0))
        d = defer.Deferred()
        self._waiting.append(d)
        return d

    def send(self, message: Any) -> None:
        assert self.channel is not None
        self.channel.send(message)

    @defer.inlineCallbacks
    def request(self, message: Any):
        self.send(message)
        reply = yield self.next()
        return reply


def connect_raw(reactor, port: int, client_creator, *, settings: ChannelSettings | None = None,
                host: str = "127.0.0.1") -> defer.Deferred:
    """Connect a RawClient over TLS; fires with the client once the channel is ready."""
    client = RawClient()
    settings = settings or ChannelSettings()
    factory = Factory.forProtocol(lambda: Channel(client, reactor, settings, tls=client_creator is not None,
                                                  initiator=True))
    endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port)
    if client_creator is not None:
        endpoint = endpoints.wrapClientTLS(client_creator, endpoint)
    d = endpoint.connect(factory)

    def wait(_):
        return client.ready

    d.addCallback(wait)
    return d


def make_pe(pe_id: int, port: int = 7, *, policy=None, life: int = 30, address: str = "127.0.0.1") -> PoolElement:
    return PoolElement(pe_id, 0, life, TcpTransport(port, IPv4Address(address)),
                       policy if policy is not None else RoundRobinPolicy())


def start_registrar(reactor, pki, *, authorizer=None, settings: RegistrarSettings | None = None,
                    require_client_cert: bool = False, **kwargs) -> defer.Deferred:
    """A RegistrarService on 127.0.0.1:0 with the test PKI; fires with it once listening."""
    options = tls.server_options(pki.server.cert, pki.server.key, [pki.ca.cert],
                                 require_client_cert=require_client_cert)
    service = RegistrarService(
        settings or RegistrarSettings(server_id=random.randrange(1, 2**32)),
        reactor=reactor,
        listen=["tcp:0:interface=127.0.0.1"],
        tls_options=options,
        authorizer=authorizer or AllowAll(),
        **kwargs,
    )
    d = defer.maybeDeferred(service.startService)
    d.addCallback(lambda _: service)
    return d


def registrar_port(service: RegistrarService) -> int:
    return service.listening_addresses[0].port


class RegistrarClientsMixin:
    """Helpers for trial TestCases that run a registrar (``self.registrar``)
    and connect raw clients to it (``self.clients``, ``self.pki``), recording
    log events in ``self.events``."""

    @defer.inlineCallbacks
    def connect(self, cert=None):
        creator = tls.client_options("localhost", [self.pki.ca.cert],
                                     client_cert=cert.pair if cert is not None else None)
        from twisted.internet import reactor

        client = yield connect_raw(reactor, registrar_port(self.registrar), creator)
        self.clients.append(client)
        return client

    @defer.inlineCallbacks
    def close_clients(self):
        for client in self.clients:
            if client.channel is not None and not client.channel.closed:
                client.channel.abort()
                yield client.closed

    def log_lines(self, start: int = 0) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(event) or "" for event in self.events[start:]]

    def refusal_logged(self, start: int, identity: str) -> bool:
        """The gate logged that ``identity`` is not authorized (docs/gate.md)."""
        return any(line.startswith("refused ") and f"({identity}): not authorized" in line
                   for line in self.log_lines(start))

    def assert_refused(self, reply) -> None:
        from rserpool.wire import AsapRegistrationResponse
        from rserpool.wire.codes import CAUSE_SECURITY

        self.assertIsInstance(reply, AsapRegistrationResponse)
        self.assertTrue(reply.reject, reply)
        self.assertEqual([c.code for c in reply.error.causes], [CAUSE_SECURITY])

    def assert_accepted(self, reply) -> None:
        from rserpool.wire import AsapRegistrationResponse

        self.assertIsInstance(reply, AsapRegistrationResponse)
        self.assertFalse(reply.reject, reply)

    @defer.inlineCallbacks
    def resolve_while(self, pu, pending: defer.Deferred, expected_pe: int):
        """Resolve ``echo`` back to back until ``pending`` fires; the latencies."""
        import time

        from rserpool.wire import AsapHandleResolution, AsapHandleResolutionResponse

        latencies = []
        while not pending.called:
            started = time.monotonic()
            answer = yield pu.request(AsapHandleResolution(b"echo"))
            latencies.append(time.monotonic() - started)
            self.assertIsInstance(answer, AsapHandleResolutionResponse)
            self.assertIn(expected_pe, [pe.pe_id for pe in answer.pool_elements])
        return latencies



def within(d: defer.Deferred, seconds: float, reactor) -> defer.Deferred:
    """``d``, failing with a timeout after ``seconds``."""
    return d.addTimeout(seconds, reactor)


class LoopbackRegistrarsMixin:
    """For trial TestCases: the test PKI for the class (``self.pki``),
    registrars on loopback TLS started by :meth:`registrar`
    (``self.registrars``) and PE services the test appends to
    ``self.services``; all stopped after each test."""

    @classmethod
    def setUpClass(cls):
        import tempfile
        from pathlib import Path

        from tests.tlshelpers import make_test_pki

        cls._tmp = tempfile.TemporaryDirectory()
        cls.pki = make_test_pki(Path(cls._tmp.name))

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.registrars = []
        self.services = []

    @defer.inlineCallbacks
    def tearDown(self):
        for service in self.services:
            if service.running:
                yield service.stopService()
        for registrar in self.registrars:
            if registrar.running:
                yield registrar.stopService()

    @defer.inlineCallbacks
    def registrar(self, **settings):
        """A started registrar (keep-alives every 0.2 s unless ``settings`` say otherwise)."""
        settings.setdefault("keepalive_interval", 0.2)
        settings.setdefault("keepalive_timeout", 0.2)
        service = yield start_registrar(
            self.reactor, self.pki, settings=RegistrarSettings(server_id=random.randrange(1, 2**32), **settings))
        self.registrars.append(service)
        return service

    def client_tls(self, name):
        return tls.client_options(name, [self.pki.ca.cert], client_cert=self.pki.pe1.pair)

    def pe_options(self, *registrars):
        """Server hunt options for a PE (certificate ``pe1``) that knows ``registrars``."""
        from rserpool.service.candidates import RegistrarCandidates

        return dict(
            candidates=RegistrarCandidates(static=[f"127.0.0.1:{registrar_port(r)} localhost" for r in registrars]),
            tls_options_factory=self.client_tls,
            hunt_options=dict(t5_initial=1.0, t5_max=2.0, attempt_timeout=2.0),
        )
