"""The demo (scripts/run): PEs restarted on purpose, the PU failing over,
and not one line above info in the log, from start to stop."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial import unittest

from rserpool.config import load_config
from rserpool.demo.showcase import DemoService
from rserpool.logs import LoggingRoot, QuietPredicate

pytest_plugins: list[str] = []


class DemoLog(unittest.TestCase):
    timeout = 60

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self._tmp.cleanup)
        tmp = Path(self._tmp.name)
        (tmp / "authz.rules").write_text("pe1 register,deregister echo\n* resolve *\n")
        config = load_config(text=f"""
[registrar]
asap_listen = tcp:port=0:interface=127.0.0.1
state_dir = {tmp}
[announce]
targets =
[security]
rules = {tmp / 'authz.rules'}
""")
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        from rserpool.tap import build_registrar

        self.root = LoggingRoot(LogLevel.info)
        self.registrar = build_registrar(config, reactor, demo=True)
        self.registrar.setServiceParent(self.root)
        self.demo = DemoService(self.registrar, tmp / "pki", reactor, interval=0.05, restart_every=4)
        self.demo.setServiceParent(self.root)

    def lines(self, level: LogLevel = LogLevel.info) -> list[str]:
        shown = QuietPredicate(level)
        return [formatEvent(e) for e in self.events if shown(e).name == "yes"]

    @defer.inlineCallbacks
    def test_planned_restarts_and_failovers_log_nothing_above_info(self):
        self.root.startService()
        restarts = 0
        for _ in range(400):
            restarts = sum("demo: PE restarted as" in line for line in self.lines())
            if restarts >= 2:
                break
            yield _sleep(0.05)
        yield self.root.stopService()
        lines = self.lines()
        self.assertGreaterEqual(restarts, 2, "\n".join(lines[-20:]))
        self.assertTrue(any("failover from PE" in line and "cookie echoed: True" in line for line in lines))
        loud = [formatEvent(e) for e in self.events
                if e.get("log_level", LogLevel.info) >= LogLevel.warn]
        self.assertEqual(loud, [])
        # Twisted's factory and port bookkeeping happened, but only at debug.
        self.assertFalse([line for line in lines if "Starting factory" in line or "Port" in line
                          and "Closed" in line])
        self.assertTrue([line for line in self.lines(LogLevel.debug) if "Starting factory" in line])
        # Handles and addresses in one form: no reprs of bytes, addresses or objects.
        self.assertFalse([line for line in lines if re.search(r"\bb'|b\"|IPv[46]Address\(| at 0x[0-9a-f]+|"
                                                              r"Authorizer\(|\(name '", line)])
        # A PE names the registrar it registered at (the address every line uses).
        registered = [line for line in lines if re.match(r"PE [0-9a-f]{8} registered in pool echo", line)]
        self.assertTrue(registered)
        port = self.registrar.listening_addresses[0].port
        self.assertEqual([line for line in registered if not line.endswith(f" at registrar 127.0.0.1:{port}")],
                         [])
        self.assertTrue([line for line in lines if re.fullmatch(r'demo: sent "hello \d+", PE [0-9a-f]{8} echoed it',
                                                                line)])
        # Nothing said twice: one line per failover (the session layer's) and
        # one per unreachability report (the pool user's).
        for pattern in (r"failover from PE (\w+) to PE (\w+)", r"reporting PE (\w+) of pool echo"):
            said = [m.groups() for m in (re.search(pattern, line) for line in lines) if m]
            self.assertTrue(said, pattern)
            self.assertEqual(len(said), len(set(said)), said)


def _sleep(seconds: float) -> defer.Deferred:
    d: defer.Deferred = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
