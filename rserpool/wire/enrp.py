"""ENRP messages (RFC 5353 section 2), PPID 12.

Every ENRP message starts with the sending and receiving server IDs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from rserpool.fastinit import fast_constructor
import rserpool.wire.codes as codes
from rserpool.wire.messages import Message, expect, register
from rserpool.wire.params import (
    OperationError, PeChecksum, PoolElement, ServerInformation, check32, check_tuple,
    encode_pool_handle, format_handle,
)
from rserpool.wire.errors import WireError
from rserpool.wire.tlv import DECODERS, HDR, Ctx, frame, invalid, malformed, tlv_bytes, walk

__all__ = [
    "MAX_IDENTITY", "check_identity", "encode_identity",
    "EnrpPresence", "EnrpHandleTableRequest", "EnrpHandleTableResponse", "PoolEntry",
    "EnrpHandleUpdate", "EnrpListRequest", "EnrpListResponse", "EnrpInitTakeover",
    "EnrpInitTakeoverAck", "EnrpTakeoverServer", "EnrpError",
]

_IDS = struct.Struct("!II")
_IDS_ACTION = struct.Struct("!IIHH")
_IDS_TARGET = struct.Struct("!III")
H = codes.PARAM_POOL_HANDLE
PE = codes.PARAM_POOL_ELEMENT
ID = codes.PARAM_PE_IDENTITY
#: Longest identity carried in a PE Identity parameter (UTF-8 bytes).
MAX_IDENTITY = 255


def check_identity(identity: object) -> None:
    """An identity carried by ENRP: None, or 1..255 UTF-8 bytes."""
    if identity is None:
        return
    if not isinstance(identity, str) or not 1 <= len(identity.encode("utf-8", "surrogatepass")) <= MAX_IDENTITY:
        raise ValueError(f"a PE identity is a text of 1..{MAX_IDENTITY} UTF-8 bytes: {identity!r}")
    identity.encode("utf-8")  # no lone surrogates


def encode_identity(identity: str) -> bytes:
    """The PE Identity parameter (rserpool extension, type 0xbf01)."""
    return frame(ID, identity.encode("utf-8"))


# Decoded identities are immutable and few (one per PE owner): equal ones
# are shared (bounded cache, as the addresses of rserpool.wire.transports).
_IDENTITIES: dict[bytes, str] = {}
_MAX_IDENTITIES = 4096


def _dec_identity(data: bytes, s: int, e: int, depth: int, ctx: Ctx) -> str:
    if not 1 <= e - s <= MAX_IDENTITY:
        raise invalid(f"PE identity of {e - s} bytes (1..{MAX_IDENTITY} allowed)", data[s - 4:e])
    raw = data[s:e]
    identity = _IDENTITIES.get(raw)
    if identity is None:
        try:
            identity = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid("PE identity is not UTF-8", data[s - 4:e]) from None
        if len(_IDENTITIES) >= _MAX_IDENTITIES:
            _IDENTITIES.clear()
        _IDENTITIES[raw] = identity
    return identity


DECODERS[ID] = _dec_identity


class _Enrp:
    __slots__ = ()
    PPID: ClassVar[int] = codes.PPID_ENRP

    def _check_ids(self) -> None:
        check32("sender_id", self.sender_id)
        check32("receiver_id", self.receiver_id)

    @classmethod
    def _ids(cls, data: bytes, length: int, size: int = 12) -> tuple:
        if length < size:
            raise malformed(f"{cls.name} shorter than its {size - 4} bytes of fixed fields")
        return _IDS.unpack_from(data, 4)


@register
@dataclass(frozen=True, slots=True, repr=False)
class EnrpPresence(_Enrp, Message):
    """``pe_checksum`` SHOULD be present (RFC 5353 2.1) and may be None;
    ``reply_required`` is flag bit 0x01 (named in the text, not drawn)."""

    sender_id: int
    receiver_id: int
    pe_checksum: int | None
    server_info: ServerInformation | None = None
    reply_required: bool = False
    TYPE: ClassVar[int] = codes.ENRP_PRESENCE
    name: ClassVar[str] = "ENRP_PRESENCE"
    FLAGS: ClassVar[tuple[tuple[str, int], ...]] = (("reply_required", codes.FLAG_REPLY_REQUIRED),)

    def __post_init__(self) -> None:
        self._check_ids()
        if self.pe_checksum is not None:
            PeChecksum(self.pe_checksum)
        if self.server_info is not None and type(self.server_info) is not ServerInformation:
            raise ValueError(f"not a ServerInformation: {self.server_info!r}")

    def _body(self):
        parts = []
        if self.pe_checksum is not None:
            parts.append(PeChecksum(self.pe_checksum).encode())
        if self.server_info is not None:
            parts.append(self.server_info.encode())
        return _IDS.pack(self.sender_id, self.receiver_id), parts

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        sender, receiver = cls._ids(data, length)
        subs = walk(data, 12, length, 1, ctx)
        checksum, info = expect(subs, ((codes.PARAM_PE_CHECKSUM, "?"),
                                       (codes.PARAM_SERVER_INFORMATION, "?")),
                                data, length, cls.name)
        return cls._make(sender, receiver, None if checksum is None else checksum.value, info,
                   bool(flags & codes.FLAG_REPLY_REQUIRED))


class _IdsOnly(_Enrp):
    __slots__ = ()

    def __post_init__(self) -> None:
        self._check_ids()

    def _body(self):
        return _IDS.pack(self.sender_id, self.receiver_id), []

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        sender, receiver = cls._ids(data, length)
        subs = walk(data, 12, length, 1, ctx)
        expect(subs, (), data, length, cls.name)
        if cls.FLAGS:
            return cls._make(sender, receiver, bool(flags & cls.FLAGS[0][1]))
        return cls._make(sender, receiver)


@register
@dataclass(frozen=True, slots=True, repr=False)
class EnrpHandleTableRequest(_IdsOnly, Message):
    sender_id: int
    receiver_id: int
    own_children_only: bool = False
    TYPE: ClassVar[int] = codes.ENRP_HANDLE_TABLE_REQUEST
    name: ClassVar[str] = "ENRP_HANDLE_TABLE_REQUEST"
    FLAGS: ClassVar[tuple[tuple[str, int], ...]] = (
        ("own_children_only", codes.FLAG_OWN_CHILDREN_ONLY),)


@register
@dataclass(frozen=True, slots=True, repr=False)
class EnrpListRequest(_IdsOnly, Message):
    sender_id: int
    receiver_id: int
    TYPE: ClassVar[int] = codes.ENRP_LIST_REQUEST
    name: ClassVar[str] = "ENRP_LIST_REQUEST"


@dataclass(frozen=True, slots=True, repr=False)
class PoolEntry:
    """One pool of a handle table response: its handle and one or more PEs.

    ``identities`` is empty, or holds one item per PE: the authenticated
    identity the PE is bound to (or None), sent as a PE Identity parameter
    after the PE (rserpool extension, docs/enrp.md)."""

    pool_handle: bytes
    pool_elements: tuple[PoolElement, ...]
    identities: tuple[str | None, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.pool_handle, bytes) or not self.pool_handle:
            raise ValueError("pool_handle must be non-empty bytes")
        check_tuple(self, "pool_elements", PoolElement)
        if not self.pool_elements:
            raise ValueError("a pool entry needs at least one pool element")
        if not isinstance(self.identities, tuple):
            object.__setattr__(self, "identities", tuple(self.identities))
        if self.identities:
            if len(self.identities) != len(self.pool_elements):
                raise ValueError("identities must be empty or one per pool element")
            for identity in self.identities:
                check_identity(identity)
            if all(identity is None for identity in self.identities):
                object.__setattr__(self, "identities", ())

    def identity_of(self, index: int) -> str | None:
        return self.identities[index] if self.identities else None

    def __str__(self) -> str:
        pes = [str(pe) if self.identity_of(i) is None else f"{pe} identity={self.identity_of(i)!r}"
               for i, pe in enumerate(self.pool_elements)]
        return f"{format_handle(self.pool_handle)}: [{', '.join(pes)}]"

    __repr__ = __str__


_MK_ENTRY = fast_constructor(PoolEntry)


@register
@dataclass(frozen=True, slots=True, repr=False)
class EnrpHandleTableResponse(_Enrp, Message):
    """Flags M (``more``, 0x02) and R (``reject``, 0x01)."""

    sender_id: int
    receiver_id: int
    entries: tuple[PoolEntry, ...] = ()
    more: bool = False
    reject: bool = False
    TYPE: ClassVar[int] = codes.ENRP_HANDLE_TABLE_RESPONSE
    name: ClassVar[str] = "ENRP_HANDLE_TABLE_RESPONSE"
    FLAGS: ClassVar[tuple[tuple[str, int], ...]] = (
        ("more", codes.FLAG_MORE_TO_SEND), ("reject", codes.FLAG_REJECT))

    def __post_init__(self) -> None:
        self._check_ids()
        check_tuple(self, "entries", PoolEntry)

    def _body(self):
        parts = []
        for e in self.entries:
            parts.append(encode_pool_handle(e.pool_handle))
            if e.identities:
                for pe, identity in zip(e.pool_elements, e.identities):
                    parts.append(pe.encode())
                    if identity is not None:
                        parts.append(encode_identity(identity))
            else:
                parts.extend(pe.encode() for pe in e.pool_elements)
        return _IDS.pack(self.sender_id, self.receiver_id), parts

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        sender, receiver = cls._ids(data, length)
        entries = _entries_fast(data, length, ctx)
        if entries is None:
            entries = cls._entries(data, length, ctx)
        return cls._make(sender, receiver, tuple(entries), bool(flags & codes.FLAG_MORE_TO_SEND),
                         bool(flags & codes.FLAG_REJECT))

    @classmethod
    def _entries(cls, data: bytes, length: int, ctx: Ctx) -> list:
        """The pool entries through the generic ``walk``: every rule and
        error report of RFC 5354 section 3."""
        subs = walk(data, 12, length, 1, ctx)
        entries = []
        i, n = 0, len(subs)
        while i < n:
            if subs[i][0] != H:
                raise invalid(f"{cls.name}: a pool entry must start with a pool handle",
                              tlv_bytes(data, subs[i][2]))
            j = i + 1
            pes: list = []
            identities: list = []
            while j < n and subs[j][0] == PE:
                pes.append(subs[j][1])
                j += 1
                if j < n and subs[j][0] == ID:
                    identities.append(subs[j][1])
                    j += 1
                else:
                    identities.append(None)
            if not pes:
                raise malformed(f"{cls.name}: pool entry without a pool element")
            if j < n and subs[j][0] != H:
                raise invalid(f"{cls.name}: unexpected parameter 0x{subs[j][0]:04x}",
                              tlv_bytes(data, subs[j][2]))
            has_identity = any(identity is not None for identity in identities)
            entries.append(_MK_ENTRY(subs[i][1], tuple(pes), tuple(identities) if has_identity else ()))
            i = j
        return entries


def _entries_fast(data: bytes, length: int, ctx: Ctx) -> list | None:
    """The pool entries of an ENRP_HANDLE_TABLE_RESPONSE made only of Pool
    Handle, Pool Element and PE Identity parameters in their order, in one
    pass (no intermediate parameter list); None, with ``ctx`` as it was, for
    anything else (an unknown parameter, a fault): the generic path then
    decodes it, and reports what it must."""
    count0, unrecognized0 = ctx.count, ctx.unrecognized
    limits = ctx.limits
    max_parameters = limits.max_parameters
    max_handle = limits.max_pool_handle
    count = count0
    unpack = HDR.unpack_from
    dec_pe = DECODERS[PE]
    identities_seen = _IDENTITIES
    entries: list = []
    handle = None
    pes: list = []
    identities: list = []
    after_pe = False
    pos = 12
    try:
        while pos < length:
            if length - pos < 4:
                raise _Fallback
            ptype, plen = unpack(data, pos)
            end = pos + plen
            if plen < 4 or end > length:
                raise _Fallback
            count += 1
            if count > max_parameters:
                raise _Fallback
            if ptype == PE:
                if handle is None:
                    raise _Fallback
                ctx.count = count
                pes.append(dec_pe(data, pos + 4, end, 1, ctx))
                count = ctx.count
                identities.append(None)
                after_pe = True
            elif ptype == ID:
                if not after_pe:
                    raise _Fallback
                raw = data[pos + 4:end]
                identity = identities_seen.get(raw)
                if identity is None:  # the decoder checks it and keeps it
                    identity = _dec_identity(data, pos + 4, end, 1, ctx)
                identities[-1] = identity
                after_pe = False
            elif ptype == H:
                if handle is not None:
                    if not pes:
                        raise _Fallback
                    entries.append(_entry(handle, pes, identities))
                if not 0 < plen - 4 <= max_handle:
                    raise _Fallback
                handle = data[pos + 4:end]
                pes, identities = [], []
                after_pe = False
            else:
                raise _Fallback
            pos = (end + 3) & ~3
        if handle is not None:
            if not pes:
                raise _Fallback
            entries.append(_entry(handle, pes, identities))
    except (_Fallback, WireError):
        ctx.count, ctx.unrecognized = count0, unrecognized0
        return None
    ctx.count = count
    return entries


class _Fallback(Exception):
    """The fast path of ``_entries_fast`` does not apply."""


def _entry(handle: bytes, pes: list, identities: list) -> PoolEntry:
    for identity in identities:
        if identity is not None:
            return _MK_ENTRY(handle, tuple(pes), tuple(identities))
    return _MK_ENTRY(handle, tuple(pes), ())


@register
@dataclass(frozen=True, slots=True, repr=False)
class EnrpHandleUpdate(_Enrp, Message):
    """Update action ADD_PE (0) or DEL_PE (1); the reserved word is sent 0
    and ignored on receipt.  ``identity``: the authenticated identity the PE
    is bound to, sent as a PE Identity parameter after the PE (rserpool
    extension, docs/enrp.md), or None."""

    sender_id: int
    receiver_id: int
    action: int
    pool_handle: bytes
    pool_element: PoolElement
    identity: str | None = None
    TYPE: ClassVar[int] = codes.ENRP_HANDLE_UPDATE
    name: ClassVar[str] = "ENRP_HANDLE_UPDATE"

    def __post_init__(self) -> None:
        self._check_ids()
        if self.action not in codes.UPDATE_ACTION_NAMES:
            raise ValueError(f"update action must be ADD_PE (0) or DEL_PE (1): {self.action!r}")
        if not isinstance(self.pool_handle, bytes) or not self.pool_handle:
            raise ValueError("pool_handle must be non-empty bytes")
        if type(self.pool_element) is not PoolElement:
            raise ValueError(f"not a PoolElement: {self.pool_element!r}")
        check_identity(self.identity)

    def _body(self):
        parts = [encode_pool_handle(self.pool_handle), self.pool_element.encode()]
        if self.identity is not None:
            parts.append(encode_identity(self.identity))
        return _IDS_ACTION.pack(self.sender_id, self.receiver_id, self.action, 0), parts

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        if length < 16:
            raise malformed(f"{cls.name} shorter than its fixed fields")
        sender, receiver, action, _ = _IDS_ACTION.unpack_from(data, 4)
        if action not in codes.UPDATE_ACTION_NAMES:
            raise malformed(f"{cls.name}: unknown update action 0x{action:04x}")
        subs = walk(data, 16, length, 1, ctx)
        handle, pe, identity = expect(subs, ((H, "1"), (PE, "1"), (ID, "?")), data, length, cls.name)
        return cls._make(sender, receiver, action, handle, pe, identity)

    def __str__(self) -> str:
        return Message.__str__(self).replace(
            f"action={self.action}", f"action={codes.UPDATE_ACTION_NAMES[self.action]}")

    __repr__ = __str__


@register
@dataclass(frozen=True, slots=True, repr=False)
class EnrpListResponse(_Enrp, Message):
    """R flag (``reject``); Server Information of each known peer."""

    sender_id: int
    receiver_id: int
    servers: tuple[ServerInformation, ...] = ()
    reject: bool = False
    TYPE: ClassVar[int] = codes.ENRP_LIST_RESPONSE
    name: ClassVar[str] = "ENRP_LIST_RESPONSE"
    FLAGS: ClassVar[tuple[tuple[str, int], ...]] = (("reject", codes.FLAG_REJECT),)

    def __post_init__(self) -> None:
        self._check_ids()
        check_tuple(self, "servers", ServerInformation)

    def _body(self):
        return _IDS.pack(self.sender_id, self.receiver_id), [s.encode() for s in self.servers]

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        sender, receiver = cls._ids(data, length)
        subs = walk(data, 12, length, 1, ctx)
        (servers,) = expect(subs, ((codes.PARAM_SERVER_INFORMATION, "*"),),
                            data, length, cls.name)
        return cls._make(sender, receiver, servers, bool(flags & codes.FLAG_REJECT))


class _Takeover(_Enrp):
    __slots__ = ()

    def __post_init__(self) -> None:
        self._check_ids()
        check32("target_id", self.target_id)

    def _body(self):
        return _IDS_TARGET.pack(self.sender_id, self.receiver_id, self.target_id), []

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        if length < 16:
            raise malformed(f"{cls.name} shorter than its 12 bytes of fixed fields")
        sender, receiver, target = _IDS_TARGET.unpack_from(data, 4)
        subs = walk(data, 16, length, 1, ctx)
        expect(subs, (), data, length, cls.name)
        return cls._make(sender, receiver, target)


@register
@dataclass(frozen=True, slots=True, repr=False)
class EnrpInitTakeover(_Takeover, Message):
    sender_id: int
    receiver_id: int
    target_id: int
    TYPE: ClassVar[int] = codes.ENRP_INIT_TAKEOVER
    name: ClassVar[str] = "ENRP_INIT_TAKEOVER"


@register
@dataclass(frozen=True, slots=True, repr=False)
class EnrpInitTakeoverAck(_Takeover, Message):
    sender_id: int
    receiver_id: int
    target_id: int
    TYPE: ClassVar[int] = codes.ENRP_INIT_TAKEOVER_ACK
    name: ClassVar[str] = "ENRP_INIT_TAKEOVER_ACK"


@register
@dataclass(frozen=True, slots=True, repr=False)
class EnrpTakeoverServer(_Takeover, Message):
    sender_id: int
    receiver_id: int
    target_id: int
    TYPE: ClassVar[int] = codes.ENRP_TAKEOVER_SERVER
    name: ClassVar[str] = "ENRP_TAKEOVER_SERVER"


@register
@dataclass(frozen=True, slots=True, repr=False)
class EnrpError(_Enrp, Message):
    sender_id: int
    receiver_id: int
    error: OperationError
    TYPE: ClassVar[int] = codes.ENRP_ERROR
    name: ClassVar[str] = "ENRP_ERROR"

    def __post_init__(self) -> None:
        self._check_ids()
        if type(self.error) is not OperationError:
            raise ValueError(f"not an OperationError: {self.error!r}")

    def _body(self):
        return _IDS.pack(self.sender_id, self.receiver_id), [self.error.encode()]

    @classmethod
    def _decode(cls, data: bytes, flags: int, length: int, ctx: Ctx):
        sender, receiver = cls._ids(data, length)
        subs = walk(data, 12, length, 1, ctx)
        (error,) = expect(subs, ((codes.PARAM_OPERATION_ERROR, "1"),), data, length, cls.name)
        return cls._make(sender, receiver, error)
