"""TLV walking and framing shared by every parameter and message codec.

``walk`` decodes the parameters between two offsets with the decoders
registered in ``DECODERS`` (parameter type -> function), applying the
upper-two-bit rules of RFC 5354 section 3 to unknown types.  Every decoder
has the signature ``(data, start, end, depth, ctx) -> value`` where
``start``/``end`` delimit the parameter value (after the 4-byte header,
before padding) and ``depth`` is the depth of the parameter itself.
"""

from __future__ import annotations

import struct
from typing import Any, Callable

from rserpool.wire.errors import DEFAULT_LIMITS, ErrorCause, Limits, WireError

HDR = struct.Struct("!HH")
U16 = struct.Struct("!H")
U32 = struct.Struct("!I")
PADDING = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")

UNSPECIFIED = 0x0
INVALID = 0x3
UNRECOGNIZED_PARAMETER = 0x1
LACK_OF_RESOURCES = 0x6

Decoder = Callable[[bytes, int, int, int, "Ctx"], Any]
DECODERS: dict[int, Decoder] = {}


class Ctx:
    """Per-message decoding state: limits, TLV count, skip-and-report causes.

    No ``__init__`` and class-level defaults: creating one per message is
    on the hot path.  Use ``new_ctx(limits)``.
    """

    limits: Limits = DEFAULT_LIMITS
    count: int = 0
    unrecognized: tuple = ()


def new_ctx(limits: Limits = DEFAULT_LIMITS) -> Ctx:
    ctx = Ctx()
    ctx.limits = limits
    return ctx


def invalid(detail: str, offending: bytes | memoryview) -> WireError:
    """Invalid Values (RFC 5354 3.12.4) with ``offending``, the whole,
    well-framed TLV that holds the invalid value."""
    return WireError(INVALID, detail, bytes(offending))


def malformed(detail: str) -> WireError:
    """A fault that no well-framed TLV holds: a wrong message length, a
    parameter length that overruns its container or does not fit its type,
    a missing parameter or a bad fixed field.  There is no TLV to quote, so
    the report is Unspecified Error (RFC 5354 3.12.1, no information)."""
    return WireError(UNSPECIFIED, detail)


def invalid_container(detail: str) -> WireError:
    """Invalid Values held by the TLV ``walk`` is decoding one level up
    (e.g. nesting too deep): that walk quotes the TLV."""
    err = WireError(UNSPECIFIED, detail)
    err.needs_container = True
    return err


def walk(data: bytes, pos: int, end: int, depth: int, ctx: Ctx) -> list[tuple[int, Any, int]]:
    """Decode the TLVs in ``data[pos:end]``; returns ``(type, value, start)``.

    Padding after the last TLV is not required to lie inside ``end`` (RFC
    5354: outer lengths exclude the last padding), and a trailing padding
    counted by the outer length (as rsplib sends it) is accepted too.
    """
    limits = ctx.limits
    if depth > limits.max_depth:
        raise invalid_container(f"parameters nested deeper than {limits.max_depth}")
    out = []
    unpack = HDR.unpack_from
    decoders = DECODERS
    while pos < end:
        # Fewer than 4 bytes before ``end`` give plen >= 4 > end - pos below,
        # or struct.error at the end of the data (decode_message maps it).
        ptype, plen = unpack(data, pos)
        tend = pos + plen
        if plen < 4 or tend > end:
            raise malformed(f"parameter 0x{ptype:04x} length {plen} exceeds its container")
        ctx.count += 1
        if ctx.count > limits.max_parameters:
            raise WireError(LACK_OF_RESOURCES, f"more than {limits.max_parameters} parameters")
        dec = decoders.get(ptype)
        if dec is not None:
            try:
                out.append((ptype, dec(data, pos + 4, tend, depth, ctx), pos))
            except WireError as err:
                if err.needs_container:
                    quote_container(err, data[pos:tend])
                raise
        else:
            unknown_parameter(data, pos, tend, ptype, ctx)
        pos = (tend + 3) & ~3
    return out


def quote_container(err: WireError, tlv: bytes) -> None:
    """Give an ``invalid_container`` error the TLV that holds the fault."""
    err.needs_container = False
    err.cause = INVALID
    err.offending = bytes(tlv)


def unknown_parameter(data: bytes, pos: int, tend: int, ptype: int, ctx: Ctx) -> None:
    action = ptype & 0xC000
    raw = bytes(data[pos:tend])
    if action == 0x0000:
        raise WireError(None, f"unknown parameter type 0x{ptype:04x} (stop, discard)", raw)
    if action == 0x4000:
        raise WireError(UNRECOGNIZED_PARAMETER,
                        f"unknown parameter type 0x{ptype:04x} (stop, discard, report)",
                        raw, ctx.unrecognized)
    if action == 0xC000:
        ctx.unrecognized += (ErrorCause(UNRECOGNIZED_PARAMETER, raw),)


def tlv_bytes(data: bytes, start: int) -> bytes:
    """The TLV starting at ``start`` (without padding), for error reports."""
    if start + 4 > len(data):
        return bytes(data[start:])
    return bytes(data[start:start + U16.unpack_from(data, start + 2)[0]])


def frame(ptype: int, value: bytes) -> bytes:
    """A TLV with its value and zero padding."""
    n = 4 + len(value)
    if n > 0xFFFF:
        raise ValueError(f"parameter 0x{ptype:04x} too long: {n} bytes")
    return HDR.pack(ptype, n) + value + PADDING[n & 3]


def last_padding(parts: list[bytes] | tuple[bytes, ...]) -> int:
    """Padding bytes of the last padded TLV in ``parts`` (0 if none)."""
    if not parts:
        return 0
    last = parts[-1]
    return -((last[2] << 8) | last[3]) & 3


def nest(ptype: int, fixed: bytes, parts: list[bytes] | tuple[bytes, ...]) -> bytes:
    """A TLV whose value is ``fixed`` then padded sub-TLVs ``parts``.

    Its length covers the inner padding except the last one (RFC 5354 2).
    """
    body = fixed + b"".join(parts)
    n = 4 + len(body) - last_padding(parts)
    if n > 0xFFFF:
        raise ValueError(f"parameter 0x{ptype:04x} too long: {n} bytes")
    return HDR.pack(ptype, n) + body  # body already ends with the last padding
