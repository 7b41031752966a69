"""The RSerPool TCP mapping (draft-ietf-rserpool-tcpmapping-03), sans-IO.

ASAP and ENRP expect SCTP: message boundaries, a payload protocol identifier
(PPID 11 for ASAP, 12 for ENRP) and heartbeats.  Over TCP the draft frames
every message in an SCTP-like *chunk*::

    Type(8) Flags(8) Length(16) Value...  + 0-3 zero bytes of padding

``Length`` counts the 4-byte header and the value but not the padding.
Chunk types: 0 DATA, 1 INIT, 3 ACK, 4 HEARTBEAT, 5 HEARTBEAT ACK.

This module is the public face of the mapping: import its names from here.
It holds the UDP helpers itself and re-exports two layers, neither of which
touches a socket or a clock:

* :mod:`rserpool.wire.tcpmap_chunks`, the chunk codec: frozen dataclasses
  (:class:`DataChunk`, :class:`InitChunk`, :class:`AckChunk`,
  :class:`HeartbeatChunk`, :class:`HeartbeatAckChunk`,
  :class:`UnknownChunk`), :func:`encode_chunk` and :func:`decode_chunk`, and
  :class:`ChunkDecoder`, an incremental stream decoder correct for any split
  or coalescing of the TCP byte stream, with a bounded buffer;
* :mod:`rserpool.wire.tcpmap_connection`: :class:`TcpMapConnection`, the
  per-connection state (INIT flags both ways, TSN and stream sequence
  numbering, the mandatory ACKs, heartbeat bookkeeping) that a Twisted
  protocol drives, and the events it returns.

UDP needs no mapping: one datagram carries exactly one ASAP message
(:func:`decode_datagram`).  Decisions where the draft is silent are listed
in ``docs/tcp-mapping.md``.
"""

from __future__ import annotations

from typing import Any

from rserpool.wire.errors import DEFAULT_LIMITS, Limits
from rserpool.wire.messages import decode_message, encode_message
from rserpool.wire.tcpmap_chunks import (
    CHUNK_ACK, CHUNK_DATA, CHUNK_HEARTBEAT, CHUNK_HEARTBEAT_ACK, CHUNK_INIT, DATA_FLAG_UNORDERED,
    HEARTBEAT_INFO_TYPE, INIT_OMIT_PPID, INIT_OMIT_STREAM, INIT_OMIT_TSN, MAX_CHUNK_SIZE, AckChunk,
    Chunk, ChunkDecoder, DataChunk, HeartbeatAckChunk, HeartbeatChunk, InitChunk, TcpMapError,
    UnknownChunk, data_chunk_flags, data_header_size, decode_chunk, encode_chunk,
)
from rserpool.wire.tcpmap_connection import (
    AckReceived, Event, HeartbeatAckReceived, HeartbeatReceived, InitReceived, MessageReceived,
    TcpMapConnection,
)

__all__ = [
    "CHUNK_DATA", "CHUNK_INIT", "CHUNK_ACK", "CHUNK_HEARTBEAT", "CHUNK_HEARTBEAT_ACK",
    "INIT_OMIT_TSN", "INIT_OMIT_STREAM", "INIT_OMIT_PPID", "DATA_FLAG_UNORDERED",
    "HEARTBEAT_INFO_TYPE", "MAX_CHUNK_SIZE", "TcpMapError", "DataChunk", "InitChunk",
    "AckChunk", "HeartbeatChunk", "HeartbeatAckChunk", "UnknownChunk", "Chunk",
    "data_chunk_flags", "data_header_size", "encode_chunk", "decode_chunk", "ChunkDecoder",
    "InitReceived", "MessageReceived", "AckReceived", "HeartbeatReceived",
    "HeartbeatAckReceived", "Event", "TcpMapConnection", "decode_datagram", "encode_datagram",
]


# --------------------------------------------------------------------------
# UDP


def decode_datagram(data: bytes, ppid: int, limits: Limits | None = None) -> Any:
    """Decode one UDP datagram: UDP needs no mapping, a datagram carries
    exactly one ASAP (or ENRP) message, so this is
    :func:`rserpool.wire.decode_message`; its errors are ``WireError``."""
    return decode_message(data, ppid, DEFAULT_LIMITS if limits is None else limits)


def encode_datagram(message: Any) -> bytes:
    """The UDP payload for ``message``: just :func:`rserpool.wire.encode_message`."""
    return encode_message(message)
