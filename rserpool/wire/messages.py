"""Message framing, the message base class, decode/encode and error replies.

The ASAP and ENRP message classes live in ``asap.py`` and ``enrp.py``;
this module holds what they share (RFC 5354 section 4).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Iterable

from rserpool.fastinit import fast_constructor
import rserpool.wire.codes as codes
from rserpool.wire.errors import DEFAULT_LIMITS, ErrorCause, Limits, WireError
from rserpool.wire.params import OperationError, format_handle
from rserpool.wire.tlv import invalid, last_padding, malformed, new_ctx, tlv_bytes

__all__ = ["DecodeCache", "Message", "decode_message", "encode_message", "error_reply", "REGISTRY"]

MSG_HDR = struct.Struct("!BBH")
MAX_MESSAGE = 0xFFFF

# (ppid, type) -> message class; filled by asap.py and enrp.py.
REGISTRY: dict[tuple[int, int], type] = {}
_BY_PPID: dict[int, dict[int, type]] = {codes.PPID_ASAP: {}, codes.PPID_ENRP: {}}


def register(cls: type) -> type:
    cls._make = staticmethod(fast_constructor(cls))
    REGISTRY[(cls.PPID, cls.TYPE)] = cls
    _BY_PPID[cls.PPID][cls.TYPE] = cls
    return cls


_SHORT = {"pool_handle": "handle", "pool_element": "pe", "pool_elements": "pes"}


def _fmt(name: str, value: Any) -> str | None:
    if value is None or value is False:
        return None
    if value is True:
        return name
    if name in _SHORT:
        name = _SHORT[name]
    if isinstance(value, bytes):
        return f"{name}={format_handle(value) if name == 'handle' else value.hex()}"
    if name == "pe_checksum":
        return f"checksum=0x{value:04x}"
    if name == "error":
        return f"error=[{', '.join(str(c) for c in value.causes)}]"
    if isinstance(value, int) and name.endswith("_id"):
        return f"{name[:-3]}=0x{value:08x}"
    if isinstance(value, tuple):
        return f"{name}=[{', '.join(str(v) for v in value)}]"
    return f"{name}={value}"


@dataclass(frozen=True, slots=True, repr=False)
class Message:
    """Base of every ASAP and ENRP message.

    ``unrecognized`` holds the "skip and report" error causes met while
    decoding (RFC 5354 3): the receiver processes the message and sends
    ``error_reply()`` back.  It is not part of equality nor of the encoding.
    """

    unrecognized: tuple[ErrorCause, ...] = field(default=(), compare=False, kw_only=True)
    PPID: ClassVar[int]
    TYPE: ClassVar[int]
    name: ClassVar[str]
    FLAGS: ClassVar[tuple[tuple[str, int], ...]] = ()

    @property
    def protocol(self) -> str:
        return "asap" if self.PPID == codes.PPID_ASAP else "enrp"

    @property
    def flags(self) -> int:
        value = 0
        for fname, mask in self.FLAGS:
            if getattr(self, fname):
                value |= mask
        return value

    def _body(self) -> tuple[bytes, list[bytes]]:
        raise NotImplementedError

    def encode(self) -> bytes:
        fixed, parts = self._body()
        return frame_message(self.TYPE, self.flags, fixed, parts)

    def error_reply(self, sender_id: int = 0, receiver_id: int = 0) -> "Message | None":
        """The ASAP_ERROR/ENRP_ERROR reporting ``unrecognized``, or None."""
        if not self.unrecognized:
            return None
        return error_reply(self.unrecognized, self.PPID, sender_id, receiver_id)

    def __str__(self) -> str:
        items = [self.name]
        for f in fields(self):
            if f.name == "unrecognized":
                continue
            text = _fmt(f.name, getattr(self, f.name))
            if text is not None:
                items.append(text)
        if self.unrecognized:
            items.append(f"unrecognized={list(self.unrecognized)}")
        return " ".join(items)

    __repr__ = __str__


def frame_message(mtype: int, flags: int, fixed: bytes, parts: list[bytes]) -> bytes:
    body = fixed + b"".join(parts)
    n = 4 + len(body) - last_padding(parts)
    if n > MAX_MESSAGE:
        raise ValueError(f"message too long: {n} bytes")
    return MSG_HDR.pack(mtype, flags, n) + body  # body ends with the last padding


def encode_message(msg: Message) -> bytes:
    return msg.encode()


def decode_message(data: bytes, ppid: int, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Decode one ASAP (PPID 11) or ENRP (PPID 12) message.

    ``data`` is one whole message, with or without its final padding.
    Raises only ``WireError``.
    """
    if type(data) is not bytes:
        try:
            data = bytes(data)
        except Exception:
            raise WireError(None, "message data is not bytes") from None
    table = _BY_PPID.get(ppid)
    if table is None:
        raise WireError(None, f"unknown payload protocol identifier {ppid!r}")
    size = len(data)
    if size > limits.max_message_size:
        raise WireError(0x6, f"message of {size} bytes exceeds {limits.max_message_size}")
    if size < 4:
        raise malformed(f"message of {size} bytes is shorter than its header")
    mtype, flags, length = MSG_HDR.unpack_from(data, 0)
    if length < 4 or length > size or size - length > 3:
        raise malformed(f"message length {length} does not match the {size} bytes received")
    cls = table.get(mtype)
    if cls is None:
        return _unknown_message(data, mtype, ppid)
    ctx = new_ctx(limits)
    try:
        msg = cls._decode(data, flags, length, ctx)
    except WireError:
        raise
    except (ValueError, TypeError, IndexError, struct.error) as exc:  # defensive: never leak these
        raise malformed(f"invalid value in {cls.name}: {exc}") from None
    if ctx.unrecognized:
        object.__setattr__(msg, "unrecognized", ctx.unrecognized)
    return msg


class DecodeCache:
    """``decode_message`` with the results kept by their exact bytes.

    A pool element re-registers with the same bytes every time (same
    identifier, transports, policy and life) and a pool user asks for the
    same handle again and again; decoding those again is wasted work.
    Messages are immutable, and equal bytes under the same PPID and
    ``limits`` always decode to equal messages, so a kept message is handed
    out again as it is.

    Bounded: messages of at most ``max_message_size`` bytes are kept, at most
    ``max_entries`` of them (all are forgotten when that is reached, so bytes
    chosen by a peer cost at most one dictionary entry each until then).
    Only messages that decode are kept: bytes that raise ``WireError`` are
    decoded (and raise) every time.
    """

    __slots__ = ("limits", "max_entries", "max_message_size", "hits", "misses", "_by_ppid", "_size")

    def __init__(self, limits: Limits = DEFAULT_LIMITS, max_entries: int = 4096,
                 max_message_size: int = 512) -> None:
        if max_entries < 1 or max_message_size < 4:
            raise ValueError("max_entries must be >= 1 and max_message_size >= 4")
        self.limits = limits
        self.max_entries = max_entries
        self.max_message_size = max_message_size
        self.hits = 0
        self.misses = 0
        self._by_ppid: dict[int, dict[bytes, Message]] = {ppid: {} for ppid in _BY_PPID}
        self._size = 0  # messages kept, ASAP and ENRP together

    def __len__(self) -> int:
        return self._size

    def clear(self) -> None:
        for kept in self._by_ppid.values():
            kept.clear()
        self._size = 0

    def decode(self, data: bytes, ppid: int) -> Message:
        """What ``decode_message(data, ppid, self.limits)`` returns or raises."""
        kept = self._by_ppid.get(ppid)
        if kept is None or type(data) is not bytes:
            return decode_message(data, ppid, self.limits)
        message = kept.get(data)
        if message is not None:
            self.hits += 1
            return message
        self.misses += 1
        message = decode_message(data, ppid, self.limits)
        if len(data) <= self.max_message_size:
            if self._size >= self.max_entries:  # ASAP and ENRP together
                self.clear()
            kept[data] = message  # a miss: a new key
            self._size += 1
        return message


def _unknown_message(data: bytes, mtype: int, ppid: int) -> Message:
    proto = "ASAP" if ppid == codes.PPID_ASAP else "ENRP"
    if mtype & 0xC0 == codes.UNKNOWN_MESSAGE_REPORT:
        raise WireError(codes.CAUSE_UNRECOGNIZED_MESSAGE,
                        f"unknown {proto} message type 0x{mtype:02x} (discard, report)",
                        data[:MSG_HDR.unpack_from(data, 0)[2]])
    raise WireError(None, f"unknown {proto} message type 0x{mtype:02x} (discard)", data)


def expect(subs: list, pattern: tuple[tuple[int, str], ...], data: bytes, length: int,
           what: str) -> list:
    """Match decoded parameters against ``pattern`` of (type, kind) pairs.

    kind is "1" (exactly one), "?" (optional), "*" (any number) or "+"
    (one or more).  Returns one value per pattern entry (None for a missing
    optional one, a tuple for repeated ones).  A duplicated, misplaced
    or unexpected parameter raises Invalid Values with that parameter's
    TLV; a missing one (no TLV to quote) Unspecified Error.
    """
    out = []
    i = 0
    n = len(subs)
    for ptype, kind in pattern:
        if kind == "1":
            if i < n and subs[i][0] == ptype:
                out.append(subs[i][1])
                i += 1
            elif i < n:
                raise invalid(f"{what}: parameter 0x{subs[i][0]:04x} where 0x{ptype:04x} belongs",
                              tlv_bytes(data, subs[i][2]))
            else:
                raise malformed(f"{what}: missing parameter 0x{ptype:04x}")
        elif kind == "?":
            if i < n and subs[i][0] == ptype:
                out.append(subs[i][1])
                i += 1
            else:
                out.append(None)
        else:
            j = i
            while j < n and subs[j][0] == ptype:
                j += 1
            if kind == "+" and j == i:
                if i < n:
                    raise invalid(f"{what}: parameter 0x{subs[i][0]:04x} where 0x{ptype:04x} belongs",
                                  tlv_bytes(data, subs[i][2]))
                raise malformed(f"{what}: needs at least one parameter 0x{ptype:04x}")
            out.append(tuple(v for _, v, _ in subs[i:j]))
            i = j
    if i != n:
        raise invalid(f"{what}: unexpected parameter 0x{subs[i][0]:04x}", tlv_bytes(data, subs[i][2]))
    return out


def error_reply(err_or_causes: WireError | OperationError | Iterable[ErrorCause], ppid: int,
                sender_id: int = 0, receiver_id: int = 0) -> Message:
    """An ASAP_ERROR (PPID 11) or ENRP_ERROR (PPID 12) carrying the causes.

    A WireError gives its ``report`` (ValueError when the RFC says to
    discard silently).  Cause information is never truncated (a cut TLV or
    message would be a broken one inside the reply): a cause that does not
    fit whole in one message is left out, and if none fits the reply
    carries Unspecified Error (RFC 5354 3.12.1, no information).
    """
    if isinstance(err_or_causes, WireError):
        causes = err_or_causes.report
        if causes is None:
            raise ValueError("this error must be discarded silently, not reported")
    elif isinstance(err_or_causes, OperationError):
        causes = err_or_causes.causes
    else:
        causes = tuple(err_or_causes)
    room = MAX_MESSAGE - 4 - 8 - 4 - (8 if ppid == codes.PPID_ENRP else 0)
    fitted = []
    for c in causes:
        need = 4 + ((len(c.info) + 3) & ~3)
        if need <= room:
            room -= need
            fitted.append(c)
    if not fitted:
        fitted.append(ErrorCause(codes.CAUSE_UNSPECIFIED, b""))
    error = OperationError(tuple(fitted))
    if ppid == codes.PPID_ASAP:
        return REGISTRY[(ppid, codes.ASAP_ERROR)](error)
    if ppid == codes.PPID_ENRP:
        return REGISTRY[(ppid, codes.ENRP_ERROR)](sender_id, receiver_id, error)
    raise ValueError(f"unknown payload protocol identifier {ppid!r}")
