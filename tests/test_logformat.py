"""JSON log lines (rserpool.logformat)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

from twisted.logger import LogLevel, Logger
from twisted.python.failure import Failure

from rserpool.logformat import event_as_json, json_observer


def _events(emit) -> list[dict]:
    out = io.StringIO()
    log = Logger(namespace="rserpool.test", observer=json_observer(out))
    emit(log)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_one_json_object_per_line_with_the_format_fields_only():
    (record,) = _events(lambda log: log.info("PE {pe_id:08x} registered in pool {handle} by {identity}",
                                             pe_id=1, handle="echo", identity="pe1", secret="hunter2"))
    assert record["level"] == "info" and record["namespace"] == "rserpool.test"
    assert record["message"] == "PE 00000001 registered in pool echo by pe1"
    assert record["fields"] == {"pe_id": 1, "handle": "echo", "identity": "pe1"}
    assert "hunter2" not in json.dumps(record)
    assert record["time"].endswith("Z")


def test_levels_failures_and_odd_values():
    def emit(log):
        try:
            1 / 0
        except ZeroDivisionError:
            log.failure("it broke for {who}", Failure(), who=object())
        log.warn("bytes {b} and a broken format {", b=b"\xff\x00")
        log.error("no fields")

    failure, warning, error = _events(emit)
    assert failure["level"] == "critical" and "ZeroDivisionError" in failure["failure"]
    assert failure["fields"]["who"].startswith("<object object")
    assert warning["level"] == "warn" and "fields" not in warning
    assert error["level"] == "error" and error["message"] == "no fields"
    assert event_as_json({"log_level": LogLevel.debug}).endswith("\n")


def test_twistd_takes_it_as_its_logger(tmp_path):
    """``twistd --logger rserpool.logformat.json_observer`` writes JSON lines."""
    rules = tmp_path / "authz.rules"
    rules.write_text("")
    ini = tmp_path / "registrar.ini"
    ini.write_text(f"[registrar]\nasap_listen = tcp:port=0:interface=127.0.0.1\nstate_dir = {tmp_path}\n"
                   f"[security]\nrules = {rules}\n[admin]\nlisten = tcp:port=0:interface=127.0.0.1\n")
    code = ("import sys; from twisted.scripts.twistd import run; sys.argv = ['twistd', '--nodaemon', '--pidfile=',"
            " '--logger', 'rserpool.logformat.json_observer', 'rserpool-registrar', '--config', sys.argv[1]];"
            " from twisted.internet import reactor; reactor.callLater(3, reactor.stop); run()")
    result = subprocess.run([sys.executable, "-c", code, str(ini)], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert records, result.stdout[-2000:] + result.stderr[-2000:]
    messages = [r["message"] for r in records]
    assert any("listening for ASAP" in m for m in messages), messages
    assert any("admin endpoint listening" in m for m in messages), messages
    assert all(line.startswith("{") for line in result.stdout.splitlines() if line.strip())
    assert not any("Starting factory" in m for m in messages)  # bookkeeping is debug


def test_debug_events_are_left_out():
    out = io.StringIO()
    log = Logger(namespace="rserpool.test", observer=json_observer(out))
    log.debug("hidden {x}", x=1)
    log.info("shown")
    assert [json.loads(line)["message"] for line in out.getvalue().splitlines()] == ["shown"]
