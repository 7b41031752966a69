"""Golden vectors written by hand from the RFC 5352/5353/5354/5356 figures."""

import pytest

from rserpool.wire import (
    PPID_ASAP, PPID_ENRP, AsapEndpointKeepAliveAck, AsapError, AsapHandleResolution,
    AsapRegistration, AsapServerAnnounce, EnrpHandleTableRequest, EnrpHandleUpdate,
    EnrpInitTakeover, EnrpListResponse, ErrorCause, IPv4Address, IPv6Address,
    LeastUsedDegradationPolicy, LeastUsedPolicy, OperationError, PoolElement,
    RoundRobinPolicy, SctpTransport, ServerInformation, TcpTransport, UdpTransport,
    DccpTransport, decode_message,
)
from rserpool.wire.params import encode_pool_handle

LOCAL = IPv4Address("127.0.0.1")


def h(text: str) -> bytes:
    return bytes.fromhex(text)


GOLDEN = [
    # ASAP_REGISTRATION (RFC 5352 2.2.1): handle "echo", PE (RFC 5354 3.10)
    # with a TCP transport (3.5) and a Least Used policy (RFC 5356 4.1).
    (PPID_ASAP, AsapRegistration(b"echo", PoolElement(
        0x12345678, 0, 300, TcpTransport(8080, LOCAL), LeastUsedPolicy(7))), h(
        "01 00 0038"                 # type 1, flags 0, length 56
        "0009 0008 6563686f"         # pool handle "echo"
        "000a 002c"                  # pool element, length 44
        "12345678 00000000 0000012c"  # PE id, home server 0, life 300 s
        "0005 0010 1f90 0000"        # TCP transport, length 16, port 8080, reserved 0
        "0001 0008 7f000001"         # IPv4 address 127.0.0.1
        "0008 000c 40000001 00000007")),  # policy LU, load 7
    # Registration life -1 (infinite), SCTP user transport with two
    # addresses and DATA plus CONTROL, Round Robin.
    (PPID_ASAP, AsapRegistration(b"abc", PoolElement(
        1, 0, -1, SctpTransport(3863, (LOCAL, IPv6Address("::1")), 1), RoundRobinPolicy())), h(
        "01 00 0048"                 # length 72
        "0009 0007 616263 00"        # handle "abc": length 7, 1 padding byte
        "000a 003c 00000001 00000000 ffffffff"
        "0004 0024 0f17 0001"        # SCTP, length 36, port 3863, use 1
        "0001 0008 7f000001"
        "0002 0014 00000000000000000000000000000001"
        "0008 0008 00000001")),      # RR: length 8
    # ASAP_HANDLE_RESOLUTION with S=1, odd handle: the message length
    # excludes the final 3 padding bytes.
    (PPID_ASAP, AsapHandleResolution(b"echo-pool", subscribe=True), h(
        "05 01 0011 0009 000d 6563686f2d706f6f6c 000000")),
    # ASAP_ENDPOINT_KEEP_ALIVE_ACK (RFC 5352 2.2.8)
    (PPID_ASAP, AsapEndpointKeepAliveAck(b"EchoPool", 0x12345678), h(
        "08 00 0018 0009 000c 4563686f506f6f6c 000e 0008 12345678")),
    # ASAP_SERVER_ANNOUNCE: server id then an SCTP transport.
    (PPID_ASAP, AsapServerAnnounce(0x0A0B0C0D, (SctpTransport(3863, (LOCAL,)),)), h(
        "0a 00 0018 0a0b0c0d 0004 0010 0f17 0000 0001 0008 7f000001")),
    # ASAP_ERROR: Operation Error with one Unrecognized Parameter cause
    # holding a 6-byte TLV: cause length 10 and the error length 14 exclude
    # the last padding; the message length 18 too.
    (PPID_ASAP, AsapError(OperationError((ErrorCause(1, h("4abc0006beef")),))), h(
        "0e 00 0012 000c 000e 0001 000a 4abc 0006 beef 0000")),
    # ENRP_HANDLE_TABLE_REQUEST (RFC 5353 2.2): W=1, length fixed at 12.
    (PPID_ENRP, EnrpHandleTableRequest(1, 2, own_children_only=True), h(
        "02 01 000c 00000001 00000002")),
    # ENRP_INIT_TAKEOVER (2.7): 16 bytes.
    (PPID_ENRP, EnrpInitTakeover(1, 0, 3), h("07 00 0010 00000001 00000000 00000003")),
    # ENRP_HANDLE_UPDATE (2.4): DEL_PE, reserved 0; UDP transport, LUD.
    (PPID_ENRP, EnrpHandleUpdate(1, 0, 1, b"ab", PoolElement(
        5, 1, 60, UdpTransport(9, LOCAL), LeastUsedDegradationPolicy(2, 3))), h(
        "04 00 0048 00000001 00000000 0001 0000"
        "0009 0006 6162 0000"
        "000a 0030 00000005 00000001 0000003c"
        "0006 0010 0009 0000 0001 0008 7f000001"
        "0008 0010 40000002 00000002 00000003")),
    # ENRP_LIST_RESPONSE (2.6): one Server Information (RFC 5354 3.11).
    (PPID_ENRP, EnrpListResponse(2, 1, (ServerInformation(7, SctpTransport(9901, (LOCAL,))),)), h(
        "06 00 0024 00000002 00000001"
        "000b 0018 00000007 0004 0010 26ad 0000 0001 0008 7f000001")),
]


@pytest.mark.parametrize("ppid,msg,data", GOLDEN, ids=[m.name for _, m, _ in GOLDEN])
def test_golden(ppid, msg, data):
    assert msg.encode() == data
    assert decode_message(data, ppid) == msg
    assert decode_message(data, ppid).encode() == data


def test_dccp_transport_layout():
    # RFC 5354 3.3: port, reserved, service code, one address.
    assert DccpTransport(5, 0x01020304, LOCAL).encode() == h(
        "0003 0014 0005 0000 01020304 0001 0008 7f000001")


def test_pool_handle_padding():
    assert encode_pool_handle(b"abc") == h("0009 0007 616263 00")
    assert encode_pool_handle(b"abcd") == h("0009 0008 61626364")


def test_message_without_final_padding_is_accepted():
    data = h("05 00 0011 0009 000d 6563686f2d706f6f6c")  # no 3 padding bytes
    assert decode_message(data, PPID_ASAP) == AsapHandleResolution(b"echo-pool")


def test_lenient_outer_length_counting_last_inner_padding():
    # rsplib counts the last cause's padding in the Operation Error length (16, not 14).
    data = h("0e 00 0014 000c 0010 0001 000a 4abc 0006 beef 0000")
    assert decode_message(data, PPID_ASAP) == AsapError(
        OperationError((ErrorCause(1, h("4abc0006beef")),)))


def test_tcp_second_word_round_trips():
    # RFC: reserved (we send 0); rsplib/Wireshark: Transport Use.  Kept.
    data = h("01 00 0038 0009 0008 6563686f 000a 002c 12345678 00000000 0000012c"
             "0005 0010 1f90 0001 0001 0008 7f000001 0008 000c 40000001 00000007")
    msg = decode_message(data, PPID_ASAP)
    assert msg.pool_element.user_transport.transport_use == 1
    assert msg.encode() == data


def test_flag_bits_ignored_when_undefined():
    data = h("08 ff 0018 0009 000c 4563686f506f6f6c 000e 0008 12345678")
    assert decode_message(data, PPID_ASAP) == AsapEndpointKeepAliveAck(b"EchoPool", 0x12345678)


def test_readable_str():
    msg = GOLDEN[0][1]
    text = str(msg)
    assert text.startswith("ASAP_REGISTRATION handle='echo' pe={pe=0x12345678")
    assert "pe=0x12345678" in text and "tcp:127.0.0.1:8080" in text and "LU(load=7)" in text
    assert repr(msg) == text
