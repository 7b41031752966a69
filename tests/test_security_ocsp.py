"""Unit tests for rserpool.security.ocsp (no network, fixed time)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp as x509_ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from rserpool.security.ocsp import (
    CertKey,
    FailurePolicy,
    OcspCache,
    OcspError,
    OcspFailure,
    OcspOptions,
    OcspResult,
    OcspStatus,
    build_request,
    cert_key,
    check_responder_url,
    decide,
    responder_url,
    verify_response,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


# --------------------------------------------------------------------------
# A small test PKI built with cryptography (shared with the integration and
# CRL tests).


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_cert(
    cn: str,
    key,
    issuer: x509.Certificate | None = None,
    issuer_key=None,
    *,
    serial: int,
    ca: bool = False,
    eku: list[x509.ObjectIdentifier] | None = None,
    ocsp_url: str | None = None,
    not_before: datetime = NOW - timedelta(days=30),
    not_after: datetime = NOW + timedelta(days=365),
    key_usage: x509.KeyUsage | None = None,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        key_usage = x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False,
        )
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if ocsp_url:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]
            ),
            critical=False,
        )
    signing_key = issuer_key if issuer_key is not None else key
    return builder.sign(signing_key, hashes.SHA256())


@dataclass
class Pki:
    ca: x509.Certificate
    ca_key: object
    responder: x509.Certificate  # delegated, EKU OCSPSigning
    responder_key: object
    client: x509.Certificate
    client_key: object
    other: x509.Certificate  # another client of the same CA
    rogue_ca: x509.Certificate
    rogue_ca_key: object


def build_pki(ocsp_url: str = "http://127.0.0.1:8888/", not_before: datetime = NOW - timedelta(days=30)) -> Pki:
    ca_key, responder_key, client_key, other_key, rogue_key = (ec_key() for _ in range(5))
    span = {"not_before": not_before, "not_after": not_before + timedelta(days=400)}
    ca = make_cert("Test CA", ca_key, serial=1, ca=True, **span)
    rogue = make_cert("Rogue CA", rogue_key, serial=1, ca=True, **span)
    responder = make_cert(
        "OCSP responder", responder_key, ca, ca_key, serial=0x10, eku=[ExtendedKeyUsageOID.OCSP_SIGNING], **span
    )
    client = make_cert(
        "pe1", client_key, ca, ca_key, serial=0x1001, eku=[ExtendedKeyUsageOID.CLIENT_AUTH], ocsp_url=ocsp_url, **span
    )
    other = make_cert(
        "pe2", other_key, ca, ca_key, serial=0x1002, eku=[ExtendedKeyUsageOID.CLIENT_AUTH], ocsp_url=ocsp_url, **span
    )
    return Pki(ca, ca_key, responder, responder_key, client, client_key, other, rogue, rogue_key)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return build_pki()


def make_response(
    pki: Pki,
    *,
    cert: x509.Certificate | None = None,
    issuer: x509.Certificate | None = None,
    signer: x509.Certificate | None = None,
    signer_key=None,
    status: x509_ocsp.OCSPCertStatus = x509_ocsp.OCSPCertStatus.GOOD,
    this_update: datetime = NOW - timedelta(minutes=1),
    next_update: datetime | None = NOW + timedelta(hours=1),
    nonce: bytes | None = None,
    include: list[x509.Certificate] | None = None,
    by_name: bool = False,
) -> bytes:
    cert = cert if cert is not None else pki.client
    issuer = issuer if issuer is not None else pki.ca
    signer = signer if signer is not None else pki.ca
    signer_key = signer_key if signer_key is not None else pki.ca_key
    revoked = status is x509_ocsp.OCSPCertStatus.REVOKED
    builder = (
        x509_ocsp.OCSPResponseBuilder()
        .add_response(
            cert, issuer, hashes.SHA1(), status, this_update, next_update,
            NOW - timedelta(days=1) if revoked else None,
            x509.ReasonFlags.key_compromise if revoked else None,
        )
        .responder_id(
            x509_ocsp.OCSPResponderEncoding.NAME if by_name else x509_ocsp.OCSPResponderEncoding.HASH, signer
        )
    )
    if include:
        builder = builder.certificates(include)
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.sign(signer_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def failure_of(der: bytes, pki: Pki, **kwargs) -> OcspFailure:
    kwargs.setdefault("now", NOW)
    cert = kwargs.pop("cert", pki.client)
    with pytest.raises(OcspError) as info:
        verify_response(der, cert, pki.ca, **kwargs)
    return info.value.failure


# --------------------------------------------------------------------------
# Statuses and signers


def test_good_signed_by_ca(pki: Pki) -> None:
    result = verify_response(make_response(pki), pki.client, pki.ca, NOW)
    assert result.status is OcspStatus.GOOD
    assert result.serial == pki.client.serial_number
    assert result.next_update == NOW + timedelta(hours=1)
    assert result.valid_until == result.next_update
    assert not result.delegated_responder


def test_good_responder_named_by_name(pki: Pki) -> None:
    result = verify_response(make_response(pki, by_name=True), pki.client, pki.ca, NOW)
    assert result.status is OcspStatus.GOOD


def test_revoked_carries_time_and_reason(pki: Pki) -> None:
    der = make_response(pki, status=x509_ocsp.OCSPCertStatus.REVOKED)
    result = verify_response(der, pki.client, pki.ca, NOW)
    assert result.status is OcspStatus.REVOKED
    assert result.revocation_time == (NOW - timedelta(days=1)).replace(microsecond=0)
    assert result.revocation_reason is x509.ReasonFlags.key_compromise


def test_unknown(pki: Pki) -> None:
    der = make_response(pki, status=x509_ocsp.OCSPCertStatus.UNKNOWN)
    assert verify_response(der, pki.client, pki.ca, NOW).status is OcspStatus.UNKNOWN


def test_delegated_responder_with_eku(pki: Pki) -> None:
    der = make_response(pki, signer=pki.responder, signer_key=pki.responder_key, include=[pki.responder])
    result = verify_response(der, pki.client, pki.ca, NOW)
    assert result.status is OcspStatus.GOOD
    assert result.delegated_responder


def test_delegated_responder_without_eku(pki: Pki) -> None:
    key = ec_key()
    plain = make_cert("not a responder", key, pki.ca, pki.ca_key, serial=0x11, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    der = make_response(pki, signer=plain, signer_key=key, include=[plain])
    assert failure_of(der, pki) is OcspFailure.UNAUTHORIZED_RESPONDER


def test_delegated_responder_without_any_eku(pki: Pki) -> None:
    key = ec_key()
    plain = make_cert("no eku", key, pki.ca, pki.ca_key, serial=0x12)
    der = make_response(pki, signer=plain, signer_key=key, include=[plain])
    assert failure_of(der, pki) is OcspFailure.UNAUTHORIZED_RESPONDER


def test_delegated_responder_key_usage_without_signature(pki: Pki) -> None:
    key = ec_key()
    usage = x509.KeyUsage(False, False, False, False, True, False, False, False, False)
    responder = make_cert(
        "no sign", key, pki.ca, pki.ca_key, serial=0x13, eku=[ExtendedKeyUsageOID.OCSP_SIGNING], key_usage=usage
    )
    der = make_response(pki, signer=responder, signer_key=key, include=[responder])
    assert failure_of(der, pki) is OcspFailure.UNAUTHORIZED_RESPONDER


def test_responder_from_another_ca(pki: Pki) -> None:
    key = ec_key()
    foreign = make_cert(
        "OCSP responder", key, pki.rogue_ca, pki.rogue_ca_key, serial=0x10, eku=[ExtendedKeyUsageOID.OCSP_SIGNING]
    )
    der = make_response(pki, signer=foreign, signer_key=key, include=[foreign])
    assert failure_of(der, pki) is OcspFailure.UNAUTHORIZED_RESPONDER


def test_responder_certificate_expired(pki: Pki) -> None:
    key = ec_key()
    old = make_cert(
        "old responder", key, pki.ca, pki.ca_key, serial=0x14, eku=[ExtendedKeyUsageOID.OCSP_SIGNING],
        not_before=NOW - timedelta(days=60), not_after=NOW - timedelta(days=1),
    )
    der = make_response(pki, signer=old, signer_key=key, include=[old])
    assert failure_of(der, pki) is OcspFailure.UNAUTHORIZED_RESPONDER


def test_delegated_responder_not_included(pki: Pki) -> None:
    der = make_response(pki, signer=pki.responder, signer_key=pki.responder_key)
    assert failure_of(der, pki) is OcspFailure.UNKNOWN_RESPONDER


def test_signed_by_a_key_that_does_not_match_the_responder_id(pki: Pki) -> None:
    # Responder ID names the CA (by name), but an impostor's key signed.
    key = ec_key()
    impostor = make_cert("Test CA", key, serial=99, ca=True)
    der = make_response(pki, signer=impostor, signer_key=key, by_name=True)
    assert failure_of(der, pki) is OcspFailure.BAD_SIGNATURE


def test_rogue_ca_signing_its_own_answer(pki: Pki) -> None:
    der = make_response(pki, signer=pki.rogue_ca, signer_key=pki.rogue_ca_key, include=[pki.rogue_ca])
    # The rogue CA is neither the issuer nor issued by it.
    assert failure_of(der, pki) is OcspFailure.UNAUTHORIZED_RESPONDER


# --------------------------------------------------------------------------
# Tampering and malformed input


def test_tampered_signature_byte(pki: Pki) -> None:
    der = bytearray(make_response(pki))
    der[-1] ^= 0x01
    assert failure_of(bytes(der), pki) is OcspFailure.BAD_SIGNATURE


def test_tampered_response_data(pki: Pki) -> None:
    der = make_response(pki, status=x509_ocsp.OCSPCertStatus.REVOKED)
    stamp = (NOW - timedelta(days=1)).strftime("%Y%m%d%H%M%SZ").encode()
    assert der.count(stamp) == 1
    forged = der.replace(stamp, (NOW - timedelta(days=2)).strftime("%Y%m%d%H%M%SZ").encode())
    assert failure_of(forged, pki) is OcspFailure.BAD_SIGNATURE


@pytest.mark.parametrize("der", [b"", b"\x30\x03\x0a\x01", b"not der at all", b"\x30\x82\xff\xff" + b"\x00" * 10])
def test_malformed(pki: Pki, der: bytes) -> None:
    assert failure_of(der, pki) is OcspFailure.MALFORMED


def test_unsuccessful_status(pki: Pki) -> None:
    der = x509_ocsp.OCSPResponseBuilder.build_unsuccessful(
        x509_ocsp.OCSPResponseStatus.TRY_LATER
    ).public_bytes(serialization.Encoding.DER)
    assert failure_of(der, pki) is OcspFailure.UNSUCCESSFUL


def test_too_large(pki: Pki) -> None:
    assert failure_of(b"\x30" * (64 * 1024 + 1), pki) is OcspFailure.TOO_LARGE


# --------------------------------------------------------------------------
# CertID matching


def test_serial_mismatch(pki: Pki) -> None:
    der = make_response(pki, cert=pki.other)
    assert failure_of(der, pki) is OcspFailure.CERT_ID_MISMATCH


def test_issuer_mismatch(pki: Pki) -> None:
    # Same serial, but the CertID names the rogue CA as issuer.
    twin = make_cert("pe1", ec_key(), pki.rogue_ca, pki.rogue_ca_key, serial=pki.client.serial_number)
    der = make_response(pki, cert=twin, issuer=pki.rogue_ca)
    assert failure_of(der, pki) is OcspFailure.CERT_ID_MISMATCH


def test_certid_with_sha256(pki: Pki) -> None:
    der = (
        x509_ocsp.OCSPResponseBuilder()
        .add_response(pki.client, pki.ca, hashes.SHA256(), x509_ocsp.OCSPCertStatus.GOOD,
                      NOW - timedelta(minutes=1), NOW + timedelta(hours=1), None, None)
        .responder_id(x509_ocsp.OCSPResponderEncoding.HASH, pki.ca)
        .sign(pki.ca_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    assert verify_response(der, pki.client, pki.ca, NOW).status is OcspStatus.GOOD


# --------------------------------------------------------------------------
# Freshness


def test_stale(pki: Pki) -> None:
    der = make_response(pki, this_update=NOW - timedelta(hours=3), next_update=NOW - timedelta(hours=1))
    assert failure_of(der, pki) is OcspFailure.STALE


def test_stale_within_skew_is_accepted(pki: Pki) -> None:
    der = make_response(pki, this_update=NOW - timedelta(hours=3), next_update=NOW - timedelta(minutes=2))
    assert verify_response(der, pki.client, pki.ca, NOW).status is OcspStatus.GOOD
    options = OcspOptions(clock_skew=timedelta(minutes=1))
    assert failure_of(der, pki, options=options) is OcspFailure.STALE


def test_not_yet_valid(pki: Pki) -> None:
    der = make_response(pki, this_update=NOW + timedelta(hours=1), next_update=NOW + timedelta(hours=2))
    assert failure_of(der, pki) is OcspFailure.NOT_YET_VALID


def test_no_next_update_within_max_age(pki: Pki) -> None:
    der = make_response(pki, this_update=NOW - timedelta(minutes=10), next_update=None)
    result = verify_response(der, pki.client, pki.ca, NOW)
    assert result.next_update is None
    assert result.valid_until == NOW + timedelta(minutes=5)
    assert failure_of(der, pki, options=OcspOptions(max_age=timedelta(minutes=5))) is OcspFailure.STALE


def test_naive_now_is_refused(pki: Pki) -> None:
    with pytest.raises(ValueError):
        verify_response(make_response(pki), pki.client, pki.ca, NOW.replace(tzinfo=None))


# --------------------------------------------------------------------------
# Nonce


def test_nonce_echoed(pki: Pki) -> None:
    der = make_response(pki, nonce=b"n" * 16)
    assert verify_response(der, pki.client, pki.ca, NOW, nonce=b"n" * 16).status is OcspStatus.GOOD


def test_nonce_mismatch(pki: Pki) -> None:
    der = make_response(pki, nonce=b"x" * 16)
    assert failure_of(der, pki, nonce=b"n" * 16) is OcspFailure.NONCE_MISMATCH


def test_nonce_not_echoed(pki: Pki) -> None:
    der = make_response(pki)
    assert verify_response(der, pki.client, pki.ca, NOW, nonce=b"n" * 16).status is OcspStatus.GOOD
    options = OcspOptions(require_nonce=True)
    assert failure_of(der, pki, nonce=b"n" * 16, options=options) is OcspFailure.NONCE_MISMATCH


# --------------------------------------------------------------------------
# RSA: PKCS#1 v1.5 and RSASSA-PSS (cryptography cannot sign OCSP with PSS,
# so the test re-encodes the response with a PSS signature by hand).


def _tlv(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    size = (length.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + length.to_bytes(size, "big") + content


def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for part in parts[2:]:
        chunk = [part & 0x7F]
        part >>= 7
        while part:
            chunk.append(0x80 | (part & 0x7F))
            part >>= 7
        body.extend(reversed(chunk))
    return _tlv(0x06, bytes(body))


SHA256_ALGID = _tlv(0x30, _oid("2.16.840.1.101.3.4.2.1") + b"\x05\x00")


def pss_response(tbs: bytes, key: rsa.RSAPrivateKey, salt: int = 32) -> bytes:
    params = _tlv(0x30, _tlv(0xA0, SHA256_ALGID)
                  + _tlv(0xA1, _tlv(0x30, _oid("1.2.840.113549.1.1.8") + SHA256_ALGID))
                  + _tlv(0xA2, _tlv(0x02, bytes([salt]))))
    algid = _tlv(0x30, _oid("1.2.840.113549.1.1.10") + params)
    signature = key.sign(tbs, padding.PSS(padding.MGF1(hashes.SHA256()), salt), hashes.SHA256())
    return wrap_basic(tbs, algid, signature)


def wrap_basic(tbs: bytes, algid: bytes, signature: bytes) -> bytes:
    basic = _tlv(0x30, tbs + algid + _tlv(0x03, b"\x00" + signature))
    response_bytes = _tlv(0x30, _oid("1.3.6.1.5.5.7.48.1.1") + _tlv(0x04, basic))
    return _tlv(0x30, b"\x0a\x01\x00" + _tlv(0xA0, response_bytes))


@pytest.fixture(scope="module")
def rsa_pki() -> Pki:
    ca_key = rsa.generate_private_key(65537, 2048)
    ca = make_cert("RSA CA", ca_key, serial=2, ca=True)
    client_key = ec_key()
    client = make_cert("pe-rsa", client_key, ca, ca_key, serial=0x2001)
    return Pki(ca, ca_key, ca, ca_key, client, client_key, client, ca, ca_key)


def test_rsa_pkcs1v15(rsa_pki: Pki) -> None:
    der = make_response(rsa_pki)
    assert verify_response(der, rsa_pki.client, rsa_pki.ca, NOW).status is OcspStatus.GOOD


def test_rsa_pss(rsa_pki: Pki) -> None:
    tbs = x509_ocsp.load_der_ocsp_response(make_response(rsa_pki)).tbs_response_bytes
    der = pss_response(tbs, rsa_pki.ca_key)
    assert x509_ocsp.load_der_ocsp_response(der).signature_algorithm_oid.dotted_string == "1.2.840.113549.1.1.10"
    assert verify_response(der, rsa_pki.client, rsa_pki.ca, NOW).status is OcspStatus.GOOD


def test_rsa_pss_wrong_salt_length_fails(rsa_pki: Pki) -> None:
    tbs = x509_ocsp.load_der_ocsp_response(make_response(rsa_pki)).tbs_response_bytes
    der = bytearray(pss_response(tbs, rsa_pki.ca_key, salt=32))
    # Change the declared salt length (INTEGER 32 -> 33) without re-signing.
    index = der.index(bytes([0xA2, 0x03, 0x02, 0x01, 32]))
    der[index + 4] = 33
    with pytest.raises(OcspError) as info:
        verify_response(bytes(der), rsa_pki.client, rsa_pki.ca, NOW)
    assert info.value.failure is OcspFailure.BAD_SIGNATURE


def test_ecdsa_signature_with_rsa_responder_key(rsa_pki: Pki) -> None:
    # The responder ID names the RSA CA but the response is ECDSA-signed.
    key = ec_key()
    impostor = make_cert("RSA CA", key, serial=99, ca=True)
    der = make_response(rsa_pki, signer=impostor, signer_key=key, by_name=True)
    with pytest.raises(OcspError) as info:
        verify_response(der, rsa_pki.client, rsa_pki.ca, NOW)
    assert info.value.failure in (OcspFailure.UNSUPPORTED_ALGORITHM, OcspFailure.BAD_SIGNATURE)


def test_sha1_signature_refused(pki: Pki) -> None:
    # cryptography no longer signs with SHA-1: re-encode by hand.
    tbs = x509_ocsp.load_der_ocsp_response(make_response(pki)).tbs_response_bytes
    signature = pki.ca_key.sign(tbs, ec.ECDSA(hashes.SHA1()))
    der = wrap_basic(tbs, _tlv(0x30, _oid("1.2.840.10045.4.1")), signature)
    assert x509_ocsp.load_der_ocsp_response(der).signature_hash_algorithm.name == "sha1"
    assert failure_of(der, pki) is OcspFailure.UNSUPPORTED_ALGORITHM


# --------------------------------------------------------------------------
# Requests and responder URLs


def test_build_request_with_nonce(pki: Pki) -> None:
    request = x509_ocsp.load_der_ocsp_request(build_request(pki.client, pki.ca, nonce=b"z" * 16))
    assert request.serial_number == pki.client.serial_number
    assert request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"z" * 16
    assert request.issuer_key_hash == cert_key(pki.client, pki.ca).issuer_key_hash


def test_build_request_without_nonce(pki: Pki) -> None:
    request = x509_ocsp.load_der_ocsp_request(build_request(pki.client, pki.ca))
    assert len(request.extensions) == 0
    with pytest.raises(ValueError):
        build_request(pki.client, pki.ca, nonce=b"")
    with pytest.raises(ValueError):
        build_request(pki.client, pki.ca, nonce=b"x" * 33)


def test_responder_url_from_aia_and_override(pki: Pki) -> None:
    assert responder_url(pki.client) == "http://127.0.0.1:8888/"
    assert responder_url(pki.client, "http://127.0.0.2:9/") == "http://127.0.0.2:9/"
    with pytest.raises(OcspError) as info:
        responder_url(pki.ca)
    assert info.value.failure is OcspFailure.NO_RESPONDER


@pytest.mark.parametrize(
    ("url", "allow_remote", "expected"),
    [
        ("http://127.0.0.1:8888/", False, ("127.0.0.1", 8888)),
        ("http://[::1]/ocsp", False, ("::1", 80)),
        ("http://localhost:81", False, ("localhost", 81)),
        ("http://ocsp.example.org/", True, ("ocsp.example.org", 80)),
    ],
)
def test_check_responder_url_ok(url: str, allow_remote: bool, expected: tuple[str, int]) -> None:
    assert check_responder_url(url, allow_remote) == expected


@pytest.mark.parametrize(
    "url",
    ["https://127.0.0.1/", "ftp://127.0.0.1/", "http://ocsp.example.org/", "http://10.0.0.1/",
     "http://user:pw@127.0.0.1/", "http:///x", "http://127.0.0.1:99999/"],
)
def test_check_responder_url_refused(url: str) -> None:
    with pytest.raises(OcspError) as info:
        check_responder_url(url)
    assert info.value.failure is OcspFailure.BAD_URL


# --------------------------------------------------------------------------
# Cache


def _result(status: OcspStatus, valid_until: datetime, serial: int = 1) -> OcspResult:
    return OcspResult(status, serial, NOW, valid_until, NOW, valid_until)


def test_cache_hit_until_next_update_and_miss_after(pki: Pki) -> None:
    cache = OcspCache()
    result = verify_response(make_response(pki), pki.client, pki.ca, NOW)
    key = cert_key(pki.client, pki.ca)
    cache.put(key, result, NOW)
    assert cache.get(key, NOW) is result
    assert cache.get(key, NOW + timedelta(minutes=59)) is result
    assert cache.get(cert_key(pki.other, pki.ca), NOW) is None
    assert cache.get(key, NOW + timedelta(hours=1)) is None
    assert len(cache) == 0


def test_cache_is_bounded_lru() -> None:
    cache = OcspCache(max_entries=2)
    keys = [CertKey(b"k", serial) for serial in range(3)]
    later = NOW + timedelta(hours=1)
    cache.put(keys[0], _result(OcspStatus.GOOD, later, 0), NOW)
    cache.put(keys[1], _result(OcspStatus.GOOD, later, 1), NOW)
    assert cache.get(keys[0], NOW) is not None  # 0 becomes most recent
    cache.put(keys[2], _result(OcspStatus.GOOD, later, 2), NOW)
    assert len(cache) == 2
    assert cache.get(keys[1], NOW) is None
    assert cache.get(keys[0], NOW) is not None
    assert cache.get(keys[2], NOW) is not None


def test_cache_ignores_expired_result() -> None:
    cache = OcspCache()
    cache.put(CertKey(b"k", 1), _result(OcspStatus.GOOD, NOW), NOW)
    assert len(cache) == 0
    with pytest.raises(ValueError):
        OcspCache(max_entries=0)


# --------------------------------------------------------------------------
# Decision table


@pytest.mark.parametrize(
    ("outcome", "policy", "allowed", "soft_failed"),
    [
        (OcspStatus.GOOD, FailurePolicy.SOFT_FAIL, True, False),
        (OcspStatus.GOOD, FailurePolicy.HARD_FAIL, True, False),
        (OcspStatus.REVOKED, FailurePolicy.SOFT_FAIL, False, False),
        (OcspStatus.REVOKED, FailurePolicy.HARD_FAIL, False, False),
        (OcspStatus.UNKNOWN, FailurePolicy.SOFT_FAIL, True, True),
        (OcspStatus.UNKNOWN, FailurePolicy.HARD_FAIL, False, False),
        (OcspFailure.UNREACHABLE, FailurePolicy.SOFT_FAIL, True, True),
        (OcspFailure.UNREACHABLE, FailurePolicy.HARD_FAIL, False, False),
        (OcspFailure.BAD_SIGNATURE, FailurePolicy.SOFT_FAIL, True, True),
        (OcspFailure.BAD_SIGNATURE, FailurePolicy.HARD_FAIL, False, False),
        (OcspFailure.TIMEOUT, FailurePolicy.HARD_FAIL, False, False),
    ],
)
def test_decision_table(outcome, policy: FailurePolicy, allowed: bool, soft_failed: bool) -> None:
    if isinstance(outcome, OcspStatus):
        decision = decide(_result(outcome, NOW + timedelta(hours=1)), policy)
        assert decision.status is outcome
        assert decision.failure is None
    else:
        decision = decide(OcspError(outcome, "test"), policy)
        assert decision.status is None
        assert decision.failure is outcome
    assert decision.allowed is allowed
    assert decision.soft_failed is soft_failed
    assert decision.reason


# --------------------------------------------------------------------------
# Robustness: any input gives a verified result or an OcspError, never
# another exception; a mutated response never turns GOOD into REVOKED.


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=600))
def test_random_bytes_only_raise_ocsp_error(pki: Pki, data: bytes) -> None:
    with pytest.raises(OcspError):
        verify_response(data, pki.client, pki.ca, NOW)


@settings(max_examples=150, deadline=None)
@given(position=st.integers(min_value=0), value=st.integers(min_value=1, max_value=255))
def test_mutated_response(pki: Pki, position: int, value: int) -> None:
    der = bytearray(make_response(pki, signer=pki.responder, signer_key=pki.responder_key, include=[pki.responder]))
    der[position % len(der)] ^= value
    try:
        result = verify_response(bytes(der), pki.client, pki.ca, NOW)
    except OcspError:
        return
    # Only bytes outside the signed data and the checked certificates may
    # change without detection (e.g. the signature's DER encoding slack).
    assert result.status is OcspStatus.GOOD
