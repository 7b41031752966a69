"""Why a TLS connection failed, in one readable line: no OpenSSL tuples,
no reprs."""

from __future__ import annotations

import datetime as dt

from OpenSSL import SSL
from twisted.internet import defer, error
from twisted.python.failure import Failure

from rserpool.security import pki
from rserpool.security.tlserrors import (
    CertificateRejected, certificate_names, connection_error_text, name_mismatch_text,
    ssl_error_text, verify_error_text,
)

NOW = dt.datetime.now(dt.timezone.utc)


def test_verify_errors():
    assert verify_error_text(20, 0).startswith("certificate verify failed: unknown CA")
    assert verify_error_text(10, 0) == "certificate verify failed: certificate expired"
    assert verify_error_text(23, 0) == "certificate verify failed: certificate revoked"
    assert verify_error_text(999, 0) == "certificate verify failed: OpenSSL verify error 999"


def test_name_mismatch_lists_what_the_certificate_is_for():
    ca = pki.create_ca("test CA", NOW)
    server = pki.create_server_certificate(ca, ["registrar.example", "127.0.0.1"], NOW)
    assert certificate_names(server.certificate) == ["registrar.example", "127.0.0.1"]
    assert name_mismatch_text("other.example", server.certificate) == \
        "name mismatch: expected other.example, certificate is for registrar.example, 127.0.0.1"
    assert name_mismatch_text("10.0.0.1", server.certificate).startswith(
        "IP address mismatch: expected 10.0.0.1, certificate is for ")


def test_ssl_errors_read_like_sentences():
    verify = SSL.Error([("SSL routines", "", "certificate verify failed")])
    assert ssl_error_text(verify) == "certificate verify failed"
    alert = SSL.Error([("SSL routines", "", "tlsv1 alert unknown ca")])
    assert ssl_error_text(alert) == "the peer does not trust our certificate (TLS alert: unknown CA)"
    odd = SSL.Error([("SSL routines", "", "something new")])
    assert ssl_error_text(odd) == "TLS error: something new"
    for text in (ssl_error_text(verify), ssl_error_text(alert), ssl_error_text(odd)):
        assert "[(" not in text and "'" not in text


def test_connection_errors():
    assert connection_error_text(Failure(error.ConnectionRefusedError())).startswith("connection refused")
    assert connection_error_text(error.TCPTimedOutError()) == "connection timed out"
    assert connection_error_text(defer.CancelledError()) == "cancelled"
    assert connection_error_text(Failure(CertificateRejected("certificate verify failed: x"))) == \
        "certificate verify failed: x"
    assert connection_error_text(error.ConnectionDone()) == "the peer closed the connection"
