"""rserpool.security.pki: certificate profiles, CRLs, files and the development PKI.

Pure tests use a fixed ``NOW``; the ``openssl verify`` cross-checks at the end
use the wall clock because OpenSSL does.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rserpool.security import devpki, pki
from tests.conftest import require_tool

NOW = dt.datetime(2030, 5, 17, 12, 0, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def ca() -> pki.IssuedCertificate:
    return pki.create_ca("test CA", NOW)


def ext(cert: x509.Certificate, cls: type) -> object:
    return cert.extensions.get_extension_for_class(cls)


def eku(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(ext(cert, x509.ExtendedKeyUsage).value)


def test_root_ca_profile(ca: pki.IssuedCertificate) -> None:
    cert = ca.certificate
    cert.verify_directly_issued_by(cert)
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ext(cert, x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    assert isinstance(ca.private_key, ec.EllipticCurvePrivateKey)
    assert ca.private_key.curve.name == "secp256r1"
    assert cert.not_valid_before_utc == NOW - pki.DEFAULT_BACKDATE
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=pki.DEFAULT_CA_DAYS)
    assert ca.chain == ()


def test_server_certificate(ca: pki.IssuedCertificate) -> None:
    leaf = pki.create_server_certificate(
        ca, ["enrp1.rserpool.test", "127.0.0.1", "::1"], NOW,
        ocsp_url="http://127.0.0.1:8888/", crl_url="http://127.0.0.1/ca.crl",
    )
    cert = leaf.certificate
    cert.verify_directly_issued_by(ca.certificate)
    sans = ext(cert, x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["enrp1.rserpool.test"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    assert eku(cert) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not ext(cert, x509.BasicConstraints).value.ca
    aia = ext(cert, x509.AuthorityInformationAccess).value
    assert aia[0].access_location.value == "http://127.0.0.1:8888/"
    cdp = ext(cert, x509.CRLDistributionPoints).value
    assert cdp[0].full_name[0].value == "http://127.0.0.1/ca.crl"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "enrp1.rserpool.test"


def test_server_certificate_without_client_auth(ca: pki.IssuedCertificate) -> None:
    cert = pki.create_server_certificate(ca, ["a.test"], NOW, client_auth=False).certificate
    assert eku(cert) == {ExtendedKeyUsageOID.SERVER_AUTH}
    with pytest.raises(x509.ExtensionNotFound):
        ext(cert, x509.AuthorityInformationAccess)


def test_client_certificates(ca: pki.IssuedCertificate) -> None:
    pe = pki.create_client_certificate(ca, "pe1", NOW).certificate
    pe.verify_directly_issued_by(ca.certificate)
    assert eku(pe) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    sans = ext(pe, x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:rserpool:pe:pe1"]
    assert pe.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "pe1"
    pu = pki.create_client_certificate(ca, "pu7", NOW, role="pu", emails=["pu7@example.org"],
                                       dns_names=["pu7.example.org"]).certificate
    sans = ext(pu, x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:rserpool:pu:pu7"]
    assert sans.get_values_for_type(x509.RFC822Name) == ["pu7@example.org"]
    assert sans.get_values_for_type(x509.DNSName) == ["pu7.example.org"]
    bare = pki.create_client_certificate(ca, "cn-only", NOW, uris=()).certificate
    with pytest.raises(x509.ExtensionNotFound):
        ext(bare, x509.SubjectAlternativeName)


def test_ocsp_responder_certificate(ca: pki.IssuedCertificate) -> None:
    cert = pki.create_ocsp_responder_certificate(ca, NOW).certificate
    assert eku(cert) == {ExtendedKeyUsageOID.OCSP_SIGNING}
    assert isinstance(ext(cert, x509.OCSPNoCheck).value, x509.OCSPNoCheck)


def test_validity_windows(ca: pki.IssuedCertificate) -> None:
    expired = pki.create_client_certificate(
        ca, "old", NOW, not_before=NOW - 30 * DAY, not_after=NOW - DAY).certificate
    assert expired.not_valid_after_utc < NOW
    future = pki.create_client_certificate(
        ca, "new", NOW, not_before=NOW + DAY, not_after=NOW + 9 * DAY).certificate
    assert future.not_valid_before_utc > NOW
    short = pki.create_client_certificate(ca, "short", NOW, days=2).certificate
    assert short.not_valid_after_utc == NOW + 2 * DAY


def test_intermediate_ca_chain(ca: pki.IssuedCertificate) -> None:
    inter = pki.create_ca("intermediate", NOW, issuer=ca, path_length=0)
    inter.certificate.verify_directly_issued_by(ca.certificate)
    assert inter.chain == ()  # the root is a trust anchor, not chain material
    leaf = pki.create_client_certificate(inter, "pe9", NOW)
    assert leaf.chain == (inter.certificate,)
    pems = x509.load_pem_x509_certificates(leaf.cert_pem())
    assert pems == [leaf.certificate, inter.certificate]
    assert x509.load_pem_x509_certificates(leaf.cert_pem(with_chain=False)) == [leaf.certificate]


def test_rsa_keys(ca: pki.IssuedCertificate) -> None:
    leaf = pki.create_server_certificate(ca, ["rsa.test"], NOW, key_type="rsa")
    assert isinstance(leaf.private_key, rsa.RSAPrivateKey)
    assert ext(leaf.certificate, x509.KeyUsage).value.key_encipherment
    with pytest.raises(pki.CertificateProfileError):
        pki.generate_private_key("rsa", rsa_bits=1024)
    with pytest.raises(pki.CertificateProfileError):
        pki.generate_private_key("dsa")  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [
    {"names": []},
    {"names": ["bad name"]},
    {"names": ["a.test"], "not_before": NOW, "not_after": NOW},
    {"names": ["a.test"], "now": NOW.replace(tzinfo=None)},
])
def test_bad_requests_refused(ca: pki.IssuedCertificate, kwargs: dict) -> None:
    args = {"names": ["a.test"], "now": NOW} | kwargs
    with pytest.raises(pki.CertificateProfileError):
        pki.create_server_certificate(ca, args.pop("names"), args.pop("now"), **args)


def test_crl(ca: pki.IssuedCertificate) -> None:
    when = NOW - DAY
    crl = pki.create_crl(ca, [11, (12, when), 11], NOW, crl_number=5,
                         reason=x509.ReasonFlags.key_compromise)
    assert crl.is_signature_valid(ca.certificate.public_key())
    assert crl.issuer == ca.certificate.subject
    assert crl.last_update_utc == NOW
    assert crl.next_update_utc == NOW + 7 * DAY
    assert ext(crl, x509.CRLNumber).value.crl_number == 5  # type: ignore[arg-type]
    assert len(crl) == 2
    assert crl.get_revoked_certificate_by_serial_number(12).revocation_date_utc == when
    assert crl.get_revoked_certificate_by_serial_number(13) is None
    entry = crl.get_revoked_certificate_by_serial_number(11)
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == \
        x509.ReasonFlags.key_compromise
    other = pki.create_ca("other", NOW)
    assert not crl.is_signature_valid(other.certificate.public_key())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(revoked=st.sets(st.integers(min_value=1, max_value=2**159 - 1), max_size=8),
       probe=st.integers(min_value=1, max_value=2**159 - 1))
def test_crl_lists_exactly_the_revoked_serials(
    ca: pki.IssuedCertificate, revoked: set[int], probe: int
) -> None:
    crl = x509.load_der_x509_crl(
        pki.create_crl(ca, sorted(revoked), NOW).public_bytes(serialization.Encoding.DER))
    assert {r.serial_number for r in crl} == revoked
    assert (crl.get_revoked_certificate_by_serial_number(probe) is not None) == (probe in revoked)


def test_files_round_trip_and_modes(tmp_path: Path, ca: pki.IssuedCertificate) -> None:
    key_path = pki.write_private_key(tmp_path / "ca.key", ca.private_key)
    cert_path = pki.write_certificate(tmp_path / "ca.pem", ca.certificate)
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cert_path).st_mode) == 0o644
    assert pki.load_certificate(cert_path) == ca.certificate
    loaded = pki.load_private_key(key_path)
    assert loaded.private_numbers() == ca.private_key.private_numbers()  # type: ignore[union-attr]
    crl = pki.create_crl(ca, [3], NOW)
    pem_path = pki.write_crl(tmp_path / "crl.pem", crl)
    der_path = tmp_path / "crl.der"
    der_path.write_bytes(crl.public_bytes(serialization.Encoding.DER))
    assert pki.load_crl(pem_path) == crl == pki.load_crl(der_path)
    # Overwriting an existing world-readable file still ends up 0600.
    loose = tmp_path / "loose.key"
    loose.write_bytes(b"x")
    loose.chmod(0o666)
    pki.write_private_key(loose, ca.private_key)
    assert stat.S_IMODE(os.stat(loose).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.integration
def test_openssl_agrees(tmp_path: Path) -> None:
    """``openssl verify`` accepts the dev PKI for the right purposes, and honours a CRL."""
    openssl = require_tool("openssl")
    now = dt.datetime.now(dt.timezone.utc)
    paths = devpki.ensure_dev_pki(tmp_path, now=now)

    def verify(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([openssl, "verify", "-CAfile", str(paths.ca_cert), *args],
                              capture_output=True, text=True, timeout=30)

    assert verify("-purpose", "sslserver", str(paths.server_cert)).returncode == 0
    assert verify("-purpose", "sslclient", str(paths.server_cert)).returncode == 0
    assert verify("-purpose", "sslclient", str(paths.pe_cert)).returncode == 0
    assert verify("-purpose", "sslserver", str(paths.pe_cert)).returncode != 0
    ca = pki.IssuedCertificate(pki.load_certificate(paths.ca_cert),
                               pki.load_private_key(paths.ca_key))
    pe_serial = pki.load_certificate(paths.pe_cert).serial_number
    crl_path = pki.write_crl(tmp_path / "crl.pem", pki.create_crl(ca, [pe_serial], now))
    revoked = verify("-crl_check", "-CRLfile", str(crl_path), str(paths.pe_cert))
    assert revoked.returncode != 0 and "revoked" in revoked.stdout + revoked.stderr
    assert verify("-crl_check", "-CRLfile", str(crl_path), str(paths.pu_cert)).returncode == 0


# --- files that cannot be used: one line naming the file --------------------------


def test_unusable_files_say_which_and_why(tmp_path: Path, ca: pki.IssuedCertificate) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    pki.write_certificate(cert, ca.certificate)
    pki.write_private_key(key, ca.private_key)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not pem\n")
    cases = [
        (lambda: pki.load_certificates(tmp_path / "missing.pem"), "missing.pem: no such file"),
        (lambda: pki.load_certificates(tmp_path), ": a directory, not a file"),
        (lambda: pki.load_certificates(garbage), "garbage.pem: not a PEM certificate file"),
        (lambda: pki.load_certificates(key), "k.pem: holds a private key, not a certificate"),
        (lambda: pki.load_private_key(cert), "c.pem: holds a certificate, not a private key"),
        (lambda: pki.load_private_key(garbage), "garbage.pem: not a PEM private key"),
        (lambda: pki.load_crl(garbage), "garbage.pem: not a PEM or DER CRL"),
    ]
    for call, text in cases:
        with pytest.raises(pki.PkiFileError) as info:
            call()
        assert text in str(info.value) and "\n" not in str(info.value)


def test_encrypted_key_is_named(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "enc.key"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(pki.PkiFileError, match="enc.key: an encrypted private key"):
        pki.load_private_key(path)


def test_key_pair_check(ca: pki.IssuedCertificate) -> None:
    other = pki.create_ca("other CA", NOW)
    pki.check_key_pair(ca.certificate, ca.private_key, "c.pem", "k.pem")
    with pytest.raises(pki.PkiFileError,
                       match=r"^k.pem: this private key does not match the certificate in c.pem$"):
        pki.check_key_pair(ca.certificate, other.private_key, "c.pem", "k.pem")
