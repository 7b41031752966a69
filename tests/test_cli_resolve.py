"""``rserpool resolve POOL`` against a loopback registrar over TLS.

The registrar (and the PE registering through ASAP with its client
certificate) run in the test's reactor; ``rserpool.cli.main([...])`` runs in
a child Python process (it runs its own reactor), and ``resolve_command``
in-process for the error paths."""

from __future__ import annotations

import io
import json
import os
import random
import socket
import sys
import tempfile
from pathlib import Path

import pytest
from twisted.internet import defer, reactor, task
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from rserpool.asap.registrar import RegistrarSettings
from rserpool.cli import build_parser
from rserpool.cli.resolve import resolve_command
from rserpool.security import tls
from rserpool.wire import AsapRegistration, LeastUsedPolicy
from tests.asaphelpers import AllowAll, connect_raw, make_pe, registrar_port, start_registrar
from tests.tlshelpers import make_test_pki

REPO = Path(__file__).resolve().parent.parent


def cli_in_child(argv: list[str]) -> defer.Deferred:
    code = "import sys; from rserpool.cli import main; sys.exit(main(sys.argv[1:]))"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return getProcessOutputAndValue(sys.executable, ["-c", code, *argv], env=env, path=str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
class ResolveCommand(unittest.TestCase):
    timeout = 60

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
            settings=RegistrarSettings(server_id=random.randrange(1, 2**32), max_resolution_items=0))
        self.port = registrar_port(self.registrar)
        creator = tls.client_options("localhost", [self.pki.ca.cert], client_cert=self.pki.pe1.pair)
        self.pe = yield connect_raw(reactor, self.port, creator)
        self.pe.pe_ids = []
        self.pe.auto_ack_keepalives = True
        for pe_id, load in ((0x11, 100), (0x22, 5)):
            reply = yield self.pe.request(
                AsapRegistration(b"echo", make_pe(pe_id, port=7000 + pe_id, policy=LeastUsedPolicy(load))))
            self.assertFalse(reply.reject, reply)
            self.pe.pe_ids.append((b"echo", pe_id))

    @defer.inlineCallbacks
    def tearDown(self):
        if self.pe.channel is not None and not self.pe.channel.closed:
            self.pe.channel.abort()
            yield self.pe.closed
        yield self.registrar.stopService()

    def argv(self, *extra: str, port: int | None = None) -> list[str]:
        return ["resolve", "--registrar", f"127.0.0.1:{port or self.port}", "--ca",
                str(self.pki.ca.cert), "--server-name", "localhost", *extra]

    def in_process(self, argv: list[str]) -> defer.Deferred:
        args = build_parser().parse_args(argv)
        out, err = io.StringIO(), io.StringIO()
        d = resolve_command(args, reactor, out, err)
        return d.addCallback(lambda status: (status, out.getvalue(), err.getvalue()))

    @defer.inlineCallbacks
    def test_cli_prints_one_line_per_pe(self):
        out, err, status = yield cli_in_child(self.argv("echo"))
        self.assertEqual(status, 0, err)
        lines = out.decode().splitlines()
        # Least used: the registrar's order, lowest load first.
        self.assertEqual(lines, ["0x00000022 tcp 127.0.0.1 7034 LU(load=5)",
                                 "0x00000011 tcp 127.0.0.1 7017 LU(load=100)"])

    @defer.inlineCallbacks
    def test_cli_json_with_client_certificate_and_n(self):
        out, err, status = yield cli_in_child(self.argv(
            "echo", "--json", "-n", "1", "--cert", str(self.pki.pu1.cert), "--key", str(self.pki.pu1.key)))
        self.assertEqual(status, 0, err)
        doc = json.loads(out.decode())
        self.assertEqual(doc["pool_handle"], "echo")
        self.assertEqual(doc["policy"], "LeastUsed")
        self.assertEqual(len(doc["pool_elements"]), 1)
        pe = doc["pool_elements"][0]
        self.assertEqual((pe["pe_id"], pe["transport"], pe["addresses"], pe["port"]),
                         (0x22, "tcp", ["127.0.0.1"], 7034))
        self.assertEqual(pe["policy"], {"type": 0x40000001, "name": "LeastUsed", "load": 5})
        self.assertEqual(pe["home_server_id"], self.registrar.server_id)

    @defer.inlineCallbacks
    def test_cli_unknown_pool_exits_1(self):
        out, err, status = yield cli_in_child(self.argv("nope"))
        self.assertEqual(status, 1)
        self.assertEqual(out, b"")
        self.assertEqual(err, b"rserpool resolve: unknown pool nope\n")

    @defer.inlineCallbacks
    def failing(self, argv: list[str], expected: str, status: int = 1, within: float = 5.0):
        """``argv`` ends with ``status`` in well under its ``--timeout`` (20 s),
        with exactly one line on stderr, ``expected`` (a regex)."""
        started = reactor.seconds()
        out, err, code = yield cli_in_child(argv + ["--timeout", "20"])
        elapsed = reactor.seconds() - started
        lines = err.decode().splitlines()
        self.assertEqual((code, out), (status, b""), err)
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], "^rserpool resolve: " + expected + "$")
        for junk in ("Traceback", "Error(", "[(", "b'"):
            self.assertNotIn(junk, lines[0])
        self.assertLess(elapsed, within)

    def test_registrar_down(self):
        return self.failing(self.argv("echo", port=free_port()),
                            r"cannot reach registrar 127\.0\.0\.1:\d+: connection refused .*")

    def test_wrong_ca(self):
        argv = self.argv("echo")
        argv[argv.index(str(self.pki.ca.cert))] = str(self.pki.rogue_ca.cert)
        return self.failing(argv, r"cannot reach registrar 127\.0\.0\.1:\d+: certificate verify "
                                  r"failed: unknown CA .*")

    def test_wrong_name(self):
        argv = self.argv("echo")
        argv[argv.index("localhost")] = "not-the-registrar.test"
        return self.failing(argv, r"cannot reach registrar 127\.0\.0\.1:\d+: name mismatch: "
                                  r"expected not-the-registrar\.test, certificate is for .*localhost.*")

    def test_key_not_matching_certificate(self):
        return self.failing(self.argv("echo", "--cert", str(self.pki.pu1.cert), "--key",
                                      str(self.pki.pe1.key)),
                            r"--key .*pe1\.key: this private key does not match the certificate "
                            r"in .*pu1\.pem", status=2)

    def test_bad_pem(self):
        bad = Path(self._tmp.name) / "bad.pem"
        bad.write_text("not a certificate\n")
        argv = self.argv("echo")
        argv[argv.index(str(self.pki.ca.cert))] = str(bad)
        return self.failing(argv, r"--ca .*bad\.pem: not a PEM certificate file", status=2)

    def test_missing_file(self):
        argv = self.argv("echo")
        argv[argv.index(str(self.pki.ca.cert))] = str(Path(self._tmp.name) / "missing.pem")
        return self.failing(argv, r"--ca .*missing\.pem: no such file", status=2)

    def test_key_given_for_the_certificate(self):
        return self.failing(self.argv("echo", "--cert", str(self.pki.pu1.key), "--key",
                                      str(self.pki.pu1.key)),
                            r"--cert .*pu1\.key: holds a private key, not a certificate", status=2)

    def test_malformed_registrar(self):
        argv = self.argv("echo")
        argv[argv.index(f"127.0.0.1:{self.port}")] = "127.0.0.1:port"
        return self.failing(argv, r"--registrar 127\.0\.0\.1:port: bad port in .*", status=2)

    @defer.inlineCallbacks
    def test_deadline_holds_when_the_registrar_never_answers(self):
        # A TCP listener that never speaks TLS: only the deadline ends it.
        from twisted.internet.protocol import Factory, Protocol

        port = yield reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        started = reactor.seconds()
        out, err, code = yield cli_in_child(self.argv("echo", "--timeout", "2",
                                                      port=port.getHost().port))
        elapsed = reactor.seconds() - started
        self.assertEqual(code, 1, err)
        self.assertRegex(err.decode(), r"^rserpool resolve: (no answer within 2 s|cannot reach "
                                       r"registrar .*: no authenticated connection within 2 s).*\n$")
        self.assertLess(elapsed, 6)

    @defer.inlineCallbacks
    def test_in_process_success_and_wrong_name(self):
        status, out, err = yield self.in_process(self.argv("echo"))
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(len(out.splitlines()), 2)
        argv = self.argv("echo", "--timeout", "1.5")
        argv[argv.index("localhost")] = "not-the-registrar.test"
        status, out, err = yield self.in_process(argv)
        self.assertEqual(status, 1)
        self.assertIn("name mismatch: expected not-the-registrar.test", err)
        # The refused connection is gone at the registrar too: only the PE's stays.
        for _ in range(100):
            if len(self.registrar.channels) == 1:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(len(self.registrar.channels), 1)

    @defer.inlineCallbacks
    def test_in_process_usage_problems(self):
        status, _, err = yield self.in_process(self.argv("echo", "--cert", str(self.pki.pu1.cert)))
        self.assertEqual(status, 2)
        self.assertIn("--cert and --key go together", err)


def test_resolve_requires_registrar_and_ca():
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["resolve", "echo", "--ca", "x.pem"])
    assert exc.value.code == 2
