"""Why a TLS connection failed, in one line a person can act on.

OpenSSL reports a refused certificate as ``[('SSL routines', '',
'certificate verify failed')]`` and service-identity a wrong name as
``VerificationError(errors=[DNSMismatch(...)])``.  The client's verify
callback (``rserpool.security.tls.ClientTLSOptions``) turns both into a
``CertificateRejected`` whose text says what is wrong ("certificate verify
failed: unknown CA ...", "name mismatch: expected X, certificate is for
Y"); ``connection_error_text`` does the same for every other way a
connection attempt ends (refused, timed out, an alert from the peer).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from cryptography import x509

__all__ = ["CertificateRejected", "connection_error_text", "name_mismatch_text",
           "ssl_error_text", "verify_error_text"]


class CertificateRejected(Exception):
    """The peer's certificate was refused; ``str()`` says why, in one line."""


# OpenSSL's X509_V_ERR_* codes, as a person would say them.
_UNKNOWN_CA = "unknown CA"
_VERIFY_ERRORS = {
    2: f"{_UNKNOWN_CA} (the issuer's certificate is not among the trust roots)",
    3: "no CRL for the issuer (CRL checking is on)",
    4: "the certificate's signature cannot be decrypted",
    7: "bad certificate signature",
    8: "bad CRL signature",
    9: "certificate not yet valid",
    10: "certificate expired",
    11: "CRL not yet valid",
    12: "CRL expired",
    18: f"{_UNKNOWN_CA} (a self-signed certificate that is not a trust root)",
    19: f"{_UNKNOWN_CA} (a self-signed certificate in the chain that is not a trust root)",
    20: f"{_UNKNOWN_CA} (the issuer is not among the trust roots)",
    21: f"{_UNKNOWN_CA} (cannot verify the certificate's signature: no issuer)",
    22: "certificate chain too long",
    23: "certificate revoked",
    24: "a CA certificate in the chain is not allowed to be a CA",
    25: "path length constraint exceeded",
    26: "certificate not meant for this purpose (extended key usage)",
    27: "certificate not trusted for this purpose",
    28: "certificate rejected",
}


def _subject(cert: Any) -> str:
    try:
        return cert.to_cryptography().subject.rfc4514_string() or "(empty subject)"
    except Exception:  # a pyOpenSSL X509 we cannot read: say nothing about it
        return "(unreadable subject)"


def verify_error_text(errno: int, depth: int, cert: Any = None) -> str:
    """OpenSSL's verify error ``errno`` for the certificate at ``depth`` of
    the chain (0: the peer's own)."""
    reason = _VERIFY_ERRORS.get(errno, f"OpenSSL verify error {errno}")
    where = "" if cert is None else (
        f" for {_subject(cert)}" if depth == 0 else f" for {_subject(cert)} (chain depth {depth})")
    return f"certificate verify failed: {reason}{where}"


def certificate_names(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a certificate is for (its SAN; the
    common name when it has none)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    names += [str(n) for n in san.get_values_for_type(x509.IPAddress)]
    return list(dict.fromkeys(names))  # once each, in order


def name_mismatch_text(expected: str, cert: x509.Certificate) -> str:
    names = certificate_names(cert)
    what = "IP address" if _is_ip(expected) else "name"
    return (f"{what} mismatch: expected {expected}, certificate is for "
            f"{', '.join(names) if names else 'no name'}")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# TLS alerts from the peer and local OpenSSL reasons, as a person would say them.
_SSL_REASONS = {
    "tlsv1 alert unknown ca": "the peer does not trust our certificate (TLS alert: unknown CA)",
    "sslv3 alert bad certificate": "the peer refused our certificate (TLS alert: bad certificate)",
    "sslv3 alert certificate revoked": "the peer says our certificate is revoked",
    "sslv3 alert certificate expired": "the peer says our certificate has expired",
    "sslv3 alert certificate unknown": "the peer refused our certificate (TLS alert: certificate unknown)",
    "tlsv13 alert certificate required": "the peer requires a client certificate",
    "tlsv1 alert access denied": "the peer denied access (TLS alert: access denied)",
    "sslv3 alert handshake failure": "TLS handshake failure (no common protocol version or cipher, "
                                     "or our certificate was refused)",
    "tlsv1 alert protocol version": "no TLS version both sides accept",
    "unsupported protocol": "no TLS version both sides accept",
    "wrong version number": "the peer does not speak TLS",
    "certificate verify failed": "certificate verify failed",
    "key values mismatch": "the private key does not match the certificate",
    "no shared cipher": "no cipher both sides accept",
}


def ssl_error_text(exc: Any) -> str:
    """An ``OpenSSL.SSL.Error`` (its ``args`` hold ``(library, function,
    reason)`` tuples) in one line."""
    reasons: list[str] = []
    for entry in (exc.args[0] if exc.args and isinstance(exc.args[0], list) else []):
        reason = entry[-1] if isinstance(entry, tuple) and entry else str(entry)
        text = _SSL_REASONS.get(str(reason).lower(), f"TLS error: {reason}")
        if text not in reasons:
            reasons.append(text)
    return "; ".join(reasons) if reasons else f"TLS error: {exc}"


def connection_error_text(error: Any) -> str:
    """Why a connection (attempt) ended, in one line: an exception or a
    twisted Failure."""
    from OpenSSL import SSL
    from twisted.internet import error as terror
    from twisted.internet.defer import CancelledError, TimeoutError as DeferredTimeout

    value = getattr(error, "value", error)
    if isinstance(value, CertificateRejected):
        return str(value)
    if isinstance(value, SSL.Error):
        return ssl_error_text(value)
    if isinstance(value, terror.ConnectionRefusedError):
        return "connection refused (nothing listens there)"
    if isinstance(value, (terror.TCPTimedOutError, terror.TimeoutError, DeferredTimeout)):
        return "connection timed out"
    if isinstance(value, terror.DNSLookupError):
        return f"DNS lookup failed ({value})"
    if isinstance(value, terror.NoRouteError):
        return "no route to host"
    if isinstance(value, CancelledError):
        return "cancelled"
    if isinstance(value, terror.ConnectionDone):
        return "the peer closed the connection"
    if isinstance(value, terror.ConnectionLost):
        return "the connection was lost"
    name = type(value).__name__
    if name in ("VerificationError", "CertificateError"):  # service-identity, unconverted
        return f"name mismatch ({value})"
    text = str(value)
    return text if text else name
