"""OcspChecker against a real ``openssl ocsp`` responder on loopback.

Runs under plain pytest through ``twisted.trial.unittest.TestCase`` (each
test returns a Deferred that trial drives on the global reactor).  The
responder is a subprocess started per test on a free port and killed in the
clean-up.  OpenSSL 3.0's ``-port`` takes a number only, so the responder
listens on all interfaces; the checker only talks to 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from twisted.internet import defer
from twisted.trial import unittest

from rserpool.security.ocsp import FailurePolicy, OcspCache, OcspFailure, OcspOptions, OcspStatus
from rserpool.security.ocsp_client import OcspChecker
from tests.conftest import require_tool
from tests.test_security_ocsp import Pki, build_pki, make_cert

pytestmark = pytest.mark.integration

STARTUP_ATTEMPTS = 200  # connect attempts, 25 ms apart: at most about 5 s


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def probe(port: int) -> bool:
    """Is the responder answering HTTP?  (A probe must send a request:
    OpenSSL 3.0's responder hangs on a connection closed without one.)"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/")
    except OSError:
        return False


def index_line(cert: x509.Certificate, revoked_at: datetime | None = None, reason: str = "") -> str:
    """One line of an ``openssl ca`` index.txt."""
    expiry = cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
    serial = f"{cert.serial_number:X}"
    if len(serial) % 2:
        serial = "0" + serial
    subject = "/" + "/".join(f"CN={a.value}" for a in cert.subject)
    if revoked_at is None:
        return f"V\t{expiry}\t\t{serial}\tunknown\t{subject}\n"
    revocation = revoked_at.strftime("%y%m%d%H%M%SZ") + (f",{reason}" if reason else "")
    return f"R\t{expiry}\t{revocation}\t{serial}\tunknown\t{subject}\n"


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class OpensslResponderTests(unittest.TestCase):
    timeout = 60

    @pytest.fixture(autouse=True)
    def _openssl(self) -> None:
        self.openssl = require_tool("openssl")

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor = reactor
        # Not self.mktemp(): under pytest it would write into the checkout.
        self.dir = tempfile.mkdtemp(prefix="rserpool-ocsp-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        now = datetime.now(timezone.utc).replace(microsecond=0)
        self.pki: Pki = build_pki(ocsp_url=self.url, not_before=now - timedelta(days=1))
        self.revoked_at = now - timedelta(hours=2)
        self.write("ca.pem", pem(self.pki.ca))
        self.write("ocsp.pem", pem(self.pki.responder))
        self.write("ocsp.key", key_pem(self.pki.responder_key))
        self.write(
            "index.txt",
            (
                index_line(self.pki.responder)
                + index_line(self.pki.client)
                + index_line(self.pki.other, self.revoked_at, "keyCompromise")
            ).encode(),
        )
        self.process: subprocess.Popen[bytes] | None = None

    def write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "wb") as handle:
            handle.write(data)
        return path

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def start_responder(self, signer: str = "ocsp.pem", signer_key: str = "ocsp.key", *extra: str) -> None:
        log = open(self.path("responder.log"), "wb")
        self.addCleanup(log.close)
        self.process = subprocess.Popen(
            [
                self.openssl, "ocsp", "-index", self.path("index.txt"), "-port", str(self.port),
                "-rsigner", self.path(signer), "-rkey", self.path(signer_key), "-CA", self.path("ca.pem"),
                "-nmin", "5", "-ignore_err", *extra,
            ],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        self.addCleanup(self.stop_responder)
        for _ in range(STARTUP_ATTEMPTS):
            if self.process.poll() is not None:
                self.fail(f"openssl ocsp exited: {self.log_text()}")
            if probe(self.port):
                return
            time.sleep(0.025)
        self.fail(f"openssl ocsp did not accept connections: {self.log_text()}")

    def stop_responder(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=10)

    def log_text(self) -> str:
        with open(self.path("responder.log"), "rb") as handle:
            return handle.read().decode(errors="replace")[-2000:]

    def checker(self, **kwargs) -> OcspChecker:
        kwargs.setdefault("timeout", 10.0)
        kwargs.setdefault("cache", OcspCache())
        return OcspChecker(self.reactor, **kwargs)

    @defer.inlineCallbacks
    def test_good(self):
        self.start_responder()
        checker = self.checker(policy=FailurePolicy.HARD_FAIL)
        decision = yield checker.check(self.pki.client, self.pki.ca)
        self.assertTrue(decision.allowed, decision.reason)
        self.assertIs(decision.status, OcspStatus.GOOD)
        result = decision.result
        self.assertTrue(result.delegated_responder)
        self.assertIsNotNone(result.next_update)
        self.assertLessEqual(result.next_update - result.this_update, timedelta(minutes=5, seconds=1))
        # The second check is answered from the cache, with the responder gone.
        self.stop_responder()
        again = yield checker.check(self.pki.client, self.pki.ca)
        self.assertTrue(again.allowed and again.from_cache)

    @defer.inlineCallbacks
    def test_revoked(self):
        self.start_responder()
        decision = yield self.checker(policy=FailurePolicy.SOFT_FAIL).check(self.pki.other, self.pki.ca)
        self.assertFalse(decision.allowed)
        self.assertIs(decision.status, OcspStatus.REVOKED)
        self.assertEqual(decision.result.revocation_time, self.revoked_at)
        self.assertIs(decision.result.revocation_reason, x509.ReasonFlags.key_compromise)

    @defer.inlineCallbacks
    def test_override_and_nonce_required(self):
        self.start_responder()
        # openssl ocsp echoes the nonce: requiring it must still succeed.
        checker = self.checker(
            responder_override=self.url, options=OcspOptions(require_nonce=True), policy=FailurePolicy.HARD_FAIL
        )
        decision = yield checker.check(self.pki.client, self.pki.ca)
        self.assertIs(decision.status, OcspStatus.GOOD)

    @defer.inlineCallbacks
    def test_responder_signing_with_a_plain_certificate_is_refused(self):
        # A certificate of the right CA but without id-kp-OCSPSigning.
        plain = make_cert(
            "not a responder", self.pki.client_key, self.pki.ca, self.pki.ca_key, serial=0x77,
            eku=[ExtendedKeyUsageOID.CLIENT_AUTH], not_before=datetime.now(timezone.utc) - timedelta(days=1),
        )
        self.write("plain.pem", pem(plain))
        self.write("plain.key", key_pem(self.pki.client_key))
        self.start_responder("plain.pem", "plain.key")
        decision = yield self.checker(policy=FailurePolicy.HARD_FAIL).check(self.pki.client, self.pki.ca)
        self.assertFalse(decision.allowed)
        self.assertIs(decision.failure, OcspFailure.UNAUTHORIZED_RESPONDER)

    @defer.inlineCallbacks
    def test_rsa_pss_signed_responses(self):
        key = rsa.generate_private_key(65537, 2048)
        responder = make_cert(
            "RSA responder", key, self.pki.ca, self.pki.ca_key, serial=0x78,
            eku=[ExtendedKeyUsageOID.OCSP_SIGNING], not_before=datetime.now(timezone.utc) - timedelta(days=1),
        )
        self.write("rsa.pem", pem(responder))
        self.write("rsa.key", key_pem(key))
        self.start_responder("rsa.pem", "rsa.key", "-rsigopt", "rsa_padding_mode:pss", "-rmd", "sha384")
        checker = self.checker(policy=FailurePolicy.HARD_FAIL)
        good = yield checker.check(self.pki.client, self.pki.ca)
        revoked = yield checker.check(self.pki.other, self.pki.ca)
        self.assertIs(good.status, OcspStatus.GOOD, good.reason)
        self.assertIs(revoked.status, OcspStatus.REVOKED, revoked.reason)

    @defer.inlineCallbacks
    def test_responder_stopped(self):
        self.start_responder()
        self.stop_responder()
        soft = yield self.checker(policy=FailurePolicy.SOFT_FAIL).check(self.pki.client, self.pki.ca)
        self.assertTrue(soft.allowed and soft.soft_failed)
        self.assertIs(soft.failure, OcspFailure.UNREACHABLE)
        hard = yield self.checker(policy=FailurePolicy.HARD_FAIL).check(self.pki.client, self.pki.ca)
        self.assertFalse(hard.allowed)
        self.assertIs(hard.failure, OcspFailure.UNREACHABLE)
        # Even a revoked certificate is not reported revoked without an answer.
        self.assertIsNone(hard.status)


def test_index_line_format() -> None:
    pki = build_pki()
    line = index_line(pki.other, datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "keyCompromise")
    assert line.split("\t")[:4] == ["R", pki.other.not_valid_after_utc.strftime("%y%m%d%H%M%SZ"),
                                    "260102030405Z,keyCompromise", "1002"]
