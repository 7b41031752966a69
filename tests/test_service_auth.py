"""SRP and CHAP over the ASAP extension, over real loopback TLS, with attacks:
a relayed SRP exchange, a replayed CHAP response, wrong and unknown
identities, bounded attempts, backend outages, an RFC-only registrar."""

from __future__ import annotations

import random
import tempfile
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from twisted.internet import defer, endpoints
from twisted.internet.protocol import Factory
from twisted.trial import unittest

from zope.interface import implementer

from rserpool.asap.registrar import RegistrarSettings
from rserpool.errors import BackendUnavailable
from rserpool.gate import GatePolicy
from rserpool.interfaces import IChapVerifier
from rserpool.security import exchange as ex
from rserpool.security import tls
from rserpool.security.credentials import (
    Authenticator, CertificateChecker, ChapChecker, PskChecker, SrpChecker,
)
from rserpool.security.exchange import AuthenticationFailed
from rserpool.security.ratelimit import AttemptLimit
from rserpool.service.auth import (
    AuthenticationError, PeAuthenticator, RegistrarAuthenticator, channel_binding, read_secret,
)
from rserpool.testing import MemoryChapStore, MemorySrpStore, ScriptedAuthorizer
from rserpool.service.channel import Channel, ChannelSettings
from rserpool.service.candidates import RegistrarCandidates
from rserpool.service.pe import AuthenticationFailedError, PoolElementService
from rserpool.wire import AsapError, AsapRegistration, LeastUsedPolicy
from rserpool.wire import TcpTransport, codes
from rserpool.wire.auth import (
    AsapAuthChapResponse, AsapAuthFailure, AsapAuthHello, AsapAuthRequest,
)
from tests.asaphelpers import RawClient, connect_raw, make_pe, registrar_port, start_registrar
from tests.tlshelpers import make_test_pki

pytestmark = pytest.mark.integration

H = b"auth-pool"
SRP = ex.MECH_SRP_SHA256_2048
CHAP = ex.MECH_CHAP_MD5
SERVER_SECRET = b"0123456789abcdef-registrar"


@implementer(IChapVerifier)
class DownVerifier:
    def verify_chap(self, identity, identifier, challenge, response):
        return defer.fail(BackendUnavailable("RADIUS: no answer from any server"))


@implementer(IChapVerifier)
class HeldVerifier:
    """A CHAP backend whose verdicts the test gives (a slow RADIUS server)."""

    def __init__(self) -> None:
        self.asked: defer.Deferred = defer.Deferred()
        self.verdicts: list[defer.Deferred] = []

    def verify_chap(self, identity, identifier, challenge, response):
        verdict = defer.Deferred()
        self.verdicts.append(verdict)
        if not self.asked.called:
            self.asked.callback(identity)
        return verdict


def within(d: defer.Deferred, seconds: float, reactor) -> defer.Deferred:
    return d.addTimeout(seconds, reactor)


class AuthOverTLS(unittest.TestCase):
    timeout = 20

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.pki = make_test_pki(Path(cls._tmp.name))

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def setUp(self):
        from twisted.internet import reactor
        self.reactor = reactor
        self.srp_store = MemorySrpStore({"pe-srp": "correct horse battery"})
        self.chap_store = MemoryChapStore({"pe-chap": b"chap secret 0123"})
        self.registrars = []
        self.services = []
        self.clients = []
        self.ports = []

    @defer.inlineCallbacks
    def tearDown(self):
        for service in self.services:
            if service.running:
                yield service.stopService()
        for client in self.clients:
            if client.channel is not None and not client.channel.closed:
                client.channel.abort()
                yield client.closed
        for port in self.ports:
            yield port.stopListening()
        for registrar in self.registrars:
            if registrar.running:
                yield registrar.stopService()

    # -- helpers
    def checkers(self, chap_backend=None) -> list:
        return [CertificateChecker(), PskChecker(), SrpChecker(self.srp_store, SERVER_SECRET),
                ChapChecker(chap_backend or self.chap_store)]

    @defer.inlineCallbacks
    def registrar(self, checkers="default", **kwargs):
        if checkers == "default":
            checkers = self.checkers()
        service = yield start_registrar(
            self.reactor, self.pki, checkers=checkers,
            settings=RegistrarSettings(server_id=random.randrange(1, 2**32),
                                       keepalive_interval=0.5, keepalive_timeout=0.5), **kwargs)
        self.registrars.append(service)
        return service

    def client_tls(self, name="localhost", **kw):
        return tls.client_options(name, [self.pki.ca.cert], **kw)  # no client certificate

    @defer.inlineCallbacks
    def connect(self, port: int, **kw) -> RawClient:
        client = yield connect_raw(self.reactor, port, self.client_tls(**kw))
        self.clients.append(client)
        return client

    def pe_service(self, registrars, authenticator) -> PoolElementService:
        pe = PoolElementService(
            self.reactor, H, TcpTransport(7, IPv4Address("127.0.0.1")), LeastUsedPolicy(1),
            registration_life=30,
            candidates=RegistrarCandidates(
                static=[f"127.0.0.1:{registrar_port(r)} localhost" for r in registrars]),
            tls_options_factory=lambda name: self.client_tls(name),
            hunt_options=dict(t5_initial=1.0, t5_max=2.0, attempt_timeout=2.0),
            channel_settings=ChannelSettings(heartbeat_interval=0.5, dead_after=2.0),
            authenticator=authenticator, hunt_retry=(0.2, 0.5))
        self.services.append(pe)
        return pe

    def pe_auth(self, identity, secret, *prefs) -> PeAuthenticator:
        return PeAuthenticator(self.reactor, identity, secret, preferences=prefs or (SRP, CHAP),
                               timeout=10.0)

    @defer.inlineCallbacks
    def register_raw(self, client: RawClient, pe_id: int):
        reply = yield within(client.request(AsapRegistration(H, make_pe(pe_id))), 10, self.reactor)
        return reply

    @defer.inlineCallbacks
    def transcript(self, port, identity, secret, *prefs):
        """Authenticate with a spy on both directions; returns (sent, received, result)."""
        client = yield self.connect(port)
        channel = client.channel
        sent, received = [], []
        original_send = channel.send

        def spy_send(message):
            sent.append(message)
            original_send(message)

        channel.send = spy_send
        d = self.pe_auth(identity, secret, *prefs).authenticate(channel)
        handler = channel.handler
        original_receive = handler.message_received

        def spy_receive(ch, message, now):
            received.append(message)
            original_receive(ch, message, now)

        handler.message_received = spy_receive
        try:
            result = yield within(d, 10, self.reactor)
        except AuthenticationError as exc:
            result = exc
        return client, sent, received, result

    # -- the PE library, end to end
    @defer.inlineCallbacks
    def test_pe_authenticates_with_srp_and_registers(self):
        registrar = yield self.registrar()
        pe = self.pe_service([registrar], self.pe_auth("pe-srp", "correct horse battery", SRP))
        pe.startService()
        yield within(pe.registered(), 10, self.reactor)
        entry = registrar.handlespace.get(H, pe.pe_id)
        self.assertEqual(entry.identity, "pe-srp")
        session = next(iter(registrar.core.channel_states))
        self.assertEqual((session.identity, session.admission.mechanism), ("pe-srp", SRP))
        self.assertEqual(registrar.authenticator.stats["succeeded"], 1)

    @defer.inlineCallbacks
    def test_pe_authenticates_with_chap_and_registers(self):
        registrar = yield self.registrar()
        pe = self.pe_service([registrar], self.pe_auth("pe-chap", b"chap secret 0123", CHAP, SRP))
        pe.startService()
        yield within(pe.registered(), 10, self.reactor)
        self.assertEqual(registrar.handlespace.get(H, pe.pe_id).identity, "pe-chap")
        self.assertEqual(self.srp_store.asked, [])

    @defer.inlineCallbacks
    def test_wrong_password_is_refused_and_creates_no_state(self):
        registrar = yield self.registrar()
        pe = self.pe_service([registrar], self.pe_auth("pe-srp", "wrong password", SRP))
        events = []
        pe.add_observer(events.append)
        pe.startService()
        with self.assertRaises(AuthenticationFailedError) as caught:
            yield within(pe.registered(), 10, self.reactor)
        self.assertEqual(caught.exception.event.code, ex.FAIL_AUTHENTICATION)
        self.assertFalse(caught.exception.unsupported)
        self.assertIn(caught.exception.event, events)
        self.assertEqual(len(registrar.handlespace), 0)
        self.assertEqual(registrar.core.stats["registrations"], 0)
        self.assertEqual(registrar.authenticator.stats["succeeded"], 0)
        # The registration the PE sent behind its proof is taken back: no
        # attempt counted, no home registrar left behind.
        self.assertIsNone(pe.core.home)
        self.assertEqual(pe.core.attempts, 0)

    @defer.inlineCallbacks
    def test_registration_before_authentication_is_refused(self):
        registrar = yield self.registrar()
        client = yield self.connect(registrar_port(registrar))
        reply = yield self.register_raw(client, 0x51)
        self.assertTrue(reply.reject)
        self.assertEqual(reply.error.causes[0].code, codes.CAUSE_SECURITY)
        yield within(self.pe_auth("pe-srp", "correct horse battery").authenticate(client.channel),
                     10, self.reactor)
        reply = yield self.register_raw(client, 0x51)
        self.assertFalse(reply.reject, reply)
        self.assertEqual(registrar.handlespace.get(H, 0x51).identity, "pe-srp")

    @defer.inlineCallbacks
    def test_unknown_identity_gets_the_same_answer_as_a_wrong_password(self):
        registrar = yield self.registrar()
        port = registrar_port(registrar)
        for prefs in ((SRP,), (CHAP,)):
            self.chap_store.secrets["pe-srp"] = b"some chap secret"
            _, sent_w, got_w, wrong = yield self.transcript(port, "pe-srp", "wrong", *prefs)
            _, sent_u, got_u, unknown = yield self.transcript(port, "nobody-xy", "wrong", *prefs)
            shape = lambda msgs: [(m.name, len(m.encode()), m.flags) for m in msgs]  # noqa: E731
            self.assertEqual(shape(got_w), shape(got_u))
            self.assertEqual(got_w[-1].encode(), got_u[-1].encode())
            self.assertEqual(type(got_w[-1]), AsapAuthFailure)
            self.assertEqual(wrong.event, unknown.event)
        self.assertEqual(len(registrar.handlespace), 0)

    @defer.inlineCallbacks
    def test_replayed_chap_response_is_rejected(self):
        registrar = yield self.registrar()
        port = registrar_port(registrar)
        # The genuine PE authenticates; the attacker records its CHAP response.
        genuine, sent, _, result = yield self.transcript(port, "pe-chap", b"chap secret 0123", CHAP)
        self.assertEqual(result.mechanism, CHAP)
        (captured,) = [m for m in sent if type(m) is AsapAuthChapResponse]
        # Replayed on the same channel: the challenge was single-use.
        genuine.send(captured)
        failure = yield within(genuine.next(), 10, self.reactor)
        self.assertEqual(type(failure), AsapAuthFailure)
        # Replayed on a new channel, for a new challenge (identifier copied).
        attacker = yield self.connect(port)
        offer = yield within(attacker.request(AsapAuthRequest()), 10, self.reactor)
        self.assertIn(CHAP, offer.mechanisms)
        challenge = yield within(attacker.request(AsapAuthHello(CHAP, "pe-chap")), 10, self.reactor)
        answer = yield within(
            attacker.request(AsapAuthChapResponse(challenge.identifier, captured.response)),
            10, self.reactor)
        self.assertEqual(type(answer), AsapAuthFailure)
        self.assertEqual(answer.code, ex.FAIL_AUTHENTICATION)
        self.assertEqual(answer.error.causes[0].code, codes.CAUSE_SECURITY)
        reply = yield self.register_raw(attacker, 0x66)
        self.assertTrue(reply.reject)
        self.assertEqual(reply.error.causes[0].code, codes.CAUSE_SECURITY)
        self.assertIsNone(registrar.handlespace.get(H, 0x66))

    @defer.inlineCallbacks
    def test_srp_exchange_relayed_across_two_tls_sessions_fails(self):
        """A man in the middle terminates the PE's TLS (with a certificate the PE
        accepts) and relays every exchange message verbatim over its own TLS
        session to the registrar: the channel bindings differ, so the registrar
        refuses the proof."""
        registrar = yield self.registrar()
        relay = Relay(self.reactor, registrar_port(registrar), self.client_tls())
        options = tls.server_options(self.pki.server.cert, self.pki.server.key, [self.pki.ca.cert],
                                     require_client_cert=False)
        factory = Factory.forProtocol(lambda: Channel(relay, self.reactor, ChannelSettings(),
                                                      tls=True))
        from twisted.protocols.tls import TLSMemoryBIOFactory
        port = yield endpoints.serverFromString(self.reactor, "tcp:0:interface=127.0.0.1").listen(
            TLSMemoryBIOFactory(options, False, factory))
        self.ports.append(port)
        pe_side = yield self.connect(port.getHost().port)
        with self.assertRaises(AuthenticationError) as caught:
            yield within(self.pe_auth("pe-srp", "correct horse battery", SRP)
                         .authenticate(pe_side.channel), 10, self.reactor)
        self.assertEqual(caught.exception.event.code, ex.FAIL_AUTHENTICATION)
        # The messages really went through: offer, challenge, failure relayed back.
        self.assertEqual([m.name for m in relay.to_pe],
                         ["ASAP_AUTH_OFFER", "ASAP_AUTH_SRP_CHALLENGE", "ASAP_AUTH_FAILURE"])
        self.assertEqual([m.name for m in relay.to_registrar],
                         ["ASAP_AUTH_REQUEST", "ASAP_AUTH_HELLO", "ASAP_AUTH_SRP_PROOF"])
        self.assertEqual(registrar.authenticator.stats["succeeded"], 0)
        self.assertTrue(all(s.identity is None for s in registrar.core.channel_states))
        # The relay cannot use its registrar channel: registration refused.
        reply = yield self.register_raw(relay.back, 0x77)
        self.assertTrue(reply.reject)
        self.assertEqual(reply.error.causes[0].code, codes.CAUSE_SECURITY)
        relay.close()
        # Control: the same PE talking to the registrar directly succeeds.
        direct = yield self.connect(registrar_port(registrar))
        yield within(self.pe_auth("pe-srp", "correct horse battery", SRP).authenticate(direct.channel),
                     10, self.reactor)

    @defer.inlineCallbacks
    def test_attempts_are_bounded_per_channel_and_per_identity_and_address(self):
        registrar = yield self.registrar(
            exchange_options={"max_attempts": 2},
            gate_policy=GatePolicy(attempts_per_identity_and_address=AttemptLimit(capacity=3,
                                                                                  refill_interval=600)))
        client = yield self.connect(registrar_port(registrar))
        yield within(client.request(AsapAuthRequest()), 10, self.reactor)
        answers = []
        for _ in range(2):
            challenge = yield within(client.request(AsapAuthHello(CHAP, "pe-chap")), 10, self.reactor)
            answer = yield within(client.request(
                AsapAuthChapResponse(challenge.identifier, b"\x00" * 16)), 10, self.reactor)
            answers.append((answer.code, answer.may_retry))
        self.assertEqual(answers, [(ex.FAIL_AUTHENTICATION, True), (ex.FAIL_AUTHENTICATION, False)])
        yield within(client.closed, 10, self.reactor)  # the registrar closed the channel
        # One more failure uses the last token of (pe-chap, 127.0.0.1); then even
        # the right secret is limited from this address (not from others:
        # tests/test_attacks_gate.py).
        _, _, _, third = yield self.transcript(registrar_port(registrar), "pe-chap", b"bad", CHAP)
        self.assertEqual(third.event.code, ex.FAIL_AUTHENTICATION)
        _, _, _, limited = yield self.transcript(registrar_port(registrar), "pe-chap",
                                                 b"chap secret 0123", CHAP)
        self.assertEqual(limited.event.code, ex.FAIL_RATE_LIMITED)
        self.assertTrue(limited.transient)
        self.assertEqual(len(registrar.handlespace), 0)

    @defer.inlineCallbacks
    def test_chap_backend_outage_fails_closed(self):
        registrar = yield self.registrar(self.checkers(chap_backend=DownVerifier()))
        authenticator = registrar.authenticator
        client, _, received, result = yield self.transcript(
            registrar_port(registrar), "pe-chap", b"chap secret 0123", CHAP)
        self.assertIsInstance(result, AuthenticationError)
        self.assertEqual(result.event.code, ex.FAIL_UNAVAILABLE)
        self.assertTrue(result.transient)
        self.assertEqual(received[-1].error.causes[0].code, codes.CAUSE_SECURITY)
        self.assertFalse(received[-1].may_retry)
        self.assertEqual(authenticator.stats["unavailable"], 1)
        self.assertEqual(self.flushLoggedErrors(), [])

    @defer.inlineCallbacks
    def test_registrar_without_the_extension_reports_unrecognized_message(self):
        registrar = yield self.registrar([CertificateChecker()])  # no SRP, no CHAP checker
        self.assertIsNone(registrar.authenticator)
        client = yield self.connect(registrar_port(registrar))
        request = AsapAuthRequest()
        reply = yield within(client.request(request), 10, self.reactor)
        self.assertIsInstance(reply, AsapError)
        cause = reply.error.causes[0]
        self.assertEqual(cause.code, codes.CAUSE_UNRECOGNIZED_MESSAGE)
        self.assertEqual(cause.info, request.encode())
        # The PE library learns that authentication is unsupported and stops.
        pe = self.pe_service([registrar], self.pe_auth("pe-srp", "correct horse battery"))
        pe.startService()
        with self.assertRaises(AuthenticationFailedError) as caught:
            yield within(pe.registered(), 10, self.reactor)
        self.assertTrue(caught.exception.unsupported)
        self.assertEqual(len(registrar.handlespace), 0)

    @defer.inlineCallbacks
    def test_failover_authenticates_again(self):
        first = yield self.registrar()
        second = yield self.registrar()
        pe = self.pe_service([first, second], self.pe_auth("pe-srp", "correct horse battery"))
        pe.startService()
        yield within(pe.registered(), 10, self.reactor)
        home = first if first.handlespace.get(H, pe.pe_id) is not None else second
        other = second if home is first else first
        again = pe.next_registration()
        yield home.stopService()
        event = yield within(again, 15, self.reactor)
        self.assertTrue(event.failover)
        self.assertEqual(other.handlespace.get(H, pe.pe_id).identity, "pe-srp")
        self.assertEqual(home.authenticator.stats["succeeded"], 1)
        self.assertEqual(other.authenticator.stats["succeeded"], 1)

    # -- identity changes on a channel (issue 11: the cache must not outlive the identity)
    @defer.inlineCallbacks
    def test_an_exchange_forgets_what_was_decided_for_the_anonymous_channel(self):
        from rserpool.wire import AsapHandleResolution

        authorizer = ScriptedAuthorizer({(None, "resolve", H): False, ("pe-srp", "resolve", H): True})
        registrar = yield self.registrar(authorizer=authorizer, gate_policy=GatePolicy(authorize_resolution=True))
        client = yield self.connect(registrar_port(registrar))
        refused = yield within(client.request(AsapHandleResolution(H)), 10, self.reactor)
        self.assertEqual(refused.error.causes[0].code, codes.CAUSE_SECURITY)
        yield within(self.pe_auth("pe-srp", "correct horse battery").authenticate(client.channel),
                     10, self.reactor)
        answer = yield within(client.request(AsapHandleResolution(H)), 10, self.reactor)
        # Asked again for pe-srp and allowed: the pool is empty, not forbidden.
        self.assertEqual(answer.error.causes[0].code, codes.CAUSE_UNKNOWN_POOL_HANDLE)
        self.assertEqual([(identity, action) for identity, _, action, _ in authorizer.calls],
                         [(None, "resolve"), ("pe-srp", "resolve")])

    @defer.inlineCallbacks
    def test_a_second_exchange_closes_the_channel_and_nothing_it_sent_is_used(self):
        # Anonymous registrations are allowed here, and pe-srp's "yes" for H
        # is remembered: a registration read together with a second (refused)
        # exchange must still be refused, not registered as anonymous.
        registrar = yield self.registrar(gate_policy=GatePolicy(allow_unauthenticated=True))
        client = yield self.connect(registrar_port(registrar))
        yield within(self.pe_auth("pe-srp", "correct horse battery").authenticate(client.channel),
                     10, self.reactor)
        first = yield self.register_raw(client, 0x81)
        self.assertFalse(first.reject, first)
        channel = client.channel
        burst = b"".join(channel.mapping.send_message(codes.PPID_ASAP, message.encode()) for message in (
            AsapAuthRequest(), AsapRegistration(H, make_pe(0x82))))
        channel.transport.write(burst)  # one TLS record: one read at the registrar
        failure = yield within(client.next(), 10, self.reactor)
        self.assertEqual((type(failure), failure.code), (AsapAuthFailure, ex.FAIL_PROTOCOL))
        yield within(client.closed, 10, self.reactor)
        self.assertIsNone(registrar.handlespace.get(H, 0x82))
        refusals = [m for m in client.messages if m.name == "ASAP_REGISTRATION_RESPONSE"]
        self.assertTrue(all(m.reject for m in refusals), refusals)

    @defer.inlineCallbacks
    def test_tls12_needs_the_extended_master_secret(self):
        registrar = yield self.registrar()
        port = registrar_port(registrar)
        client = yield self.connect(port, max_version=tls.TLSVersion.TLSv1_2)
        from rserpool.security.tls import negotiated_protocol_version
        self.assertEqual(negotiated_protocol_version(client.channel.transport), "TLSv1.2")
        # OpenSSL negotiates EMS by default: the binding is available.
        self.assertEqual(len(channel_binding(client.channel.transport)), 32)
        # Without EMS the registrar refuses with the channel-binding code and cause 0xa.
        from rserpool.security import _internals

        self.patch(_internals, "extended_master_secret", lambda connection: False)
        reply = yield within(client.request(AsapAuthRequest()), 10, self.reactor)
        self.assertEqual(type(reply), AsapAuthFailure)
        self.assertEqual(reply.code, 7)
        self.assertEqual(reply.error.causes[0].code, codes.CAUSE_SECURITY)


    # -- a PE sends its registration right behind its CHAP response or SRP
    # proof; the registrar handles it only after its verdict
    @defer.inlineCallbacks
    def held_behind_a_slow_verdict(self, count: int = 1):
        from rserpool.service.auth import RegistrarAuthenticator

        verifier = HeldVerifier()
        registrar = yield self.registrar(checkers=[CertificateChecker(), ChapChecker(verifier)])
        held = defer.Deferred()
        original = RegistrarAuthenticator.hold

        def spy(authenticator, channel, message):
            kept = original(authenticator, channel, message)
            if not held.called and (not kept or len(authenticator._channels[channel].held) == count):
                held.callback(kept)
            return kept

        self.patch(RegistrarAuthenticator, "hold", spy)
        client = yield self.connect(registrar_port(registrar))
        registrations = [AsapRegistration(H, make_pe(0x90 + i)) for i in range(count)]

        def behind_the_response():
            for message in registrations:
                client.channel.send(message)

        result = self.pe_auth("pe-chap", b"chap secret 0123", CHAP).authenticate(
            client.channel, then=behind_the_response)
        yield within(verifier.asked, 10, self.reactor)
        kept = yield within(held, 10, self.reactor)
        return registrar, verifier, client, result, kept

    @defer.inlineCallbacks
    def test_the_registration_waits_for_the_verdict_and_has_the_proved_identity(self):
        registrar, verifier, client, result, kept = yield self.held_behind_a_slow_verdict()
        self.assertTrue(kept)
        self.assertIsNone(registrar.handlespace.get(H, 0x90))  # nothing before the verdict
        from rserpool.identity import Identity

        verifier.verdicts[0].callback(Identity.create("pe-chap", CHAP))
        yield within(result, 10, self.reactor)
        answer = yield within(client.next(), 10, self.reactor)
        self.assertEqual(answer.name, "ASAP_REGISTRATION_RESPONSE")
        self.assertFalse(answer.reject, answer)
        self.assertEqual(registrar.handlespace.get(H, 0x90).identity, "pe-chap")

    @defer.inlineCallbacks
    def test_a_registration_behind_a_refused_response_is_refused(self):
        registrar, verifier, client, result, _ = yield self.held_behind_a_slow_verdict()
        verifier.verdicts[0].callback(None)  # wrong response
        failure = yield within(self.assertFailure(result, AuthenticationError), 10, self.reactor)
        self.assertEqual(failure.event.code, ex.FAIL_AUTHENTICATION)
        yield within(client.closed, 10, self.reactor)
        self.assertIsNone(registrar.handlespace.get(H, 0x90))
        self.assertEqual(registrar.handlespace.identity_count("pe-chap"), 0)

    @defer.inlineCallbacks
    def test_too_many_messages_behind_a_step_close_the_channel(self):
        registrar, verifier, client, result, kept = yield self.held_behind_a_slow_verdict(
            count=registrar_limit() + 1)
        self.assertFalse(kept)
        yield within(client.closed, 10, self.reactor)
        yield within(self.assertFailure(result, AuthenticationError), 10, self.reactor)
        from rserpool.identity import Identity

        verifier.verdicts[0].callback(Identity.create("pe-chap", CHAP))  # too late: nothing is handled
        self.assertEqual(len(registrar.handlespace), 0)


def registrar_limit() -> int:
    return GatePolicy().max_held_per_channel


class Relay:
    """A man in the middle: a TLS server for the PE, a TLS client to the registrar,
    forwarding every message verbatim both ways."""

    def __init__(self, reactor, registrar_port: int, creator) -> None:
        self.reactor = reactor
        self.registrar_port = registrar_port
        self.creator = creator
        self.front: Channel | None = None
        self.back: RawClient | None = None
        self.to_registrar: list = []
        self.to_pe: list = []
        self._queue: list = []

    def channel_ready(self, channel) -> None:
        self.front = channel
        d = connect_raw(self.reactor, self.registrar_port, self.creator)

        def connected(client: RawClient) -> None:
            self.back = client
            original = client.message_received

            def forward(ch, message, now):
                if message.name.startswith("ASAP_AUTH"):
                    self.to_pe.append(message)
                    self.front.send(message)
                else:
                    original(ch, message, now)

            client.message_received = forward
            for message in self._queue:
                self._to_registrar(message)
            self._queue = []

        d.addCallback(connected)

    def _to_registrar(self, message) -> None:
        self.to_registrar.append(message)
        self.back.send(message)

    def message_received(self, channel, message, now) -> None:
        if self.back is None:
            self._queue.append(message)
        else:
            self._to_registrar(message)

    def wire_error(self, channel, ppid, error, now) -> None:
        pass

    def data_received(self, channel, ppid, payload, now) -> None:
        pass

    def channel_closed(self, channel, reason) -> None:
        pass

    def close(self) -> None:
        if self.front is not None:
            self.front.abort()
        if self.back is not None and self.back.channel is not None:
            self.back.channel.abort()


def test_read_secret(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(b"s3cret\n")
    path.chmod(0o600)
    assert read_secret(str(path)) == b"s3cret"
    path.chmod(0o644)
    with pytest.raises(ValueError):
        read_secret(str(path))


def test_authentication_error_classification():
    assert AuthenticationError(AuthenticationFailed("x", ex.FAIL_UNAVAILABLE)).transient
    assert not AuthenticationError(AuthenticationFailed("x", ex.FAIL_AUTHENTICATION)).transient
    assert AuthenticationError(AuthenticationFailed("x", unsupported=True)).unsupported


def test_authenticator_offers_only_mechanisms_with_a_checker():
    from twisted.internet.task import Clock

    from rserpool.gate import Gate

    only_chap = RegistrarAuthenticator(Clock(), Gate(), Authenticator([ChapChecker(MemoryChapStore())]))
    assert only_chap.mechanisms == (CHAP,)
    both = RegistrarAuthenticator(Clock(), Gate(), Authenticator(
        [SrpChecker(MemorySrpStore(), SERVER_SECRET), ChapChecker(MemoryChapStore())]))
    assert both.mechanisms == (SRP, CHAP)
    with pytest.raises(ValueError):
        RegistrarAuthenticator(Clock(), Gate(), Authenticator([CertificateChecker()]))


# -- the exchange's timer, on a deterministic clock -----------------------------------------


class _QuietChannel:
    """What RegistrarAuthenticator uses of a channel: its state, sends, close."""

    def __init__(self, admission) -> None:
        from types import SimpleNamespace

        self.state = SimpleNamespace(admission=admission)
        self.transport = None
        self.sent: list = []
        self.closed = False

    def send(self, message) -> None:
        self.sent.append(message)

    def close(self) -> None:
        self.closed = True

    abort = close


def test_the_exchange_timer_ends_a_silent_step_and_then_the_exchange(monkeypatch):
    from twisted.internet import task

    from rserpool.gate import Gate
    from rserpool.service import auth as auth_module

    monkeypatch.setattr(auth_module, "channel_binding", lambda transport: b"\x01" * 32)
    clock = task.Clock()
    clock.advance(1000.0)
    gate = Gate(GatePolicy(attempts_per_identity_and_address=AttemptLimit(capacity=100, refill_interval=1.0),
                           attempts_per_address=AttemptLimit(capacity=100, refill_interval=1.0)))
    admission = gate.open_channel("asap", "127.0.0.1", True, clock.seconds())
    gate.identified(admission, None, clock.seconds())
    authenticator = RegistrarAuthenticator(
        clock, gate, Authenticator([ChapChecker(MemoryChapStore({"pe-chap": b"chap secret 0123"}))]),
        step_lifetime=30.0, exchange_lifetime=100.0, max_attempts=10)
    channel = _QuietChannel(admission)

    def receive(message) -> None:
        authenticator.message_received(channel, message, clock.seconds())

    receive(AsapAuthRequest())
    receive(AsapAuthHello(CHAP, "pe-chap"))
    assert [m.name for m in channel.sent] == ["ASAP_AUTH_OFFER", "ASAP_AUTH_CHAP_CHALLENGE"]
    clock.advance(29.9)
    assert len(channel.sent) == 2 and not channel.closed  # not yet
    clock.advance(0.2)  # the challenge's lifetime is over: a failure that may be retried
    (failure,) = channel.sent[2:]
    assert (failure.code, failure.may_retry) == (ex.FAIL_TIMEOUT, True) and not channel.closed
    # A new hello later: a new step deadline, later than the old timer's.
    clock.advance(10.0)
    receive(AsapAuthHello(CHAP, "pe-chap"))
    assert channel.sent[-1].name == "ASAP_AUTH_CHAP_CHALLENGE"
    clock.advance(29.9)
    assert channel.sent[-1].name == "ASAP_AUTH_CHAP_CHALLENGE"
    clock.advance(0.2)
    assert (channel.sent[-1].code, channel.sent[-1].may_retry) == (ex.FAIL_TIMEOUT, True)
    # The exchange's own lifetime (100 s from the request) ends it for good.
    receive(AsapAuthHello(CHAP, "pe-chap"))
    clock.advance(100.0 - 70.2 - 0.1)
    assert not channel.closed
    clock.advance(0.2)
    assert channel.closed and (channel.sent[-1].code, channel.sent[-1].may_retry) == (ex.FAIL_TIMEOUT, False)
    assert not clock.getDelayedCalls()  # and no timer is left behind
