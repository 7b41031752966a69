"""The development admin certificate (rserpool.admin.devcert)."""

from __future__ import annotations

import datetime as dt
import stat

from cryptography.hazmat.primitives.serialization import pkcs12

from rserpool.admin.devcert import ensure_admin_certificate
from rserpool.security import devpki, pki
from rserpool.security.certidentity import identity_from_certificate


def test_issued_once_from_the_development_ca_and_named_admin(tmp_path):
    paths = devpki.ensure_dev_pki(tmp_path)
    issued = ensure_admin_certificate(tmp_path)
    cert = pki.load_certificate(issued.cert)
    assert cert.issuer == pki.load_certificate(paths.ca_cert).subject
    assert identity_from_certificate(cert).name == "admin"
    for path in (issued.key, issued.p12):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key, leaf, extra = pkcs12.load_key_and_certificates(issued.p12.read_bytes(), None)
    assert leaf == cert and key is not None and len(extra) == 1
    before = issued.cert.read_bytes()
    assert ensure_admin_certificate(tmp_path) == issued
    assert issued.cert.read_bytes() == before  # reused, not re-issued


def test_reissued_when_about_to_expire_or_from_another_ca(tmp_path):
    devpki.ensure_dev_pki(tmp_path)
    issued = ensure_admin_certificate(tmp_path)
    before = issued.cert.read_bytes()
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3650)
    ensure_admin_certificate(tmp_path, now=later)
    assert issued.cert.read_bytes() != before
