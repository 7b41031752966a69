"""Revoked PE certificates against the registrar, over real loopback TLS.

- CRL: the handshake itself is refused (no session, no state).
- OCSP (``openssl ocsp`` as the responder): the registrar opens no session
  before the answer; REVOKED closes the channel before any registration is
  processed; a dead responder is allowed under soft-fail and refused under
  hard-fail.
- The gate's queue while a check is pending (a controllable fake gate).
- ``CrlMonitor``: reload on change and expiry warnings (task.Clock).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from twisted.internet import defer, endpoints, reactor, task
from twisted.internet.protocol import Factory
from twisted.trial import unittest

from rserpool.asap.registrar import RegistrarSettings
from rserpool.gate import GatePolicy
from rserpool.security import pki as pkimod
from rserpool.security import tls
from rserpool.security.ocsp import FailurePolicy, OcspCache, OcspDecision, OcspStatus
from rserpool.security.ocsp_client import OcspChecker
from rserpool.security.revocation import CrlMonitor, OcspMode, RevocationGate, crl_warning, find_issuer
from rserpool.security.crl import crl_info
from rserpool.service.channel import Channel, ChannelSettings
from rserpool.service.registrar import RegistrarService
from rserpool.wire import AsapRegistration, AsapRegistrationResponse
from tests.asaphelpers import AllowAll, RawClient, make_pe, registrar_port
from tests.conftest import require_tool
from tests.test_security_ocsp_integration import free_port, index_line, probe
from tests.tlshelpers import make_test_pki

H = b"echo"
STARTUP_ATTEMPTS = 200


class EagerPe(RawClient):
    """Sends a registration the moment its side of the channel is up (with
    TLS 1.3 that is before it knows whether the server accepted it)."""

    def __init__(self, pe_id: int) -> None:
        super().__init__()
        self.pe_id = pe_id

    def channel_ready(self, channel: Channel) -> None:
        super().channel_ready(channel)
        channel.send(AsapRegistration(H, make_pe(self.pe_id)))


def connect(port: int, creator, client: RawClient) -> defer.Deferred:
    """Connect ``client``; fires with it once the TCP connection is made."""
    factory = Factory.forProtocol(lambda: Channel(client, reactor, ChannelSettings(), tls=True, initiator=True))
    endpoint = endpoints.wrapClientTLS(creator, endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port))
    return endpoint.connect(factory).addCallback(lambda _: client)


def first_of(*deferreds: defer.Deferred) -> defer.Deferred:
    return defer.DeferredList(list(deferreds), fireOnOneCallback=True, fireOnOneErrback=True,
                              consumeErrors=True)


class _RegistrarTest(unittest.TestCase):
    timeout = 60

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.dir = Path(cls._tmp.name)
        cls.pki = make_test_pki(cls.dir)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def setUp(self):
        self.registrars: list[RegistrarService] = []
        self.clients: list[RawClient] = []
        self.authorizer = AllowAll()

    @defer.inlineCallbacks
    def tearDown(self):
        for client in self.clients:
            if client.channel is not None and not client.channel.closed:
                client.channel.abort()
            if client.channel is not None:
                yield client.closed
        for registrar in self.registrars:
            yield registrar.stopService()

    @defer.inlineCallbacks
    def start(self, *, crls=(), revocation=None, **kwargs):
        options = tls.server_options(self.pki.server.cert, self.pki.server.key, [self.pki.ca.cert],
                                     require_client_cert=False, crls=crls)
        registrar = RegistrarService(
            RegistrarSettings(server_id=0x1717), reactor=reactor, listen=["tcp:0:interface=127.0.0.1"],
            tls_options=options, authorizer=self.authorizer, revocation=revocation, **kwargs)
        yield registrar.startService()
        self.registrars.append(registrar)
        return registrar

    def creator(self, cert):
        return tls.client_options("localhost", [self.pki.ca.cert], client_cert=cert.pair)

    @defer.inlineCallbacks
    def eager(self, registrar, cert, pe_id):
        """An EagerPe; fires with (client, reply or None) once it got an answer or was closed."""
        client = EagerPe(pe_id)
        self.clients.append(client)
        yield connect(registrar_port(registrar), self.creator(cert), client)
        reply = client.next()
        reply.addErrback(lambda _: None)
        outcome = yield first_of(reply, client.closed)
        result, index = outcome
        return client, (result if index == 0 else None)

    def assert_untouched(self, registrar):
        self.assertEqual(len(registrar.handlespace), 0)
        self.assertEqual(self.authorizer.calls, [])
        self.assertEqual(registrar.core.stats["registrations"], 0)
        self.assertEqual(registrar.core.sessions, set())

    @defer.inlineCallbacks
    def assert_registers(self, registrar, cert, pe_id):
        client, reply = yield self.eager(registrar, cert, pe_id)
        self.assertIsInstance(reply, AsapRegistrationResponse)
        self.assertFalse(reply.reject, reply)
        self.assertIsNotNone(registrar.handlespace.get(H, pe_id))
        return client


class CrlRevocation(_RegistrarTest):
    @defer.inlineCallbacks
    def test_revoked_certificate_fails_the_handshake(self):
        registrar = yield self.start(crls=[self.pki.crl_revoked])
        client, reply = yield self.eager(registrar, self.pki.pe_revoked, 0x10)
        self.assertIsNone(reply)
        self.assertTrue(client.closed.called)
        self.assert_untouched(registrar)
        self.assertEqual(registrar.channels, {})
        # A good certificate passes the same registrar.
        yield self.assert_registers(registrar, self.pki.pe1, 0x11)
        self.assertEqual(self.authorizer.calls, [("pe1", "register", H)])

    @defer.inlineCallbacks
    def test_crl_reload_takes_effect_on_new_handshakes(self):
        crl_path = self.dir / "live-crl.pem"
        crl_path.write_bytes(self.pki.crl_empty.read_bytes())
        options = tls.ReloadableServerOptions(tls.server_options(
            self.pki.server.cert, self.pki.server.key, [self.pki.ca.cert], require_client_cert=False,
            crls=[crl_path]))
        registrar = RegistrarService(
            RegistrarSettings(server_id=0x1718), reactor=reactor, listen=["tcp:0:interface=127.0.0.1"],
            tls_options=options, authorizer=self.authorizer)
        yield registrar.startService()
        self.registrars.append(registrar)
        monitor = CrlMonitor(reactor, [str(crl_path)], lambda crls: options.reload(crls=crls), interval=3600)
        yield self.assert_registers(registrar, self.pki.pe_revoked, 0x20)
        # The CA publishes the CRL that revokes it; the monitor notices.
        crl_path.write_bytes(self.pki.crl_revoked.read_bytes())
        os.utime(crl_path, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
        monitor.check()
        self.assertEqual(monitor.reloads, 1)
        client, reply = yield self.eager(registrar, self.pki.pe_revoked, 0x21)
        self.assertIsNone(reply)
        self.assertIsNone(registrar.handlespace.get(H, 0x21))


class ShippedConfigurationChecksRevocation(unittest.TestCase):
    """etc/registrar.ini as shipped (development PKI): a CRL is loaded from the
    start, so revoking the development PE certificate locks it out of new
    handshakes once the monitor reloads, and the reload is an event."""

    timeout = 60

    @defer.inlineCallbacks
    def test_revoked_development_certificate_is_refused(self):
        from rserpool.config import load_config
        from rserpool.security import devpki
        from rserpool.security.revocation import CrlMonitorService
        from rserpool.tap import build_registrar
        from tests.shipped import shipped_ini

        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        root = Path(tmp.name)
        registrar = build_registrar(load_config(str(shipped_ini(root))), reactor)
        yield defer.maybeDeferred(registrar.startService)
        self.addCleanup(registrar.stopService)
        pki_dir = root / "var" / "pki"
        monitors = [s.monitor for s in registrar if isinstance(s, CrlMonitorService)]
        self.assertEqual([m.paths for m in monitors], [(str(pki_dir / "crl.pem"),)])
        (monitor,) = monitors
        self.assertEqual([len(list(crl)) for crl in monitor.crls], [0])  # empty at first
        events = []
        monitor.add_reload_listener(events.append)
        ca = pkimod.load_certificate(pki_dir / "ca.pem")
        creator = lambda name: tls.client_options(  # noqa: E731
            "localhost", [ca], client_cert=(pki_dir / f"{name}.pem", pki_dir / f"{name}.key"))

        @defer.inlineCallbacks
        def attempt(name, pe_id):
            client = EagerPe(pe_id)
            yield connect(registrar_port(registrar), creator(name), client)
            reply = client.next()
            reply.addErrback(lambda _: None)
            result, index = yield first_of(reply, client.closed)
            if client.channel is not None and not client.channel.closed:
                client.channel.close()
                yield client.closed
            return result if index == 0 else None

        before = yield attempt("pe", 0x31)
        self.assertIsInstance(before, AsapRegistrationResponse)
        self.assertFalse(before.reject, before)
        # The operator revokes the development PE certificate.
        pe_cert = pkimod.load_certificate(pki_dir / "pe.pem")
        devpki.revoke_dev_certificate(pki_dir, pe_cert.serial_number, datetime.now(timezone.utc))
        os.utime(pki_dir / "crl.pem", ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
        monitor.check()
        self.assertEqual(len(events), 1)
        self.assertTrue(monitor.revoked(pe_cert, ca))
        after = yield attempt("pe", 0x32)
        self.assertIsNone(after)
        self.assertIsNone(registrar.handlespace.get(H, 0x32))
        # The PU certificate (not revoked) still completes its handshake.
        pu = yield attempt("pu", 0x33)
        self.assertIsNotNone(pu)
        self.assertFalse(monitor.revoked(pkimod.load_certificate(pki_dir / "pu.pem"), ca))


class _OcspResponder(_RegistrarTest):
    """``openssl ocsp`` on a free loopback port (pe1 good, pe_revoked revoked)."""

    @pytest.fixture(autouse=True)
    def _openssl(self) -> None:
        self.openssl = require_tool("openssl")

    def setUp(self):
        super().setUp()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.work = Path(tempfile.mkdtemp(prefix="rserpool-revocation-"))
        self.addCleanup(lambda: __import__("shutil").rmtree(self.work, True))
        revoked_at = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
        (self.work / "index.txt").write_text(
            index_line(self.pki.ocsp.issued.certificate)
            + index_line(self.pki.pe1.issued.certificate)
            + index_line(self.pki.pe_revoked.issued.certificate, revoked_at, "keyCompromise"))
        self.process = None

    def start_responder(self):
        log = open(self.work / "responder.log", "wb")
        self.addCleanup(log.close)
        self.process = subprocess.Popen(
            [self.openssl, "ocsp", "-index", str(self.work / "index.txt"), "-port", str(self.port),
             "-rsigner", str(self.pki.ocsp.cert), "-rkey", str(self.pki.ocsp.key),
             "-CA", str(self.pki.ca.cert), "-nmin", "5", "-ignore_err"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.addCleanup(self.stop_responder)
        for _ in range(STARTUP_ATTEMPTS):
            if self.process.poll() is not None:
                self.fail("openssl ocsp exited: " + (self.work / "responder.log").read_text())
            if probe(self.port):
                return
            time.sleep(0.025)
        self.fail("openssl ocsp did not start")

    def stop_responder(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=10)

    def gate(self, mode: OcspMode) -> RevocationGate:
        checker = OcspChecker(reactor, timeout=5.0, policy=mode.policy, responder_override=self.url,
                              cache=OcspCache())
        return RevocationGate(checker, [self.pki.ca.issued.certificate])


@pytest.mark.integration
class OcspRevocation(_OcspResponder):
    @defer.inlineCallbacks
    def test_revoked_by_ocsp_is_closed_before_its_registration_is_processed(self):
        self.start_responder()
        gate = self.gate(OcspMode.SOFT)  # even soft-fail refuses a REVOKED answer
        registrar = yield self.start(revocation=gate)
        client, reply = yield self.eager(registrar, self.pki.pe_revoked, 0x30)
        self.assertIsNone(reply)  # no answer at all: the channel was closed
        self.assertTrue(client.closed.called)
        self.assert_untouched(registrar)
        self.assertEqual(gate.stats["refused"], 1)
        yield defer.gatherResults([c.closed_deferred() for c in list(registrar.channels)])
        self.assertEqual(registrar.channels, {})

    @defer.inlineCallbacks
    def test_good_certificate_passes_ocsp_and_crl(self):
        self.start_responder()
        gate = self.gate(OcspMode.HARD)
        registrar = yield self.start(revocation=gate, crls=[self.pki.crl_revoked])
        yield self.assert_registers(registrar, self.pki.pe1, 0x31)
        self.assertEqual(gate.stats, {"checked": 1, "allowed": 1, "refused": 0, "soft_failed": 0})
        # A second channel with the same certificate is answered from the cache.
        self.stop_responder()
        yield self.assert_registers(registrar, self.pki.pe1, 0x32)
        self.assertEqual(gate.stats["allowed"], 2)

    @defer.inlineCallbacks
    def test_responder_down_soft_allows(self):
        gate = self.gate(OcspMode.SOFT)  # nothing listens on self.port
        registrar = yield self.start(revocation=gate)
        yield self.assert_registers(registrar, self.pki.pe1, 0x33)
        self.assertEqual(gate.stats["soft_failed"], 1)

    @defer.inlineCallbacks
    def test_responder_down_hard_refuses(self):
        gate = self.gate(OcspMode.HARD)
        registrar = yield self.start(revocation=gate)
        client, reply = yield self.eager(registrar, self.pki.pe1, 0x34)
        self.assertIsNone(reply)
        self.assert_untouched(registrar)
        self.assertEqual(gate.stats["refused"], 1)


@pytest.mark.integration
class OcspRevocationOfLiveChannels(_OcspResponder):
    """Issue 12: a PE whose responder turned to "revoked" kept re-registering
    on its open channel.  Now a verified "revoked", from the periodic
    re-check or from any new connection's check, closes the live channels
    and removes their PEs."""

    def setUp(self):
        super().setUp()
        (self.work / "index.txt").write_text(
            index_line(self.pki.ocsp.issued.certificate) + index_line(self.pki.pe1.issued.certificate)
            + index_line(self.pki.pe2.issued.certificate))

    def revoke_pe1(self) -> None:
        """The responder now says pe1 is revoked (a new index, restarted)."""
        self.stop_responder()
        revoked_at = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
        (self.work / "index.txt").write_text(
            index_line(self.pki.ocsp.issued.certificate)
            + index_line(self.pki.pe1.issued.certificate, revoked_at, "keyCompromise")
            + index_line(self.pki.pe2.issued.certificate))
        self.start_responder()

    @defer.inlineCallbacks
    def live_pe1(self, gate: RevocationGate, **kwargs):
        registrar = yield self.start(revocation=gate, **kwargs)
        removed = []
        registrar.change_listeners.append(removed.append)  # the normal removal path (ENRP's too)
        client = yield self.assert_registers(registrar, self.pki.pe1, 0x40)
        other = yield self.assert_registers(registrar, self.pki.pe2, 0x41)
        return registrar, client, other, removed

    @defer.inlineCallbacks
    def test_the_periodic_recheck_closes_a_revoked_live_channel(self):
        self.start_responder()
        gate = self.gate(OcspMode.SOFT)
        registrar, client, other, removed = yield self.live_pe1(gate, ocsp_recheck_interval=3600)
        yield registrar.live_certificates.recheck()  # "good", answered from the cache
        self.assertIsNotNone(registrar.handlespace.get(H, 0x40))
        self.revoke_pe1()
        gate.checker.cache.clear()  # the cached "good" reached its nextUpdate
        yield registrar.live_certificates.recheck()
        yield client.closed.addTimeout(10, reactor)
        self.assertIsNone(registrar.handlespace.get(H, 0x40))
        self.assertEqual([(type(o).__name__, o.entry.pe_id) for o in removed][-1:], [("PoolElementRemoved", 0x40)])
        self.assertIsNotNone(registrar.handlespace.get(H, 0x41))  # pe2 is not revoked
        self.assertFalse(other.closed.called)
        self.assertEqual(registrar.live_certificates.stats["revoked_by_ocsp"], 1)
        # ... and pe1 cannot come back.
        again, reply = yield self.eager(registrar, self.pki.pe1, 0x42)
        self.assertIsNone(reply)

    @defer.inlineCallbacks
    def test_a_new_connections_revoked_answer_closes_the_live_ones(self):
        self.start_responder()
        gate = self.gate(OcspMode.HARD)
        registrar, client, other, removed = yield self.live_pe1(gate)
        self.revoke_pe1()
        gate.checker.cache.clear()
        again, reply = yield self.eager(registrar, self.pki.pe1, 0x43)
        self.assertIsNone(reply)
        yield client.closed.addTimeout(10, reactor)
        self.assertIsNone(registrar.handlespace.get(H, 0x40))
        self.assertIsNotNone(registrar.handlespace.get(H, 0x41))

    @defer.inlineCallbacks
    def test_a_responder_that_cannot_answer_closes_no_live_channel(self):
        self.start_responder()
        gate = self.gate(OcspMode.HARD)
        registrar, client, other, removed = yield self.live_pe1(gate, ocsp_recheck_interval=3600)
        self.stop_responder()
        gate.checker.cache.clear()
        yield registrar.live_certificates.recheck()
        self.assertFalse(client.closed.called)
        self.assertIsNotNone(registrar.handlespace.get(H, 0x40))


class FakeGate:
    """A gate whose decisions the test makes."""

    enabled = True

    def __init__(self) -> None:
        self.pending: list[defer.Deferred] = []
        self.certs = []

    def check(self, cert, chain=()):
        self.certs.append((cert, chain))
        d = defer.Deferred()
        self.pending.append(d)
        return d


class PendingCheck(_RegistrarTest):
    @defer.inlineCallbacks
    def start_with_fake(self, **kwargs):
        gate = FakeGate()
        registrar = yield self.start(revocation=gate, **kwargs)
        arrived = defer.Deferred()
        original = registrar.message_received

        def spy(channel, message, now):
            original(channel, message, now)
            if not arrived.called:
                arrived.callback(message)

        registrar.message_received = spy
        return gate, registrar, arrived

    @defer.inlineCallbacks
    def test_messages_wait_for_the_decision(self):
        gate, registrar, arrived = yield self.start_with_fake()
        client = EagerPe(0x40)
        self.clients.append(client)
        yield connect(registrar_port(registrar), self.creator(self.pki.pe1), client)
        yield arrived  # the registration reached the registrar ...
        self.assert_untouched(registrar)  # ... and created nothing
        (cert, chain), = gate.certs
        self.assertEqual(cert.serial_number, self.pki.pe1.serial)
        self.assertEqual(find_issuer(cert, chain[1:]), self.pki.ca.issued.certificate)
        gate.pending[0].callback(OcspDecision(True, OcspStatus.GOOD, None, "good"))
        reply = yield client.next()
        self.assertFalse(reply.reject, reply)
        self.assertEqual(self.authorizer.calls, [("pe1", "register", H)])

    @defer.inlineCallbacks
    def test_a_refusal_drops_the_queued_messages(self):
        gate, registrar, arrived = yield self.start_with_fake()
        client = EagerPe(0x41)
        self.clients.append(client)
        yield connect(registrar_port(registrar), self.creator(self.pki.pe1), client)
        yield arrived
        gate.pending[0].callback(OcspDecision(False, OcspStatus.REVOKED, None, "revoked"))
        yield client.closed.addTimeout(10, reactor)
        self.assertEqual(client.messages, [])
        self.assert_untouched(registrar)

    @defer.inlineCallbacks
    def test_flood_while_pending_closes_the_channel(self):
        gate, registrar, arrived = yield self.start_with_fake(gate_policy=GatePolicy(max_held_per_channel=4))
        client = RawClient()
        self.clients.append(client)
        yield connect(registrar_port(registrar), self.creator(self.pki.pe1), client)
        yield client.ready
        for pe_id in range(1, 11):
            client.send(AsapRegistration(H, make_pe(pe_id)))
        yield client.closed.addTimeout(10, reactor)
        self.assert_untouched(registrar)
        self.assertEqual((registrar._identifying, registrar._held), ({}, {}))
        # The pending check was cancelled when the channel went.
        self.assertTrue(gate.pending[0].called)

    @defer.inlineCallbacks
    def test_clients_without_certificate_are_not_checked(self):
        gate, registrar, arrived = yield self.start_with_fake()
        client = RawClient()
        self.clients.append(client)
        yield connect(registrar_port(registrar), tls.client_options("localhost", [self.pki.ca.cert]), client)
        yield client.ready
        client.send(AsapRegistration(H, make_pe(5)))
        reply = yield client.next()
        self.assertTrue(reply.reject)  # unauthenticated, refused by the core as usual
        self.assertEqual(gate.certs, [])


# -- CrlMonitor with a fake clock ----------------------------------------------------------


def test_crl_warning_levels(tmp_path):
    now = datetime(2026, 6, 1, tzinfo=timezone.utc)
    ca = pkimod.create_ca("warn CA", now - timedelta(days=30))
    crl = pkimod.create_crl(ca, [], now - timedelta(days=1))
    info = crl_info(crl, now)
    assert info.next_update is not None
    assert crl_warning("a.pem", info, timedelta(0)) is None
    soon = crl_warning("a.pem", info, info.expires_in + timedelta(seconds=1))
    assert soon is not None and not soon.expired and "expires" in soon.text
    late = crl_warning("a.pem", crl_info(crl, info.next_update + timedelta(seconds=1)), timedelta(days=1))
    assert late is not None and late.expired and "EXPIRED" in late.text


def test_crl_monitor_reloads_on_change_and_warns_once(tmp_path):
    now = datetime.now(timezone.utc)
    ca = pkimod.create_ca("monitor CA", now - timedelta(days=30))
    first = pkimod.create_crl(ca, [], now - timedelta(hours=1))
    path = pkimod.write_crl(tmp_path / "ca.crl", first)
    expires = crl_info(first, now).next_update
    clock = task.Clock()
    clock.advance(now.timestamp())
    reloaded = []
    monitor = CrlMonitor(clock, [str(path)], reloaded.append, interval=60.0, warn_before=timedelta(hours=1))
    logged = []
    from twisted.logger import globalLogPublisher

    def observer(event):
        if "CRL" in str(event.get("text", "")):
            logged.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        monitor.start()
        assert monitor.warnings == [] and reloaded == []
        clock.advance(60.0)
        assert reloaded == []  # unchanged file: no reload
        # Close to expiry: one warning, not one per tick.
        clock.advance((expires - now).total_seconds() - 1800)
        clock.advance(60.0)
        assert [w.expired for w in monitor.warnings] == [False]
        assert len(logged) == 1
        # Expired: a new (error) message.
        clock.advance(3600.0)
        assert [w.expired for w in monitor.warnings] == [True]
        assert len(logged) == 2
        # A fresh CRL arrives: reloaded, warnings gone.
        fresh = pkimod.create_crl(ca, [0x99], datetime.fromtimestamp(clock.seconds(), timezone.utc), crl_number=2)
        pkimod.write_crl(path, fresh)
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
        clock.advance(60.0)
        assert len(reloaded) == 1 and len(reloaded[0]) == 1
        assert reloaded[0][0].get_revoked_certificate_by_serial_number(0x99) is not None
        assert monitor.warnings == []
        # A broken file keeps the old CRLs.
        path.write_bytes(b"garbage")
        clock.advance(60.0)
        assert monitor.reloads == 1 and len(reloaded) == 1
    finally:
        monitor.stop()
        globalLogPublisher.removeObserver(observer)
    assert clock.getDelayedCalls() == []


def test_crl_monitor_refreshes_first_and_tells_listeners_after_a_reload(tmp_path):
    from rserpool.security import devpki
    from rserpool.security.revocation import revoked_by

    paths = devpki.ensure_dev_pki(tmp_path, now=datetime.now(timezone.utc))
    ca = devpki.load_dev_ca(tmp_path)
    pe = pkimod.load_certificate(paths.pe_cert)
    clock = task.Clock()
    clock.advance(time.time())
    refreshed, heard, order = [], [], []
    pending = []

    def refresh(now):
        refreshed.append(now)
        for serial in pending:
            devpki.ensure_dev_crl(tmp_path, ca, now, revoke=[serial])
            os.utime(paths.crl, ns=(time.time_ns(), time.time_ns() + 2_000_000_000))
        pending.clear()

    monitor = CrlMonitor(clock, [str(paths.crl)], lambda crls: order.append("options"),
                         interval=60.0, refresh=refresh)

    def broken(crls):
        raise RuntimeError("a listener bug")

    monitor.add_reload_listener(broken)
    monitor.add_reload_listener(lambda crls: (order.append("listener"), heard.append(crls)))
    monitor.start()
    assert len(refreshed) == 1 and heard == [] and not monitor.revoked(pe, ca.certificate)
    pending.append(pe.serial_number)
    clock.advance(60.0)
    assert len(refreshed) == 2 and order == ["options", "listener"]
    (crls,) = heard
    assert monitor.crls == crls and monitor.revoked(pe, ca.certificate)
    now = datetime.fromtimestamp(clock.seconds(), timezone.utc)
    assert revoked_by(crls, pe, ca.certificate, now)
    # A CRL of another CA, or one that is not valid at ``now``, revokes nothing.
    other = pkimod.create_ca("other", now)
    assert not revoked_by(crls, pe, other.certificate, now)
    assert not revoked_by(crls, pe, ca.certificate, now + timedelta(days=60))
    monitor.remove_reload_listener(broken)
    monitor.stop()
    assert clock.getDelayedCalls() == []


def test_ocsp_mode_parsing():
    assert OcspMode.parse(" Hard ") is OcspMode.HARD
    assert OcspMode.SOFT.policy is FailurePolicy.SOFT_FAIL
    assert OcspMode.HARD.policy is FailurePolicy.HARD_FAIL
    with pytest.raises(ValueError):
        OcspMode.parse("maybe")


# -- configuration ([tls] ocsp, crl_*, psk_*) ------------------------------------------------


def test_build_registrar_wires_ocsp_crl_monitor_and_psk(tmp_path):
    from rserpool.config import load_config
    from rserpool.security.psk import PskServerOptions
    from rserpool.security.revocation import CrlMonitorService
    from rserpool.tap import build_registrar

    pki = make_test_pki(tmp_path / "pki")
    keys = tmp_path / "psk.keys"
    keys.write_text("pe-psk " + bytes(range(16)).hex() + "\n")
    keys.chmod(0o600)
    (tmp_path / "authz.rules").write_text("")
    ini = tmp_path / "registrar.ini"
    ini.write_text(f"""
[tls]
certificate = {pki.server.cert}
private_key = {pki.server.key}
ca_certificates = {pki.ca.cert}
crls = {pki.crl_revoked}
crl_check_interval = 30
crl_warn_days = 2
ocsp = hard
ocsp_responder = http://127.0.0.1:9/
ocsp_timeout = 1.5
psk_file = {keys}
psk_identity_hint = rserpool
""")
    clock = task.Clock()
    clock.advance(time.time())
    service = build_registrar(load_config(str(ini)), reactor=clock)
    gate = service.revocation
    assert gate is not None and gate.enabled
    assert gate.checker.policy is FailurePolicy.HARD_FAIL
    assert gate.checker.timeout == 1.5
    assert gate.checker.responder_override == "http://127.0.0.1:9/"
    assert [c.serial_number for c in gate.trust_roots] == [pki.ca.issued.certificate.serial_number]
    assert isinstance(service.tls_options, tls.ReloadableServerOptions)
    assert isinstance(service.tls_options.current, PskServerOptions)
    (monitor,) = [s for s in service if isinstance(s, CrlMonitorService)]
    assert monitor.monitor.interval == 30 and monitor.monitor.warn_before == timedelta(days=2)
    # A reload builds PSK-enabled options again.
    before = service.tls_options.current
    monitor.monitor.on_reload(tls.load_crls([pki.crl_empty]))
    assert isinstance(service.tls_options.current, PskServerOptions)
    assert service.tls_options.current is not before


def test_config_defaults_and_errors(tmp_path):
    from rserpool.config import ConfigError, load_config
    from rserpool.tap import build_registrar

    conf = load_config(text="")
    assert conf["tls"]["ocsp"] == "off" and conf["tls"]["psk_file"] == ""
    # docs/revocation.md: responders on loopback only unless asked; the nonce rule from the ini.
    assert conf["tls"]["ocsp_allow_remote"] is False and conf["tls"]["ocsp_require_nonce"] is False
    from rserpool.security.revocation import gate_from_config
    strict = load_config(text="[tls]\nocsp = hard\nocsp_require_nonce = yes\n")
    gate = gate_from_config(strict["tls"], task.Clock(), ())
    assert gate.checker.options.require_nonce is True and gate.checker.allow_remote is False
    with pytest.raises(ConfigError, match="off, soft or hard"):
        load_config(text="[tls]\nocsp = sometimes\n")
    pki = make_test_pki(tmp_path / "pki")
    keys = tmp_path / "psk.keys"
    keys.write_text("pe-psk " + bytes(range(16)).hex() + "\n")
    keys.chmod(0o644)
    (tmp_path / "authz.rules").write_text("")
    ini = tmp_path / "registrar.ini"
    ini.write_text(f"[tls]\ncertificate = {pki.server.cert}\nprivate_key = {pki.server.key}\n"
                   f"ca_certificates = {pki.ca.cert}\npsk_file = {keys}\n")
    with pytest.raises(ConfigError, match="chmod 600"):
        build_registrar(load_config(str(ini)), reactor=task.Clock())
    keys.chmod(0o600)
    service = build_registrar(load_config(str(ini)), reactor=task.Clock())
    assert service.revocation is None
