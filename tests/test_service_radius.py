"""A registrar configured from ``etc/registrar-radius.ini`` alone, against a
real FreeRADIUS (``tests/radius_fixture.py``) over real loopback TLS.

PEs authenticate with the test PKI's client certificates; the ``radius``
authorizer plugin asks FreeRADIUS (authorize-only) and reads the pools from
the reply attributes of ``etc/freeradius/users``.  Issue 6 item 3: with
FreeRADIUS stopped or paused, registrations fail closed with cause 0xa and
a "backend unavailable" log line, within the RADIUS timeout, while handle
resolutions for registered PEs keep their latency; service returns with the
server.

Timeouts are short (0.2 s, one retransmission: 0.4 s to "unavailable").
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor, task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from rserpool.config import load_config
from rserpool.errors import BackendUnavailable
from rserpool.plugins.radius import RadiusAuthorizerService
from rserpool.security import pki as pkimod
from rserpool.tap import build_registrar
from rserpool.wire import AsapHandleResolution, AsapRegistration
from tests.asaphelpers import RegistrarClientsMixin, make_pe
from tests.conftest import require_tool
from tests.radius_fixture import FreeRadius
from tests.tlshelpers import CertFiles, make_test_pki

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parent.parent / "etc" / "registrar-radius.ini"
TIMEOUT = 0.2
RETRIES = 1
BOUND = (RETRIES + 1) * TIMEOUT  # one server
MEDIAN_BOUND = 0.020  # seconds, a handle resolution during an outage


def _client_cert(test_pki: Any, name: str) -> CertFiles:
    issued = pkimod.create_client_certificate(test_pki.ca.issued, name, test_pki.now)
    cert, key = test_pki.directory / f"{name}.pem", test_pki.directory / f"{name}.key"
    pkimod.write_certificate(cert, issued.certificate, *issued.chain)
    pkimod.write_private_key(key, issued.private_key)
    return CertFiles(cert, key, issued)


@pytest.fixture(scope="module")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    test_pki = make_test_pki(tmp_path_factory.mktemp("pki"))
    for name in ("pe-cert", "stranger"):  # in the users file / unknown to FreeRADIUS
        test_pki.extra[name] = _client_cert(test_pki, name)
    return test_pki


@pytest.fixture(scope="module")
def freeradius_executable() -> str:
    return require_tool("freeradius")


class RegistrarWithFreeRadius(RegistrarClientsMixin, unittest.TestCase):
    timeout = 30

    @pytest.fixture(autouse=True)
    def _inject(self, test_pki: Any, freeradius_executable: str, tmp_path: Path) -> None:
        self.pki = test_pki
        self.tmp = tmp_path
        self.executable = freeradius_executable

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.clients: list[Any] = []
        self.radius = FreeRadius(self.tmp / "radius", executable=self.executable)
        self.radius.start()
        self.addCleanup(self.radius.stop)
        self.secret_file = self.tmp / "radius.secret"
        self.secret_file.write_bytes(self.radius.secret + b"\n")
        self.secret_file.chmod(0o600)

    # -- helpers -------------------------------------------------------------------

    @defer.inlineCallbacks
    def start_registrar(self):
        config = load_config(str(EXAMPLE)).with_overrides([
            ("registrar", "asap_listen", "tcp:0:interface=127.0.0.1"),
            ("registrar", "server_id", "0x5ad10"),
            ("tls", "certificate", str(self.pki.server.cert)),
            ("tls", "private_key", str(self.pki.server.key)),
            ("tls", "ca_certificates", str(self.pki.ca.cert)),
            ("announce", "targets", ""),
            ("radius", "servers", f"127.0.0.1:{self.radius.port}"),
            ("radius", "secret_file", str(self.secret_file)),
            ("radius", "timeout", str(TIMEOUT)),
            ("radius", "retries", str(RETRIES)),
        ])
        registrar = build_registrar(config, reactor)
        self.assertIsInstance(registrar.authorizer, RadiusAuthorizerService)
        yield registrar.startService()
        self.addCleanup(self._stop, registrar)
        self.registrar = registrar
        self.stats = registrar.authorizer.stats
        return registrar

    @defer.inlineCallbacks
    def _stop(self, registrar):
        yield self.close_clients()
        yield registrar.stopService()
        self.assertFalse(registrar.authorizer.running)

    def backend_outage_logged(self, start: int, identity: str) -> bool:
        radius = any("RADIUS backend unavailable" in line and identity in line
                     for line in self.log_lines(start))
        registrar = any(
            event.get("log_failure") is not None
            and event["log_failure"].check(BackendUnavailable)
            and event.get("identity") == identity
            and "authorization backend failed" in (formatEvent(event) or "")
            for event in self.events[start:])
        return radius and registrar

    @defer.inlineCallbacks
    def outage_registration(self, cert: CertFiles, identity: str, pe_id: int, pu: Any):
        """Register while RADIUS does not answer: refused 0xa within the
        bound, as an outage, with resolutions answered meanwhile."""
        mark = len(self.events)
        pe = yield self.connect(cert)
        started = time.monotonic()
        pending = pe.request(AsapRegistration(b"echo", make_pe(pe_id)))
        latencies = yield self.resolve_while(pu, pending, 0x100)
        reply = yield pending
        elapsed = time.monotonic() - started
        self.assert_refused(reply)
        self.assertGreaterEqual(elapsed, BOUND * 0.9)
        self.assertLess(elapsed, BOUND + 0.5)
        self.assertIsNone(self.registrar.handlespace.get(b"echo", pe_id))
        self.assertTrue(self.backend_outage_logged(mark, identity), self.log_lines(mark))
        self.assertGreaterEqual(len(latencies), 10)
        self.assertLess(statistics.median(latencies), MEDIAN_BOUND, latencies)
        return latencies

    # -- tests ---------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_pools_from_reply_attributes_and_cache(self):
        yield self.start_registrar()
        pe1 = yield self.connect(self.pki.pe1)
        self.assert_accepted((yield pe1.request(AsapRegistration(b"echo", make_pe(0x100)))))
        self.assertEqual(self.stats["requests"], 1)
        self.assertEqual(self.registrar.handlespace.get(b"echo", 0x100).identity, "pe1")
        mark = len(self.events)
        # daytime is in nobody's Class/VSA for pe1: refused, not an outage
        self.assert_refused((yield pe1.request(AsapRegistration(b"daytime", make_pe(0x101)))))
        self.assertTrue(self.refusal_logged(mark, "pe1"))
        self.assertFalse(self.backend_outage_logged(mark, "pe1"))
        # pools from Class only (pe-cert's Class: daytime-*)
        pe_cert = yield self.connect(self.pki.extra["pe-cert"])
        self.assert_accepted((yield pe_cert.request(AsapRegistration(b"daytime-3", make_pe(0x102)))))
        self.assert_refused((yield pe_cert.request(AsapRegistration(b"echo", make_pe(0x103)))))
        # an identity FreeRADIUS does not know
        mark = len(self.events)
        stranger = yield self.connect(self.pki.extra["stranger"])
        self.assert_refused((yield stranger.request(AsapRegistration(b"echo", make_pe(0x104)))))
        self.assertTrue(self.refusal_logged(mark, "stranger"))
        self.assertFalse(any("unavailable" in line for line in self.log_lines(mark)))
        self.assertEqual(self.stats["requests"], 3)
        self.assertEqual((self.stats["accepts"], self.stats["rejects"]), (2, 1))
        # the same identity again on a new session, within the cache TTL: no request
        pe1_again = yield self.connect(self.pki.pe1)
        self.assert_accepted((yield pe1_again.request(AsapRegistration(b"discard", make_pe(0x105)))))
        self.assertEqual(self.stats["requests"], 3)
        self.assertEqual(self.stats["dropped"] + self.stats["retransmits"], 0)
        # and the registered PEs resolve
        pu = yield self.connect()
        answer = yield pu.request(AsapHandleResolution(b"echo"))
        self.assertEqual([pe.pe_id for pe in answer.pool_elements], [0x100])
        self.assertEqual(len(self.registrar.handlespace), 3)

    @defer.inlineCallbacks
    def test_freeradius_stopped_mid_run_then_restarted(self):
        yield self.start_registrar()
        pe1 = yield self.connect(self.pki.pe1)
        self.assert_accepted((yield pe1.request(AsapRegistration(b"echo", make_pe(0x100)))))
        pu = yield self.connect()
        idle = []
        for _ in range(20):
            started = time.monotonic()
            yield pu.request(AsapHandleResolution(b"echo"))
            idle.append(time.monotonic() - started)
        self.radius.stop()
        during = yield self.outage_registration(self.pki.pe2, "pe2", 0x200, pu)
        # a cached identity still registers during the outage (new session: the
        # authorizer is asked, and answers from its cache)
        requests = self.stats["requests"]
        pe1_again = yield self.connect(self.pki.pe1)
        self.assert_accepted((yield pe1_again.request(AsapRegistration(b"discard", make_pe(0x101)))))
        self.assertEqual(self.stats["requests"], requests)
        self.radius.start()
        pe2 = yield self.connect(self.pki.pe2)
        self.assert_accepted((yield pe2.request(AsapRegistration(b"echo", make_pe(0x200)))))
        self.assertEqual(self.registrar.handlespace.get(b"echo", 0x200).identity, "pe2")
        self.assertGreaterEqual(self.stats["unavailable"], 1)
        self.flushLoggedErrors(BackendUnavailable)
        print(f"\nresolution latency idle median {statistics.median(idle) * 1e3:.2f} ms, "
              f"during the outage median {statistics.median(during) * 1e3:.2f} ms "
              f"max {max(during) * 1e3:.2f} ms over {len(during)} resolutions")

    @defer.inlineCallbacks
    def test_freeradius_paused_does_not_stall_the_reactor(self):
        yield self.start_registrar()
        pe1 = yield self.connect(self.pki.pe1)
        self.assert_accepted((yield pe1.request(AsapRegistration(b"echo", make_pe(0x100)))))
        pu = yield self.connect()
        gaps: list[float] = []
        last = [time.monotonic()]

        def tick() -> None:
            now = time.monotonic()
            gaps.append(now - last[0])
            last[0] = now

        ticker = task.LoopingCall(tick)
        assert self.radius.process is not None
        pid = self.radius.process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            ticker.start(0.01)
            yield self.outage_registration(self.pki.extra["pe-cert"], "pe-cert", 0x300, pu)
            ticker.stop()
        finally:
            os.kill(pid, signal.SIGCONT)
        self.assertGreater(len(gaps), 10)
        self.assertLess(max(gaps), 0.2)
        again = yield self.connect(self.pki.extra["pe-cert"])
        self.assert_accepted((yield again.request(AsapRegistration(b"daytime-1", make_pe(0x300)))))
        self.flushLoggedErrors(BackendUnavailable)

    @defer.inlineCallbacks
    def test_retry_on_the_same_channel_after_recovery(self):
        yield self.start_registrar()
        pe2 = yield self.connect(self.pki.pe2)
        self.radius.stop()
        self.assert_refused((yield pe2.request(AsapRegistration(b"echo", make_pe(0x200)))))
        self.radius.start()
        self.flushLoggedErrors(BackendUnavailable)
        self.assert_accepted((yield pe2.request(AsapRegistration(b"echo", make_pe(0x200)))))

    # -- scenario B: CHAP inside TLS, verified by FreeRADIUS ----------------------------------------

    @defer.inlineCallbacks
    def chap_pe(self, identity: str, secret: bytes):
        """A channel without a client certificate on which ``identity`` ran
        the CHAP exchange of the ASAP authentication extension."""
        from rserpool.security import exchange
        from rserpool.service.auth import PeAuthenticator

        client = yield self.connect()
        authenticator = PeAuthenticator(reactor, identity, secret, preferences=(exchange.MECH_CHAP_MD5,))
        try:
            yield authenticator.authenticate(client.channel)
        finally:
            client.channel.handler = client
        return client

    @defer.inlineCallbacks
    def test_chap_through_freeradius_authorized_by_reply_attributes(self):
        from rserpool.service.auth import AuthenticationError

        registrar = yield self.start_registrar()
        self.assertIsNotNone(registrar.authenticator)
        self.assertEqual(registrar.authenticator.mechanisms, ("CHAP-MD5",))
        requests_before = self.stats["requests"]
        pe1 = yield self.chap_pe("pe1", b"pe1-secret")
        # The Access-Accept of the CHAP check carried the pools: no further
        # (authorize-only) request is needed to authorize the registration.
        self.assert_accepted((yield pe1.request(AsapRegistration(b"echo", make_pe(0x401)))))
        self.assertEqual(registrar.handlespace.get(b"echo", 0x401).identity, "pe1")
        self.assertEqual(self.stats["requests"], requests_before + 1)
        self.assert_refused((yield pe1.request(AsapRegistration(b"daytime-1", make_pe(0x402)))))
        # A wrong secret, and a name FreeRADIUS does not know, fail the same way.
        for identity, secret in (("pe1", b"wrong"), ("nobody", b"pe1-secret")):
            with self.assertRaises(AuthenticationError):
                yield self.chap_pe(identity, secret)
        anonymous = yield self.connect()
        self.assert_refused((yield anonymous.request(AsapRegistration(b"echo", make_pe(0x403)))))
        self.assertIsNone(registrar.handlespace.get(b"echo", 0x403))
