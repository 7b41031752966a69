"""rserpool.security.certidentity: which name a verified certificate stands for (pure)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from hypothesis import given, settings
from hypothesis import strategies as st

from rserpool.security import pki
from rserpool.security.certidentity import (
    DEFAULT_POLICY,
    CertIdentity,
    CertIdentityError,
    IdentityPolicy,
    IdentitySource,
    fingerprint_sha256,
    identity_from_certificate,
    normalize_fingerprint,
)

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def ca() -> pki.IssuedCertificate:
    return pki.create_ca("identity test CA", NOW)


def client(ca: pki.IssuedCertificate, name: str = "pe1", **kwargs: object) -> x509.Certificate:
    return pki.create_client_certificate(ca, name, NOW, **kwargs).certificate  # type: ignore[arg-type]


def test_uri_san_is_the_default_identity(ca: pki.IssuedCertificate) -> None:
    cert = client(ca, "pe1", uris=["urn:rserpool:pe:echo-7"])
    ident = identity_from_certificate(cert)
    assert ident == CertIdentity(
        name="echo-7",
        source=IdentitySource.URI,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        subject="CN=pe1,O=rserpool",
        issuer="CN=identity test CA,O=rserpool",
        serial=cert.serial_number,
    )


def test_falls_back_through_dns_email_and_cn(ca: pki.IssuedCertificate) -> None:
    with_dns = client(ca, "cn-name", uris=(), dns_names=["PE1.Example.org"], emails=["a@b.test"])
    assert identity_from_certificate(with_dns).name == "pe1.example.org"
    with_email = client(ca, "cn-name", uris=(), emails=["a@b.test"])
    assert identity_from_certificate(with_email).source is IdentitySource.EMAIL
    cn_only = client(ca, "cn-name", uris=())
    ident = identity_from_certificate(cn_only)
    assert (ident.name, ident.source) == ("cn-name", IdentitySource.CN)


def test_foreign_uri_prefix_is_ignored(ca: pki.IssuedCertificate) -> None:
    cert = client(ca, "pu9", role="pu")  # urn:rserpool:pu:pu9, not a PE URI
    assert identity_from_certificate(cert).source is IdentitySource.CN
    pu_policy = IdentityPolicy.create(uri_prefix="urn:rserpool:pu:")
    assert identity_from_certificate(cert, pu_policy).source is IdentitySource.URI


def test_configured_order(ca: pki.IssuedCertificate) -> None:
    cert = client(ca, "the-cn", dns_names=["dns.test"])
    cn_first = IdentityPolicy.create(["cn", "uri"])
    assert identity_from_certificate(cert, cn_first).name == "the-cn"
    dns_only = IdentityPolicy.create([IdentitySource.DNS])
    assert identity_from_certificate(cert, dns_only).name == "dns.test"
    uri_only = IdentityPolicy.create(["uri"])
    with pytest.raises(CertIdentityError, match="no identity"):
        identity_from_certificate(client(ca, "x", uris=()), uri_only)


def test_mapping_by_fingerprint_and_subject(ca: pki.IssuedCertificate) -> None:
    cert = client(ca, "pe1")
    colon_upper = ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))
    by_fp = IdentityPolicy.create(by_fingerprint={colon_upper: "mapped-by-fp"})
    ident = identity_from_certificate(cert, by_fp)
    assert (ident.name, ident.source) == ("mapped-by-fp", IdentitySource.MAPPING)
    by_subject = IdentityPolicy.create(by_subject={"O=rserpool,CN=pe1": "nope",
                                                   "CN=pe1,O=rserpool": "mapped-by-subject"})
    assert identity_from_certificate(cert, by_subject).name == "mapped-by-subject"
    with pytest.raises(CertIdentityError):
        IdentityPolicy.create(by_subject={"not a name": "x"})
    other = client(ca, "pe2")
    assert identity_from_certificate(other, by_fp).source is IdentitySource.URI
    # Fingerprint wins over subject.
    both = IdentityPolicy.create(by_fingerprint={colon_upper: "fp"},
                                 by_subject={"CN=pe1,O=rserpool": "subject"})
    assert identity_from_certificate(cert, both).name == "fp"


def test_ambiguity_is_an_error(ca: pki.IssuedCertificate) -> None:
    two_uris = client(ca, "pe1", uris=["urn:rserpool:pe:a", "urn:rserpool:pe:b"])
    with pytest.raises(CertIdentityError, match="ambiguous"):
        identity_from_certificate(two_uris)
    same_twice = client(ca, "pe1", uris=["urn:rserpool:pe:a", "urn:rserpool:pe:a"])
    assert identity_from_certificate(same_twice).name == "a"
    empty = client(ca, "pe1", uris=["urn:rserpool:pe:"])
    with pytest.raises(CertIdentityError):
        identity_from_certificate(empty)


def test_bad_names_refused(ca: pki.IssuedCertificate) -> None:
    with pytest.raises(pki.CertificateProfileError):
        client(ca, "pe1", uris=["urn:rserpool:pe:\u00e9"])
    control = client(ca, "pe1", uris=["urn:rserpool:pe:a%0Ab"])
    # URIs are not decoded; the name is normalized (case folded).
    assert identity_from_certificate(control).name == "a%0ab"
    long_policy = IdentityPolicy.create(max_name_length=3)
    with pytest.raises(CertIdentityError):
        identity_from_certificate(client(ca, "pe1", uris=["urn:rserpool:pe:abcd"]), long_policy)
    with pytest.raises(CertIdentityError):
        IdentityPolicy.create(by_subject={"CN=x": "bad\nname"})


def test_names_are_normalized(ca: pki.IssuedCertificate) -> None:
    # One rule (rserpool.identity): every spelling slapd or a RADIUS server
    # would take for pe1 is pe1 here too.
    for cn in ("PE1", "Pe1", "pe1", "\uff30\uff25\uff11"):
        assert identity_from_certificate(client(ca, cn, uris=())).name == "pe1"
    assert identity_from_certificate(client(ca, "pe1", uris=["urn:rserpool:pe:PE1"])).name == "pe1"
    both = client(ca, "pe1", uris=["urn:rserpool:pe:PE1", "urn:rserpool:pe:pe1"])
    assert identity_from_certificate(both).name == "pe1"  # one identity, not ambiguous
    mapped = IdentityPolicy.create(by_subject={"CN=x": "  Mapped  Name "})
    assert mapped.by_subject["CN=x"] == "mapped name"
    for bad in ("pe1\u200b", " ", "a\tb"):
        with pytest.raises(CertIdentityError):
            IdentityPolicy.create(by_subject={"CN=x": bad})


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        IdentityPolicy.create([])
    with pytest.raises(ValueError):
        IdentityPolicy.create(["uri", "uri"])
    with pytest.raises(ValueError):
        IdentityPolicy.create(["nonsense"])
    with pytest.raises(ValueError):
        IdentityPolicy.create(uri_prefix="")
    with pytest.raises(CertIdentityError):
        IdentityPolicy.create(by_fingerprint={"abc": "x"})
    policy = IdentityPolicy.create(by_fingerprint={"ab" * 32: "x"})
    with pytest.raises(TypeError):
        policy.by_fingerprint["cd" * 32] = "y"  # type: ignore[index]
    assert DEFAULT_POLICY.order[0] is IdentitySource.MAPPING


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.sampled_from([":", ""]), st.booleans())
def test_fingerprint_normalisation(raw: bytes, sep: str, upper: bool) -> None:
    text = sep.join(f"{b:02x}" for b in raw)
    assert normalize_fingerprint(text.upper() if upper else text) == raw.hex()


@settings(max_examples=15, deadline=None)
@given(name=st.text(alphabet=st.sampled_from(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~"), min_size=1, max_size=40))
def test_uri_names_round_trip(name: str) -> None:
    ca = _CA
    cert = pki.create_client_certificate(ca, "pe", NOW, uris=[f"urn:rserpool:pe:{name}"],
                                         key=_KEY).certificate
    ident = identity_from_certificate(cert)
    assert (ident.name, ident.source) == (name.lower(), IdentitySource.URI)
    assert ident.fingerprint_sha256 == fingerprint_sha256(cert)


_CA = pki.create_ca("hypothesis CA", NOW)
_KEY = pki.generate_private_key()
