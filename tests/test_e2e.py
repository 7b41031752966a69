"""End to end with real processes over real loopback TLS (issue 4, item 6).

Registrars run as ``twistd -n rserpool-registrar --config <ini>`` processes,
pool elements as ``tests/e2e_pe.py`` processes (the demo echo PE with the
session layer's echo application); the pool user runs in the test process.

- A PE that hangs (SIGSTOP: its TCP connections stay open, so only the
  keep-alive timeout can tell) is removed by the registrar for want of an
  ENDPOINT_KEEP_ALIVE_ACK; the PU's session finds it dead by heartbeats,
  fails over to the other PE, echoes its sealed cookie first (the new PE
  continues the message count), the failover callback fires, and the data
  that was lost in flight reaches the new PE.
- When the home registrar dies (SIGKILL) the surviving PE re-registers with
  the second registrar under the same PE id, and PUs resolve it there.
- Oversized and garbage input from one client closes only that client's
  connection; another client's requests in flight are all answered.

Every wait is bounded (``within``); there is no sleep.  Every process is
killed and reaped in the test's cleanup, whatever happened.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest
from twisted.internet import defer, protocol, reactor, task
from twisted.trial import unittest

from rserpool.asap.pu import UnknownPool
from rserpool.asap.session import CookieSealer
from rserpool.demo.echo_client import EchoSession
from rserpool.security import pki as pkimod
from rserpool.security import tls
from rserpool.service.channel import ChannelSettings
from rserpool.service.candidates import RegistrarCandidates
from rserpool.service.hunt import ServerHunt, make_channel_factory
from rserpool.service.pu import PoolUser
from rserpool.service.pu_session import pe_tls_options
from rserpool.wire import AsapHandleResolution, AsapHandleResolutionResponse
from rserpool.wire.codes import PPID_ASAP
from tests.asaphelpers import connect_raw
from tests.tlshelpers import make_test_pki

pytestmark = pytest.mark.integration

POOL = b"echo"
WAIT = 10.0  # the bound on any single wait, in seconds
E2E_PE = Path(__file__).with_name("e2e_pe.py")
ID1, ID2 = 0x11111111, 0x22222222
LISTENING = re.compile(r"registrar ([0-9a-f]{8}) listening for ASAP on \S+:(\d+) ")


def within(d: defer.Deferred, seconds: float = WAIT) -> defer.Deferred:
    return d.addTimeout(seconds, reactor)


def wait_until(predicate: Callable[[], bool], seconds: float = WAIT, step: float = 0.02) -> defer.Deferred:
    """Fires once ``predicate()`` is true, checked every ``step`` on the reactor."""

    async def loop() -> None:
        deadline = reactor.seconds() + seconds
        while not predicate():
            if reactor.seconds() > deadline:
                raise defer.TimeoutError(f"condition not met within {seconds} s")
            await task.deferLater(reactor, step, lambda: None)

    return defer.ensureDeferred(loop())


class LineProcess(protocol.ProcessProtocol):
    """A child process whose stdout lines are kept (bounded) and can be waited for."""

    MAX_LINES = 20_000

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self.stderr = b""
        self._partial = b""
        self._waiters: list[tuple[Callable[[str], Any], int, defer.Deferred]] = []
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.exited = False
        self.transport: Any = None

    @property
    def pid(self) -> int:
        return self.transport.pid

    def outReceived(self, data: bytes) -> None:
        self._partial += data
        *complete, self._partial = self._partial.split(b"\n")
        for raw in complete:
            line = raw.decode("utf-8", "replace")
            if len(self.lines) < self.MAX_LINES:
                self.lines.append(line)
            for item in list(self._waiters):
                match, _, d = item
                found = match(line)
                if found:
                    self._waiters.remove(item)
                    d.callback(found)

    def errReceived(self, data: bytes) -> None:
        self.stderr = (self.stderr + data)[-20_000:]

    def processEnded(self, reason: Any) -> None:
        self.exited = True
        waiters, self._waiters = self._waiters, []
        for _, _, d in waiters:
            d.errback(RuntimeError(f"{self.name} ended; stderr tail: {self.stderr[-2000:]!r}"))
        self.ended.callback(None)

    def wait_for(self, match: Callable[[str], Any], since: int = 0, seconds: float = WAIT) -> defer.Deferred:
        """Fires with ``match(line)`` for the first line from index ``since`` on
        where it is true (a line already seen counts)."""
        for line in self.lines[since:]:
            found = match(line)
            if found:
                return defer.succeed(found)
        if self.exited:
            return defer.fail(RuntimeError(f"{self.name} has ended"))
        d: defer.Deferred = defer.Deferred()
        self._waiters.append((match, since, d))

        def drop(failure: Any) -> Any:
            self._waiters = [w for w in self._waiters if w[2] is not d]
            failure.trap(defer.TimeoutError)
            raise AssertionError(f"{self.name}: no matching line within {seconds} s; last lines: "
                                 f"{self.lines[-15:]!r}; stderr tail: {self.stderr[-1500:]!r}")

        return d.addTimeout(seconds, reactor).addErrback(drop)

    def wait_event(self, event: str, since: int = 0, seconds: float = WAIT, **fields: Any) -> defer.Deferred:
        """For e2e_pe.py: the first JSON event ``event`` with these field values."""

        def match(line: str) -> dict | None:
            try:
                item = json.loads(line)
            except ValueError:
                return None
            if not isinstance(item, dict) or item.get("event") != event:
                return None
            if any(item.get(k) != v for k, v in fields.items()):
                return None
            return item

        return self.wait_for(match, since, seconds)

    def signal(self, name: str) -> None:
        if not self.exited:
            self.transport.signalProcess(name)


class EndToEnd(unittest.TestCase):
    timeout = 60

    @classmethod
    def setUpClass(cls) -> None:
        cls._tmp = tempfile.TemporaryDirectory()
        cls.dir = Path(cls._tmp.name)
        cls.pki = make_test_pki(cls.dir / "pki")
        now = dt.datetime.now(dt.timezone.utc)
        listener = pkimod.create_server_certificate(cls.pki.ca.issued, ["127.0.0.1"], now,
                                                    common_name="e2e echo PE")
        cls.listener_cert, cls.listener_key = cls.dir / "listener.pem", cls.dir / "listener.key"
        pkimod.write_certificate(cls.listener_cert, listener.certificate, *listener.chain)
        pkimod.write_private_key(cls.listener_key, listener.private_key)
        cls.cookie_key = secrets.token_hex(32).encode()
        cls.cookie_file = cls.dir / "cookie.key"
        cls.cookie_file.write_bytes(cls.cookie_key)
        (cls.dir / "authz.rules").write_text(
            "pe1  register,deregister  echo\n"
            "pe2  register,deregister  echo\n"
            "*    resolve              *\n")

    @classmethod
    def tearDownClass(cls) -> None:
        cls._tmp.cleanup()

    def setUp(self) -> None:
        self.env = {k: v for k, v in os.environ.items() if k != "SSLKEYLOGFILE"}
        self.env["PYTHONUNBUFFERED"] = "1"

    # -- processes ------------------------------------------------------------------------

    def spawn(self, name: str, args: list[str]) -> LineProcess:
        proc = LineProcess(name)
        reactor.spawnProcess(proc, sys.executable, [sys.executable, *args], env=self.env,
                             path=str(self.dir))
        self.addCleanup(self.reap, proc)
        return proc

    def reap(self, proc: LineProcess) -> defer.Deferred:
        proc.signal("KILL")  # also ends a SIGSTOPped process
        return within(proc.ended)

    def write_ini(self, name: str, server_id: int, max_message_size: int = 65535) -> Path:
        path = self.dir / f"{name}.ini"
        path.write_text(f"""\
[registrar]
server_id = {server_id:#x}
asap_listen = tcp:0:interface=127.0.0.1
state_dir = {self.dir / ("state-" + name)}

[tls]
certificate = {self.pki.server.cert}
private_key = {self.pki.server.key}
ca_certificates = {self.pki.ca.cert}

[asap]
keepalive_interval = 0.3
keepalive_timeout = 0.3
max_message_size = {max_message_size}

[security]
authorizer = file
rules = {self.dir / "authz.rules"}
""")
        return path

    @defer.inlineCallbacks
    def start_registrar(self, name: str, server_id: int, **ini: Any):
        proc = self.spawn(name, ["-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
                                 "rserpool-registrar", "--config", str(self.write_ini(name, server_id, **ini))])
        found = yield proc.wait_for(LISTENING.search)
        self.assertEqual(int(found.group(1), 16), server_id)
        proc.port = int(found.group(2))
        return proc

    def start_pe(self, name: str, cert: Any, registrars: list[LineProcess]) -> LineProcess:
        args = [str(E2E_PE), "--ca", str(self.pki.ca.cert), "--cert", str(cert.cert), "--key", str(cert.key),
                "--server-cert", str(self.listener_cert), "--server-key", str(self.listener_key),
                "--cookie-key-file", str(self.cookie_file)]
        for registrar in registrars:
            args += ["--registrar", f"127.0.0.1:{registrar.port}"]
        return self.spawn(name, args)

    def abort(self, client: Any) -> defer.Deferred | None:
        if client.channel is None or client.channel.closed:
            return None
        closed = client.channel.closed_deferred()
        client.channel.abort()
        return within(closed)

    def pool_user(self, *registrars: LineProcess) -> PoolUser:
        """A PU hunting the registrars strictly in order (one attempt at a
        time, as the PEs do), so its home is the first one alive."""
        entries = [f"127.0.0.1:{r.port}" for r in registrars]
        holder: list[PoolUser] = []
        hunt = ServerHunt(reactor, RegistrarCandidates(static=entries),
                          lambda name: tls.client_options(name, [self.pki.ca.cert]),
                          make_channel_factory(lambda candidate: holder[0], reactor, None),
                          max_parallel=1, attempt_timeout=3.0, t5_initial=2.0)
        pu = PoolUser(reactor, hunt)
        holder.append(pu)
        self.addCleanup(pu.stop)
        return pu

    def count_in(self, cookie: bytes | None) -> int | None:
        """The message count the echo PEs sealed into ``cookie``."""
        if cookie is None:
            return None
        state = CookieSealer(self.cookie_key, context=POOL).open(cookie, reactor.seconds()).state
        return int.from_bytes(state, "big")

    # -- the scenario ---------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_pe_death_failover_with_cookie_and_registrar_failover(self):
        # 1. Two registrars, two PEs registering with registrar 1 (the first of their list).
        reg1, reg2 = yield defer.gatherResults([self.start_registrar("reg1", ID1),
                                                self.start_registrar("reg2", ID2)])
        pe_a = self.start_pe("pe-a", self.pki.pe1, [reg1, reg2])
        pe_b = self.start_pe("pe-b", self.pki.pe2, [reg1, reg2])
        reg_a, reg_b = yield defer.gatherResults([pe_a.wait_event("registered", seconds=15),
                                                  pe_b.wait_event("registered", seconds=15)])
        self.assertEqual((reg_a["registrar_port"], reg_b["registrar_port"]), (reg1.port, reg1.port))
        by_id = {reg_a["pe_id"]: (pe_a, reg_a), reg_b["pe_id"]: (pe_b, reg_b)}
        self.assertEqual(len(by_id), 2)

        # 2. The PU resolves the pool (both PEs); registrar 2 does not know it yet.
        pu = self.pool_user(reg1, reg2)
        at_reg1, at_reg2 = self.pool_user(reg1), self.pool_user(reg2)
        members = yield within(pu.resolve(POOL))
        self.assertEqual({m.pe_id for m in members}, set(by_id))
        self.assertEqual({m.user_transport.port for m in members}, {reg_a["port"], reg_b["port"]})
        yield self.assertFailure(within(at_reg2.refresh(POOL)), UnknownPool)

        # 3. A session through the session layer: a few echoes, each followed by a sealed cookie.
        failovers: list[tuple[int, int, bool]] = []
        session = EchoSession(
            reactor, selector=pu.select, report_unreachable=pu.report_unreachable,
            tls_options_for=pe_tls_options([self.pki.ca.cert]),
            channel_settings=ChannelSettings(heartbeat_interval=0.2, dead_after=1.0),
            on_failover=lambda old, new, echoed: failovers.append((old.pe_id, new.pe_id, echoed)))
        session.client.connect_timeout = 3.0
        self.addCleanup(session.close)
        first = yield within(session.start())
        self.assertIn(first.pe_id, by_id)
        for n in (1, 2, 3):
            echo = yield within(session.send(b"message %d" % n))
            self.assertEqual(echo, b"message %d" % n)
        yield wait_until(lambda: self.count_in(session.client.core.cookie) == 3)

        # 4. The serving PE hangs: only the keep-alive timeout can tell the registrar.
        victim, (survivor_proc, survivor) = first.pe_id, next(v for k, v in by_id.items() if k != first.pe_id)
        victim_proc = by_id[victim][0]
        reg1_mark, survivor_mark = len(reg1.lines), len(survivor_proc.lines)
        stopped_at = reactor.seconds()
        os.kill(victim_proc.pid, signal.SIGSTOP)
        in_flight = session.send(b"message 4")  # goes to the hung PE; must not be lost
        removal = reg1.wait_for(
            re.compile(rf"PE {victim:08x} left pool echo: no ENDPOINT_KEEP_ALIVE_ACK").search, reg1_mark)
        yield removal
        removed_after = reactor.seconds() - stopped_at
        echo = yield within(in_flight)
        failed_over_after = reactor.seconds() - stopped_at
        self.assertEqual(echo, b"message 4")
        self.assertEqual(failovers, [(victim, survivor["pe_id"], True)])
        self.assertEqual(session.client.current_pe.pe_id, survivor["pe_id"])
        accepted = yield survivor_proc.wait_event("cookie_accepted", survivor_mark)
        self.assertEqual(accepted["count"], 3)  # the new PE continues the old PE's count
        echo = yield within(session.send(b"message 5"))
        self.assertEqual(echo, b"message 5")
        yield wait_until(lambda: self.count_in(session.client.core.cookie) == 5)
        self.assertEqual(session.unexpected, [])
        remaining = yield within(at_reg1.refresh(POOL))
        self.assertEqual([m.pe_id for m in remaining], [survivor["pe_id"]])
        self.assertLess(removed_after, 5.0)
        self.assertLess(failed_over_after, 8.0)
        victim_proc.signal("KILL")
        yield within(victim_proc.ended)

        # 5. The home registrar dies: the surviving PE re-registers with registrar 2, same PE id.
        survivor_mark = len(survivor_proc.lines)
        killed_at = reactor.seconds()
        reg1.signal("KILL")
        yield within(reg1.ended)
        again = yield survivor_proc.wait_event("registered", survivor_mark, registrar_port=reg2.port)
        reregistered_after = reactor.seconds() - killed_at
        self.assertEqual(again["pe_id"], survivor["pe_id"])
        self.assertEqual(again["port"], survivor["port"])
        self.assertLess(reregistered_after, 5.0)
        at_2 = yield within(at_reg2.refresh(POOL))
        self.assertEqual([(m.pe_id, m.user_transport.port) for m in at_2],
                         [(survivor["pe_id"], survivor["port"])])
        via_pu = yield within(pu.refresh(POOL))  # the PU's own registrar hunt ends at registrar 2
        self.assertEqual([m.pe_id for m in via_pu], [survivor["pe_id"]])
        # The session never depended on the registrar.
        echo = yield within(session.send(b"message 6"))
        self.assertEqual(echo, b"message 6")
        self.assertEqual(len(failovers), 1)
        print(f"\ne2e: keep-alive removal {removed_after:.2f} s, session failover {failed_over_after:.2f} s, "
              f"registrar failover {reregistered_after:.2f} s after the fault")

    # -- one bad client disturbs no other ------------------------------------------------------

    @defer.inlineCallbacks
    def test_oversize_and_garbage_close_only_the_offender(self):
        registrar = yield self.start_registrar("small", ID1, max_message_size=4096)
        pe = self.start_pe("pe", self.pki.pe1, [registrar])
        registered = yield pe.wait_event("registered", seconds=15)
        creator = tls.client_options("127.0.0.1", [self.pki.ca.cert])
        good = yield within(connect_raw(reactor, registrar.port, creator))
        self.addCleanup(self.abort, good)
        offences = [
            # a DATA chunk header announcing 65,535 bytes (over the 4,096-byte limit), never completed
            lambda c: c.channel.transport.write(bytes([0, 0, 0xFF, 0xFF]) + bytes(3000)),
            # a complete ASAP message over the limit
            lambda c: c.channel.send_encoded(PPID_ASAP, bytes([0x03, 0, 0x17, 0x70]) + bytes(5996)),
            # garbage: an unknown chunk type, a length below the chunk header, a second INIT
            lambda c: c.channel.transport.write(bytes([0x7E, 0, 0, 8, 1, 2, 3, 4])),
            lambda c: c.channel.transport.write(bytes([0, 0, 0, 2])),
            lambda c: c.channel.transport.write(bytes([1, 0, 0, 4])),
        ]
        sent = 0
        for offence in offences:
            bad = yield within(connect_raw(reactor, registrar.port, creator))
            for _ in range(5):  # requests in flight while the offender is dealt with
                good.send(AsapHandleResolution(POOL))
                sent += 1
            offence(bad)
            yield within(bad.closed)
        answers = []
        for _ in range(sent):
            answers.append((yield within(good.next())))
        self.assertTrue(all(type(a) is AsapHandleResolutionResponse for a in answers), answers[:3])
        self.assertEqual({tuple(p.pe_id for p in a.pool_elements) for a in answers},
                         {(registered["pe_id"],)})
        self.assertFalse(good.channel.closed)
        # The PE's own channel (keep-alives every 0.3 s) was not disturbed either.
        self.assertFalse(any("left pool" in line for line in registrar.lines))
        self.assertEqual(len([line for line in pe.lines if '"registered"' in line]), 1)
