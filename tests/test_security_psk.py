"""TLS-PSK (rserpool.security.psk): key files, the private-binding guard, and
real loopback handshakes (TLS 1.3 and 1.2), up to a PE registering with its
PSK identity at the registrar."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from OpenSSL import SSL
from twisted.internet import defer, endpoints, reactor, threads
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from rserpool.asap.registrar import RegistrarSettings
from rserpool.security import psk, tls
from rserpool.service.channel import Channel, ChannelSettings
from rserpool.service.registrar import RegistrarService
from rserpool.wire import AsapRegistration, AsapRegistrationResponse
from rserpool.wire.codes import CAUSE_SECURITY
from tests.asaphelpers import AllowAll, RawClient, connect_raw, make_pe, registrar_port
from tests.conftest import require_tool
from tests.tlshelpers import connect_pair, make_test_pki, reason_text

KEY = bytes(range(32))
OTHER_KEY = bytes(reversed(range(32)))


# -- key files ---------------------------------------------------------------------------


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_file_store_loads_and_looks_up(tmp_path):
    path = write(tmp_path / "psk", "# PEs\n\npe-a " + KEY.hex() + "\npe-b   " + OTHER_KEY.hex().upper() + "\n")
    store = psk.FilePskStore.from_file(path)
    assert len(store) == 2
    assert store.psk_key("pe-a") == KEY
    assert store.psk_key("pe-b") == OTHER_KEY
    assert store.psk_key("pe-c") is None
    assert store.psk_key("pe-") is None
    assert store.psk_key("\udcff") is None  # undecodable bytes never raise


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_file_readable_by_others_is_refused(tmp_path, mode):
    path = write(tmp_path / "psk", "pe-a " + KEY.hex() + "\n", mode)
    with pytest.raises(psk.PskError, match="chmod 600"):
        psk.load_psk_file(path)
    assert psk.load_psk_file(path, check_mode=False) == {"pe-a": KEY}


@pytest.mark.parametrize("line, message", [
    ("pe-a", "identity key-hex"),
    ("pe-a zz" + KEY.hex(), "not hexadecimal"),
    ("pe-a " + bytes(15).hex(), "16 to 512"),
    ("pe-a " + KEY.hex() + " extra", "identity key-hex"),
    ("x" * 129 + " " + KEY.hex(), "1 to 128"),
])
def test_bad_lines_are_refused_with_the_line_number(tmp_path, line, message):
    path = write(tmp_path / "psk", "# header\n" + line + "\n")
    with pytest.raises(psk.PskError, match=message) as info:
        psk.load_psk_file(path)
    assert ":2:" in str(info.value)


def test_duplicate_identity_is_refused(tmp_path):
    path = write(tmp_path / "psk", f"pe-a {KEY.hex()}\npe-a {OTHER_KEY.hex()}\n")
    with pytest.raises(psk.PskError, match="duplicate"):
        psk.load_psk_file(path)


def test_identities_are_stored_normalized(tmp_path):
    # rserpool.identity: a file names each identity once, in normalized form.
    with pytest.raises(psk.PskError, match="normalized form"):
        psk.FilePskStore.from_file(write(tmp_path / "psk", "PE-A " + KEY.hex() + "\n"))
    with pytest.raises(psk.PskError, match="normalized"):
        psk.FilePskStore({"Pe-A": KEY})


def test_client_refuses_short_keys_and_bad_identities():
    with pytest.raises(psk.PskError):
        psk.client_options("pe-a", bytes(8))
    with pytest.raises(psk.PskError):
        psk.client_options("pe a", KEY)
    with pytest.raises(psk.PskError):
        psk.client_options("", KEY)


# -- the private bindings ----------------------------------------------------------------


def _missing_psk(monkeypatch):
    """Bindings as a future pyOpenSSL might ship them: no PSK functions."""
    from rserpool.security import _internals

    missing = _internals.Capability("TLS-PSK", False, "OpenSSL functions not bound by pyOpenSSL: "
                                    "SSL_CTX_set_psk_server_callback", "refused")
    monkeypatch.setattr(_internals, "PSK", missing)
    return missing


def test_missing_bindings_fail_loudly(monkeypatch, tmp_path):
    _missing_psk(monkeypatch)
    with pytest.raises(psk.PskUnavailableError, match="SSL_CTX_set_psk_server_callback"):
        psk.require_bindings()
    with pytest.raises(psk.PskUnavailableError):
        psk.client_options("pe-a", KEY)
    pki = make_test_pki(tmp_path)
    with pytest.raises(psk.PskUnavailableError):
        psk.server_options(pki.server.cert, pki.server.key, [pki.ca.cert],
                           psk_store=psk.FilePskStore({"pe-a": KEY}))


def test_something_else_than_a_context_fails_loudly(tmp_path):
    class Opaque:
        pass

    with pytest.raises(psk.PskUnavailableError, match="not a pyOpenSSL Context"):
        psk.enable_server_psk(Opaque(), psk.FilePskStore({}))  # type: ignore[arg-type]


def test_no_psk_cipher_without_forward_secrecy(tmp_path):
    pki = make_test_pki(tmp_path)
    server = psk.server_options(pki.server.cert, pki.server.key, [pki.ca.cert],
                                psk_store=psk.FilePskStore({"pe-a": KEY}))
    client = psk.client_options("pe-a", KEY)
    for context in (server.context, client.context):
        ciphers = SSL.Connection(context, None).get_cipher_list()
        psk_suites = [c for c in ciphers if "PSK" in c]
        assert psk_suites, ciphers
        # TLS 1.2 PSK suites are ECDHE-PSK only (no PSK-*, DHE-PSK-*, RSA-PSK-*).
        assert all(c.startswith("ECDHE-PSK-") for c in psk_suites), psk_suites
        assert all(not c.startswith(("PSK-", "DHE-PSK", "RSA-PSK")) for c in ciphers)
    # The TLS 1.3 suites a PSK client offers are SHA-256 ones (needed by the
    # legacy callbacks); its TLS 1.2 list holds nothing but ECDHE-PSK.
    client_list = SSL.Connection(client.context, None).get_cipher_list()
    assert [c for c in client_list if c.startswith("TLS_")] == list(psk.TLS13_PSK_SUITES)
    assert [c for c in client_list if not c.startswith("TLS_")] == list(psk.TLS12_PSK_CIPHERS)


# -- loopback handshakes -------------------------------------------------------------------


class PskHandshakes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.pki = make_test_pki(Path(cls._tmp.name))
        cls.store = psk.FilePskStore({"pe-psk": KEY, "other": OTHER_KEY})

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def server(self, **kwargs):
        options = psk.server_options(self.pki.server.cert, self.pki.server.key, [self.pki.ca.cert],
                                     psk_store=self.store, **kwargs)
        made = []
        original = options.serverConnectionForTLS

        def remember(proto):
            connection = original(proto)
            made.append(connection)
            return connection

        options.serverConnectionForTLS = remember
        return options, made

    @defer.inlineCallbacks
    def handshake(self, identity, key, max_version=None, **server_kwargs):
        server, made = self.server(**server_kwargs)
        result = yield connect_pair(reactor, server, psk.client_options(identity, key, max_version=max_version))
        return result, made[0]

    @defer.inlineCallbacks
    def test_tls13_right_key(self):
        result, connection = yield self.handshake("pe-psk", KEY)
        self.assertTrue(result.ok, reason_text(result))
        self.assertEqual(result.client_version, "TLSv1.3")
        self.assertIn(connection.get_cipher_name(), psk.TLS13_PSK_SUITES)
        self.assertEqual(psk.psk_identity(connection), "pe-psk")
        self.assertIsNone(result.server_peer)  # no certificate involved
        self.assertEqual(result.client_exporter, result.server_exporter)

    @defer.inlineCallbacks
    def test_tls12_right_key_uses_ecdhe_psk(self):
        result, connection = yield self.handshake("other", OTHER_KEY, max_version=tls.TLSVersion.TLSv1_2)
        self.assertTrue(result.ok, reason_text(result))
        self.assertEqual(result.client_version, "TLSv1.2")
        self.assertTrue(connection.get_cipher_name().startswith("ECDHE-PSK-"), connection.get_cipher_name())
        self.assertEqual(psk.psk_identity(connection), "other")

    @defer.inlineCallbacks
    def test_psk_client_admitted_even_when_certificates_are_required(self):
        result, connection = yield self.handshake("pe-psk", KEY, require_client_cert=True)
        self.assertTrue(result.ok, reason_text(result))
        self.assertEqual(psk.psk_identity(connection), "pe-psk")

    @defer.inlineCallbacks
    def test_wrong_key_and_unknown_identity_fail_alike(self):
        for version in (None, tls.TLSVersion.TLSv1_2):
            wrong, _ = yield self.handshake("pe-psk", OTHER_KEY, max_version=version)
            unknown, _ = yield self.handshake("nobody", KEY, max_version=version)
            self.assertFalse(wrong.client_ok or wrong.server_handshake, reason_text(wrong))
            self.assertFalse(unknown.client_ok or unknown.server_handshake, reason_text(unknown))
            # Same alert either way: an unknown identity is not told apart.
            self.assertEqual(str(wrong.client_reason.value), str(unknown.client_reason.value))

    @defer.inlineCallbacks
    def test_skipped_psk_gives_no_identity(self):
        # The attack: offer a PSK for a known identity without its key, and
        # only a SHA-384 suite.  OpenSSL calls the server callback (which
        # sees the identity), then skips the PSK because the hash does not
        # match and finishes a certificate handshake with an anonymous client.
        server, made = self.server()
        result = yield connect_pair(reactor, server, sha384_only_attacker("pe-psk"))
        self.assertTrue(result.ok, reason_text(result))  # an anonymous TLS session ...
        self.assertEqual(made[0].get_cipher_name(), "TLS_AES_256_GCM_SHA384")
        self.assertIsNone(psk.psk_identity(made[0]))  # ... that is not pe-psk

    @defer.inlineCallbacks
    def test_certificate_clients_still_work_and_have_no_psk_identity(self):
        server, made = self.server()
        client = tls.client_options("localhost", [self.pki.ca.cert], client_cert=self.pki.pe1.pair)
        result = yield connect_pair(reactor, server, client)
        self.assertTrue(result.ok, reason_text(result))
        self.assertIsNone(psk.psk_identity(made[0]))
        self.assertEqual(result.server_peer.serial_number, self.pki.pe1.serial)

    @defer.inlineCallbacks
    def test_psk_client_refuses_a_certificate_only_server(self):
        plain = tls.server_options(self.pki.server.cert, self.pki.server.key, [self.pki.ca.cert],
                                   require_client_cert=False)
        result = yield connect_pair(reactor, plain, psk.client_options("pe-psk", KEY))
        self.assertFalse(result.client_ok)
        self.assertFalse(result.server_handshake and result.client_ok)


class RegistrarWithPsk(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.pki = make_test_pki(Path(cls._tmp.name))

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    @defer.inlineCallbacks
    def setUp(self):
        self.authorizer = AllowAll()
        options = psk.server_options(self.pki.server.cert, self.pki.server.key, [self.pki.ca.cert],
                                     psk_store=psk.FilePskStore({"pe-psk": KEY}))
        self.registrar = RegistrarService(
            RegistrarSettings(server_id=0x5151), reactor=reactor, listen=["tcp:0:interface=127.0.0.1"],
            tls_options=options, authorizer=self.authorizer)
        yield self.registrar.startService()
        self.clients = []

    @defer.inlineCallbacks
    def tearDown(self):
        for client in self.clients:
            if client.channel is not None and not client.channel.closed:
                client.channel.abort()
                yield client.closed
        yield self.registrar.stopService()

    @defer.inlineCallbacks
    def test_pe_with_the_right_psk_registers_under_its_psk_identity(self):
        client = yield connect_raw(reactor, registrar_port(self.registrar), psk.client_options("pe-psk", KEY))
        self.clients.append(client)
        reply = yield client.request(AsapRegistration(b"echo", make_pe(0x77)))
        self.assertIsInstance(reply, AsapRegistrationResponse)
        self.assertFalse(reply.reject, reply)
        self.assertEqual(self.authorizer.calls, [("pe-psk", "register", b"echo")])
        self.assertEqual(self.registrar.handlespace.get(b"echo", 0x77).identity, "pe-psk")
        (session,) = [c.state for c in self.registrar.channels]
        self.assertEqual(session.identity, "pe-psk")

    @defer.inlineCallbacks
    def test_other_spellings_of_the_psk_identity_are_the_same_identity(self):
        for n, spelling in enumerate(("PE-PSK", "Pe-Psk", "pe-psk")):
            client = yield connect_raw(reactor, registrar_port(self.registrar),
                                       psk.client_options(spelling, KEY))
            self.clients.append(client)
            reply = yield client.request(AsapRegistration(b"echo", make_pe(0x80 + n)))
            self.assertFalse(reply.reject, reply)
            self.assertEqual(self.registrar.handlespace.get(b"echo", 0x80 + n).identity, "pe-psk")
        self.assertEqual({c.state.identity for c in self.registrar.channels}, {"pe-psk"})
        self.assertEqual(self.registrar.handlespace.identity_count("pe-psk"), 3)

    @defer.inlineCallbacks
    def test_pe_library_registers_with_its_psk(self):
        from ipaddress import IPv4Address

        from rserpool.service.candidates import RegistrarCandidates
        from rserpool.service.pe import PoolElementService
        from rserpool.wire import LeastUsedPolicy, TcpTransport

        service = PoolElementService(
            reactor, b"echo", TcpTransport(7, IPv4Address("127.0.0.1")), LeastUsedPolicy(1),
            candidates=RegistrarCandidates(static=[f"127.0.0.1:{registrar_port(self.registrar)}"]),
            tls_options_factory=lambda name: psk.client_options("pe-psk", KEY),
            hunt_options=dict(t5_initial=0.5, attempt_timeout=2.0))
        service.startService()
        try:
            event = yield service.registered().addTimeout(10, reactor)
            self.assertEqual(self.registrar.handlespace.get(b"echo", event.pe_id).identity, "pe-psk")
            self.assertEqual(self.authorizer.calls, [("pe-psk", "register", b"echo")])
        finally:
            yield service.stopService()

    @defer.inlineCallbacks
    def test_skipped_psk_is_not_authenticated(self):
        client = yield connect_raw(reactor, registrar_port(self.registrar), sha384_only_attacker("pe-psk"))
        self.clients.append(client)
        reply = yield client.request(AsapRegistration(b"echo", make_pe(0x79)))
        self.assertTrue(reply.reject)
        self.assertEqual(reply.error.causes[0].code, CAUSE_SECURITY)
        self.assertEqual(len(self.registrar.handlespace), 0)
        self.assertEqual(self.authorizer.calls, [])
        self.assertEqual({c.state.identity for c in self.registrar.channels}, {None})

    @defer.inlineCallbacks
    def test_wrong_key_gets_no_channel_and_no_state(self):
        client = yield attempt(registrar_port(self.registrar), psk.client_options("pe-psk", OTHER_KEY))
        self.assertFalse(client.ready.called)
        self.assertEqual(len(self.registrar.handlespace), 0)
        self.assertEqual(self.authorizer.calls, [])
        self.assertEqual(self.registrar.core.channel_states, set())

    @defer.inlineCallbacks
    def test_anonymous_tls_client_without_psk_is_refused(self):
        client = yield connect_raw(reactor, registrar_port(self.registrar),
                                   tls.client_options("localhost", [self.pki.ca.cert]))
        self.clients.append(client)
        reply = yield client.request(AsapRegistration(b"echo", make_pe(0x78)))
        self.assertTrue(reply.reject)
        self.assertEqual(reply.error.causes[0].code, CAUSE_SECURITY)
        self.assertEqual(len(self.registrar.handlespace), 0)


def sha384_only_attacker(identity: str) -> psk.PskClientOptions:
    """A client that sends a PSK for ``identity`` with a key it guessed, offers
    only TLS_AES_256_GCM_SHA384 and accepts any server certificate."""
    from OpenSSL.SSL import _lib

    creator = psk.client_options(identity, bytes(32), max_version=tls.TLSVersion.TLSv1_3)
    assert _lib.SSL_CTX_set_ciphersuites(creator.context._context, b"TLS_AES_256_GCM_SHA384") == 1
    creator.context.set_verify(SSL.VERIFY_NONE, lambda *args: True)
    return creator


def attempt(port: int, creator) -> defer.Deferred:
    """Connect a RawClient and fire (with it) once the connection is closed again."""
    client = RawClient()
    factory = Factory.forProtocol(lambda: Channel(client, reactor, ChannelSettings(), tls=True, initiator=True))
    endpoint = endpoints.wrapClientTLS(creator, endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port))
    d = endpoint.connect(factory)
    d.addCallback(lambda _: client.closed)
    d.addCallback(lambda _: client)
    return d


@pytest.mark.integration
class OpensslClientInterop(unittest.TestCase):
    """``openssl s_client`` as an independent PSK client: it gets ECDHE-PSK or
    (EC)DHE TLS 1.3 with the PSK, and no plain or DHE PSK suite."""

    timeout = 60

    @pytest.fixture(autouse=True)
    def _openssl(self) -> None:
        self.openssl = require_tool("openssl")

    @defer.inlineCallbacks
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self._tmp.cleanup)
        pki = make_test_pki(Path(self._tmp.name))
        server = psk.server_options(pki.server.cert, pki.server.key, [pki.ca.cert],
                                    psk_store=psk.FilePskStore({"pe-psk": KEY}))
        self.port = yield endpoints.SSL4ServerEndpoint(reactor, 0, server, interface="127.0.0.1").listen(
            Factory.forProtocol(Protocol))
        self.addCleanup(self.port.stopListening)

    def s_client(self, *extra: str) -> defer.Deferred:
        command = [self.openssl, "s_client", "-connect", f"127.0.0.1:{self.port.getHost().port}",
                   "-psk_identity", "pe-psk", "-psk", KEY.hex(), "-brief", *extra]
        run = threads.deferToThread(subprocess.run, command, stdin=subprocess.DEVNULL, capture_output=True,
                                    timeout=20)
        return run.addCallback(lambda done: (done.returncode, done.stderr.decode(errors="replace")))

    @defer.inlineCallbacks
    def test_tls12_plain_and_dhe_psk_are_refused(self):
        for cipher in ("PSK-AES128-CBC-SHA", "PSK-AES256-GCM-SHA384", "DHE-PSK-AES128-CBC-SHA256"):
            code, text = yield self.s_client("-tls1_2", "-cipher", cipher)
            self.assertNotEqual(code, 0, text)
            self.assertNotIn("CONNECTION ESTABLISHED", text)

    @defer.inlineCallbacks
    def test_tls12_ecdhe_psk(self):
        code, text = yield self.s_client("-tls1_2", "-cipher", "ECDHE-PSK-AES128-CBC-SHA256")
        self.assertEqual(code, 0, text)
        self.assertIn("Ciphersuite: ECDHE-PSK-AES128-CBC-SHA256", text)
        self.assertIn("No peer certificate", text)

    @defer.inlineCallbacks
    def test_tls13_psk_always_with_ecdhe(self):
        # -allow_no_dhe_kex offers psk_ke (no forward secrecy) too: not taken.
        for extra in ((), ("-allow_no_dhe_kex",)):
            code, text = yield self.s_client("-tls1_3", *extra)
            self.assertEqual(code, 0, text)
            self.assertIn("Ciphersuite: TLS_AES_128_GCM_SHA256", text)
            self.assertIn("No peer certificate", text)  # the PSK, not a certificate, authenticated
            self.assertIn("Server Temp Key: X25519", text)  # (EC)DHE: forward secrecy
