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

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.trial import unittest

from rserpool.config import load_config
from rserpool.errors import BackendUnavailable
from rserpool.plugins.radius import RadiusAuthorizerService
from rserpool.tap import build_registrar
from rserpool.wire import AsapHandleResolution, AsapRegistration
from tests.aaahelpers import BackendProcess, BackendRegistrarMixin, Refusal, client_cert, latency_report
from tests.asaphelpers import make_pe
from tests.conftest import require_tool
from tests.radius_fixture import FreeRadius
from tests.tlshelpers import make_test_pki

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parent.parent / "etc" / "registrar-radius.ini"
TIMEOUT = 0.2
RETRIES = 1
BOUND = (RETRIES + 1) * TIMEOUT  # one server


@pytest.fixture(scope="module")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    test_pki = make_test_pki(tmp_path_factory.mktemp("pki"))
    for name in ("pe-cert", "stranger"):  # in the users file / unknown to FreeRADIUS
        test_pki.extra[name] = client_cert(test_pki, name)
    return test_pki


@pytest.fixture(scope="module")
def freeradius_executable() -> str:
    return require_tool("freeradius")


class RegistrarWithFreeRadius(BackendRegistrarMixin, unittest.TestCase):
    timeout = 30
    outage_failure = BackendUnavailable
    outage_bound = BOUND
    outage_slack = 0.5

    @pytest.fixture(autouse=True)
    def _inject(self, test_pki: Any, freeradius_executable: str, tmp_path: Path) -> None:
        self.pki = test_pki
        self.tmp = tmp_path
        self.executable = freeradius_executable

    @property
    def backend(self) -> BackendProcess:
        return self.radius

    def backend_queries(self) -> int:
        return self.stats["requests"]

    def backend_outage_line(self, start: int, identity: str) -> bool:
        return any("RADIUS backend unavailable" in line and identity in line
                   for line in self.log_lines(start))

    def setUp(self) -> None:
        self.watch_log()
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
        self.stats = registrar.authorizer.stats
        return (yield self.serve(registrar))

    def assert_outage(self, mark: int, identity: str, pe_id: int, refusal: Refusal) -> None:
        """A registration while RADIUS did not answer: refused 0xa within the
        bound, as an outage, with resolutions answered meanwhile."""
        self.assert_outage_refusal(mark, identity, refusal)
        self.assertIsNone(self.registrar.handlespace.get(b"echo", pe_id))

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
        self.assertFalse(self.outage_logged(mark, "pe1"))
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
        pu = yield self.start_with_pe1_and_pu()
        idle = yield self.idle_latencies(pu)
        self.radius.stop()
        mark = len(self.events)
        outage = yield self.refusal_during_outage(self.pki.pe2, 0x200, pu)
        self.assert_outage(mark, "pe2", 0x200, outage)
        # a cached identity still registers during the outage (new session: the
        # authorizer is asked, and answers from its cache)
        yield self.assert_cached_identity_registers(0x101)
        self.radius.start()
        pe2 = yield self.connect(self.pki.pe2)
        self.assert_accepted((yield pe2.request(AsapRegistration(b"echo", make_pe(0x200)))))
        self.assertEqual(self.registrar.handlespace.get(b"echo", 0x200).identity, "pe2")
        self.assertGreaterEqual(self.stats["unavailable"], 1)
        self.flushLoggedErrors(BackendUnavailable)
        print("\n" + latency_report(idle, outage.latencies))

    @defer.inlineCallbacks
    def test_freeradius_paused_does_not_stall_the_reactor(self):
        pu = yield self.start_with_pe1_and_pu()
        mark = len(self.events)
        outage = yield self.refusal_while_paused(self.pki.extra["pe-cert"], 0x300, pu)
        self.assert_outage(mark, "pe-cert", 0x300, outage)
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
