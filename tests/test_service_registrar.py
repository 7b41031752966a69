"""The registrar service over real loopback TLS."""

from __future__ import annotations

import tempfile
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.trial import unittest
from zope.interface import implementer

from rserpool.asap.registrar import RegistrarSettings
from rserpool.wire import (
    AsapDeregistration, AsapDeregistrationResponse, AsapHandleResolution,
    AsapHandleResolutionResponse, AsapRegistration, AsapRegistrationResponse, AsapError,
    LeastUsedPolicy,
)
from rserpool.wire.codes import CAUSE_SECURITY, CAUSE_UNKNOWN_POOL_HANDLE, PPID_ASAP
from rserpool.errors import BackendUnavailable
from rserpool.interfaces import ICertificateCredentials, IPoolAuthorizer
from rserpool.testing import ScriptedAuthorizer
from tests.asaphelpers import (
    AllowAll, RegistrarClientsMixin, make_pe, start_registrar,
)
from tests.tlshelpers import make_test_pki


class RegistrarOverTLS(RegistrarClientsMixin, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.pki = make_test_pki(Path(cls._tmp.name))

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    @defer.inlineCallbacks
    def setUp(self):
        self.authorizer = AllowAll()
        self.registrar = yield start_registrar(reactor, self.pki, authorizer=self.authorizer)
        self.clients = []

    @defer.inlineCallbacks
    def tearDown(self):
        yield self.close_clients()
        yield self.registrar.stopService()

    @defer.inlineCallbacks
    def test_register_resolve_deregister(self):
        pe = yield self.connect(self.pki.pe1)
        reply = yield pe.request(AsapRegistration(b"echo", make_pe(0x1234, policy=LeastUsedPolicy(5))))
        self.assertIsInstance(reply, AsapRegistrationResponse)
        self.assertFalse(reply.reject, reply)
        self.assertEqual(reply.pe_id, 0x1234)
        self.assertEqual(self.authorizer.calls, [("pe1", "register", b"echo")])
        entry = self.registrar.handlespace.get(b"echo", 0x1234)
        self.assertEqual(entry.identity, "pe1")
        self.assertEqual(entry.home_server_id, self.registrar.server_id)

        pu = yield self.connect()
        answer = yield pu.request(AsapHandleResolution(b"echo"))
        self.assertIsInstance(answer, AsapHandleResolutionResponse)
        self.assertEqual([p.pe_id for p in answer.pool_elements], [0x1234])
        self.assertEqual(answer.pool_elements[0].home_server_id, self.registrar.server_id)
        self.assertEqual(answer.policy, LeastUsedPolicy(5))

        missing = yield pu.request(AsapHandleResolution(b"nope"))
        self.assertEqual(missing.error.causes[0].code, CAUSE_UNKNOWN_POOL_HANDLE)

        gone = yield pe.request(AsapDeregistration(b"echo", 0x1234))
        self.assertIsInstance(gone, AsapDeregistrationResponse)
        self.assertIsNone(gone.error)
        self.assertIsNone(self.registrar.handlespace.get(b"echo", 0x1234))

    @defer.inlineCallbacks
    def test_unauthenticated_registration_creates_no_state(self):
        anonymous = yield self.connect()
        for pe_id in range(1, 51):
            reply = yield anonymous.request(AsapRegistration(b"echo", make_pe(pe_id)))
            self.assertTrue(reply.reject)
            self.assertEqual(reply.error.causes[0].code, CAUSE_SECURITY)
        self.assertEqual(len(self.registrar.handlespace), 0)
        self.assertEqual(self.authorizer.calls, [])

    @defer.inlineCallbacks
    def test_a_registration_without_any_authentication_is_logged_once(self):
        """The refusal line names the cause, the client's address (host:port,
        as every registrar line writes it) and its identity, once each."""
        from twisted.logger import formatEvent, globalLogPublisher

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        anonymous = yield self.connect()
        reply = yield anonymous.request(AsapRegistration(b"echo", make_pe(0x51)))
        self.assertEqual(reply.error.causes[0].code, CAUSE_SECURITY)
        port = anonymous.channel.transport.getHost().port
        lines = [formatEvent(e) for e in events if "refused" in formatEvent(e)]
        self.assertEqual(lines, [f"refused register in pool echo from 127.0.0.1:{port} (anonymous): "
                                 "no authenticated identity; cause 0xa"])

    @defer.inlineCallbacks
    def test_spoofed_deregistration_refused(self):
        owner = yield self.connect(self.pki.pe1)
        reply = yield owner.request(AsapRegistration(b"echo", make_pe(77)))
        self.assertFalse(reply.reject)
        attacker = yield self.connect(self.pki.pe2)
        refused = yield attacker.request(AsapDeregistration(b"echo", 77))
        self.assertEqual(refused.error.causes[0].code, CAUSE_SECURITY)
        self.assertIsNotNone(self.registrar.handlespace.get(b"echo", 77))
        hijack = yield attacker.request(AsapRegistration(b"echo", make_pe(77, port=9999)))
        self.assertTrue(hijack.reject)
        self.assertEqual(hijack.error.causes[0].code, CAUSE_SECURITY)
        self.assertEqual(self.registrar.handlespace.get(b"echo", 77).payload.user_transport.port, 7)

    @defer.inlineCallbacks
    def test_malformed_input_reported_and_other_clients_unaffected(self):
        good = yield self.connect(self.pki.pe1)
        bad = yield self.connect(self.pki.pe2)
        # An unknown message type with the "report" bit: ASAP_ERROR cause 0x2.
        bad.channel.send_encoded(PPID_ASAP, bytes([0x7F, 0, 0, 8, 1, 2, 3, 4]))
        report = yield bad.next()
        self.assertIsInstance(report, AsapError)
        self.assertEqual(report.error.causes[0].code, 0x2)
        # A truncated registration: cause 0x3 (invalid values), channel stays up.
        bad.channel.send_encoded(PPID_ASAP, bytes([0x01, 0, 0, 12, 0, 9, 0, 8, 0x65, 0x63]))
        report = yield bad.next()
        self.assertIsInstance(report, AsapError)
        reply = yield good.request(AsapRegistration(b"echo", make_pe(5)))
        self.assertFalse(reply.reject)
        # Garbage framing kills only the offender's connection.
        bad.channel.transport.write(b"\xff\x00\x00\x08\x00\x00\x00\x00")
        yield bad.closed
        answer = yield good.request(AsapHandleResolution(b"echo"))
        self.assertEqual([p.pe_id for p in answer.pool_elements], [5])

    @defer.inlineCallbacks
    def test_registered_address_must_be_the_channels(self):
        pe = yield self.connect(self.pki.pe1)
        reply = yield pe.request(AsapRegistration(b"echo", make_pe(9, address="192.0.2.7")))
        self.assertTrue(reply.reject)
        self.assertEqual(len(self.registrar.handlespace), 0)

    @defer.inlineCallbacks
    def test_certificate_identity_is_cached_by_certificate(self):
        first = yield self.connect(self.pki.pe1)
        second = yield self.connect(self.pki.pe1)
        other = yield self.connect(self.pki.pe2)
        for client in (first, second, other):  # a round trip: the server side is ready
            yield client.request(AsapHandleResolution(b"nothing"))
        identities = sorted(c.state.identity for c in self.registrar.channels if c.state is not None)
        self.assertEqual(identities, ["pe1", "pe1", "pe2"])
        checker = self.registrar.checkers.checkers[ICertificateCredentials]
        self.assertEqual(len(checker.names), 2)  # one entry per certificate

    @defer.inlineCallbacks
    def test_identified_at_once_no_input_is_held_and_only_anonymous_channels_can_be_evicted(self):
        pe = yield self.connect(self.pki.pe1)
        anonymous = yield self.connect()
        for client in (pe, anonymous):  # a round trip: the server side is ready
            yield client.request(AsapHandleResolution(b"nothing"))
        self.assertEqual(self.registrar._held, {})  # the certificate's identity was known at once
        indexed = {c.state.identity: getattr(c, "slot_key", None) for c in self.registrar.channels}
        self.assertEqual(indexed, {"pe1": None, None: "127.0.0.1"})
        self.assertEqual(self.registrar.eviction.by_key, {"127.0.0.1": {c for c in self.registrar.channels
                                                                      if c.state.identity is None}})


    @defer.inlineCallbacks
    def test_routine_pe_changes_are_counted_and_summed_up_once_a_minute(self):
        # Two written log lines per session cost about 200 us (issue 12): by
        # default registrations and routine removals are counted instead.
        from twisted.logger import formatEvent, globalLogPublisher

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        for pe_id in (0xAB1, 0xAB2):
            pe = yield self.connect(self.pki.pe1)
            reply = yield pe.request(AsapRegistration(b"echo", make_pe(pe_id)))
            self.assertFalse(reply.reject)
            (server_side,) = self.registrar.channels
            noticed = server_side.closed_deferred()
            pe.channel.abort()
            yield noticed
        lines = [formatEvent(e) for e in events if e.get("log_namespace") == "rserpool.service.registrar"]
        self.assertFalse([line for line in lines if "00000ab" in line])
        self.assertEqual(self.registrar.pe_log.counts["registered"], 2)
        self.registrar.pe_log.summary()
        (summary,) = [formatEvent(e) for e in events if "PEs in the last" in formatEvent(e)]
        self.assertEqual(summary, "PEs in the last 60 s: 2 registered, 2 left (2 ASAP channel lost); "
                                  "0 in the handlespace")
        self.registrar.pe_log.summary()  # nothing new: no line
        self.assertEqual(len([e for e in events if "PEs in the last" in formatEvent(e)]), 1)

    @defer.inlineCallbacks
    def test_a_removal_is_logged_once(self):
        from twisted.logger import formatEvent, globalLogPublisher

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.registrar.pe_log.every_change = True  # one line per PE (--log-level debug)
        pe = yield self.connect(self.pki.pe1)
        reply = yield pe.request(AsapRegistration(b"echo", make_pe(0xABC)))
        self.assertFalse(reply.reject)
        (server_side,) = self.registrar.channels
        noticed = server_side.closed_deferred()  # fires after the registrar's handler ran
        pe.channel.abort()
        yield pe.closed
        yield noticed
        self.assertEqual(len(self.registrar.handlespace), 0)
        lines = [formatEvent(e) for e in events if e.get("log_namespace") == "rserpool.service.registrar"]
        self.assertEqual(len([line for line in lines if "00000abc" in line and "left pool" in line]), 1)
        self.assertFalse([line for line in lines if "removed PE" in line])


    @defer.inlineCallbacks
    def test_revoking_an_identity_closes_its_live_channels_and_removes_its_pes_at_once(self):
        pe1 = yield self.connect(self.pki.pe1)
        other = yield self.connect(self.pki.pe2)
        for client, pe_id in ((pe1, 0x91), (other, 0x92)):
            reply = yield client.request(AsapRegistration(b"echo", make_pe(pe_id)))
            self.assertFalse(reply.reject, reply)
        self.registrar.revoke(identity="pe1", reason="certificate revoked (test)")
        # At once, before the channel has even closed: resolutions no longer hand it out.
        self.assertIsNone(self.registrar.handlespace.get(b"echo", 0x91))
        self.assertIsNotNone(self.registrar.handlespace.get(b"echo", 0x92))
        yield pe1.closed
        answer = yield other.request(AsapHandleResolution(b"echo"))
        self.assertEqual([pe.pe_id for pe in answer.pool_elements], [0x92])


class AuthorizeOutcomes(unittest.TestCase):
    """``RegistrarService._authorize``: the gate's question goes to the
    authorizer as it is (identity, groups, action, handle); plain values are
    answered at once, Deferreds are waited for, and a failure of either kind
    is no decision (None), never a "no"."""

    def make(self, authorizer):
        from twisted.internet.task import Clock

        from rserpool.gate import AskAuthorizer
        from rserpool.service.registrar import RegistrarService

        service = RegistrarService(RegistrarSettings(server_id=1), reactor=Clock(), listen=(),
                                   tls_options=object(), authorizer=authorizer)
        answers = []

        class Core:
            def authorization_done(self, ask, allowed, now, reason=""):
                answers.append((ask, allowed, reason))
                return []

        service.core = Core()
        ask = AskAuthorizer(7, object(), "register", "pe1", frozenset({"g"}), b"echo", 1)
        return service, answers, ask

    def test_plain_values_answer_at_once(self):
        authorizer = ScriptedAuthorizer({("pe1", "register", b"echo"): True})
        service, answers, ask = self.make(authorizer)
        service._authorize(ask)
        self.assertEqual(authorizer.calls, [("pe1", frozenset({"g"}), "register", b"echo")])
        self.assertEqual(answers, [(ask, True, "")])

    def test_truthy_non_true_is_no(self):
        @implementer(IPoolAuthorizer)
        class Authorizer:
            def authorize(self, identity, groups, action, handle):
                return 1

        service, answers, ask = self.make(Authorizer())
        service._authorize(ask)
        self.assertEqual(answers, [(ask, False, "")])

    def test_deferred_answer_is_waited_for(self):
        authorizer = ScriptedAuthorizer({("pe1", "register", b"echo"): True}, deferred=True)
        service, answers, ask = self.make(authorizer)
        service._authorize(ask)
        self.assertEqual(answers, [])
        authorizer.fire_pending()
        self.assertEqual(answers, [(ask, True, "")])

    def test_failures_are_no_decision(self):
        @implementer(IPoolAuthorizer)
        class Boom:
            def authorize(self, identity, groups, action, handle):
                raise RuntimeError("backend broken")

        outage = ScriptedAuthorizer({("pe1", "register", b"echo"): BackendUnavailable("RADIUS down")})
        for authorizer in (Boom(), outage):
            service, answers, ask = self.make(authorizer)
            service._authorize(ask)
            self.assertEqual([(a, allowed) for a, allowed, _ in answers], [(ask, None)])
        self.assertEqual(answers[0][2], "RADIUS down")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)  # the unexpected one only

    def test_an_authorizer_without_the_interface_is_refused(self):
        class Duck:
            def authorize(self, identity, groups, action, handle):
                return True

        with self.assertRaises(TypeError):
            self.make(Duck())
