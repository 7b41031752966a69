"""CRL helpers (RFC 5280): load, verify against the issuer, check a cert.

Pure: no Twisted, no clock (``now`` is passed in).  For the application-level
revocation check and for telling an operator that a loaded CRL has expired
(OpenSSL's store rejects every peer once its CRL is past nextUpdate, with a
message that does not say so).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

__all__ = [
    "CrlError",
    "CrlFailure",
    "CrlInfo",
    "CrlRevocation",
    "check_certificate",
    "crl_info",
    "load_crl",
    "verify_crl",
]

MAX_CRL_SIZE = 16 * 1024 * 1024


class CrlFailure(enum.Enum):
    MALFORMED = "malformed"
    WRONG_ISSUER = "wrong-issuer"  # issuer name or CA mismatch
    BAD_SIGNATURE = "bad-signature"
    NOT_A_CRL_SIGNER = "not-a-crl-signer"  # issuer key usage lacks cRLSign
    UNSUPPORTED = "unsupported"  # delta or indirect CRL
    STALE = "stale"  # nextUpdate has passed
    NOT_YET_VALID = "not-yet-valid"  # lastUpdate in the future


class CrlError(Exception):
    def __init__(self, failure: CrlFailure, detail: str) -> None:
        super().__init__(f"{failure.value}: {detail}")
        self.failure = failure
        self.detail = detail


@dataclass(frozen=True, slots=True)
class CrlInfo:
    """What an operator needs to know about a loaded CRL at ``now``."""

    issuer: str
    last_update: datetime
    next_update: datetime | None
    revoked_count: int
    expired: bool
    expires_in: timedelta | None  # negative when expired; None without nextUpdate


@dataclass(frozen=True, slots=True)
class CrlRevocation:
    """A certificate's entry in a CRL."""

    serial: int
    revocation_date: datetime
    reason: x509.ReasonFlags | None


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """Load a PEM or DER CRL; raise ``CrlError(MALFORMED)`` otherwise."""
    if len(data) > MAX_CRL_SIZE:
        raise CrlError(CrlFailure.MALFORMED, f"{len(data)} bytes is over the limit")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CrlError(CrlFailure.MALFORMED, str(exc)) from None


def crl_info(crl: x509.CertificateRevocationList, now: datetime) -> CrlInfo:
    """Summary of ``crl`` at ``now`` (no verification)."""
    next_update = crl.next_update_utc
    expires_in = next_update - now if next_update is not None else None
    return CrlInfo(
        issuer=crl.issuer.rfc4514_string(),
        last_update=crl.last_update_utc,
        next_update=next_update,
        revoked_count=len(crl),
        expired=next_update is not None and now > next_update,
        expires_in=expires_in,
    )


def verify_crl(
    crl: x509.CertificateRevocationList,
    issuer: x509.Certificate,
    now: datetime,
    clock_skew: timedelta = timedelta(minutes=5),
    require_next_update: bool = True,
) -> CrlInfo:
    """Verify ``crl``'s issuer, signature and freshness; raise ``CrlError``.

    Only complete, direct CRLs are supported (no delta or indirect CRLs).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if crl.issuer != issuer.subject:
        raise CrlError(CrlFailure.WRONG_ISSUER, "CRL issuer is not the certificate's subject")
    try:
        valid = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise CrlError(CrlFailure.BAD_SIGNATURE, str(exc)) from None
    if not valid:
        raise CrlError(CrlFailure.BAD_SIGNATURE, "CRL signature does not verify with the issuer's key")
    try:
        key_usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        key_usage = None
    if key_usage is not None and not key_usage.crl_sign:
        raise CrlError(CrlFailure.NOT_A_CRL_SIGNER, "issuer key usage lacks cRLSign")
    for extension in crl.extensions:
        if isinstance(extension.value, x509.DeltaCRLIndicator):
            raise CrlError(CrlFailure.UNSUPPORTED, "delta CRLs are not supported")
        if isinstance(extension.value, x509.IssuingDistributionPoint) and extension.value.indirect_crl:
            raise CrlError(CrlFailure.UNSUPPORTED, "indirect CRLs are not supported")
    info = crl_info(crl, now)
    if info.last_update > now + clock_skew:
        raise CrlError(CrlFailure.NOT_YET_VALID, f"lastUpdate {info.last_update.isoformat()} is in the future")
    if info.next_update is None:
        if require_next_update:
            raise CrlError(CrlFailure.STALE, "CRL has no nextUpdate")
    elif now > info.next_update + clock_skew:
        raise CrlError(CrlFailure.STALE, f"CRL expired at {info.next_update.isoformat()}")
    return info


def check_certificate(
    cert: x509.Certificate,
    crl: x509.CertificateRevocationList,
    issuer: x509.Certificate,
    now: datetime,
    clock_skew: timedelta = timedelta(minutes=5),
) -> CrlRevocation | None:
    """Verify ``crl`` (see ``verify_crl``), then look ``cert`` up in it.

    Returns the revocation entry, or None when ``cert`` is not revoked.
    Raises ``CrlError`` when the CRL cannot be trusted or is not ``cert``'s.
    """
    if cert.issuer != issuer.subject:
        raise CrlError(CrlFailure.WRONG_ISSUER, "certificate is not issued by the CRL's issuer")
    verify_crl(crl, issuer, now, clock_skew)
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    if entry is None:
        return None
    reason: x509.ReasonFlags | None = None
    try:
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        pass
    return CrlRevocation(entry.serial_number, entry.revocation_date_utc, reason)
