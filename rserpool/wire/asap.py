"""ASAP messages (RFC 5352 section 2.2), PPID 11."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

import rserpool.wire.codes as codes
from rserpool.wire.params import (
    Cookie, OperationError, PoolElement, check32, check_tuple, encode_pe_id, encode_pool_handle,
)
from rserpool.wire.params import _MK_PE, _POLICY_CLASSES
from rserpool.wire.policy import _MK_LU
from rserpool.wire.tlv import DECODERS, HDR as _HDR, PADDING, U32, Ctx, invalid, malformed, tlv_bytes, walk
from rserpool.wire.transports import _MK_TCP, SctpTransport, TcpTransport, _address
from rserpool.wire.messages import Message, expect, frame_message, register

__all__ = [
    "AsapRegistration", "AsapDeregistration", "AsapRegistrationResponse",
    "AsapDeregistrationResponse", "AsapHandleResolution", "AsapHandleResolutionResponse",
    "AsapEndpointKeepAlive", "AsapEndpointKeepAliveAck", "AsapEndpointUnreachable",
    "AsapServerAnnounce", "AsapCookie", "AsapCookieEcho", "AsapBusinessCard", "AsapError",
    "encode_registration_response", "encode_resolution_response",
]

H = codes.PARAM_POOL_HANDLE
PE = codes.PARAM_POOL_ELEMENT
PEID = codes.PARAM_PE_IDENTIFIER
OPERR = codes.PARAM_OPERATION_ERROR
POLICY = codes.PARAM_POLICY
COOKIE = codes.PARAM_COOKIE


def _check_handle(handle: object) -> None:
    if not isinstance(handle, bytes) or not handle:
        raise ValueError(f"pool_handle must be non-empty bytes: {handle!r}")


def _check_error(error: object, optional: bool = True) -> None:
    if error is None and optional:
        return
    if type(error) is not OperationError:
        raise ValueError(f"not an OperationError: {error!r}")


class _Asap:
    __slots__ = ()
    PPID: ClassVar[int] = codes.PPID_ASAP


_HANDLE_HEAD = struct.Struct("!BBHHH")  # message header, pool handle TLV header
# Pool Element (header, id, home, life), TCP transport (header, port, use),
# IPv4 address (header, address), LU policy (header, type, load).
_TCP_LU_PE = struct.Struct("!HHIIiHHHHHH4sHHII")
_DEC_HANDLE = DECODERS[H]
_DEC_PE = DECODERS[PE]


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapRegistration(_Asap, Message):
    pool_handle: bytes
    pool_element: PoolElement
    TYPE: ClassVar[int] = codes.ASAP_REGISTRATION
    name: ClassVar[str] = "ASAP_REGISTRATION"

    def __post_init__(self) -> None:
        _check_handle(self.pool_handle)
        if type(self.pool_element) is not PoolElement:
            raise ValueError(f"not a PoolElement: {self.pool_element!r}")

    def encode(self) -> bytes:
        handle = self.pool_handle
        hlen = 4 + len(handle)
        pe = self.pool_element.encode()
        pelen = (pe[2] << 8) | pe[3]
        n = 4 + ((hlen + 3) & ~3) + pelen
        if n > 0xFFFF:
            raise ValueError("message too long")
        return (_HANDLE_HEAD.pack(1, 0, n, 9, hlen) + handle + PADDING[hlen & 3] + pe)

    def _body(self):
        return b"", [encode_pool_handle(self.pool_handle), self.pool_element.encode()]

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        # Fastest path: a handle and a PE with a TCP transport on one IPv4
        # address and a Least-Used policy, nothing else (5 parameters, 3 deep).
        if length >= 52:
            t1, l1 = _HDR.unpack_from(data, 4)
            p2 = 4 + ((l1 + 3) & ~3)
            limits = ctx.limits
            if (t1 == H and 4 < l1 <= limits.max_pool_handle + 4 and length == p2 + 44
                    and ctx.count + 5 <= limits.max_parameters and limits.max_depth >= 3):
                (t2, l2, pe_id, home, life, t3, l3, port, use, t4, l4, packed, t5, l5, ptype,
                 load) = _TCP_LU_PE.unpack_from(data, p2)
                if (t2 == PE and l2 == 44 and t3 == 5 and l3 == 16 and t4 == 1 and l4 == 8 and t5 == 8
                        and l5 == 12 and ptype == 0x40000001):
                    ctx.count += 5
                    return cls._make(data[8:4 + l1], _MK_PE(pe_id, home, life, _MK_TCP(port, _address(packed), use),
                                                            _MK_LU(load), None))
        # Fast path: exactly a pool handle then a pool element.
        if length >= 16:
            t1, l1 = _HDR.unpack_from(data, 4)
            p2 = 4 + ((l1 + 3) & ~3)
            if t1 == H and l1 >= 4 and p2 + 4 <= length:
                t2, l2 = _HDR.unpack_from(data, p2)
                if t2 == PE and p2 + l2 <= length <= p2 + ((l2 + 3) & ~3) and l2 >= 4:
                    limits = ctx.limits
                    ctx.count += 2
                    if 4 < l1 <= limits.max_pool_handle + 4 and ctx.count <= limits.max_parameters:
                        return cls._make(data[8:4 + l1], _DEC_PE(data, p2 + 4, p2 + l2, 1, ctx))
                    ctx.count -= 2
        subs = walk(data, 4, length, 1, ctx)
        if len(subs) != 2 or subs[0][0] != H or subs[1][0] != PE:
            expect(subs, ((H, "1"), (PE, "1")), data, length, cls.name)
        return cls._make(subs[0][1], subs[1][1])


class _HandlePeId(_Asap):
    __slots__ = ()

    def __post_init__(self) -> None:
        _check_handle(self.pool_handle)
        check32("pe_id", self.pe_id)

    def _body(self):
        return b"", [encode_pool_handle(self.pool_handle), encode_pe_id(self.pe_id)]

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        subs = walk(data, 4, length, 1, ctx)
        handle, pe_id = expect(subs, ((H, "1"), (PEID, "1")), data, length, cls.name)
        return cls._make(handle, pe_id)


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapDeregistration(_HandlePeId, Message):
    pool_handle: bytes
    pe_id: int
    TYPE: ClassVar[int] = codes.ASAP_DEREGISTRATION
    name: ClassVar[str] = "ASAP_DEREGISTRATION"


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapEndpointKeepAliveAck(_HandlePeId, Message):
    pool_handle: bytes
    pe_id: int
    TYPE: ClassVar[int] = codes.ASAP_ENDPOINT_KEEP_ALIVE_ACK
    name: ClassVar[str] = "ASAP_ENDPOINT_KEEP_ALIVE_ACK"


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapEndpointUnreachable(_HandlePeId, Message):
    pool_handle: bytes
    pe_id: int
    TYPE: ClassVar[int] = codes.ASAP_ENDPOINT_UNREACHABLE
    name: ClassVar[str] = "ASAP_ENDPOINT_UNREACHABLE"


class _HandlePeIdError(_Asap):
    """A pool handle, a PE identifier and an optional Operation Error; a
    class with a flag has its field between ``pe_id`` and ``error``."""

    __slots__ = ()

    def __post_init__(self) -> None:
        _check_handle(self.pool_handle)
        check32("pe_id", self.pe_id)
        _check_error(self.error)

    def _body(self):
        parts = [encode_pool_handle(self.pool_handle), encode_pe_id(self.pe_id)]
        if self.error is not None:
            parts.append(self.error.encode())
        return b"", parts

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        subs = walk(data, 4, length, 1, ctx)
        handle, pe_id, error = expect(subs, ((H, "1"), (PEID, "1"), (OPERR, "?")),
                                      data, length, cls.name)
        if cls.FLAGS:
            return cls._make(handle, pe_id, bool(flags & cls.FLAGS[0][1]), error)
        return cls._make(handle, pe_id, error)


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapRegistrationResponse(_HandlePeIdError, Message):
    """R flag set (``reject``): the registration was rejected."""

    pool_handle: bytes
    pe_id: int
    reject: bool = False
    error: OperationError | None = None
    TYPE: ClassVar[int] = codes.ASAP_REGISTRATION_RESPONSE
    name: ClassVar[str] = "ASAP_REGISTRATION_RESPONSE"
    FLAGS: ClassVar[tuple[tuple[str, int], ...]] = (("reject", codes.FLAG_REGISTRATION_REJECT),)


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapDeregistrationResponse(_HandlePeIdError, Message):
    pool_handle: bytes
    pe_id: int
    error: OperationError | None = None
    TYPE: ClassVar[int] = codes.ASAP_DEREGISTRATION_RESPONSE
    name: ClassVar[str] = "ASAP_DEREGISTRATION_RESPONSE"


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapHandleResolution(_Asap, Message):
    """S flag (``subscribe``): ask for automatic updates."""

    pool_handle: bytes
    subscribe: bool = False
    TYPE: ClassVar[int] = codes.ASAP_HANDLE_RESOLUTION
    name: ClassVar[str] = "ASAP_HANDLE_RESOLUTION"
    FLAGS: ClassVar[tuple[tuple[str, int], ...]] = (("subscribe", codes.FLAG_SUBSCRIBE),)

    def __post_init__(self) -> None:
        _check_handle(self.pool_handle)

    def _body(self):
        return b"", [encode_pool_handle(self.pool_handle)]

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        # Fast path: exactly one pool handle (what _decode_walk accepts then).
        if length >= 9:
            t1, l1 = _HDR.unpack_from(data, 4)
            if t1 == H and 4 + l1 <= length <= 4 + ((l1 + 3) & ~3):
                limits = ctx.limits
                if 4 < l1 <= limits.max_pool_handle + 4 and ctx.count < limits.max_parameters \
                        and limits.max_depth >= 1:
                    ctx.count += 1
                    return cls._make(data[8:4 + l1], bool(flags & codes.FLAG_SUBSCRIBE))
        return cls._decode_walk(data, flags, length, ctx)

    @classmethod
    def _decode_walk(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        subs = walk(data, 4, length, 1, ctx)
        (handle,) = expect(subs, ((H, "1"),), data, length, cls.name)
        return cls._make(handle, bool(flags & codes.FLAG_SUBSCRIBE))


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapHandleResolutionResponse(_Asap, Message):
    """A flag (``accept``); positive with PEs, negative with ``error``."""

    pool_handle: bytes
    pool_elements: tuple[PoolElement, ...] = ()
    policy: object | None = None
    error: OperationError | None = None
    accept: bool = False
    TYPE: ClassVar[int] = codes.ASAP_HANDLE_RESOLUTION_RESPONSE
    name: ClassVar[str] = "ASAP_HANDLE_RESOLUTION_RESPONSE"
    FLAGS: ClassVar[tuple[tuple[str, int], ...]] = (("accept", codes.FLAG_ACCEPT),)

    def __post_init__(self) -> None:
        _check_handle(self.pool_handle)
        check_tuple(self, "pool_elements", PoolElement)
        _check_policy(self.policy)
        _check_error(self.error)

    def _body(self):
        parts = [encode_pool_handle(self.pool_handle)]
        if self.policy is not None:
            parts.append(self.policy.encode())
        parts.extend(pe.encode() for pe in self.pool_elements)
        if self.error is not None:
            parts.append(self.error.encode())
        return b"", parts

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        subs = walk(data, 4, length, 1, ctx)
        handle, policy, pes, error = expect(
            subs, ((H, "1"), (POLICY, "?"), (PE, "*"), (OPERR, "?")), data, length, cls.name)
        return cls._make(handle, pes, policy, error, bool(flags & codes.FLAG_ACCEPT))


_PE_ID_TLV = struct.Struct("!HHI")


def encode_registration_response(pool_handle: bytes, pe_id: int) -> bytes:
    """The bytes of ``AsapRegistrationResponse(pool_handle, pe_id).encode()``
    (an acceptance) for a handle of 1..65523 bytes and a 32-bit PE id."""
    hlen = 4 + len(pool_handle)
    n = 4 + ((hlen + 3) & ~3) + 8
    return (_HANDLE_HEAD.pack(codes.ASAP_REGISTRATION_RESPONSE, 0, n, H, hlen) + pool_handle
            + PADDING[hlen & 3] + _PE_ID_TLV.pack(PEID, 8, pe_id))


def encode_resolution_response(pool_handle: bytes, policy: bytes | None, pool_elements: list[bytes]) -> bytes:
    """The bytes of a positive ``AsapHandleResolutionResponse(pool_handle,
    pes, policy).encode()`` (A flag clear) from the already encoded Policy
    and Pool Element parameters (``policy.encode()``, ``pe.encode()``), for
    a sender that keeps its PEs' encodings."""
    parts = [encode_pool_handle(pool_handle)]
    if policy is not None:
        parts.append(policy)
    parts += pool_elements
    return frame_message(codes.ASAP_HANDLE_RESOLUTION_RESPONSE, 0, b"", parts)


def _check_policy(policy: object) -> None:
    if policy is not None and not isinstance(policy, _POLICY_CLASSES):
        raise ValueError(f"not a policy: {policy!r}")


_SERVER_ID = struct.Struct("!I")


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapEndpointKeepAlive(_Asap, Message):
    """H flag (``home``): the sender wants to be the PE's home server.

    ``pe_id`` is rsplib's optional PE Identifier parameter (not in RFC
    5352); it is decoded when present and sent only when set.
    """

    server_id: int
    pool_handle: bytes
    home: bool = False
    pe_id: int | None = None
    TYPE: ClassVar[int] = codes.ASAP_ENDPOINT_KEEP_ALIVE
    name: ClassVar[str] = "ASAP_ENDPOINT_KEEP_ALIVE"
    FLAGS: ClassVar[tuple[tuple[str, int], ...]] = (("home", codes.FLAG_HOME),)

    def __post_init__(self) -> None:
        check32("server_id", self.server_id)
        _check_handle(self.pool_handle)
        if self.pe_id is not None:
            check32("pe_id", self.pe_id)

    def _body(self):
        parts = [encode_pool_handle(self.pool_handle)]
        if self.pe_id is not None:
            parts.append(encode_pe_id(self.pe_id))
        return _SERVER_ID.pack(self.server_id), parts

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        if length < 8:
            raise malformed(f"{cls.name} without a server identifier")
        subs = walk(data, 8, length, 1, ctx)
        handle, pe_id = expect(subs, ((H, "1"), (PEID, "?")), data, length, cls.name)
        return cls._make(U32.unpack_from(data, 4)[0], handle, bool(flags & codes.FLAG_HOME), pe_id)


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapServerAnnounce(_Asap, Message):
    """Server ID and optional SCTP/TCP transports of the server."""

    server_id: int
    transports: tuple[SctpTransport | TcpTransport, ...] = ()
    TYPE: ClassVar[int] = codes.ASAP_SERVER_ANNOUNCE
    name: ClassVar[str] = "ASAP_SERVER_ANNOUNCE"

    def __post_init__(self) -> None:
        check32("server_id", self.server_id)
        if not isinstance(self.transports, tuple):
            object.__setattr__(self, "transports", tuple(self.transports))
        for t in self.transports:
            if type(t) not in (SctpTransport, TcpTransport):
                raise ValueError(f"only SCTP and TCP transports may be announced: {t!r}")

    def _body(self):
        return _SERVER_ID.pack(self.server_id), [t.encode() for t in self.transports]

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        if length < 8:
            raise malformed(f"{cls.name} without a server identifier")
        subs = walk(data, 8, length, 1, ctx)
        for ptype, _, start in subs:
            if ptype not in (codes.PARAM_SCTP_TRANSPORT, codes.PARAM_TCP_TRANSPORT):
                raise invalid(f"{cls.name}: parameter 0x{ptype:04x} is not an SCTP or"
                              " TCP transport", tlv_bytes(data, start))
        return cls._make(U32.unpack_from(data, 4)[0], tuple(v for _, v, _ in subs))


class _CookieMessage(_Asap):
    __slots__ = ()

    def __post_init__(self) -> None:
        if not isinstance(self.cookie, bytes):
            raise ValueError("cookie must be bytes")
        Cookie(self.cookie)

    def _body(self):
        return b"", [Cookie(self.cookie).encode()]

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        subs = walk(data, 4, length, 1, ctx)
        (cookie,) = expect(subs, ((COOKIE, "1"),), data, length, cls.name)
        return cls._make(cookie.data)


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapCookie(_CookieMessage, Message):
    cookie: bytes
    TYPE: ClassVar[int] = codes.ASAP_COOKIE
    name: ClassVar[str] = "ASAP_COOKIE"


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapCookieEcho(_CookieMessage, Message):
    cookie: bytes
    TYPE: ClassVar[int] = codes.ASAP_COOKIE_ECHO
    name: ClassVar[str] = "ASAP_COOKIE_ECHO"


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapBusinessCard(_Asap, Message):
    """Pool handle and PEs in failover order.

    RFC 5352 2.2.13 carries no policy; rsplib inserts one after the handle.
    ``policy`` accepts it on receipt and is sent only when set.
    """

    pool_handle: bytes
    pool_elements: tuple[PoolElement, ...]
    policy: object | None = None
    TYPE: ClassVar[int] = codes.ASAP_BUSINESS_CARD
    name: ClassVar[str] = "ASAP_BUSINESS_CARD"

    def __post_init__(self) -> None:
        _check_handle(self.pool_handle)
        check_tuple(self, "pool_elements", PoolElement)
        if not self.pool_elements:
            raise ValueError("a business card needs at least one pool element")
        _check_policy(self.policy)

    def _body(self):
        parts = [encode_pool_handle(self.pool_handle)]
        if self.policy is not None:
            parts.append(self.policy.encode())
        parts.extend(pe.encode() for pe in self.pool_elements)
        return b"", parts

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        subs = walk(data, 4, length, 1, ctx)
        handle, policy, pes = expect(subs, ((H, "1"), (POLICY, "?"), (PE, "+")),
                                     data, length, cls.name)
        return cls._make(handle, pes, policy)


@register
@dataclass(frozen=True, slots=True, repr=False)
class AsapError(_Asap, Message):
    error: OperationError
    TYPE: ClassVar[int] = codes.ASAP_ERROR
    name: ClassVar[str] = "ASAP_ERROR"

    def __post_init__(self) -> None:
        _check_error(self.error, optional=False)

    def _body(self):
        return b"", [self.error.encode()]

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        subs = walk(data, 4, length, 1, ctx)
        (error,) = expect(subs, ((OPERR, "1"),), data, length, cls.name)
        return cls._make(error)
