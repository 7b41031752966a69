"""Unit tests for rserpool.security.der, the minimal DER reader."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from hypothesis import given
from hypothesis import strategies as st

from rserpool.security.der import (
    DerError,
    der_children,
    der_item,
    der_oid,
    hash_from_algid,
    pss_parameters,
    public_key_bits,
)
from tests.test_security_ocsp import SHA256_ALGID, _oid, _tlv, wrap_basic


def test_item_short_and_long_lengths() -> None:
    assert der_item(b"\x04\x02ab", 0, 4) == (0x04, 2, 4)
    long = _tlv(0x04, b"x" * 300)
    assert long[1] == 0x82
    assert der_item(long, 0, len(long)) == (0x04, 4, 304)


@pytest.mark.parametrize("data", [
    b"\x04",                      # no length
    b"\x1f\x01\x00",              # multi-byte tag
    b"\x04\x80",                  # indefinite length
    b"\x04\x85\x00\x00\x00\x00\x01",  # more than 4 length bytes
    b"\x04\x82\x01",              # length bytes cut
    b"\x04\x03ab",                # content cut
])
def test_item_refuses_malformed(data: bytes) -> None:
    with pytest.raises(DerError):
        der_item(data, 0, len(data))


def test_children_are_bounded() -> None:
    content = b"\x05\x00" * 64
    assert len(der_children(content, 0, len(content))) == 64
    content += b"\x05\x00"
    with pytest.raises(DerError, match="too many"):
        der_children(content, 0, len(content))


@pytest.mark.parametrize("dotted", ["1.2.840.113549.1.1.10", "2.16.840.1.101.3.4.2.1",
                                    "1.3.14.3.2.26"])
def test_oid_round_trip(dotted: str) -> None:
    encoded = _oid(dotted)
    assert der_oid(encoded[2:]) == dotted


def test_oid_with_a_large_first_arc() -> None:
    assert der_oid(b"\x88\x37\x03") == "2.999.3"  # 40 * 2 + 999 = 1079 in base 128


def test_oid_refuses_empty_and_truncated() -> None:
    for content in (b"", b"\x2a\x86"):
        with pytest.raises(DerError):
            der_oid(content)


def test_hash_from_algorithm_identifier() -> None:
    assert isinstance(hash_from_algid(SHA256_ALGID, 2, len(SHA256_ALGID)), hashes.SHA256)
    md5 = _tlv(0x30, _oid("1.2.840.113549.2.5"))
    with pytest.raises(DerError, match="unknown hash"):
        hash_from_algid(md5, 2, len(md5))


@pytest.mark.parametrize("key", [
    ec.generate_private_key(ec.SECP256R1()).public_key(),
    ed25519.Ed25519PrivateKey.generate().public_key(),
    rsa.generate_private_key(65537, 1024).public_key(),
])
def test_public_key_bits_are_what_certid_hashes(key) -> None:
    from cryptography.hazmat.primitives import serialization

    bits = public_key_bits(key)
    if isinstance(key, ec.EllipticCurvePublicKey):
        point = key.public_bytes(serialization.Encoding.X962,
                                 serialization.PublicFormat.UncompressedPoint)
        assert bits == point
    elif isinstance(key, ed25519.Ed25519PublicKey):
        assert bits == key.public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    else:
        assert bits == key.public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.PKCS1)


def _pss_algid(salt: bytes | None, trailer: int | None = None) -> bytes:
    params = (_tlv(0xA0, SHA256_ALGID)
              + _tlv(0xA1, _tlv(0x30, _oid("1.2.840.113549.1.1.8") + SHA256_ALGID)))
    if salt is not None:
        params += _tlv(0xA2, _tlv(0x02, salt))
    if trailer is not None:
        params += _tlv(0xA3, _tlv(0x02, bytes([trailer])))
    return _tlv(0x30, _oid("1.2.840.113549.1.1.10") + _tlv(0x30, params))


def test_pss_parameters_are_read() -> None:
    der = wrap_basic(_tlv(0x30, b""), _pss_algid(bytes([48]), trailer=1), b"sig")
    hash_algorithm, pss = pss_parameters(der)
    assert isinstance(hash_algorithm, hashes.SHA256)
    assert isinstance(pss, padding.PSS)
    assert isinstance(pss.mgf._algorithm, hashes.SHA256)
    assert pss._salt_length == 48


def test_pss_defaults_without_parameters() -> None:
    algid = _tlv(0x30, _oid("1.2.840.113549.1.1.10"))
    hash_algorithm, pss = pss_parameters(wrap_basic(_tlv(0x30, b""), algid, b"sig"))
    assert isinstance(hash_algorithm, hashes.SHA1) and pss._salt_length == 20


@pytest.mark.parametrize("algid", [
    _pss_algid(b"\x04\x01"),          # salt length 1025
    _pss_algid(bytes([20]), trailer=2),
    _tlv(0x30, _oid("1.2.840.113549.1.1.10") + _tlv(0x30, _tlv(
        0xA1, _tlv(0x30, _oid("1.2.3.4") + SHA256_ALGID)))),   # not MGF1
])
def test_pss_parameters_refused(algid: bytes) -> None:
    with pytest.raises(DerError):
        pss_parameters(wrap_basic(_tlv(0x30, b""), algid, b"sig"))


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_der_or_index_errors(data: bytes) -> None:
    try:
        pss_parameters(data)
    except (DerError, IndexError):
        pass
