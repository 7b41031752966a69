"""A resolution flood against the shipped configuration, over real loopback
TLS (issue 12; RFC 5355 2.1 and 2.7).

Four anonymous TLS clients, each from a loopback address of its own, write
handle resolutions as fast as the registrar takes them
(``tests/flood_client.py``, a separate process, so that their work does not
run on the registrar's reactor).  A pool user with a certificate (the
development PKI's ``pu1``) sends one resolution at a time, first without
the flood, then with it.  With etc/registrar.ini as shipped each flooder is
limited to 2000 resolutions a second (burst 4000) and all anonymous ones
together to 20000; a flooder over its limit gets one refusal and is then
not read for a quarter of a second, so the flood costs the registrar
little, and the pool user keeps its latency (bounds with a wide margin: the
machine is shared).  The deterministic version, with a site's lower budget,
is ``tests/test_attacks_gate.py::test_anonymous_floods_share_one_budget_and_pool_users_with_an_identity_keep_theirs``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, protocol, reactor, task
from twisted.trial import unittest

from rserpool.security import tls
from rserpool.wire import AsapHandleResolution, AsapRegistration
from rserpool.wire.codes import CAUSE_LACK_OF_RESOURCES
from tests.asaphelpers import connect_raw, make_pe
from tests.shipped import dev_pki, shipped_registrar

pytestmark = pytest.mark.integration

H = b"echo"
ROOT = Path(__file__).resolve().parent.parent
FLOODERS = ("127.0.10.2", "127.0.10.3", "127.0.10.4", "127.0.10.5")
BATCH = 400
SECONDS = 6
SAMPLES = 100


class _Flood(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ready: defer.Deferred = defer.Deferred()
        self.done: defer.Deferred = defer.Deferred()
        self.out = b""

    def outReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted)
        self.out += data
        if b"ready\n" in self.out and not self.ready.called:
            self.ready.callback(None)

    def processEnded(self, reason: Any) -> None:  # noqa: N802 (Twisted)
        if not self.ready.called:
            self.ready.errback(reason)
        self.done.callback(self.out)


class ResolutionFlood(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_a_pool_user_with_a_certificate_keeps_its_latency_under_an_anonymous_flood(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        root = Path(tmp.name)
        registrar = shipped_registrar(root, reactor)
        yield defer.maybeDeferred(registrar.startService)
        self.addCleanup(registrar.stopService)
        port = registrar.listening_addresses[0].port
        pki = dev_pki(root)
        ca = [str(pki / "ca.pem")]
        pe = yield connect_raw(reactor, port, tls.client_options(
            "localhost", ca, client_cert=(pki / "pe.pem", pki / "pe.key")))
        self.addCleanup(pe.channel.abort)
        pe.pe_ids, pe.auto_ack_keepalives = [(H, 0x71 + n) for n in range(10)], True
        for n in range(10):
            reply = yield pe.request(AsapRegistration(H, make_pe(0x71 + n, life=3600)))
            self.assertFalse(reply.reject, reply)
        pu = yield connect_raw(reactor, port, tls.client_options(
            "localhost", ca, client_cert=(pki / "pu.pem", pki / "pu.key")))
        self.addCleanup(pu.channel.abort)

        @defer.inlineCallbacks
        def latencies() -> Any:
            out = []
            for _ in range(SAMPLES):
                started = time.perf_counter()
                answer = yield pu.request(AsapHandleResolution(H))
                out.append(time.perf_counter() - started)
                self.assertIsNone(answer.error)  # never refused: it has an identity
                yield task.deferLater(reactor, 0.01, lambda: None)
            return out

        idle = yield latencies()
        resolutions_before = registrar.core.stats["resolutions"]
        flood = _Flood()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        process = reactor.spawnProcess(
            flood, sys.executable,
            [sys.executable, "-m", "tests.flood_client", str(port), ca[0], str(SECONDS), str(BATCH), *FLOODERS],
            env=env, path=str(ROOT))
        self.addCleanup(lambda: process.signalProcess("KILL") if not flood.done.called else None)
        yield flood.ready.addTimeout(30, reactor)
        started = time.monotonic()
        yield task.deferLater(reactor, 0.5, lambda: None)
        loaded = yield latencies()
        out = yield flood.done.addTimeout(60, reactor)
        elapsed = time.monotonic() - started
        received = json.loads(out.decode().strip().splitlines()[-1])
        served = registrar.core.stats["resolutions"] - resolutions_before - SAMPLES
        refused = registrar.gate.refused.get(CAUSE_LACK_OF_RESOURCES, 0)
        idle_median, loaded_median = statistics.median(idle), statistics.median(loaded)
        print(f"\npool user latency idle: median {idle_median * 1e3:.2f} ms; under the flood: median "
              f"{loaded_median * 1e3:.2f} ms, max {max(loaded) * 1e3:.1f} ms; flood: {served} served, "
              f"{refused} refused in {elapsed:.1f} s")
        # The flood was real: every flooder got its limit's worth, and was refused.
        self.assertEqual(sorted(received), sorted(FLOODERS))
        self.assertGreater(refused, len(FLOODERS))
        # Each flooder was served at most its burst and 2000/s (the shipped
        # per-address limit), and refused at most once per pause (4/s).
        self.assertLessEqual(served, len(FLOODERS) * (4000 + 2000 * (elapsed + 1)))
        self.assertLessEqual(refused, len(FLOODERS) * 4 * (elapsed + 1) + len(FLOODERS))
        # What the pool user sees.
        self.assertLess(max(loaded), 0.4, sorted(loaded)[-5:])
        self.assertLess(loaded_median, idle_median + 0.025, (idle_median, loaded_median))
