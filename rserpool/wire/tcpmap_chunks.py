"""TCP-mapping chunks: the chunk model and codec (draft-ietf-rserpool-tcpmapping-03).

This module holds the chunk layer of :mod:`rserpool.wire.tcpmap`:

* the chunk type, INIT flag and DATA flag constants and :class:`TcpMapError`;
* one frozen dataclass per chunk type (:class:`DataChunk`, :class:`InitChunk`,
  :class:`AckChunk`, :class:`HeartbeatChunk`, :class:`HeartbeatAckChunk`,
  :class:`UnknownChunk`) and the :data:`Chunk` union;
* the DATA layouts per set of INIT flags (:func:`data_chunk_flags`,
  :func:`data_header_size`);
* :func:`encode_chunk` and :func:`decode_chunk` for one chunk;
* :class:`ChunkDecoder`, the incremental decoder of one direction of the
  byte stream, correct for any split or coalescing, with a bounded buffer.

The connection state on top of it is in :mod:`rserpool.wire.tcpmap_connection`;
import both through :mod:`rserpool.wire.tcpmap`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Union

__all__ = [
    "CHUNK_DATA", "CHUNK_INIT", "CHUNK_ACK", "CHUNK_HEARTBEAT", "CHUNK_HEARTBEAT_ACK",
    "INIT_OMIT_TSN", "INIT_OMIT_STREAM", "INIT_OMIT_PPID", "INIT_FLAG_MASK",
    "DATA_FLAG_UNORDERED", "HEARTBEAT_INFO_TYPE", "MAX_CHUNK_SIZE", "TcpMapError",
    "DataChunk", "InitChunk", "AckChunk", "HeartbeatChunk", "HeartbeatAckChunk",
    "UnknownChunk", "Chunk", "chunk_name", "data_chunk_flags", "data_header_size",
    "encode_chunk", "decode_chunk", "ChunkDecoder",
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
    draft gives no rule for unknown types, and
    :class:`rserpool.wire.tcpmap.TcpMapConnection` treats one as a fatal
    protocol error.
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
_unpack_header = _HEADER.unpack_from


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
        # The chunks of ``work`` (one loop, no call per read).
        out: list[Any] = []
        offset = 0
        size = len(work)
        need = 4
        try:
            while size - offset >= 4:
                chunk_type, flags, length = _unpack_header(work, offset)
                if length < 4:
                    raise TcpMapError(f"chunk length {length} is less than 4 (chunk {self.chunks_decoded})")
                if length > self._max:
                    raise TcpMapError(
                        f"{chunk_name(chunk_type)} chunk length {length} exceeds the limit of {self._max} bytes"
                    )
                total = (length + 3) & ~3
                if size - offset < total:
                    need = total
                    break
                end = offset + length
                if chunk_type == CHUNK_DATA:
                    layout = self._layout
                    hsize = layout.size
                    if length < hsize:
                        raise TcpMapError(
                            f"DATA chunk length {length} is shorter than its {hsize}-byte header "
                            f"(INIT flags 0x{self._omit:02x})"
                        )
                    if raw:
                        chunk: Any = (layout.unpack_from(work, offset), work[offset + hsize : end], self._omit)
                    else:
                        chunk = _build_data(layout.unpack_from(work, offset), self._omit,
                                            work[offset + hsize : end])
                else:
                    chunk = _parse_control(chunk_type, flags, work, offset, end)
                    if chunk_type == CHUNK_INIT:
                        if self._started:
                            raise TcpMapError("INIT chunk after the start of the stream")
                        self._omit = flags & INIT_FLAG_MASK
                        self._layout = _DATA_STRUCTS[self._omit]
                self._started = True
                self.chunks_decoded += 1
                out.append(chunk)
                offset += total
        except TcpMapError as exc:
            self._error = exc
            self._buf = bytearray()
            raise
        self._need = need
        if offset < size:
            self._buf = bytearray(memoryview(work)[offset:])
        return out
