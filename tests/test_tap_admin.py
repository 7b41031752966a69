"""``[admin]`` in the registrar's configuration: the admin endpoint built by
rserpool.tap (off unless configured, TLS only, a safe token file), and the
configured endpoint answering over real loopback TLS."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from twisted.internet import defer, reactor
from twisted.trial import unittest

from rserpool.admin import AdminService
from rserpool.config import ConfigError, load_config
from rserpool.tap import build_registrar
from tests.adminhelpers import AdminHarness, admin_cert
from tests.tlshelpers import make_test_pki


def _ini(tmp_path, admin: str, tls: str = "") -> str:
    (tmp_path / "authz.rules").write_text("admin admin *\n")
    path = tmp_path / "registrar.ini"
    path.write_text(f"[registrar]\nasap_listen = tcp:port=0:interface=127.0.0.1\nstate_dir = state\n{tls}"
                    f"[security]\nrules = authz.rules\n[admin]\n{admin}")
    return str(path)


def _admin_children(service):
    return [child for child in service if isinstance(child, AdminService)]


def test_off_unless_configured(tmp_path):
    assert _admin_children(build_registrar(load_config(_ini(tmp_path, "")), reactor)) == []


def test_never_without_tls(tmp_path):
    ini = _ini(tmp_path, "listen = tcp:port=0:interface=127.0.0.1\n", tls="[tls]\nenabled = no\n")
    with pytest.raises(ConfigError, match="needs TLS"):
        build_registrar(load_config(ini), reactor)


def test_an_unsafe_token_file_stops_the_start(tmp_path):
    token = tmp_path / "token"
    token.write_text("0123456789abcdef-token\n")
    os.chmod(token, 0o644)
    ini = _ini(tmp_path, f"listen = tcp:port=0:interface=127.0.0.1\ntoken_file = {token}\n")
    with pytest.raises(ConfigError, match="token_file"):
        build_registrar(load_config(ini), reactor)


def test_bad_values_are_configuration_errors(tmp_path):
    for line in ("token_scope = write\n", "page_size = 0\n", "refresh = abc\n"):
        with pytest.raises(ConfigError):
            load_config(_ini(tmp_path, "listen = tcp:port=0:interface=127.0.0.1\n" + line))
    with pytest.raises(ConfigError, match="page_size"):
        build_registrar(load_config(_ini(tmp_path, "listen = tcp:port=0:interface=127.0.0.1\npage_size = 5000\n")),
                        reactor)


def test_the_development_pki_gets_an_admin_certificate(tmp_path):
    service = build_registrar(load_config(_ini(tmp_path, "listen = tcp:port=0:interface=127.0.0.1\n")), reactor)
    (admin,) = _admin_children(service)
    assert not admin.access.has_token
    for name in ("admin.pem", "admin.key", "admin.p12"):
        assert (tmp_path / "state" / "pki" / name).exists()


@pytest.mark.integration
class ConfiguredEndpoint(AdminHarness, unittest.TestCase):
    """The endpoint exactly as an ini file builds it."""

    @defer.inlineCallbacks
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        root = Path(self._tmp.name)
        self.pki = make_test_pki(root / "pki")
        self.clients = []
        token = root / "token"
        token.write_text("0123456789abcdef-token\n")
        os.chmod(token, 0o600)
        (root / "authz.rules").write_text("admin admin *\npe1 register echo\n")
        (root / "registrar.ini").write_text(f"""
[registrar]
asap_listen = tcp:port=0:interface=127.0.0.1
[tls]
certificate = {self.pki.server.cert}
private_key = {self.pki.server.key}
ca_certificates = {self.pki.ca.cert}
[security]
rules = authz.rules
[admin]
listen = tcp:port=0:interface=127.0.0.1
token_file = token
""")
        self.registrar = build_registrar(load_config(str(root / "registrar.ini")), reactor)
        yield defer.maybeDeferred(self.registrar.startService)
        (self.admin,) = _admin_children(self.registrar)

    @defer.inlineCallbacks
    def tearDown(self):
        yield self.close_clients()
        yield defer.maybeDeferred(self.registrar.stopService)
        self._tmp.cleanup()

    @defer.inlineCallbacks
    def test_admin_certificate_token_and_refusals(self):
        yield self.register_pe(5)
        status = yield self.get("/api/v1/status", admin_cert(self.pki))
        self.assertEqual(status.status, 200)
        self.assertEqual(status.json()["pool_elements"], 1)
        metrics = yield self.get("/metrics", headers={"Authorization": "Bearer 0123456789abcdef-token"})
        self.assertEqual(metrics.status, 200)
        refused = yield self.get("/metrics", self.pki.pe1)
        self.assertEqual(refused.status, 403)
        anonymous = yield self.get("/metrics")
        self.assertEqual(anonymous.status, 401)
