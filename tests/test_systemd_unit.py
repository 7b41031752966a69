"""etc/rserpool-registrar.service: hardened, unprivileged, and its command line is valid."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool

UNIT = Path(__file__).resolve().parent.parent / "etc" / "rserpool-registrar.service"


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
