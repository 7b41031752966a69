"""Attacks on a running registrar over real loopback TLS (docs/threats.md).

Each test plays an attacker against ``RegistrarService`` and checks, from
the registrar's side, that no state was created or changed and that
legitimate clients were still served.  Tests that attack one mechanism in
depth live with that mechanism (SRP/CHAP relay and replay in
``tests/test_service_auth.py``, revocation in
``tests/test_service_revocation.py``, registrar impersonation in
``tests/test_service_server_auth.py``, TLS-PSK in
``tests/test_security_psk.py``); docs/threats.md maps every threat to its
tests.

Bounded: every wait has a timeout, there is no sleep; floods are sized so
that the module runs in a few seconds.
"""

from __future__ import annotations

import random
import socket
import tempfile
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, endpoints, protocol, reactor
from twisted.internet.protocol import Factory
from twisted.trial import unittest

from rserpool.asap.pu import PuSettings
from rserpool.asap.registrar import RegistrarSettings
from rserpool.backends.filestore import RulesFileAuthorizer
from rserpool.gate import GatePolicy
from rserpool.security import tls
from rserpool.security.credentials import CertificateChecker, PskChecker
from rserpool.service.channel import Channel, ChannelSettings
from rserpool.service.candidates import AnnounceReceiver, RegistrarCandidates, listen_for_announces
from rserpool.service.hunt import ServerHunt, make_channel_factory
from rserpool.service.pe import PoolElementService
from rserpool.service.pu import PoolUser
from rserpool.service.registrar import RegistrarService
from rserpool.wire import (
    AsapDeregistration,
    AsapEndpointKeepAlive,
    AsapEndpointKeepAliveAck,
    AsapEndpointUnreachable,
    AsapHandleResolution,
    AsapHandleResolutionResponse,
    AsapRegistration,
    AsapRegistrationResponse,
    AsapServerAnnounce,
    EnrpHandleTableRequest,
    EnrpListRequest,
    EnrpPresence,
    Limits,
    LeastUsedPolicy,
    TcpTransport,
)
from rserpool.wire.codes import CAUSE_SECURITY, PPID_ASAP
from rserpool.testing import MemoryGroups
from tests.asaphelpers import AllowAll, RawClient, make_pe
from tests.tlshelpers import make_test_pki

H = b"echo"
WAIT = 15.0  # seconds: the bound on every single wait


def within(d: defer.Deferred, seconds: float = WAIT) -> defer.Deferred:
    return d.addTimeout(seconds, reactor)


def cause_of(reply: Any) -> int | None:
    error = getattr(reply, "error", None)
    if error is None:
        return None
    return error.causes[0].code


def contents(registrar: RegistrarService) -> set[tuple[bytes, int]]:
    return {(entry.pool_handle, entry.pe_id) for entry in registrar.handlespace.entries()}


class Spy:
    """Counts what reaches a registrar: ready channels, messages, closes
    of channels that never became ready."""

    def __init__(self, registrar: RegistrarService) -> None:
        self.ready: list[str] = []
        self.messages = 0
        self.unready_closes = 0
        self._unready_waiters: list[tuple[int, defer.Deferred]] = []
        self._message_waiters: list[tuple[type, defer.Deferred]] = []
        self._ready_waiters: list[tuple[int, defer.Deferred]] = []
        ready, received = registrar.channel_ready, registrar.message_received
        closed = registrar.channel_closed

        def on_ready(channel: Channel) -> None:
            self.ready.append(getattr(channel.peer, "host", ""))
            ready(channel)
            for item in list(self._ready_waiters):
                if len(self.ready) >= item[0]:
                    self._ready_waiters.remove(item)
                    item[1].callback(None)

        def on_message(channel: Channel, message: Any, now: float) -> None:
            self.messages += 1
            received(channel, message, now)
            for item in list(self._message_waiters):
                if type(message) is item[0]:
                    self._message_waiters.remove(item)
                    item[1].callback(message)

        def on_closed(channel: Channel, reason: Any) -> None:
            if not channel.ready:
                self.unready_closes += 1
                for item in list(self._unready_waiters):
                    if self.unready_closes >= item[0]:
                        self._unready_waiters.remove(item)
                        item[1].callback(None)
            closed(channel, reason)

        registrar.channel_ready = on_ready
        registrar.message_received = on_message
        registrar.channel_closed = on_closed

    def unready_closed(self, count: int) -> defer.Deferred:
        """Fires once ``count`` channels in all were closed before becoming ready."""
        if self.unready_closes >= count:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._unready_waiters.append((count, d))
        return d

    def ready_count(self, count: int) -> defer.Deferred:
        """Fires once ``count`` channels in all became ready at the registrar
        (with TLS 1.3 the client finishes its handshake first)."""
        if len(self.ready) >= count:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._ready_waiters.append((count, d))
        return d

    def next_message(self, kind: type) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self._message_waiters.append((kind, d))
        return d


@pytest.mark.integration
class AttacksOverTLS(unittest.TestCase):
    timeout = 120

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.pki = make_test_pki(Path(cls._tmp.name))

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def setUp(self):
        self.clients: list[RawClient] = []
        self.services: list[Any] = []
        self.registrars: list[RegistrarService] = []
        self.transports: list[Any] = []

    @defer.inlineCallbacks
    def tearDown(self):
        for transport in self.transports:
            transport.abortConnection()
        for client in self.clients:
            if client.channel is not None and not client.channel.closed:
                client.channel.abort()
            yield within(client.closed)
        for service in self.services:
            if service.running:
                yield within(defer.maybeDeferred(service.stopService))
        for registrar in self.registrars:
            if registrar.running:
                yield within(registrar.stopService())

    # -- set-up helpers -----------------------------------------------------------------

    @defer.inlineCallbacks
    def registrar(self, *, authorizer: Any = None, crls: tuple = (), settings: dict | None = None,
                  **kwargs: Any):
        options = tls.server_options(self.pki.server.cert, self.pki.server.key, [self.pki.ca.cert],
                                     require_client_cert=False, crls=crls)
        service = RegistrarService(
            RegistrarSettings(server_id=random.randrange(1, 2**32), **(settings or {})),
            reactor=reactor, listen=["tcp:0:interface=127.0.0.1"], tls_options=options,
            authorizer=authorizer if authorizer is not None else AllowAll(), **kwargs)
        yield service.startService()
        self.registrars.append(service)
        service.spy = Spy(service)
        return service

    def creator(self, cert: Any = None) -> Any:
        return tls.client_options("localhost", [self.pki.ca.cert],
                                  client_cert=cert.pair if cert is not None else None)

    @defer.inlineCallbacks
    def open(self, registrar: RegistrarService, cert: Any = None, *, bind: str | None = None):
        """A RawClient over TLS (from ``bind`` if given); fires once the client
        side's handshake finished or the connection closed, whichever is first."""
        client = RawClient()
        client.pe_ids = []
        factory = Factory.forProtocol(
            lambda: Channel(client, reactor, ChannelSettings(), tls=True, initiator=True))
        port = registrar.listening_addresses[0].port
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5,
                                                bindAddress=(bind, 0) if bind else None)
        self.clients.append(client)
        try:
            yield within(endpoints.wrapClientTLS(self.creator(cert), endpoint).connect(factory))
        except Exception:
            if not client.closed.called:
                client.closed.callback(None)
            raise
        yield within(defer.DeferredList([client.ready, client.closed], fireOnOneCallback=True,
                                        consumeErrors=True))
        return client

    @defer.inlineCallbacks
    def open_many(self, registrar: RegistrarService, count: int, cert: Any = None):
        clients = []
        for _ in range(count):
            clients.append((yield self.open(registrar, cert)))
        return clients

    @defer.inlineCallbacks
    def pipeline(self, client: RawClient, messages: list) -> Any:
        """Send all messages at once, then collect one answer per message."""
        for message in messages:
            client.send(message)
        answers = []
        for _ in messages:
            answers.append((yield within(client.next())))
        return answers

    def pool_element(self, registrar: RegistrarService, cert: Any) -> PoolElementService:
        """A real PE (the PE library): it answers keep-alives."""
        service = PoolElementService(
            reactor, H, TcpTransport(7, IPv4Address("127.0.0.1")), LeastUsedPolicy(1),
            registration_life=60,
            candidates=RegistrarCandidates(
                static=[f"127.0.0.1:{registrar.listening_addresses[0].port} localhost"]),
            tls_options_factory=lambda name: tls.client_options(name, [self.pki.ca.cert],
                                                                 client_cert=cert.pair),
            hunt_options=dict(t5_initial=0.5, t5_max=1.0, attempt_timeout=5.0))
        self.services.append(service)
        return service

    # -- threats 2.1 and 2.2: unauthenticated registration flood -------------------------------

    @defer.inlineCallbacks
    def test_unauthenticated_registration_flood_creates_no_state(self):
        authorizer = AllowAll()
        registrar = yield self.registrar(authorizer=authorizer)
        legit = yield self.open(registrar, self.pki.pe1)
        anonymous = 12
        rogue = 4
        per_connection = 40
        floods = []
        for n in range(anonymous):
            client = yield self.open(registrar)
            batch = [AsapRegistration(H, make_pe(1000 * n + i)) for i in range(per_connection)]
            floods.append(self.pipeline(client, batch))
        # The legitimate PE registers while the flood is in flight.
        during = legit.request(AsapRegistration(H, make_pe(0x1E617)))
        results = yield within(defer.gatherResults(floods + [during]))
        *flood_answers, legit_answer = results
        answers = [answer for batch in flood_answers for answer in batch]
        self.assertEqual(len(answers), anonymous * per_connection)
        self.assertTrue(all(type(a) is AsapRegistrationResponse and a.reject for a in answers))
        self.assertEqual({cause_of(a) for a in answers}, {CAUSE_SECURITY})
        self.assertFalse(legit_answer.reject, legit_answer)

        # Clients with a certificate from an untrusted CA (one even named "pe1")
        # never get a channel: the handshake is refused before any ASAP byte.
        before = len(registrar.spy.ready)
        refused_before = registrar.spy.unready_closes
        for n in range(rogue):
            client = yield self.open(registrar, self.pki.pe_rogue)
            if client.channel is not None and not client.channel.closed:
                # TLS 1.3: the client may finish first and only then hear the alert.
                for i in range(per_connection):
                    client.send(AsapRegistration(H, make_pe(0x900000 + 1000 * n + i)))
            yield within(client.closed)
        yield within(registrar.spy.unready_closed(refused_before + rogue))
        self.assertEqual(len(registrar.spy.ready), before)
        self.assertTrue(all(not c.messages for c in self.clients[-rogue:]))

        # Nothing but the legitimate PE exists; only its request was authorized.
        self.assertEqual(contents(registrar), {(H, 0x1E617)})
        self.assertEqual(authorizer.calls, [("pe1", "register", H)])
        # ... and it is still served after the flood.
        after = yield within(legit.request(AsapRegistration(H, make_pe(0x1E618))))
        self.assertFalse(after.reject, after)
        pu = yield self.open(registrar)
        answer = yield within(pu.request(AsapHandleResolution(H)))
        self.assertEqual(sorted(pe.pe_id for pe in answer.pool_elements), [0x1E617, 0x1E618])
        self.assertEqual(registrar.core.stats["refused"], anonymous * per_connection)

    # -- threats 2.2 and 2.4: registration in a pool the identity is not authorized for -------

    @defer.inlineCallbacks
    def test_registration_in_an_unauthorized_pool_is_refused(self):
        rules = Path(self._tmp.name) / "authz.rules"
        rules.write_text(
            "deny pe1        all                    payroll-eu\n"
            "pe1             register,deregister    echo\n"
            "@finance        register,deregister    payroll payroll-*\n")
        groups = {"pe1": ["finance"], "pe2": ["finance"]}
        checkers = [CertificateChecker(groups=MemoryGroups(groups)), PskChecker()]
        registrar = yield self.registrar(authorizer=RulesFileAuthorizer(str(rules)), checkers=checkers)
        pe1 = yield self.open(registrar, self.pki.pe1)
        pe2 = yield self.open(registrar, self.pki.pe2)
        allowed = yield within(pe1.request(AsapRegistration(H, make_pe(1))))
        self.assertFalse(allowed.reject, allowed)
        # pe2 is not named for "echo" and has no group for it: default deny.
        refused = yield within(pe2.request(AsapRegistration(H, make_pe(2))))
        self.assertEqual(cause_of(refused), CAUSE_SECURITY)
        # The group rule lets both into payroll-us, but the deny rule before it wins for pe1
        # in payroll-eu, even though pe2 created that pool legitimately.
        ok = yield within(pe2.request(AsapRegistration(b"payroll-eu", make_pe(3))))
        self.assertFalse(ok.reject, ok)
        denied = yield within(pe1.request(AsapRegistration(b"payroll-eu", make_pe(4))))
        self.assertEqual(cause_of(denied), CAUSE_SECURITY)
        # ... and pe1 cannot deregister pe2's PE there either.
        gone = yield within(pe1.request(AsapDeregistration(b"payroll-eu", 3)))
        self.assertEqual(cause_of(gone), CAUSE_SECURITY)
        # Not authorized for "hr" at all: refused, and no pool appears.
        hr = yield within(pe1.request(AsapRegistration(b"hr", make_pe(5))))
        self.assertEqual(cause_of(hr), CAUSE_SECURITY)
        self.assertEqual(contents(registrar), {(H, 1), (b"payroll-eu", 3)})
        self.assertEqual(sorted(registrar.handlespace.pool_handles()), [H, b"payroll-eu"])
        # A refusal is remembered for the channel: a retry does not reach the rules again.
        reloads = registrar.authorizer.reloads
        again = yield within(pe1.request(AsapRegistration(b"hr", make_pe(5))))
        self.assertEqual(cause_of(again), CAUSE_SECURITY)
        self.assertEqual(registrar.authorizer.reloads, reloads)

    # -- threat 2.3: spoofed deregistration and hijacking re-registration ------------------------

    @defer.inlineCallbacks
    def test_spoofed_deregistration_by_anonymous_untrusted_and_revoked_clients(self):
        registrar = yield self.registrar(crls=[self.pki.crl_revoked])
        owner = yield self.open(registrar, self.pki.pe1)
        owner.pe_ids, owner.auto_ack_keepalives = [(H, 77)], True
        reply = yield within(owner.request(AsapRegistration(H, make_pe(77))))
        self.assertFalse(reply.reject, reply)
        entry = registrar.handlespace.get(H, 77)

        anonymous = yield self.open(registrar)
        refused = yield within(anonymous.request(AsapDeregistration(H, 77)))
        self.assertEqual(cause_of(refused), CAUSE_SECURITY)
        hijack = yield within(anonymous.request(AsapRegistration(H, make_pe(77, port=9999))))
        self.assertEqual(cause_of(hijack), CAUSE_SECURITY)

        # Untrusted CA (the certificate even says "pe1"), revoked and expired
        # certificates: the handshake fails, nothing is ever processed.
        ready = len(registrar.spy.ready)
        messages = registrar.spy.messages
        unready = registrar.spy.unready_closes
        for cert in (self.pki.pe_rogue, self.pki.pe_revoked, self.pki.pe_expired):
            client = yield self.open(registrar, cert)
            if client.channel is not None and not client.channel.closed:
                client.send(AsapDeregistration(H, 77))
                client.send(AsapRegistration(H, make_pe(77, port=9999)))
            yield within(client.closed)
            self.assertEqual(client.messages, [])
        yield within(registrar.spy.unready_closed(unready + 3))
        self.assertEqual(len(registrar.spy.ready), ready)
        self.assertEqual(registrar.spy.messages, messages)

        self.assertIs(registrar.handlespace.get(H, 77), entry)
        self.assertEqual(entry.payload.user_transport.port, 7)
        self.assertEqual(entry.identity, "pe1")
        # The owner still can.
        gone = yield within(owner.request(AsapDeregistration(H, 77)))
        self.assertIsNone(cause_of(gone))
        self.assertIsNone(registrar.handlespace.get(H, 77))

    # -- threat 2.8: replay ------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_replayed_registration_by_another_identity_does_not_hijack(self):
        registrar = yield self.registrar()
        owner = yield self.open(registrar, self.pki.pe1)
        registration = AsapRegistration(H, make_pe(0x55, port=8000))
        recorded = registration.encode()  # the exact bytes the owner's channel sends
        reply = yield within(owner.request(registration))
        self.assertFalse(reply.reject, reply)
        entry = registrar.handlespace.get(H, 0x55)
        deregistration = AsapDeregistration(H, 0x55).encode()

        for cert in (self.pki.pe2, None):
            replayer = yield self.open(registrar, cert)
            replayer.channel.send_encoded(PPID_ASAP, recorded)
            answer = yield within(replayer.next())
            self.assertEqual(cause_of(answer), CAUSE_SECURITY)
            replayer.channel.send_encoded(PPID_ASAP, deregistration)
            answer = yield within(replayer.next())
            self.assertEqual(cause_of(answer), CAUSE_SECURITY)
        self.assertIs(registrar.handlespace.get(H, 0x55), entry)
        self.assertEqual(entry.identity, "pe1")
        self.assertEqual(registrar.core.stats["reregistrations"], 0)

    @defer.inlineCallbacks
    def test_replayed_tls_connection_is_refused(self):
        """Record every byte a PE sends through a relay, then play them to the
        registrar on a new TCP connection: the new handshake has new keys, so
        the recorded records are worthless and nothing is registered again."""
        registrar = yield self.registrar()
        relay = _Relay(registrar.listening_addresses[0].port)
        port = yield reactor.listenTCP(0, relay, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = RawClient()
        factory = Factory.forProtocol(
            lambda: Channel(client, reactor, ChannelSettings(), tls=True, initiator=True))
        endpoint = endpoints.wrapClientTLS(
            self.creator(self.pki.pe1),
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, timeout=5))
        self.clients.append(client)
        yield within(endpoint.connect(factory))
        yield within(client.ready)
        reply = yield within(client.request(AsapRegistration(H, make_pe(0x56))))
        self.assertFalse(reply.reject, reply)
        gone = yield within(client.request(AsapDeregistration(H, 0x56)))
        self.assertIsNone(cause_of(gone))
        client.channel.close()
        yield within(client.closed)
        recorded = b"".join(relay.recorded)
        self.assertGreater(len(recorded), 500)
        stats = dict(registrar.core.stats)
        ready = len(registrar.spy.ready)
        unready = registrar.spy.unready_closes

        replay = _Replay(recorded)
        yield within(endpoints.connectProtocol(
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", registrar.listening_addresses[0].port),
            replay))
        yield within(replay.done)
        yield within(registrar.spy.unready_closed(unready + 1))
        self.assertEqual(len(registrar.spy.ready), ready)
        self.assertIsNone(registrar.handlespace.get(H, 0x56))
        self.assertEqual(registrar.core.stats, stats)

    # -- RFC 5355 2.13 and 2.14: ENDPOINT_UNREACHABLE flood ----------------------------------------

    @defer.inlineCallbacks
    def test_unreachable_flood_is_limited_and_spares_a_healthy_pe(self):
        registrar = yield self.registrar(settings=dict(keepalive_interval=5.0, keepalive_timeout=5.0))
        pe = self.pool_element(registrar, self.pki.pe1)
        keepalives: list[float] = []
        original = pe.message_received

        def counting(channel, message, now):
            if type(message) is AsapEndpointKeepAlive:
                keepalives.append(now)
            original(channel, message, now)

        pe.message_received = counting
        pe.startService()
        yield within(pe.registered())
        entry = registrar.handlespace.get(H, pe.pe_id)
        self.assertIsNotNone(entry)
        acked = registrar.spy.next_message(AsapEndpointKeepAliveAck)

        # One PU connection sends thousands of reports, four more from the same
        # address (anonymous: one reporter, "addr:127.0.0.1") a thousand each.
        report = AsapEndpointUnreachable(H, pe.pe_id)
        floods = yield self.open_many(registrar, 5)
        counts = [3000, 1000, 1000, 1000, 1000]
        started = reactor.seconds()
        for client, count in zip(floods, counts):
            for _ in range(count):
                client.send(report)
            client.send(AsapHandleResolution(H))  # ordered channel: answered after the reports
        answers = yield within(defer.gatherResults([client.next() for client in floods]))
        elapsed = reactor.seconds() - started
        self.assertTrue(all(type(a) is AsapHandleResolutionResponse for a in answers), answers)

        # The PE answered the probe keep-alive the first report triggered.
        yield within(acked)
        self.assertIs(registrar.handlespace.get(H, pe.pe_id), entry)
        self.assertTrue(pe.is_registered)
        reporters = entry.unreachable[1]
        self.assertEqual(reporters, ("addr:127.0.0.1",))
        # Burst of 10 plus 1 per second: everything else was dropped uncounted.
        total = sum(counts)
        allowed = 10 + int(elapsed) + 1
        self.assertGreaterEqual(registrar.core.stats["refused"], total - allowed)
        # RFC 5355 2.14: the flood does not turn into a keep-alive flood on the PE
        # (at most one probe outstanding, and only the admitted reports probe).
        self.assertLessEqual(len(keepalives), allowed + 2)
        self.assertGreaterEqual(len(keepalives), 1)
        # Still served to pool users.
        pu = yield self.open(registrar, self.pki.pu1)
        answer = yield within(pu.request(AsapHandleResolution(H)))
        self.assertEqual([p.pe_id for p in answer.pool_elements], [pe.pe_id])

    @defer.inlineCallbacks
    def test_three_distinct_reporters_remove_an_unreachable_pe(self):
        # RFC 5352's rule, configured (INSECURE; the default needs a failed
        # probe, tests/test_attacks_gate.py).  Keep-alives are rare and slow
        # here: only the reports can remove the PE.
        registrar = yield self.registrar(settings=dict(keepalive_interval=60.0, keepalive_timeout=60.0),
                                         gate_policy=GatePolicy(unreachable_removal_needs_failed_probe=False))
        dead = yield self.open(registrar, self.pki.pe2)  # registers, then never answers
        reply = yield within(dead.request(AsapRegistration(H, make_pe(0x66))))
        self.assertFalse(reply.reject, reply)
        healthy = yield self.open(registrar, self.pki.pe1)
        healthy.pe_ids, healthy.auto_ack_keepalives = [(H, 0x11)], True
        reply = yield within(healthy.request(AsapRegistration(H, make_pe(0x11))))
        self.assertFalse(reply.reject, reply)

        # Many reports from one address count once, however many connections carry them.
        same = yield self.open_many(registrar, 3)
        for client in same:
            for _ in range(5):
                client.send(AsapEndpointUnreachable(H, 0x66))
            yield within(client.request(AsapHandleResolution(H)))
        self.assertIsNotNone(registrar.handlespace.get(H, 0x66))

        # Distinct reporters (distinct source addresses) do count.
        for n, address in enumerate(("127.0.0.2", "127.0.0.3")):
            reporter = yield self.open(registrar, bind=address)
            self.assertTrue(reporter.ready.called)
            reporter.send(AsapEndpointUnreachable(H, 0x66))
            yield within(reporter.request(AsapHandleResolution(H)))
            entry = registrar.handlespace.get(H, 0x66)
            if n == 0:
                self.assertIsNotNone(entry)  # two reporters: not yet
                self.assertEqual(len(entry.unreachable[1]), 2)
        self.assertIsNone(registrar.handlespace.get(H, 0x66))
        self.assertIsNotNone(registrar.handlespace.get(H, 0x11))
        self.assertIn("127.0.0.2", registrar.spy.ready)
        self.assertIn("127.0.0.3", registrar.spy.ready)

    # -- resource limits ------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_connections_over_the_per_address_limit_are_refused(self):
        registrar = yield self.registrar(gate_policy=GatePolicy(max_connections_per_address=3))
        kept = yield self.open_many(registrar, 3, self.pki.pe1)
        self.assertTrue(all(c.ready.called for c in kept))
        yield within(registrar.spy.ready_count(3))
        ready = len(registrar.spy.ready)
        extra = yield self.open(registrar, self.pki.pe1)
        if not extra.closed.called:
            extra.send(AsapRegistration(H, make_pe(0x99)))
        yield within(extra.closed)
        self.assertEqual(extra.messages, [])
        self.assertEqual(len(registrar.spy.ready), ready)
        self.assertIsNone(registrar.handlespace.get(H, 0x99))
        # Another address is not affected; closing one connection frees a place.
        other = yield self.open(registrar, bind="127.0.0.2")
        self.assertTrue(other.ready.called)
        kept[0].channel.close()
        yield within(kept[0].closed)
        again = yield self.open(registrar, self.pki.pe1)
        reply = yield within(again.request(AsapRegistration(H, make_pe(0x98))))
        self.assertFalse(reply.reject, reply)

    @defer.inlineCallbacks
    def test_a_burst_of_connections_from_one_address_is_limited(self):
        registrar = yield self.registrar(gate_policy=GatePolicy(max_connections_per_address=3))
        attempts = [self.open(registrar, self.pki.pe1) for _ in range(8)]
        clients = yield within(defer.gatherResults(attempts))
        for client in clients:
            if client.channel is not None and not client.channel.closed:
                client.send(AsapHandleResolution(H))
        # Every connection either got its answer or was closed.
        yield within(defer.DeferredList([
            defer.DeferredList([c.next(), c.closed], fireOnOneCallback=True, consumeErrors=True)
            for c in clients]))
        self.assertLessEqual(len(registrar.spy.ready), 3)
        self.assertLessEqual(max(registrar.gate.connections.values()), 3)

    @defer.inlineCallbacks
    def test_oversize_and_garbage_framing_drop_only_the_offender(self):
        limits = Limits(max_message_size=1024)
        registrar = yield self.registrar(channel_settings=ChannelSettings(limits=limits))
        good = yield self.open(registrar, self.pki.pe1)
        reply = yield within(good.request(AsapRegistration(H, make_pe(1))))
        self.assertFalse(reply.reject, reply)
        offences = [
            # a DATA chunk far over the registrar's 1040-byte chunk limit
            lambda c: c.channel.send_encoded(PPID_ASAP, bytes([0x01, 0, 0x0F, 0xA0]) + bytes(3996)),
            # a chunk header announcing 65535 bytes that never come in full
            lambda c: c.channel.transport.write(bytes([0, 0, 0xFF, 0xFF]) + bytes(2000)),
            # a chunk length below its own header
            lambda c: c.channel.transport.write(bytes([0, 0, 0, 2])),
            # an unknown chunk type
            lambda c: c.channel.transport.write(bytes([0x7E, 0, 0, 8, 1, 2, 3, 4])),
            # a second INIT after the start of the stream
            lambda c: c.channel.transport.write(bytes([1, 0, 0, 4])),
        ]
        for offence in offences:
            bad = yield self.open(registrar, self.pki.pe2)
            offence(bad)
            yield within(bad.closed)
            answer = yield within(good.request(AsapHandleResolution(H)))
            self.assertEqual([p.pe_id for p in answer.pool_elements], [1])
        self.assertEqual(contents(registrar), {(H, 1)})
        self.assertTrue(good.channel is not None and not good.channel.closed)

    # -- threats 2.5 and 2.11: a client posing as an ENRP peer (rsplib's hsdump) ----------------

    @defer.inlineCallbacks
    def test_enrp_peer_requests_get_no_handlespace(self):
        registrar = yield self.registrar()
        owner = yield self.open(registrar, self.pki.pe1)
        reply = yield within(owner.request(AsapRegistration(H, make_pe(0x42))))
        self.assertFalse(reply.reject, reply)
        for cert in (None, self.pki.pe2):
            peer = yield self.open(registrar, cert)
            received = registrar.spy.messages
            # ENRP on the ASAP port: each refused with ENRP_ERROR, Unrecognized
            # Message (docs/enrp.md), in order, before the ASAP answer.
            answers = yield self.pipeline(peer, [
                EnrpPresence(0x0BAD, registrar.server_id, 0, reply_required=True),
                EnrpHandleTableRequest(0x0BAD, registrar.server_id),
                EnrpListRequest(0x0BAD, registrar.server_id),
                AsapHandleResolution(b"nothing-here")])
            self.assertEqual([type(m).__name__ for m in answers], ["EnrpError"] * 3 + [
                "AsapHandleResolutionResponse"])
            self.assertEqual({c.code for m in answers[:3] for c in m.error.causes}, {0x2})
            self.assertEqual(registrar.spy.messages, received + 4)  # all four arrived
        self.assertEqual(contents(registrar), {(H, 0x42)})

    # -- threat 2.12 (c, d): a forged announce points at a rogue registrar -----------------------

    @defer.inlineCallbacks
    def test_forged_announce_of_a_rogue_registrar_is_refused_by_tls(self):
        good = yield self.registrar()
        owner = yield self.open(good, self.pki.pe1)
        owner.pe_ids, owner.auto_ack_keepalives = [(H, 0x77)], True
        reply = yield within(owner.request(AsapRegistration(H, make_pe(0x77))))
        self.assertFalse(reply.reject, reply)
        # The rogue registrar's certificate names 127.0.0.1 too, but from another CA.
        rogue_options = tls.server_options(self.pki.rogue_server.cert, self.pki.rogue_server.key,
                                           require_client_cert=False)
        rogue = RegistrarService(RegistrarSettings(server_id=0xBAD), reactor=reactor,
                                 listen=["tcp:0:interface=127.0.0.1"], tls_options=rogue_options,
                                 authorizer=AllowAll())
        yield rogue.startService()
        self.registrars.append(rogue)
        rogue.spy = Spy(rogue)

        receiver = AnnounceReceiver(reactor)  # TLS name: the announced address
        udp = listen_for_announces(reactor, 0, receiver, "127.0.0.1")
        self.addCleanup(udp.stopListening)

        def announce(registrar: RegistrarService) -> None:
            message = AsapServerAnnounce(registrar.server_id, (TcpTransport(
                registrar.listening_addresses[0].port, IPv4Address("127.0.0.1")),))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                sender.sendto(message.encode(), ("127.0.0.1", udp.getHost().port))

        holder: list[PoolUser] = []
        hunt = ServerHunt(
            reactor, RegistrarCandidates(announces=receiver),
            lambda name: tls.client_options(name, [self.pki.ca.cert]),
            make_channel_factory(lambda candidate: holder[0], reactor, ChannelSettings()),
            t5_initial=0.2, t5_max=0.5, attempt_timeout=2.0)
        user = PoolUser(reactor, hunt, settings=PuSettings(t1=2.0, max_request_retransmit=5))
        holder.append(user)
        self.services.append(_Stopper(user))
        announce(rogue)  # the attacker's announce arrives first
        resolution = user.resolve(H)
        yield within(rogue.spy.unready_closed(1))  # tried, and refused by the handshake
        self.assertFalse(resolution.called)
        announce(good)
        pes = yield within(resolution)
        self.assertEqual([pe.pe_id for pe in pes], [0x77])
        self.assertEqual(rogue.spy.ready, [])
        self.assertEqual(rogue.spy.messages, 0)
        self.assertEqual(rogue.core.stats["resolutions"], 0)
        self.assertEqual(good.core.stats["resolutions"], 1)

    # -- RFC 5355 2.14 (and 2.17): a compromised registrar floods its PE with keep-alives --------

    @defer.inlineCallbacks
    def test_keepalive_flood_from_an_authenticated_registrar_is_bounded_by_the_pe(self):
        registrar = yield self.registrar(settings=dict(keepalive_interval=1.0, keepalive_timeout=1.0))
        pe = self.pool_element(registrar, self.pki.pe1)
        flood_size, rogue_id = 1000, 0xBAD
        seen = {"flood": 0, "own": 0, "own_during_flood": 0, "own_unanswered": 0}
        flooded: defer.Deferred = defer.Deferred()
        own_after: defer.Deferred = defer.Deferred()
        original = pe.message_received

        def counting(channel, message, now):
            answered = pe.stats["keepalives_answered"]
            original(channel, message, now)
            if type(message) is not AsapEndpointKeepAlive:
                return
            if message.server_id == rogue_id:
                seen["flood"] += 1
                if seen["flood"] == flood_size:
                    flooded.callback((now, dict(pe.stats)))
            elif flooded.called:  # the registrar's own keep-alives, after the flood
                seen["own"] += 1
                seen["own_unanswered"] += pe.stats["keepalives_answered"] == answered
                if seen["own"] == 3:
                    own_after.callback(None)
            elif seen["flood"]:
                seen["own_during_flood"] += 1

        pe.message_received = counting
        pe.startService()
        yield within(pe.registered())
        entry = registrar.handlespace.get(H, pe.pe_id)
        self.assertIsNotNone(entry)
        (channel,) = registrar.channels  # the registrar's authenticated channel to the PE

        # Right after the PE answered one of the registrar's keep-alives (the
        # next one is at least 0.5 s away), the "compromised registrar" sends
        # 1000 keep-alives at once on that channel.
        yield within(registrar.spy.next_message(AsapEndpointKeepAliveAck))
        before = dict(pe.stats)
        started = reactor.seconds()
        for _ in range(flood_size):
            channel.send(AsapEndpointKeepAlive(rogue_id, H))
        done_at, after = yield within(flooded)
        elapsed = max(0.0, done_at - started)
        answered = after["keepalives_answered"] - before["keepalives_answered"]
        dropped = after["keepalives_dropped"] - before["keepalives_dropped"]
        # At most the burst (40) plus 5/s while the flood was read.
        bound = 40 + int(5 * elapsed) + 1 + seen["own_during_flood"]
        self.assertLessEqual(answered, bound, (elapsed, after))
        self.assertGreaterEqual(answered, 30)
        self.assertGreaterEqual(dropped, flood_size - bound)
        self.assertEqual(answered + dropped, flood_size + seen["own_during_flood"])

        # The PE keeps answering the registrar's keep-alives at their normal
        # rate: three more cycles (each sent only after the previous ACK), and
        # the registration is the same one.
        yield within(own_after)
        self.assertEqual(seen["own_unanswered"], 0)
        self.assertTrue(pe.is_registered)
        self.assertIs(registrar.handlespace.get(H, pe.pe_id), entry)
        self.assertEqual(registrar.core.stats["removed"], 0)
        self.assertEqual(pe.core.keepalive_channels, 1)
        self.assertGreaterEqual(pe.stats["keepalives_dropped"], flood_size - bound)


class _Stopper:
    """Lets tearDown stop a PoolUser like a service."""

    def __init__(self, user: PoolUser) -> None:
        self.user = user
        self.running = True

    def stopService(self) -> defer.Deferred:
        self.running = False
        return defer.maybeDeferred(self.user.stop)

class _RelayServer(protocol.Protocol):
    """One relayed connection: records what the client sends."""

    def __init__(self, relay: "_Relay") -> None:
        self.relay = relay
        self.upstream: Any = None
        self.pending: list[bytes] = []

    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        d = endpoints.connectProtocol(
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.relay.target),
            _RelayClient(self))
        d.addCallback(self._connected)
        d.addErrback(lambda _: self.transport.abortConnection())

    def _connected(self, upstream: "_RelayClient") -> None:
        self.upstream = upstream
        self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        self.relay.recorded.append(data)
        self.upstream.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        if self.upstream is not None:
            self.upstream.transport.loseConnection()


class _RelayClient(protocol.Protocol):
    def __init__(self, server: _RelayServer) -> None:
        self.server = server

    def dataReceived(self, data: bytes) -> None:
        self.server.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.server.transport.loseConnection()


class _Relay(protocol.Factory):
    def __init__(self, target: int) -> None:
        self.target = target
        self.recorded: list[bytes] = []

    def buildProtocol(self, addr: Any) -> _RelayServer:
        return _RelayServer(self)


class _Replay(protocol.Protocol):
    """Writes recorded bytes as fast as it can and waits for the close."""

    def __init__(self, recorded: bytes) -> None:
        self.recorded = recorded
        self.received = b""
        self.done: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.recorded)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(None)
