"""Unknown types (RFC 5354 3 and 4), structure errors, limits, error replies."""

import pytest

from rserpool.wire import (
    DEFAULT_LIMITS, PPID_ASAP, PPID_ENRP, AsapError, AsapHandleResolution, AsapRegistration,
    EnrpError, ErrorCause, IPv4Address, LeastUsedPolicy, Limits, OperationError, PoolElement,
    TcpTransport, WireError, decode_message, error_reply,
)
from rserpool.wire import codes

HR = bytes.fromhex("05 00 000c 0009 0008 6563686f")  # HANDLE_RESOLUTION "echo"


def with_param(tlv: bytes, before: bool = False) -> bytes:
    """HANDLE_RESOLUTION "echo" with an extra TLV (padded) after (or before) the handle."""
    n = len(tlv)
    padded = tlv + b"\x00" * (-n % 4)
    body = (padded + HR[4:]) if before else (HR[4:] + padded)
    length = 4 + len(body) - (0 if before else -n % 4)
    return bytes([5, 0]) + length.to_bytes(2, "big") + body


UNKNOWN = {bits: bytes.fromhex(f"{bits:04x}0006beef") for bits in (0x3abc, 0x7abc, 0xbabc, 0xfabc)}


def test_param_00_stop_silently():
    with pytest.raises(WireError) as info:
        decode_message(with_param(UNKNOWN[0x3abc]), PPID_ASAP)
    assert info.value.cause is None and info.value.report is None


def test_param_01_stop_and_report():
    with pytest.raises(WireError) as info:
        decode_message(with_param(UNKNOWN[0x7abc]), PPID_ASAP)
    err = info.value
    assert err.cause == codes.CAUSE_UNRECOGNIZED_PARAMETER
    assert err.report == (ErrorCause(1, UNKNOWN[0x7abc]),)  # the whole TLV, no padding
    reply = error_reply(err, PPID_ASAP)
    assert reply == AsapError(OperationError((ErrorCause(1, UNKNOWN[0x7abc]),)))


def test_param_10_skip():
    msg = decode_message(with_param(UNKNOWN[0xbabc]), PPID_ASAP)
    assert msg == AsapHandleResolution(b"echo") and msg.unrecognized == ()
    assert msg.error_reply() is None


def test_param_11_skip_and_report():
    msg = decode_message(with_param(UNKNOWN[0xfabc], before=True), PPID_ASAP)
    assert msg == AsapHandleResolution(b"echo")
    assert msg.unrecognized == (ErrorCause(1, UNKNOWN[0xfabc]),)
    assert msg.error_reply() == AsapError(OperationError(msg.unrecognized))
    enrp = error_reply(msg.unrecognized, PPID_ENRP, sender_id=1, receiver_id=2)
    assert enrp == EnrpError(1, 2, OperationError(msg.unrecognized))


def test_skip_and_report_then_stop_and_report_reports_both():
    data = with_param(UNKNOWN[0x7abc], before=False)
    data = with_param(UNKNOWN[0xfabc], before=True)[:4] + UNKNOWN[0xfabc] + b"\0\0" + data[4:]
    data = bytes([5, 0]) + (len(data) - 2).to_bytes(2, "big") + data[4:]
    with pytest.raises(WireError) as info:
        decode_message(data, PPID_ASAP)
    assert [c.info for c in info.value.report] == [UNKNOWN[0xfabc], UNKNOWN[0x7abc]]


def test_unknown_nested_parameter_skipped_inside_transport():
    pe = PoolElement(1, 0, 30, TcpTransport(80, IPv4Address("10.0.0.1")), LeastUsedPolicy(0))
    data = AsapRegistration(b"x", pe).encode()
    # Insert a skip-and-report TLV after the address in the TCP transport.
    tcp = data.index(bytes.fromhex("0005 0010"))
    extra = bytes.fromhex("c001 0004")
    new = bytearray(data[:tcp + 16] + extra + data[tcp + 16:])
    new[tcp + 2:tcp + 4] = (16 + 4).to_bytes(2, "big")
    pe_at = data.index(bytes.fromhex("000a"), 4)
    new[pe_at + 2:pe_at + 4] = (int.from_bytes(data[pe_at + 2:pe_at + 4], "big") + 4).to_bytes(2, "big")
    new[2:4] = (len(new)).to_bytes(2, "big")
    msg = decode_message(bytes(new), PPID_ASAP)
    assert msg.pool_element == pe and msg.unrecognized == (ErrorCause(1, extra),)


@pytest.mark.parametrize("mtype", [0x0F, 0x3F, 0x00])
def test_message_00_discard_silently(mtype):
    with pytest.raises(WireError) as info:
        decode_message(bytes([mtype, 0, 0, 4]), PPID_ASAP)
    assert info.value.cause is None and info.value.report is None
    with pytest.raises(ValueError):
        error_reply(info.value, PPID_ASAP)


@pytest.mark.parametrize("ppid", [PPID_ASAP, PPID_ENRP])
def test_message_01_discard_and_report(ppid):
    data = bytes.fromhex("4f 00 0008 01020304")
    with pytest.raises(WireError) as info:
        decode_message(data, ppid)
    assert info.value.cause == codes.CAUSE_UNRECOGNIZED_MESSAGE
    assert info.value.report == (ErrorCause(2, data),)


def test_enrp_type_beyond_range_is_unknown():
    with pytest.raises(WireError):
        decode_message(bytes([0x0B, 0, 0, 12]) + bytes(8), PPID_ENRP)


@pytest.mark.parametrize("data,offending,what", [
    (bytes.fromhex("05 00 0014 0009 0008 6563686f 0009 0008 6563686f"), "0009 0008 6563686f",
     "duplicate handle"),
    (bytes.fromhex("08 00 0014 000e 0008 12345678 0009 0008 4563686f"), "000e 0008 12345678",
     "wrong order"),
    (bytes.fromhex("05 00 0008 0009 0004"), "0009 0004", "empty handle"),
    (bytes.fromhex("0e 00 0008 000c 0004"), "000c 0004", "operation error without cause"),
    (bytes.fromhex("0e 00 000c 000d 0008 00000000"), "000d 0008 00000000", "cookie instead of error"),
    (bytes.fromhex("05 00 0010 0009 0008 6563686f 000d 0004"), "000d 0004", "unexpected cookie"),
])
def test_value_errors_are_invalid_values_with_the_tlv(data, offending, what):
    """RFC 5354 3.12.4: the offending TLV, whole and as received."""
    with pytest.raises(WireError) as info:
        decode_message(data, PPID_ASAP)
    assert info.value.cause == codes.CAUSE_INVALID_VALUES, what
    assert info.value.report == (ErrorCause(3, bytes.fromhex(offending)),), what


@pytest.mark.parametrize("data,what", [
    (bytes.fromhex("01 00 000c 0009 0008 6563686f"), "missing PE"),
    (bytes.fromhex("05 00 0004"), "no handle"),
    (bytes.fromhex("05 00 000c 0009 0009 6563686f"), "param beyond message"),
    (bytes.fromhex("05 00 000d 0009 0008 6563686f 00"), "trailing garbage"),
    (bytes.fromhex("05 00 0010 0009 0008 6563686f"), "length beyond data"),
    (bytes.fromhex("05 00 0008 0009 0008 6563686f"), "length short of data"),
    (bytes.fromhex("05 00 0003"), "length below 4"),
    (bytes.fromhex("05 00"), "shorter than a header"),
    (bytes.fromhex("05 00 0010 0009 0008 6563686f 0003 0005 00"), "PE identifier of 5 bytes"),
])
def test_framing_errors_are_unspecified_without_information(data, what):
    """No well-framed TLV holds the fault: RFC 5354 3.12.1, no information."""
    with pytest.raises(WireError) as info:
        decode_message(data, PPID_ASAP)
    assert info.value.cause == codes.CAUSE_UNSPECIFIED, what
    assert info.value.report == (ErrorCause(0, b""),), what


def test_invalid_values_is_never_sent_without_its_tlv():
    assert WireError(codes.CAUSE_INVALID_VALUES, "no TLV").cause == codes.CAUSE_UNSPECIFIED
    assert WireError(codes.CAUSE_INVALID_VALUES, "no TLV").report == (ErrorCause(0, b""),)


def test_enrp_fixed_fields_and_update_action():
    with pytest.raises(WireError) as info:
        decode_message(bytes.fromhex("02 00 0008 00000001"), PPID_ENRP)
    assert info.value.cause == codes.CAUSE_UNSPECIFIED  # a fixed field, not a TLV
    bad_action = bytes.fromhex("04 00 0010 00000001 00000000 0002 0000")
    with pytest.raises(WireError) as info:
        decode_message(bad_action, PPID_ENRP)
    assert info.value.cause == codes.CAUSE_UNSPECIFIED


def test_known_policy_with_wrong_length_is_a_framing_error():
    pe = PoolElement(1, 0, 30, TcpTransport(80, IPv4Address("10.0.0.1")), LeastUsedPolicy(0))
    data = bytearray(AsapRegistration(b"echo", pe).encode())
    pol = data.index(bytes.fromhex("0008 000c 40000001"))
    data[pol + 4:pol + 8] = bytes.fromhex("00000001")  # RR needs length 8, not 12
    with pytest.raises(WireError) as info:
        decode_message(bytes(data), PPID_ASAP)
    # Quoting a TLV whose length does not fit its layout would put a broken
    # TLV inside the reply: Unspecified Error, without information.
    assert info.value.cause == codes.CAUSE_UNSPECIFIED
    assert info.value.offending == b""


def test_transport_with_a_foreign_parameter_quotes_the_transport():
    pe = PoolElement(1, 0, 30, TcpTransport(80, IPv4Address("10.0.0.1")), LeastUsedPolicy(0))
    data = bytearray(AsapRegistration(b"echo", pe).encode())
    tcp = data.index(bytes.fromhex("0005 0010"))
    data[tcp + 8:tcp + 10] = bytes.fromhex("000d")  # the address becomes a cookie
    with pytest.raises(WireError) as info:
        decode_message(bytes(data), PPID_ASAP)
    assert info.value.cause == codes.CAUSE_INVALID_VALUES
    assert info.value.offending == bytes(data[tcp:tcp + 16])


def test_limits_message_size():
    with pytest.raises(WireError) as info:
        decode_message(HR, PPID_ASAP, Limits(max_message_size=8))
    assert info.value.cause == codes.CAUSE_LACK_OF_RESOURCES
    with pytest.raises(WireError):
        decode_message(HR + bytes(65536), PPID_ASAP)


def test_limits_parameter_count():
    many = HR[4:] + bytes.fromhex("8001 0004") * 20
    data = bytes([5, 0]) + (4 + len(many)).to_bytes(2, "big") + many
    assert decode_message(data, PPID_ASAP) == AsapHandleResolution(b"echo")
    with pytest.raises(WireError) as info:
        decode_message(data, PPID_ASAP, Limits(max_parameters=10))
    assert info.value.cause == codes.CAUSE_LACK_OF_RESOURCES


def test_limits_depth_addresses_handle():
    pe = PoolElement(1, 0, 30, TcpTransport(80, IPv4Address("10.0.0.1")), LeastUsedPolicy(0))
    data = AsapRegistration(b"echo", pe).encode()
    assert decode_message(data, PPID_ASAP, Limits(max_depth=3))
    with pytest.raises(WireError) as info:
        decode_message(data, PPID_ASAP, Limits(max_depth=2))
    assert info.value.cause == 3
    tcp = data.index(bytes.fromhex("0005 0010"))
    assert info.value.offending == data[tcp:tcp + 16]  # the TLV holding the too-deep one
    with pytest.raises(WireError):
        decode_message(data, PPID_ASAP, Limits(max_pool_handle=3))
    from rserpool.wire import SctpTransport
    pe2 = PoolElement(1, 0, 30, SctpTransport(80, [IPv4Address(f"10.0.0.{i}") for i in range(5)]),
                      LeastUsedPolicy(0))
    data2 = AsapRegistration(b"echo", pe2).encode()
    assert decode_message(data2, PPID_ASAP, Limits(max_addresses=5))
    with pytest.raises(WireError):
        decode_message(data2, PPID_ASAP, Limits(max_addresses=4))


def test_default_limits_are_sane():
    assert DEFAULT_LIMITS.max_message_size == 65535
    with pytest.raises(ValueError):
        Limits(max_parameters=0)


def test_unknown_ppid_and_non_bytes():
    with pytest.raises(WireError):
        decode_message(HR, 99)
    assert decode_message(bytearray(HR), PPID_ASAP) == AsapHandleResolution(b"echo")
    with pytest.raises(WireError):
        decode_message(12345, PPID_ASAP)  # type: ignore[arg-type]


@pytest.mark.parametrize("make", [
    lambda: TcpTransport(65536, IPv4Address("1.2.3.4")),
    lambda: TcpTransport(1, "1.2.3.4"),
    lambda: PoolElement(1, 0, 2**31, TcpTransport(1, IPv4Address("1.2.3.4")), LeastUsedPolicy(0)),
    lambda: PoolElement(-1, 0, 1, TcpTransport(1, IPv4Address("1.2.3.4")), LeastUsedPolicy(0)),
    lambda: LeastUsedPolicy(2**32),
    lambda: AsapHandleResolution(b""),
    lambda: OperationError(()),
    lambda: ErrorCause(0x10000),
    lambda: AsapRegistration(b"x", None),
])
def test_invalid_objects_raise_value_error(make):
    with pytest.raises(ValueError):
        make()


def test_encoding_too_long_raises_value_error():
    from rserpool.wire import AsapCookie
    with pytest.raises(ValueError):
        AsapCookie(bytes(65532)).encode()


def test_error_reply_never_truncates_a_quote():
    data = bytes([0x4F, 0, 0xFF, 0xFF]) + bytes(65531)
    with pytest.raises(WireError) as info:
        decode_message(data, PPID_ENRP)
    reply = error_reply(info.value, PPID_ENRP, 1, 2)
    data = reply.encode()
    assert len(data) <= 65535
    assert decode_message(data, PPID_ENRP) == reply
    # The whole message cannot be quoted: no cut-off copy of it either.
    assert reply.error.causes == (ErrorCause(codes.CAUSE_UNSPECIFIED, b""),)


def test_error_reply_leaves_out_a_cause_that_does_not_fit():
    big = ErrorCause(codes.CAUSE_UNRECOGNIZED_PARAMETER, bytes.fromhex("c001ffe8") + bytes(0xFFE8 - 4))
    small = ErrorCause(codes.CAUSE_UNRECOGNIZED_PARAMETER, bytes.fromhex("c0020004"))
    reply = error_reply((small, big, small), PPID_ASAP)
    assert reply.error.causes == (small, small)
    assert error_reply((big, big), PPID_ASAP).error.causes[0] == big


def _fixed_size(msg) -> int:
    if msg.PPID == PPID_ASAP:
        return 4 if msg.name in ("ASAP_ENDPOINT_KEEP_ALIVE", "ASAP_SERVER_ANNOUNCE") else 0
    if msg.name in ("ENRP_HANDLE_UPDATE", "ENRP_INIT_TAKEOVER", "ENRP_INIT_TAKEOVER_ACK",
                    "ENRP_TAKEOVER_SERVER"):
        return 12
    return 8


def _insert_first(data: bytes, fixed: int, tlv: bytes) -> bytes:
    padded = tlv + b"\0" * (-len(tlv) % 4)
    at = 4 + fixed
    out = bytearray(data[:at] + padded + data[at:])
    length = int.from_bytes(data[2:4], "big") + len(padded)
    out[2:4] = length.to_bytes(2, "big")
    return bytes(out)


from hypothesis import given, settings, strategies as st  # noqa: E402

from tests.test_wire_roundtrip import messages  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(messages, st.sampled_from([0x0000, 0x4000, 0x8000, 0xC000]),
       st.integers(0x11, 0x3FFF), st.binary(max_size=9))
def test_unknown_parameter_rules_on_any_message(msg, bits, low, value):
    tlv = (bits | low).to_bytes(2, "big") + (4 + len(value)).to_bytes(2, "big") + value
    data = _insert_first(msg.encode(), _fixed_size(msg), tlv)
    if bits in (0x0000, 0x4000):
        with pytest.raises(WireError) as info:
            decode_message(data, msg.PPID)
        if bits == 0x0000:
            assert info.value.report is None
        else:
            assert info.value.report == (ErrorCause(1, tlv),)
    else:
        decoded = decode_message(data, msg.PPID)
        assert decoded == msg
        assert decoded.unrecognized == (() if bits == 0x8000 else (ErrorCause(1, tlv),))


def test_pe_identity_extension_where_it_belongs():
    """The PE Identity parameter (0xbf01, docs/enrp.md) follows a PE in ENRP
    updates and table responses; elsewhere, misplaced or malformed, it is
    Invalid Values; its type bits (10) make an RFC-only receiver skip it."""
    from ipaddress import IPv4Address

    from rserpool.wire import (
        EnrpHandleTableResponse, EnrpHandleUpdate, PoolElement, PoolEntry, RoundRobinPolicy,
        TcpTransport,
    )
    from rserpool.wire.enrp import encode_identity

    pe = PoolElement(1, 2, 30, TcpTransport(7, IPv4Address("127.0.0.1")), RoundRobinPolicy())
    update = EnrpHandleUpdate(2, 0, 0, b"echo", pe, "pe1")
    assert decode_message(update.encode(), codes.PPID_ENRP) == update
    response = EnrpHandleTableResponse(2, 3, (PoolEntry(b"echo", (pe, pe), (None, "pe1")),))
    assert decode_message(response.encode(), codes.PPID_ENRP) == response
    assert PoolEntry(b"echo", (pe,), (None,)).identities == ()
    with pytest.raises(ValueError):
        PoolEntry(b"echo", (pe,), ("a", "b"))
    with pytest.raises(ValueError):
        EnrpHandleUpdate(2, 0, 0, b"echo", pe, "x" * 256)
    # An identity before any PE, twice after a PE, or not UTF-8: Invalid Values.
    plain = EnrpHandleUpdate(2, 0, 0, b"echo", pe).encode()
    ident = encode_identity("pe1")
    for data in (plain + ident + ident, plain[:16] + ident + plain[16:],
                 plain + encode_identity("pe1")[:4] + b"\xff\xfe\xfd\x00"):
        data = data[:2] + len(data).to_bytes(2, "big") + data[4:]
        with pytest.raises(WireError) as info:
            decode_message(data, codes.PPID_ENRP)
        assert info.value.cause == codes.CAUSE_INVALID_VALUES
