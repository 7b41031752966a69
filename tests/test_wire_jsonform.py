"""JSON form: lossless, readable; samples cover every message type."""

import json

import pytest

from rserpool.wire import PPID_ASAP, ErrorCause, decode_message
from rserpool.wire.jsonform import bytes_from_json, bytes_to_json, message_from_json, message_to_json
from rserpool.wire.samples import all_samples


@pytest.mark.parametrize("ppid,msg", all_samples(), ids=[m.name for _, m in all_samples()])
def test_samples_round_trip_through_bytes_and_json(ppid, msg):
    data = msg.encode()
    assert decode_message(data, ppid) == msg
    form = message_to_json(msg)
    assert form["type"] == msg.name and form["protocol"] == ("asap" if ppid == PPID_ASAP else "enrp")
    assert message_from_json(json.loads(json.dumps(form))) == msg


def test_samples_cover_every_type():
    names = [m.name for _, m in all_samples()]
    assert len(names) == len(set(names)) == 24


def test_readable_form():
    reg = next(m for _, m in all_samples() if m.name == "ASAP_REGISTRATION")
    form = message_to_json(reg)
    assert form["pool_handle"] == {"text": "echo-pool"}
    assert form["pool_element"]["user_transport"] == {
        "type": "tcp", "port": 7, "address": "127.0.0.1", "transport_use": 0}
    assert form["pool_element"]["policy"] == {"type": "LU", "load": 0x10000000}
    assert bytes_to_json(b"\x00\xff") == {"hex": "00ff"}
    assert bytes_from_json({"hex": "00ff"}) == b"\x00\xff"


def test_unrecognized_causes_are_kept():
    data = bytes.fromhex("05 00 0014 c001 0006 beef 0000 0009 0008 6563686f")
    msg = decode_message(data, PPID_ASAP)
    assert msg.unrecognized == (ErrorCause(1, bytes.fromhex("c0010006beef")),)
    back = message_from_json(json.loads(json.dumps(message_to_json(msg))))
    assert back == msg and back.unrecognized == msg.unrecognized


@pytest.mark.parametrize("bad", [
    {"type": "NOPE"}, {"protocol": "enrp", "type": "ASAP_COOKIE", "cookie": {"hex": ""}}, [],
    {"type": "ASAP_HANDLE_RESOLUTION", "pool_handle": {"hex": ""}},
    {"type": "ASAP_REGISTRATION", "pool_handle": {"text": "x"}},
    {"type": "ASAP_REGISTRATION", "pool_handle": {"text": "x"}, "pool_element": {"pe_id": 1}},
    {"type": "ASAP_ERROR", "error": {"causes": [{"code": "x"}]}},
])
def test_invalid_json_forms(bad):
    with pytest.raises(ValueError):
        message_from_json(bad)
