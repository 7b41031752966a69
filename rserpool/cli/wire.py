"""``rserpool wire``: decode and encode ASAP/ENRP messages for operators.

``rserpool wire decode`` reads hex messages from standard input, one per
line, each optionally prefixed ``asap`` or ``enrp`` (default ``asap``);
whitespace inside the hex is allowed, text after ``#`` and blank lines are
ignored.  It prints one line per message: the message's readable form, or
with ``--json`` one JSON object (``message_to_json`` plus ``"line"``).  A
line that cannot be decoded or processed is printed as an error with its
RFC 5354 cause; "skip and report" parameters are printed as warnings with
the Operation Error a receiver would send back.  Exit status 1 if any line
failed, else 0.

``rserpool wire encode`` reads that JSON (one object per line) and prints
each message as hex, prefixed ``enrp`` for ENRP messages, so its output can
be fed to ``decode`` again.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterable, TextIO

__all__ = ["register", "run_decode", "run_encode", "parse_hex_line"]

PROTOCOLS = {"asap": 11, "enrp": 12}
#: Keys the decoder adds around ``message_to_json``; ``encode`` drops them.
_DECORATION = ("line", "warnings", "reply")


class InputError(Exception):
    """A line of input that is not a message at all (bad hex, bad JSON)."""


def register(subparsers: Any) -> None:
    """Add ``wire decode`` and ``wire encode`` to the ``rserpool`` parser."""
    wire = subparsers.add_parser(
        "wire",
        help="decode and encode ASAP/ENRP messages (hex <-> text/JSON)",
        description="Decode and encode RSerPool wire messages (RFC 5352-5354).",
    )
    commands = wire.add_subparsers(title="wire commands", metavar="COMMAND")
    wire.set_defaults(func=lambda args: _usage(wire))
    decode = commands.add_parser(
        "decode",
        help="hex messages on stdin -> readable text or JSON",
        description=(
            "Read hex messages from standard input, one per line, each optionally "
            "prefixed 'asap' or 'enrp' (default asap); text after '#' is ignored. "
            "Exit status 1 if any message is malformed or cannot be processed."
        ),
    )
    decode.add_argument("--json", action="store_true", help="print one JSON object per message")
    decode.set_defaults(func=lambda args: run_decode(sys.stdin, sys.stdout, as_json=args.json))
    encode = commands.add_parser(
        "encode",
        help="JSON messages on stdin (as 'decode --json' prints) -> hex",
        description="Read one JSON message per line and print its hex, prefixed 'enrp' for ENRP.",
    )
    encode.set_defaults(func=lambda args: run_encode(sys.stdin, sys.stdout, sys.stderr))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def parse_hex_line(line: str) -> tuple[str, bytes] | None:
    """``(protocol, data)`` for one input line, None for a blank/comment line.

    Raises :class:`InputError` for bad hex.
    """
    text = line.split("#", 1)[0].strip()
    if not text:
        return None
    protocol = "asap"
    head = text.split(None, 1)
    if head[0].lower() in PROTOCOLS:
        protocol = head[0].lower()
        text = head[1] if len(head) > 1 else ""
    digits = "".join(text.split())
    if not digits:
        raise InputError(f"no hex message after '{protocol}'")
    try:
        return protocol, bytes.fromhex(digits)
    except ValueError:
        bad = next((c for c in digits if c not in "0123456789abcdefABCDEF"), None)
        reason = f"invalid character {bad!r}" if bad else f"odd number of hex digits ({len(digits)})"
        raise InputError(f"not a hex message: {reason}") from None


def _cause_json(cause: Any) -> dict[str, Any]:
    return {"cause": cause.code, "name": cause.name, "info": cause.info.hex()}


def _cause_text(code: int | None) -> str:
    from rserpool.wire.codes import CAUSE_NAMES

    if code is None:
        return "no cause (discard silently)"
    return f"cause 0x{code:04x} ({CAUSE_NAMES.get(code, 'unknown cause')})"


def _reply_hex(causes: Any, ppid: int) -> str | None:
    """Hex of the ASAP_ERROR/ENRP_ERROR a receiver would send back."""
    from rserpool.wire import encode_message
    from rserpool.wire.messages import error_reply

    try:
        return encode_message(error_reply(causes, ppid)).hex()
    except (ValueError, KeyError):
        return None


def _one_line(text: str) -> str:
    return " ".join(text.split("\n"))


def _decode_one(lineno: int, line: str, as_json: bool) -> tuple[str | None, bool]:
    """The output line for one input line and whether it succeeded."""
    from rserpool.wire import WireError, decode_message

    try:
        parsed = parse_hex_line(line)
    except InputError as exc:
        if as_json:
            error = {"cause": None, "name": "malformed input", "detail": str(exc)}
            return json.dumps({"line": lineno, "error": error}), False
        return f"line {lineno}: error: malformed input: {exc}", False
    if parsed is None:
        return None, True
    protocol, data = parsed
    ppid = PROTOCOLS[protocol]
    try:
        message = decode_message(data, ppid)
    except WireError as exc:
        report = exc.report
        reply = _reply_hex(exc, ppid) if report else None
        if as_json:
            error = {
                "cause": exc.cause,
                "name": None if exc.cause is None else _cause_text(exc.cause).split(" (", 1)[1][:-1],
                "detail": exc.detail,
                "offending": exc.offending.hex(),
                "report": None if report is None else [_cause_json(c) for c in report],
                "reply": reply,
            }
            return json.dumps({"line": lineno, "protocol": protocol, "error": error}), False
        text = f"line {lineno}: error: {protocol} {_cause_text(exc.cause)}: {exc.detail}"
        if report:
            text += f"; report: {', '.join(str(c) for c in report)}; reply: {protocol} {reply}"
        return text, False
    warnings = tuple(getattr(message, "unrecognized", ()) or ())
    reply = _reply_hex(warnings, ppid) if warnings else None
    if as_json:
        from rserpool.wire.jsonform import message_to_json

        obj = {"line": lineno, **message_to_json(message)}
        if warnings:
            obj["warnings"] = [_cause_json(c) for c in warnings]
            obj["reply"] = reply
        return json.dumps(obj), True
    text = _one_line(str(message))
    if warnings:
        if "unrecognized=" not in text:
            text += f" unrecognized=[{', '.join(str(c) for c in warnings)}]"
        text += f"  [warning: {len(warnings)} parameter(s) skipped, to report; reply: {protocol} {reply}]"
    return text, True


def run_decode(stdin: TextIO, stdout: TextIO, *, as_json: bool = False) -> int:
    """``rserpool wire decode``: returns the exit status."""
    status = 0
    for lineno, line in enumerate(stdin, 1):
        output, ok = _decode_one(lineno, line, as_json)
        if output is not None:
            stdout.write(output + "\n")
        if not ok:
            status = 1
    stdout.flush()
    return status


def _json_lines(stdin: TextIO) -> Iterable[tuple[int, str]]:
    for lineno, line in enumerate(stdin, 1):
        text = line.strip()
        if text and not text.startswith("#"):
            yield lineno, text


def _encode_one(text: str) -> str:
    from rserpool.wire import WireError, encode_message

    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InputError(f"expected a JSON object, got {type(obj).__name__}")
    if "type" not in obj and isinstance(obj.get("error"), dict):
        # decode --json's record of a failed line (messages carry "type";
        # ASAP/ENRP_ERROR and some responses have a field named "error")
        where = f" of line {obj['line']}" if isinstance(obj.get("line"), int) else ""
        raise InputError(f"this line records a decoding error{where}, not a message")
    obj = {k: v for k, v in obj.items() if k not in _DECORATION}
    from rserpool.wire.jsonform import message_from_json

    try:
        message = message_from_json(obj)
        data = encode_message(message)
    except (WireError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InputError(f"not a valid message: {type(exc).__name__}: {exc}") from None
    prefix = "enrp " if getattr(message, "protocol", "asap") == "enrp" else ""
    return prefix + data.hex()


def run_encode(stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    """``rserpool wire encode``: returns the exit status."""
    status = 0
    for lineno, text in _json_lines(stdin):
        try:
            stdout.write(_encode_one(text) + "\n")
        except InputError as exc:
            stderr.write(f"rserpool wire encode: line {lineno}: {exc}\n")
            status = 1
    stdout.flush()
    return status
