"""Address and transport parameters (RFC 5354 3.1-3.7, 3.16).

Addresses are ``ipaddress.IPv4Address`` / ``ipaddress.IPv6Address``
values, re-exported here.  The second 16-bit word of the TCP, UDP and
UDP-Lite parameters is "(reserved)" in RFC 5354 (send 0); rsplib and
Wireshark read TCP's as Transport Use.  It is kept as ``transport_use``
(TCP) or ``reserved`` (UDP, UDP-Lite, DCCP) so that any value round-trips;
the registrar decides what to accept.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import ClassVar, Union

from rserpool.fastinit import fast_constructor
import rserpool.wire.codes as codes
from rserpool.wire.tlv import DECODERS, Ctx, frame, invalid, malformed, nest, walk

__all__ = [
    "IPv4Address", "IPv6Address", "IPAddress", "SctpTransport", "TcpTransport",
    "UdpTransport", "UdpLiteTransport", "DccpTransport", "OpaqueTransport",
    "Transport", "encode_address", "TRANSPORT_TYPES",
]

IPAddress = Union[IPv4Address, IPv6Address]
_A4 = struct.Struct("!HH4s")
_A6 = struct.Struct("!HH16s")
_PORT_USE = struct.Struct("!HH")
_HDR_PORT_USE = struct.Struct("!HHHH")
_DCCP = struct.Struct("!HHI")
_ADDRESS_TYPES = (codes.PARAM_IPV4_ADDRESS, codes.PARAM_IPV6_ADDRESS)


def encode_address(address: IPAddress) -> bytes:
    if type(address) is IPv4Address:
        return _A4.pack(1, 8, address.packed)
    return _A6.pack(2, 20, address.packed)


def _check_address(address: object) -> None:
    if type(address) not in (IPv4Address, IPv6Address):
        raise ValueError(f"not an ipaddress.IPv4Address/IPv6Address: {address!r}")


def _check16(name: str, value: int) -> None:
    if type(value) is not int or not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} must be a 16-bit unsigned integer: {value!r}")


class _Transport:
    __slots__ = ()
    PARAM_TYPE: ClassVar[int]
    NAME: ClassVar[str]

    def __str__(self) -> str:
        addrs = ",".join(_fmt_addr(a) for a in self.all_addresses)
        extra = ""
        second = getattr(self, "transport_use", None)
        if second is None:
            second = self.reserved
            extra = f" reserved={second}" if second else ""
        elif second:
            extra = " data+control" if second == 1 else f" use={second}"
        if self.PARAM_TYPE == codes.PARAM_DCCP_TRANSPORT:
            extra += f" service={self.service_code}"
        return f"{self.NAME}:{addrs}:{self.port}{extra}"

    __repr__ = __str__


def _fmt_addr(a: IPAddress) -> str:
    return f"[{a}]" if a.version == 6 else str(a)


@dataclass(frozen=True, slots=True, repr=False)
class SctpTransport(_Transport):
    """SCTP transport: port, Transport Use, one or more addresses."""

    port: int
    addresses: tuple[IPAddress, ...]
    transport_use: int = codes.TRANSPORT_USE_DATA_ONLY
    PARAM_TYPE: ClassVar[int] = codes.PARAM_SCTP_TRANSPORT
    NAME: ClassVar[str] = "sctp"

    def __post_init__(self) -> None:
        _check16("port", self.port)
        _check16("transport_use", self.transport_use)
        if not isinstance(self.addresses, tuple):
            object.__setattr__(self, "addresses", tuple(self.addresses))
        if not self.addresses:
            raise ValueError("an SCTP transport needs at least one address")
        for a in self.addresses:
            _check_address(a)

    @property
    def all_addresses(self) -> tuple[IPAddress, ...]:
        return self.addresses

    def encode(self) -> bytes:
        return nest(codes.PARAM_SCTP_TRANSPORT, _PORT_USE.pack(self.port, self.transport_use),
                    [encode_address(a) for a in self.addresses])


class _OneAddress(_Transport):
    __slots__ = ()

    def __post_init__(self) -> None:
        _check16("port", self.port)
        _check16("reserved", self.reserved)
        _check_address(self.address)

    @property
    def all_addresses(self) -> tuple[IPAddress, ...]:
        return (self.address,)

    def encode(self) -> bytes:
        a = encode_address(self.address)
        return _HDR_PORT_USE.pack(self.PARAM_TYPE, 8 + len(a), self.port, self.reserved) + a


@dataclass(frozen=True, slots=True, repr=False)
class TcpTransport(_OneAddress):
    """TCP transport; ``transport_use`` is the RFC's reserved word (send 0)."""

    port: int
    address: IPAddress
    transport_use: int = 0
    PARAM_TYPE: ClassVar[int] = codes.PARAM_TCP_TRANSPORT
    NAME: ClassVar[str] = "tcp"

    @property
    def reserved(self) -> int:
        return self.transport_use

    def encode(self) -> bytes:
        a = self.address
        if type(a) is IPv4Address:
            return _HDR_PORT_USE.pack(5, 16, self.port, self.transport_use) + _A4.pack(1, 8, a.packed)
        return _HDR_PORT_USE.pack(5, 28, self.port, self.transport_use) + _A6.pack(2, 20, a.packed)


@dataclass(frozen=True, slots=True, repr=False)
class UdpTransport(_OneAddress):
    port: int
    address: IPAddress
    reserved: int = 0
    PARAM_TYPE: ClassVar[int] = codes.PARAM_UDP_TRANSPORT
    NAME: ClassVar[str] = "udp"


@dataclass(frozen=True, slots=True, repr=False)
class UdpLiteTransport(_OneAddress):
    port: int
    address: IPAddress
    reserved: int = 0
    PARAM_TYPE: ClassVar[int] = codes.PARAM_UDP_LITE_TRANSPORT
    NAME: ClassVar[str] = "udplite"


@dataclass(frozen=True, slots=True, repr=False)
class DccpTransport(_Transport):
    port: int
    service_code: int
    address: IPAddress
    reserved: int = 0
    PARAM_TYPE: ClassVar[int] = codes.PARAM_DCCP_TRANSPORT
    NAME: ClassVar[str] = "dccp"

    def __post_init__(self) -> None:
        _check16("port", self.port)
        _check16("reserved", self.reserved)
        if type(self.service_code) is not int or not 0 <= self.service_code <= 0xFFFFFFFF:
            raise ValueError(f"service_code must be 32-bit: {self.service_code!r}")
        _check_address(self.address)

    @property
    def all_addresses(self) -> tuple[IPAddress, ...]:
        return (self.address,)

    def encode(self) -> bytes:
        a = encode_address(self.address)
        return (_HDR_PORT_USE.pack(3, 12 + len(a), self.port, self.reserved)
                + struct.pack("!I", self.service_code) + a)


@dataclass(frozen=True, slots=True, repr=False)
class OpaqueTransport:
    """Opaque transport data (RFC 5354 3.16)."""

    data: bytes
    PARAM_TYPE: ClassVar[int] = codes.PARAM_OPAQUE_TRANSPORT

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise ValueError("OpaqueTransport.data must be bytes")
        if len(self.data) > 0xFFFF - 4:
            raise ValueError("OpaqueTransport.data too long")

    def encode(self) -> bytes:
        return frame(codes.PARAM_OPAQUE_TRANSPORT, self.data)

    def __str__(self) -> str:
        return f"opaque:{self.data.hex() or '-'}"

    __repr__ = __str__


Transport = Union[SctpTransport, TcpTransport, UdpTransport, UdpLiteTransport,
                  DccpTransport, OpaqueTransport]
TRANSPORT_TYPES = frozenset({codes.PARAM_DCCP_TRANSPORT, codes.PARAM_SCTP_TRANSPORT,
                             codes.PARAM_TCP_TRANSPORT, codes.PARAM_UDP_TRANSPORT,
                             codes.PARAM_UDP_LITE_TRANSPORT, codes.PARAM_OPAQUE_TRANSPORT})


# ---- decoders --------------------------------------------------------------

# Decoded addresses are immutable, so equal ones are shared (bounded cache).
_ADDR_CACHE: dict[bytes, IPAddress] = {}
_ADDR_CACHE_MAX = 4096


def _address(packed: bytes) -> IPAddress:
    a = _ADDR_CACHE.get(packed)
    if a is None:
        a = IPv4Address(packed) if len(packed) == 4 else IPv6Address(packed)
        if len(_ADDR_CACHE) >= _ADDR_CACHE_MAX:
            _ADDR_CACHE.clear()
        _ADDR_CACHE[packed] = a
    return a


def _dec_ipv4(data: bytes, s: int, e: int, depth: int, ctx: Ctx) -> IPv4Address:
    if e - s != 4:
        raise malformed(f"IPv4 address parameter of length {e - s + 4}, 8 expected")
    return _address(data[s:e])


def _dec_ipv6(data: bytes, s: int, e: int, depth: int, ctx: Ctx) -> IPv6Address:
    if e - s != 16:
        raise malformed(f"IPv6 address parameter of length {e - s + 4}, 20 expected")
    return _address(data[s:e])


def _addresses(data: bytes, s: int, e: int, depth: int, ctx: Ctx, what: str, tlv: int) -> list:
    """The address TLVs in ``data[s:e]``, inside the transport TLV at ``tlv``."""
    subs = walk(data, s, e, depth + 1, ctx)
    if len(subs) > ctx.limits.max_addresses:
        raise invalid(f"{what} with more than {ctx.limits.max_addresses} addresses",
                      data[tlv:e])
    for t, _, _ in subs:
        if t not in _ADDRESS_TYPES:
            raise invalid(f"{what} containing a parameter of type 0x{t:04x}", data[tlv:e])
    return [v for _, v, _ in subs]


def _dec_sctp(data: bytes, s: int, e: int, depth: int, ctx: Ctx) -> SctpTransport:
    if e - s < 4:
        raise malformed(f"SCTP transport of length {e - s + 4}, at least 8 expected")
    port, use = _PORT_USE.unpack_from(data, s)
    addrs = _addresses(data, s + 4, e, depth, ctx, "SCTP transport", s - 4)
    if not addrs:
        raise invalid("SCTP transport without an address", data[s - 4:e])
    return _MK_SCTP(port, tuple(addrs), use)


def _one_address(cls: type, fixed: int, name: str):
    make = fast_constructor(cls)

    def dec(data: bytes, s: int, e: int, depth: int, ctx: Ctx):
        if e - s < fixed:
            raise malformed(f"{name} transport of length {e - s + 4}, at least {fixed + 4} expected")
        addrs = _addresses(data, s + fixed, e, depth, ctx, f"{name} transport", s - 4)
        if len(addrs) != 1:
            raise invalid(f"{name} transport needs exactly one address", data[s - 4:e])
        port, second = _PORT_USE.unpack_from(data, s)
        if fixed == 8:
            return make(port, U32_AT(data, s + 4), addrs[0], second)
        return make(port, addrs[0], second)
    return dec


def U32_AT(data: bytes, pos: int) -> int:
    return struct.unpack_from("!I", data, pos)[0]


_MK_SCTP = fast_constructor(SctpTransport)
_MK_TCP = fast_constructor(TcpTransport)
_MK_OPAQUE = fast_constructor(OpaqueTransport)
_A4_VALUE = struct.Struct("!HHHHHH4s")


def _dec_tcp(data: bytes, s: int, e: int, depth: int, ctx: Ctx) -> TcpTransport:
    # Fast path: exactly one IPv4 address TLV and nothing else.
    if e - s == 12 and depth + 1 <= ctx.limits.max_depth:
        port, use, atype, alen, packed = _A4_VALUE.unpack_from(data, s - 4)[2:]
        if atype == 1 and alen == 8:
            ctx.count += 1
            if ctx.count <= ctx.limits.max_parameters:
                return _MK_TCP(port, _address(packed), use)
            ctx.count -= 1
    return _dec_tcp_slow(data, s, e, depth, ctx)


_dec_tcp_slow = _one_address(TcpTransport, 4, "TCP")


def _dec_opaque(data: bytes, s: int, e: int, depth: int, ctx: Ctx) -> OpaqueTransport:
    return _MK_OPAQUE(data[s:e])


DECODERS.update({
    codes.PARAM_IPV4_ADDRESS: _dec_ipv4,
    codes.PARAM_IPV6_ADDRESS: _dec_ipv6,
    codes.PARAM_DCCP_TRANSPORT: _one_address(DccpTransport, 8, "DCCP"),
    codes.PARAM_SCTP_TRANSPORT: _dec_sctp,
    codes.PARAM_TCP_TRANSPORT: _dec_tcp,
    codes.PARAM_UDP_TRANSPORT: _one_address(UdpTransport, 4, "UDP"),
    codes.PARAM_UDP_LITE_TRANSPORT: _one_address(UdpLiteTransport, 4, "UDP-Lite"),
    codes.PARAM_OPAQUE_TRANSPORT: _dec_opaque,
})
