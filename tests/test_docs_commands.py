"""Every command shown in README.md and docs/cli.md, run as written, with
its output checked against the text.

The commands are taken from the ```console blocks of the two files: a line
``$ command`` (continued by a trailing backslash) is run with bash, and the
lines after it, up to the next ``$`` line, are what it must print (standard
output and standard error, each in order, interleaved in any way).  In an
expected line ``...`` stands for any text; a line that is only ``...``
stands for any number of lines.  ``$ echo $?`` checks the exit status of
the command before it; ``$ export ...`` sets variables for the commands
after it; ``$ cat FILE`` for a file that does not exist yet creates it with
the lines shown (how the docs show an input file).

They run in a scratch copy of the checkout (``scripts/``, ``etc/``, a link
to ``.venv``) in which the fixed ports of the documentation and of
``etc/*.ini`` (3864 ASAP, 3863 announces, 8864 admin) are replaced by free
loopback ports.  Commands that start a registrar (``scripts/run``,
``twistd ...`` whose output ends with ``...``) are servers: each runs
until its expected lines have appeared and is then stopped with SIGINT (and
must exit cleanly);
``scripts/run`` (the README's demo) is the live registrar the other
commands talk to, and its whole log must hold nothing above info.
``scripts/test`` (the whole suite, of which this test is part) is run with
``--collect-only``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pytest

from tests.conftest import require_tool

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "README.md", ROOT / "docs" / "cli.md")
SERVER_TIMEOUT = 90.0


@dataclass
class Command:
    source: str  # file:line
    text: str
    expected: list[str] = field(default_factory=list)

    @property
    def is_server(self) -> bool:
        """A registrar that runs until stopped: ``scripts/run`` or ``twistd``
        whose output goes on (its shown output ends with a ``...`` line); a
        ``twistd`` that must end by itself (a start-up failure) is not."""
        words = self.text.split()
        if not words or not (words[0] == "scripts/run" or "twistd" in words[0]):
            return False
        return words[0] == "scripts/run" or (bool(self.expected) and self.expected[-1].strip() == "...")


def console_commands(path: Path) -> list[Command]:
    """The ``$`` commands of every ```console block of ``path``."""
    commands: list[Command] = []
    inside = False
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            inside = line.strip() == "```console" and not inside
            i += 1
            continue
        if inside:
            if line.startswith("$ "):
                text, start = line[2:], i + 1
                while text.endswith("\\"):
                    i += 1
                    text = text[:-1].rstrip() + " " + lines[i].strip()
                commands.append(Command(f"{path.name}:{start}", text))
            elif commands:
                commands[-1].expected.append(line)
        i += 1
    return commands


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ports:
    """The documentation's fixed ports and the free ones used instead."""

    def __init__(self) -> None:
        self.map = {"3864": str(free_port()), "8864": str(free_port()),
                    "3863": str(free_port(socket.SOCK_DGRAM))}

    def __call__(self, text: str) -> str:
        return re.sub(r"(?<=[:=])(3864|8864|3863)\b", lambda m: self.map[m.group(1)], text)


# -- matching -------------------------------------------------------------------------------


def _line_pattern(expected: str) -> re.Pattern:
    parts = expected.split("...")
    return re.compile("^" + ".*".join(re.escape(p) for p in parts) + "$", re.S)


def matches(expected: list[str], out: list[str], err: list[str]) -> bool:
    """``expected`` against standard output and error, each kept in order."""
    patterns = [None if e.strip() == "..." else _line_pattern(e) for e in expected]

    @lru_cache(maxsize=None)
    def go(i: int, o: int, e: int) -> bool:
        if i == len(patterns):
            return o == len(out) and e == len(err)
        pattern = patterns[i]
        if pattern is None:  # any number of lines
            if go(i + 1, o, e):
                return True
            return (o < len(out) and go(i, o + 1, e)) or (e < len(err) and go(i, o, e + 1))
        return ((o < len(out) and bool(pattern.match(out[o])) and go(i + 1, o + 1, e))
                or (e < len(err) and bool(pattern.match(err[e])) and go(i + 1, o, e + 1)))

    return go(0, 0, 0)


# -- running ------------------------------------------------------------------------------


class Workspace:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ports = Ports()
        shutil.copytree(ROOT / "scripts", directory / "scripts")
        shutil.copytree(ROOT / "etc", directory / "etc")
        for ini in (directory / "etc").glob("*.ini"):
            ini.write_text(self.ports(ini.read_text()))
        (directory / ".venv").symlink_to(ROOT / ".venv")
        self.env = dict(os.environ)
        self.env["PATH"] = f"{directory / '.venv' / 'bin'}{os.pathsep}{self.env.get('PATH', '')}"
        self.env.pop("PYTHONPATH", None)
        self.last_status = 0

    def fail(self, command: Command, why: str, out: str = "", err: str = "") -> None:
        expected = "\n".join(self.ports(line) for line in command.expected)
        pytest.fail(f"{command.source}: $ {self.ports(command.text)}\n{why}\n"
                    f"--- expected\n{expected}\n--- stdout\n{out}--- stderr\n{err}")

    def run(self, command: Command) -> None:
        text = self.ports(command.text)
        expected = [self.ports(line) for line in command.expected]
        if text.strip() == "echo $?":
            if expected != [str(self.last_status)]:
                self.fail(command, f"exit status {self.last_status}")
            return
        if text.startswith("export "):
            for word in shlex.split(text)[1:]:
                name, _, value = word.partition("=")
                self.env[name] = value
            return
        words = shlex.split(text, comments=True)
        if words[:1] == ["cat"] and len(words) == 2 and not (self.dir / words[1]).exists():
            (self.dir / words[1]).write_text("\n".join(command.expected) + "\n")
            return
        if words[:1] == ["scripts/test"]:
            # The suite is running this test: check that it collects.
            result = subprocess.run([str(ROOT / "scripts" / "test"), "--collect-only", "-q",
                                     "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True,
                                    text=True, timeout=600)
            if result.returncode != 0 or "tests collected" not in result.stdout:
                self.fail(command, f"exit status {result.returncode}", result.stdout[-2000:],
                          result.stderr[-2000:])
            return
        result = subprocess.run(["bash", "-c", text], cwd=self.dir, env=self.env,
                                capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        self.last_status = result.returncode
        if not matches(expected, result.stdout.splitlines(), result.stderr.splitlines()):
            self.fail(command, f"exit status {result.returncode}", result.stdout, result.stderr)


class Server:
    """A documented command that runs a registrar until it is stopped."""

    def __init__(self, workspace: Workspace, command: Command) -> None:
        self.workspace = workspace
        self.command = command
        self.log_path = workspace.dir / f"server-{free_port()}.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            ["bash", "-c", "exec " + workspace.ports(command.text)], cwd=workspace.dir,
            env=workspace.env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)

    def lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def wait_for_expected(self) -> None:
        expected = [self.workspace.ports(line) for line in self.command.expected]
        if not expected or expected[-1].strip() != "...":
            expected.append("...")  # a server goes on logging
        deadline = time.monotonic() + SERVER_TIMEOUT
        while time.monotonic() < deadline:
            if matches(expected, self.lines(), []):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        self.workspace.fail(self.command, "the server never printed the lines shown "
                                          f"(exit status {self.process.returncode})",
                            "\n".join(self.lines()[-60:]) + "\n")

    def stop_cleanly(self) -> None:
        """Ctrl-C: twistd stops its services and exits by the signal (as a
        shell's Ctrl-C does: status -SIGINT here, 130 in a shell)."""
        status = self.stop()
        lines = self.lines()
        assert status in (0, -signal.SIGINT), f"{self.command.source}: exit status {status}"
        assert lines and lines[-1].endswith("Server Shut Down."), \
            f"{self.command.source}: no clean shut-down:\n" + "\n".join(lines[-20:])

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
        return self.process.returncode


def test_documented_commands_do_what_the_text_says(tmp_path):
    require_tool("curl")
    commands = [c for path in DOCS for c in console_commands(path)]
    assert len(commands) > 30  # the parser found the examples
    workspace = Workspace(tmp_path)
    demo = [c for c in commands if c.text.split()[:1] == ["scripts/run"]]
    assert len(demo) == 1
    # Other registrars first, one at a time (they use the same ports).
    for command in commands:
        if command.is_server and command not in demo:
            server = Server(workspace, command)
            server.wait_for_expected()
            server.stop_cleanly()
    live = Server(workspace, demo[0])
    try:
        live.wait_for_expected()
        for command in commands:
            if not command.is_server:
                workspace.run(command)
    finally:
        live.stop_cleanly()
    loud = [line for line in live.lines()
            if re.search(r"#(warn|error|critical)\]", line) or "Traceback" in line]
    assert loud == [], "the demo's log, at the default level, holds:\n" + "\n".join(loud)


def test_the_matcher_can_fail():
    assert matches(["a ... c", "..."], ["a b c", "d"], [])
    assert matches(["x", "y"], ["y"], ["x"])  # stderr and stdout interleaved
    assert not matches(["a ... c"], ["a b d"], [])
    assert not matches(["x"], ["x", "extra"], [])
    assert not matches(["x", "y"], ["y", "x"], [])  # one stream keeps its order


def test_the_parser_reads_continuations_and_outputs(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("text\n```console\n$ one \\\n   two\nout 1\n$ three\n```\n    $ not this\n")
    commands = console_commands(doc)
    assert [(c.text, c.expected) for c in commands] == [("one two", ["out 1"]), ("three", [])]
