"""etc/rserpool-registrar.service: hardened, unprivileged, and its command line is valid."""

from __future__ import annotations

import json
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "etc" / "rserpool-registrar.service"


def _directives() -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        result.setdefault(key.strip(), []).append(value.strip())
    return result


def test_runs_unprivileged_with_the_usual_hardening():
    unit = _directives()
    assert unit["User"] == ["rserpool"] and unit["Group"] == ["rserpool"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "PrivateDevices": "yes", "StateDirectory": "rserpool",
                       "CapabilityBoundingSet": "", "RestrictSUIDSGID": "yes", "UMask": "0077"}.items():
        assert unit[key] == [value], key
    assert "@system-service" in unit["SystemCallFilter"]


def test_the_command_line_is_a_valid_twistd_command(tmp_path):
    """ExecStart parsed by twistd itself (with a real configuration file in
    place of /etc/rserpool/registrar.ini): JSON logs, no pid file, the state
    directory systemd creates."""
    from twisted.scripts.twistd import ServerOptions

    (command,) = _directives()["ExecStart"]
    words = shlex.split(command)
    assert words[0].endswith("/twistd")
    assert words[words.index("--state-dir") + 1] == "/var/lib/rserpool"
    assert words[words.index("--logger") + 1] == "rserpool.logformat.json_observer"
    (tmp_path / "authz.rules").write_text("")
    ini = tmp_path / "registrar.ini"
    # A free port: parsing runs the start-up checks, which try to bind the listener.
    ini.write_text("[registrar]\nasap_listen = tcp:0:interface=127.0.0.1\n[security]\nrules = authz.rules\n")
    words[words.index("--config") + 1] = str(ini)
    options = ServerOptions()
    options.parseOptions(words[1:])
    assert options["nodaemon"] and options["pidfile"] == ""
    assert options.subCommand == "rserpool-registrar"
    from rserpool.logformat import json_observer

    assert options["logger"] is json_observer


@pytest.mark.integration
def test_systemd_accepts_the_unit(tmp_path):
    analyze = require_tool("systemd-analyze")
    unit = tmp_path / "rserpool-registrar.service"
    # verify checks that the command exists: point it at one that does.
    unit.write_text(UNIT.read_text().replace("/opt/rserpool/.venv/bin/twistd", "/bin/true"))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if "rserpool-registrar" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr
    security = subprocess.run([analyze, "security", "--offline=yes", str(unit)], capture_output=True, text=True,
                              timeout=60)
    overall = [line for line in security.stdout.splitlines() if "Overall exposure level" in line]
    assert overall, security.stdout[-2000:] + security.stderr[-2000:]
    level = float(overall[0].split("level for")[1].split(":")[1].split()[0])
    assert level <= 2.0, overall[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.integration
def test_the_installed_configuration_runs_with_the_units_command_line(tmp_path):
    """The unit's header installs etc/registrar.ini and etc/authz.rules in
    /etc/rserpool: with those two files (free ports instead of the fixed
    ones), the unit's ExecStart starts a registrar that writes one JSON
    object per line, says where it listens, and keeps its state in the
    state directory."""
    header = [line for line in UNIT.read_text().splitlines() if line.startswith("#   install ")]
    installed = [word for line in header for word in line.split() if word.startswith("etc/")]
    assert installed == ["etc/registrar.ini", "etc/authz.rules", "etc/rserpool-registrar.service"]
    config_dir, state_dir = tmp_path / "etc-rserpool", tmp_path / "state"
    config_dir.mkdir()
    state_dir.mkdir(mode=0o700)
    ports = {"3864": str(_free_port()), "8864": str(_free_port()), "3863": str(_free_port())}
    for name in installed[:2]:
        text = (ROOT / name).read_text()
        (config_dir / Path(name).name).write_text(
            re.sub(r"(?<=[:=])(3864|8864|3863)\b", lambda m: ports[m.group(1)], text))
    (command,) = _directives()["ExecStart"]
    words = shlex.split(command)
    words[0] = str(Path(sys.executable).parent / "twistd")
    words[words.index("--config") + 1] = str(config_dir / "registrar.ini")
    words[words.index("--state-dir") + 1] = str(state_dir)
    process = subprocess.Popen(words, cwd=state_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, stdin=subprocess.DEVNULL)
    records: list[dict] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            records.append(json.loads(line))  # every line is one JSON object
            if "listening for ASAP" in records[-1]["message"]:
                break
        # Listening starts before the reactor runs (and handles SIGTERM): a
        # connection it answers (non-TLS bytes: an alert, then a close) shows it does.
        with socket.create_connection(("127.0.0.1", int(ports["3864"])), timeout=20) as probe:
            probe.sendall(b"not TLS\r\n" * 4)
            while probe.recv(4096):
                pass
    finally:
        process.send_signal(signal.SIGTERM)
        out = process.stdout.read()  # to the end: the shut-down lines
        err = process.stderr.read()
        process.wait(timeout=30)
    records += [json.loads(line) for line in out.splitlines()]
    messages = [record["message"] for record in records]
    assert any(m.endswith(f"listening for ASAP on 127.0.0.1:{ports['3864']} (TLS)") for m in messages), \
        messages + [err]
    assert (state_dir / "pki" / "ca.pem").exists()
    # systemd's stop: SIGTERM, and twistd exits by it after a clean shut-down
    # (systemd counts that as success).
    assert process.returncode in (0, -signal.SIGTERM), err
    assert messages[-1] == "Server Shut Down.", messages[-5:]
