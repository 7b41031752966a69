"""Reusable TLS test helpers: a throwaway PKI and a loopback TLS connection runner.

``make_test_pki(directory)`` writes a complete PKI (good and bad certificates,
CRLs) into ``directory`` and returns a :class:`TestPKI` of paths and objects.
Use it from a pytest fixture (``make_test_pki(tmp_path)``) or from a trial
``setUpClass``.  The validity windows are relative to ``now`` (default: the
wall clock, since OpenSSL checks certificates against the real time).

``connect_pair(reactor, server_creator, client_creator)`` starts a TLS server
on 127.0.0.1 port 0, connects one client, exchanges one greeting and returns a
Deferred firing with a :class:`PairResult` once both ends have closed and the
port has stopped listening (no dirty reactor).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from twisted.internet import defer, endpoints, protocol
from twisted.internet.interfaces import IHandshakeListener
from twisted.python.failure import Failure
from zope.interface import implementer

from rserpool.security import pki, tls

SERVER_NAMES = ("localhost", "127.0.0.1", "::1", "registrar.rserpool.test")
GREETING = b"welcome\n"
EXPORTER_LABEL = b"EXPERIMENTAL-rserpool-test"


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path
    issued: pki.IssuedCertificate

    @property
    def pair(self) -> tuple[Path, Path]:
        return (self.cert, self.key)

    @property
    def serial(self) -> int:
        return self.issued.serial


@dataclass(frozen=True)
class TestPKI:
    __test__ = False  # not a pytest test class

    directory: Path
    now: dt.datetime
    ca: CertFiles
    rogue_ca: CertFiles
    server: CertFiles  # SERVER_NAMES, issued by ca
    rogue_server: CertFiles  # same names, issued by rogue_ca
    pe1: CertFiles
    pe2: CertFiles
    pe_revoked: CertFiles
    pe_expired: CertFiles
    pe_future: CertFiles
    pe_rogue: CertFiles  # issued by rogue_ca
    pu1: CertFiles
    ocsp: CertFiles
    crl_empty: Path  # ca's CRL revoking nothing
    crl_revoked: Path  # ca's CRL revoking pe_revoked
    extra: dict[str, Any] = field(default_factory=dict)


def _store(directory: Path, name: str, issued: pki.IssuedCertificate) -> CertFiles:
    cert_path = directory / f"{name}.pem"
    key_path = directory / f"{name}.key"
    pki.write_certificate(cert_path, issued.certificate, *issued.chain)
    pki.write_private_key(key_path, issued.private_key)
    return CertFiles(cert_path, key_path, issued)


def make_test_pki(directory: Path, now: dt.datetime | None = None) -> TestPKI:
    """Create the whole test PKI under ``directory`` (about 15 EC keys, ~50 ms)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca = pki.create_ca("rserpool test CA", now)
    rogue = pki.create_ca("rogue CA", now)
    day = dt.timedelta(days=1)
    ocsp_url = "http://127.0.0.1:8888/"
    issued = {
        "ca": ca,
        "rogue_ca": rogue,
        "server": pki.create_server_certificate(ca, SERVER_NAMES, now, ocsp_url=ocsp_url),
        "rogue_server": pki.create_server_certificate(rogue, SERVER_NAMES, now),
        "pe1": pki.create_client_certificate(ca, "pe1", now, ocsp_url=ocsp_url),
        "pe2": pki.create_client_certificate(ca, "pe2", now),
        "pe_revoked": pki.create_client_certificate(ca, "pe-revoked", now),
        "pe_expired": pki.create_client_certificate(
            ca, "pe-expired", now, not_before=now - 30 * day, not_after=now - day
        ),
        "pe_future": pki.create_client_certificate(
            ca, "pe-future", now, not_before=now + day, not_after=now + 30 * day
        ),
        "pe_rogue": pki.create_client_certificate(rogue, "pe1", now),
        "pu1": pki.create_client_certificate(ca, "pu1", now, role="pu"),
        "ocsp": pki.create_ocsp_responder_certificate(ca, now),
    }
    files = {name: _store(directory, name, item) for name, item in issued.items()}
    crl_empty = pki.write_crl(directory / "crl-empty.pem", pki.create_crl(ca, [], now))
    crl_revoked = pki.write_crl(
        directory / "crl-revoked.pem",
        pki.create_crl(ca, [issued["pe_revoked"].serial], now, crl_number=2),
    )
    return TestPKI(directory=directory, now=now, crl_empty=crl_empty,
                   crl_revoked=crl_revoked, **files)


# --- loopback connection runner -------------------------------------------------


@dataclass
class PairResult:
    client_ok: bool = False  # the client received the server's greeting
    client_reason: Failure | None = None
    client_handshake: bool = False
    client_exporter: bytes | None = None
    client_version: str | None = None
    server_handshake: bool = False
    server_reason: Failure | None = None
    server_exporter: bytes | None = None
    server_peer: x509.Certificate | None = None

    @property
    def ok(self) -> bool:
        return self.client_ok and self.server_handshake


@implementer(IHandshakeListener)
class _ServerProtocol(protocol.Protocol):
    def __init__(self, result: PairResult, done: defer.Deferred[None]) -> None:
        self.result = result
        self.done = done

    def handshakeCompleted(self) -> None:
        self.result.server_handshake = True
        self.result.server_peer = tls.peer_certificate(self.transport)
        self.result.server_exporter = tls.export_keying_material(
            self.transport, EXPORTER_LABEL, 32
        )
        self.transport.write(GREETING)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.result.server_reason = reason
        self.done.callback(None)


@implementer(IHandshakeListener)
class _ClientProtocol(protocol.Protocol):
    def __init__(self, result: PairResult, done: defer.Deferred[None]) -> None:
        self.result = result
        self.done = done
        self.buffer = b""

    def handshakeCompleted(self) -> None:
        self.result.client_handshake = True

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if self.buffer == GREETING:
            self.result.client_ok = True
            self.result.client_exporter = tls.export_keying_material(
                self.transport, EXPORTER_LABEL, 32
            )
            self.result.client_version = tls.negotiated_protocol_version(self.transport)
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.result.client_reason = reason
        self.done.callback(None)


class _OneShotServerFactory(protocol.Factory):
    def __init__(self, result: PairResult, done: defer.Deferred[None]) -> None:
        self.result = result
        self.done = done

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        proto = _ServerProtocol(self.result, self.done)
        proto.factory = self
        return proto


async def _connect_pair(reactor: Any, server_creator: Any, client_creator: Any) -> PairResult:
    result = PairResult()
    server_done: defer.Deferred[None] = defer.Deferred()
    client_done: defer.Deferred[None] = defer.Deferred()
    server_ep = endpoints.SSL4ServerEndpoint(reactor, 0, server_creator, interface="127.0.0.1")
    port = await server_ep.listen(_OneShotServerFactory(result, server_done))
    try:
        client_ep = endpoints.wrapClientTLS(
            client_creator,
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, timeout=5),
        )
        await endpoints.connectProtocol(client_ep, _ClientProtocol(result, client_done))
        await defer.gatherResults([server_done, client_done])
    finally:
        await port.stopListening()
    return result


def connect_pair(reactor: Any, server_creator: Any, client_creator: Any) -> defer.Deferred[PairResult]:
    """One TLS connection over loopback; fires when everything is closed again."""
    return defer.ensureDeferred(_connect_pair(reactor, server_creator, client_creator))


def reason_text(result: PairResult) -> str:
    """Both ends' close reasons as one string (for assertions on OpenSSL alerts)."""
    parts = []
    for reason in (result.client_reason, result.server_reason):
        if reason is not None:
            parts.append(f"{type(reason.value).__name__}: {reason.value!r}")
    return " | ".join(parts)
