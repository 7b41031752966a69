"""OCSP (RFC 6960) for client and server certificates: the pure core.

This module builds OCSP requests, **verifies** OCSP responses (the
``cryptography`` package parses them but checks nothing), caches verified
answers until their ``nextUpdate`` and turns an answer or a failure into an
allow/refuse decision under a soft-fail or hard-fail policy.

No Twisted, no sockets, no clock: every function that needs the time takes
``now`` (an aware ``datetime``).  ``rserpool.security.ocsp_client`` is the
Twisted shell that fetches responses over HTTP.

What ``verify_response`` checks (see ``docs/revocation.md``):

* the response status is ``successful`` and the response is a basic response;
* a single response matches the certificate's CertID (issuer name hash,
  issuer key hash, serial number), computed with the hash the response uses;
* the responder named in the response (by name or key hash) is the issuing
  CA itself, or a certificate carried in the response that is directly issued
  by that CA, has the id-kp-OCSPSigning extended key usage, allows digital
  signatures (if it has a key usage extension) and is within its validity;
* the signature over ``tbsResponseData`` with the responder's key (ECDSA,
  RSA PKCS#1 v1.5, RSASSA-PSS, Ed25519, Ed448), MD5 and SHA-1 refused;
* freshness: ``thisUpdate <= now + skew`` and ``now <= nextUpdate + skew``;
  without ``nextUpdate`` only ``now <= thisUpdate + max_age``;
* the nonce, when one was sent and the responder echoes one.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp as x509_ocsp
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    SignatureAlgorithmOID,
)

from rserpool.security.der import DerError, pss_parameters, public_key_bits

__all__ = [
    "CertKey",
    "FailurePolicy",
    "OcspCache",
    "OcspDecision",
    "OcspError",
    "OcspFailure",
    "OcspOptions",
    "OcspResult",
    "OcspStatus",
    "build_request",
    "cert_key",
    "check_responder_url",
    "decide",
    "responder_url",
    "verify_response",
]

OCSP_REQUEST_CONTENT_TYPE = "application/ocsp-request"
OCSP_RESPONSE_CONTENT_TYPE = "application/ocsp-response"
MAX_NONCE_LENGTH = 32  # RFC 8954: 1 to 32 octets
MAX_RESPONSE_SIZE = 64 * 1024


class OcspStatus(enum.Enum):
    """The certificate status a verified response gives."""

    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


class OcspFailure(enum.Enum):
    """Why no verified answer could be had (never means "revoked")."""

    NO_RESPONDER = "no-responder"  # no AIA OCSP URL and no override
    BAD_URL = "bad-url"  # not http://, or not an allowed host
    UNREACHABLE = "unreachable"  # connection refused, reset, DNS...
    TIMEOUT = "timeout"
    HTTP_ERROR = "http-error"  # HTTP status other than 200
    TOO_LARGE = "too-large"  # response body over the size limit
    MALFORMED = "malformed"  # not a DER OCSP response
    UNSUCCESSFUL = "unsuccessful"  # responseStatus other than successful
    CERT_ID_MISMATCH = "cert-id-mismatch"
    UNKNOWN_RESPONDER = "unknown-responder"  # responder ID matches no cert
    UNAUTHORIZED_RESPONDER = "unauthorized-responder"
    BAD_SIGNATURE = "bad-signature"
    UNSUPPORTED_ALGORITHM = "unsupported-algorithm"
    STALE = "stale"
    NOT_YET_VALID = "not-yet-valid"
    NONCE_MISMATCH = "nonce-mismatch"


class OcspError(Exception):
    """OCSP gave no verified answer; ``failure`` says why."""

    def __init__(self, failure: OcspFailure, detail: str) -> None:
        super().__init__(f"{failure.value}: {detail}")
        self.failure = failure
        self.detail = detail


class FailurePolicy(enum.Enum):
    """What to do when no verified GOOD/REVOKED answer can be had."""

    SOFT_FAIL = "soft_fail"  # allow, log a warning
    HARD_FAIL = "hard_fail"  # refuse


@dataclass(frozen=True, slots=True)
class OcspOptions:
    """Verification settings.

    ``clock_skew`` is tolerated on both sides of the validity interval;
    ``max_age`` bounds how long a response without ``nextUpdate`` is
    accepted (and cached) after its ``thisUpdate``; ``require_nonce``
    refuses a response that does not echo the nonce sent.
    """

    clock_skew: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(minutes=15)
    require_nonce: bool = False

    def __post_init__(self) -> None:
        if self.clock_skew < timedelta(0) or self.max_age < timedelta(0):
            raise ValueError("clock_skew and max_age must not be negative")


@dataclass(frozen=True, slots=True)
class CertKey:
    """Cache key: SHA-1 hash of the issuer's key and the serial number."""

    issuer_key_hash: bytes
    serial: int


@dataclass(frozen=True, slots=True)
class OcspResult:
    """A verified single response for one certificate."""

    status: OcspStatus
    serial: int
    this_update: datetime
    next_update: datetime | None
    produced_at: datetime
    valid_until: datetime  # next_update, or this_update + max_age
    revocation_time: datetime | None = None
    revocation_reason: x509.ReasonFlags | None = None
    delegated_responder: bool = False


@dataclass(frozen=True, slots=True)
class OcspDecision:
    """Allow or refuse a peer certificate, and why."""

    allowed: bool
    status: OcspStatus | None  # None when no verified answer
    failure: OcspFailure | None  # set when no verified answer
    reason: str
    result: OcspResult | None = None
    from_cache: bool = False
    soft_failed: bool = False  # allowed only because of SOFT_FAIL: log it


# --------------------------------------------------------------------------
# Requests, responder URLs, cache keys


def _key_hash(public_key: object, algorithm: hashes.HashAlgorithm) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(public_key_bits(public_key))
    return digest.finalize()


def _name_hash(name: x509.Name, algorithm: hashes.HashAlgorithm) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(name.public_bytes())
    return digest.finalize()


def cert_key(cert: x509.Certificate, issuer: x509.Certificate) -> CertKey:
    """The cache key of ``cert``: (SHA-1 of the issuer's key bits, serial)."""
    return CertKey(_key_hash(issuer.public_key(), hashes.SHA1()), cert.serial_number)


def build_request(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    nonce: bytes | None = None,
    algorithm: hashes.HashAlgorithm | None = None,
) -> bytes:
    """DER OCSP request for ``cert`` (issued by ``issuer``), optional nonce.

    The CertID hash defaults to SHA-1, which every responder understands
    (it names the certificate; it is not a signature).
    """
    if nonce is not None and not 1 <= len(nonce) <= MAX_NONCE_LENGTH:
        raise ValueError(f"nonce must be 1 to {MAX_NONCE_LENGTH} bytes")
    builder = x509_ocsp.OCSPRequestBuilder().add_certificate(
        cert, issuer, algorithm if algorithm is not None else hashes.SHA1()
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def responder_url(cert: x509.Certificate, override: str | None = None) -> str:
    """The OCSP responder URL: ``override`` if set, else the cert's AIA."""
    if override:
        return override
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        raise OcspError(OcspFailure.NO_RESPONDER, "no AIA extension and no override") from None
    for description in aia:
        if description.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
            description.access_location, x509.UniformResourceIdentifier
        ):
            return description.access_location.value
    raise OcspError(OcspFailure.NO_RESPONDER, "no id-ad-ocsp entry in AIA and no override")


def check_responder_url(url: str, allow_remote: bool = False) -> tuple[str, int]:
    """Validate a responder URL; return (host, port).

    Only ``http://`` (OCSP responses are signed, so TLS adds nothing and
    would need revocation checking itself).  Unless ``allow_remote``, the
    host must be a loopback address or ``localhost``.
    """
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError as exc:
        raise OcspError(OcspFailure.BAD_URL, f"unparsable URL {url!r}: {exc}") from None
    if parts.scheme != "http":
        raise OcspError(OcspFailure.BAD_URL, f"only http:// responders are used, not {url!r}")
    host = parts.hostname or ""
    if not host or parts.username is not None or parts.password is not None:
        raise OcspError(OcspFailure.BAD_URL, f"bad host in {url!r}")
    if not allow_remote:
        loopback = host == "localhost"
        if not loopback:
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
        if not loopback:
            raise OcspError(
                OcspFailure.BAD_URL, f"responder {host!r} is not loopback and allow_remote is off"
            )
    return host, port


# --------------------------------------------------------------------------
# Response verification


def _check_signature(response: x509_ocsp.OCSPResponse, der: bytes, signer: x509.Certificate) -> None:
    oid = response.signature_algorithm_oid
    key = signer.public_key()
    data = response.tbs_response_bytes
    signature = response.signature
    try:
        if oid == SignatureAlgorithmOID.ED25519:
            if not isinstance(key, ed25519.Ed25519PublicKey):
                raise InvalidSignature
            key.verify(signature, data)
            return
        if oid == SignatureAlgorithmOID.ED448:
            if not isinstance(key, ed448.Ed448PublicKey):
                raise InvalidSignature
            key.verify(signature, data)
            return
        if oid == SignatureAlgorithmOID.RSASSA_PSS:
            try:
                hash_algorithm, pss = pss_parameters(der)
            except (DerError, IndexError) as exc:
                raise OcspError(OcspFailure.UNSUPPORTED_ALGORITHM, f"PSS parameters: {exc}") from None
            _refuse_weak_hash(hash_algorithm)
            if not isinstance(key, rsa.RSAPublicKey):
                raise InvalidSignature
            key.verify(signature, data, pss, hash_algorithm)
            return
        try:
            hash_algorithm = response.signature_hash_algorithm
        except UnsupportedAlgorithm:
            hash_algorithm = None
        if hash_algorithm is None:
            raise OcspError(OcspFailure.UNSUPPORTED_ALGORITHM, f"signature algorithm {oid.dotted_string}")
        _refuse_weak_hash(hash_algorithm)
        if isinstance(key, ec.EllipticCurvePublicKey) and oid in _ECDSA_OIDS:
            key.verify(signature, data, ec.ECDSA(hash_algorithm))
        elif isinstance(key, rsa.RSAPublicKey) and oid in _RSA_PKCS1_OIDS:
            key.verify(signature, data, padding.PKCS1v15(), hash_algorithm)
        else:
            raise OcspError(
                OcspFailure.UNSUPPORTED_ALGORITHM,
                f"signature algorithm {oid.dotted_string} with a {type(key).__name__}",
            )
    except InvalidSignature:
        raise OcspError(OcspFailure.BAD_SIGNATURE, "response signature does not verify") from None


_ECDSA_OIDS = frozenset(
    {
        SignatureAlgorithmOID.ECDSA_WITH_SHA224,
        SignatureAlgorithmOID.ECDSA_WITH_SHA256,
        SignatureAlgorithmOID.ECDSA_WITH_SHA384,
        SignatureAlgorithmOID.ECDSA_WITH_SHA512,
    }
)
_RSA_PKCS1_OIDS = frozenset(
    {
        SignatureAlgorithmOID.RSA_WITH_SHA224,
        SignatureAlgorithmOID.RSA_WITH_SHA256,
        SignatureAlgorithmOID.RSA_WITH_SHA384,
        SignatureAlgorithmOID.RSA_WITH_SHA512,
    }
)


def _refuse_weak_hash(algorithm: hashes.HashAlgorithm) -> None:
    if isinstance(algorithm, (hashes.MD5, hashes.SHA1)):
        raise OcspError(OcspFailure.UNSUPPORTED_ALGORITHM, f"{algorithm.name} signatures are refused")


def _within_validity(cert: x509.Certificate, now: datetime, skew: timedelta) -> bool:
    return cert.not_valid_before_utc - skew <= now <= cert.not_valid_after_utc + skew


def _find_signer(
    response: x509_ocsp.OCSPResponse, issuer: x509.Certificate
) -> x509.Certificate:
    """The certificate the responder ID names: the issuer or an included one."""
    candidates = [issuer, *response.certificates[:8]]
    key_hash = response.responder_key_hash
    name = response.responder_name
    for candidate in candidates:
        if key_hash is not None:
            if _key_hash(candidate.public_key(), hashes.SHA1()) == key_hash:
                return candidate
        elif name is not None and candidate.subject == name:
            return candidate
    raise OcspError(
        OcspFailure.UNKNOWN_RESPONDER, "the responder ID matches neither the CA nor an included certificate"
    )


def _unauthorized(detail: str) -> OcspError:
    return OcspError(OcspFailure.UNAUTHORIZED_RESPONDER, detail)


def _authorize_delegate(
    signer: x509.Certificate, issuer: x509.Certificate, now: datetime, options: OcspOptions
) -> None:
    try:
        signer.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        raise _unauthorized("the responder certificate is not issued by the certificate's CA") from None
    try:
        eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is None or ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        raise _unauthorized("the responder certificate lacks id-kp-OCSPSigning")
    try:
        key_usage = signer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        key_usage = None
    if key_usage is not None and not key_usage.digital_signature:
        raise _unauthorized("the responder key may not sign (key usage)")
    if not _within_validity(signer, now, options.clock_skew):
        raise _unauthorized("the responder certificate is outside its validity")


def _matches(single: x509_ocsp.OCSPSingleResponse, cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    algorithm = single.hash_algorithm
    return (
        single.serial_number == cert.serial_number
        and single.issuer_name_hash == _name_hash(issuer.subject, algorithm)
        and single.issuer_key_hash == _key_hash(issuer.public_key(), algorithm)
    )


def verify_response(
    der: bytes,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    now: datetime,
    nonce: bytes | None = None,
    options: OcspOptions | None = None,
) -> OcspResult:
    """Parse and verify a DER OCSP response for ``cert``; raise ``OcspError``.

    ``issuer`` is the CA that issued ``cert`` (trusted by the caller, who has
    already verified the chain).  ``nonce`` is the one sent, if any.
    Returns GOOD, REVOKED or UNKNOWN only from a fully verified response.
    """
    options = options if options is not None else OcspOptions()
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if len(der) > MAX_RESPONSE_SIZE:
        raise OcspError(OcspFailure.TOO_LARGE, f"{len(der)} bytes")
    try:
        response = x509_ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        raise OcspError(OcspFailure.MALFORMED, str(exc)) from None
    if response.response_status != x509_ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise OcspError(OcspFailure.UNSUCCESSFUL, f"responder said {response.response_status.name}")
    try:
        singles = list(response.responses)
        signer = _find_signer(response, issuer)
        delegated = signer is not issuer
        if delegated:
            _authorize_delegate(signer, issuer, now, options)
        _check_signature(response, der, signer)
        single = next((s for s in singles if _matches(s, cert, issuer)), None)
        if single is None:
            raise OcspError(OcspFailure.CERT_ID_MISMATCH, "no single response for this certificate")
        extensions = response.extensions
    except (ValueError, TypeError, DerError, UnsupportedAlgorithm) as exc:
        raise OcspError(OcspFailure.MALFORMED, str(exc)) from None
    _check_nonce(extensions, nonce, options)
    skew = options.clock_skew
    this_update = single.this_update_utc
    next_update = single.next_update_utc
    if this_update > now + skew:
        raise OcspError(OcspFailure.NOT_YET_VALID, f"thisUpdate {this_update.isoformat()} is in the future")
    if next_update is not None:
        if next_update < this_update:
            raise OcspError(OcspFailure.MALFORMED, "nextUpdate before thisUpdate")
        valid_until = next_update
        if now > next_update + skew:
            raise OcspError(OcspFailure.STALE, f"nextUpdate {next_update.isoformat()} has passed")
    else:
        valid_until = this_update + options.max_age
        if now > valid_until:
            raise OcspError(OcspFailure.STALE, f"no nextUpdate and thisUpdate older than {options.max_age}")
    status = _STATUS[single.certificate_status]
    return OcspResult(
        status=status,
        serial=single.serial_number,
        this_update=this_update,
        next_update=next_update,
        produced_at=response.produced_at_utc,
        valid_until=valid_until,
        revocation_time=single.revocation_time_utc if status is OcspStatus.REVOKED else None,
        revocation_reason=single.revocation_reason if status is OcspStatus.REVOKED else None,
        delegated_responder=delegated,
    )


_STATUS = {
    x509_ocsp.OCSPCertStatus.GOOD: OcspStatus.GOOD,
    x509_ocsp.OCSPCertStatus.REVOKED: OcspStatus.REVOKED,
    x509_ocsp.OCSPCertStatus.UNKNOWN: OcspStatus.UNKNOWN,
}


def _check_nonce(extensions: x509.Extensions, nonce: bytes | None, options: OcspOptions) -> None:
    if nonce is None:
        return
    try:
        echoed = extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        if options.require_nonce:
            raise OcspError(OcspFailure.NONCE_MISMATCH, "the responder did not echo the nonce") from None
        return
    if echoed != nonce:
        raise OcspError(OcspFailure.NONCE_MISMATCH, "the echoed nonce differs from the one sent")


# --------------------------------------------------------------------------
# Cache and decision


class OcspCache:
    """Verified results keyed by ``CertKey``, kept until ``valid_until``.

    Bounded: the least recently used entry goes first when full.  Failures
    are never cached.  ``now`` is passed in.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._entries: OrderedDict[CertKey, OcspResult] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CertKey, now: datetime) -> OcspResult | None:
        result = self._entries.get(key)
        if result is None:
            return None
        if now >= result.valid_until:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return result

    def put(self, key: CertKey, result: OcspResult, now: datetime) -> None:
        if now >= result.valid_until:
            return
        self._entries[key] = result
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


def decide(
    outcome: OcspResult | OcspError, policy: FailurePolicy, from_cache: bool = False
) -> OcspDecision:
    """Turn a verified result or a failure into allow/refuse.

    GOOD allows; REVOKED always refuses.  UNKNOWN (the responder does not
    know the certificate) and every ``OcspError`` allow under SOFT_FAIL
    (``soft_failed`` is set, the caller logs a warning) and refuse under
    HARD_FAIL.
    """
    soft = policy is FailurePolicy.SOFT_FAIL
    if isinstance(outcome, OcspError):
        return OcspDecision(
            allowed=soft,
            status=None,
            failure=outcome.failure,
            reason=f"OCSP check failed ({outcome}); {policy.value}",
            soft_failed=soft,
        )
    if outcome.status is OcspStatus.GOOD:
        return OcspDecision(True, OcspStatus.GOOD, None, "OCSP: good", outcome, from_cache)
    if outcome.status is OcspStatus.REVOKED:
        when = outcome.revocation_time.isoformat() if outcome.revocation_time else "?"
        why = outcome.revocation_reason.value if outcome.revocation_reason else "unspecified"
        return OcspDecision(
            False, OcspStatus.REVOKED, None, f"OCSP: revoked at {when} ({why})", outcome, from_cache
        )
    return OcspDecision(
        allowed=soft,
        status=OcspStatus.UNKNOWN,
        failure=None,
        reason=f"OCSP: responder does not know the certificate; {policy.value}",
        result=outcome,
        from_cache=from_cache,
        soft_failed=soft,
    )
