"""A small PKI for development and tests, built with ``cryptography``.

Everything here is pure apart from the explicit file helpers: no Twisted, no
hidden clock reads (every builder takes ``now``), randomness only for keys and
default serial numbers.  The development PKI kept in a directory
(``ensure_dev_pki``) is :mod:`rserpool.security.devpki`.

Certificate profiles:

- CA: ``basicConstraints CA:TRUE`` (critical), keyCertSign + cRLSign.
- Registrar (server): SAN DNS names and IP addresses, EKU serverAuth and
  clientAuth (registrars will authenticate each other with the same
  certificate), optional AIA OCSP URL and CRL distribution point.
- PE / PU (client): subject CN and a URI SAN ``urn:rserpool:<role>:<name>``,
  EKU clientAuth.
- OCSP responder: EKU OCSPSigning and the id-pkix-ocsp-nocheck extension.

A server certificate whose EKU lacks serverAuth is refused by our clients
(OpenSSL's ``ssl_server`` purpose); a client certificate without clientAuth
is refused by our servers (:func:`rserpool.security.tls.has_client_auth_usage`:
a certificate without any extended key usage is refused as a client too).
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateProfileError",
    "PkiFileError",
    "check_key_pair",
    "IssuedCertificate",
    "KeyType",
    "PrivateKey",
    "as_utc",
    "create_ca",
    "create_client_certificate",
    "create_crl",
    "create_ocsp_responder_certificate",
    "create_server_certificate",
    "general_name",
    "generate_private_key",
    "load_certificate",
    "load_certificates",
    "load_crl",
    "load_private_key",
    "subject_alt_names",
    "write_certificate",
    "write_crl",
    "write_private_key",
]

KeyType = Literal["ec", "rsa"]
PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]
PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_CA_DAYS = 3650
DEFAULT_LEAF_DAYS = 825
#: Certificates start this much before ``now`` to tolerate clock skew.
DEFAULT_BACKDATE = _dt.timedelta(minutes=5)


class CertificateProfileError(ValueError):
    """A certificate request that makes no sense (bad name, bad window...)."""


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A certificate together with its private key (and the issuing chain)."""

    certificate: x509.Certificate
    private_key: PrivateKey
    #: Issuer certificates above this one, nearest first (not the root when
    #: the issuer is a root: a root is a trust anchor, not chain material).
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def serial(self) -> int:
        return self.certificate.serial_number

    def cert_pem(self, with_chain: bool = True) -> bytes:
        certs = (self.certificate, *self.chain) if with_chain else (self.certificate,)
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

    def key_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def generate_private_key(key_type: KeyType = "ec", rsa_bits: int = 3072) -> PrivateKey:
    """A fresh ECDSA P-256 key (default) or an RSA key of ``rsa_bits``."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        if rsa_bits < 2048:
            raise CertificateProfileError("RSA keys shorter than 2048 bits are refused")
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    raise CertificateProfileError(f"unknown key type {key_type!r}")


def as_utc(moment: _dt.datetime) -> _dt.datetime:
    if moment.tzinfo is None:
        raise CertificateProfileError("datetimes must be timezone-aware (UTC)")
    return moment.astimezone(_dt.timezone.utc)


def _window(
    now: _dt.datetime,
    days: int,
    not_before: _dt.datetime | None,
    not_after: _dt.datetime | None,
) -> tuple[_dt.datetime, _dt.datetime]:
    start = as_utc(not_before) if not_before is not None else as_utc(now) - DEFAULT_BACKDATE
    end = as_utc(not_after) if not_after is not None else as_utc(now) + _dt.timedelta(days=days)
    if end <= start:
        raise CertificateProfileError("not_after must be later than not_before")
    return start, end


def _name(common_name: str, organization: str | None = "rserpool") -> x509.Name:
    if not common_name or len(common_name) > 64:
        raise CertificateProfileError("common name must be 1-64 characters")
    attrs = []
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _key_usage(key: PrivateKey, *, ca: bool = False) -> x509.KeyUsage:
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=is_rsa and not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not name or len(name) > 253 or any(c.isspace() for c in name):
        raise CertificateProfileError(f"invalid DNS name {name!r}")
    return x509.DNSName(name)


def _builder(
    subject: x509.Name,
    public_key: object,
    issuer: IssuedCertificate | None,
    window: tuple[_dt.datetime, _dt.datetime],
    serial: int | None,
) -> x509.CertificateBuilder:
    issuer_name = issuer.certificate.subject if issuer is not None else subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(window[0])
        .not_valid_after(window[1])
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer.certificate.public_key()  # type: ignore[arg-type]
            ),
            critical=False,
        )
    return builder


def _add_revocation_pointers(
    builder: x509.CertificateBuilder, ocsp_url: str | None, crl_url: str | None
) -> x509.CertificateBuilder:
    if ocsp_url:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        x509.oid.AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(ocsp_url),
                    )
                ]
            ),
            critical=False,
        )
    if crl_url:
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(crl_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
    return builder


def _sign(builder: x509.CertificateBuilder, key: PrivateKey) -> x509.Certificate:
    return builder.sign(key, hashes.SHA256())


def _chain_for(issuer: IssuedCertificate) -> tuple[x509.Certificate, ...]:
    """Chain material a leaf issued by ``issuer`` should present."""
    cert = issuer.certificate
    if cert.issuer == cert.subject:
        return ()
    return (cert, *issuer.chain)


def create_ca(
    common_name: str,
    now: _dt.datetime,
    *,
    issuer: IssuedCertificate | None = None,
    days: int = DEFAULT_CA_DAYS,
    not_before: _dt.datetime | None = None,
    not_after: _dt.datetime | None = None,
    key_type: KeyType = "ec",
    key: PrivateKey | None = None,
    serial: int | None = None,
    path_length: int | None = None,
    organization: str | None = "rserpool",
) -> IssuedCertificate:
    """A self-signed root CA, or an intermediate CA when ``issuer`` is given."""
    key = key if key is not None else generate_private_key(key_type)
    window = _window(now, days, not_before, not_after)
    builder = _builder(
        _name(common_name, organization), key.public_key(), issuer, window, serial
    )
    builder = builder.add_extension(
        x509.BasicConstraints(ca=True, path_length=path_length), critical=True
    ).add_extension(_key_usage(key, ca=True), critical=True)
    signer = issuer.private_key if issuer is not None else key
    chain = _chain_for(issuer) if issuer is not None else ()
    return IssuedCertificate(_sign(builder, signer), key, chain)


def create_server_certificate(
    ca: IssuedCertificate,
    names: Sequence[str],
    now: _dt.datetime,
    *,
    common_name: str | None = None,
    client_auth: bool = True,
    days: int = DEFAULT_LEAF_DAYS,
    not_before: _dt.datetime | None = None,
    not_after: _dt.datetime | None = None,
    ocsp_url: str | None = None,
    crl_url: str | None = None,
    key_type: KeyType = "ec",
    key: PrivateKey | None = None,
    serial: int | None = None,
) -> IssuedCertificate:
    """A registrar certificate for DNS names and IP addresses in ``names``.

    EKU serverAuth, plus clientAuth unless ``client_auth`` is false (registrars
    authenticate each other with it over ENRP).
    """
    if not names:
        raise CertificateProfileError("a server certificate needs at least one name")
    sans = [general_name(n) for n in names]
    key = key if key is not None else generate_private_key(key_type)
    window = _window(now, days, not_before, not_after)
    cn = common_name if common_name is not None else names[0]
    builder = _builder(_name(cn), key.public_key(), ca, window, serial)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    if client_auth:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(key), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
    )
    builder = _add_revocation_pointers(builder, ocsp_url, crl_url)
    return IssuedCertificate(_sign(builder, ca.private_key), key, _chain_for(ca))


def create_client_certificate(
    ca: IssuedCertificate,
    name: str,
    now: _dt.datetime,
    *,
    role: str = "pe",
    uris: Sequence[str] | None = None,
    dns_names: Sequence[str] = (),
    emails: Sequence[str] = (),
    days: int = DEFAULT_LEAF_DAYS,
    not_before: _dt.datetime | None = None,
    not_after: _dt.datetime | None = None,
    ocsp_url: str | None = None,
    crl_url: str | None = None,
    key_type: KeyType = "ec",
    key: PrivateKey | None = None,
    serial: int | None = None,
) -> IssuedCertificate:
    """A PE or PU client certificate: CN ``name`` and URI SAN ``urn:rserpool:<role>:<name>``.

    Pass ``uris=()`` for a certificate without URI SAN, or an explicit list to
    replace the default one.  EKU clientAuth only.
    """
    if not role.isalnum():
        raise CertificateProfileError(f"invalid role {role!r}")
    uri_list = list(uris) if uris is not None else [f"urn:rserpool:{role}:{name}"]
    try:
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uri_list]
        sans += [general_name(d) for d in dns_names]
        sans += [x509.RFC822Name(e) for e in emails]
    except ValueError as exc:  # non-ASCII URI or e-mail address
        raise CertificateProfileError(str(exc)) from exc
    key = key if key is not None else generate_private_key(key_type)
    window = _window(now, days, not_before, not_after)
    builder = _builder(_name(name), key.public_key(), ca, window, serial)
    builder = (
        builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(key), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    builder = _add_revocation_pointers(builder, ocsp_url, crl_url)
    return IssuedCertificate(_sign(builder, ca.private_key), key, _chain_for(ca))


def create_ocsp_responder_certificate(
    ca: IssuedCertificate,
    now: _dt.datetime,
    *,
    common_name: str = "rserpool OCSP responder",
    days: int = DEFAULT_LEAF_DAYS,
    not_before: _dt.datetime | None = None,
    not_after: _dt.datetime | None = None,
    key_type: KeyType = "ec",
    key: PrivateKey | None = None,
    serial: int | None = None,
) -> IssuedCertificate:
    """A delegated OCSP signer for ``ca`` (EKU OCSPSigning, OCSP no-check)."""
    key = key if key is not None else generate_private_key(key_type)
    window = _window(now, days, not_before, not_after)
    builder = _builder(_name(common_name), key.public_key(), ca, window, serial)
    builder = (
        builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(key), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
        )
        .add_extension(x509.OCSPNoCheck(), critical=False)
    )
    return IssuedCertificate(_sign(builder, ca.private_key), key, _chain_for(ca))


def create_crl(
    ca: IssuedCertificate,
    revoked: Iterable[int | tuple[int, _dt.datetime]],
    now: _dt.datetime,
    *,
    next_update: _dt.timedelta = _dt.timedelta(days=7),
    crl_number: int = 1,
    reason: x509.ReasonFlags | None = None,
) -> x509.CertificateRevocationList:
    """A CRL signed by ``ca`` revoking the given serials.

    Each item is a serial (revoked at ``now``) or ``(serial, revocation_date)``.
    """
    if crl_number < 0:
        raise CertificateProfileError("CRL number must not be negative")
    this_update = as_utc(now)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(this_update)
        .next_update(this_update + next_update)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca.certificate.public_key()  # type: ignore[arg-type]
            ),
            critical=False,
        )
    )
    seen: set[int] = set()
    for item in revoked:
        serial, when = (item, this_update) if isinstance(item, int) else item
        if serial in seen:
            continue
        seen.add(serial)
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(as_utc(when))
        )
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca.private_key, hashes.SHA256())


def subject_alt_names(cert: x509.Certificate) -> list[x509.GeneralName]:
    """The certificate's SAN entries (empty if it has none)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value)


# --- files -----------------------------------------------------------------


def _write_bytes(path: PathLike, data: bytes, mode: int) -> Path:
    """Write atomically (temp file + rename) with ``mode`` set from creation on."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)
    return target


def write_private_key(path: PathLike, key: PrivateKey) -> Path:
    """Write an unencrypted PKCS#8 PEM key, mode 0600."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return _write_bytes(path, pem, 0o600)


def write_certificate(path: PathLike, *certs: x509.Certificate) -> Path:
    """Write one or more certificates (leaf first) as PEM, mode 0644."""
    if not certs:
        raise CertificateProfileError("nothing to write")
    data = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    return _write_bytes(path, data, 0o644)


def write_crl(path: PathLike, crl: x509.CertificateRevocationList) -> Path:
    return _write_bytes(path, crl.public_bytes(serialization.Encoding.PEM), 0o644)


class PkiFileError(ValueError):
    """A certificate, key or CRL file that cannot be used.  ``str()`` is one
    line that names the file and says what is wrong with it."""


def _read(path: PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise PkiFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise PkiFileError(f"{path}: a directory, not a file") from None
    except PermissionError:
        raise PkiFileError(f"{path}: permission denied") from None
    except OSError as exc:
        raise PkiFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def load_certificates(path: PathLike) -> list[x509.Certificate]:
    """All PEM certificates in a file (a bundle or a leaf plus its chain)."""
    data = _read(path)
    try:
        return list(x509.load_pem_x509_certificates(data))
    except ValueError:
        if b"PRIVATE KEY-----" in data and b"CERTIFICATE-----" not in data:
            raise PkiFileError(f"{path}: holds a private key, not a certificate") from None
        raise PkiFileError(f"{path}: not a PEM certificate file") from None


def load_certificate(path: PathLike) -> x509.Certificate:
    """The first PEM certificate in a file."""
    return load_certificates(path)[0]


def load_private_key(path: PathLike) -> PrivateKey:
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # it needs a password
        raise PkiFileError(f"{path}: an encrypted private key (not supported: store it "
                           "unencrypted, mode 0600)") from None
    except ValueError:
        if b"CERTIFICATE-----" in data and b"PRIVATE KEY-----" not in data:
            raise PkiFileError(f"{path}: holds a certificate, not a private key") from None
        raise PkiFileError(f"{path}: not a PEM private key") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise CertificateProfileError(f"{path}: only EC and RSA private keys are supported")
    return key


def check_key_pair(certificate: x509.Certificate, key: PrivateKey, cert_path: PathLike,
                   key_path: PathLike) -> None:
    """PkiFileError unless ``key`` is the private key of ``certificate``."""
    if certificate.public_key().public_numbers() != key.public_key().public_numbers():
        raise PkiFileError(f"{key_path}: this private key does not match the certificate "
                           f"in {cert_path}")


def load_crl(path: PathLike) -> x509.CertificateRevocationList:
    data = _read(path)
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise PkiFileError(f"{path}: not a PEM or DER CRL") from None
