"""Three registrars as real processes, from the example configuration
(etc/cluster), on loopback: PEs registering at each, a PU at each resolving
the union (issue 13, item 8).

Each registrar is ``twistd -n rserpool-registrar --config <ini>``, the ini
being ``etc/cluster/registrar-<x>.ini`` with ephemeral ports, a temporary
state directory and the PKI ``etc/cluster/make-pki`` makes
(``ensure_cluster_pki``) in a temporary directory.  Registrar A starts with
no peer; B and C know only A: C learns B from A's ENRP_LIST_RESPONSE.
"""

from __future__ import annotations

import configparser
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from rserpool.security import tls
from rserpool.security.devpki import CLUSTER_REGISTRARS, ensure_cluster_pki
from rserpool.wire import AsapHandleResolution, AsapRegistration
from tests.asaphelpers import connect_raw, make_pe
from tests.test_e2e import LineProcess, within

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parent.parent / "etc" / "cluster"
ASAP = re.compile(r"registrar ([0-9a-f]{8}) listening for ASAP on \S+:(\d+) ")
ENRP = re.compile(r"registrar ([0-9a-f]{8}) listening for ENRP peers on \S+:(\d+) ")
PEERS_UP = re.compile(r"ENRP peer (\S+)@\S+ \(server ([0-9a-f]{8})\) is up")


class Cluster:
    """The example's registrars as processes; ``env`` may carry SSLKEYLOGFILE."""

    def __init__(self, test: unittest.TestCase, directory: Path, env: dict[str, str]) -> None:
        self.test = test
        self.dir = directory
        self.env = env
        self.pki = directory / "pki"
        self.files = ensure_cluster_pki(self.pki)
        self.procs: dict[str, LineProcess] = {}

    def ini(self, letter: str, peers: list[str]) -> Path:
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str
        parser.read(EXAMPLE / f"registrar-{letter}.ini")
        name = f"registrar-{letter}.rserpool.test"
        parser["registrar"]["asap_listen"] = "tcp:0:interface=127.0.0.1"
        parser["registrar"]["state_dir"] = str(self.dir / f"state-{letter}")
        parser["tls"]["certificate"] = str(self.files[name][0])
        parser["tls"]["private_key"] = str(self.files[name][1])
        parser["tls"]["ca_certificates"] = str(self.pki / "ca.pem")
        parser["tls"]["crls"] = str(self.pki / "crl.pem")
        parser["security"]["rules"] = str(EXAMPLE / "authz.rules")
        parser["enrp"]["listen"] = "tcp:0:interface=127.0.0.1"
        parser["enrp"]["peers"] = "\n".join(peers)
        parser["enrp"]["heartbeat_cycle"] = "1"
        parser["enrp"]["max_time_last_heard"] = "5"
        path = self.dir / f"registrar-{letter}.ini"
        with open(path, "w") as handle:
            parser.write(handle)
        return path

    @defer.inlineCallbacks
    def start(self, letter: str, peers: list[str]):
        proc = LineProcess(f"registrar-{letter}")
        args = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
                "rserpool-registrar", "--config", str(self.ini(letter, peers))]
        reactor.spawnProcess(proc, sys.executable, args, env=self.env, path=str(self.dir))
        self.test.addCleanup(self.reap, proc)
        asap = yield proc.wait_for(ASAP.search)
        enrp = yield proc.wait_for(ENRP.search)
        proc.server_id = int(asap.group(1), 16)
        proc.asap_port, proc.enrp_port = int(asap.group(2)), int(enrp.group(2))
        proc.tls_name = f"registrar-{letter}.rserpool.test"
        self.procs[letter] = proc
        return proc

    @staticmethod
    def reap(proc: LineProcess) -> defer.Deferred:
        proc.signal("KILL")
        return within(proc.ended)

    @defer.inlineCallbacks
    def start_all(self):
        a = yield self.start("a", [])
        peer_a = f"127.0.0.1:{a.enrp_port} {a.tls_name}"
        yield self.start("b", [peer_a])
        yield self.start("c", [peer_a])
        # Every registrar sees the two others up (C found B through A's list).
        for proc in self.procs.values():
            yield proc.wait_for(lambda line, p=proc: self._peers_up(p) >= 2, seconds=20)

    @staticmethod
    def _peers_up(proc: LineProcess) -> int:
        return len({m.group(1) for m in map(PEERS_UP.search, proc.lines) if m})

    @defer.inlineCallbacks
    def client(self, proc: LineProcess, cert: str | None):
        pair = self.files[cert] if cert else None
        creator = tls.client_options(proc.tls_name, [self.pki / "ca.pem"], client_cert=pair)
        client = yield within(connect_raw(reactor, proc.asap_port, creator))
        self.test.addCleanup(self._close, client)
        return client

    @staticmethod
    def _close(client: Any) -> Any:
        if client.channel is not None and not client.channel.closed:
            closed = client.channel.closed_deferred()
            client.channel.abort()
            return within(closed)
        return None

    @defer.inlineCallbacks
    def resolve_all(self, proc: LineProcess, want: set[int], seconds: float = 10.0):
        """Resolve ``echo`` at ``proc`` until the answer holds ``want``."""
        pu = yield self.client(proc, None)
        deadline = reactor.seconds() + seconds
        while True:
            answer = yield within(pu.request(AsapHandleResolution(b"echo")))
            got = {pe.pe_id for pe in getattr(answer, "pool_elements", ())}
            if got == want:
                return got
            if reactor.seconds() > deadline:
                raise AssertionError(f"{proc.name} resolves {sorted(got)}, not {sorted(want)}")
            yield task.deferLater(reactor, 0.05, lambda: None)  # the updates are on their way


class ThreeRegistrars(unittest.TestCase):
    timeout = 90

    def setUp(self) -> None:
        import os

        self._tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self._tmp.cleanup)
        env = {k: v for k, v in os.environ.items() if k != "SSLKEYLOGFILE"}
        env["PYTHONUNBUFFERED"] = "1"
        self.cluster = Cluster(self, Path(self._tmp.name), env)

    @defer.inlineCallbacks
    def test_pes_at_each_registrar_resolve_everywhere(self):
        cluster = self.cluster
        yield cluster.start_all()
        ids = {}
        for index, (letter, proc) in enumerate(sorted(cluster.procs.items())):
            pe = yield cluster.client(proc, f"pe{index + 1}")
            ids[letter] = 0x100 + index
            reply = yield within(pe.request(AsapRegistration(b"echo", make_pe(ids[letter], port=7000 + index))))
            self.assertFalse(reply.reject, reply)
        for proc in cluster.procs.values():
            got = yield cluster.resolve_all(proc, set(ids.values()))
            self.assertEqual(got, set(ids.values()))
        self.assertEqual(CLUSTER_REGISTRARS, tuple(p.tls_name for _, p in sorted(cluster.procs.items())))
