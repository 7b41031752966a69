"""The development PKI: a CA plus registrar, PE and PU certificates and the
CA's CRL kept in one directory, created once and reused (``rserpool.tap``
uses it when no certificate is configured; tests use it too).

:func:`ensure_dev_pki` is the one convenience that touches the file system
and reads the clock (only when ``now`` is omitted).  The certificates are
built by :mod:`rserpool.security.pki`.

The CRL (``crl.pem``) makes a registrar started on the development PKI
(``etc/registrar.ini``, ``scripts/run``) check revocation from the first
handshake.  It starts empty.  :func:`revoke_dev_certificate` adds a serial
number (a compromised development PE certificate, or a test); the
registrar's :class:`~rserpool.security.revocation.CrlMonitor` sees the file
change and reloads it.  :func:`ensure_dev_crl` re-signs the CRL, with the
same revoked serials and a higher CRL number, when it has less than
:data:`DEV_CRL_REFRESH` left (the CRL monitor calls it on every check), so a
registrar that runs for weeks never holds an expired CRL, which OpenSSL
would answer by refusing every client certificate.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from rserpool.security.pki import (
    CertificateProfileError,
    IssuedCertificate,
    KeyType,
    PathLike,
    DEFAULT_BACKDATE,
    as_utc,
    create_ca,
    create_client_certificate,
    create_crl,
    create_server_certificate,
    general_name,
    load_certificate,
    load_crl,
    load_private_key,
    subject_alt_names,
    write_certificate,
    write_crl,
    write_private_key,
)

__all__ = ["CLUSTER_REGISTRARS", "DEV_CRL_LIFETIME", "DEV_CRL_NAME", "DEV_CRL_REFRESH", "DevPKIPaths",
           "ensure_cluster_pki", "ensure_dev_crl",
           "ensure_dev_pki", "load_dev_ca", "revoke_dev_certificate"]

#: The development CRL's file name in the PKI directory.
DEV_CRL_NAME = "crl.pem"
#: nextUpdate - thisUpdate of a development CRL.
DEV_CRL_LIFETIME = _dt.timedelta(days=30)
#: A development CRL with less than this left is re-signed.
DEV_CRL_REFRESH = _dt.timedelta(days=10)


@dataclass(frozen=True, slots=True)
class DevPKIPaths:
    """Where :func:`ensure_dev_pki` keeps its files."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    pe_cert: Path
    pe_key: Path
    pu_cert: Path
    pu_key: Path
    created: bool  # True if anything was (re)issued on this call
    crl: Path  # the CA's CRL (empty at first, see ensure_dev_crl)

    @classmethod
    def in_directory(cls, directory: Path, created: bool = False) -> DevPKIPaths:
        return cls(
            directory=directory,
            ca_cert=directory / "ca.pem",
            ca_key=directory / "ca.key",
            server_cert=directory / "registrar.pem",
            server_key=directory / "registrar.key",
            pe_cert=directory / "pe.pem",
            pe_key=directory / "pe.key",
            pu_cert=directory / "pu.pem",
            pu_key=directory / "pu.key",
            created=created,
            crl=directory / DEV_CRL_NAME,
        )


def _usable(cert_path: Path, key_path: Path, now: _dt.datetime, margin: _dt.timedelta) -> bool:
    if not (cert_path.is_file() and key_path.is_file()):
        return False
    try:
        cert = load_certificate(cert_path)
        load_private_key(key_path)
    except (ValueError, CertificateProfileError):
        return False
    return cert.not_valid_before_utc <= now and now + margin < cert.not_valid_after_utc


def _server_covers(cert_path: Path, names: Sequence[str]) -> bool:
    wanted = {general_name(n) for n in names}
    return wanted <= set(subject_alt_names(load_certificate(cert_path)))


def ensure_dev_pki(
    directory: PathLike,
    server_names: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
    *,
    now: _dt.datetime | None = None,
    pe_name: str = "pe1",
    pu_name: str = "pu1",
    key_type: KeyType = "ec",
) -> DevPKIPaths:
    """Create a development CA plus registrar, PE and PU certificates and the CA's
    CRL once, reuse them later.

    Reuses whatever is still valid for at least a day; re-issues leaf
    certificates that are missing, about to expire, or (for the registrar) do
    not cover ``server_names``; creates a new CA (and so new leaves) only when
    the CA itself is unusable; re-signs the CA's CRL ``crl.pem`` (keeping its
    revocations) when it is missing or close to its nextUpdate
    (:func:`ensure_dev_crl`).  The directory is created with mode 0700 and
    keys are written with mode 0600.  ``now`` defaults to the current time.
    """
    moment = as_utc(now) if now is not None else _dt.datetime.now(_dt.timezone.utc)
    root = Path(directory)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = DevPKIPaths.in_directory(root)
    day = _dt.timedelta(days=1)
    created = False

    if _usable(paths.ca_cert, paths.ca_key, moment, _dt.timedelta(days=30)):
        ca = IssuedCertificate(load_certificate(paths.ca_cert), load_private_key(paths.ca_key))
    else:
        ca = create_ca("rserpool development CA", moment, key_type=key_type)
        write_private_key(paths.ca_key, ca.private_key)
        write_certificate(paths.ca_cert, ca.certificate)
        for stale in (paths.server_cert, paths.pe_cert, paths.pu_cert):
            stale.unlink(missing_ok=True)
        created = True

    def issued_by_ca(cert_path: Path) -> bool:
        cert = load_certificate(cert_path)
        return cert.issuer == ca.certificate.subject and (
            _aki(cert) == _ski(ca.certificate)
        )

    def needs(cert_path: Path, key_path: Path) -> bool:
        return not (_usable(cert_path, key_path, moment, day) and issued_by_ca(cert_path))

    if needs(paths.server_cert, paths.server_key) or not _server_covers(
        paths.server_cert, server_names
    ):
        leaf = create_server_certificate(ca, list(server_names), moment, key_type=key_type)
        write_private_key(paths.server_key, leaf.private_key)
        write_certificate(paths.server_cert, leaf.certificate)
        created = True
    for name, role, cert_path, key_path in (
        (pe_name, "pe", paths.pe_cert, paths.pe_key),
        (pu_name, "pu", paths.pu_cert, paths.pu_key),
    ):
        if needs(cert_path, key_path):
            leaf = create_client_certificate(ca, name, moment, role=role, key_type=key_type)
            write_private_key(key_path, leaf.private_key)
            write_certificate(cert_path, leaf.certificate)
            created = True
    created = ensure_dev_crl(root, ca, moment)[1] or created
    return DevPKIPaths.in_directory(root, created=created)


def _ski(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def _aki(cert: x509.Certificate) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except x509.ExtensionNotFound:
        return None
    return ext.value.key_identifier


# --- the CRL ---------------------------------------------------------------------


def load_dev_ca(directory: str | Path) -> IssuedCertificate:
    """The development CA (certificate and key) in ``directory``."""
    root = Path(directory)
    return IssuedCertificate(load_certificate(root / "ca.pem"),
                                 load_private_key(root / "ca.key"))


def _current(path: Path, ca: IssuedCertificate) -> x509.CertificateRevocationList | None:
    """The CRL at ``path`` if it is readable and signed by ``ca``."""
    try:
        crl = load_crl(path)
    except (OSError, ValueError):
        return None
    if crl.issuer != ca.certificate.subject:
        return None
    if not crl.is_signature_valid(ca.certificate.public_key()):  # type: ignore[arg-type]
        return None
    return crl


def _number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


def ensure_dev_crl(directory: str | Path, ca: IssuedCertificate, now: _dt.datetime,
                   revoke: Iterable[int] = ()) -> tuple[Path, bool]:
    """Make ``directory/crl.pem`` a current CRL of ``ca``; returns (path, re-issued?).

    It is re-issued when it is missing, unreadable, not signed by ``ca``
    (the CA was replaced: its revocations do not apply to the new CA), has
    less than :data:`DEV_CRL_REFRESH` left, or when ``revoke`` names a
    serial it does not list yet.  Serials it already lists stay listed.
    """
    path = Path(directory) / DEV_CRL_NAME
    moment = as_utc(now)
    current = _current(path, ca)
    listed: dict[int, _dt.datetime] = {}
    number = 0
    if current is not None:
        listed = {entry.serial_number: entry.revocation_date_utc for entry in current}
        number = _number(current)
    wanted = [serial for serial in revoke if serial not in listed]
    fresh = (current is not None and current.next_update_utc is not None
             and current.next_update_utc - moment >= DEV_CRL_REFRESH
             and current.last_update_utc <= moment + DEFAULT_BACKDATE)
    if fresh and not wanted:
        return path, False
    entries: list[int | tuple[int, _dt.datetime]] = list(listed.items())
    entries += wanted
    crl = create_crl(ca, entries, moment, next_update=DEV_CRL_LIFETIME, crl_number=number + 1)
    write_crl(path, crl)
    return path, True


def revoke_dev_certificate(directory: str | Path, serial: int, now: _dt.datetime) -> Path:
    """Add ``serial`` to the development CRL in ``directory`` (signed by its CA)."""
    path, _ = ensure_dev_crl(directory, load_dev_ca(directory), now, revoke=[serial])
    return path


#: The registrars of the three-registrar example (etc/cluster): each one's
#: certificate names it by this one DNS name, its identity as an ENRP peer.
CLUSTER_REGISTRARS = ("registrar-a.rserpool.test", "registrar-b.rserpool.test", "registrar-c.rserpool.test")


def ensure_cluster_pki(directory: PathLike, registrars: Sequence[str] = CLUSTER_REGISTRARS, *,
                       pe_names: Sequence[str] = ("pe1", "pe2", "pe3"), now: _dt.datetime | None = None,
                       key_type: KeyType = "ec") -> dict[str, tuple[Path, Path]]:
    """The development PKI of a cluster: :func:`ensure_dev_pki` (CA, CRL, a
    PU certificate) plus one certificate per registrar (its DNS name, the
    identity its peers authorize for ``peer``, and 127.0.0.1) and one client
    certificate per PE name.  Reuses what is still valid; returns
    ``{name: (cert, key)}`` for the registrars and the PEs."""
    moment = as_utc(now) if now is not None else _dt.datetime.now(_dt.timezone.utc)
    paths = ensure_dev_pki(directory, now=moment, pe_name=pe_names[0] if pe_names else "pe1", key_type=key_type)
    ca = load_dev_ca(paths.directory)
    out: dict[str, tuple[Path, Path]] = {}
    day = _dt.timedelta(days=1)
    wanted = [(name, "registrar") for name in registrars] + [(name, "pe") for name in pe_names]
    for name, kind in wanted:
        cert_path, key_path = paths.directory / f"{name}.pem", paths.directory / f"{name}.key"
        fresh = (_usable(cert_path, key_path, moment, day)
                 and load_certificate(cert_path).issuer == ca.certificate.subject
                 and _aki(load_certificate(cert_path)) == _ski(ca.certificate))
        if not fresh:
            if kind == "registrar":
                leaf = create_server_certificate(ca, [name, "127.0.0.1"], moment, key_type=key_type)
            else:
                leaf = create_client_certificate(ca, name, moment, role="pe", key_type=key_type)
            write_private_key(key_path, leaf.private_key)
            write_certificate(cert_path, leaf.certificate)
        out[name] = (cert_path, key_path)
    return out
