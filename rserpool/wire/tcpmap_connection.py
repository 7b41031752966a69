"""TCP-mapping connection state (draft-ietf-rserpool-tcpmapping-03), sans-IO.

This module holds the connection layer of :mod:`rserpool.wire.tcpmap`:

* the events :meth:`TcpMapConnection.receive_data` returns
  (:class:`InitReceived`, :class:`MessageReceived`, :class:`AckReceived`,
  :class:`HeartbeatReceived`, :class:`HeartbeatAckReceived`) and the
  :data:`Event` union;
* :class:`TcpMapConnection`, the per-connection state (INIT flags both ways,
  TSN and stream sequence numbering, the mandatory ACKs, heartbeat
  bookkeeping) that a Twisted protocol drives.

It touches no socket and no clock; the chunks it reads and writes are those
of :mod:`rserpool.wire.tcpmap_chunks`.  Import both through
:mod:`rserpool.wire.tcpmap`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from rserpool.fastinit import fast_constructor
from rserpool.wire.tcpmap_chunks import (
    _ACK_TSN, _DATA_STRUCTS, _FIELD_POSITIONS, _HEADER, _PADDING, CHUNK_ACK, CHUNK_DATA,
    CHUNK_HEARTBEAT, CHUNK_HEARTBEAT_ACK, CHUNK_INIT, DATA_FLAG_UNORDERED, INIT_FLAG_MASK,
    INIT_OMIT_PPID, INIT_OMIT_STREAM, INIT_OMIT_TSN, MAX_CHUNK_SIZE, AckChunk, Chunk,
    ChunkDecoder, HeartbeatAckChunk, HeartbeatChunk, InitChunk, TcpMapError, _encode_heartbeat,
)

__all__ = [
    "InitReceived", "MessageReceived", "AckReceived", "HeartbeatReceived",
    "HeartbeatAckReceived", "Event", "TcpMapConnection",
]


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
        if omit_flags:
            self._omit = omit_flags
            self._layout = _DATA_STRUCTS[omit_flags]
            self._max_payload = MAX_CHUNK_SIZE - self._layout.size
        self._decoder = ChunkDecoder(max_chunk_size)
        self._stream_seq: dict[int, int] = {}
        self._recv_seq: dict[int, int] = {}
        self._pending: list[bytes] = []
        self._hb_outstanding: dict[bytes, float | None] = {}
        if max_outstanding_heartbeats != 16:
            self._max_hb = max_outstanding_heartbeats

    # Per-connection state whose start value is the same for every
    # connection: class attributes, set on the instance when it changes.
    _omit = 0
    _layout = _DATA_STRUCTS[0]
    _max_payload = MAX_CHUNK_SIZE - _DATA_STRUCTS[0].size
    _max_hb = 16
    _initiated = False
    _next_tsn = 0
    _unacked = 0
    _next_ack_tsn = 0
    _peer_init: int | None = None
    _recv_tsn = 0
    _hb_counter = 0
    last_received_at: float | None = None

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
    def buffered(self) -> int:
        """Bytes received of a chunk that is not complete yet (0: none started)."""
        return len(self._decoder._buf)

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
        if omit == 0 and not unordered and len(payload) <= self._max_payload \
                and 0 <= ppid < _SERIAL_32 and 0 <= stream_id < _SERIAL_16:
            # The common case (all fields sent, ordered): the general path
            # below, without its other branches.
            prefix = b"" if self._initiated else self.initiate()
            tsn = self._next_tsn
            self._next_tsn = (tsn + 1) % _SERIAL_32
            self._unacked += 1
            layout = self._layout
            length = layout.size + len(payload)
            stream_seq = self._stream_seq
            seq = stream_seq.get(stream_id, 0)
            stream_seq[stream_id] = (seq + 1) % _SERIAL_16
            chunk = layout.pack(CHUNK_DATA, 0, length, tsn, stream_id, seq, ppid) + payload + _PADDING[length & 3]
            return prefix + chunk if prefix else chunk
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
