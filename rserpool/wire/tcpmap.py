"""The RSerPool TCP mapping (draft-ietf-rserpool-tcpmapping-03), sans-IO.

ASAP and ENRP expect SCTP: message boundaries, a payload protocol identifier
(PPID 11 for ASAP, 12 for ENRP) and heartbeats.  Over TCP the draft frames
every message in an SCTP-like *chunk*::

    Type(8) Flags(8) Length(16) Value...  + 0-3 zero bytes of padding

``Length`` counts the 4-byte header and the value but not the padding.
Chunk types: 0 DATA, 1 INIT, 3 ACK, 4 HEARTBEAT, 5 HEARTBEAT ACK.

This module holds three layers, none of which touches a socket or a clock:

* the chunk codec: frozen dataclasses (:class:`DataChunk`, :class:`InitChunk`,
  :class:`AckChunk`, :class:`HeartbeatChunk`, :class:`HeartbeatAckChunk`,
  :class:`UnknownChunk`), :func:`encode_chunk` and :func:`decode_chunk`;
* :class:`ChunkDecoder`, an incremental stream decoder correct for any split
  or coalescing of the TCP byte stream, with a bounded buffer;
* :class:`TcpMapConnection`, the per-connection state (INIT flags both ways,
  TSN and stream sequence numbering, the mandatory ACKs, heartbeat
  bookkeeping) that a Twisted protocol drives.

UDP needs no mapping: one datagram carries exactly one ASAP message
(:func:`decode_datagram`).  Decisions where the draft is silent are listed
in ``docs/tcp-mapping.md``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from rserpool.wire.tlv import fast_constructor

if TYPE_CHECKING:  # pragma: no cover
    from rserpool.wire import Limits

__all__ = [
    "CHUNK_DATA", "CHUNK_INIT", "CHUNK_ACK", "CHUNK_HEARTBEAT", "CHUNK_HEARTBEAT_ACK",
    "INIT_OMIT_TSN", "INIT_OMIT_STREAM", "INIT_OMIT_PPID", "DATA_FLAG_UNORDERED",
    "HEARTBEAT_INFO_TYPE", "MAX_CHUNK_SIZE", "TcpMapError", "DataChunk", "InitChunk",
    "AckChunk", "HeartbeatChunk", "HeartbeatAckChunk", "UnknownChunk", "Chunk",
    "data_chunk_flags", "data_header_size", "encode_chunk", "decode_chunk", "ChunkDecoder",
    "InitReceived", "MessageReceived", "AckReceived", "HeartbeatReceived",
    "HeartbeatAckReceived", "Event", "TcpMapConnection", "decode_datagram", "encode_datagram",
]

CHUNK_DATA = 0
CHUNK_INIT = 1
CHUNK_ACK = 3
CHUNK_HEARTBEAT = 4
CHUNK_HEARTBEAT_ACK = 5

#: INIT flags: what the sender of the INIT leaves out of its later DATA chunks.
INIT_OMIT_TSN = 0x01
INIT_OMIT_STREAM = 0x02
INIT_OMIT_PPID = 0x04
INIT_FLAG_MASK = INIT_OMIT_TSN | INIT_OMIT_STREAM | INIT_OMIT_PPID

#: DATA flags ``Reserved(5) U R R``: the U bit is 0x04.
DATA_FLAG_UNORDERED = 0x04

#: The only parameter type of HEARTBEAT and HEARTBEAT ACK chunks.
HEARTBEAT_INFO_TYPE = 1

#: The 16-bit Length field caps a chunk at 65535 bytes (without padding).
MAX_CHUNK_SIZE = 0xFFFF

_CHUNK_NAMES = {
    CHUNK_DATA: "DATA",
    CHUNK_INIT: "INIT",
    CHUNK_ACK: "ACK",
    CHUNK_HEARTBEAT: "HEARTBEAT",
    CHUNK_HEARTBEAT_ACK: "HEARTBEAT_ACK",
}
_PPID_NAMES = {0: "none", 11: "ASAP", 12: "ENRP"}

_HEADER = struct.Struct("!BBH")
_HB_INFO = struct.Struct("!BBHHH")  # chunk header + Heartbeat Info TLV header
_ACK_TSN = struct.Struct("!BBHI")
_U32 = struct.Struct("!I")
_PADDING = (b"", b"\0\0\0", b"\0\0", b"\0")  # indexed by length % 4


class TcpMapError(Exception):
    """A TCP-mapping framing or protocol error.

    It is fatal to the connection: the byte stream can no longer be trusted
    to be in step, so the shell must close the TCP connection.  It is a type
    of its own, not a :class:`rserpool.wire.WireError`, because the reaction
    differs: a bad *message* inside a good DATA chunk is answered with an
    RFC 5354 Operation Error and the connection lives on; a bad *chunk*
    ends the connection.  ``detail`` says what went wrong.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# --------------------------------------------------------------------------
# Chunk values


@dataclass(frozen=True, slots=True)
class DataChunk:
    """A DATA chunk (type 0).

    A field is ``None`` when it is not carried on the wire (suppressed by the
    sender's INIT flags).  ``stream_id`` and ``stream_seq`` are carried or
    omitted together.  With the U bit set the stream sequence number is
    meaningless and is sent as 0.
    """

    payload: bytes
    ppid: int | None = None
    tsn: int | None = None
    stream_id: int | None = None
    stream_seq: int | None = None
    unordered: bool = False

    def __str__(self) -> str:
        parts = ["DATA"]
        if self.tsn is not None:
            parts.append(f"tsn={self.tsn}")
        if self.stream_id is not None:
            parts.append(f"stream={self.stream_id}/{self.stream_seq}")
        if self.unordered:
            parts.append("unordered")
        if self.ppid is not None:
            parts.append(f"ppid={self.ppid}({_PPID_NAMES.get(self.ppid, '?')})")
        parts.append(f"{len(self.payload)} bytes")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class InitChunk:
    """An INIT chunk (type 1): the flags say what later DATA chunks omit.

    ``flags`` keeps the raw byte; the five reserved high bits are ignored
    (:attr:`omit_flags` masks them off).
    """

    flags: int = 0

    @property
    def omit_flags(self) -> int:
        return self.flags & INIT_FLAG_MASK

    @property
    def omit_tsn(self) -> bool:
        return bool(self.flags & INIT_OMIT_TSN)

    @property
    def omit_stream(self) -> bool:
        return bool(self.flags & INIT_OMIT_STREAM)

    @property
    def omit_ppid(self) -> bool:
        return bool(self.flags & INIT_OMIT_PPID)

    def __str__(self) -> str:
        names = [
            name
            for bit, name in (
                (INIT_OMIT_TSN, "omit-tsn"),
                (INIT_OMIT_STREAM, "omit-stream"),
                (INIT_OMIT_PPID, "omit-ppid"),
            )
            if self.flags & bit
        ]
        return f"INIT flags=0x{self.flags:02x}" + (f" ({', '.join(names)})" if names else "")


@dataclass(frozen=True, slots=True)
class AckChunk:
    """An ACK chunk (type 3); ``tsn`` is the optional Cumulative TSN Ack."""

    tsn: int | None = None

    def __str__(self) -> str:
        return "ACK" if self.tsn is None else f"ACK tsn={self.tsn}"


@dataclass(frozen=True, slots=True)
class HeartbeatChunk:
    """A HEARTBEAT chunk (type 4): ``info`` is the sender-specific value of
    the Heartbeat Info TLV (type 1)."""

    info: bytes = b""

    def __str__(self) -> str:
        return f"HEARTBEAT info={self.info.hex() or '-'}"


@dataclass(frozen=True, slots=True)
class HeartbeatAckChunk:
    """A HEARTBEAT ACK chunk (type 5): echoes the HEARTBEAT's info."""

    info: bytes = b""

    def __str__(self) -> str:
        return f"HEARTBEAT_ACK info={self.info.hex() or '-'}"


@dataclass(frozen=True, slots=True)
class UnknownChunk:
    """A chunk of a reserved type (2, 6-255).

    The codec keeps it (its length is known, so framing is intact); the
    draft gives no rule for unknown types, and :class:`TcpMapConnection`
    treats one as a fatal protocol error.
    """

    type: int
    flags: int = 0
    value: bytes = b""

    def __str__(self) -> str:
        return f"UNKNOWN type={self.type} flags=0x{self.flags:02x} {len(self.value)} bytes"


Chunk = Union[DataChunk, InitChunk, AckChunk, HeartbeatChunk, HeartbeatAckChunk, UnknownChunk]


def chunk_name(chunk_type: int) -> str:
    return _CHUNK_NAMES.get(chunk_type, f"type {chunk_type}")


# --------------------------------------------------------------------------
# DATA layouts


def data_chunk_flags(chunk: DataChunk) -> int:
    """The INIT flags matching the fields ``chunk`` carries."""
    flags = 0
    if chunk.tsn is None:
        flags |= INIT_OMIT_TSN
    if chunk.stream_id is None:
        flags |= INIT_OMIT_STREAM
    if chunk.ppid is None:
        flags |= INIT_OMIT_PPID
    return flags


def _data_struct(omit: int) -> struct.Struct:
    fmt = "!BBH"
    if not omit & INIT_OMIT_TSN:
        fmt += "I"
    if not omit & INIT_OMIT_STREAM:
        fmt += "HH"
    if not omit & INIT_OMIT_PPID:
        fmt += "I"
    return struct.Struct(fmt)


_DATA_STRUCTS = tuple(_data_struct(omit) for omit in range(8))


def data_header_size(omit_flags: int) -> int:
    """Size of a DATA chunk's header (before user data) for these INIT flags."""
    return _DATA_STRUCTS[omit_flags & INIT_FLAG_MASK].size


def _field_positions(omit: int) -> tuple[int | None, int | None, int | None]:
    """Where the TSN, the stream identifier (the sequence number follows it)
    and the PPID sit in the fields unpacked with ``_DATA_STRUCTS[omit]``."""
    index, positions = 3, []
    for bit, width in ((INIT_OMIT_TSN, 1), (INIT_OMIT_STREAM, 2), (INIT_OMIT_PPID, 1)):
        positions.append(None if omit & bit else index)
        index += 0 if omit & bit else width
    return positions[0], positions[1], positions[2]


_FIELD_POSITIONS = tuple(_field_positions(omit) for omit in range(8))


def _build_data(fields: tuple[int, ...], omit: int, payload: bytes) -> DataChunk:
    """DataChunk from the unpacked header ``fields`` (type, flags, length, ...)."""
    t, s, p = _FIELD_POSITIONS[omit]
    return DataChunk(payload, None if p is None else fields[p], None if t is None else fields[t],
                     None if s is None else fields[s], None if s is None else fields[s + 1],
                     bool(fields[1] & DATA_FLAG_UNORDERED))


# --------------------------------------------------------------------------
# Encoding


def _check_uint(name: str, value: int, bits: int) -> None:
    if not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise ValueError(f"{name} must be an unsigned {bits}-bit integer, not {value!r}")


def _encode_data(chunk: DataChunk) -> bytes:
    if (chunk.stream_id is None) != (chunk.stream_seq is None):
        raise ValueError("stream_id and stream_seq are carried or omitted together")
    omit = data_chunk_flags(chunk)
    layout = _DATA_STRUCTS[omit]
    length = layout.size + len(chunk.payload)
    if length > MAX_CHUNK_SIZE:
        raise ValueError(f"DATA chunk of {length} bytes exceeds the 16-bit length field")
    values: list[int] = [CHUNK_DATA, DATA_FLAG_UNORDERED if chunk.unordered else 0, length]
    if chunk.tsn is not None:
        _check_uint("tsn", chunk.tsn, 32)
        values.append(chunk.tsn)
    if chunk.stream_id is not None:
        _check_uint("stream_id", chunk.stream_id, 16)
        _check_uint("stream_seq", chunk.stream_seq, 16)  # type: ignore[arg-type]
        values.extend((chunk.stream_id, chunk.stream_seq))  # type: ignore[arg-type]
    if chunk.ppid is not None:
        _check_uint("ppid", chunk.ppid, 32)
        values.append(chunk.ppid)
    return layout.pack(*values) + chunk.payload + _PADDING[length & 3]


def _encode_heartbeat(chunk_type: int, info: bytes) -> bytes:
    length = 8 + len(info)
    if length > MAX_CHUNK_SIZE:
        raise ValueError(f"heartbeat info of {len(info)} bytes is too long")
    return _HB_INFO.pack(chunk_type, 0, length, HEARTBEAT_INFO_TYPE, 4 + len(info)) + info + _PADDING[length & 3]


def encode_chunk(chunk: Chunk) -> bytes:
    """The wire bytes of one chunk, padded to a multiple of 4."""
    if isinstance(chunk, DataChunk):
        return _encode_data(chunk)
    if isinstance(chunk, InitChunk):
        _check_uint("INIT flags", chunk.flags, 8)
        return _HEADER.pack(CHUNK_INIT, chunk.flags, 4)
    if isinstance(chunk, AckChunk):
        if chunk.tsn is None:
            return _HEADER.pack(CHUNK_ACK, 0, 4)
        _check_uint("tsn", chunk.tsn, 32)
        return _ACK_TSN.pack(CHUNK_ACK, 0, 8, chunk.tsn)
    if isinstance(chunk, HeartbeatChunk):
        return _encode_heartbeat(CHUNK_HEARTBEAT, chunk.info)
    if isinstance(chunk, HeartbeatAckChunk):
        return _encode_heartbeat(CHUNK_HEARTBEAT_ACK, chunk.info)
    if isinstance(chunk, UnknownChunk):
        _check_uint("chunk type", chunk.type, 8)
        _check_uint("chunk flags", chunk.flags, 8)
        length = 4 + len(chunk.value)
        if length > MAX_CHUNK_SIZE:
            raise ValueError("chunk value too long")
        return _HEADER.pack(chunk.type, chunk.flags, length) + chunk.value + _PADDING[length & 3]
    raise TypeError(f"not a chunk: {chunk!r}")


# --------------------------------------------------------------------------
# Decoding


def _parse_heartbeat_info(name: str, buf: bytes, start: int, end: int) -> bytes:
    """The info of a HEARTBEAT (ACK) whose value is ``buf[start:end]``."""
    if end - start < 4:
        raise TcpMapError(f"{name} chunk too short for its Heartbeat Info parameter")
    info_type, info_length = struct.unpack_from("!HH", buf, start)
    if info_type != HEARTBEAT_INFO_TYPE:
        raise TcpMapError(f"{name} chunk carries parameter type {info_type}, not Heartbeat Info (1)")
    if info_length < 4 or info_length > end - start:
        raise TcpMapError(
            f"{name} Heartbeat Info length {info_length} does not fit the chunk value of {end - start} bytes"
        )
    # The chunk length may or may not count the info's own padding; anything
    # beyond that is malformed.
    if end - start - info_length > 3:
        raise TcpMapError(f"{name} chunk has {end - start - info_length} bytes after its Heartbeat Info")
    return bytes(buf[start + 4 : start + info_length])


_ACK_WITHOUT_TSN = AckChunk(None)


def _parse_control(chunk_type: int, flags: int, buf: bytes, start: int, end: int) -> Chunk:
    """Decode a non-DATA chunk whose header starts at ``start`` and whose
    unpadded end is ``end``."""
    length = end - start
    if chunk_type == CHUNK_INIT:
        if length != 4:
            raise TcpMapError(f"INIT chunk length must be 4, not {length}")
        return InitChunk(flags)
    if chunk_type == CHUNK_ACK:
        if length == 4:
            return _ACK_WITHOUT_TSN  # immutable: one shared value
        if length == 8:
            return AckChunk(_U32.unpack_from(buf, start + 4)[0])
        raise TcpMapError(f"ACK chunk length must be 4 or 8, not {length}")
    if chunk_type == CHUNK_HEARTBEAT:
        return HeartbeatChunk(_parse_heartbeat_info("HEARTBEAT", buf, start + 4, end))
    if chunk_type == CHUNK_HEARTBEAT_ACK:
        return HeartbeatAckChunk(_parse_heartbeat_info("HEARTBEAT_ACK", buf, start + 4, end))
    return UnknownChunk(chunk_type, flags, bytes(buf[start + 4 : end]))


def _parse_data(buf: bytes, start: int, end: int, omit: int) -> DataChunk:
    layout = _DATA_STRUCTS[omit]
    if end - start < layout.size:
        raise TcpMapError(
            f"DATA chunk length {end - start} is shorter than its {layout.size}-byte header "
            f"(INIT flags 0x{omit:02x})"
        )
    return _build_data(layout.unpack_from(buf, start), omit, bytes(buf[start + layout.size : end]))


def decode_chunk(data: bytes, omit_flags: int = 0) -> Chunk:
    """Decode exactly one chunk (with or without its padding).

    ``omit_flags`` are the INIT flags of the chunk's sender, which decide
    the DATA layout.  Raises :class:`TcpMapError` on any malformation.
    """
    data = bytes(data)
    if len(data) < 4:
        raise TcpMapError(f"chunk of {len(data)} bytes is shorter than a chunk header")
    chunk_type, flags, length = _HEADER.unpack_from(data)
    if length < 4:
        raise TcpMapError(f"chunk length {length} is less than 4")
    if length > len(data):
        raise TcpMapError(f"chunk length {length} exceeds the {len(data)} bytes given")
    if len(data) > ((length + 3) & ~3):
        raise TcpMapError(f"{len(data) - length} bytes after a chunk of length {length}")
    if chunk_type == CHUNK_DATA:
        return _parse_data(data, 0, length, omit_flags & INIT_FLAG_MASK)
    return _parse_control(chunk_type, flags, data, 0, length)


class ChunkDecoder:
    """Incremental decoder of one direction of a TCP-mapping byte stream.

    ``feed(data)`` returns every chunk completed by ``data``; bytes of an
    incomplete chunk wait in a buffer of at most ``max_chunk_size + 3``
    bytes.  The decoder follows the INIT flags of the stream's sender: an
    INIT is accepted only as the first chunk and changes the layout of the
    DATA chunks after it.  After a framing error every later call raises
    :class:`TcpMapError` too: the stream is out of step for good.
    """

    __slots__ = ("_buf", "_need", "_omit", "_layout", "_max", "_error", "_started", "chunks_decoded")

    def __init__(self, max_chunk_size: int = MAX_CHUNK_SIZE, omit_flags: int = 0) -> None:
        if not 8 <= max_chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"max_chunk_size must be within 8..{MAX_CHUNK_SIZE}")
        self._buf = bytearray()
        self._need = 4
        self._omit = omit_flags & INIT_FLAG_MASK
        self._layout = _DATA_STRUCTS[self._omit]
        self._max = max_chunk_size
        self._error: TcpMapError | None = None
        self._started = False
        self.chunks_decoded = 0

    @property
    def omit_flags(self) -> int:
        """The INIT flags in force for DATA chunks of this stream."""
        return self._omit

    @property
    def error(self) -> TcpMapError | None:
        """The framing error that broke this stream, if any."""
        return self._error

    @property
    def buffered(self) -> int:
        """Bytes waiting for the rest of their chunk."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Chunk]:
        """The chunks completed by ``data`` (any bytes-like object)."""
        return self._feed(data, False)

    def _feed(self, data: bytes, raw: bool) -> list[Any]:
        """With ``raw``, a DATA chunk is returned as the tuple
        ``(header fields, payload, omit flags)`` (the connection's fast path)."""
        if self._error is not None:
            raise TcpMapError(f"stream unusable after a framing error: {self._error.detail}")
        buf = self._buf
        if buf:
            if len(buf) + len(data) < self._need:
                buf += data
                return []
            buf += data
            work = bytes(buf)
            buf.clear()
        else:
            if not data:
                return []
            work = data if type(data) is bytes else bytes(data)
        try:
            chunks, offset = self._parse(work, raw)
        except TcpMapError as exc:
            self._error = exc
            self._buf = bytearray()
            raise
        if offset < len(work):
            self._buf = bytearray(memoryview(work)[offset:])
        return chunks

    def _parse(self, work: bytes, raw: bool) -> tuple[list[Any], int]:
        out: list[Any] = []
        offset = 0
        size = len(work)
        limit = self._max
        unpack_header = _HEADER.unpack_from
        layout = self._layout
        need = 4
        while size - offset >= 4:
            chunk_type, flags, length = unpack_header(work, offset)
            if length < 4:
                raise TcpMapError(f"chunk length {length} is less than 4 (chunk {self.chunks_decoded})")
            if length > limit:
                raise TcpMapError(
                    f"{chunk_name(chunk_type)} chunk length {length} exceeds the limit of {limit} bytes"
                )
            total = (length + 3) & ~3
            if size - offset < total:
                need = total
                break
            end = offset + length
            if chunk_type == CHUNK_DATA:
                hsize = layout.size
                if length < hsize:
                    raise TcpMapError(
                        f"DATA chunk length {length} is shorter than its {hsize}-byte header "
                        f"(INIT flags 0x{self._omit:02x})"
                    )
                if raw:
                    chunk: Any = (layout.unpack_from(work, offset), work[offset + hsize : end], self._omit)
                else:
                    chunk = _build_data(layout.unpack_from(work, offset), self._omit, work[offset + hsize : end])
            else:
                chunk = _parse_control(chunk_type, flags, work, offset, end)
                if chunk_type == CHUNK_INIT:
                    if self._started:
                        raise TcpMapError("INIT chunk after the start of the stream")
                    self._omit = flags & INIT_FLAG_MASK
                    layout = self._layout = _DATA_STRUCTS[self._omit]
            self._started = True
            self.chunks_decoded += 1
            out.append(chunk)
            offset += total
        self._need = need
        return out, offset


# --------------------------------------------------------------------------
# Connection events


@dataclass(frozen=True, slots=True)
class InitReceived:
    """The peer's INIT: ``flags`` (masked) say what its DATA chunks omit."""

    flags: int


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A DATA chunk delivered to the upper layer (its ACK is already queued).

    Omitted fields are filled in as the draft says: the TSN (and, with the
    stream word omitted, the stream sequence number) from the chunk's
    position, stream 0, PPID 0.
    """

    ppid: int
    payload: bytes
    tsn: int
    stream_id: int = 0
    stream_seq: int = 0
    unordered: bool = False


@dataclass(frozen=True, slots=True)
class AckReceived:
    """The peer delivered our DATA chunk ``tsn`` to its upper layer."""

    tsn: int


@dataclass(frozen=True, slots=True)
class HeartbeatReceived:
    """The peer sent a HEARTBEAT; the HEARTBEAT ACK is already queued."""

    info: bytes


@dataclass(frozen=True, slots=True)
class HeartbeatAckReceived:
    """A HEARTBEAT ACK.  ``rtt`` is set when it answers one of our
    outstanding heartbeats and both times were given."""

    info: bytes
    rtt: float | None = None
    solicited: bool = True


_MAKE_MESSAGE = fast_constructor(MessageReceived)  # fields already checked by _handle_data
_MAKE_ACK_RECEIVED = fast_constructor(AckReceived)
Event = Union[InitReceived, MessageReceived, AckReceived, HeartbeatReceived, HeartbeatAckReceived]

_SERIAL_32 = 1 << 32
_SERIAL_16 = 1 << 16


class TcpMapConnection:
    """The state of one TCP-mapping connection (both directions), sans-IO.

    Outgoing: :meth:`initiate` (our INIT), :meth:`send_message` (DATA,
    TSNs from 0, per-stream sequence numbers), :meth:`heartbeat`.  Each
    returns the bytes to write.  Incoming: :meth:`receive_data` returns
    events and queues the replies the draft makes mandatory (one ACK per
    delivered DATA chunk, one HEARTBEAT ACK per HEARTBEAT); the shell
    writes :meth:`data_to_send` after handling the events.

    Any :class:`TcpMapError` from :meth:`receive_data` is fatal: the
    connection is marked failed and the shell must close it.
    """

    def __init__(
        self,
        *,
        omit_flags: int = 0,
        max_chunk_size: int = MAX_CHUNK_SIZE,
        max_outstanding_heartbeats: int = 16,
    ) -> None:
        if omit_flags & ~INIT_FLAG_MASK:
            raise ValueError(f"unknown INIT flags 0x{omit_flags:02x}")
        if max_outstanding_heartbeats < 1:
            raise ValueError("max_outstanding_heartbeats must be at least 1")
        self._omit = omit_flags
        self._layout = _DATA_STRUCTS[omit_flags]
        self._decoder = ChunkDecoder(max_chunk_size)
        self._max_payload = MAX_CHUNK_SIZE - self._layout.size
        self._initiated = False
        self._next_tsn = 0
        self._stream_seq: dict[int, int] = {}
        self._unacked = 0
        self._next_ack_tsn = 0
        self._peer_init: int | None = None
        self._recv_tsn = 0
        self._recv_seq: dict[int, int] = {}
        self._pending: list[bytes] = []
        self._hb_counter = 0
        self._hb_outstanding: dict[bytes, float | None] = {}
        self._max_hb = max_outstanding_heartbeats
        self.last_received_at: float | None = None

    # -- state -----------------------------------------------------------

    @property
    def omit_flags(self) -> int:
        """Our INIT flags (what our DATA chunks leave out)."""
        return self._omit

    @property
    def peer_omit_flags(self) -> int:
        """The peer's INIT flags (0 until an INIT arrives or if none does)."""
        return self._decoder.omit_flags

    @property
    def peer_initiated(self) -> bool:
        return self._peer_init is not None

    @property
    def unacked(self) -> int:
        """DATA chunks we sent that the peer has not acknowledged."""
        return self._unacked

    @property
    def missed_heartbeats(self) -> int:
        """Our heartbeats not (yet) answered since the last answered one."""
        return len(self._hb_outstanding)

    @property
    def failed(self) -> TcpMapError | None:
        return self._decoder.error

    # -- sending -----------------------------------------------------------

    def initiate(self) -> bytes:
        """Our INIT chunk: the first bytes either side writes.

        :meth:`send_message`, :meth:`heartbeat` and :meth:`data_to_send`
        prefix it themselves if this was not called first."""
        if self._initiated:
            raise ValueError("INIT already sent on this connection")
        self._initiated = True
        return _HEADER.pack(CHUNK_INIT, self._omit, 4)

    def send_message(self, ppid: int, payload: bytes, *, stream_id: int = 0, unordered: bool = False) -> bytes:
        """The DATA chunk carrying ``payload``."""
        omit = self._omit
        if omit == 0 and not unordered and self._initiated and len(payload) <= self._max_payload \
                and 0 <= ppid < _SERIAL_32 and 0 <= stream_id < _SERIAL_16:
            # The common case (all fields sent, ordered, INIT already
            # sent): the general path below, without its other branches.
            tsn = self._next_tsn
            self._next_tsn = (tsn + 1) % _SERIAL_32
            self._unacked += 1
            layout = self._layout
            length = layout.size + len(payload)
            stream_seq = self._stream_seq
            seq = stream_seq.get(stream_id, 0)
            stream_seq[stream_id] = (seq + 1) % _SERIAL_16
            return layout.pack(CHUNK_DATA, 0, length, tsn, stream_id, seq, ppid) + payload + _PADDING[length & 3]
        if len(payload) > self._max_payload:
            raise ValueError(f"message of {len(payload)} bytes does not fit one DATA chunk")
        if omit & INIT_OMIT_PPID and ppid:
            raise ValueError(f"PPID {ppid} cannot be sent: this connection omits the PPID")
        if omit & INIT_OMIT_STREAM and stream_id:
            raise ValueError(f"stream {stream_id} cannot be used: this connection omits stream numbers")
        if not 0 <= ppid < _SERIAL_32 or not 0 <= stream_id < _SERIAL_16:
            raise ValueError("ppid or stream_id out of range")
        prefix = b"" if self._initiated else self.initiate()
        tsn = self._next_tsn
        self._next_tsn = (tsn + 1) % _SERIAL_32
        self._unacked += 1
        length = self._layout.size + len(payload)
        flags = DATA_FLAG_UNORDERED if unordered else 0
        if omit == 0:
            if unordered:
                seq = 0
            else:
                seq = self._stream_seq.get(stream_id, 0)
                self._stream_seq[stream_id] = (seq + 1) % _SERIAL_16
            header = self._layout.pack(CHUNK_DATA, flags, length, tsn, stream_id, seq, ppid)
        else:
            values = [CHUNK_DATA, flags, length]
            if not omit & INIT_OMIT_TSN:
                values.append(tsn)
            if not omit & INIT_OMIT_STREAM:
                if unordered:
                    seq = 0
                else:
                    seq = self._stream_seq.get(stream_id, 0)
                    self._stream_seq[stream_id] = (seq + 1) % _SERIAL_16
                values += (stream_id, seq)
            elif not unordered:
                self._stream_seq[0] = (self._stream_seq.get(0, 0) + 1) % _SERIAL_16
            if not omit & INIT_OMIT_PPID:
                values.append(ppid)
            header = self._layout.pack(*values)
        return prefix + header + payload + _PADDING[length & 3]

    def heartbeat(self, info: bytes | None = None, *, now: float | None = None) -> bytes:
        """A HEARTBEAT chunk.  Without ``info`` a fresh 8-byte counter is
        used.  The heartbeat counts as outstanding (see
        :attr:`missed_heartbeats`) until its HEARTBEAT ACK arrives."""
        if info is None:
            info = self._hb_counter.to_bytes(8, "big")
            self._hb_counter += 1
        outstanding = self._hb_outstanding
        outstanding.pop(info, None)
        outstanding[info] = now
        while len(outstanding) > self._max_hb:
            del outstanding[next(iter(outstanding))]
        prefix = b"" if self._initiated else self.initiate()
        return prefix + _encode_heartbeat(CHUNK_HEARTBEAT, info)

    def data_to_send(self) -> bytes:
        """Bytes queued by :meth:`receive_data` (ACKs, HEARTBEAT ACKs)."""
        if not self._pending:
            return b""
        data = b"".join(self._pending)
        self._pending.clear()
        return data if self._initiated else self.initiate() + data

    # -- receiving ---------------------------------------------------------

    def receive_data(self, data: bytes, now: float | None = None) -> list[Event]:
        """Feed bytes from the peer; return the events they complete."""
        items = self._decoder._feed(data, True)
        if now is not None and data:
            self.last_received_at = now
        events: list[Event] = []
        append = events.append
        try:
            for item in items:
                if type(item) is tuple:
                    append(self._handle_data(*item))
                else:
                    append(self._handle(item, now))
        except TcpMapError as exc:
            self._decoder._error = exc
            raise
        return events

    def _handle(self, chunk: Chunk, now: float | None) -> Event:
        if type(chunk) is AckChunk:
            return self._handle_ack(chunk)
        if type(chunk) is HeartbeatChunk:
            self._pending.append(_encode_heartbeat(CHUNK_HEARTBEAT_ACK, chunk.info))
            return HeartbeatReceived(chunk.info)
        if type(chunk) is HeartbeatAckChunk:
            return self._handle_heartbeat_ack(chunk, now)
        if type(chunk) is InitChunk:
            self._peer_init = chunk.omit_flags
            return InitReceived(chunk.omit_flags)
        raise TcpMapError(f"unknown chunk type {chunk.type}")  # type: ignore[union-attr]

    def _handle_data(self, fields: tuple[int, ...], payload: bytes, omit: int) -> MessageReceived:
        """Deliver one DATA chunk (header ``fields`` as unpacked with the
        layout of INIT flags ``omit``) and queue its ACK."""
        tsn = self._recv_tsn
        if omit == 0:
            _, flags, _, sent_tsn, stream_id, sent_seq, ppid = fields
        else:  # omitted fields: no TSN/sequence to check, stream 0, PPID 0
            t, s, p = _FIELD_POSITIONS[omit]
            flags = fields[1]
            sent_tsn = None if t is None else fields[t]
            stream_id, sent_seq = (0, None) if s is None else (fields[s], fields[s + 1])
            ppid = 0 if p is None else fields[p]
        if sent_tsn is not None and sent_tsn != tsn:
            raise TcpMapError(f"DATA chunk TSN {sent_tsn} out of sequence (expected {tsn})")
        self._recv_tsn = (tsn + 1) & 0xFFFFFFFF
        unordered = bool(flags & DATA_FLAG_UNORDERED)
        if unordered:
            seq = 0
        else:
            recv_seq = self._recv_seq
            seq = recv_seq.get(stream_id, 0)
            if sent_seq is not None and sent_seq != seq:
                raise TcpMapError(
                    f"DATA chunk stream {stream_id} sequence {sent_seq} out of order (expected {seq})"
                )
            recv_seq[stream_id] = (seq + 1) & 0xFFFF
        if self._decoder._omit & INIT_OMIT_TSN:
            self._pending.append(b"\x03\x00\x00\x04")
        else:
            self._pending.append(_ACK_TSN.pack(CHUNK_ACK, 0, 8, tsn))
        return _MAKE_MESSAGE(ppid, payload, tsn, stream_id, seq, unordered)

    def _handle_ack(self, chunk: AckChunk) -> AckReceived:
        if self._unacked == 0:
            raise TcpMapError("ACK chunk with no DATA chunk outstanding")
        tsn = self._next_ack_tsn
        if chunk.tsn is not None and chunk.tsn != tsn:
            raise TcpMapError(f"ACK chunk for TSN {chunk.tsn}, expected {tsn}")
        self._next_ack_tsn = (tsn + 1) % _SERIAL_32
        self._unacked -= 1
        return _MAKE_ACK_RECEIVED(tsn)  # tsn: a 32-bit counter of ours

    def _handle_heartbeat_ack(self, chunk: HeartbeatAckChunk, now: float | None) -> HeartbeatAckReceived:
        outstanding = self._hb_outstanding
        if chunk.info not in outstanding:
            return HeartbeatAckReceived(chunk.info, None, solicited=False)
        # An answer also settles every older heartbeat.
        while True:
            info, sent_at = next(iter(outstanding.items()))
            del outstanding[info]
            if info == chunk.info:
                break
        rtt = None if now is None or sent_at is None else now - sent_at
        return HeartbeatAckReceived(chunk.info, rtt)


# --------------------------------------------------------------------------
# UDP


def decode_datagram(data: bytes, ppid: int, limits: Limits | None = None) -> Any:
    """Decode one UDP datagram: UDP needs no mapping, a datagram carries
    exactly one ASAP (or ENRP) message, so this is
    :func:`rserpool.wire.decode_message`; its errors are ``WireError``."""
    from rserpool.wire import DEFAULT_LIMITS, decode_message

    return decode_message(data, ppid, DEFAULT_LIMITS if limits is None else limits)


def encode_datagram(message: Any) -> bytes:
    """The UDP payload for ``message``: just :func:`rserpool.wire.encode_message`."""
    from rserpool.wire import encode_message

    return encode_message(message)
