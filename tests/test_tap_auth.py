"""A registrar built from an ini file alone with SRP and CHAP authentication
(the embedded credentials file), used by PEs over real loopback TLS."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.trial import unittest

from rserpool.backends.filestore_format import chap_line, srp_line
from rserpool.security import exchange, srp, tls
from rserpool.service.auth import AuthenticationError, PeAuthenticator
from rserpool.tap import Options, build_registrar
from rserpool.wire import AsapRegistration
from rserpool.wire.codes import CAUSE_SECURITY
from tests.asaphelpers import connect_raw, make_pe
from tests.tlshelpers import make_test_pki


def write_private(path: Path, text: str) -> None:
    path.write_text(text)
    os.chmod(path, 0o600)


class RegistrarWithSrpAndChap(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        root = Path(self._tmp.name)
        self.pki = make_test_pki(root / "pki")
        salt, verifier = srp.make_verifier("pe-srp", "correct horse")
        write_private(root / "credentials", "\n".join([
            srp_line("pe-srp", salt, verifier),
            chap_line("pe-chap", b"chap secret 123"),
        ]) + "\n")
        write_private(root / "server.secret", "0123456789abcdef0123456789abcdef\n")
        (root / "authz.rules").write_text("pe-srp register echo\npe-chap register echo\n")
        ini = root / "registrar.ini"
        ini.write_text(f"""
[registrar]
asap_listen = tcp:0:interface=127.0.0.1
[tls]
certificate = {self.pki.server.cert}
private_key = {self.pki.server.key}
ca_certificates = {self.pki.ca.cert}
[security]
authenticators = certificate, srp, chap
credentials = credentials
server_secret_file = server.secret
rules = authz.rules
""")
        options = Options()
        options.parseOptions(["--config", str(ini)])
        self.registrar = build_registrar(options.config, reactor)
        yield defer.maybeDeferred(self.registrar.startService)
        self.clients = []

    @defer.inlineCallbacks
    def tearDown(self):
        for client in self.clients:
            if client.channel is not None and not client.channel.closed:
                client.channel.abort()
                yield client.closed
        yield self.registrar.stopService()
        self._tmp.cleanup()

    @defer.inlineCallbacks
    def connect(self):
        creator = tls.client_options("localhost", [self.pki.ca.cert])
        client = yield connect_raw(reactor, self.registrar.listening_addresses[0].port, creator)
        self.clients.append(client)
        return client

    @defer.inlineCallbacks
    def authenticate(self, identity, secret, mechanism):
        client = yield self.connect()
        pe = PeAuthenticator(reactor, identity, secret, preferences=(mechanism,))
        try:
            yield pe.authenticate(client.channel)
        finally:
            client.channel.handler = client
        return client

    @defer.inlineCallbacks
    def test_srp_then_register(self):
        client = yield self.authenticate("pe-srp", "correct horse", exchange.MECH_SRP_SHA256_2048)
        reply = yield client.request(AsapRegistration(b"echo", make_pe(0x51)))
        self.assertFalse(reply.reject, reply)
        self.assertEqual(self.registrar.handlespace.get(b"echo", 0x51).identity, "pe-srp")

    @defer.inlineCallbacks
    def test_chap_then_register(self):
        client = yield self.authenticate("pe-chap", b"chap secret 123", exchange.MECH_CHAP_MD5)
        reply = yield client.request(AsapRegistration(b"echo", make_pe(0x52)))
        self.assertFalse(reply.reject, reply)

    @defer.inlineCallbacks
    def test_wrong_password_refused_and_nothing_registered(self):
        with self.assertRaises(AuthenticationError):
            yield self.authenticate("pe-srp", "wrong", exchange.MECH_SRP_SHA256_2048)
        client = yield self.connect()
        reply = yield client.request(AsapRegistration(b"echo", make_pe(0x53)))
        self.assertTrue(reply.reject)
        self.assertEqual(reply.error.causes[0].code, CAUSE_SECURITY)
        self.assertEqual(len(self.registrar.handlespace), 0)


class CertificateMappingFromFile(unittest.TestCase):
    """[authenticator:certificate] mapping = file: the credentials file names
    the holder of a certificate (by fingerprint), whatever the certificate
    itself says; an unmapped certificate names nobody."""

    @defer.inlineCallbacks
    def setUp(self):
        from rserpool.backends.filestore_format import cert_line
        from rserpool.security.certidentity import fingerprint_sha256
        from rserpool.security.pki import load_certificate

        self._tmp = tempfile.TemporaryDirectory()
        root = Path(self._tmp.name)
        self.pki = make_test_pki(root / "pki")
        fingerprint = fingerprint_sha256(load_certificate(self.pki.pe1.cert))
        write_private(root / "credentials", cert_line("sha256:" + fingerprint, "billing-pe", ()) + "\n")
        (root / "authz.rules").write_text("billing-pe register billing\npe1 register billing\n")
        (root / "registrar.ini").write_text(f"""
[registrar]
asap_listen = tcp:0:interface=127.0.0.1
[tls]
certificate = {self.pki.server.cert}
private_key = {self.pki.server.key}
ca_certificates = {self.pki.ca.cert}
[security]
credentials = credentials
rules = authz.rules
[authenticator:certificate]
mapping = file
""")
        options = Options()
        options.parseOptions(["--config", str(root / "registrar.ini")])
        self.registrar = build_registrar(options.config, reactor)
        yield defer.maybeDeferred(self.registrar.startService)
        self.clients = []

    tearDown = RegistrarWithSrpAndChap.tearDown

    @defer.inlineCallbacks
    def register_with(self, cert, pe_id):
        creator = tls.client_options("localhost", [self.pki.ca.cert], client_cert=cert.pair)
        client = yield connect_raw(reactor, self.registrar.listening_addresses[0].port, creator)
        self.clients.append(client)
        reply = yield client.request(AsapRegistration(b"billing", make_pe(pe_id)))
        return reply

    @defer.inlineCallbacks
    def test_mapped_certificate_gets_the_mapped_identity(self):
        reply = yield self.register_with(self.pki.pe1, 0x61)
        self.assertFalse(reply.reject, reply)
        self.assertEqual(self.registrar.handlespace.get(b"billing", 0x61).identity, "billing-pe")

    @defer.inlineCallbacks
    def test_unmapped_certificate_names_nobody(self):
        reply = yield self.register_with(self.pki.pe2, 0x62)
        self.assertTrue(reply.reject)
        self.assertEqual(reply.error.causes[0].code, CAUSE_SECURITY)
        self.assertEqual(len(self.registrar.handlespace), 0)
