"""Derive a PE (or PU, or peer) identity from an already verified certificate.

Pure: no Twisted, no clock, no I/O.  The caller (the TLS shell) has already
verified the chain, validity and revocation; this module only decides *which
name* the certificate stands for.

Sources, tried in the order configured by :class:`IdentityPolicy`:

``mapping``
    an explicit table: SHA-256 fingerprint of the DER certificate, or the
    subject in RFC 4514 form, to an identity name (a file store feeds it);
``uri``
    a URI SAN starting with ``uri_prefix`` (``urn:rserpool:pe:``); the rest
    is the name;
``dns``
    a DNS SAN;
``email``
    an rfc822Name SAN;
``cn``
    the subject's common name.

A source with more than one distinct candidate is ambiguous and raises
:class:`CertIdentityError` rather than picking one silently.  The name is
returned in normalized form (:func:`rserpool.identity.normalize_identity`:
``CN=PE1`` is the identity ``pe1``), as are the names of the mapping tables.
"""

from __future__ import annotations

import enum
import hashlib
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from rserpool.identity import normalize_identity

__all__ = [
    "DEFAULT_POLICY",
    "CertIdentity",
    "CertIdentityError",
    "IdentityPolicy",
    "IdentitySource",
    "fingerprint_sha256",
    "identity_from_certificate",
    "normalize_fingerprint",
]

MAX_NAME_LENGTH = 255


class CertIdentityError(ValueError):
    """No usable identity could be derived from the certificate."""


class IdentitySource(enum.Enum):
    MAPPING = "mapping"
    URI = "uri"
    DNS = "dns"
    EMAIL = "email"
    CN = "cn"


@dataclass(frozen=True, slots=True)
class CertIdentity:
    """Who a verified certificate says its holder is."""

    name: str
    source: IdentitySource
    fingerprint_sha256: str  # lower-case hex, no separators
    subject: str  # RFC 4514
    issuer: str  # RFC 4514
    serial: int


def normalize_fingerprint(text: str) -> str:
    """``AB:CD:...`` or ``abcd...`` -> lower-case hex without separators."""
    cleaned = text.replace(":", "").replace(" ", "").strip().lower()
    if len(cleaned) != 64 or any(c not in "0123456789abcdef" for c in cleaned):
        raise CertIdentityError(f"not a SHA-256 fingerprint: {text!r}")
    return cleaned


def fingerprint_sha256(cert: x509.Certificate) -> str:
    der = cert.public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return types.MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class IdentityPolicy:
    """How to turn a certificate into a name.

    Build it with :meth:`create` so the mapping tables are normalised and
    frozen.
    """

    order: tuple[IdentitySource, ...] = (
        IdentitySource.MAPPING,
        IdentitySource.URI,
        IdentitySource.DNS,
        IdentitySource.EMAIL,
        IdentitySource.CN,
    )
    uri_prefix: str = "urn:rserpool:pe:"
    by_fingerprint: Mapping[str, str] = field(default_factory=lambda: _frozen({}))
    by_subject: Mapping[str, str] = field(default_factory=lambda: _frozen({}))
    max_name_length: int = MAX_NAME_LENGTH

    @classmethod
    def create(
        cls,
        order: Iterable[IdentitySource | str] = ("mapping", "uri", "dns", "email", "cn"),
        *,
        uri_prefix: str = "urn:rserpool:pe:",
        by_fingerprint: Mapping[str, str] | None = None,
        by_subject: Mapping[str, str] | None = None,
        max_name_length: int = MAX_NAME_LENGTH,
    ) -> IdentityPolicy:
        sources = tuple(IdentitySource(s) for s in order)
        if not sources:
            raise ValueError("the identity source order must not be empty")
        if len(set(sources)) != len(sources):
            raise ValueError("an identity source is listed twice")
        if not uri_prefix:
            raise ValueError("the URI prefix must not be empty")
        fps = {normalize_fingerprint(k): _check_name(v, max_name_length)
               for k, v in (by_fingerprint or {}).items()}
        subjects = {_normalize_subject(k): _check_name(v, max_name_length)
                    for k, v in (by_subject or {}).items()}
        return cls(sources, uri_prefix, _frozen(fps), _frozen(subjects), max_name_length)


DEFAULT_POLICY = IdentityPolicy()


def _normalize_subject(text: str) -> str:
    try:
        return x509.Name.from_rfc4514_string(text).rfc4514_string()
    except ValueError as exc:
        raise CertIdentityError(f"not an RFC 4514 name: {text!r}") from exc


def _check_name(name: str, max_length: int) -> str:
    """The normalized form of ``name`` (:func:`rserpool.identity.normalize_identity`)."""
    if not name or len(name) > max_length:
        raise CertIdentityError(f"identity must be 1-{max_length} characters")
    canonical = normalize_identity(name)
    if canonical is None or len(canonical) > max_length:
        raise CertIdentityError("identity contains control or invisible characters, or is blank")
    return canonical


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _single(candidates: list[str], what: str) -> str | None:
    # Two spellings of one identity ("PE1", "pe1") are one candidate.
    distinct = sorted({normalize_identity(c) or c for c in candidates})
    if not distinct:
        return None
    if len(distinct) > 1:
        raise CertIdentityError(f"ambiguous identity: several {what} values {distinct}")
    return distinct[0]


def _candidate(
    cert: x509.Certificate,
    source: IdentitySource,
    policy: IdentityPolicy,
    fingerprint: str,
    subject: str,
) -> str | None:
    if source is IdentitySource.MAPPING:
        if fingerprint in policy.by_fingerprint:
            return policy.by_fingerprint[fingerprint]
        return policy.by_subject.get(subject)
    if source is IdentitySource.CN:
        values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return _single([str(v.value) for v in values], "common name")
    sans = _sans(cert)
    if sans is None:
        return None
    if source is IdentitySource.URI:
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
        prefix = policy.uri_prefix
        names = [u[len(prefix):] for u in uris if u.startswith(prefix)]
        if any(not n for n in names):
            raise CertIdentityError(f"URI SAN {prefix!r} without a name")
        return _single(names, "URI SAN")
    if source is IdentitySource.DNS:
        return _single([d.lower() for d in sans.get_values_for_type(x509.DNSName)], "DNS SAN")
    if source is IdentitySource.EMAIL:
        return _single(sans.get_values_for_type(x509.RFC822Name), "email SAN")
    raise AssertionError(source)  # pragma: no cover


def identity_from_certificate(
    cert: x509.Certificate, policy: IdentityPolicy = DEFAULT_POLICY
) -> CertIdentity:
    """The identity of a *verified* certificate under ``policy``.

    Raises :class:`CertIdentityError` when no source yields a name, when a
    source is ambiguous, or when the name is empty, too long or contains
    control characters.
    """
    fingerprint = fingerprint_sha256(cert)
    subject = cert.subject.rfc4514_string()
    for source in policy.order:
        name = _candidate(cert, source, policy, fingerprint, subject)
        if name is not None:
            return CertIdentity(
                name=_check_name(name, policy.max_name_length),
                source=source,
                fingerprint_sha256=fingerprint,
                subject=subject,
                issuer=cert.issuer.rfc4514_string(),
                serial=cert.serial_number,
            )
    raise CertIdentityError(
        "no identity in certificate "
        f"(tried {', '.join(s.value for s in policy.order)}; subject {subject})"
    )
