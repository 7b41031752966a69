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
from rserpool.security.chap import ChapCredentials
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


SITE_AUTHENTICATOR = '''
"""A site authenticator: CHAP responses checked against the site's own
secrets file ("identity secret" per line), a plain twisted.cred checker."""
import hmac

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from zope.interface import implementer

from rserpool.interfaces import IBackendFactory, IChapCredentials
from rserpool.security.chap import chap_response


@implementer(ICredentialsChecker)
class SiteChapChecker:
    credentialInterfaces = (IChapCredentials,)

    def __init__(self, secrets):
        self.secrets = secrets
        self.checked = []

    def requestAvatarId(self, credentials):
        self.checked.append(credentials.identity)
        secret = self.secrets.get(credentials.identity)
        expected = chap_response(credentials.identifier, secret or b"-", credentials.challenge)
        if secret is None or not hmac.compare_digest(expected, credentials.response):
            return defer.fail(UnauthorizedLogin())
        return defer.succeed(credentials.identity)


@implementer(IBackendFactory)
class SiteChapFactory:
    name = "site-chap"
    kind = "authenticator"
    description = "CHAP against the site's secrets file"

    def build(self, options, reactor):
        unknown = set(options) - {"secrets_file"}
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}")
        secrets = {}
        with open(options["secrets_file"], encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    identity, secret = line.split()
                    secrets[identity] = secret.encode()
        return SiteChapChecker(secrets)


site_chap = SiteChapFactory()
'''


class SiteAuthenticatorPlugin(unittest.TestCase):
    """An authenticator plugin from a site directory outside the package
    ([plugins] directories) really authenticates PEs: a real registrar over
    TLS on loopback, a PE that proves its CHAP secret to the site checker and
    registers."""

    @defer.inlineCallbacks
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        root = Path(self._tmp.name)
        self.pki = make_test_pki(root / "pki")
        site = root / "site-plugins"
        site.mkdir(mode=0o755)
        (site / "sitechap.py").write_text(SITE_AUTHENTICATOR)
        os.chmod(site / "sitechap.py", 0o644)
        write_private(root / "site.secrets", "site-pe site-secret-0123\n")
        (root / "authz.rules").write_text("site-pe register echo\n")
        self.ini = root / "registrar.ini"
        self.ini.write_text(f"""
[registrar]
asap_listen = tcp:0:interface=127.0.0.1
[tls]
certificate = {self.pki.server.cert}
private_key = {self.pki.server.key}
ca_certificates = {self.pki.ca.cert}
[plugins]
directories = site-plugins
[security]
authenticators = certificate, site-chap
rules = authz.rules
[authenticator:site-chap]
secrets_file = site.secrets
""")
        options = Options()
        options.parseOptions(["--config", str(self.ini)])
        self.registrar = build_registrar(options.config, reactor)
        yield defer.maybeDeferred(self.registrar.startService)
        self.clients = []

    tearDown = RegistrarWithSrpAndChap.tearDown
    connect = RegistrarWithSrpAndChap.connect
    authenticate = RegistrarWithSrpAndChap.authenticate

    @defer.inlineCallbacks
    def test_a_pe_authenticated_by_the_site_plugin_registers(self):
        self.assertEqual(self.registrar.authenticator.mechanisms, (exchange.MECH_CHAP_MD5,))
        client = yield self.authenticate("site-pe", b"site-secret-0123", exchange.MECH_CHAP_MD5)
        reply = yield client.request(AsapRegistration(b"echo", make_pe(0x71)))
        self.assertFalse(reply.reject, reply)
        self.assertEqual(self.registrar.handlespace.get(b"echo", 0x71).identity, "site-pe")
        session = next(iter(self.registrar.core.channel_states))
        self.assertEqual(session.admission.mechanism, exchange.MECH_CHAP_MD5)
        site_checker = self.registrar.checkers.checker_for(
            ChapCredentials("x", 0, b"c" * 16, b"r" * 16))
        self.assertEqual(type(site_checker).__name__, "SiteChapChecker")
        self.assertEqual(site_checker.checked, ["site-pe"])

    @defer.inlineCallbacks
    def test_a_wrong_secret_is_refused_by_the_site_plugin(self):
        with self.assertRaises(AuthenticationError) as caught:
            yield self.authenticate("site-pe", b"not the secret", exchange.MECH_CHAP_MD5)
        self.assertEqual(caught.exception.event.code, exchange.FAIL_AUTHENTICATION)
        self.assertEqual(len(self.registrar.handlespace), 0)


def test_a_site_authenticator_that_breaks_its_contract_is_named(tmp_path):
    """A plugin whose checker does not provide ICredentialsChecker fails to
    load with an error naming it and what is missing."""
    from rserpool.config import ConfigError, load_config

    site = tmp_path / "site"
    site.mkdir(mode=0o755)
    broken = SITE_AUTHENTICATOR.replace("@implementer(ICredentialsChecker)\n", "").replace(
        '"site-chap"', '"broken-chap"')
    (site / "broken.py").write_text(broken)
    os.chmod(site / "broken.py", 0o644)
    (tmp_path / "secrets").write_text("pe x\n")
    (tmp_path / "authz.rules").write_text("")
    pki = make_test_pki(tmp_path / "pki")
    config = load_config(text=f"""
[tls]
certificate = {pki.server.cert}
private_key = {pki.server.key}
ca_certificates = {pki.ca.cert}
[plugins]
directories = {site}
[security]
authenticators = certificate, broken-chap
rules = {tmp_path / 'authz.rules'}
[authenticator:broken-chap]
secrets_file = {tmp_path / 'secrets'}
""")
    import pytest as _pytest

    with _pytest.raises(ConfigError, match="broken-chap.*does not provide ICredentialsChecker"):
        build_registrar(config, reactor)
    with _pytest.raises(ConfigError, match="unknown authenticator plugin 'nosuch'"):
        build_registrar(load_config(text=f"""
[tls]
certificate = {pki.server.cert}
private_key = {pki.server.key}
ca_certificates = {pki.ca.cert}
[security]
authenticators = nosuch
rules = {tmp_path / 'authz.rules'}
"""), reactor)
