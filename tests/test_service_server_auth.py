"""The server is authenticated first: the PE library and the PU library refuse
a registrar whose certificate is untrusted or names someone else, and never
send it a registration or a handle resolution.

The PE and PU look the registrar up by name (``enrp.rserpool.test``, answered
by a stub resolver with 127.0.0.1); that looked-up name is the name the
registrar's certificate must carry.  The "wrong name" registrar's certificate
is even valid for 127.0.0.1, the address actually connected to: only the
name check refuses it.  Every refusal is proven from the registrar's side:
connections arrived, but no channel became ready, no message was received,
the handlespace is empty and the statistics show nothing.
"""

from __future__ import annotations

import tempfile
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from twisted.internet import defer, reactor
from twisted.names import dns
from twisted.names.error import DNSNameError
from twisted.trial import unittest

from rserpool.asap.pu import PuSettings, ResolutionTimeout
from rserpool.asap.registrar import RegistrarSettings
from rserpool.security import pki as pkimod
from rserpool.security import tls
from rserpool.service.channel import ChannelSettings
from rserpool.service.candidates import RegistrarCandidates
from rserpool.service.hunt import ServerHunt, make_channel_factory
from rserpool.service.pe import PoolElementService
from rserpool.service.pu import PoolUser
from rserpool.service.registrar import RegistrarService
from rserpool.wire import AsapRegistration, LeastUsedPolicy, TcpTransport
from tests.asaphelpers import AllowAll, connect_raw, make_pe, registrar_port
from tests.tlshelpers import make_test_pki

H = b"echo"
NAME = "enrp.rserpool.test"
ATTEMPTS = 2  # refused handshakes to observe before judging


class StubResolver:
    """Answers A queries for NAME with 127.0.0.1 and nothing else."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def lookupAddress(self, name, timeout=None):
        self.queries.append(name)
        if name.rstrip(".").lower() != NAME:
            return defer.fail(DNSNameError(name))
        answer = dns.RRHeader(name=NAME, type=dns.A, payload=dns.Record_A("127.0.0.1"))
        return defer.succeed(([answer], [], []))

    def lookupIPV6Address(self, name, timeout=None):
        return defer.fail(DNSNameError(name))


@pytest.mark.integration
class ServerAuthentication(unittest.TestCase):
    timeout = 60

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        directory = Path(cls._tmp.name)
        cls.pki = make_test_pki(directory)
        ca = cls.pki.ca.issued
        now = cls.pki.now

        def store(name, issued):
            cert, key = directory / f"{name}.pem", directory / f"{name}.key"
            pkimod.write_certificate(cert, issued.certificate, *issued.chain)
            pkimod.write_private_key(key, issued.private_key)
            return cert, key

        cls.certs = {
            "good": store("good", pkimod.create_server_certificate(ca, [NAME], now)),
            # Valid for the address connected to, but not for the looked-up name.
            "wrong_name": store("wrong", pkimod.create_server_certificate(
                ca, ["other.rserpool.test", "127.0.0.1"], now)),
            "untrusted": store("rogue", pkimod.create_server_certificate(cls.pki.rogue_ca.issued, [NAME], now)),
        }

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def setUp(self):
        self.registrars: list[RegistrarService] = []
        self.stop_me: list = []
        self.events: dict[RegistrarService, dict[str, int]] = {}

    @defer.inlineCallbacks
    def tearDown(self):
        for item in self.stop_me:
            yield defer.maybeDeferred(item)
        for registrar in self.registrars:
            yield registrar.stopService()

    @defer.inlineCallbacks
    def registrar(self, which: str):
        cert, key = self.certs[which]
        options = tls.server_options(cert, key, [self.pki.ca.cert], require_client_cert=False)
        registrar = RegistrarService(
            RegistrarSettings(server_id=0x4242, keepalive_interval=5.0), reactor=reactor,
            listen=["tcp:0:interface=127.0.0.1"], tls_options=options, authorizer=AllowAll())
        yield registrar.startService()
        self.registrars.append(registrar)
        self.spy(registrar)
        return registrar

    def spy(self, registrar: RegistrarService) -> None:
        """Count what reaches the registrar; ``registrar.refused`` fires after
        ATTEMPTS connections were closed without becoming ready."""
        events = self.events[registrar] = {"ready": 0, "messages": 0, "closed_unready": 0}
        registrar.refused = defer.Deferred()
        ready, received, closed = registrar.channel_ready, registrar.message_received, registrar.channel_closed

        def on_ready(channel):
            events["ready"] += 1
            ready(channel)

        def on_message(channel, message, now):
            events["messages"] += 1
            received(channel, message, now)

        def on_closed(channel, reason):
            if not channel.ready:
                events["closed_unready"] += 1
                if events["closed_unready"] >= ATTEMPTS and not registrar.refused.called:
                    registrar.refused.callback(None)
            closed(channel, reason)

        registrar.channel_ready, registrar.message_received = on_ready, on_message
        registrar.channel_closed = on_closed

    def candidates(self, registrar: RegistrarService) -> RegistrarCandidates:
        # Looked up by name: the name is what the certificate must carry.
        return RegistrarCandidates(static=[f"{NAME}:{registrar_port(registrar)}"], resolver=StubResolver())

    def pe(self, registrar: RegistrarService) -> PoolElementService:
        service = PoolElementService(
            reactor, H, TcpTransport(7, IPv4Address("127.0.0.1")), LeastUsedPolicy(1),
            candidates=self.candidates(registrar),
            tls_options_factory=lambda name: tls.client_options(
                name, [self.pki.ca.cert], client_cert=self.pki.pe1.pair),
            hunt_options=dict(t5_initial=0.2, t5_max=0.5, attempt_timeout=2.0),
            channel_settings=ChannelSettings(heartbeat_interval=1.0, dead_after=3.0),
            hunt_retry=(0.2, 0.5))
        service.startService()
        self.stop_me.append(service.stopService)
        return service

    def pu(self, registrar: RegistrarService) -> PoolUser:
        holder: list[PoolUser] = []
        hunt = ServerHunt(
            reactor, self.candidates(registrar),
            lambda name: tls.client_options(name, [self.pki.ca.cert]),
            make_channel_factory(lambda candidate: holder[0], reactor, ChannelSettings()),
            t5_initial=0.2, t5_max=0.5, attempt_timeout=2.0)
        user = PoolUser(reactor, hunt, settings=PuSettings(t1=1.0, max_request_retransmit=0))
        holder.append(user)
        self.stop_me.append(user.stop)
        return user

    def assert_nothing_reached(self, registrar: RegistrarService) -> None:
        events = self.events[registrar]
        self.assertGreaterEqual(events["closed_unready"], ATTEMPTS)  # it did try
        self.assertEqual(events["ready"], 0)
        self.assertEqual(events["messages"], 0)
        self.assertEqual(len(registrar.handlespace), 0)
        self.assertEqual(set(registrar.core.stats.values()), {0}, registrar.core.stats)
        self.assertEqual(registrar.core.channel_states, set())

    # -- the PE library ------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_pe_registers_with_the_right_registrar(self):
        registrar = yield self.registrar("good")
        service = self.pe(registrar)
        event = yield service.registered().addTimeout(10, reactor)
        self.assertEqual(event.pe_id, service.pe_id)
        self.assertEqual(registrar.handlespace.get(H, service.pe_id).identity, "pe1")

    @defer.inlineCallbacks
    def pe_refused(self, which: str):
        registrar = yield self.registrar(which)
        service = self.pe(registrar)
        yield registrar.refused.addTimeout(20, reactor)
        self.assertFalse(service.is_registered)
        self.assert_nothing_reached(registrar)

    def test_pe_refuses_an_untrusted_registrar(self):
        return self.pe_refused("untrusted")

    def test_pe_refuses_a_registrar_certified_for_another_name(self):
        return self.pe_refused("wrong_name")

    # -- the PU library ------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_pu_resolves_with_the_right_registrar(self):
        registrar = yield self.registrar("good")
        owner = yield connect_raw(reactor, registrar_port(registrar),
                                  tls.client_options(NAME, [self.pki.ca.cert], client_cert=self.pki.pe1.pair))
        self.stop_me.append(lambda: owner.channel.abort() or owner.closed)
        owner.pe_ids, owner.auto_ack_keepalives = [(H, 0x99)], True
        reply = yield owner.request(AsapRegistration(H, make_pe(0x99)))
        self.assertFalse(reply.reject, reply)
        pes = yield self.pu(registrar).resolve(H)
        self.assertEqual([pe.pe_id for pe in pes], [0x99])

    @defer.inlineCallbacks
    def pu_refused(self, which: str):
        registrar = yield self.registrar(which)
        user = self.pu(registrar)
        resolution = user.resolve(H)
        resolution.addErrback(lambda failure: failure.trap(ResolutionTimeout))
        yield registrar.refused.addTimeout(20, reactor)
        yield resolution
        self.assert_nothing_reached(registrar)
        self.assertEqual(registrar.core.stats["resolutions"], 0)

    def test_pu_refuses_an_untrusted_registrar(self):
        return self.pu_refused("untrusted")

    def test_pu_refuses_a_registrar_certified_for_another_name(self):
        return self.pu_refused("wrong_name")
