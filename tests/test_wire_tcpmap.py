"""Tests of rserpool.wire.tcpmap: the TCP mapping of draft-ietf-rserpool-tcpmapping-03.

Golden vectors are built by hand from the draft's figures (section 3).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rserpool.wire import tcpmap
from rserpool.wire.tcpmap import (
    AckChunk,
    AckReceived,
    ChunkDecoder,
    DataChunk,
    HeartbeatAckChunk,
    HeartbeatAckReceived,
    HeartbeatChunk,
    HeartbeatReceived,
    InitChunk,
    InitReceived,
    MessageReceived,
    TcpMapConnection,
    TcpMapError,
    UnknownChunk,
    data_chunk_flags,
    decode_chunk,
    encode_chunk,
)

HELLO = b"hello"  # 5 bytes: needs 3 bytes of padding everywhere below

# ---------------------------------------------------------------------------
# Golden vectors (hand-built from the figures of section 3)

GOLDEN = [
    # 3.3 INIT: Type=1, flags reservd|P|S|T, Chunk Length = 4
    ("init-0", InitChunk(0), 0, "01 00 00 04"),
    ("init-5", InitChunk(0x05), 0, "01 05 00 04"),
    ("init-7", InitChunk(0x07), 0, "01 07 00 04"),
    # 3.2 / example 1: INIT flags 0x00, TSN, stream id/seq and PPID present.
    (
        "data-ex1",
        DataChunk(HELLO, ppid=11, tsn=0, stream_id=0, stream_seq=0),
        0,
        "00 00 00 15  00 00 00 00  00 00 00 00  00 00 00 0b  68 65 6c 6c 6f 00 00 00",
    ),
    (
        "data-ex1-values",
        DataChunk(b"\x01\x02\x03\x04", ppid=12, tsn=0x01020304, stream_id=7, stream_seq=0x1234),
        0,
        "00 00 00 14  01 02 03 04  00 07 12 34  00 00 00 0c  01 02 03 04",
    ),
    # U bit: Reserved(5) U R R -> 0x04
    (
        "data-unordered",
        DataChunk(b"ab", ppid=11, tsn=3, stream_id=2, stream_seq=0, unordered=True),
        0,
        "00 04 00 12  00 00 00 03  00 02 00 00  00 00 00 0b  61 62 00 00",
    ),
    # example 2: INIT flags 0x01: no TSN
    (
        "data-ex2",
        DataChunk(HELLO, ppid=11, stream_id=1, stream_seq=2),
        0x01,
        "00 00 00 11  00 01 00 02  00 00 00 0b  68 65 6c 6c 6f 00 00 00",
    ),
    # INIT flags 0x02: no stream word
    ("data-omit-stream", DataChunk(HELLO, ppid=12, tsn=9), 0x02, "00 00 00 11  00 00 00 09  00 00 00 0c  68 65 6c 6c 6f 00 00 00"),
    # example 3: INIT flags 0x05: stream word only
    ("data-ex3", DataChunk(HELLO, stream_id=1, stream_seq=2), 0x05, "00 00 00 0d  00 01 00 02  68 65 6c 6c 6f 00 00 00"),
    # example 4: INIT flags 0x07: bare user data
    ("data-ex4", DataChunk(HELLO), 0x07, "00 00 00 09  68 65 6c 6c 6f 00 00 00"),
    ("data-ex4-aligned", DataChunk(b"abcd"), 0x07, "00 00 00 08  61 62 63 64"),
    # 3.4 ACK: length 8 with the Cumulative TSN Ack, 4 without
    ("ack-tsn", AckChunk(0x0A0B0C0D), 0, "03 00 00 08  0a 0b 0c 0d"),
    ("ack-bare", AckChunk(None), 0, "03 00 00 04"),
    # 3.5 HEARTBEAT: Heartbeat Info TLV type 1, HB Info Length = 4 + info
    ("heartbeat", HeartbeatChunk(b"abc"), 0, "04 00 00 0b  00 01 00 07  61 62 63 00"),
    ("heartbeat-8", HeartbeatChunk(bytes(range(8))), 0, "04 00 00 10  00 01 00 0c  00 01 02 03 04 05 06 07"),
    ("heartbeat-empty", HeartbeatChunk(b""), 0, "04 00 00 08  00 01 00 04"),
    # 3.6 HEARTBEAT ACK
    ("heartbeat-ack", HeartbeatAckChunk(b"abc"), 0, "05 00 00 0b  00 01 00 07  61 62 63 00"),
    # a reserved chunk type is kept as an opaque value
    ("unknown-2", UnknownChunk(2, 0x80, b"xy"), 0, "02 80 00 06  78 79 00 00"),
]


@pytest.mark.parametrize("name,chunk,omit,hexdata", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_encode_and_decode(name: str, chunk: tcpmap.Chunk, omit: int, hexdata: str) -> None:
    wire = bytes.fromhex(hexdata)
    assert len(wire) % 4 == 0
    if isinstance(chunk, DataChunk):
        assert data_chunk_flags(chunk) == omit
    assert encode_chunk(chunk) == wire
    assert decode_chunk(wire, omit) == chunk
    # the stream decoder agrees (an INIT first sets the DATA layout)
    decoder = ChunkDecoder(omit_flags=omit)
    assert decoder.feed(wire) == [chunk]
    assert str(chunk)  # readable


def test_decode_tolerates_missing_and_nonzero_padding() -> None:
    # Padding is ignored on receipt, whatever its value.
    assert decode_chunk(bytes.fromhex("00 00 00 09 68 65 6c 6c 6f"), 7) == DataChunk(HELLO)
    assert decode_chunk(bytes.fromhex("00 00 00 09 68 65 6c 6c 6f ff ff ff"), 7) == DataChunk(HELLO)
    assert ChunkDecoder(omit_flags=7).feed(bytes.fromhex("00 00 00 09 68 65 6c 6c 6f ff ff ff")) == [DataChunk(HELLO)]


def test_reserved_flags_ignored_on_receipt() -> None:
    # DATA reserved bits and R bits, ACK/HEARTBEAT flags: ignored.
    assert decode_chunk(bytes.fromhex("00 fb 00 08 61 62 63 64"), 7) == DataChunk(b"abcd")
    assert decode_chunk(bytes.fromhex("03 ff 00 04")) == AckChunk(None)
    assert decode_chunk(bytes.fromhex("04 ff 00 08 00 01 00 04")) == HeartbeatChunk(b"")
    init = decode_chunk(bytes.fromhex("01 fd 00 04"))
    assert isinstance(init, InitChunk) and init.omit_flags == 0x05
    assert init.omit_tsn and not init.omit_stream and init.omit_ppid


def test_heartbeat_chunk_length_may_count_info_padding() -> None:
    # Chunk length 12 (counts the TLV's padding) instead of 11.
    assert decode_chunk(bytes.fromhex("04 00 00 0c 00 01 00 07 61 62 63 00")) == HeartbeatChunk(b"abc")


@pytest.mark.parametrize(
    "hexdata,omit,message",
    [
        ("00 00", 0, "shorter than a chunk header"),
        ("01 00 00 03", 0, "less than 4"),
        ("01 00 00 08 00 00 00 00", 0, "INIT chunk length must be 4"),
        ("03 00 00 06 00 00 00 00", 0, "ACK chunk length must be 4 or 8"),
        ("03 00 00 0c 00 00 00 00 00 00 00 00", 0, "ACK chunk length must be 4 or 8"),
        ("04 00 00 04", 0, "too short"),
        ("04 00 00 08 00 02 00 04", 0, "not Heartbeat Info"),
        ("04 00 00 08 00 01 00 08", 0, "does not fit"),
        ("04 00 00 08 00 01 00 03", 0, "does not fit"),
        ("05 00 00 10 00 01 00 04 00 00 00 00 00 00 00 00", 0, "after its Heartbeat Info"),
        ("00 00 00 0c 00 00 00 00 00 00 00 00", 0, "shorter than its 16-byte header"),
        ("00 00 00 04", 7, None),  # empty DATA with everything omitted is well-formed
        ("00 00 00 10 00 00", 0, "exceeds the 6 bytes"),
        ("03 00 00 04 00 00 00 00", 0, "bytes after a chunk"),
    ],
)
def test_decode_chunk_malformed(hexdata: str, omit: int, message: str | None) -> None:
    data = bytes.fromhex(hexdata)
    if message is None:
        assert decode_chunk(data, omit) == DataChunk(b"")
        return
    with pytest.raises(TcpMapError, match=message):
        decode_chunk(data, omit)


def test_encode_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        encode_chunk(DataChunk(b"", ppid=1 << 32))
    with pytest.raises(ValueError):
        encode_chunk(DataChunk(b"", stream_id=1))
    with pytest.raises(ValueError):
        encode_chunk(DataChunk(bytes(65535)))
    with pytest.raises(ValueError):
        encode_chunk(InitChunk(256))
    with pytest.raises(TypeError):
        encode_chunk("INIT")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Round trips

u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 2**16 - 1)


@st.composite
def data_chunks(draw: st.DrawFn) -> DataChunk:
    has_stream = draw(st.booleans())
    return DataChunk(
        payload=draw(st.binary(max_size=40)),
        ppid=draw(st.none() | u32),
        tsn=draw(st.none() | u32),
        stream_id=draw(u16) if has_stream else None,
        stream_seq=draw(u16) if has_stream else None,
        unordered=draw(st.booleans()),
    )


control_chunks = st.one_of(
    st.builds(InitChunk, st.integers(0, 255)),
    st.builds(AckChunk, st.none() | u32),
    st.builds(HeartbeatChunk, st.binary(max_size=40)),
    st.builds(HeartbeatAckChunk, st.binary(max_size=40)),
    st.builds(UnknownChunk, st.sampled_from([2, *range(6, 256)]), st.integers(0, 255), st.binary(max_size=20)),
)


@settings(max_examples=200, deadline=None)
@given(data_chunks())
def test_data_round_trip(chunk: DataChunk) -> None:
    wire = encode_chunk(chunk)
    assert len(wire) % 4 == 0 and len(wire) - int.from_bytes(wire[2:4], "big") < 4
    assert decode_chunk(wire, data_chunk_flags(chunk)) == chunk


@settings(max_examples=150, deadline=None)
@given(control_chunks)
def test_control_round_trip(chunk: tcpmap.Chunk) -> None:
    wire = encode_chunk(chunk)
    assert decode_chunk(wire) == chunk
    assert encode_chunk(decode_chunk(wire)) == wire


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.integers(0, 7))
def test_random_bytes_only_raise_tcpmap_error(data: bytes, omit: int) -> None:
    try:
        decode_chunk(data, omit)
    except TcpMapError:
        pass
    decoder = ChunkDecoder(omit_flags=omit, max_chunk_size=64)
    try:
        decoder.feed(data)
    except TcpMapError:
        assert decoder.error is not None


# ---------------------------------------------------------------------------
# The stream decoder under every split


def _stream(omit: int = 0) -> tuple[bytes, list[tcpmap.Chunk]]:
    """A multi-chunk stream: INIT, DATA of every padding size, control chunks."""
    chunks: list[tcpmap.Chunk] = [InitChunk(omit)]
    for index, size in enumerate([0, 1, 2, 3, 4, 5, 11, 24]):
        data = DataChunk(
            bytes((index * 7 + i) & 0xFF for i in range(size)),
            ppid=None if omit & 4 else 11 + index % 2,
            tsn=None if omit & 1 else index,
            stream_id=None if omit & 2 else index % 3,
            stream_seq=None if omit & 2 else index // 3,
        )
        chunks.append(data)
        if index == 2:
            chunks += [HeartbeatChunk(b"\x01\x02\x03"), AckChunk(0), HeartbeatAckChunk(b"")]
    chunks.append(AckChunk(None))
    return b"".join(encode_chunk(c) for c in chunks), chunks


def _feed_parts(decoder: ChunkDecoder, data: bytes, cuts: list[int]) -> list[tcpmap.Chunk]:
    out: list[tcpmap.Chunk] = []
    previous = 0
    for cut in [*cuts, len(data)]:
        out += decoder.feed(data[previous:cut])
        previous = cut
    return out


@pytest.mark.parametrize("omit", range(8))
def test_every_single_split(omit: int) -> None:
    data, chunks = _stream(omit)
    for cut in range(len(data) + 1):
        decoder = ChunkDecoder()
        assert _feed_parts(decoder, data, [cut]) == chunks, cut
        assert decoder.buffered == 0
        assert decoder.omit_flags == omit


def test_byte_by_byte_and_random_partitions() -> None:
    data, chunks = _stream(0)
    decoder = ChunkDecoder()
    out: list[tcpmap.Chunk] = []
    for i in range(len(data)):
        out += decoder.feed(data[i : i + 1])
    assert out == chunks
    rng = random.Random(20260401)
    for _ in range(400):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(2, 12)))
        assert _feed_parts(ChunkDecoder(), data, cuts) == chunks, cuts


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 300), max_size=15), st.integers(0, 7))
def test_hypothesis_partitions(cuts: list[int], omit: int) -> None:
    data, chunks = _stream(omit)
    cuts = sorted(min(c, len(data)) for c in cuts)
    assert _feed_parts(ChunkDecoder(), data, cuts) == chunks


def test_coalesced_streams_and_memoryview_input() -> None:
    data, chunks = _stream(0)
    # Three copies of the DATA part (no second INIT) in one write.
    body = data[4:]
    decoder = ChunkDecoder()
    assert decoder.feed(bytearray(data + body + body)) == chunks + 2 * chunks[1:]
    assert decoder.feed(memoryview(body)) == chunks[1:]
    assert decoder.feed(b"") == []


def test_large_chunk_fed_byte_by_byte_is_linear() -> None:
    # 65,000 one-byte feeds of one maximal chunk: only appends, no reparse.
    payload = bytes(range(256)) * 253  # 64,768 bytes
    wire = encode_chunk(DataChunk(payload, ppid=11, tsn=0, stream_id=0, stream_seq=0))
    decoder = ChunkDecoder()
    out: list[tcpmap.Chunk] = []
    for i in range(len(wire)):
        out += decoder.feed(wire[i : i + 1])
        if i < len(wire) - 1:
            assert not out
    assert out == [DataChunk(payload, ppid=11, tsn=0, stream_id=0, stream_seq=0)]


def test_oversized_length_rejected_at_header_time() -> None:
    decoder = ChunkDecoder(max_chunk_size=64)
    decoder.feed(b"\x00\x00")
    with pytest.raises(TcpMapError, match="exceeds the limit of 64"):
        decoder.feed(b"\x00\x45")  # 69 > 64: rejected before the value arrives
    with pytest.raises(TcpMapError, match="unusable"):
        decoder.feed(encode_chunk(AckChunk(None)))
    assert decoder.error is not None and decoder.buffered == 0


@pytest.mark.parametrize(
    "data,message",
    [
        (bytes.fromhex("03 00 00 00"), "less than 4"),
        (bytes.fromhex("01 00 00 04 01 00 00 04"), "INIT chunk after the start"),
        (bytes.fromhex("03 00 00 04 01 00 00 04"), "INIT chunk after the start"),
        (bytes.fromhex("00 00 00 08 00 00 00 00"), "shorter than its 16-byte header"),
    ],
)
def test_stream_framing_errors_are_sticky(data: bytes, message: str) -> None:
    decoder = ChunkDecoder()
    with pytest.raises(TcpMapError, match=message):
        decoder.feed(data)
    with pytest.raises(TcpMapError, match="unusable"):
        decoder.feed(b"")


def test_decoder_arguments() -> None:
    with pytest.raises(ValueError):
        ChunkDecoder(max_chunk_size=4)
    with pytest.raises(ValueError):
        ChunkDecoder(max_chunk_size=70000)


# ---------------------------------------------------------------------------
# The connection


def _pair(omit_a: int = 0, omit_b: int = 0) -> tuple[TcpMapConnection, TcpMapConnection]:
    return TcpMapConnection(omit_flags=omit_a), TcpMapConnection(omit_flags=omit_b)


@pytest.mark.parametrize("omit", range(8))
def test_messages_and_acks_for_every_init_flag_combination(omit: int) -> None:
    client, server = _pair(omit, 0)
    wire = client.initiate()
    assert wire == bytes([1, omit, 0, 4])
    ppid = 0 if omit & 4 else 11
    streams = [0, 0, 0] if omit & 2 else [0, 3, 3]
    for index, stream in enumerate(streams):
        wire += client.send_message(ppid, b"msg%d" % index, stream_id=stream)
    events = server.receive_data(wire)
    assert events[0] == InitReceived(omit)
    assert server.peer_omit_flags == omit and server.peer_initiated
    assert [(e.tsn, e.stream_id, e.stream_seq, e.ppid, e.payload) for e in events[1:]] == [
        (0, streams[0], 0, ppid, b"msg0"),
        (1, streams[1], 1 if omit & 2 else 0, ppid, b"msg1"),
        (2, streams[2], 2 if omit & 2 else 1, ppid, b"msg2"),
    ]
    acks = server.data_to_send()
    # the server's first write starts with its INIT; its ACKs omit the TSN iff
    # the client's INIT said 0x01
    assert acks[:4] == bytes.fromhex("01 00 00 04")
    assert len(acks) == 4 + 3 * (4 if omit & 1 else 8)
    assert client.unacked == 3
    assert client.receive_data(acks) == [InitReceived(0), AckReceived(0), AckReceived(1), AckReceived(2)]
    assert client.unacked == 0


def test_unordered_message_gets_no_stream_sequence() -> None:
    client, server = _pair()
    wire = client.send_message(11, b"a") + client.send_message(11, b"b", unordered=True) + client.send_message(11, b"c")
    chunks = ChunkDecoder().feed(wire)
    assert [(c.stream_seq, c.unordered) for c in chunks[1:]] == [(0, False), (0, True), (1, False)]
    events = server.receive_data(wire)
    assert [e.payload for e in events[1:]] == [b"a", b"b", b"c"]
    assert events[2].unordered


def test_sequence_numbers_wrap() -> None:
    client, server = _pair()
    events: list[tcpmap.Event] = []
    for _ in range(65537):
        events += server.receive_data(client.send_message(11, b""))
    assert events[-1] == MessageReceived(11, b"", 65536, 0, 0)
    assert events[-2].stream_seq == 65535


def test_send_message_checks_arguments() -> None:
    client = TcpMapConnection(omit_flags=tcpmap.INIT_OMIT_PPID | tcpmap.INIT_OMIT_STREAM)
    with pytest.raises(ValueError, match="omits the PPID"):
        client.send_message(11, b"x")
    with pytest.raises(ValueError, match="omits stream"):
        client.send_message(0, b"x", stream_id=1)
    with pytest.raises(ValueError, match="does not fit"):
        TcpMapConnection().send_message(11, bytes(65520))
    with pytest.raises(ValueError):
        TcpMapConnection(omit_flags=8)
    conn = TcpMapConnection()
    conn.initiate()
    with pytest.raises(ValueError, match="already sent"):
        conn.initiate()


def test_receive_errors_are_fatal() -> None:
    client, server = _pair()
    good = client.send_message(11, b"one")
    bad_tsn = encode_chunk(DataChunk(b"two", ppid=11, tsn=5, stream_id=0, stream_seq=1))
    server.receive_data(good)
    with pytest.raises(TcpMapError, match="TSN 5 out of sequence"):
        server.receive_data(bad_tsn)
    assert server.failed is not None
    with pytest.raises(TcpMapError, match="unusable"):
        server.receive_data(b"")


@pytest.mark.parametrize(
    "wire,message",
    [
        (encode_chunk(DataChunk(b"x", ppid=11, tsn=0, stream_id=0, stream_seq=4)), "sequence 4 out of order"),
        (encode_chunk(AckChunk(0)), "no DATA chunk outstanding"),
        (encode_chunk(UnknownChunk(6, 0, b"")), "unknown chunk type 6"),
        (encode_chunk(UnknownChunk(255, 0, b"abcd")), "unknown chunk type 255"),
    ],
)
def test_protocol_errors(wire: bytes, message: str) -> None:
    with pytest.raises(TcpMapError, match=message):
        TcpMapConnection().receive_data(wire)


def test_ack_for_wrong_tsn() -> None:
    client = TcpMapConnection()
    client.send_message(11, b"x")
    with pytest.raises(TcpMapError, match="ACK chunk for TSN 7, expected 0"):
        client.receive_data(encode_chunk(AckChunk(7)))


def test_heartbeat_round_trip_and_bookkeeping() -> None:
    client, server = _pair()
    hb1 = client.heartbeat(now=10.0)
    hb2 = client.heartbeat(b"custom", now=11.0)
    assert client.missed_heartbeats == 2
    events = server.receive_data(hb1 + hb2, now=11.5)
    assert events == [InitReceived(0), HeartbeatReceived(bytes(8)), HeartbeatReceived(b"custom")]
    assert server.last_received_at == 11.5
    answer = server.data_to_send()
    assert answer[4:] == encode_chunk(HeartbeatAckChunk(bytes(8))) + encode_chunk(HeartbeatAckChunk(b"custom"))
    assert server.data_to_send() == b""
    # Answering the second heartbeat settles the first as well.
    events = client.receive_data(answer[:4] + answer[-len(encode_chunk(HeartbeatAckChunk(b"custom"))):], now=12.0)
    assert events == [InitReceived(0), HeartbeatAckReceived(b"custom", 1.0)]
    assert client.missed_heartbeats == 0
    # The late answer to the first one is now unsolicited.
    assert client.receive_data(encode_chunk(HeartbeatAckChunk(bytes(8))), now=13.0) == [
        HeartbeatAckReceived(bytes(8), None, solicited=False)
    ]


def test_outstanding_heartbeats_are_bounded() -> None:
    conn = TcpMapConnection(max_outstanding_heartbeats=3)
    for _ in range(10):
        conn.heartbeat()
    assert conn.missed_heartbeats == 3
    with pytest.raises(ValueError):
        TcpMapConnection(max_outstanding_heartbeats=0)


def test_heartbeat_without_time_has_no_rtt() -> None:
    client, server = _pair()
    server.receive_data(client.heartbeat())
    (_, event) = client.receive_data(server.data_to_send())
    assert event == HeartbeatAckReceived(bytes(8), None)


def test_peer_without_init_uses_full_layout() -> None:
    # A peer that never sends INIT: flags 0 (every field present).
    server = TcpMapConnection()
    wire = encode_chunk(DataChunk(b"abc", ppid=12, tsn=0, stream_id=0, stream_seq=0))
    assert server.receive_data(wire) == [MessageReceived(12, b"abc", 0)]
    assert not server.peer_initiated


def test_connection_split_everywhere() -> None:
    client = TcpMapConnection(omit_flags=1)
    wire = client.initiate() + b"".join(client.send_message(11 + i % 2, bytes(i)) for i in range(9))
    wire += client.heartbeat(b"hb")
    reference = TcpMapConnection().receive_data(wire)
    for cut in range(len(wire) + 1):
        server = TcpMapConnection()
        events = server.receive_data(wire[:cut]) + server.receive_data(wire[cut:])
        assert events == reference


# ---------------------------------------------------------------------------
# UDP: one message per datagram, no mapping

REGISTRATION = bytes.fromhex(
    "0100003c0009000c4563686f506f6f6c000a002c123456785e4f3d2c0000012c"
    "000500101f410000000100087f0000010008000c4000000100001000"
)


def test_udp_datagram_is_one_message() -> None:
    from rserpool.wire import WireError, decode_message

    message = tcpmap.decode_datagram(REGISTRATION, 11)
    assert message == decode_message(REGISTRATION, 11)
    assert tcpmap.encode_datagram(message) == REGISTRATION
    # two messages in one datagram are not a message
    with pytest.raises(WireError):
        tcpmap.decode_datagram(REGISTRATION + REGISTRATION, 11)


def test_message_carried_through_the_mapping() -> None:
    from rserpool.wire import decode_message

    client, server = _pair()
    wire = client.send_message(11, REGISTRATION)
    (_, event) = server.receive_data(wire)
    assert decode_message(event.payload, event.ppid) == decode_message(REGISTRATION, 11)
