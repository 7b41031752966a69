"""rserpool.security._internals: each capability, present and missing."""

from __future__ import annotations

import hashlib

import pytest
from OpenSSL import SSL, crypto
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from rserpool.security import _internals, psk, tls
from rserpool.service import auth as service_auth
from rserpool.service import tlsfactory
from tests.tlshelpers import make_test_pki

#: OpenSSL 3's SSL_OP_NO_EXTENDED_MASTER_SECRET (pyOpenSSL has no name for it).
OP_NO_EXTENDED_MASTER_SECRET = 0x1


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_test_pki(tmp_path_factory.mktemp("internals"))


@pytest.fixture
def logged():
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def lines(events, level=None):
    return [formatEvent(e) for e in events
            if e.get("log_namespace") == "rserpool.security._internals"
            and (level is None or e.get("log_level") == level)]


def handshake(server_context, client_context):
    """Two pyOpenSSL connections over memory BIOs, after their handshake."""
    server = SSL.Connection(server_context, None)
    server.set_accept_state()
    client = SSL.Connection(client_context, None)
    client.set_connect_state()
    for _ in range(20):
        for one, other in ((client, server), (server, client)):
            try:
                one.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                other.bio_write(one.bio_read(65536))
            except SSL.WantReadError:
                pass
        if server.get_finished() is not None and client.get_finished() is not None:
            return server, client
    raise AssertionError("the in-memory handshake did not finish")


def contexts(pki, *, max_version=None, server_options=0):
    server = tls.server_options(pki.server.cert, pki.server.key, [pki.ca.cert], require_client_cert=False)
    context = server.context
    if server_options:
        context.set_options(server_options)
    client = tls.client_options("localhost", [pki.ca.cert], max_version=max_version)
    return context, client.context


def missing(name, security=True):
    return _internals.Capability(name, False, "not bound by this pyOpenSSL (test)", "the test fallback",
                                 security)


# -- every capability is there on the versions the project pins -------------------------------


@pytest.mark.parametrize("name", ["EXTENDED_MASTER", "PSK", "FAST_HANDSHAKE", "FAST_TLS_IO", "CERT_DIGEST"])
def test_capability_present_on_this_pyopenssl_and_twisted(name):
    capability = getattr(_internals, name)
    assert capability.available, capability.reason
    assert capability.reason == ""


def test_a_missing_capability_is_logged_once_at_its_level(logged):
    security = missing("security feature")
    cost = missing("cost feature", security=False)
    for _ in range(3):
        security.note_missing()
        cost.note_missing()
    assert len(lines(logged, LogLevel.warn)) == 1
    assert len(lines(logged, LogLevel.debug)) == 1  # a cost only: not shown by default
    assert lines(logged, LogLevel.info) == []
    (warning,) = lines(logged, LogLevel.warn)
    assert "security feature unavailable (not bound by this pyOpenSSL (test)): the test fallback" == warning
    with pytest.raises(_internals.CapabilityUnavailable, match="cost feature"):
        cost.require()


# -- extended master secret ----------------------------------------------------------------------


def test_extended_master_secret_is_read_from_the_connection(pki):
    server, client = handshake(*contexts(pki, max_version=tls.TLSVersion.TLSv1_2))
    assert server.get_protocol_version_name() == "TLSv1.2"
    assert _internals.extended_master_secret(server) is True
    server, client = handshake(*contexts(pki, max_version=tls.TLSVersion.TLSv1_2,
                                         server_options=OP_NO_EXTENDED_MASTER_SECRET))
    assert server.get_protocol_version_name() == "TLSv1.2"
    assert _internals.extended_master_secret(server) is False


def test_without_the_query_tls12_cannot_be_bound_and_says_why(pki, monkeypatch, logged):
    monkeypatch.setattr(_internals, "EXTENDED_MASTER", missing("extended master secret query"))
    server, _ = handshake(*contexts(pki, max_version=tls.TLSVersion.TLSv1_2))
    assert _internals.extended_master_secret(server) is None

    class Transport:
        def getHandle(self):
            return server

    with pytest.raises(service_auth.ChannelBindingError, match="cannot be told"):
        service_auth.channel_binding(Transport())
    with pytest.raises(service_auth.ChannelBindingError):
        service_auth.channel_binding(Transport())
    assert len(lines(logged, LogLevel.warn)) == 1  # once, however often it is asked


def test_tls13_is_bound_without_the_query(pki, monkeypatch):
    monkeypatch.setattr(_internals, "EXTENDED_MASTER", missing("extended master secret query"))
    server, _ = handshake(*contexts(pki))
    assert server.get_protocol_version_name() == "TLSv1.3"

    class Transport:
        def getHandle(self):
            return server

    assert len(service_auth.channel_binding(Transport())) == 32


# -- TLS-PSK ------------------------------------------------------------------------------------------


def test_psk_functions_refuse_without_the_capability(monkeypatch):
    monkeypatch.setattr(_internals, "PSK", missing("TLS-PSK"))
    context = SSL.Context(SSL.TLS_METHOD)
    for call in (lambda: _internals.enable_psk_server(context, lambda name, connection: None, 16),
                 lambda: _internals.enable_psk_client(context, b"pe", bytes(16)),
                 lambda: _internals.set_psk_identity_hint(context, b"hint"),
                 lambda: _internals.psk_server_connection(context)):
        with pytest.raises(_internals.CapabilityUnavailable):
            call()
    assert _internals.session_reused(SSL.Connection(context, None)) is False


def test_psk_server_callback_names_the_identity_it_gave_a_key(pki):
    store = psk.FilePskStore({"pe-a": bytes(range(32))})
    options = psk.server_options(pki.server.cert, pki.server.key, [pki.ca.cert], psk_store=store)
    client = psk.client_options("pe-a", bytes(range(32)))
    server = options.serverConnectionForTLS(None)
    server.set_accept_state()
    client_connection = client.clientConnectionForTLS(None)
    client_connection.set_connect_state()
    for _ in range(20):
        for one, other in ((client_connection, server), (server, client_connection)):
            try:
                one.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                other.bio_write(one.bio_read(65536))
            except SSL.WantReadError:
                pass
    assert _internals.psk_identity_accepted(server) == "pe-a"
    assert _internals.session_reused(server) is True
    assert psk.psk_identity(server) == "pe-a"


# -- TLS 1.3 ticket count -------------------------------------------------------------------------


def test_ticket_count_falls_back_with_a_logged_reason(monkeypatch, logged):
    monkeypatch.setattr(_internals, "NUM_TICKETS", missing("TLS 1.3 ticket count", security=False))
    context = SSL.Context(SSL.TLS_METHOD)
    assert _internals.disable_tickets(context) is False
    assert _internals.disable_tickets(context) is False
    (line,) = lines(logged, LogLevel.debug)
    assert "TLS 1.3 ticket count unavailable" in line


def test_ticket_count_reports_what_this_pyopenssl_allows(pki):
    options = tls.server_options(pki.server.cert, pki.server.key, [pki.ca.cert], require_client_cert=False)
    assert options.tickets_disabled is _internals.NUM_TICKETS.available
    if not _internals.NUM_TICKETS.available:
        assert "SSL_CTX_set_num_tickets" in _internals.NUM_TICKETS.reason


# -- the fast server TLS protocol ---------------------------------------------------------------------


class _Record(Protocol):
    def connectionMade(self):
        self.received = bytearray()

    def dataReceived(self, data):
        self.received += data


def _serve_in_memory(pki, fast_io):
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    options = tls.server_options(pki.server.cert, pki.server.key, [pki.ca.cert], require_client_cert=False)
    factory = tlsfactory.TLSServerFactory(options, Factory.forProtocol(_Record), Clock())
    address = IPv4Address("TCP", "127.0.0.1", 40000)
    server = factory.buildProtocol(address)
    server.fast_io = fast_io
    transport = StringTransport(peerAddress=address)
    server.makeConnection(transport)
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_verify(SSL.VERIFY_NONE)
    client = SSL.Connection(context, None)
    client.set_connect_state()
    for _ in range(10):
        try:
            client.do_handshake()
        except SSL.WantReadError:
            pass
        try:
            server.dataReceived(client.bio_read(65536))
        except SSL.WantReadError:
            pass
        if transport.value():
            client.bio_write(transport.value())
            transport.clear()
    client.send(b"one;two;" * 1000)
    server.dataReceived(client.bio_read(1 << 20))
    return server


def test_without_fast_io_the_protocol_uses_twisteds_loops(pki):
    fast = _serve_in_memory(pki, True)
    stock = _serve_in_memory(pki, False)
    assert fast._ssl_ptr is not None and stock._ssl_ptr is None
    assert bytes(fast.wrappedProtocol.received) == bytes(stock.wrappedProtocol.received) == b"one;two;" * 1000


def test_a_missing_shortcut_is_logged_when_a_factory_is_made(pki, monkeypatch, logged):
    monkeypatch.setattr(_internals, "FAST_TLS_IO", missing("fast TLS read/flush", security=False))
    options = tls.server_options(pki.server.cert, pki.server.key, [pki.ca.cert], require_client_cert=False)
    tlsfactory.TLSServerFactory(options, Factory.forProtocol(_Record), Clock())
    tlsfactory.TLSServerFactory(options, Factory.forProtocol(_Record), Clock())
    assert [line for line in lines(logged, LogLevel.debug) if "fast TLS read/flush" in line] == [
        "fast TLS read/flush unavailable (not bound by this pyOpenSSL (test)): the test fallback"]


# -- certificate digests ---------------------------------------------------------------------------


def test_certificate_digest_is_present_and_is_the_sha256_of_the_der(pki):
    assert _internals.CERT_DIGEST.available, _internals.CERT_DIGEST.reason
    for files in (pki.pe1, pki.server, pki.ca):
        cert = crypto.load_certificate(crypto.FILETYPE_PEM, files.cert.read_bytes())
        expected = hashlib.sha256(crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)).digest()
        assert _internals.certificate_sha256(cert) == expected


def test_without_the_one_call_digest_the_der_is_hashed_with_a_logged_reason(pki, monkeypatch, logged):
    monkeypatch.setattr(_internals, "CERT_DIGEST", missing("certificate digest in one call", security=False))
    monkeypatch.setattr(_internals, "_SHA256", None)
    cert = crypto.load_certificate(crypto.FILETYPE_PEM, pki.pe1.cert.read_bytes())
    expected = hashlib.sha256(crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)).digest()
    assert _internals.certificate_sha256(cert) == expected
    assert _internals.certificate_sha256(cert) == expected
    (line,) = lines(logged, LogLevel.debug)
    assert line.startswith("certificate digest in one call unavailable")
