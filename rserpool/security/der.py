"""A minimal DER reader: what OCSP verification needs and cryptography
does not expose for OCSP responses (the SPKI key bits that CertID and
KeyHash hash, and the RSASSA-PSS parameters of a signature).

Bounded: at most 4 length bytes, 64 items per constructed value; any
malformed input raises :class:`DerError` (a ``ValueError``).  No Twisted,
no clock.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

__all__ = [
    "DerError",
    "der_children",
    "der_item",
    "der_oid",
    "hash_from_algid",
    "pss_parameters",
    "public_key_bits",
]


class DerError(ValueError):
    pass


def der_item(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """Return (tag, content start, content end) of the item at ``pos``."""
    if pos + 2 > end:
        raise DerError("truncated")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DerError("multi-byte tag")
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            raise DerError("bad length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        raise DerError("truncated content")
    return tag, pos, pos + length


def der_children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    items = []
    pos = start
    while pos < end:
        item = der_item(data, pos, end)
        items.append(item)
        pos = item[2]
        if len(items) > 64:
            raise DerError("too many items")
    return items


def der_oid(content: bytes) -> str:
    if not content:
        raise DerError("empty OID")
    parts: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    if content[-1] & 0x80:
        raise DerError("truncated OID")
    first = parts[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(p) for p in head + parts[1:])


TAG_SEQUENCE = 0x30
TAG_OID = 0x06
TAG_INTEGER = 0x02
TAG_BIT_STRING = 0x03
TAG_OCTET_STRING = 0x04

HASHES_BY_OID: dict[str, type[hashes.HashAlgorithm]] = {
    "1.3.14.3.2.26": hashes.SHA1,
    "2.16.840.1.101.3.4.2.4": hashes.SHA224,
    "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
}
MGF1_OID = "1.2.840.113549.1.1.8"


def public_key_bits(public_key: object) -> bytes:
    """The subjectPublicKey BIT STRING value (what CertID and KeyHash hash)."""
    spki = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _, start, end = der_item(spki, 0, len(spki))
    children = der_children(spki, start, end)
    tag, bits_start, bits_end = children[1]
    if tag != TAG_BIT_STRING or bits_end <= bits_start:
        raise DerError("no key bit string")
    return spki[bits_start + 1 : bits_end]


def algorithm_identifier(data: bytes, start: int, end: int) -> tuple[str, tuple[int, int, int] | None]:
    children = der_children(data, start, end)
    if not children or children[0][0] != TAG_OID:
        raise DerError("bad AlgorithmIdentifier")
    oid = der_oid(data[children[0][1] : children[0][2]])
    return oid, (children[1] if len(children) > 1 else None)


def hash_from_algid(data: bytes, start: int, end: int) -> hashes.HashAlgorithm:
    oid, _ = algorithm_identifier(data, start, end)
    try:
        return HASHES_BY_OID[oid]()
    except KeyError:
        raise DerError(f"unknown hash {oid}") from None


def pss_parameters(response_der: bytes) -> tuple[hashes.HashAlgorithm, padding.PSS]:
    """Hash and padding of an RSASSA-PSS-signed basic OCSP response."""
    # OCSPResponse ::= SEQUENCE { responseStatus, responseBytes [0] EXPLICIT
    #   SEQUENCE { responseType OID, response OCTET STRING } }
    _, start, end = der_item(response_der, 0, len(response_der))
    outer = der_children(response_der, start, end)
    _, start, end = der_item(response_der, outer[1][1], outer[1][2])
    response_bytes = der_children(response_der, start, end)
    tag, start, end = response_bytes[1]
    if tag != TAG_OCTET_STRING:
        raise DerError("no response octet string")
    basic = response_der[start:end]
    # BasicOCSPResponse ::= SEQUENCE { tbsResponseData, signatureAlgorithm, ... }
    _, start, end = der_item(basic, 0, len(basic))
    fields = der_children(basic, start, end)
    _, start, end = fields[1]
    _, params = algorithm_identifier(basic, start, end)
    hash_algorithm: hashes.HashAlgorithm = hashes.SHA1()
    mgf_hash: hashes.HashAlgorithm = hashes.SHA1()
    salt_length = 20
    if params is not None:
        for tag, c_start, c_end in der_children(basic, params[1], params[2]):
            inner_tag, i_start, i_end = der_item(basic, c_start, c_end)
            if tag == 0xA0:
                hash_algorithm = hash_from_algid(basic, i_start, i_end)
            elif tag == 0xA1:
                mgf_oid, mgf_params = algorithm_identifier(basic, i_start, i_end)
                if mgf_oid != MGF1_OID or mgf_params is None:
                    raise DerError("unsupported mask generation function")
                mgf_hash = hash_from_algid(basic, mgf_params[1], mgf_params[2])
            elif tag == 0xA2:
                if inner_tag != TAG_INTEGER:
                    raise DerError("bad salt length")
                salt_length = int.from_bytes(basic[i_start:i_end], "big")
            elif tag == 0xA3:
                if int.from_bytes(basic[i_start:i_end], "big") != 1:
                    raise DerError("unsupported trailer field")
    if salt_length > 1024:
        raise DerError("absurd salt length")
    return hash_algorithm, padding.PSS(mgf=padding.MGF1(mgf_hash), salt_length=salt_length)
