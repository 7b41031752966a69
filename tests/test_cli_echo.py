"""The ``rserpool echo`` command in a subprocess, against a real registrar
and an echo PE over loopback TLS; the test waits for the process to end."""

from __future__ import annotations

import os
import sys

from twisted.internet import defer, protocol, reactor

from tests.echohelpers import EchoPoolCase


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


class EchoCommand(EchoPoolCase):
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
