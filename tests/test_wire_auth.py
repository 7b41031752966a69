"""The authentication extension messages: layouts, limits, RFC-only peers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from rserpool.wire import AsapError, WireError, codes, decode_message, error_reply
from rserpool.wire import messages as wire_messages
from rserpool.wire.auth import (
    AUTH_MESSAGE_CLASSES, AUTH_MESSAGE_TYPES, AsapAuthChapChallenge, AsapAuthChapResponse,
    AsapAuthFailure, AsapAuthHello, AsapAuthOffer, AsapAuthRequest, AsapAuthSrpChallenge,
    AsapAuthSrpProof, AsapAuthSuccess,
)
from rserpool.wire.jsonform import message_from_json, message_to_json
from rserpool.wire.samples import all_samples, auth_samples

ASAP = codes.PPID_ASAP


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


GOLDEN = [
    (AsapAuthRequest(), "70 00 0004"),
    (AsapAuthOffer(("SRP-6a-SHA256-2048", "CHAP-MD5")),
     "71 00 0028"
     " 7f01 0016 5352502d36612d5348413235362d32303438 0000"
     " 7f01 000c 434841502d4d4435"),
    (AsapAuthHello("CHAP-MD5", "pé"),
     "72 00 0017  7f01 000c 434841502d4d4435  7f02 0007 70c3a9 00"),
    (AsapAuthChapChallenge(0x2A, bytes(range(32))),
     "75 00 002c  7f06 0028 2a000000" + bytes(range(32)).hex()),
    (AsapAuthChapResponse(0xFF, bytes(range(16))),
     "76 00 001c  7f07 0018 ff000000" + bytes(range(16)).hex()),
    (AsapAuthSuccess("CHAP-MD5"), "77 00 0010  7f01 000c 434841502d4d4435"),
    (AsapAuthSuccess("SRP-6a-SHA256-2048", bytes(range(32))),
     "77 00 0040  7f01 0016 5352502d36612d5348413235362d32303438 0000"
     " 7f05 0024" + bytes(range(32)).hex()),
    (AsapAuthFailure(4, may_retry=True),
     "78 01 0014  7f08 0008 04000000  000c 0008 000a 0004"),
    (AsapAuthFailure(6),
     "78 00 0014  7f08 0008 06000000  000c 0008 000a 0004"),
    (AsapAuthSrpChallenge(b"\x11" * 16, b"\x22" * 256),
     "73 00 011c  7f03 0014" + "11" * 16 + " 7f04 0104" + "22" * 256),
    (AsapAuthSrpProof(b"\x33" * 256, b"\x44" * 32),
     "74 00 012c  7f04 0104" + "33" * 256 + " 7f05 0024" + "44" * 32),
]


@pytest.mark.parametrize("msg,hexdata", GOLDEN, ids=[m.name for m, _ in GOLDEN])
def test_golden_bytes(msg, hexdata):
    data = h(hexdata)
    # The encoder pads the last parameter; the header length excludes it.
    assert msg.encode() == data + b"\x00" * (-len(data) % 4)
    assert decode_message(data, ASAP) == msg
    assert decode_message(msg.encode(), ASAP) == msg


def test_every_message_has_a_golden_and_a_sample():
    assert {type(m) for m, _ in GOLDEN} == set(AUTH_MESSAGE_CLASSES)
    assert {type(m) for _, m in auth_samples()} == set(AUTH_MESSAGE_CLASSES)
    assert {cls.TYPE for cls in AUTH_MESSAGE_CLASSES} == AUTH_MESSAGE_TYPES


def test_types_make_rfc_only_peers_discard_and_report():
    for cls in AUTH_MESSAGE_CLASSES:
        assert cls.TYPE & 0xC0 == codes.UNKNOWN_MESSAGE_REPORT, cls.name
    for ptype in (codes.PARAM_AUTH_MECHANISM, codes.PARAM_AUTH_IDENTITY, codes.PARAM_SRP_SALT,
                  codes.PARAM_SRP_PUBLIC, codes.PARAM_SRP_PROOF, codes.PARAM_CHAP_CHALLENGE,
                  codes.PARAM_CHAP_RESPONSE, codes.PARAM_AUTH_FAILURE_CODE):
        assert ptype & 0xC000 == codes.UNKNOWN_PARAM_STOP_REPORT


def test_samples_stay_out_of_the_rfc_conformance_set():
    rfc_types = {m.TYPE for p, m in all_samples() if p == ASAP}
    assert not rfc_types & AUTH_MESSAGE_TYPES


@pytest.mark.parametrize("ppid,msg", auth_samples(), ids=[m.name for _, m in auth_samples()])
def test_json_round_trip(ppid, msg):
    form = message_to_json(msg)
    assert message_from_json(json.loads(json.dumps(form))) == msg
    assert form["type"] == msg.name


def test_rfc_only_decoder_reports_unrecognized_message(monkeypatch):
    """Our codec without the extension registered behaves as RFC 5354 section 4 says."""
    table = dict(wire_messages._BY_PPID[ASAP])
    for t in AUTH_MESSAGE_TYPES:
        table.pop(t, None)
    monkeypatch.setitem(wire_messages._BY_PPID, ASAP, table)
    request = AsapAuthRequest().encode()
    with pytest.raises(WireError) as info:
        decode_message(request, ASAP)
    assert info.value.cause == codes.CAUSE_UNRECOGNIZED_MESSAGE
    reply = error_reply(info.value, ASAP)
    assert isinstance(reply, AsapError)
    cause = reply.error.causes[0]
    assert cause.code == codes.CAUSE_UNRECOGNIZED_MESSAGE
    assert cause.info == request  # the whole message, so the PE can tell which one


def test_raw_upper_bits_of_a_foreign_decoder():
    # What any RFC 5354 decoder does with our bytes, decided by the first byte alone.
    for _, msg in auth_samples():
        first = msg.encode()[0]
        assert first >> 6 == 0b01  # "discard the message and report it"


def msg(mtype: int, *params: str) -> str:
    """A message of type ``mtype`` whose length field counts ``params`` (hex)."""
    body = h(" ".join(params))
    return f"{mtype:02x} 00 {4 + len(body):04x}" + body.hex()


def tlv(ptype: int, value: str, length: int | None = None) -> str:
    """A padded parameter; ``length`` overrides the length field."""
    raw = h(value)
    n = 4 + len(raw) if length is None else length
    return f"{ptype:04x}{n:04x}" + raw.hex() + "00" * (-len(raw) % 4)


MECH_CHAP = tlv(0x7F01, "434841502d4d4435")
INVALID, UNSPECIFIED = codes.CAUSE_INVALID_VALUES, codes.CAUSE_UNSPECIFIED


@pytest.mark.parametrize("data,cause,offending", [
    # SRP public value of 255 bytes: a value of the wrong size, its TLV quoted
    (msg(0x74, tlv(0x7F04, "33" * 255), tlv(0x7F05, "44" * 32)), INVALID, tlv(0x7F04, "33" * 255)),
    # salt of 7 bytes
    (msg(0x73, tlv(0x7F03, "11" * 7), tlv(0x7F04, "22" * 256)), INVALID, tlv(0x7F03, "11" * 7)),
    # SRP proof of 31 bytes in a success
    (msg(0x77, MECH_CHAP, tlv(0x7F05, "44" * 31)), INVALID, tlv(0x7F05, "44" * 31)),
    # CHAP response of 15 bytes
    (msg(0x76, tlv(0x7F07, "07000000" + "72" * 15)), INVALID, tlv(0x7F07, "07000000" + "72" * 15)),
    # CHAP response too short for its identifier: no well-framed TLV to quote
    (msg(0x76, tlv(0x7F07, "0700")), UNSPECIFIED, ""),
    # identity not UTF-8
    (msg(0x72, MECH_CHAP, tlv(0x7F02, "ff")), INVALID, tlv(0x7F02, "ff")),
    # empty identity
    (msg(0x72, MECH_CHAP, tlv(0x7F02, "")), INVALID, tlv(0x7F02, "")),
    # mechanism with a space
    (msg(0x72, tlv(0x7F01, "20"), tlv(0x7F02, "61")), INVALID, tlv(0x7F01, "20")),
    # hello without identity: nothing to quote
    (msg(0x72, MECH_CHAP), UNSPECIFIED, ""),
    # offer with nine mechanisms: the ninth is quoted
    (msg(0x71, *[tlv(0x7F01, "41")] * 9), INVALID, tlv(0x7F01, "41")),
    # failure code parameter of 5 bytes: its fixed layout is broken
    (msg(0x78, tlv(0x000C, "000a0004"), tlv(0x7F08, "0400000000")), UNSPECIFIED, ""),
    # unknown parameter with bits 01 in a request: stop, discard, report
    (msg(0x70, tlv(0x7F7F, "")), codes.CAUSE_UNRECOGNIZED_PARAMETER, tlv(0x7F7F, "")),
    # a parameter overrunning the message
    (msg(0x70, "bf7f 0008"), UNSPECIFIED, ""),
])
def test_malformed_messages_raise_wire_errors(data, cause, offending):
    with pytest.raises(WireError) as info:
        decode_message(h(data), ASAP)
    assert info.value.cause == cause, info.value
    # The quoted TLV is whole and unpadded (RFC 5354 3.12.2, 3.12.4).
    quoted = h(offending)[:int(offending[4:8], 16)] if offending else b""
    assert info.value.offending == quoted
    assert error_reply(info.value, ASAP).error.causes[-1].info == quoted


def test_unknown_skip_parameters_are_skipped_and_reported():
    # 0xBFxx: skip silently; 0xFFxx: skip and report (future optional parameters).
    data = h("70 00 0010 bf7f 0004 ff7f 0006 abcd 0000")
    msg = decode_message(data, ASAP)
    assert isinstance(msg, AsapAuthRequest)
    assert [c.code for c in msg.unrecognized] == [codes.CAUSE_UNRECOGNIZED_PARAMETER]
    assert msg.error_reply() is not None


def test_rfc_parameters_are_not_accepted_in_place_of_ours():
    # A Pool Handle where the Auth Mechanism belongs: the extension's messages
    # have their own parameter table, where 0x0009 is an unknown type whose
    # upper bits 00 say "stop processing, discard silently" (RFC 5354 3).
    with pytest.raises(WireError) as info:
        decode_message(h(msg(0x72, tlv(0x0009, "6563686f"), tlv(0x7F02, "61"))), ASAP)
    assert info.value.cause is None
    assert info.value.report is None


@pytest.mark.parametrize("build", [
    lambda: AsapAuthOffer(()),
    lambda: AsapAuthOffer(("A",) * 9),
    lambda: AsapAuthOffer(("x" * 33,)),
    lambda: AsapAuthHello("CHAP-MD5", ""),
    lambda: AsapAuthHello("CHAP-MD5", "é" * 128),
    lambda: AsapAuthHello("CHAP MD5", "pe"),
    lambda: AsapAuthSrpChallenge(b"s" * 7, b"B" * 256),
    lambda: AsapAuthSrpChallenge(b"s" * 16, b"B" * 255),
    lambda: AsapAuthSrpProof(b"A" * 256, b"M" * 33),
    lambda: AsapAuthChapChallenge(256, b"n" * 32),
    lambda: AsapAuthChapChallenge(1, b"n" * 31),
    lambda: AsapAuthChapResponse(-1, b"r" * 16),
    lambda: AsapAuthSuccess("SRP-6a-SHA256-2048", b"m" * 31),
    lambda: AsapAuthFailure(300),
    lambda: AsapAuthFailure(1, may_retry=1),
])
def test_constructors_refuse_bad_values(build):
    with pytest.raises(ValueError):
        build()


def test_failure_sizes_do_not_depend_on_the_code():
    sizes = {len(AsapAuthFailure(code, retry).encode()) for code in range(1, 7)
             for retry in (False, True)}
    assert sizes == {20}


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=0, max_size=400), st.sampled_from(sorted(AUTH_MESSAGE_TYPES)),
       st.integers(0, 255))
def test_garbage_bodies_raise_only_wire_errors(body, mtype, flags):
    data = bytes((mtype, flags)) + (4 + len(body)).to_bytes(2, "big") + body
    try:
        msg = decode_message(data, ASAP)
    except WireError:
        return
    assert decode_message(msg.encode(), ASAP) == msg


@pytest.mark.integration
def test_wireshark_reports_the_extension_as_unknown_not_malformed(tmp_path):
    from tests.test_wire_conformance import dissect

    samples = auth_samples()
    datas = [m.encode() for _, m in samples]
    for (_, msg), data, layers in zip(samples, datas, dissect("asap", datas, str(tmp_path))):
        assert "asap" in layers.get("frame.protocols", [""])[0].split(":"), msg.name
        assert "_ws.malformed" not in layers, msg.name
        assert not layers.get("_ws.expert.message"), (msg.name, layers.get("_ws.expert.message"))
        assert layers["_ws.col.Info"][0].startswith("Unknown ASAP type"), msg.name
        assert int(layers["asap.message_type"][0]) == msg.TYPE
        # The generic TLV walk agrees with our layout.
        assert [int(t, 16) for t in layers.get("asap.parameter_type", [])] == _param_types(data)


def _param_types(data: bytes) -> list[int]:
    out, pos, end = [], 4, int.from_bytes(data[2:4], "big")
    while pos < end:
        ptype, plen = int.from_bytes(data[pos:pos + 2], "big"), int.from_bytes(data[pos + 2:pos + 4], "big")
        out.append(ptype)  # an Operation Error's causes are not parameters: not entered
        pos += (plen + 3) & ~3
    return out
