"""Failover storm (issue 14, item 6): N PEs homed at one registrar that is
killed; how fast do they all get a live home, compared with what a bare
Twisted mutual-TLS server can handshake?

Three registrars (``twistd rserpool-registrar``, ENRP between them, on
loopback) and N echo PEs in several processes (``_failover_pe_host.py``),
every PE hunting registrar a first, so all are homed there; a few more PEs
in a small extra process.  Then SIGKILL of registrar a together with that
extra process.  The PEs notice at once (their channels close), hunt the
two survivors (one attempt at a time, registrar a last) and re-register;
the survivors announce them to each other.  The dead PEs are adopted by
the takeover's winner and expire after their registration life.

Measured (``--json``):

- ``storm_recovery_s``: from the SIGKILL until every PE re-registered and
  both survivors return every PE, none homed at the dead registrar;
- ``storm_rate_per_s``: re-registrations per second over that time (both
  survivors), and ``storm_rate_per_registrar``;
- ``bare_tls_handshakes_per_s`` / ``bare_tls_resumed_handshakes_per_s``: a
  bare Twisted TLS server (the registrar's TLS settings: the same
  certificate, client certificates required and verified) doing nothing but
  full handshakes / resumed ones (TLS 1.3 tickets), driven by as many
  client processes, measured in the same run after the storm;
- ``storm_ratio_to_bare_tls`` (and ``..._resumed``): the per-registrar
  re-registration rate over that handshake rate (1.0: re-registering costs
  no more than the handshake alone);
- ``pes_lost``: PEs without a live home at the end (must be 0), and
  ``pes_missing_max``: the most PEs ever missing from a survivor's answer
  during the storm (a live PE stays resolvable throughout);
- ``stale_pe_max_s``: the longest a dead PE was still returned after the kill.

The PEs re-register with full TLS handshakes: they reach a *different*
registrar, and the registrars share no session ticket key, so resumption
cannot apply (docs/takeover.md); the resumed figure says what it would gain.

    .venv/bin/python benchmarks/bench_storm.py --quick          # 300 PEs
    .venv/bin/python benchmarks/bench_storm.py --json out.json  # 2,000 PEs (a quiet machine)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from twisted.internet import defer, protocol, task  # noqa: E402

from _failover_cluster import Cluster, Timers  # noqa: E402
from _failover_watch import pool_user  # noqa: E402


class UnionObserver:
    """Resolves every pool at one registrar; the union of the answers."""

    def __init__(self, reactor: Any, port: int, ca: str, pools: list[bytes], on_view: Any) -> None:
        from rserpool.asap.pu import PuSettings

        self.reactor = reactor
        self.pools = pools
        self.on_view = on_view
        self.pu = pool_user(reactor, [port], ca, PuSettings(stale_cache_value=0.0, max_pes_per_pool=16384,
                                                            t1=3.0, max_request_retransmit=0))
        self.busy = False
        self.loop = task.LoopingCall(self.poll)
        self.loop.clock = reactor

    def poll(self) -> None:
        if self.busy:
            return
        self.busy = True
        asked = self.reactor.seconds()

        def one(pool: bytes) -> defer.Deferred:
            d = self.pu.refresh(pool)
            d.addCallback(lambda pes: {pe.pe_id: pe.home_server_id for pe in pes})
            d.addErrback(lambda f: {} if f.check(_unknown_pool()) else None)
            return d

        def done(views: list) -> None:
            self.busy = False
            union = None if any(v is None for v in views) else {k: h for v in views for k, h in v.items()}
            self.on_view(asked, self.reactor.seconds(), union)

        defer.gatherResults([one(p) for p in self.pools]).addCallback(done)


def _unknown_pool() -> type:
    from rserpool.asap.pu import UnknownPool

    return UnknownPool


class _Lines(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.lines: list[dict] = []
        self.buffer = b""
        self.ended: defer.Deferred = defer.Deferred()
        self.first: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted)
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"{"):
                self.lines.append(json.loads(line))
                if not self.first.called:
                    self.first.callback(self.lines[0])

    def errReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted)
        sys.stderr.write(data.decode(errors="replace"))

    def processEnded(self, reason: Any) -> None:  # noqa: N802 (Twisted)
        if not self.first.called:
            self.first.errback(RuntimeError("process ended early"))
        self.ended.callback(None)


@defer.inlineCallbacks
def bare_tls_rate(reactor: Any, cluster: Cluster, handshakes: int, clients: int, resume: bool):
    """Handshakes per second of a bare TLS server (one process), ``clients`` load processes."""
    script = str(HERE / "_bare_tls.py")
    spec = cluster.registrars[0]
    cert, key = cluster.pki / f"{spec.name}.pem", cluster.pki / f"{spec.name}.key"
    common = ["--ca", str(cluster.ca)] + (["--resume"] if resume else [])
    server = _Lines()
    reactor.spawnProcess(server, sys.executable, [sys.executable, script, "server", "--cert", str(cert), "--key",
                                                  str(key)] + common, env=dict(os.environ))
    first = yield server.first
    start_at = reactor.seconds() + 5.0  # after every client process started (and warmed up)
    loads = []
    for index in range(clients):
        load = _Lines()
        identity = cluster.pe_hosts[index % len(cluster.pe_hosts)].identity
        reactor.spawnProcess(load, sys.executable, [
            sys.executable, script, "client", "--port", str(first["port"]), "--name", spec.name,
            "--cert", str(cluster.pki / f"{identity}.pem"), "--key", str(cluster.pki / f"{identity}.key"),
            "--count", str(max(1, handshakes // clients)), "--parallel", "32", "--start-at", str(start_at)] + common,
            env=dict(os.environ))
        loads.append(load)
    yield defer.DeferredList([load.ended for load in loads])
    server_pid = server.transport.pid
    if server_pid:
        os.kill(server_pid, 15)
    yield server.ended
    results = [load.lines[-1] for load in loads if load.lines]
    done = sum(r["done"] for r in results)
    span = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    return {"handshakes": done, "failed": sum(r["failed"] for r in results),
            "resumed": sum(r["resumed"] for r in results), "seconds": round(span, 3),
            "per_s": round(done / span, 1) if span > 0 else None}


class Storm:
    def __init__(self, reactor: Any, args: argparse.Namespace, directory: Path) -> None:
        self.reactor = reactor
        self.args = args
        self.timers = Timers(registration_life=args.life, keepalive_interval=30.0, keepalive_timeout=10.0,
                             channel_heartbeat=5.0, channel_dead_after=15.0, hunt_attempt_timeout=5.0)
        hosts = args.pe_procs + 1  # the last one dies with registrar a
        self.cluster = Cluster(reactor, directory, pe_hosts=hosts, timers=self.timers, pool_patterns="storm*",
                               on_pe_event=self._pe_event, extra_ini="")
        self.pools = [f"storm{i}".encode() for i in range(hosts)]
        self.fo_regs: dict[int, float] = {}
        self.first_regs: dict[int, float] = {}
        self.views: dict[int, tuple[float, Any]] = {}
        self.kill_at: float | None = None
        self.missing_max = 0
        self.stale_max = 0.0

    def _pe_event(self, spec: Any, event: dict) -> None:
        if event.get("ev") == "reg":
            now = self.reactor.seconds()
            if event.get("fo"):
                self.fo_regs.setdefault(event["pe"], now)
            else:
                self.first_regs.setdefault(event["pe"], now)

    def _view(self, registrar: int, asked: float, t: float, view: Any) -> None:
        self.views[registrar] = (asked, view)
        if view is None or self.kill_at is None or registrar == 0:
            return
        live = self.storm_pes
        self.missing_max = max(self.missing_max, len(live - set(view)))
        if self.dead_pes & set(view):
            self.stale_max = max(self.stale_max, asked - self.kill_at)

    def say(self, text: str) -> None:
        if self.args.json != "-":
            print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def sleep(self, seconds: float) -> defer.Deferred:
        return task.deferLater(self.reactor, seconds, lambda: None)

    @defer.inlineCallbacks
    def until(self, condition: Any, timeout: float, what: str):
        start = self.reactor.seconds()
        while not condition():
            if self.reactor.seconds() - start > timeout:
                raise RuntimeError(f"{what}: not within {timeout} s")
            yield self.sleep(0.1)
        return self.reactor.seconds() - start

    @defer.inlineCallbacks
    def run(self):
        args, cluster = self.args, self.cluster
        for index in range(3):
            cluster.start_registrar(index)
        observers = []
        for index, spec in enumerate(cluster.registrars):
            observer = UnionObserver(self.reactor, spec.asap_port, str(cluster.ca), self.pools,
                                     lambda asked, t, view, index=index: self._view(index, asked, t, view))
            observer.loop.start(0.25, now=True)
            observers.append(observer)
        yield self.until(lambda: all(self.views.get(i, (0, None))[1] is not None for i in range(3)), 60,
                         "registrars serving")
        per_host = max(1, args.pes // args.pe_procs)
        for index in range(args.pe_procs + 1):
            count = per_host if index < args.pe_procs else args.dead
            # A long first T5 round: under the start's load registrar a is slow,
            # but every PE must end up homed there.
            # PEs start at --start-rate in all (each process staggers its own),
            # so that registrar a, alone, homes every one of them.
            cluster.start_pe_host(index, count, pool=self.pools[index].decode(), first=0,
                                  stagger=(args.pe_procs + 1) / args.start_rate, t5=30.0)
        total = per_host * args.pe_procs + args.dead
        self.say(f"{total} PEs registering at registrar a ({args.pe_procs} processes + {args.dead} doomed)")
        yield self.until(lambda: len(self.first_regs) >= total, 300, "PEs registering")
        yield self.until(lambda: all(len(self.views.get(i, (0, None))[1] or {}) >= total for i in range(3)),
                         120, "every PE visible everywhere")
        homes = {home for _, home in self.views[1][1].items()}
        if len(homes) != 1:
            raise RuntimeError(f"PEs are not all homed at registrar a: {len(homes)} homes")
        dead_home = homes.pop()
        self.dead_pes = set(cluster.pe_hosts[-1].pes)
        self.storm_pes = {pe for spec in cluster.pe_hosts[:-1] for pe in spec.pes}
        yield self.sleep(1.0)
        self.say(f"all {total} PEs homed at registrar a ({dead_home:08x}) and visible at b and c: SIGKILL")
        self.kill_at = self.reactor.seconds()
        cluster.registrars[0].proc.signal("KILL")
        cluster.pe_hosts[-1].proc.signal("KILL")

        state = {"at": "start"}

        def recovered() -> bool:
            waiting = len(self.storm_pes - set(self.fo_regs))
            if waiting:
                state["at"] = f"{waiting} PEs not re-registered yet"
                return False
            for index in (1, 2):
                asked, view = self.views.get(index, (0.0, None))
                if view is None or asked <= self.kill_at:
                    state["at"] = f"no fresh view of registrar {index}"
                    return False
                missing = len(self.storm_pes - set(view))
                stale = len([p for p in self.storm_pes if view.get(p) == dead_home])
                if missing or stale:
                    state["at"] = f"registrar {index}: {missing} PEs missing, {stale} still homed at the dead one"
                    return False
            return True

        try:
            recovery = yield self.until(recovered, 120, "the storm's recovery")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc} ({state['at']})") from None
        last_fo = max(self.fo_regs[p] for p in self.storm_pes)
        registrations = len(self.storm_pes)
        self.say(f"recovered in {recovery:.2f} s; last re-registration {last_fo - self.kill_at:.2f} s after the kill")
        stale_deadline = self.timers.peer_dead_after + self.timers.takeover_ack_timeout + args.life + 10
        yield self.until(lambda: all(not (self.dead_pes & set(self.views.get(i, (0, None))[1] or {}))
                                     for i in (1, 2)), stale_deadline, "the dead PEs expiring")
        at_b, at_c = self.views[1][1] or {}, self.views[2][1] or {}
        lost = len([p for p in self.storm_pes if p not in at_b or p not in at_c])
        for observer in observers:
            observer.loop.stop()
        yield cluster.stop_all()
        self.say(f"bare TLS: {registrations} full handshakes, then {registrations} resumed ones")
        clients = max(2, min(args.pe_procs, 8))
        full = yield bare_tls_rate(self.reactor, cluster, registrations, clients, resume=False)
        resumed = yield bare_tls_rate(self.reactor, cluster, registrations, clients, resume=True)
        rate = registrations / recovery
        per_registrar = rate / 2
        return {
            "pes": registrations, "pe_processes": args.pe_procs, "dead_pes": len(self.dead_pes),
            "survivors": 2,
            "storm_recovery_s": round(recovery, 3),
            "storm_last_reregistration_s": round(last_fo - self.kill_at, 3),
            "storm_rate_per_s": round(rate, 1),
            "storm_rate_per_registrar": round(per_registrar, 1),
            "bare_tls": full, "bare_tls_resumed": resumed,
            "bare_tls_handshakes_per_s": full["per_s"],
            "bare_tls_resumed_handshakes_per_s": resumed["per_s"],
            "storm_ratio_to_bare_tls": round(per_registrar / full["per_s"], 3) if full["per_s"] else None,
            "storm_ratio_to_bare_tls_resumed": round(per_registrar / resumed["per_s"], 3) if resumed["per_s"] else None,
            "pes_lost": lost,
            "pes_missing_max": self.missing_max,
            "stale_pe_max_s": round(self.stale_max, 3),
            "registration_life_s": args.life,
            "quick": args.quick,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="failover storm benchmark (issue 14)")
    parser.add_argument("--quick", action="store_true", help="300 PEs instead of 2,000")
    parser.add_argument("--pes", type=int, default=None)
    parser.add_argument("--pe-procs", type=int, default=None)
    parser.add_argument("--dead", type=int, default=20, help="PEs that die with the registrar")
    parser.add_argument("--start-rate", type=float, default=250.0,
                        help="PEs started per second in all before the kill (default 250): registrar a "
                             "alone must home every one, so this stays below its session rate")
    parser.add_argument("--life", type=int, default=None, help="PE registration life (s)")
    parser.add_argument("--json", help="write the figures here ('-': stdout only)")
    parser.add_argument("--dir", help="run directory (kept)")
    args = parser.parse_args(argv)
    args.pes = args.pes or (300 if args.quick else 2000)
    args.pe_procs = args.pe_procs or (3 if args.quick else 8)
    args.life = args.life or (10 if args.quick else 20)

    from twisted.internet import reactor

    tmp = None
    if args.dir:
        directory = Path(args.dir)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="rserpool-storm-")
        directory = Path(tmp.name)
    storm = Storm(reactor, args, directory)
    outcome: dict = {}

    @defer.inlineCallbacks
    def go():
        try:
            outcome.update((yield storm.run()))
        except Exception as exc:
            import traceback
            traceback.print_exc()
            outcome.update({"error": str(exc)})
            yield storm.cluster.stop_all()
        finally:
            reactor.stop()

    reactor.callWhenRunning(go)
    reactor.run()
    text = json.dumps(outcome, indent=1)
    if args.json and args.json != "-":
        Path(args.json).write_text(text + "\n")
    print(text)
    if tmp is not None:
        tmp.cleanup()
    return 0 if outcome.get("pes_lost") == 0 and "error" not in outcome else 1


if __name__ == "__main__":
    sys.exit(main())
