"""A registrar configured from ``etc/registrar-ldap.ini`` alone, against a
real OpenLDAP slapd (``tests/ldap_fixture.py``, the example data of
``etc/ldap/``) over real loopback TLS: TLS between PEs and the registrar
(the test PKI), StartTLS between the registrar and slapd (the same CA).

PEs authenticate with client certificates, or by SRP over the ASAP
extension with the verifier stored in slapd (``[authenticator:srp] store =
ldap``, sharing the authorizer's directory); the ``ldap`` authorizer grants pool P to members of group
``cn=P,ou=pools,...``.  Issue 6 item 3: with slapd stopped or paused,
registrations fail closed with cause 0xa and an "LDAP directory
unavailable" log line within the LDAP timeout, while handle resolutions for
registered PEs keep their latency; service returns with the directory.

Timeouts are short (reactor deadline 0.5 s, connect 0.5 s, receive 1 s).
"""

from __future__ import annotations

import os
import re
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.trial import unittest

from rserpool.backends.ldap import LdapUnavailable
from rserpool.config import load_config
from rserpool.errors import BackendUnavailable
from rserpool.plugins.ldap import LdapAuthorizerService, LdapSrpStoreService
from rserpool.security import exchange as ex
from rserpool.security import srp as srp_math
from rserpool.security.srp import make_verifier
from rserpool.service.auth import AuthenticationError, PeAuthenticator
from rserpool.tap import build_registrar
from rserpool.wire import AsapHandleResolution, AsapRegistration
from rserpool.outputs import Send
from rserpool.wire.auth import AsapAuthHello
from tests.aaahelpers import BackendProcess, BackendRegistrarMixin, client_cert, latency_report
from tests.asaphelpers import make_pe
from tests.conftest import require_tool
from tests.ldap_fixture import PE_BASE, SERVICE_PASSWORD, Slapd
from tests.tlshelpers import CertFiles, TestPKI, make_test_pki

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parent.parent / "etc" / "registrar-ldap.ini"
TIMEOUT = 0.5  # [ldap] timeout: the reactor-side deadline of a lookup
PE1_PASSWORD = "pe1-secret"  # the verifier of etc/ldap/example.ldif
PE3_PASSWORD = "pe3-password"  # stored by the fixture; pe3 is in no group
SERVER_SECRET = b"registrar-ldap-test-secret-0123"


class Directory:
    def __init__(self, slapd: Slapd, pki: TestPKI) -> None:
        self.slapd = slapd
        self.pki = pki


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory):
    executable = require_tool("slapd")
    require_tool("ldapadd")
    base = tmp_path_factory.mktemp("ldap-registrar")
    test_pki = make_test_pki(base / "pki")
    test_pki.extra["stranger"] = client_cert(test_pki, "stranger")  # not in the directory
    slapd = Slapd(base / "slapd", executable=executable,
                  tls=(test_pki.server.cert, test_pki.server.key, test_pki.ca.cert))
    slapd.start()
    try:
        slapd.load()
        salt, verifier = make_verifier("pe3", PE3_PASSWORD)
        slapd.replace(f"uid=pe3,{PE_BASE}", {"rserpoolSrpSalt": [salt],
                                              "rserpoolSrpVerifier": [verifier]})
        yield Directory(slapd, test_pki)
    finally:
        slapd.stop()


class _SpelledProof:
    """The attacker's SRP client: x from the verifier's identity (pe1, the
    password is known), M1 with whatever identity the server should be using."""

    def __init__(self, group: Any, x_identity: str, m1_identity: str, password: bytes,
                 binding: bytes) -> None:
        self.group, self.binding = group, binding
        self.x_identity, self.m1_identity = x_identity.encode(), m1_identity.encode()
        self.password = password
        self.a = int.from_bytes(os.urandom(32), "big")
        self.a_pub = srp_math.compute_client_public(group, self.a)
        self.expected: bytes = b""

    def process_challenge(self, salt: bytes, server_public: bytes) -> tuple[bytes, bytes]:
        group = self.group
        b_pub = group.to_int(server_public)
        u = srp_math.compute_u(group, self.a_pub, b_pub)
        x = srp_math.compute_x(group, salt, self.x_identity, self.password)
        key = srp_math.compute_session_key(
            group, srp_math.compute_client_premaster(group, b_pub, self.a, x, u))
        m1 = srp_math.compute_m1(group, self.m1_identity, salt, self.a_pub, b_pub, key, self.binding)
        self.expected = srp_math.compute_m2(group, self.a_pub, m1, key, self.binding)
        return group.pad(self.a_pub), m1

    def verify_server(self, proof: bytes) -> bytes:
        if proof != self.expected:
            raise srp_math.SrpError("server proof mismatch")
        return b""


def spelled_client(spelling: str, m1_identity: str) -> type:
    """A ClientExchange that claims ``spelling`` in its hello (see _SpelledProof)."""

    class Spelled(ex.ClientExchange):
        def _hello_for(self, choice):
            events = super()._hello_for(choice)
            if self._srp is None:
                return events
            self._srp = _SpelledProof(self._srp.group, self._identity, m1_identity,
                                      self._secret, self._cb)
            return (Send(None, AsapAuthHello(self._mechanism, spelling)),)

    return Spelled


def _set(text: str, key: str, value: str) -> str:
    new, count = re.subn(rf"^{key} = .*$", lambda _m: f"{key} = {value}", text,
                         count=1, flags=re.MULTILINE)
    assert count == 1, key
    return new


class RegistrarWithSlapd(BackendRegistrarMixin, unittest.TestCase):
    timeout = 30
    outage_failure = LdapUnavailable
    outage_bound = TIMEOUT
    outage_slack = 0.3

    @pytest.fixture(autouse=True)
    def _inject(self, directory: Directory, tmp_path: Path) -> None:
        self.slapd = directory.slapd
        self.pki = directory.pki
        self.tmp = tmp_path

    @property
    def backend(self) -> BackendProcess:
        return self.slapd

    def backend_queries(self) -> int:
        return self.lookups

    def backend_outage_line(self, start: int, identity: str) -> bool:
        return any("LDAP directory unavailable" in line for line in self.log_lines(start))

    def setUp(self) -> None:
        self.watch_log()
        if self.slapd.process is None:  # a failed test left it stopped
            self.slapd.start()
        self.addCleanup(self._directory_back)

    def _directory_back(self) -> None:
        if self.slapd.process is None:
            self.slapd.start()
        else:
            self.slapd.resume()

    # -- helpers -------------------------------------------------------------------

    def config(self) -> Any:
        """etc/registrar-ldap.ini with this slapd's port, a password file and
        the test CA (written next to a copy of the file), short timeouts."""
        password = self.tmp / "ldap.pw"  # per test: a directory of its own
        password.write_text(SERVICE_PASSWORD + "\n")
        password.chmod(0o600)
        text = EXAMPLE.read_text()
        secret = self.tmp / "srp-server.secret"
        secret.write_bytes(SERVER_SECRET)
        secret.chmod(0o600)
        for key, value in (("uri", self.slapd.uri), ("ca_file", str(self.pki.ca.cert)),
                           ("server_secret_file", str(secret)),
                           ("connect_timeout", "0.5"), ("receive_timeout", "1"),
                           ("timeout", str(TIMEOUT))):
            text = _set(text, key, value)
        ini = self.tmp / "registrar-ldap.ini"
        ini.write_text(text)
        return load_config(str(ini)).with_overrides([
            ("registrar", "asap_listen", "tcp:0:interface=127.0.0.1"),
            ("registrar", "server_id", "0x1dab"),
            ("tls", "certificate", str(self.pki.server.cert)),
            ("tls", "private_key", str(self.pki.server.key)),
            ("tls", "ca_certificates", str(self.pki.ca.cert)),
            ("announce", "targets", ""),
        ])

    @defer.inlineCallbacks
    def start_registrar(self):
        registrar = build_registrar(self.config(), reactor)
        self.assertIsInstance(registrar.authorizer, LdapAuthorizerService)
        self.directory = registrar.authorizer.directory
        self.assertEqual(self.directory.uri, self.slapd.uri)
        self.assertIsNotNone(self.directory.tls)  # StartTLS, verified against the test CA
        # [authenticator:srp] store = ldap: the same directory (one cache), started with the registrar
        [store] = [s for s in registrar if isinstance(s, LdapSrpStoreService)]
        self.assertIs(store.directory, self.directory)
        self.assertEqual(registrar.authenticator.mechanisms, (ex.MECH_SRP_SHA256_2048,))
        self.lookups = 0
        submit = self.directory._submit

        def counted(what: str, *args: Any) -> Any:
            self.lookups += 1
            return submit(what, *args)

        self.directory._submit = counted
        return (yield self.serve(registrar))

    @defer.inlineCallbacks
    def _stop(self, registrar):
        yield super()._stop(registrar)
        self.assertFalse(self.directory.started)

    @defer.inlineCallbacks
    def refused_attempts(self, cert: CertFiles, pe_id: int, count: int):
        """``count`` registrations, each on a new session, each refused with
        0xa within the LDAP timeout; their durations."""
        durations = []
        for _ in range(count):
            pe = yield self.connect(cert)
            started = time.monotonic()
            self.assert_refused((yield pe.request(AsapRegistration(b"echo", make_pe(pe_id)))))
            durations.append(time.monotonic() - started)
            self.assertLess(durations[-1], self.outage_bound + self.outage_slack)
        self.assertIsNone(self.registrar.handlespace.get(b"echo", pe_id))
        return durations

    # -- tests ---------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_authorized_by_group_and_cached(self):
        yield self.start_registrar()
        pe1 = yield self.connect(self.pki.pe1)
        self.assert_accepted((yield pe1.request(AsapRegistration(b"echo", make_pe(0x100)))))
        self.assertEqual(self.registrar.handlespace.get(b"echo", 0x100).identity, "pe1")
        self.assertEqual(self.lookups, 1)
        # daytime: no such group for pe1; refused, not an outage
        mark = len(self.events)
        self.assert_refused((yield pe1.request(AsapRegistration(b"daytime", make_pe(0x101)))))
        self.assertTrue(self.refusal_logged(mark, "pe1"))
        self.assertFalse(self.outage_logged(mark, "pe1"))
        # pe2 is in echo only (its rserpoolPool attribute does not count in groups mode)
        pe2 = yield self.connect(self.pki.pe2)
        self.assert_accepted((yield pe2.request(AsapRegistration(b"echo", make_pe(0x200)))))
        self.assert_refused((yield pe2.request(AsapRegistration(b"discard", make_pe(0x201)))))
        # an identity the directory does not know
        mark = len(self.events)
        stranger = yield self.connect(self.pki.extra["stranger"])
        self.assert_refused((yield stranger.request(AsapRegistration(b"echo", make_pe(0x300)))))
        self.assertTrue(self.refusal_logged(mark, "stranger"))
        self.assertFalse(any("unavailable" in line for line in self.log_lines(mark)))
        self.assertEqual(self.lookups, 3)  # pe1, pe2, stranger
        # pe1 again on a new session, within the cache TTL: no LDAP query
        pe1_again = yield self.connect(self.pki.pe1)
        self.assert_accepted((yield pe1_again.request(AsapRegistration(b"discard", make_pe(0x102)))))
        self.assertEqual(self.lookups, 3)
        pu = yield self.connect()
        answer = yield pu.request(AsapHandleResolution(b"echo"))
        self.assertEqual(sorted(pe.pe_id for pe in answer.pool_elements), [0x100, 0x200])
        self.assertEqual(len(self.registrar.handlespace), 3)

    @defer.inlineCallbacks
    def test_slapd_stopped_mid_run_then_restarted(self):
        pu = yield self.start_with_pe1_and_pu()
        idle = yield self.idle_latencies(pu)
        self.slapd.stop()
        mark = len(self.events)
        attempts = self.refused_attempts(self.pki.pe2, 0x200, 5)
        during = yield self.resolve_while(pu, attempts, 0x100)
        durations = yield attempts
        self.assertTrue(self.outage_logged(mark, "pe2"), self.log_lines(mark))
        self.assert_resolutions_kept(during)
        # a cached identity still registers during the outage, without a query
        yield self.assert_cached_identity_registers(0x101)
        # the same channel, refused during the outage, is served after the restart
        pe2 = yield self.connect(self.pki.pe2)
        self.assert_refused((yield pe2.request(AsapRegistration(b"echo", make_pe(0x200)))))
        self.slapd.start()
        self.assert_accepted((yield pe2.request(AsapRegistration(b"echo", make_pe(0x200)))))
        self.assertEqual(self.registrar.handlespace.get(b"echo", 0x200).identity, "pe2")
        self.flushLoggedErrors(BackendUnavailable)
        print(f"\nslapd stopped: refusals in {max(durations) * 1e3:.1f} ms at most; "
              + latency_report(idle, during))

    @defer.inlineCallbacks
    def test_slapd_paused_does_not_stall_the_reactor(self):
        pu = yield self.start_with_pe1_and_pu()
        mark = len(self.events)
        outage = yield self.refusal_while_paused(self.pki.pe2, 0x200, pu)
        self.assert_outage_refusal(mark, "pe2", outage)
        # after SIGCONT, pe2 registers (on the same channel)
        self.assert_accepted((yield outage.channel.request(AsapRegistration(b"echo", make_pe(0x200)))))
        self.flushLoggedErrors(BackendUnavailable)
        print(f"\nslapd paused: refused after {outage.elapsed * 1e3:.0f} ms; resolution median "
              f"{statistics.median(outage.latencies) * 1e3:.2f} ms over {len(outage.latencies)}; "
              f"worst reactor gap {max(outage.gaps) * 1e3:.1f} ms")

    @defer.inlineCallbacks
    def test_identity_spellings_slapd_takes_for_pe1_are_pe1(self):
        # slapd matches uid without case and extra spaces: "PE1", "pe1 " and
        # "Pe1" all find pe1's entry and verifier.  An attacker who claims one
        # of them (whatever identity it proves M1 for) is pe1 or nobody:
        # pe1's failure budget, pe1's quota, pe1's PEs.
        registrar = yield self.start_registrar()
        budgets = registrar.gate.attempts  # failures per (identity, address)
        outcomes = []
        pe_id = 0x500
        for spelling in ("PE1", "pe1 ", "Pe1", "pe1"):
            for proof in dict.fromkeys((spelling, "pe1")):
                self.patch(ex, "ClientExchange", spelled_client(spelling, proof))
                channel = yield self.connect()
                try:
                    yield PeAuthenticator(reactor, "pe1", PE1_PASSWORD,
                                          preferences=(ex.MECH_SRP_SHA256_2048,),
                                          timeout=10.0).authenticate(channel.channel)
                except AuthenticationError:
                    outcomes.append((spelling, proof, None))
                    continue
                pe_id += 1
                self.assert_accepted((yield channel.request(AsapRegistration(b"echo", make_pe(pe_id)))))
                outcomes.append((spelling, proof, registrar.handlespace.get(b"echo", pe_id).identity))
        owners = {identity for _, _, identity in outcomes if identity is not None}
        self.assertEqual(owners, {"pe1"}, outcomes)
        # Every spelling works for whoever holds pe1's password, as pe1 ...
        for spelling in ("PE1", "pe1 ", "Pe1", "pe1"):
            self.assertIn((spelling, "pe1", "pe1"), outcomes)
        # ... and a proof for the spelling itself fails, on pe1's budget.
        failed = [o for o in outcomes if o[2] is None]
        self.assertEqual(len(failed), 3, outcomes)
        now = reactor.seconds()
        capacity = budgets.per_identity_source.capacity
        self.assertLessEqual(budgets.tokens("pe1", "127.0.0.1", now), capacity - 3 + 0.5)
        for spelling in ("PE1", "pe1 ", "Pe1"):
            self.assertEqual(budgets.tokens(spelling, "127.0.0.1", now), capacity)
        self.assertEqual(registrar.handlespace.identity_count("pe1"), 4)
        self.assertEqual({e.identity for e in registrar.handlespace.entries()}, {"pe1"})

    @defer.inlineCallbacks
    def test_srp_verifier_from_slapd(self):
        registrar = yield self.start_registrar()

        def pe_auth(identity: str, password: str) -> PeAuthenticator:
            return PeAuthenticator(reactor, identity, password,
                                   preferences=(ex.MECH_SRP_SHA256_2048,), timeout=10.0)

        # pe1 proves the example password against the verifier in slapd, is in group echo
        pe1 = yield self.connect()
        yield pe_auth("pe1", PE1_PASSWORD).authenticate(pe1.channel)
        self.assert_accepted((yield pe1.request(AsapRegistration(b"echo", make_pe(0x100)))))
        entry = registrar.handlespace.get(b"echo", 0x100)
        self.assertEqual(entry.identity, "pe1")
        self.assertEqual(self.lookups, 1)  # the SRP lookup's entry also authorized
        # the directory says no: a wrong password ...
        wrong = yield self.connect()
        with self.assertRaises(AuthenticationError):
            yield pe_auth("pe1", "not-" + PE1_PASSWORD).authenticate(wrong.channel)
        # ... and pe3 (right password) is in no group
        pe3 = yield self.connect()
        yield pe_auth("pe3", PE3_PASSWORD).authenticate(pe3.channel)
        mark = len(self.events)
        self.assert_refused((yield pe3.request(AsapRegistration(b"echo", make_pe(0x300)))))
        self.assertTrue(self.refusal_logged(mark, "pe3"))
        # an identity without an entry cannot authenticate at all
        nobody = yield self.connect()
        with self.assertRaises(AuthenticationError):
            yield pe_auth("nobody", PE1_PASSWORD).authenticate(nobody.channel)
        self.assertEqual(registrar.authenticator.stats["succeeded"], 2)
        self.assertEqual(registrar.authenticator.stats["unavailable"], 0)
        self.assertEqual(len(registrar.handlespace), 1)
