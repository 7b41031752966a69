"""The admin endpoint's resource: no secret is ever shown, whatever registered.

A registrar with every kind of credential (a client certificate, TLS-PSK,
SRP verifiers and CHAP secrets, a server secret, private keys) holds PEs
registered through each; every route of the admin endpoint is read, and
every log line written meanwhile is kept: none of them may contain any of
those secrets, in any usual spelling (text, hex, base64, decimal).
"""

from __future__ import annotations

import base64
import io
import json
import random
import tempfile
from pathlib import Path

import pytest
from twisted.internet import defer, reactor
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from rserpool.asap.registrar import RegistrarSettings
from rserpool.logformat import json_observer
from rserpool.security import exchange as ex
from rserpool.security import psk, tls
from rserpool.security.authz import RulesAuthorizer, parse_rules
from rserpool.security.credentials import CertificateChecker, ChapChecker, PskChecker, SrpChecker
from rserpool.service.auth import AuthenticationError, PeAuthenticator
from rserpool.testing import MemoryChapStore, MemorySrpStore
from rserpool.service.registrar import RegistrarService
from rserpool.wire import AsapRegistration
from tests.adminhelpers import AdminHarness, admin_cert
from tests.asaphelpers import connect_raw, make_pe, registrar_port
from tests.tlshelpers import make_test_pki

pytestmark = pytest.mark.integration

PSK_KEY = bytes(range(100, 132))
SRP_PASSWORD = "correct horse battery staple"
CHAP_SECRET = b"chap secret 0123456789"
SERVER_SECRET = b"0123456789abcdef-registrar-secret"
RULES = """
admin      admin                 *
pe1        register,deregister   echo
pe-psk     register,deregister   echo
pe-srp     register,deregister   echo
pe-chap    register,deregister   echo
"""


def _checkers(srp_store: MemorySrpStore) -> list:
    return [CertificateChecker(), PskChecker(), SrpChecker(srp_store, SERVER_SECRET),
            ChapChecker(MemoryChapStore({"pe-chap": CHAP_SECRET}))]


def _spellings(secret: bytes) -> list[bytes]:
    forms = [secret, secret.hex().encode(), secret.hex().upper().encode(), base64.b64encode(secret),
             base64.b64encode(secret).rstrip(b"=")]
    if len(secret) >= 16:
        forms.append(str(int.from_bytes(secret, "big")).encode())
        forms.append(repr(secret).encode())
    return [form for form in forms if len(form) >= 12]


class NoSecretsShown(AdminHarness, unittest.TestCase):
    timeout = 60

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.test_pki = make_test_pki(Path(self._tmp.name))
        self.log = io.StringIO()
        self.observer = json_observer(self.log)
        globalLogPublisher.addObserver(self.observer)
        self.srp_store = MemorySrpStore({"pe-srp": SRP_PASSWORD})
        options = psk.server_options(self.test_pki.server.cert, self.test_pki.server.key, [self.test_pki.ca.cert],
                                     psk_store=psk.FilePskStore({"pe-psk": PSK_KEY}))
        registrar = RegistrarService(
            RegistrarSettings(server_id=random.randrange(1, 2**32)), reactor=reactor,
            listen=["tcp:0:interface=127.0.0.1"], tls_options=options,
            authorizer=RulesAuthorizer(parse_rules(RULES)), checkers=_checkers(self.srp_store))
        d = defer.maybeDeferred(registrar.startService)
        d.addCallback(lambda _: self.start_admin(self.test_pki, registrar=registrar))
        return d

    @defer.inlineCallbacks
    def tearDown(self):
        yield self.stop_admin()
        globalLogPublisher.removeObserver(self.observer)
        self._tmp.cleanup()

    @defer.inlineCallbacks
    def raw(self, creator):
        client = yield connect_raw(reactor, registrar_port(self.registrar), creator)
        self.clients.append(client)
        return client

    @defer.inlineCallbacks
    def exchange_then_register(self, identity, secret, mechanism, pe_id):
        client = yield self.raw(tls.client_options("localhost", [self.pki.ca.cert]))
        authenticator = PeAuthenticator(reactor, identity, secret, preferences=(mechanism,), timeout=10.0)
        try:
            yield authenticator.authenticate(client.channel)
        except AuthenticationError:
            return None
        reply = yield client.request(AsapRegistration(b"echo", make_pe(pe_id)))
        return reply

    @defer.inlineCallbacks
    def test_no_route_and_no_log_line_shows_a_secret(self):
        yield self.register_pe(1)  # pe1's client certificate
        psk_client = yield self.raw(psk.client_options("pe-psk", PSK_KEY))
        reply = yield psk_client.request(AsapRegistration(b"echo", make_pe(2)))
        self.assert_accepted(reply)
        reply = yield self.exchange_then_register("pe-srp", SRP_PASSWORD, ex.MECH_SRP_SHA256_2048, 3)
        self.assert_accepted(reply)
        reply = yield self.exchange_then_register("pe-chap", CHAP_SECRET, ex.MECH_CHAP_MD5, 4)
        self.assert_accepted(reply)
        failed = yield self.exchange_then_register("pe-chap", b"wrong chap secret 99", ex.MECH_CHAP_MD5, 5)
        self.assertIsNone(failed)
        identities = {e.identity for e in self.registrar.handlespace.entries()}
        self.assertEqual(identities, {"pe1", "pe-psk", "pe-srp", "pe-chap"})

        admin = admin_cert(self.pki)
        bodies = []
        for path in ("/", "/pool/6563686f", "/api/v1/status", "/api/v1/pools", "/api/v1/pools/6563686f",
                     "/metrics"):
            answer = yield self.get(path, admin)
            self.assertEqual(answer.status, 200, path)
            bodies.append(answer.raw)
        status = json.loads(bodies[2].partition(b"\r\n\r\n")[2])
        mechanisms = {(a["mechanism"], a["outcome"]) for a in status["counters"]["authentication"]}
        self.assertLessEqual({("certificate", "success"), (psk.MECHANISM, "success"), (ex.MECH_SRP_SHA256_2048, "success"),
                              (ex.MECH_CHAP_MD5, "success"), (ex.MECH_CHAP_MD5, "failure")}, mechanisms)
        salt, verifier = self.srp_store.entries["pe-srp"]
        secrets = {
            "PSK": PSK_KEY, "SRP password": SRP_PASSWORD.encode(), "SRP verifier": verifier,
            "CHAP secret": CHAP_SECRET, "wrong CHAP secret": b"wrong chap secret 99",
            "server secret": SERVER_SECRET,
        }
        for name, path in (("registrar key", self.pki.server.key), ("admin key", admin.key),
                           ("PE key", self.pki.pe1.key)):
            pem = Path(path).read_bytes()
            body = b"".join(line for line in pem.splitlines() if not line.startswith(b"-----"))
            secrets[name] = body[16:48]  # a stretch of the base64 key material
        shown = b"\n".join(bodies) + self.log.getvalue().encode()
        self.assertIn(b"pe-srp", shown)  # the identity names are shown, and must be
        for name, secret in secrets.items():
            for form in _spellings(secret):
                self.assertNotIn(form, shown, f"the {name} is shown")
