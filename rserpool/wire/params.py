"""The other RFC 5354 parameters: Pool Element, Server Information,
Operation Error (its causes are :class:`rserpool.wire.errors.ErrorCause`),
Cookie, PE Checksum; plus the decoders of Pool Handle (a ``bytes`` value)
and PE Identifier (an ``int`` value).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from rserpool.fastinit import fast_constructor
import rserpool.wire.codes as codes
from rserpool.wire.errors import ErrorCause, WireError
from rserpool.wire.policy import _MK_LU, OpaquePolicy, POLICY_CLASSES, Policy, decode_policy
from rserpool.wire.tlv import (
    DECODERS, HDR, U16, U32, Ctx, frame, invalid, last_padding, malformed, nest, walk,
)
from rserpool.wire.transports import (
    _MK_TCP, IPv4Address, DccpTransport, OpaqueTransport, SctpTransport, TcpTransport, Transport, TRANSPORT_TYPES,
    UdpLiteTransport, UdpTransport, _address,
)

__all__ = [
    "OperationError", "Cookie", "PeChecksum", "PoolElement",
    "ServerInformation", "encode_pool_handle", "encode_pe_id", "format_handle", "pool_handle_text",
    "REGISTRATION_LIFE_INFINITE",
]

REGISTRATION_LIFE_INFINITE = -1
_PE_FIXED = struct.Struct("!IIi")
_PE_HDR = struct.Struct("!HHIIi")
_PE_ID = struct.Struct("!HHI")
# A PE's fixed fields, a TCP transport with one IPv4 address and the policy's header and type.
_PE_TCP4 = struct.Struct("!IIiHHHHHH4sHHI")
# The same with the PE's header, up to the policy (encoding).
_PE_TCP4_HEAD = struct.Struct("!HHIIiHHHHHH4s")
_CHECKSUM = struct.Struct("!HHHH")
_SERVER = struct.Struct("!I")
_TRANSPORT_CLASSES = (SctpTransport, TcpTransport, UdpTransport, UdpLiteTransport,
                      DccpTransport, OpaqueTransport)
_POLICY_CLASSES = tuple(POLICY_CLASSES.values()) + (OpaquePolicy,)


def pool_handle_text(handle: bytes) -> str:
    """A pool handle for people: the one form every log line, the admin
    endpoint and the metrics use, which is also how the rules file writes it
    (docs/authorization.md): the UTF-8 text when it is printable (and does
    not itself start with ``hex:``), else ``hex:`` and its lower-case hex.
    ``rserpool.stats.parse_handle`` reverses it."""
    try:
        text = handle.decode("utf-8")
    except UnicodeDecodeError:
        return "hex:" + handle.hex()
    if text and text.isprintable() and not text.startswith("hex:"):
        return text
    return "hex:" + handle.hex()


def format_handle(handle: bytes) -> str:
    """A handle in a message's text form (``rserpool wire decode``):
    'text' for printable ASCII handles, else 0x<hex>."""
    if handle and all(32 <= b < 127 for b in handle) and b"'" not in handle:
        return f"'{handle.decode('ascii')}'"
    return "0x" + handle.hex()


def encode_pool_handle(handle: bytes) -> bytes:
    if not isinstance(handle, bytes) or not handle:
        raise ValueError(f"a pool handle must be non-empty bytes: {handle!r}")
    return frame(codes.PARAM_POOL_HANDLE, handle)


def encode_pe_id(pe_id: int) -> bytes:
    return _PE_ID.pack(codes.PARAM_PE_IDENTIFIER, 8, pe_id)


def check32(name: str, value: object) -> None:
    if type(value) is not int or not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{name} must be a 32-bit unsigned integer: {value!r}")


def check_tuple(obj: object, name: str, kind: type) -> None:
    """Make the field ``name`` of the frozen dataclass ``obj`` a tuple and
    check that each of its items is exactly a ``kind``."""
    items = getattr(obj, name)
    if not isinstance(items, tuple):
        items = tuple(items)
        object.__setattr__(obj, name, items)
    for item in items:
        if type(item) is not kind:
            raise ValueError(f"not a {kind.__name__}: {item!r}")


@dataclass(frozen=True, slots=True, repr=False)
class OperationError:
    """Operation Error parameter: one or more error causes."""

    causes: tuple[ErrorCause, ...]
    PARAM_TYPE: ClassVar[int] = codes.PARAM_OPERATION_ERROR

    def __post_init__(self) -> None:
        if not isinstance(self.causes, tuple):
            object.__setattr__(self, "causes", tuple(self.causes))
        if not self.causes:
            raise ValueError("an Operation Error needs at least one cause")
        for c in self.causes:
            if type(c) is not ErrorCause:
                raise ValueError(f"not an ErrorCause: {c!r}")

    @classmethod
    def of(cls, code: int, info: bytes = b"") -> "OperationError":
        return cls((ErrorCause(code, info),))

    def encode(self) -> bytes:
        return nest(codes.PARAM_OPERATION_ERROR, b"", [c.encode() for c in self.causes])

    def __str__(self) -> str:
        return "error(" + ", ".join(str(c) for c in self.causes) + ")"

    __repr__ = __str__


@dataclass(frozen=True, slots=True, repr=False)
class Cookie:
    data: bytes
    PARAM_TYPE: ClassVar[int] = codes.PARAM_COOKIE

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise ValueError("cookie data must be bytes")
        if len(self.data) > 0xFFFF - 4:
            raise ValueError("cookie too long")

    def encode(self) -> bytes:
        return frame(codes.PARAM_COOKIE, self.data)

    def __str__(self) -> str:
        return f"cookie[{len(self.data)}B]"

    __repr__ = __str__


@dataclass(frozen=True, slots=True, repr=False)
class PeChecksum:
    """PE Checksum parameter: Length 6, then 2 padding bytes not counted."""

    value: int
    PARAM_TYPE: ClassVar[int] = codes.PARAM_PE_CHECKSUM

    def __post_init__(self) -> None:
        if type(self.value) is not int or not 0 <= self.value <= 0xFFFF:
            raise ValueError(f"PE checksum must be 16-bit: {self.value!r}")

    def encode(self) -> bytes:
        return _CHECKSUM.pack(codes.PARAM_PE_CHECKSUM, 6, self.value, 0)

    def __str__(self) -> str:
        return f"0x{self.value:04x}"

    __repr__ = __str__


@dataclass(frozen=True, slots=True, repr=False)
class PoolElement:
    """Pool Element parameter (RFC 5354 3.10).

    ``registration_life`` is a signed 32-bit number of seconds, -1 for
    infinite.  ``asap_transport`` is the PE's ASAP (SCTP) transport, left
    out by a registering PE and filled in by its home server.
    """

    pe_id: int
    home_server_id: int
    registration_life: int
    user_transport: Transport
    policy: Policy
    asap_transport: SctpTransport | None = None
    PARAM_TYPE: ClassVar[int] = codes.PARAM_POOL_ELEMENT

    def __post_init__(self) -> None:
        check32("pe_id", self.pe_id)
        check32("home_server_id", self.home_server_id)
        life = self.registration_life
        if type(life) is not int or not -0x80000000 <= life <= 0x7FFFFFFF:
            raise ValueError(f"registration_life must be a signed 32-bit integer: {life!r}")
        if not isinstance(self.user_transport, _TRANSPORT_CLASSES):
            raise ValueError(f"not a transport: {self.user_transport!r}")
        if not isinstance(self.policy, _POLICY_CLASSES):
            raise ValueError(f"not a policy: {self.policy!r}")
        if self.asap_transport is not None and type(self.asap_transport) is not SctpTransport:
            raise ValueError("the ASAP transport must be an SctpTransport")

    def encode(self) -> bytes:
        transport = self.user_transport
        if type(transport) is TcpTransport and self.asap_transport is None:
            address = transport.address
            if type(address) is IPv4Address:  # the common case, in one pack
                policy = self.policy.encode()
                n = 32 + len(policy) - (-((policy[2] << 8) | policy[3]) & 3)
                if n <= 0xFFFF:
                    return _PE_TCP4_HEAD.pack(10, n, self.pe_id, self.home_server_id, self.registration_life,
                                              5, 16, transport.port, transport.transport_use, 1, 8,
                                              address.packed) + policy
        parts = [transport.encode(), self.policy.encode()]
        if self.asap_transport is not None:
            parts.append(self.asap_transport.encode())
        body = b"".join(parts)
        n = 16 + len(body) - last_padding(parts)
        if n > 0xFFFF:
            raise ValueError("pool element parameter too long")
        return (_PE_HDR.pack(10, n, self.pe_id, self.home_server_id, self.registration_life)
                + body)

    def __str__(self) -> str:
        life = "inf" if self.registration_life == -1 else f"{self.registration_life}s"
        s = (f"pe=0x{self.pe_id:08x} home=0x{self.home_server_id:08x} life={life}"
             f" {self.user_transport} {self.policy}")
        if self.asap_transport is not None:
            s += f" asap={self.asap_transport}"
        return "{" + s + "}"

    __repr__ = __str__


@dataclass(frozen=True, slots=True, repr=False)
class ServerInformation:
    """Server Information parameter: server ID and its SCTP transport."""

    server_id: int
    transport: SctpTransport
    PARAM_TYPE: ClassVar[int] = codes.PARAM_SERVER_INFORMATION

    def __post_init__(self) -> None:
        check32("server_id", self.server_id)
        if type(self.transport) is not SctpTransport:
            raise ValueError("a Server Information transport must be an SctpTransport")

    def encode(self) -> bytes:
        return nest(codes.PARAM_SERVER_INFORMATION, _SERVER.pack(self.server_id),
                    [self.transport.encode()])

    def __str__(self) -> str:
        return f"{{server=0x{self.server_id:08x} {self.transport}}}"

    __repr__ = __str__


# ---- decoders --------------------------------------------------------------

_MK_CAUSE = fast_constructor(ErrorCause)
_MK_ERROR = fast_constructor(OperationError)
_MK_COOKIE = fast_constructor(Cookie)
_MK_CHECKSUM = fast_constructor(PeChecksum)
_MK_PE = fast_constructor(PoolElement)
_MK_SERVER = fast_constructor(ServerInformation)

def _dec_handle(data: bytes, s: int, e: int, depth: int, ctx: Ctx) -> bytes:
    n = e - s
    if n == 0 or n > ctx.limits.max_pool_handle:
        raise invalid(f"pool handle of {n} bytes (1..{ctx.limits.max_pool_handle} allowed)",
                      data[s - 4:e])
    return data[s:e]


def _dec_pe_id(data: bytes, s: int, e: int, depth: int, ctx: Ctx) -> int:
    if e - s != 4:
        raise malformed(f"PE identifier parameter of length {e - s + 4}, 8 expected")
    return U32.unpack_from(data, s)[0]


def _dec_checksum(data: bytes, s: int, e: int, depth: int, ctx: Ctx) -> PeChecksum:
    if e - s != 2:
        raise malformed(f"PE checksum parameter of length {e - s + 4}, 6 expected")
    return _MK_CHECKSUM(U16.unpack_from(data, s)[0])


def _dec_cookie(data: bytes, s: int, e: int, depth: int, ctx: Ctx) -> Cookie:
    return _MK_COOKIE(data[s:e])


def _tcp4_pool_element(data: bytes, s: int, e: int, depth: int, ctx: Ctx) -> PoolElement | None:
    """The fastest path of ``_dec_pool_element`` (at least 36 bytes): a TCP
    transport on one IPv4 address, then the policy and nothing else, in one
    unpack; 3 parameters 2 deep inside the PE, counted as the paths below
    count them.  None when the layout differs or a limit is near: the
    general paths then decode it (and report what they must)."""
    (pe_id, home, life, t1, l1, port, use, t2, l2, packed, t3, l3,
     ptype) = _PE_TCP4.unpack_from(data, s)
    if (t1 == 5 and l1 == 16 and t2 == 1 and l2 == 8 and t3 == 8 and s + 28 + l3 == e
            and depth + 2 <= ctx.limits.max_depth and ctx.count + 3 <= ctx.limits.max_parameters):
        if ptype == 0x40000001 and l3 == 12:  # LU, the common case
            policy = _MK_LU(U32.unpack_from(data, s + 36)[0])
        else:
            policy = decode_policy(data, s + 32, e, depth + 1, ctx)
        ctx.count += 3
        return _MK_PE(pe_id, home, life, _MK_TCP(port, _address(packed), use), policy, None)
    return None


def _dec_pool_element(data: bytes, s: int, e: int, depth: int, ctx: Ctx) -> PoolElement:
    if e - s < 12:
        raise malformed(f"pool element parameter of length {e - s + 4}, at least 16 expected")
    if e - s >= 36:
        pe = _tcp4_pool_element(data, s, e, depth, ctx)
        if pe is not None:
            return pe
    pe_id, home, life = _PE_FIXED.unpack_from(data, s)
    # Fast path: a known user transport then a policy and nothing else
    # (only when the transport's addresses are within the depth limit, so
    # that a fault there is quoted by the generic walk).
    p = s + 12
    if e - p >= 16 and depth + 2 <= ctx.limits.max_depth:
        t1, l1 = HDR.unpack_from(data, p)
        p2 = p + ((l1 + 3) & ~3)
        if t1 in TRANSPORT_TYPES and l1 >= 4 and p2 + 4 <= e:
            t2, l2 = HDR.unpack_from(data, p2)
            if t2 == 8 and p2 + l2 <= e <= p2 + ((l2 + 3) & ~3) and l2 >= 4:
                ctx.count += 2
                if ctx.count <= ctx.limits.max_parameters:
                    transport = DECODERS[t1](data, p + 4, p + l1, depth + 1, ctx)
                    policy = DECODERS[8](data, p2 + 4, p2 + l2, depth + 1, ctx)
                    return _MK_PE(pe_id, home, life, transport, policy, None)
                ctx.count -= 2
    subs = walk(data, s + 12, e, depth + 1, ctx)
    n = len(subs)
    if n < 2 or n > 3 or subs[0][0] not in TRANSPORT_TYPES or subs[1][0] != 8 or (
            n == 3 and subs[2][0] != codes.PARAM_SCTP_TRANSPORT):
        raise invalid("pool element needs a user transport, a policy and"
                      " optionally an SCTP ASAP transport", data[s - 4:e])
    return _MK_PE(pe_id, home, life, subs[0][1], subs[1][1],
                       subs[2][1] if n == 3 else None)


def _dec_server_info(data: bytes, s: int, e: int, depth: int, ctx: Ctx) -> ServerInformation:
    if e - s < 4:
        raise malformed(f"server information parameter of length {e - s + 4}, at least 8 expected")
    subs = walk(data, s + 4, e, depth + 1, ctx)
    if len(subs) != 1 or subs[0][0] != codes.PARAM_SCTP_TRANSPORT:
        raise invalid("server information needs exactly one SCTP transport", data[s - 4:e])
    return _MK_SERVER(U32.unpack_from(data, s)[0], subs[0][1])


def _dec_operation_error(data: bytes, s: int, e: int, depth: int, ctx: Ctx) -> OperationError:
    causes = []
    pos = s
    limit = ctx.limits.max_causes
    while pos < e:
        if e - pos < 4:
            raise malformed("truncated error cause")
        code, clen = HDR.unpack_from(data, pos)
        cend = pos + clen
        if clen < 4 or cend > e:
            raise malformed(f"error cause length {clen} exceeds the operation error")
        causes.append(_MK_CAUSE(code, data[pos + 4:cend]))
        if len(causes) > limit:
            raise WireError(0x6, f"more than {limit} error causes")
        pos = (cend + 3) & ~3
    if not causes:
        raise invalid("operation error without a cause", data[s - 4:e])
    return _MK_ERROR(tuple(causes))


DECODERS.update({
    codes.PARAM_POOL_HANDLE: _dec_handle,
    codes.PARAM_PE_IDENTIFIER: _dec_pe_id,
    codes.PARAM_PE_CHECKSUM: _dec_checksum,
    codes.PARAM_COOKIE: _dec_cookie,
    codes.PARAM_POOL_ELEMENT: _dec_pool_element,
    codes.PARAM_SERVER_INFORMATION: _dec_server_info,
    codes.PARAM_OPERATION_ERROR: _dec_operation_error,
})
