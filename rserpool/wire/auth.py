"""The ASAP authentication extension messages (rserpool), PPID 11.

SRP-6a and CHAP exchanges (``rserpool.security.exchange``) carried inside a
server-authenticated TLS channel; docs/asap-auth-extension.md is the
specification.  Importing this module registers the nine message classes
with the codec exactly like ``asap.py`` does.

Codes (``rserpool.wire.codes``): message types 0x70-0x78 have the upper two
bits ``01``, so a peer that knows only the RFCs discards them and answers
ASAP_ERROR with cause 0x2 Unrecognized Message (RFC 5354 section 4).  The
parameter types 0x7F01-0x7F08 have the upper bits ``01`` too (stop, discard,
report Unrecognized Parameter).  Their values are decoded by a private
walker so the codec's global parameter table stays as the RFCs define it;
unknown parameters follow the RFC 5354 section 3 rules.

Every size is checked on decoding and on construction: identities 1-255
bytes of UTF-8, mechanism names 1-32 ASCII bytes, at most 8 mechanisms,
salts 8-64 bytes, SRP public values exactly 256 bytes, SRP proofs exactly 32
bytes, CHAP nonces 32 and responses 16 bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import rserpool.wire.codes as codes
from rserpool.wire.messages import Message, expect, register
from rserpool.wire.errors import ErrorCause, WireError
from rserpool.wire.params import OperationError
from rserpool.wire.tlv import (
    DECODERS, HDR, Ctx, LACK_OF_RESOURCES, frame, invalid, malformed, tlv_bytes, unknown_parameter,
)


__all__ = [
    "AUTH_MESSAGE_TYPES",
    "AsapAuthChapChallenge",
    "AsapAuthChapResponse",
    "AsapAuthFailure",
    "AsapAuthHello",
    "AsapAuthOffer",
    "AsapAuthRequest",
    "AsapAuthSrpChallenge",
    "AsapAuthSrpProof",
    "AsapAuthSuccess",
    "MAX_IDENTITY_LEN",
    "MAX_MECHANISMS",
    "MAX_MECHANISM_LEN",
    "SRP_PROOF_LEN",
    "SRP_PUBLIC_LEN",
]

MAX_MECHANISMS = 8
MAX_MECHANISM_LEN = 32
MAX_IDENTITY_LEN = 255
MIN_SALT_LEN = 8
MAX_SALT_LEN = 64
SRP_PUBLIC_LEN = 256  # PAD(A) / PAD(B) in the 2048-bit group
SRP_PROOF_LEN = 32  # SHA-256
CHAP_NONCE_LEN = 32
CHAP_RESPONSE_LEN = 16

MECH = codes.PARAM_AUTH_MECHANISM
IDENT = codes.PARAM_AUTH_IDENTITY
SALT = codes.PARAM_SRP_SALT
PUBLIC = codes.PARAM_SRP_PUBLIC
PROOF = codes.PARAM_SRP_PROOF
CHAP_CH = codes.PARAM_CHAP_CHALLENGE
CHAP_RESP = codes.PARAM_CHAP_RESPONSE
FCODE = codes.PARAM_AUTH_FAILURE_CODE
OPERR = codes.PARAM_OPERATION_ERROR

_ID_HEAD = struct.Struct("!B3x")  # CHAP identifier, 3 reserved bytes
_CODE = struct.Struct("!B3x")  # failure code, 3 reserved bytes


# -- value checks (construction) ------------------------------------------------


def _check_bytes(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, bytes):
        raise ValueError(f"{name} must be bytes")
    if not low <= len(value) <= high:
        size = str(low) if low == high else f"{low}-{high}"
        raise ValueError(f"{name} must be {size} bytes, not {len(value)}")


#: Mechanism names already found well-formed (a handful in practice; bounded).
_GOOD_MECHANISMS: set[str] = set()
_GOOD_MECHANISM_BYTES: dict[bytes, str] = {}
_MAX_REMEMBERED = 64


def _check_mechanism(value: object) -> None:
    if type(value) is str and value in _GOOD_MECHANISMS:
        return
    if not isinstance(value, str):
        raise ValueError("a mechanism name must be str")
    raw = value.encode("ascii", "replace")
    if not 1 <= len(raw) <= MAX_MECHANISM_LEN or not all(0x21 <= b < 0x7F for b in raw):
        raise ValueError(f"bad mechanism name {value!r}")
    if type(value) is str and len(_GOOD_MECHANISMS) < _MAX_REMEMBERED:
        _GOOD_MECHANISMS.add(value)


def _check_identity(value: object) -> None:
    if not isinstance(value, str):
        raise ValueError("identity must be str")
    try:
        raw = value.encode("utf-8")
    except UnicodeError:
        raise ValueError("identity is not valid UTF-8") from None
    if not 1 <= len(raw) <= MAX_IDENTITY_LEN:
        raise ValueError(f"identity must be 1-{MAX_IDENTITY_LEN} bytes of UTF-8")


def _check_byte(name: str, value: object) -> None:
    if type(value) is not int or not 0 <= value <= 255:
        raise ValueError(f"{name} must be 0-255")


# -- parameter decoders (private table) --------------------------------------------


def _dec_raw(data: bytes, start: int, end: int, depth: int, ctx: Ctx) -> bytes:
    return bytes(data[start:end])


def _dec_mechanism(data: bytes, start: int, end: int, depth: int, ctx: Ctx) -> str:
    raw = bytes(data[start:end])
    known = _GOOD_MECHANISM_BYTES.get(raw)
    if known is not None:
        return known
    if not 1 <= len(raw) <= MAX_MECHANISM_LEN or not all(0x21 <= b < 0x7F for b in raw):
        raise invalid("Auth Mechanism: 1-32 printable ASCII bytes expected", data[start - 4:end])
    name = raw.decode("ascii")
    if len(_GOOD_MECHANISM_BYTES) < _MAX_REMEMBERED:
        _GOOD_MECHANISM_BYTES[raw] = name
    return name


def _dec_identity(data: bytes, start: int, end: int, depth: int, ctx: Ctx) -> str:
    raw = bytes(data[start:end])
    if not 1 <= len(raw) <= MAX_IDENTITY_LEN:
        raise invalid(f"Auth Identity: 1-{MAX_IDENTITY_LEN} bytes expected", data[start - 4:end])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid("Auth Identity: not UTF-8", data[start - 4:end]) from None


def _dec_id_and(size: int, what: str) -> Callable[[bytes, int, int, int, Ctx], tuple[int, bytes]]:
    def decode(data: bytes, start: int, end: int, depth: int, ctx: Ctx) -> tuple[int, bytes]:
        if end - start < 4:
            raise malformed(f"{what}: {end - start} bytes, {4 + size} expected")
        if end - start != 4 + size:
            raise invalid(f"{what}: {4 + size} bytes expected", data[start - 4:end])
        (identifier,) = _ID_HEAD.unpack_from(data, start)
        return identifier, bytes(data[start + 4:end])

    return decode


def _dec_code(data: bytes, start: int, end: int, depth: int, ctx: Ctx) -> int:
    if end - start != 4:
        raise malformed("Auth Failure Code: 4 bytes expected")
    return _CODE.unpack_from(data, start)[0]


_DECODERS: dict[int, Callable[[bytes, int, int, int, Ctx], Any]] = {
    MECH: _dec_mechanism,
    IDENT: _dec_identity,
    SALT: _dec_raw,
    PUBLIC: _dec_raw,
    PROOF: _dec_raw,
    CHAP_CH: _dec_id_and(CHAP_NONCE_LEN, "CHAP Challenge"),
    CHAP_RESP: _dec_id_and(CHAP_RESPONSE_LEN, "CHAP Response"),
    FCODE: _dec_code,
    OPERR: DECODERS[OPERR],
}


def _walk(data: bytes, length: int, ctx: Ctx) -> list[tuple[int, Any, int]]:
    """The message's parameters, decoded with the extension's own table."""
    limits = ctx.limits
    out: list[tuple[int, Any, int]] = []
    pos = 4
    while pos < length:
        if pos + 4 > length:
            raise malformed("truncated parameter header")
        ptype, plen = HDR.unpack_from(data, pos)
        tend = pos + plen
        if plen < 4 or tend > length:
            raise malformed(f"parameter 0x{ptype:04x} length {plen} exceeds its container")
        ctx.count += 1
        if ctx.count > limits.max_parameters:
            raise WireError(LACK_OF_RESOURCES, f"more than {limits.max_parameters} parameters")
        dec = _DECODERS.get(ptype)
        if dec is not None:
            out.append((ptype, dec(data, pos + 4, tend, 1, ctx), pos))
        else:
            unknown_parameter(data, pos, tend, ptype, ctx)
        pos = (tend + 3) & ~3
    return out


def _sized(subs: list, index: int, what: str, low: int, high: int, data: bytes) -> bytes:
    """The value of ``subs[index]``, whose size must be within low..high
    (else Invalid Values quoting that parameter)."""
    value = subs[index][1]
    if not low <= len(value) <= high:
        size = str(low) if low == high else f"{low}-{high}"
        raise invalid(f"{what}: {size} bytes expected, got {len(value)}", tlv_bytes(data, subs[index][2]))
    return value


# -- messages --------------------------------------------------------------------------


class _Auth:
    __slots__ = ()
    PPID: ClassVar[int] = codes.PPID_ASAP


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapAuthRequest(_Auth, Message):
    """PE -> registrar: "authenticate me" (no parameters).  An RFC-only
    registrar reports it as an Unrecognized Message."""

    TYPE: ClassVar[int] = codes.ASAP_AUTH_REQUEST
    name: ClassVar[str] = "ASAP_AUTH_REQUEST"

    def _body(self):
        return b"", []

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        expect(_walk(data, length, ctx), (), data, length, cls.name)
        return cls._make()


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapAuthOffer(_Auth, Message):
    """Registrar -> PE: the mechanisms it accepts, best first."""

    mechanisms: tuple[str, ...]
    TYPE: ClassVar[int] = codes.ASAP_AUTH_OFFER
    name: ClassVar[str] = "ASAP_AUTH_OFFER"

    def __post_init__(self) -> None:
        if not isinstance(self.mechanisms, tuple):
            object.__setattr__(self, "mechanisms", tuple(self.mechanisms))
        if not 1 <= len(self.mechanisms) <= MAX_MECHANISMS:
            raise ValueError(f"1-{MAX_MECHANISMS} mechanisms expected")
        for mechanism in self.mechanisms:
            _check_mechanism(mechanism)

    def _body(self):
        return b"", [frame(MECH, m.encode("ascii")) for m in self.mechanisms]

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        subs = _walk(data, length, ctx)
        (mechanisms,) = expect(subs, ((MECH, "+"),), data, length, cls.name)
        if len(mechanisms) > MAX_MECHANISMS:
            raise invalid(f"{cls.name}: more than {MAX_MECHANISMS} mechanisms",
                          tlv_bytes(data, subs[MAX_MECHANISMS][2]))
        return cls._make(mechanisms)


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapAuthHello(_Auth, Message):
    """PE -> registrar: the chosen mechanism and the identity (UTF-8)."""

    mechanism: str
    identity: str
    TYPE: ClassVar[int] = codes.ASAP_AUTH_HELLO
    name: ClassVar[str] = "ASAP_AUTH_HELLO"

    def __post_init__(self) -> None:
        _check_mechanism(self.mechanism)
        _check_identity(self.identity)

    def _body(self):
        return b"", [frame(MECH, self.mechanism.encode("ascii")),
                     frame(IDENT, self.identity.encode("utf-8"))]

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        mechanism, identity = expect(_walk(data, length, ctx), ((MECH, "1"), (IDENT, "1")),
                                     data, length, cls.name)
        return cls._make(mechanism, identity)


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapAuthSrpChallenge(_Auth, Message):
    """Registrar -> PE: salt s and PAD(B)."""

    salt: bytes
    server_public: bytes
    TYPE: ClassVar[int] = codes.ASAP_AUTH_SRP_CHALLENGE
    name: ClassVar[str] = "ASAP_AUTH_SRP_CHALLENGE"

    def __post_init__(self) -> None:
        _check_bytes("salt", self.salt, MIN_SALT_LEN, MAX_SALT_LEN)
        _check_bytes("server_public", self.server_public, SRP_PUBLIC_LEN, SRP_PUBLIC_LEN)

    def _body(self):
        return b"", [frame(SALT, self.salt), frame(PUBLIC, self.server_public)]

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        subs = _walk(data, length, ctx)
        expect(subs, ((SALT, "1"), (PUBLIC, "1")), data, length, cls.name)
        return cls._make(_sized(subs, 0, "SRP Salt", MIN_SALT_LEN, MAX_SALT_LEN, data),
                         _sized(subs, 1, "SRP Public Value", SRP_PUBLIC_LEN, SRP_PUBLIC_LEN,
                                data))


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapAuthSrpProof(_Auth, Message):
    """PE -> registrar: PAD(A) and M1."""

    client_public: bytes
    client_proof: bytes
    TYPE: ClassVar[int] = codes.ASAP_AUTH_SRP_PROOF
    name: ClassVar[str] = "ASAP_AUTH_SRP_PROOF"

    def __post_init__(self) -> None:
        _check_bytes("client_public", self.client_public, SRP_PUBLIC_LEN, SRP_PUBLIC_LEN)
        _check_bytes("client_proof", self.client_proof, SRP_PROOF_LEN, SRP_PROOF_LEN)

    def _body(self):
        return b"", [frame(PUBLIC, self.client_public), frame(PROOF, self.client_proof)]

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        subs = _walk(data, length, ctx)
        expect(subs, ((PUBLIC, "1"), (PROOF, "1")), data, length, cls.name)
        return cls._make(
            _sized(subs, 0, "SRP Public Value", SRP_PUBLIC_LEN, SRP_PUBLIC_LEN, data),
            _sized(subs, 1, "SRP Proof", SRP_PROOF_LEN, SRP_PROOF_LEN, data))


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapAuthChapChallenge(_Auth, Message):
    """Registrar -> PE: CHAP identifier and a 32-byte nonce."""

    identifier: int
    nonce: bytes
    TYPE: ClassVar[int] = codes.ASAP_AUTH_CHAP_CHALLENGE
    name: ClassVar[str] = "ASAP_AUTH_CHAP_CHALLENGE"

    def __post_init__(self) -> None:
        _check_byte("identifier", self.identifier)
        _check_bytes("nonce", self.nonce, CHAP_NONCE_LEN, CHAP_NONCE_LEN)

    def _body(self):
        return b"", [frame(CHAP_CH, _ID_HEAD.pack(self.identifier) + self.nonce)]

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        ((identifier, nonce),) = expect(_walk(data, length, ctx), ((CHAP_CH, "1"),),
                                        data, length, cls.name)
        return cls._make(identifier, nonce)


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapAuthChapResponse(_Auth, Message):
    """PE -> registrar: the identifier echoed and the 16-byte MD5 response."""

    identifier: int
    response: bytes
    TYPE: ClassVar[int] = codes.ASAP_AUTH_CHAP_RESPONSE
    name: ClassVar[str] = "ASAP_AUTH_CHAP_RESPONSE"

    def __post_init__(self) -> None:
        _check_byte("identifier", self.identifier)
        _check_bytes("response", self.response, CHAP_RESPONSE_LEN, CHAP_RESPONSE_LEN)

    def _body(self):
        return b"", [frame(CHAP_RESP, _ID_HEAD.pack(self.identifier) + self.response)]

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        ((identifier, response),) = expect(_walk(data, length, ctx), ((CHAP_RESP, "1"),),
                                           data, length, cls.name)
        return cls._make(identifier, response)


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapAuthSuccess(_Auth, Message):
    """Registrar -> PE: authenticated; ``server_proof`` is M2 for SRP and
    empty (parameter absent) for CHAP."""

    mechanism: str
    server_proof: bytes = b""
    TYPE: ClassVar[int] = codes.ASAP_AUTH_SUCCESS
    name: ClassVar[str] = "ASAP_AUTH_SUCCESS"

    def __post_init__(self) -> None:
        _check_mechanism(self.mechanism)
        if self.server_proof != b"":
            _check_bytes("server_proof", self.server_proof, SRP_PROOF_LEN, SRP_PROOF_LEN)

    def _body(self):
        parts = [frame(MECH, self.mechanism.encode("ascii"))]
        if self.server_proof:
            parts.append(frame(PROOF, self.server_proof))
        return b"", parts

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        subs = _walk(data, length, ctx)
        mechanism, proof = expect(subs, ((MECH, "1"), (PROOF, "?")), data, length, cls.name)
        if proof is not None:
            _sized(subs, 1, "SRP Proof", SRP_PROOF_LEN, SRP_PROOF_LEN, data)
        return cls._make(mechanism, proof or b"")


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapAuthFailure(_Auth, Message):
    """Registrar -> PE: failure ``code`` (``FAIL_*`` of the exchange), the R
    flag (``may_retry``) and an Operation Error, cause 0xa by default."""

    code: int
    may_retry: bool = False
    error: OperationError = OperationError((ErrorCause(codes.CAUSE_SECURITY),))
    TYPE: ClassVar[int] = codes.ASAP_AUTH_FAILURE
    name: ClassVar[str] = "ASAP_AUTH_FAILURE"
    FLAGS: ClassVar[tuple[tuple[str, int], ...]] = (("may_retry", codes.FLAG_AUTH_MAY_RETRY),)

    def __post_init__(self) -> None:
        _check_byte("code", self.code)
        if type(self.may_retry) is not bool:
            raise ValueError("may_retry must be a bool")
        if type(self.error) is not OperationError:
            raise ValueError(f"not an OperationError: {self.error!r}")

    def _body(self):
        return b"", [frame(FCODE, _CODE.pack(self.code)), self.error.encode()]

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        code, error = expect(_walk(data, length, ctx), ((FCODE, "1"), (OPERR, "1")),
                             data, length, cls.name)
        return cls._make(code, bool(flags & codes.FLAG_AUTH_MAY_RETRY), error)


#: Every extension message type (the registrar answers them only when the
#: extension is enabled; otherwise as RFC 5354 says for unknown types).
AUTH_MESSAGE_TYPES: frozenset[int] = frozenset(range(codes.ASAP_AUTH_REQUEST,
                                                     codes.ASAP_AUTH_FAILURE + 1))
AUTH_MESSAGE_CLASSES: tuple[type, ...] = (
    AsapAuthRequest, AsapAuthOffer, AsapAuthHello, AsapAuthSrpChallenge, AsapAuthSrpProof,
    AsapAuthChapChallenge, AsapAuthChapResponse, AsapAuthSuccess, AsapAuthFailure,
)
