"""rserpool.backends.ldap against a real OpenLDAP slapd on loopback.

The server runs the example configuration of ``etc/ldap/`` (schema,
slapd.conf, example.ldif; see ``tests/ldap_fixture.py``), with a StartTLS-
capable ``ldap://`` listener and an ``ldaps://`` one, certificates from
``tests/tlshelpers.make_test_pki``.  pe1's SRP verifier is made here with
``make_verifier`` and stored with ldapmodify; pe1's certificate is mapped by
fingerprint and pe2's by subject.  Tests are ``twisted.trial`` test cases
driven by plain pytest (each returns a Deferred run on the global reactor).
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from rserpool.backends.ldap import LdapDirectory, LdapSchema, LdapTls, LdapUnavailable
from rserpool.backends.ldap_authz import LdapAuthorizer
from rserpool.errors import BackendUnavailable
from rserpool.security import pki as pki_module
from rserpool.security.certidentity import fingerprint_sha256
from rserpool.security.srp import (
    DEFAULT_GROUP,
    SrpClientSession,
    SrpError,
    SrpServerSession,
    make_verifier,
)
from tests.aaahelpers import StallTicker
from tests.conftest import require_tool
from tests.ldap_fixture import (
    GROUP_BASE, PE_BASE, SERVICE_DN, SERVICE_PASSWORD, SUFFIX, Slapd, ldif_value,
)
from tests.tlshelpers import TestPKI, make_test_pki

pytestmark = pytest.mark.integration

PE1_PASSWORD = "pe1-" + secrets.token_hex(8)
CONNECT_TIMEOUT = 1.0
RECEIVE_TIMEOUT = 1.0
DEADLINE = 1.5
MAX_STALL = 0.2


class Directory:
    """The module's slapd, its PKI and what the fixture stored."""

    def __init__(self, slapd: Slapd, pki: TestPKI, salt: bytes, verifier: bytes) -> None:
        self.slapd = slapd
        self.pki = pki
        self.salt = salt
        self.verifier = verifier


def _populate(slapd: Slapd, pki: TestPKI) -> tuple[bytes, bytes]:
    slapd.load()
    salt, verifier = make_verifier("pe1", PE1_PASSWORD)
    slapd.replace(f"uid=pe1,{PE_BASE}", {
        "rserpoolSrpSalt": [salt], "rserpoolSrpVerifier": [verifier],
        "rserpoolCertFingerprint": [fingerprint_sha256(pki.pe1.issued.certificate)]})
    slapd.replace(f"uid=pe2,{PE_BASE}", {
        "rserpoolCertSubject": [pki.pe2.issued.certificate.subject.rfc4514_string()]})
    return salt, verifier


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory):
    executable = require_tool("slapd")
    require_tool("ldapadd")
    base = tmp_path_factory.mktemp("ldap")
    pki = make_test_pki(base / "pki")
    slapd = Slapd(base / "slapd", executable=executable,
                  tls=(pki.server.cert, pki.server.key, pki.ca.cert))
    slapd.start()
    try:
        salt, verifier = _populate(slapd, pki)
        yield Directory(slapd, pki, salt, verifier)
    finally:
        slapd.stop()


class LdapAgainstSlapd(unittest.TestCase):
    timeout = 60

    @pytest.fixture(autouse=True)
    def _inject(self, directory: Directory, tmp_path: Path) -> None:
        self.dir = directory
        self.slapd = directory.slapd
        self.pki = directory.pki
        self.tmp = tmp_path

    def make(self, slapd: Slapd | None = None, *, uri: str | None = None,
             tls: LdapTls | None = None, password: str = SERVICE_PASSWORD,
             **kwargs: Any) -> LdapDirectory:
        slapd = slapd or self.slapd
        kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT)
        kwargs.setdefault("receive_timeout", RECEIVE_TIMEOUT)
        kwargs.setdefault("timeout", DEADLINE)
        ldap = LdapDirectory(reactor, uri or slapd.uri, SERVICE_DN, password, SUFFIX,
                             tls=tls, allow_plaintext=tls is None, **kwargs)
        ldap.start()
        self.addCleanup(ldap.stop)
        return ldap

    def own_slapd(self, name: str) -> Slapd:
        own = Slapd(self.tmp / name, executable=self.slapd.executable)
        own.start()
        self.addCleanup(own.stop)
        _populate(own, self.pki)
        return own

    # ---------------------------------------------------------- lookups
    def test_srp_verifier_and_a_full_exchange(self) -> defer.Deferred:
        ldap = self.make()

        async def run() -> None:
            stored = await ldap.srp_verifier("pe1")
            self.assertEqual(stored, (self.dir.salt, self.dir.verifier))
            salt, verifier = stored
            for password, ok in ((PE1_PASSWORD, True), ("wrong", False)):
                binding = secrets.token_bytes(32)
                server = SrpServerSession(DEFAULT_GROUP, b"pe1", salt, verifier, binding)
                client = SrpClientSession(DEFAULT_GROUP, "pe1", password, binding)
                a_pub, m1 = client.process_challenge(server.salt, server.server_public)
                if ok:
                    m2 = server.verify_client(a_pub, m1)
                    self.assertEqual(client.verify_server(m2), server.session_key)
                else:
                    with self.assertRaises(SrpError):
                        server.verify_client(a_pub, m1)
            # example.ldif's own pe1 verifier was replaced; pe2 has none
            self.assertIsNone(await ldap.srp_verifier("pe2"))

        return defer.ensureDeferred(run())

    def test_unknown_and_hostile_identities(self) -> defer.Deferred:
        ldap = self.make()

        async def run() -> None:
            self.assertIsNone(await ldap.srp_verifier("nobody"))
            self.assertEqual(await ldap.groups("nobody"), frozenset())
            for hostile in ("*", "pe*", "*)(uid=*", "pe1)(|(uid=*", "pe1\\", "enrp-svc"):
                self.assertIsNone(await ldap.srp_verifier(hostile), hostile)

        return defer.ensureDeferred(run())

    def test_groups_by_memberof_and_by_search(self) -> defer.Deferred:
        by_memberof = self.make(schema=LdapSchema(group_base=GROUP_BASE))
        by_search = self.make(schema=LdapSchema(group_attribute="", group_base=GROUP_BASE))

        async def run() -> None:
            for ldap in (by_memberof, by_search):
                self.assertEqual(await ldap.groups("pe1"), frozenset({"echo", "discard"}))
                self.assertEqual(await ldap.groups("pe2"), frozenset({"echo"}))
                self.assertEqual(await ldap.groups("pe3"), frozenset())
            self.assertEqual(await by_memberof.pools("pe3"), ("echo*",))

        return defer.ensureDeferred(run())

    def test_authorization_by_group_and_by_attribute(self) -> defer.Deferred:
        ldap = self.make(schema=LdapSchema(group_base=GROUP_BASE))
        by_group = LdapAuthorizer(ldap)
        by_attribute = LdapAuthorizer(ldap, modes=["attribute"])

        async def run() -> None:
            async def ask(authz: LdapAuthorizer, who: str, pool: bytes,
                          action: str = "register") -> bool:
                return await authz.authorize(who, frozenset(), action, pool)

            self.assertTrue(await ask(by_group, "pe1", b"echo"))
            self.assertTrue(await ask(by_group, "pe1", b"discard"))
            self.assertTrue(await ask(by_group, "pe2", b"echo"))
            self.assertFalse(await ask(by_group, "pe2", b"discard"))
            self.assertFalse(await ask(by_group, "pe3", b"echo"))
            self.assertFalse(await ask(by_group, "nobody", b"echo"))
            self.assertFalse(await ask(by_group, "pe1", b"echo", "peer"))
            self.assertFalse(await ask(by_group, "pe1", b"echo", "admin"))
            self.assertTrue(await ask(by_attribute, "pe3", b"echo-2"))
            self.assertFalse(await ask(by_attribute, "pe3", b"discard"))

        return defer.ensureDeferred(run())

    def test_certificate_mapping(self) -> defer.Deferred:
        ldap = self.make(schema=LdapSchema(group_base=GROUP_BASE))

        async def run() -> None:
            pe1 = await ldap.identity_for(self.pki.pe1.issued.certificate)
            self.assertEqual((pe1.name, pe1.groups), ("pe1", frozenset({"echo", "discard"})))
            pe2 = await ldap.identity_for(self.pki.pe2.issued.certificate)
            self.assertEqual(pe2.name, "pe2")
            # same subject as pe1 (CN=pe1) but another key and issuer: not mapped
            self.assertIsNone(await ldap.identity_for(self.pki.pe_rogue.issued.certificate))
            self.assertIsNone(await ldap.identity_for(self.pki.pu1.issued.certificate))

        return defer.ensureDeferred(run())

    def test_wrong_service_password_is_unavailable(self) -> defer.Deferred:
        ldap = self.make(password="not-the-password")

        async def run() -> None:
            with self.assertRaises(LdapUnavailable) as caught:
                await ldap.srp_verifier("pe1")
            self.assertIn("invalidCredentials", str(caught.exception))
            self.assertNotIn("not-the-password", str(caught.exception))

        return defer.ensureDeferred(run())

    # ----------------------------------------------------------------- TLS
    def test_tls_verified(self) -> defer.Deferred:
        ca = str(self.pki.ca.cert)
        starttls = self.make(tls=LdapTls(ca))
        ldaps = self.make(uri=self.slapd.ldaps_uri, tls=LdapTls(ca, starttls=False))

        async def run() -> None:
            for ldap in (starttls, ldaps):
                self.assertEqual(await ldap.srp_verifier("pe1"),
                                 (self.dir.salt, self.dir.verifier))

        return defer.ensureDeferred(run())

    def test_untrusted_server_certificate_refused(self) -> defer.Deferred:
        rogue = str(self.pki.rogue_ca.cert)
        starttls = self.make(tls=LdapTls(rogue))
        ldaps = self.make(uri=self.slapd.ldaps_uri, tls=LdapTls(rogue, starttls=False))
        by_name = self.make(uri=self.slapd.ldaps_uri.replace("127.0.0.1", "localhost"),
                               tls=LdapTls(str(self.pki.ca.cert), starttls=False))

        async def run() -> None:
            for ldap in (starttls, ldaps):
                with self.assertRaises(LdapUnavailable) as caught:
                    await ldap.srp_verifier("pe1")
                self.assertIn("CERTIFICATE_VERIFY_FAILED", str(caught.exception))
            # "localhost" is one of the certificate's names: accepted
            self.assertIsNotNone(await by_name.srp_verifier("pe1"))

        return defer.ensureDeferred(run())

    def test_server_certificate_for_another_name_refused(self) -> defer.Deferred:
        now = self.pki.now
        issued = pki_module.create_server_certificate(self.pki.ca.issued, ("ldap.example",), now)
        cert = pki_module.write_certificate(self.tmp / "other.pem", issued.certificate,
                                            *issued.chain)
        key = pki_module.write_private_key(self.tmp / "other.key", issued.private_key)
        own = Slapd(self.tmp / "other-name", executable=self.slapd.executable,
                    tls=(cert, key, self.pki.ca.cert))
        own.start()
        self.addCleanup(own.stop)
        own.load()
        ldap = self.make(own, uri=own.ldaps_uri,
                         tls=LdapTls(str(self.pki.ca.cert), starttls=False))
        named = self.make(own, uri=own.ldaps_uri, tls=LdapTls(
            str(self.pki.ca.cert), starttls=False, server_names=("ldap.example",)))

        async def run() -> None:
            with self.assertRaises(LdapUnavailable) as caught:
                await ldap.srp_verifier("pe1")
            self.assertIn("doesn't match any name", str(caught.exception))
            # the name the administrator configured is accepted
            self.assertIsNotNone(await named.srp_verifier("pe1"))

        return defer.ensureDeferred(run())

    def test_a_second_entry_for_an_identity_is_an_outage_not_a_choice(self) -> defer.Deferred:
        # An attacker who can add an entry (or a careless import) puts a
        # second pe1 in the directory, spelled PE1, with a verifier of its
        # own.  slapd finds both for any spelling: the registrar uses
        # neither (refused as an outage, logged), never the attacker's.
        own = self.own_slapd("duplicate")
        salt, verifier = make_verifier("pe1", "attacker-password")
        own.ldap_tool("ldapadd", "\n".join([
            f"dn: uid=PE1,ou=services,{SUFFIX}", "objectClass: account",
            "objectClass: rserpoolPoolElement", "uid: PE1",
            ldif_value("rserpoolSrpSalt", salt), ldif_value("rserpoolSrpVerifier", verifier)]) + "\n")
        ldap = self.make(own)

        async def run() -> None:
            for spelling in ("pe1", "PE1", " Pe1"):
                with self.assertRaises(LdapUnavailable) as caught:
                    await ldap.srp_verifier(spelling)
                self.assertIn("2 entries match", str(caught.exception))
            self.assertIsNotNone(await ldap.entry("pe2"))  # others unaffected

        return defer.ensureDeferred(run())

    # ------------------------------------------------------------ failures
    def _ticker(self) -> StallTicker:
        ticker = StallTicker()
        ticker.start()
        self.addCleanup(ticker.stop)
        return ticker

    def test_stopped_mid_run_then_recovery(self) -> defer.Deferred:
        own = self.own_slapd("stopped")
        ldap = self.make(own, cache_ttl=0)

        async def run() -> None:
            self.assertIsNotNone(await ldap.srp_verifier("pe1"))  # connection established
            own.stop()
            ticker = self._ticker()
            started = time.monotonic()
            with self.assertRaises(BackendUnavailable):
                await ldap.srp_verifier("pe1")
            self.assertLess(time.monotonic() - started, DEADLINE + 0.3)
            with self.assertRaises(BackendUnavailable):  # a fresh connect is refused too
                await ldap.groups("pe1")
            ticker.stop()
            self.assertLess(max(ticker.gaps), MAX_STALL)
            own.start()
            self.assertEqual(await ldap.groups("pe1"), frozenset({"echo", "discard"}))

        return defer.ensureDeferred(run())

    def test_paused_directory_times_out_without_stalling(self) -> defer.Deferred:
        own = self.own_slapd("paused")
        ldap = self.make(own, cache_ttl=0)

        async def run() -> None:
            self.assertIsNotNone(await ldap.srp_verifier("pe1"))
            own.pause()
            try:
                ticker = self._ticker()
                started = time.monotonic()
                results = await defer.DeferredList(
                    [ldap.srp_verifier("pe1"), ldap.groups("pe2"), ldap.entry("pe3")],
                    consumeErrors=True)
                elapsed = time.monotonic() - started
                ticker.stop()
            finally:
                own.resume()
            for ok, value in results:
                self.assertFalse(ok)
                self.assertTrue(value.check(LdapUnavailable), value)
                self.assertIn("no answer", str(value.value))
            self.assertGreaterEqual(elapsed, DEADLINE - 0.05)
            self.assertLess(elapsed, DEADLINE + 0.3)
            self.assertGreater(len(ticker.gaps), 50)
            self.assertLess(max(ticker.gaps), MAX_STALL)
            # recovery once slapd runs again (stuck threads time out and reconnect)
            deadline = time.monotonic() + 10
            while True:
                try:
                    self.assertEqual(await ldap.srp_verifier("pe1"),
                                     (await ldap.srp_verifier("pe1")))
                    break
                except BackendUnavailable:
                    if time.monotonic() > deadline:
                        raise
                    await task.deferLater(reactor, 0.1, lambda: None)
            self.assertIsNotNone(await ldap.srp_verifier("pe1"))

        return defer.ensureDeferred(run())


class ReferralsAreNotFollowed(unittest.TestCase):
    """A directory (here a scripted server on loopback) answers with a
    referral to another loopback port: the registrar must neither connect
    nor bind there (ldap3 follows referrals, and binds with the service
    password, by default).  Needs no slapd."""

    timeout = 30

    def test_referral_makes_no_connection_and_no_bind_elsewhere(self) -> defer.Deferred:
        from tests.ldap_fake_server import FakeLdapServer

        async def run() -> None:
            elsewhere = await FakeLdapServer().listen(reactor)
            self.addCleanup(elsewhere.port.stopListening)
            target = f"{elsewhere.uri}/{SUFFIX}??sub"

            def answer(filter_text: str):
                if "referred" in filter_text:  # a referral result (resultCode 10)
                    return None, "referral", [target]
                return [target], "success", []  # a continuation reference only

            directory = await FakeLdapServer(on_search=answer).listen(reactor)
            self.addCleanup(directory.port.stopListening)
            ldap = LdapDirectory(reactor, directory.uri, SERVICE_DN, SERVICE_PASSWORD, SUFFIX,
                                 allow_plaintext=True, connect_timeout=CONNECT_TIMEOUT,
                                 receive_timeout=RECEIVE_TIMEOUT, timeout=DEADLINE)
            ldap.start()
            self.addCleanup(ldap.stop)
            with self.assertRaises(LdapUnavailable) as caught:
                await ldap.srp_verifier("referred")
            self.assertIn("referral", str(caught.exception))
            self.assertIsNone(await ldap.srp_verifier("continued"))
            self.assertEqual(directory.binds, [(SERVICE_DN, SERVICE_PASSWORD)])
            self.assertEqual(len(directory.searches), 2)
            self.assertEqual(elsewhere.connections, 0)
            self.assertEqual(elsewhere.binds, [])

        return defer.ensureDeferred(run())
