"""``rserpool status`` and ``rserpool handlespace dump`` against a real admin
endpoint over loopback TLS (the commands run in a thread; the registrar on
the reactor)."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import pytest
from twisted.internet import defer, threads
from twisted.trial import unittest

from rserpool.cli import build_parser
from rserpool.wire import AsapRegistration
from tests.adminhelpers import TOKEN, AdminHarness, admin_cert
from tests.asaphelpers import make_pe
from tests.tlshelpers import make_test_pki

pytestmark = pytest.mark.integration


def _run(argv: list[str]) -> tuple[int, str, str]:
    args = build_parser().parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    status = args.func(args, out, err)
    return status, out.getvalue(), err.getvalue()


class AdminCommands(AdminHarness, unittest.TestCase):
    token = TOKEN
    token_scope = "all"

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.test_pki = make_test_pki(Path(cls._tmp.name))

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def setUp(self):
        return self.start_admin(self.test_pki)

    def tearDown(self):
        return self.stop_admin()

    def argv(self, *words: str, cert=None) -> list[str]:
        cert = cert if cert is not None else admin_cert(self.pki)
        return [*words, "--admin", f"https://localhost:{self.admin_port}", "--ca", str(self.pki.ca.cert),
                "--cert", str(cert.cert), "--key", str(cert.key)]

    def run_cli(self, argv: list[str]):
        return threads.deferToThread(_run, argv)

    @defer.inlineCallbacks
    def test_status_and_dump(self):
        client = yield self.register_pe(0x31)
        for pe_id in range(0x32, 0x32 + 30):
            reply = yield client.request(AsapRegistration(b"echo", make_pe(pe_id)))
            self.assert_accepted(reply)
        code, out, err = yield self.run_cli(self.argv("status"))
        self.assertEqual((code, err), (0, ""))
        self.assertIn(f"registrar {self.registrar.server_id:08x}", out)
        self.assertIn("pools 1  PEs 31", out)
        self.assertIn("pool echo  RoundRobin  31 PEs", out)
        code, out, err = yield self.run_cli(self.argv("handlespace", "dump"))
        self.assertEqual((code, err), (0, ""))
        self.assertTrue(out.startswith("pool echo: 31 PEs\n"), out[:100])
        self.assertIn("  00000031  tcp:127.0.0.1:7  RoundRobin  home", out)
        self.assertIn("identity pe1", out)
        code, out, err = yield self.run_cli(self.argv("handlespace", "dump", "--json", "--pool", "echo"))
        self.assertEqual(code, 0)
        dumped = json.loads(out)["pools"]
        self.assertEqual([p["handle"] for p in dumped], ["echo"])
        self.assertEqual(len(dumped[0]["pool_elements"]), 31)
        self.assertEqual(len({pe["pe_id"] for pe in dumped[0]["pool_elements"]}), 31)

    @defer.inlineCallbacks
    def test_dump_pages_through_a_large_pool(self):
        from rserpool.cli import admin as admin_cli

        self.patch(admin_cli, "DUMP_PAGE", 7)
        client = yield self.register_pe(1)
        for pe_id in range(2, 24):
            reply = yield client.request(AsapRegistration(b"echo", make_pe(pe_id)))
            self.assert_accepted(reply)
        code, out, err = yield self.run_cli(self.argv("handlespace", "dump", "--json"))
        self.assertEqual(code, 0, err)
        ids = [pe["pe_id"] for pe in json.loads(out)["pools"][0]["pool_elements"]]
        self.assertEqual(ids, [f"{n:08x}" for n in range(1, 24)])

    @defer.inlineCallbacks
    def test_a_bearer_token_works_too(self):
        path = Path(self.pki.directory) / "cli.token"
        path.write_text(TOKEN + "\n")
        argv = ["status", "--json", "--admin", f"https://127.0.0.1:{self.admin_port}",
                "--ca", str(self.pki.ca.cert), "--token-file", str(path)]
        code, out, err = yield self.run_cli(argv)
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["server_id"], f"{self.registrar.server_id:08x}")

    @defer.inlineCallbacks
    def test_clear_errors(self):
        code, out, err = yield self.run_cli(self.argv("status", cert=self.pki.pe1))
        self.assertEqual(code, 1)
        self.assertIn("refused access (403 forbidden)", err)
        self.assertEqual(out, "")
        code, _, err = yield self.run_cli(self.argv("handlespace", "dump", "--pool", "nope"))
        self.assertEqual(code, 1)
        self.assertIn("unknown pool 'nope'", err)
        from tests.aaahelpers import free_port
        import socket

        closed = free_port(socket.SOCK_STREAM)
        argv = self.argv("status")
        argv[argv.index("--admin") + 1] = f"https://127.0.0.1:{closed}"
        code, _, err = yield self.run_cli(argv)
        self.assertEqual(code, 1)
        self.assertIn("cannot reach the admin endpoint", err)
        argv = self.argv("status")
        argv[argv.index("--ca") + 1] = str(self.pki.rogue_ca.cert)
        code, _, err = yield self.run_cli(argv)
        self.assertEqual(code, 1)
        self.assertIn("not trusted", err)
        code, _, err = yield self.run_cli(["status", "--admin", f"https://localhost:{self.admin_port}",
                                           "--ca", str(self.pki.ca.cert)])
        self.assertEqual(code, 1)
        self.assertIn("no credentials", err)
        code, _, err = yield self.run_cli(["status", "--ca", str(self.pki.ca.cert)])
        self.assertIn("no admin endpoint", err)


def test_mistakes_before_connecting_are_one_line_each_and_exit_2(tmp_path):
    pki = make_test_pki(tmp_path)
    status, out, err = _run(["status", "--admin", "https://127.0.0.1:1", "--ca", str(tmp_path / "nope.pem"),
                             "--cert", str(pki.pu1.cert), "--key", str(pki.pe1.key)])
    assert (status, out) == (2, "")
    assert err.splitlines() == [
        f"rserpool status: --ca {tmp_path / 'nope.pem'}: no such file",
        f"rserpool status: --key {pki.pe1.key}: this private key does not match the certificate "
        f"in {pki.pu1.cert}"]


def test_an_endpoint_that_is_down_is_one_line_and_exit_1(tmp_path):
    import socket

    pki = make_test_pki(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    status, out, err = _run(["handlespace", "dump", "--admin", f"https://127.0.0.1:{port}", "--ca",
                             str(pki.ca.cert), "--cert", str(pki.pu1.cert), "--key", str(pki.pu1.key)])
    assert (status, out) == (1, "")
    assert err == (f"rserpool handlespace dump: cannot reach the admin endpoint at "
                   f"https://127.0.0.1:{port}: connection refused\n")
