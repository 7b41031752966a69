"""rserpool.security.tls over real loopback TLS (trial TestCases driven by pytest).

Each test makes fresh TLS connections on 127.0.0.1 through
``tests.tlshelpers.connect_pair``, which closes both ends and the listening
port before its Deferred fires, so the shared reactor stays clean.
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL, crypto
from twisted.internet import defer
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial import unittest
from zope.interface import implementer

from rserpool.security import pki, tls
from rserpool.security.tlserrors import CertificateRejected
from tests.tlshelpers import (
    PairResult, TestPKI, _store, connect_pair, make_test_pki, reason_text,
)

pytestmark = pytest.mark.integration

_PKI: TestPKI | None = None


def shared_pki() -> TestPKI:
    """One PKI per test process (creating keys is the slow part)."""
    global _PKI
    if _PKI is None:
        directory = tempfile.mkdtemp(prefix="rserpool-tls-test-")
        atexit.register(shutil.rmtree, directory, True)
        _PKI = make_test_pki(Path(directory))
    return _PKI


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class TLSTestCase(unittest.TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.pki = shared_pki()

    def server(self, **kwargs: Any) -> tls.ServerTLSOptions:
        kwargs.setdefault("environ", {})
        return tls.server_options(self.pki.server.cert, self.pki.server.key,
                                  self.pki.ca.cert, **kwargs)

    def client(self, cert: Any = "pe1", hostname: str = "localhost",
               **kwargs: Any) -> tls.ClientTLSOptions:
        kwargs.setdefault("environ", {})
        pair = getattr(self.pki, cert).pair if cert else None
        return tls.client_options(hostname, kwargs.pop("roots", self.pki.ca.cert),
                                  client_cert=pair, **kwargs)

    def connect(self, server: Any, client: Any) -> defer.Deferred[PairResult]:
        return connect_pair(_reactor(), server, client)

    def assert_rejected(self, result: PairResult, *fragments: str) -> None:
        self.assertFalse(result.ok, "connection unexpectedly succeeded")
        self.assertFalse(result.server_handshake)
        text = reason_text(result)
        for fragment in fragments:
            self.assertIn(fragment, text)


class GoodConnectionTests(TLSTestCase):
    @defer.inlineCallbacks
    def test_mutual_tls(self) -> Any:
        result = yield self.connect(self.server(), self.client())
        self.assertTrue(result.ok, reason_text(result))
        self.assertEqual(result.server_peer, self.pki.pe1.issued.certificate)
        self.assertEqual(result.client_version, "TLSv1.3")

    @defer.inlineCallbacks
    def test_ip_address_checked_against_ip_san(self) -> Any:
        result = yield self.connect(self.server(), self.client(hostname="127.0.0.1"))
        self.assertTrue(result.ok, reason_text(result))

    @defer.inlineCallbacks
    def test_tls12_when_capped(self) -> Any:
        client = self.client(max_version=tls.TLSVersion.TLSv1_2)
        result = yield self.connect(self.server(), client)
        self.assertTrue(result.ok, reason_text(result))
        self.assertEqual(result.client_version, "TLSv1.2")
        self.assertEqual(result.client_exporter, result.server_exporter)

    @defer.inlineCallbacks
    def test_optional_client_certificate(self) -> Any:
        server = self.server(require_client_cert=False)
        anonymous = yield self.connect(server, self.client(cert=None))
        self.assertTrue(anonymous.ok, reason_text(anonymous))
        self.assertIsNone(anonymous.server_peer)
        named = yield self.connect(server, self.client())
        self.assertTrue(named.ok, reason_text(named))
        self.assertEqual(named.server_peer, self.pki.pe1.issued.certificate)
        # An offered certificate is still verified.
        rogue = yield self.connect(server, self.client(cert="pe_rogue"))
        self.assert_rejected(rogue, "unknown ca")


class ServerAuthenticationTests(TLSTestCase):
    @defer.inlineCallbacks
    def test_wrong_host_name(self) -> Any:
        result = yield self.connect(self.server(), self.client(hostname="other.rserpool.test"))
        self.assert_rejected(result)
        self.assertIsInstance(result.client_reason.value, CertificateRejected)
        self.assertRegex(str(result.client_reason.value),
                         r"^name mismatch: expected other\.rserpool\.test, certificate is for \S")

    @defer.inlineCallbacks
    def test_wrong_ip_address(self) -> Any:
        result = yield self.connect(self.server(), self.client(hostname="127.0.0.2"))
        self.assert_rejected(result)
        self.assertIsInstance(result.client_reason.value, CertificateRejected)
        self.assertRegex(str(result.client_reason.value),
                         r"^IP address mismatch: expected 127\.0\.0\.2, certificate is for ")

    @defer.inlineCallbacks
    def test_untrusted_server_ca(self) -> Any:
        server = tls.server_options(self.pki.rogue_server.cert, self.pki.rogue_server.key,
                                    self.pki.ca.cert, environ={})
        result = yield self.connect(server, self.client())
        self.assert_rejected(result, "certificate verify failed")
        self.assertRegex(str(result.client_reason.value),
                         r"^certificate verify failed: unknown CA \(.*\) for CN=")

    @defer.inlineCallbacks
    def test_client_certificate_cannot_act_as_server(self) -> Any:
        # pe1 has EKU clientAuth only: OpenSSL's ssl_server purpose refuses it.
        server = tls.server_options(self.pki.pe1.cert, self.pki.pe1.key,
                                    self.pki.ca.cert, environ={})
        result = yield self.connect(server, self.client(hostname="pe1"))
        self.assert_rejected(result, "certificate verify failed")

    @defer.inlineCallbacks
    def test_revoked_server_certificate_with_client_crl(self) -> Any:
        crl = pki.create_crl(self.pki.ca.issued, [self.pki.server.serial],
                             self.pki.now, crl_number=7)
        result = yield self.connect(self.server(), self.client(crls=[crl]))
        self.assert_rejected(result, "certificate verify failed")
        unrevoked = yield self.connect(self.server(), self.client(crls=[self.pki.crl_revoked]))
        self.assertTrue(unrevoked.ok, reason_text(unrevoked))


class ClientAuthenticationTests(TLSTestCase):
    @defer.inlineCallbacks
    def test_untrusted_client_ca(self) -> Any:
        result = yield self.connect(self.server(), self.client(cert="pe_rogue"))
        self.assert_rejected(result, "unknown ca")

    @defer.inlineCallbacks
    def test_client_certificate_required(self) -> Any:
        result = yield self.connect(self.server(), self.client(cert=None))
        self.assert_rejected(result, "peer did not return a certificate")
        # TLS 1.3 gotcha: the client saw its handshake complete anyway.
        self.assertTrue(result.client_handshake)

    @defer.inlineCallbacks
    def test_client_certificate_required_tls12(self) -> Any:
        client = self.client(cert=None, max_version=tls.TLSVersion.TLSv1_2)
        result = yield self.connect(self.server(), client)
        self.assert_rejected(result, "peer did not return a certificate")
        self.assertFalse(result.client_handshake)

    @defer.inlineCallbacks
    def test_expired_client_certificate(self) -> Any:
        result = yield self.connect(self.server(), self.client(cert="pe_expired"))
        self.assert_rejected(result, "certificate expired")

    @defer.inlineCallbacks
    def test_not_yet_valid_client_certificate(self) -> Any:
        result = yield self.connect(self.server(), self.client(cert="pe_future"))
        self.assert_rejected(result, "certificate verify failed")

    @defer.inlineCallbacks
    def test_server_only_purpose_refused_as_client(self) -> Any:
        # The OCSP signer has EKU OCSPSigning only: not valid for client auth.
        result = yield self.connect(self.server(), self.client(cert="ocsp"))
        self.assert_rejected(result, "certificate verify failed")


class RevocationTests(TLSTestCase):
    @defer.inlineCallbacks
    def test_revoked_client_without_crl_is_accepted(self) -> Any:
        # Nothing checks revocation unless a CRL is loaded.
        result = yield self.connect(self.server(), self.client(cert="pe_revoked"))
        self.assertTrue(result.ok, reason_text(result))

    @defer.inlineCallbacks
    def test_revoked_client_rejected_by_crl(self) -> Any:
        server = self.server(crls=[self.pki.crl_revoked])
        revoked = yield self.connect(server, self.client(cert="pe_revoked"))
        self.assert_rejected(revoked, "certificate revoked")
        good = yield self.connect(server, self.client())
        self.assertTrue(good.ok, reason_text(good))

    @defer.inlineCallbacks
    def test_crl_replaced_on_running_server(self) -> Any:
        reloadable = tls.ReloadableServerOptions(self.server(crls=[self.pki.crl_empty]))
        before = yield self.connect(reloadable, self.client(cert="pe_revoked"))
        self.assertTrue(before.ok, reason_text(before))
        reloadable.reload(crls=[self.pki.crl_revoked], environ={})
        after = yield self.connect(reloadable, self.client(cert="pe_revoked"))
        self.assert_rejected(after, "certificate revoked")
        good = yield self.connect(reloadable, self.client())
        self.assertTrue(good.ok, reason_text(good))

    def test_failed_reload_keeps_current_options(self) -> None:
        reloadable = tls.ReloadableServerOptions(self.server())
        current = reloadable.current
        with self.assertRaisesRegex(pki.PkiFileError, "missing.pem: no such file"):
            reloadable.reload(crls=[self.pki.directory / "missing.pem"], environ={})
        self.assertIs(reloadable.current, current)


def _tls11_context(cert: Any = None) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_1_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_1_VERSION)
    ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    if cert is not None:
        ctx.use_certificate_chain_file(str(cert.cert))
        ctx.use_privatekey_file(str(cert.key))
    return ctx


def local_openssl_speaks_tls11(pki_: TestPKI) -> bool:
    """Can this OpenSSL complete a TLS 1.1 handshake with itself (memory BIOs)?"""
    try:
        server = SSL.Connection(_tls11_context(pki_.server), None)
        client = SSL.Connection(_tls11_context(), None)
    except SSL.Error:
        return False
    server.set_accept_state()
    client.set_connect_state()
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, conn in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    conn.do_handshake()
                    done[name] = True
                except SSL.WantReadError:
                    pass
                except SSL.Error:
                    return False
        for src, dst in ((client, server), (server, client)):
            try:
                dst.bio_write(src.bio_read(65536))
            except SSL.WantReadError:
                pass
        if all(done.values()):
            return client.get_protocol_version_name() == "TLSv1.1"
    return False


@implementer(IOpenSSLClientConnectionCreator)
class _TLS11Client:
    def __init__(self) -> None:
        self.context = _tls11_context()

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self.context, None)


class ProtocolVersionTests(TLSTestCase):
    @defer.inlineCallbacks
    def test_tls11_refused(self) -> Any:
        if not local_openssl_speaks_tls11(self.pki):
            raise unittest.SkipTest("this OpenSSL cannot negotiate TLS 1.1 even with itself")
        result = yield self.connect(self.server(), _TLS11Client())
        self.assert_rejected(result)
        self.assertIn("version", reason_text(result))

    def test_old_versions_cannot_be_configured(self) -> None:
        with self.assertRaises(ValueError):
            self.server(min_version=tls.TLSVersion.TLSv1_1)
        with self.assertRaises(ValueError):
            self.client(min_version=tls.TLSVersion.TLSv1_1)

    def test_no_anonymous_or_null_ciphers(self) -> None:
        for creator in (self.server(), self.client()):
            ciphers = SSL.Connection(creator.context, None).get_cipher_list()
            self.assertTrue(ciphers)
            for cipher in ciphers:
                for bad in ("NULL", "ADH", "AECDH", "anon", "RC4", "DES-CBC3", "EXP"):
                    self.assertNotIn(bad, cipher)


def _legacy_context(ciphers: str, cert: Any = None) -> SSL.Context:
    """An OpenSSL context that speaks TLS 1.2 at most and offers only ``ciphers``."""
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_cipher_list(ciphers.encode("ascii") + b":@SECLEVEL=0")
    if cert is not None:
        ctx.use_certificate_chain_file(str(cert.cert))
        ctx.use_privatekey_file(str(cert.key))
    return ctx


@implementer(IOpenSSLClientConnectionCreator)
class _LegacyClient:
    """A client (with pe1's certificate) whose TLS 1.2 offer is only ``ciphers``."""

    def __init__(self, ciphers: str, cert: Any) -> None:
        self.context = _legacy_context(ciphers, cert)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self.context, None)


@implementer(IOpenSSLServerConnectionCreator)
class _LegacyServer:
    def __init__(self, ciphers: str, cert: Any) -> None:
        self.context = _legacy_context(ciphers, cert)

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self.context, None)


_RSA: dict[str, Any] = {}


def _rsa_server(pki_: TestPKI) -> Any:
    """A registrar certificate with an RSA key (static RSA suites need one)."""
    if "server" not in _RSA:
        issued = pki.create_server_certificate(pki_.ca.issued, ["localhost"], pki_.now,
                                               key=pki.generate_private_key("rsa", 2048))
        _RSA["server"] = _store(pki_.directory, "server-rsa", issued)
    return _RSA["server"]


#: TLS 1.2 suites an attacker (or an old client) may offer: CBC with SHA-1 or
#: SHA-2 MACs, CCM, and static RSA key exchange (no forward secrecy).
LEGACY_EC = ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA256",
             "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-CCM")
LEGACY_RSA = ("AES256-SHA", "AES128-SHA", "AES128-GCM-SHA256", "AES256-GCM-SHA384",
              "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA384")


class CipherSuiteTests(TLSTestCase):
    """TLS 1.2: only ECDHE with AES-GCM or ChaCha20-Poly1305; TLS 1.3 as OpenSSL has it."""

    @defer.inlineCallbacks
    def test_legacy_tls12_suites_are_refused_by_the_server(self) -> Any:
        ec_server = self.server()
        rsa = _rsa_server(self.pki)
        rsa_server = tls.server_options(rsa.cert, rsa.key, self.pki.ca.cert, environ={})
        for server, suites in ((ec_server, LEGACY_EC), (rsa_server, LEGACY_RSA)):
            for suite in suites:
                result = yield self.connect(server, _LegacyClient(suite, self.pki.pe1))
                self.assert_rejected(result, "handshake failure")
                self.assertIsNone(result.server_peer, suite)

    @defer.inlineCallbacks
    def test_aead_suites_with_forward_secrecy_are_accepted(self) -> Any:
        rsa = _rsa_server(self.pki)
        rsa_server = tls.server_options(rsa.cert, rsa.key, self.pki.ca.cert, environ={})
        cases = [(self.server(), s) for s in ("ECDHE-ECDSA-AES128-GCM-SHA256",
                                              "ECDHE-ECDSA-AES256-GCM-SHA384",
                                              "ECDHE-ECDSA-CHACHA20-POLY1305")]
        cases += [(rsa_server, s) for s in ("ECDHE-RSA-AES128-GCM-SHA256",
                                            "ECDHE-RSA-CHACHA20-POLY1305")]
        for server, suite in cases:
            result = yield self.connect(server, _LegacyClient(suite, self.pki.pe1))
            self.assertTrue(result.ok, (suite, reason_text(result)))
            self.assertEqual(result.client_version, "TLSv1.2")

    @defer.inlineCallbacks
    def test_our_client_refuses_a_server_that_offers_only_legacy_suites(self) -> Any:
        for suite in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"):
            result = yield self.connect(_LegacyServer(suite, self.pki.server), self.client())
            self.assert_rejected(result)
            self.assertFalse(result.client_handshake)

    def test_tls13_suites_unchanged_and_tls12_offer_is_aead_only(self) -> None:
        for creator in (self.server(), self.client()):
            ciphers = SSL.Connection(creator.context, None).get_cipher_list()
            tls13 = [c for c in ciphers if c.startswith("TLS_")]
            self.assertEqual(sorted(tls13), ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                             "TLS_CHACHA20_POLY1305_SHA256"])
            for cipher in set(ciphers) - set(tls13):
                self.assertTrue(cipher.startswith("ECDHE-"), cipher)
                self.assertTrue("-GCM-" in cipher or cipher.endswith("CHACHA20-POLY1305"), cipher)


def _client_certificate_with_usages(ca: pki.IssuedCertificate, name: str, now: dt.datetime,
                                    usages: list | None) -> pki.IssuedCertificate:
    """Like the development PKI's PE certificate, but with ``usages`` as its EKU
    (None: no extended key usage extension at all)."""
    key = pki.generate_private_key()
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(ca.certificate.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.SubjectAlternativeName(
                   [x509.UniformResourceIdentifier(f"urn:rserpool:pe:{name}")]), critical=False))
    if usages is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return pki.IssuedCertificate(builder.sign(ca.private_key, hashes.SHA256()), key)


class ClientKeyUsageTests(TLSTestCase):
    """A client certificate must name clientAuth in its extended key usage."""

    def certificate(self, name: str, usages: list | None, **kwargs: Any) -> Any:
        issued = _client_certificate_with_usages(self.pki.ca.issued, name, self.pki.now, usages)
        files = _store(self.pki.directory, name, issued)
        return tls.client_options("localhost", self.pki.ca.cert, client_cert=files.pair,
                                  environ={}, **kwargs)

    @defer.inlineCallbacks
    def test_certificate_without_client_auth_usage_is_refused(self) -> Any:
        oid = ExtendedKeyUsageOID
        cases = {"pe-no-eku": None, "pe-server-only": [oid.SERVER_AUTH],
                 "pe-any-eku": [oid.ANY_EXTENDED_KEY_USAGE], "pe-email": [oid.EMAIL_PROTECTION]}
        for require in (True, False):  # required, or optional but sent
            server = self.server(require_client_cert=require)
            for name, usages in cases.items():
                for version in (None, tls.TLSVersion.TLSv1_2):
                    client = self.certificate(name, usages, max_version=version)
                    result = yield self.connect(server, client)
                    self.assert_rejected(result, "certificate verify failed")
                    self.assertIsNone(result.server_peer, name)
        # The same CA's certificates with clientAuth still work (PE, PU, registrar).
        server = self.server()
        good = self.certificate("pe-client-auth", [oid.CLIENT_AUTH])
        for client in (good, self.client(), self.client(cert="pu1"), self.client(cert="server")):
            result = yield self.connect(server, client)
            self.assertTrue(result.ok, reason_text(result))

    def test_usage_check(self) -> None:
        now, ca = self.pki.now, self.pki.ca.issued
        oid = ExtendedKeyUsageOID
        self.assertFalse(tls.has_client_auth_usage(
            _client_certificate_with_usages(ca, "x", now, None).certificate))
        self.assertFalse(tls.has_client_auth_usage(
            _client_certificate_with_usages(ca, "x", now, [oid.ANY_EXTENDED_KEY_USAGE]).certificate))
        self.assertTrue(tls.has_client_auth_usage(self.pki.pe1.issued.certificate))
        self.assertTrue(tls.has_client_auth_usage(self.pki.server.issued.certificate))
        self.assertFalse(tls.has_client_auth_usage(self.pki.ocsp.issued.certificate))


    def test_a_certificates_key_usage_is_parsed_once_and_a_refusal_never_remembered(self) -> None:
        calls = []
        real = tls.has_client_auth_usage

        def counting(cert: Any) -> bool:
            calls.append(cert.subject.rfc4514_string())
            return real(cert)

        self.patch(tls, "has_client_auth_usage", counting)
        tls._CLIENT_AUTH_SEEN.clear()
        good = crypto.X509.from_cryptography(self.pki.pe1.issued.certificate)
        bad = crypto.X509.from_cryptography(
            _client_certificate_with_usages(self.pki.ca.issued, "x", self.pki.now, None).certificate)
        for _ in range(3):
            self.assertTrue(tls._verify_client_certificate(None, good, 0, 0, 1))
            self.assertFalse(tls._verify_client_certificate(None, bad, 0, 0, 1))
            self.assertFalse(tls._verify_client_certificate(None, good, 20, 0, 0))  # OpenSSL said no
        self.assertEqual(len([c for c in calls if "pe1" in c]), 1)
        self.assertEqual(len([c for c in calls if "CN=x" in c]), 3)


class ConfigurationTests(TLSTestCase):
    def test_required_client_cert_needs_roots(self) -> None:
        with self.assertRaises(ValueError):
            tls.server_options(self.pki.server.cert, self.pki.server.key, environ={})

    def test_server_without_roots_requests_no_certificate(self) -> None:
        server = tls.server_options(self.pki.server.cert, self.pki.server.key,
                                    require_client_cert=False, environ={})
        self.assertEqual(server.context.get_verify_mode(), SSL.VERIFY_NONE)

    def test_client_needs_configured_roots(self) -> None:
        with self.assertRaises(ValueError):
            tls.client_options("localhost", (), environ={})

    def test_trust_roots_from_bundle(self) -> None:
        bundle = self.pki.directory / "bundle.pem"
        bundle.write_bytes(self.pki.ca.cert.read_bytes() + self.pki.rogue_ca.cert.read_bytes())
        roots = tls.load_trust_roots(bundle)
        self.assertEqual(roots, (self.pki.ca.issued.certificate,
                                 self.pki.rogue_ca.issued.certificate))


class KeyLogTests(TLSTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.addCleanup(tls.close_keylog_writers)
        keylog_dir = tempfile.mkdtemp(prefix="rserpool-keylog-")
        self.addCleanup(shutil.rmtree, keylog_dir, True)
        self.keylog = Path(keylog_dir) / "keys.log"

    def warnings(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("log_level") == LogLevel.warn
                and "KEY LOGGING" in e.get("log_format", "")]

    @defer.inlineCallbacks
    def test_sslkeylogfile_writes_lines_and_warns_once(self) -> Any:
        environ = {"SSLKEYLOGFILE": str(self.keylog)}
        client = self.client(environ=environ)
        first = yield self.connect(self.server(), client)
        second = yield self.connect(self.server(), self.client(environ=environ))
        self.assertTrue(first.ok and second.ok)
        lines = self.keylog.read_text().splitlines()
        labels = {line.split()[0] for line in lines}
        self.assertIn("CLIENT_HANDSHAKE_TRAFFIC_SECRET", labels)
        self.assertIn("CLIENT_TRAFFIC_SECRET_0", labels)
        randoms = {line.split()[1] for line in lines}
        self.assertEqual(len(randoms), 2)  # one client random per connection
        for line in lines:
            label, client_random, secret = line.split()
            self.assertEqual(len(client_random), 64)
            int(secret, 16)
        self.assertEqual(len(self.warnings()), 1)
        self.assertEqual(self.warnings()[0]["path"], str(self.keylog.absolute()))
        self.assertEqual(os.stat(self.keylog).st_mode & 0o777, 0o600)

    @defer.inlineCallbacks
    def test_keylog_path_on_server(self) -> Any:
        server = self.server(keylog_path=self.keylog)
        result = yield self.connect(server, self.client())
        self.assertTrue(result.ok)
        self.assertIn("SERVER_TRAFFIC_SECRET_0", self.keylog.read_text())

    @defer.inlineCallbacks
    def test_tls12_key_log_uses_client_random(self) -> Any:
        client = self.client(keylog_path=self.keylog, max_version=tls.TLSVersion.TLSv1_2)
        result = yield self.connect(self.server(), client)
        self.assertTrue(result.ok)
        [line] = self.keylog.read_text().splitlines()
        label, _random, master = line.split()
        self.assertEqual((label, len(master)), ("CLIENT_RANDOM", 96))

    def test_process_environment_is_read_by_default(self) -> None:
        self.patch(os, "environ", {"SSLKEYLOGFILE": str(self.keylog)})
        client = tls.client_options("localhost", self.pki.ca.cert)
        self.assertIsNotNone(client.writer)
        self.assertEqual(len(self.warnings()), 1)

    def test_off_by_default(self) -> None:
        self.patch(os, "environ", {})
        self.assertIsNone(tls.client_options("localhost", self.pki.ca.cert).writer)
        self.assertIsNone(self.server().writer)
        self.assertEqual(self.warnings(), [])


class ExporterTests(TLSTestCase):
    @defer.inlineCallbacks
    def test_same_on_both_ends_and_different_per_connection(self) -> Any:
        first = yield self.connect(self.server(), self.client())
        second = yield self.connect(self.server(), self.client())
        for result in (first, second):
            self.assertTrue(result.ok, reason_text(result))
            self.assertEqual(len(result.client_exporter), 32)
            self.assertEqual(result.client_exporter, result.server_exporter)
        self.assertNotEqual(first.client_exporter, second.client_exporter)

    def test_plain_transport_is_not_tls(self) -> None:
        with self.assertRaises(tls.NotTLSError):
            tls.export_keying_material(StringTransport(), b"EXPERIMENTAL-x", 32)
        with self.assertRaises(tls.NotTLSError):
            tls.peer_certificate(StringTransport())

    def test_arguments_checked(self) -> None:
        with self.assertRaises(ValueError):
            tls.export_keying_material(StringTransport(), b"", 32)
        with self.assertRaises(ValueError):
            tls.export_keying_material(StringTransport(), b"x", 0)


def test_export_before_handshake_refused() -> None:
    class Handle:
        def __init__(self, conn: SSL.Connection) -> None:
            self.conn = conn

        def getHandle(self) -> SSL.Connection:
            return self.conn

    ctx = SSL.Context(SSL.TLS_METHOD)
    with pytest.raises(tls.NotTLSError):
        tls.export_keying_material(Handle(SSL.Connection(ctx, None)), b"EXPERIMENTAL-x", 16)


def test_pki_window_used_here_is_current() -> None:
    # Guard: the shared PKI must be valid now, or every test above is moot.
    now = dt.datetime.now(dt.timezone.utc)
    cert = shared_pki().pe1.issued.certificate
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc


# -- TLS 1.3 session tickets when resumption is off ------------------------------------------


def test_disable_session_tickets_uses_whatever_binding_exists(monkeypatch) -> None:
    calls: list[Any] = []

    class WithMethod:
        def set_num_tickets(self, n: int) -> None:
            calls.append(n)

    assert tls.disable_session_tickets(WithMethod()) is True  # type: ignore[arg-type]
    assert calls == [0]

    class Lib:
        def SSL_CTX_set_num_tickets(self, handle: Any, n: int) -> int:  # noqa: N802 (OpenSSL's name)
            calls.append((handle, n))
            return 1

    class Plain:
        _context = "ctx"

    from rserpool.security import _internals

    monkeypatch.setattr(_internals, "_LIB", Lib())
    monkeypatch.setattr(_internals, "NUM_TICKETS", _internals.Capability("n", True, "", "", False))
    assert tls.disable_session_tickets(Plain()) is True  # type: ignore[arg-type]
    assert calls[-1] == ("ctx", 0)
    monkeypatch.setattr(_internals, "NUM_TICKETS", _internals.Capability("n", False, "gone", "", False))
    assert tls.disable_session_tickets(Plain()) is False  # type: ignore[arg-type]


def _after_handshake_bytes(server_ctx: SSL.Context, client_ctx: SSL.Context) -> int:
    """What the server sends once it has the client's Finished (tickets, if any)."""
    server = SSL.Connection(server_ctx, None)
    server.set_accept_state()
    client = SSL.Connection(client_ctx, None)
    client.set_connect_state()
    flights = []
    for _ in range(4):
        for sender, receiver, name in ((client, server, "c"), (server, client, "s")):
            try:
                sender.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                data = sender.bio_read(65536)
            except SSL.WantReadError:
                data = b""
            if data:
                flights.append((name, len(data)))
                receiver.bio_write(data)
    assert [name for name, _ in flights[:3]] == ["c", "s", "c"]
    assert server.get_protocol_version_name() == "TLSv1.3"
    return sum(size for _, size in flights[3:])


def test_no_tickets_after_the_handshake_when_the_binding_allows() -> None:
    p = shared_pki()
    client = tls.client_options("localhost", [p.ca.cert], client_cert=p.pe1.pair)
    client_ctx = client.context if hasattr(client, "context") else client._context
    plain = tls.server_options(*p.server.pair, [p.ca.cert], require_client_cert=False)
    resuming = tls.server_options(*p.server.pair, [p.ca.cert], require_client_cert=False,
                                  session_tickets=True, session_cache=True)
    assert resuming.tickets_disabled is False
    assert _after_handshake_bytes(resuming.context, client_ctx) > 0
    sent = _after_handshake_bytes(plain.context, client_ctx)
    if plain.tickets_disabled:
        assert sent == 0
    else:  # pyOpenSSL without SSL_CTX_set_num_tickets: OpenSSL's default tickets still go out
        assert sent > 0
