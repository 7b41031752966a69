"""A development admin client certificate, issued by the development CA.

Only used with the development PKI (``[tls] certificate`` empty): next to
``pe.pem`` and ``pu.pem`` in ``state_dir/pki`` it keeps ``admin.pem``,
``admin.key`` (mode 0600) and ``admin.p12`` (the same pair as PKCS#12, no
password, mode 0600) for importing into a browser.  The name is ``admin``;
etc/authz.rules grants it the ``admin`` action.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import NoEncryption, pkcs12

from rserpool.security import pki

__all__ = ["AdminCertificate", "ensure_admin_certificate"]

ADMIN_NAME = "admin"


@dataclass(frozen=True)
class AdminCertificate:
    cert: Path
    key: Path
    p12: Path


def _valid_from_ca(cert_path: Path, ca: x509.Certificate, now: dt.datetime) -> bool:
    try:
        cert = pki.load_certificate(cert_path)
    except (OSError, ValueError):
        return False
    return cert.issuer == ca.subject and cert.not_valid_after_utc - now > dt.timedelta(days=1)


def ensure_admin_certificate(directory: Path, now: dt.datetime | None = None) -> AdminCertificate:
    """Issue ``admin.pem``/``admin.key``/``admin.p12`` from the development CA in ``directory`` when missing
    or stale (the CA must exist: ``devpki.ensure_dev_pki`` first)."""
    moment = now or dt.datetime.now(dt.timezone.utc)
    directory = Path(directory)
    paths = AdminCertificate(directory / "admin.pem", directory / "admin.key", directory / "admin.p12")
    ca_cert = pki.load_certificate(directory / "ca.pem")
    if _valid_from_ca(paths.cert, ca_cert, moment) and paths.key.exists() and paths.p12.exists():
        return paths
    ca = pki.IssuedCertificate(ca_cert, pki.load_private_key(directory / "ca.key"))
    leaf = pki.create_client_certificate(ca, ADMIN_NAME, moment, role="admin")
    pki.write_private_key(paths.key, leaf.private_key)
    pki.write_certificate(paths.cert, leaf.certificate)
    bundle = pkcs12.serialize_key_and_certificates(ADMIN_NAME.encode(), leaf.private_key, leaf.certificate,
                                                   [ca_cert], NoEncryption())
    fd = os.open(paths.p12, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(bundle)
    os.chmod(paths.p12, 0o600)
    return paths
