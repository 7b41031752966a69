"""``rserpool echo`` against a loopback registrar and an echo PE (session
layer, TLS), run as a child process: the echoes, and for each mistake one
readable line, a non-zero exit, well within the deadline."""

from __future__ import annotations

import os
import random
import secrets
import socket
import sys
import tempfile
from pathlib import Path

import pytest
from twisted.internet import defer, protocol, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from rserpool.asap.registrar import RegistrarSettings
from rserpool.demo.echo_pe import echo_pool_element
from rserpool.demo.echo_session import echo_session_server
from tests.asaphelpers import AllowAll, registrar_port, start_registrar
from tests.echohelpers import EchoPoolCase
from tests.tlshelpers import make_test_pki

REPO = Path(__file__).resolve().parent.parent


def cli_in_child(argv: list[str], stdin: bytes = b"") -> defer.Deferred:
    """``rserpool argv`` in a child process with ``stdin``: (out, err, status)."""
    code = ("import sys; from rserpool.cli import main; sys.exit(main(sys.argv[1:]))")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    from twisted.internet import protocol

    done: defer.Deferred = defer.Deferred()

    class Collect(protocol.ProcessProtocol):
        def __init__(self) -> None:
            self.out, self.err = [], []

        def connectionMade(self) -> None:
            self.transport.write(stdin)
            self.transport.closeStdin()

        def outReceived(self, data: bytes) -> None:
            self.out.append(data)

        def errReceived(self, data: bytes) -> None:
            self.err.append(data)

        def processEnded(self, reason) -> None:
            done.callback((b"".join(self.out), b"".join(self.err), reason.value.exitCode))

    reactor.spawnProcess(Collect(), sys.executable, [sys.executable, "-c", code, *argv],
                         env=env, path=str(REPO))
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
class EchoCommand(unittest.TestCase):
    timeout = 90

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.pki = make_test_pki(Path(cls._tmp.name))

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    @defer.inlineCallbacks
    def setUp(self):
        self.registrar = yield start_registrar(
            reactor, self.pki, authorizer=AllowAll(),
            settings=RegistrarSettings(server_id=random.randrange(1, 2**32)))
        self.port = registrar_port(self.registrar)
        self.echo = echo_pool_element(
            reactor, registrars=[f"127.0.0.1:{self.port} localhost"], ca=self.pki.ca.cert,
            cert=self.pki.pe1.cert, key=self.pki.pe1.key, server_cert=self.pki.server.cert,
            server_key=self.pki.server.key,
            protocol_factory=echo_session_server(reactor, cookie_key=secrets.token_bytes(32)),
            hunt_options=dict(t5_initial=1.0, attempt_timeout=2.0))
        yield self.echo.start()
        yield self.echo.pe.registered()

    @defer.inlineCallbacks
    def tearDown(self):
        yield self.echo.stopService()
        yield self.registrar.stopService()

    def argv(self, *extra: str, port: int | None = None) -> list[str]:
        return ["echo", "--registrar", f"127.0.0.1:{port or self.port}", "--registrar-name",
                "localhost", "--ca", str(self.pki.ca.cert), *extra]

    @defer.inlineCallbacks
    def test_lines_are_echoed(self):
        out, err, status = yield cli_in_child(self.argv("--timeout", "20"), b"one\ntwo\n")
        self.assertEqual(status, 0, err)
        self.assertEqual(out, b"one\ntwo\n")
        self.assertRegex(err.decode(), r"^# connected to PE [0-9a-f]{8} \(tcp:127\.0\.0\.1:\d+\)\n$")

    @defer.inlineCallbacks
    def failing(self, argv: list[str], expected: str, status: int = 1, within: float = 8.0):
        started = reactor.seconds()
        out, err, code = yield cli_in_child(argv + ["--timeout", "20"], b"never sent\n")
        elapsed = reactor.seconds() - started
        lines = err.decode().splitlines()
        self.assertEqual((code, out), (status, b""), err)
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], "^rserpool echo: " + expected + "$")
        for junk in ("Traceback", "Error(", "[(", "b'"):
            self.assertNotIn(junk, lines[0])
        self.assertLess(elapsed, within)

    def test_unknown_pool(self):
        return self.failing(self.argv("--pool", "nowhere"), "unknown pool nowhere")

    def test_registrar_down(self):
        return self.failing(self.argv(port=free_port()),
                            r"cannot reach registrar 127\.0\.0\.1:\d+: connection refused .*")

    def test_wrong_ca(self):
        argv = self.argv()
        argv[argv.index(str(self.pki.ca.cert))] = str(self.pki.rogue_ca.cert)
        return self.failing(argv, r"cannot reach registrar 127\.0\.0\.1:\d+: certificate verify "
                                  r"failed: unknown CA .*")

    def test_wrong_registrar_name(self):
        argv = self.argv()
        argv[argv.index("localhost")] = "elsewhere.test"
        return self.failing(argv, r"cannot reach registrar 127\.0\.0\.1:\d+: name mismatch: "
                                  r"expected elsewhere\.test, certificate is for .*")

    def test_wrong_pe_name_gives_up_with_the_reason(self):
        # The registrar is fine; every PE's certificate has the wrong name:
        # the session's bounded attempts end well before the deadline.
        return self.failing(self.argv("--pe-name", "not-a-pe.test"),
                            r"connection failed after \d+ attempts \(last: PE [0-9a-f]{8}: name "
                            r"mismatch: expected not-a-pe\.test, certificate is for .*\)",
                            within=15.0)

    def test_key_not_matching_certificate(self):
        return self.failing(self.argv("--cert", str(self.pki.pu1.cert), "--key",
                                      str(self.pki.pe1.key)),
                            r"--key .*pe1\.key: this private key does not match the certificate "
                            r"in .*pu1\.pem", status=2, within=5.0)

    def test_bad_pem(self):
        bad = Path(self._tmp.name) / "bad.pem"
        bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        argv = self.argv()
        argv[argv.index(str(self.pki.ca.cert))] = str(bad)
        return self.failing(argv, r"--ca .*bad\.pem: not a PEM certificate file", status=2,
                            within=5.0)

    def test_missing_file(self):
        return self.failing(self.argv("--cert", "/nonexistent/pu.pem", "--key", str(self.pki.pu1.key)),
                            r"--cert /nonexistent/pu\.pem: no such file", status=2, within=5.0)


# -- the same command through the session tests' echo pool fixture ----------------------


class _CliProcess:
    """Process protocol: writes stdin, collects stdout/stderr, fires on exit."""

    def __init__(self, stdin: bytes) -> None:
        self.stdin = stdin
        self.out = b""
        self.err = b""
        self.ended = defer.Deferred()
        outer = self

        class _P(protocol.ProcessProtocol):
            def connectionMade(self):
                self.transport.write(outer.stdin)
                self.transport.closeStdin()

            def outReceived(self, data):
                outer.out += data

            def errReceived(self, data):
                outer.err += data

            def processEnded(self, reason):
                outer.ended.callback(reason.value.exitCode)

        self.protocol = _P()


class EchoCommandWithEchoPoolCase(EchoPoolCase):
    @defer.inlineCallbacks
    def test_echo_command(self):
        yield self.start_echo_pe(b"A", self.pki.pe1, b"k" * 32)
        proc = _CliProcess(b"hello\nsecond line\n")
        args = [sys.executable, "-m", "rserpool.cli", "echo", "--registrar",
                f"127.0.0.1:{self.registrar_port}", "--registrar-name", "localhost",
                "--ca", str(self.pki.ca.cert), "--timeout", "10"]
        reactor.spawnProcess(proc.protocol, sys.executable, args, env=dict(os.environ))
        code = yield proc.ended.addTimeout(60, reactor)
        self.assertEqual(code, 0, proc.err.decode())
        self.assertEqual(proc.out, b"hello\nsecond line\n")
        self.assertIn(b"# connected to PE", proc.err)
