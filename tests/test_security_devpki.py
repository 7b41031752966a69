"""rserpool.security.devpki: the development PKI kept in a directory."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
from pathlib import Path

from cryptography import x509

from rserpool.security import devpki, pki

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
    assert changed == {"registrar.pem", "registrar.key", "pe.pem", "pe.key", "pu.pem", "pu.key"}
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
