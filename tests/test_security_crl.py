"""Unit tests for rserpool.security.crl (fixed time, no network)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from rserpool.security.crl import CrlError, CrlFailure, check_certificate, crl_info, load_crl, verify_crl
from tests.test_security_ocsp import NOW, Pki, build_pki, ec_key, make_cert


@pytest.fixture(scope="module")
def pki() -> Pki:
    return build_pki()


def make_crl(
    pki: Pki,
    revoked: list[int],
    *,
    last_update: datetime = NOW - timedelta(hours=1),
    next_update: datetime | None = NOW + timedelta(days=1),
    issuer: x509.Certificate | None = None,
    key=None,
    delta: bool = False,
) -> x509.CertificateRevocationList:
    issuer = issuer if issuer is not None else pki.ca
    builder = x509.CertificateRevocationListBuilder().issuer_name(issuer.subject).last_update(last_update)
    if next_update is not None:
        builder = builder.next_update(next_update)
    for serial in revoked:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(NOW - timedelta(days=2))
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(entry)
    if delta:
        builder = builder.add_extension(x509.DeltaCRLIndicator(1), critical=True)
    return builder.sign(key if key is not None else pki.ca_key, hashes.SHA256())


def test_load_pem_and_der(pki: Pki) -> None:
    crl = make_crl(pki, [pki.client.serial_number])
    for encoding in (serialization.Encoding.PEM, serialization.Encoding.DER):
        loaded = load_crl(crl.public_bytes(encoding))
        assert loaded.get_revoked_certificate_by_serial_number(pki.client.serial_number) is not None


@pytest.mark.parametrize("data", [b"", b"garbage", b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"])
def test_load_malformed(data: bytes) -> None:
    with pytest.raises(CrlError) as info:
        load_crl(data)
    assert info.value.failure is CrlFailure.MALFORMED


def test_revoked_and_not_revoked(pki: Pki) -> None:
    crl = make_crl(pki, [pki.client.serial_number])
    entry = check_certificate(pki.client, crl, pki.ca, NOW)
    assert entry is not None
    assert entry.serial == pki.client.serial_number
    assert entry.reason is x509.ReasonFlags.key_compromise
    assert entry.revocation_date == NOW - timedelta(days=2)
    assert check_certificate(pki.other, crl, pki.ca, NOW) is None


def test_bad_signature(pki: Pki) -> None:
    # Same issuer name, signed by the rogue key.
    crl = make_crl(pki, [], key=pki.rogue_ca_key)
    with pytest.raises(CrlError) as info:
        verify_crl(crl, pki.ca, NOW)
    assert info.value.failure is CrlFailure.BAD_SIGNATURE


def test_tampered_crl(pki: Pki) -> None:
    der = make_crl(pki, [pki.client.serial_number]).public_bytes(serialization.Encoding.DER)
    serial = pki.client.serial_number.to_bytes(2, "big")
    forged = der.replace(b"\x02\x02" + serial, b"\x02\x02" + (pki.client.serial_number + 7).to_bytes(2, "big"))
    assert forged != der
    with pytest.raises(CrlError) as info:
        check_certificate(pki.client, load_crl(forged), pki.ca, NOW)
    assert info.value.failure is CrlFailure.BAD_SIGNATURE


def test_wrong_issuer(pki: Pki) -> None:
    crl = make_crl(pki, [], issuer=pki.rogue_ca, key=pki.rogue_ca_key)
    with pytest.raises(CrlError) as info:
        verify_crl(crl, pki.ca, NOW)
    assert info.value.failure is CrlFailure.WRONG_ISSUER
    with pytest.raises(CrlError) as info:
        check_certificate(pki.client, crl, pki.rogue_ca, NOW)
    assert info.value.failure is CrlFailure.WRONG_ISSUER


def test_issuer_without_crl_sign(pki: Pki) -> None:
    key = ec_key()
    usage = x509.KeyUsage(True, False, False, False, False, True, False, False, False)
    ca = make_cert("No CRL CA", key, serial=5, ca=False, key_usage=usage)
    crl = make_crl(pki, [], issuer=ca, key=key)
    with pytest.raises(CrlError) as info:
        verify_crl(crl, ca, NOW)
    assert info.value.failure is CrlFailure.NOT_A_CRL_SIGNER


def test_expired_crl_reported(pki: Pki) -> None:
    crl = make_crl(pki, [], last_update=NOW - timedelta(days=3), next_update=NOW - timedelta(days=1))
    info = crl_info(crl, NOW)
    assert info.expired
    assert info.expires_in == -timedelta(days=1)
    assert info.issuer == "CN=Test CA"
    with pytest.raises(CrlError) as error:
        verify_crl(crl, pki.ca, NOW)
    assert error.value.failure is CrlFailure.STALE
    assert verify_crl(crl, pki.ca, NOW - timedelta(days=2)).expired is False


def test_not_yet_valid(pki: Pki) -> None:
    crl = make_crl(pki, [], last_update=NOW + timedelta(hours=1), next_update=NOW + timedelta(days=1))
    with pytest.raises(CrlError) as info:
        verify_crl(crl, pki.ca, NOW)
    assert info.value.failure is CrlFailure.NOT_YET_VALID


def test_delta_crl_unsupported(pki: Pki) -> None:
    crl = make_crl(pki, [], delta=True)
    with pytest.raises(CrlError) as info:
        verify_crl(crl, pki.ca, NOW)
    assert info.value.failure is CrlFailure.UNSUPPORTED
