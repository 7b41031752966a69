"""Tests of the ``rserpool`` dispatcher and ``rserpool wire decode/encode``."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rserpool.cli import main
from rserpool.wire import PPID_ASAP, PPID_ENRP, decode_message, encode_message

# Hand-built from RFC 5352/5354: ASAP_REGISTRATION for pool "EchoPool", PE
# 0x12345678, TCP transport 127.0.0.1:8001, LU policy with load 0x1000.
REGISTRATION = (
    "0100003c 0009000c 4563686f 506f6f6c 000a002c 12345678 5e4f3d2c 0000012c"
    " 00050010 1f410000 00010008 7f000001 0008000c 40000001 00001000"
)
# ASAP_HANDLE_RESOLUTION "EchoPool" followed by one extra parameter of type X.
RESOLUTION_WITH = "05000018 0009000c 4563686f 506f6f6c {:04x}0008 00000001"
ENRP_LIST_REQUEST = "0500000c 11111111 22222222"


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], stdin: str):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


def decoded(hexdata: str, ppid: int = PPID_ASAP):
    return decode_message(bytes.fromhex(hexdata.replace(" ", "")), ppid)


# ---------------------------------------------------------------------------
# decode, text


def test_decode_prints_readable_messages(monkeypatch, capsys) -> None:
    text = f"""
# comment line
{REGISTRATION}   # trailing comment
asap {REGISTRATION.replace(' ', '')}

ENRP {ENRP_LIST_REQUEST}
"""
    status, lines, err = run(monkeypatch, capsys, ["wire", "decode"], text)
    assert status == 0, lines
    assert lines == [
        str(decoded(REGISTRATION)),
        str(decoded(REGISTRATION)),
        str(decoded(ENRP_LIST_REQUEST, PPID_ENRP)),
    ]
    assert lines[0].startswith("ASAP_REGISTRATION") and "'EchoPool'" in lines[0]
    assert lines[2].startswith("ENRP_LIST_REQUEST")


def test_protocol_prefix_selects_the_codec(monkeypatch, capsys) -> None:
    # 0x05 is HANDLE_RESOLUTION in ASAP but LIST_REQUEST in ENRP.
    status, lines, _ = run(monkeypatch, capsys, ["wire", "decode"], f"asap {ENRP_LIST_REQUEST}\nenrp {ENRP_LIST_REQUEST}\n")
    assert status == 1
    assert lines[0].startswith("line 1: error: asap cause 0x0000 (Unspecified Error)")
    assert lines[1].startswith("ENRP_LIST_REQUEST")


@pytest.mark.parametrize(
    "line,expected",
    [
        ("7f000004", "line 1: error: asap cause 0x0002 (Unrecognized Message): unknown ASAP message type 0x7f"),
        ("enrp 7f000004", "line 1: error: enrp cause 0x0002 (Unrecognized Message)"),
        ("3f000004", "line 1: error: asap no cause (discard silently): unknown ASAP message type 0x3f"),
        (RESOLUTION_WITH.format(0x4001), "line 1: error: asap cause 0x0001 (Unrecognized Parameter)"),
        (RESOLUTION_WITH.format(0x0401), "line 1: error: asap no cause (discard silently)"),
        (RESOLUTION_WITH.format(0x0001), "line 1: error: asap cause 0x0003 (Invalid Values)"),
        ("01000008 00090004", "line 1: error: asap cause 0x0003 (Invalid Values)"),
        ("0100", "line 1: error: asap cause 0x0000 (Unspecified Error): message of 2 bytes"),
        ("zz", "line 1: error: malformed input: not a hex message: invalid character 'z'"),
        ("010", "line 1: error: malformed input: not a hex message: odd number of hex digits (3)"),
        ("enrp", "line 1: error: malformed input: no hex message after 'enrp'"),
    ],
)
def test_decode_errors(monkeypatch, capsys, line: str, expected: str) -> None:
    status, lines, _ = run(monkeypatch, capsys, ["wire", "decode"], line + "\n")
    assert status == 1
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_reported_errors_carry_the_reply(monkeypatch, capsys) -> None:
    status, lines, _ = run(monkeypatch, capsys, ["wire", "decode"], "7f000004\n")
    assert status == 1
    reply_hex = lines[0].rsplit("reply: asap ", 1)[1]
    reply = decode_message(bytes.fromhex(reply_hex), PPID_ASAP)
    assert type(reply).__name__ == "AsapError"
    (cause,) = reply.error.causes
    assert (cause.code, cause.info) == (0x0002, bytes.fromhex("7f000004"))


def test_skip_and_report_is_a_warning(monkeypatch, capsys) -> None:
    text = RESOLUTION_WITH.format(0xC001) + "\n" + RESOLUTION_WITH.format(0x8001) + "\n"
    status, lines, _ = run(monkeypatch, capsys, ["wire", "decode"], text)
    assert status == 0
    assert lines[0].startswith("ASAP_HANDLE_RESOLUTION handle='EchoPool'")
    assert "warning: 1 parameter(s) skipped, to report" in lines[0]
    reply = decode_message(bytes.fromhex(lines[0].rsplit("reply: asap ", 1)[1].rstrip("]")), PPID_ASAP)
    assert reply.error.causes[0].code == 0x0001
    assert reply.error.causes[0].info == bytes.fromhex("c0010008 00000001")
    # plain skip: no warning
    assert lines[1] == str(decoded(RESOLUTION_WITH.format(0x8001))) and "warning" not in lines[1]


def test_one_bad_line_does_not_stop_the_others(monkeypatch, capsys) -> None:
    status, lines, _ = run(monkeypatch, capsys, ["wire", "decode"], f"zz\n\n{REGISTRATION}\n")
    assert status == 1
    assert lines[0].startswith("line 1: error") and lines[1].startswith("ASAP_REGISTRATION")


def test_empty_input(monkeypatch, capsys) -> None:
    assert run(monkeypatch, capsys, ["wire", "decode"], "") == (0, [], "")
    assert run(monkeypatch, capsys, ["wire", "decode"], "# nothing\n\n   \n") == (0, [], "")


# ---------------------------------------------------------------------------
# decode --json and encode


def test_decode_json(monkeypatch, capsys) -> None:
    from rserpool.wire.jsonform import message_to_json

    text = f"{REGISTRATION}\n# c\n7f000004\n3f000004\nbad\n{RESOLUTION_WITH.format(0xC001)}\n"
    status, lines, _ = run(monkeypatch, capsys, ["wire", "decode", "--json"], text)
    assert status == 1
    objs = [json.loads(line) for line in lines]
    assert objs[0] == {"line": 1, **message_to_json(decoded(REGISTRATION))}
    assert objs[1]["line"] == 3 and objs[1]["protocol"] == "asap"
    assert objs[1]["error"]["cause"] == 2 and objs[1]["error"]["name"] == "Unrecognized Message"
    assert objs[1]["error"]["report"] == [{"cause": 2, "name": "Unrecognized Message", "info": "7f000004"}]
    assert objs[2]["error"]["cause"] is None and objs[2]["error"]["report"] is None
    assert objs[3] == {"line": 5, "error": {"cause": None, "name": "malformed input", "detail": objs[3]["error"]["detail"]}}
    assert objs[4]["line"] == 6
    assert objs[4]["warnings"] == [{"cause": 1, "name": "Unrecognized Parameter", "info": "c001000800000001"}]
    assert objs[4]["reply"]


def _sample_messages() -> list:
    from rserpool.wire.samples import all_samples

    out = []
    for item in all_samples():
        # accept either bare messages or (name, message) pairs
        message = item[-1] if isinstance(item, tuple) else item
        out.append(message)
    return out


def test_round_trip_every_sample(monkeypatch, capsys) -> None:
    messages = _sample_messages()
    assert messages
    assert {m.PPID for m in messages} == {PPID_ASAP, PPID_ENRP}
    hex_lines = [("enrp " if m.PPID == PPID_ENRP else "") + encode_message(m).hex() for m in messages]
    status, json_lines, _ = run(monkeypatch, capsys, ["wire", "decode", "--json"], "\n".join(hex_lines) + "\n")
    assert status == 0, [line for line in json_lines if '"error"' in line]
    assert len(json_lines) == len(messages)
    status, encoded, err = run(monkeypatch, capsys, ["wire", "encode"], "\n".join(json_lines) + "\n")
    assert (status, err) == (0, "")
    assert encoded == hex_lines
    # and the text form decodes every sample
    status, text_lines, _ = run(monkeypatch, capsys, ["wire", "decode"], "\n".join(hex_lines) + "\n")
    assert status == 0
    assert text_lines == [str(m) for m in messages]


@pytest.mark.parametrize(
    "line,expected",
    [
        ("{not json", "line 1: invalid JSON"),
        ("[1, 2]", "line 1: expected a JSON object, got list"),
        ('{"line": 3, "error": {"cause": 2}}', "line 1: this line records a decoding error of line 3"),
        ('{"type": "no-such-message"}', "line 1: not a valid message"),
    ],
)
def test_encode_errors(monkeypatch, capsys, line: str, expected: str) -> None:
    status, out, err = run(monkeypatch, capsys, ["wire", "encode"], f"{line}\n")
    assert status == 1 and out == []
    assert err.startswith(f"rserpool wire encode: {expected}"), err


def test_encode_keeps_going_after_an_error(monkeypatch, capsys) -> None:
    from rserpool.wire.jsonform import message_to_json

    good = json.dumps(message_to_json(decoded(ENRP_LIST_REQUEST, PPID_ENRP)))
    status, out, err = run(monkeypatch, capsys, ["wire", "encode"], f"# comment\n{{bad\n\n{good}\n")
    assert status == 1
    assert out == ["enrp " + ENRP_LIST_REQUEST.replace(" ", "")]
    assert err.startswith("rserpool wire encode: line 2: invalid JSON")


# ---------------------------------------------------------------------------
# dispatcher and console script


def test_usage_errors(monkeypatch, capsys) -> None:
    assert run(monkeypatch, capsys, [], "")[0] == 2
    assert run(monkeypatch, capsys, ["wire"], "")[0] == 2
    with pytest.raises(SystemExit) as excinfo:
        main(["wire", "frobnicate"])
    assert excinfo.value.code == 2
    with pytest.raises(SystemExit) as excinfo:
        main(["--version"])
    assert excinfo.value.code == 0


def _console_script() -> list[str]:
    script = Path(sys.executable).parent / "rserpool"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rserpool.cli"]


def test_console_script() -> None:
    command = _console_script() + ["wire", "decode"]
    good = subprocess.run(command, input=f"{REGISTRATION}\n", capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("ASAP_REGISTRATION handle='EchoPool'")
    bad = subprocess.run(command, input="7f000004\n", capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "cause 0x0002 (Unrecognized Message)" in bad.stdout
    module = subprocess.run(
        [sys.executable, "-m", "rserpool.cli", "wire", "decode"], input="3f000004\n", capture_output=True, text=True, timeout=60
    )
    assert module.returncode == 1 and "discard silently" in module.stdout
