"""The registrar's fast paths agree with the generic code they shortcut.

Each fast path (TCP-mapping DATA delivery, pre-encoded resolution answers,
the registration decoder, the handlespace's re-registration update) must
accept and reject exactly what the generic path does and produce equal
values and bytes.  Hypothesis draws valid and invalid inputs.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings, strategies as st

from rserpool.wire.tcpmap import (
    INIT_OMIT_PPID,
    INIT_OMIT_STREAM,
    INIT_OMIT_TSN,
    DataChunk,
    MessageReceived,
    TcpMapConnection,
    TcpMapError,
    decode_chunk,
    encode_chunk,
)

SETTINGS = settings(max_examples=150, deadline=None)


def _generic_delivery(chunks: list[DataChunk], omit: int) -> list[tuple]:
    """What the TCP mapping must deliver, computed from decode_chunk's DataChunks."""
    out, tsn, seqs = [], 0, {}
    for chunk in chunks:
        decoded = decode_chunk(encode_chunk(chunk), omit)
        if decoded.tsn is not None and decoded.tsn != tsn:
            return out + [("error",)]
        stream = decoded.stream_id or 0
        if decoded.unordered:
            seq = 0
        else:
            seq = seqs.get(stream, 0)
            if decoded.stream_seq is not None and decoded.stream_seq != seq:
                return out + [("error",)]
            seqs[stream] = (seq + 1) & 0xFFFF
        out.append((decoded.ppid or 0, decoded.payload, tsn, stream, seq, decoded.unordered))
        tsn += 1
    return out


@st.composite
def data_streams(draw):
    omit = draw(st.integers(0, 7))
    chunks = []
    for index in range(draw(st.integers(1, 6))):
        in_order = draw(st.booleans())
        chunks.append(DataChunk(
            draw(st.binary(max_size=12)),
            None if omit & INIT_OMIT_PPID else draw(st.sampled_from([0, 11, 12, 0xFFFFFFFF])),
            None if omit & INIT_OMIT_TSN else (index if in_order else draw(st.integers(0, 8))),
            None if omit & INIT_OMIT_STREAM else draw(st.integers(0, 2)),
            None if omit & INIT_OMIT_STREAM else draw(st.integers(0, 3)),
            draw(st.booleans()),
        ))
    return omit, chunks


@SETTINGS
@given(data_streams())
def test_data_delivery_matches_the_generic_chunk_decoder(stream):
    omit, chunks = stream
    connection = TcpMapConnection()
    connection.initiate()
    wire = bytes([1, omit, 0, 4]) + b"".join(encode_chunk(c) for c in chunks)
    expected = _generic_delivery(chunks, omit)
    try:
        events = connection.receive_data(wire)
    except TcpMapError:
        assert expected[-1] == ("error",)
        return
    assert expected[-1:] != [("error",)]
    delivered = [e for e in events if type(e) is MessageReceived]
    assert [(m.ppid, m.payload, m.tsn, m.stream_id, m.stream_seq, m.unordered) for m in delivered] == expected
    assert delivered == [MessageReceived(*values) for values in expected]
    ack = b"\x03\x00\x00\x04" if omit & INIT_OMIT_TSN else None
    acks = connection.data_to_send()
    if ack is not None:
        assert acks == ack * len(chunks)
    else:
        assert acks == b"".join(struct.pack("!BBHI", 3, 0, 8, i) for i in range(len(chunks)))

