"""rserpool.security.devpki: the development PKI kept in a directory."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
from pathlib import Path

from cryptography import x509

from rserpool.security import devpki, pki
from rserpool.security.crl import verify_crl

NOW = dt.datetime(2030, 5, 17, 12, 0, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)


def ext(cert: x509.Certificate, cls: type) -> object:
    return cert.extensions.get_extension_for_class(cls)


def _bytes(paths: devpki.DevPKIPaths) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in paths.directory.iterdir()}


def test_ensure_dev_pki_creates_then_reuses(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    first = devpki.ensure_dev_pki(directory, now=NOW)
    assert first.created
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    for key in (first.ca_key, first.server_key, first.pe_key, first.pu_key):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    server = pki.load_certificate(first.server_cert)
    server.verify_directly_issued_by(pki.load_certificate(first.ca_cert))
    sans = ext(server, x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert ipaddress.ip_address("::1") in sans.get_values_for_type(x509.IPAddress)
    before = _bytes(first)
    second = devpki.ensure_dev_pki(directory, now=NOW + 10 * DAY)
    assert not second.created
    assert _bytes(second) == before


def test_ensure_dev_pki_reissues_what_is_stale(tmp_path: Path) -> None:
    paths = devpki.ensure_dev_pki(tmp_path, now=NOW)
    before = _bytes(paths)
    # A new name: only the registrar certificate changes.
    renamed = devpki.ensure_dev_pki(tmp_path, ("localhost", "127.0.0.1", "::1", "enrp.test"), now=NOW)
    after = _bytes(renamed)
    assert renamed.created
    assert {n for n in before if before[n] != after[n]} == {"registrar.pem", "registrar.key"}
    # Leaves expire after 825 days; the CA lasts 10 years.
    later = NOW + 900 * DAY
    refreshed = devpki.ensure_dev_pki(tmp_path, ("localhost", "127.0.0.1", "::1", "enrp.test"), now=later)
    changed = {n for n, data in _bytes(refreshed).items() if after[n] != data}
    assert changed == {"registrar.pem", "registrar.key", "pe.pem", "pe.key", "pu.pem", "pu.key",
                       "crl.pem"}  # the CRL is re-signed too
    # An expired CA means a new CA and new leaves issued by it.
    much_later = NOW + 4000 * DAY
    reborn = devpki.ensure_dev_pki(tmp_path, now=much_later)
    ca = pki.load_certificate(reborn.ca_cert)
    assert ca.not_valid_before_utc > NOW
    for cert_path in (reborn.server_cert, reborn.pe_cert, reborn.pu_cert):
        pki.load_certificate(cert_path).verify_directly_issued_by(ca)


def test_ensure_dev_pki_replaces_leaf_from_foreign_ca(tmp_path: Path) -> None:
    paths = devpki.ensure_dev_pki(tmp_path, now=NOW)
    foreign = pki.create_ca("foreign", NOW)
    leaf = pki.create_client_certificate(foreign, "pe1", NOW)
    pki.write_certificate(paths.pe_cert, leaf.certificate)
    pki.write_private_key(paths.pe_key, leaf.private_key)
    again = devpki.ensure_dev_pki(tmp_path, now=NOW)
    assert again.created
    pki.load_certificate(again.pe_cert).verify_directly_issued_by(
        pki.load_certificate(again.ca_cert))


# -- the development CRL ---------------------------------------------------------------


def number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_dev_pki_issues_an_empty_crl_signed_by_its_ca(tmp_path: Path) -> None:
    paths = devpki.ensure_dev_pki(tmp_path, now=NOW)
    assert paths.crl == tmp_path / "crl.pem"
    crl = pki.load_crl(paths.crl)
    ca = devpki.load_dev_ca(tmp_path)
    info = verify_crl(crl, ca.certificate, NOW)
    assert list(crl) == [] and info.next_update == NOW + devpki.DEV_CRL_LIFETIME
    assert number(crl) == 1


def test_revocations_are_kept_and_the_crl_refreshed_before_it_expires(tmp_path: Path) -> None:
    paths = devpki.ensure_dev_pki(tmp_path, now=NOW)
    pe_serial = pki.load_certificate(paths.pe_cert).serial_number
    devpki.revoke_dev_certificate(tmp_path, pe_serial, NOW + DAY)
    revoked = pki.load_crl(paths.crl)
    assert [e.serial_number for e in revoked] == [pe_serial] and number(revoked) == 2
    # Revoking again changes nothing.
    ca = devpki.load_dev_ca(tmp_path)
    assert devpki.ensure_dev_crl(tmp_path, ca, NOW + DAY, revoke=[pe_serial])[1] is False
    # Not yet close to its nextUpdate: kept as it is.
    before = paths.crl.read_bytes()
    later = NOW + devpki.DEV_CRL_LIFETIME - devpki.DEV_CRL_REFRESH
    assert devpki.ensure_dev_crl(tmp_path, ca, later, ())[1] is False
    assert paths.crl.read_bytes() == before
    # Close to it: re-signed, same revocation (and its date), higher number.
    _, changed = devpki.ensure_dev_crl(tmp_path, ca, later + 2 * DAY)
    fresh = pki.load_crl(paths.crl)
    assert changed and number(fresh) == 3
    assert [(e.serial_number, e.revocation_date_utc) for e in fresh] == \
        [(e.serial_number, e.revocation_date_utc) for e in revoked]
    assert verify_crl(fresh, ca.certificate, later + 2 * DAY).next_update > later + 2 * DAY + 20 * DAY
    # ensure_dev_pki does the same on start-up.
    again = devpki.ensure_dev_pki(tmp_path, now=later + 25 * DAY)
    assert number(pki.load_crl(again.crl)) == 4


def test_broken_foreign_or_future_crl_is_replaced(tmp_path: Path) -> None:
    paths = devpki.ensure_dev_pki(tmp_path, now=NOW)
    ca = devpki.load_dev_ca(tmp_path)
    paths.crl.write_bytes(b"garbage")
    assert devpki.ensure_dev_crl(tmp_path, ca, NOW)[1]
    verify_crl(pki.load_crl(paths.crl), ca.certificate, NOW)
    foreign = pki.create_ca("foreign", NOW)
    pki.write_crl(paths.crl, pki.create_crl(foreign, [7], NOW))
    assert devpki.ensure_dev_crl(tmp_path, ca, NOW)[1]
    assert list(pki.load_crl(paths.crl)) == []  # a foreign CA's revocations do not carry over
    pki.write_crl(paths.crl, pki.create_crl(ca, [], NOW + 3 * DAY))  # clock went back
    assert devpki.ensure_dev_crl(tmp_path, ca, NOW)[1]
    verify_crl(pki.load_crl(paths.crl), ca.certificate, NOW)


def test_new_ca_gets_a_new_crl(tmp_path: Path) -> None:
    devpki.ensure_dev_pki(tmp_path, now=NOW)
    devpki.revoke_dev_certificate(tmp_path, 12345, NOW)
    reborn = devpki.ensure_dev_pki(tmp_path, now=NOW + 4000 * DAY)
    crl = pki.load_crl(reborn.crl)
    assert list(crl) == []
    verify_crl(crl, pki.load_certificate(reborn.ca_cert), NOW + 4000 * DAY)


def test_cluster_pki_issues_one_registrar_certificate_per_name_and_reuses_them(tmp_path):
    from rserpool.security.certidentity import identity_from_certificate
    from rserpool.security.devpki import CLUSTER_REGISTRARS, ensure_cluster_pki
    from rserpool.security.pki import load_certificate
    from rserpool.service.enrp import PEER_IDENTITY_POLICY

    files = ensure_cluster_pki(tmp_path / "pki")
    assert set(files) == set(CLUSTER_REGISTRARS) | {"pe1", "pe2", "pe3"}
    for name in CLUSTER_REGISTRARS:
        cert = load_certificate(files[name][0])
        assert identity_from_certificate(cert, PEER_IDENTITY_POLICY).name == name
    before = {name: paths[0].read_bytes() for name, paths in files.items()}
    again = ensure_cluster_pki(tmp_path / "pki")
    assert {name: paths[0].read_bytes() for name, paths in again.items()} == before
