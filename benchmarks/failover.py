"""The failure campaign (issue 14): kill, stop and restart registrars and PEs
under load, on loopback, and check that nothing is lost.

Three registrars (real ``twistd rserpool-registrar`` processes with ENRP
between them), a few hundred echo PEs in several processes, and pool users
(in this process) resolving the pool at each registrar and keeping echo
sessions with sequence numbers.  Faults, one after the other, each under
load and each followed by the wait for the cluster to heal:

1. SIGKILL of a registrar;
2. restart of the killed registrar (a new server ID);
3. SIGSTOP of a registrar for longer than MAX-TIME-LAST-HEARD (its peers
   take it over), then SIGCONT (it restarts in place);
4. a rolling restart of all three, one at a time (SIGTERM, start);
5. SIGKILL of a PE process (then a new one);
6. SIGKILL of the process of each PU session's serving PE, mid-session.

The invariants (``_failover_watch.Invariants``) are checked at every view,
not only at the end; the bounds are printed and go into the JSON.  The exit
status is 0 only if no invariant was violated.  A timeline (PEs returned by
each registrar, PU messages per second, faults marked) goes to ``--plot``
as a PNG when matplotlib is installed (``pip install -e .[plot]``), and its
data always goes into the JSON.

    .venv/bin/python benchmarks/failover.py            # the full campaign (a few minutes)
    .venv/bin/python benchmarks/failover.py --quick    # the short one CI runs (tests/test_failover_campaign.py)
    .venv/bin/python benchmarks/failover.py --json out.json --plot docs/failover-timeline.png
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from twisted.internet import defer, task  # noqa: E402

from _failover_cluster import Cluster, Timers  # noqa: E402
from _failover_watch import Bounds, EchoLoad, Invariants, Observer, pe_checksums  # noqa: E402

POOL = b"echo"
NAMES = "abc"


def bounds_for(timers: Timers) -> Bounds:
    """The stated bounds, from the timers (with margin for a loaded machine).

    - visible: a PE whose registrar died notices at once (its channel
      closes) or within the channel's dead-peer time (a stopped registrar),
      hunts (attempts time out after hunt_attempt_timeout) and re-registers;
      the new home announces it.  A restarted registrar serves only once it
      joined.  Bound: dead-peer time + 2 hunt attempts + 6 s.
    - stale: a PE that dies while its registrar lives is removed when its
      channel closes; one whose registrar died too is adopted at the
      takeover (peer_dead_after + ACK timeout) and expires after its
      registration life.  Bound: those plus 4 s.
    - agree: the audit (a PRESENCE every heartbeat cycle) repairs any
      difference; bound: the stale bound plus 2 heartbeat cycles plus 2 s.
    """
    visible = timers.channel_dead_after + 2 * timers.hunt_attempt_timeout + 6.0
    stale = timers.peer_dead_after + timers.takeover_ack_timeout + timers.registration_life + 4.0
    agree = max(visible, stale) + 2 * timers.heartbeat_cycle + 2.0
    return Bounds(visible=visible, stale=stale, agree=agree)


class Campaign:
    def __init__(self, reactor: Any, args: argparse.Namespace, directory: Path) -> None:
        self.reactor = reactor
        self.args = args
        self.timers = Timers(**args.timers)
        self.bounds = bounds_for(self.timers)
        self.inv = Invariants(self.bounds, POOL, 3)
        self.cluster = Cluster(reactor, directory, pe_hosts=args.pe_procs, timers=self.timers,
                               on_pe_event=self._pe_event)
        self.observers: list[Observer] = []
        self.loads: list[EchoLoad] = []
        self.faults: list[dict] = []
        self.live_counts: list[tuple[float, int]] = []
        self.cookie_refusals = 0
        self.t0 = reactor.seconds()
        self.log_lines: list[str] = []

    # -- events ------------------------------------------------------------------------

    def _pe_event(self, spec: Any, event: dict) -> None:
        now = self.reactor.seconds()
        if event.get("ev") == "reg":
            self.inv.registered(event["pe"], now)
            self.live_counts.append((now, len(self.inv.live)))
        elif event.get("ev") == "cookie" and not event.get("ok"):
            self.cookie_refusals += 1

    def say(self, text: str) -> None:
        line = f"[{self.reactor.seconds() - self.t0:7.2f}] {text}"
        self.log_lines.append(line)
        if not self.args.json_only:
            print(line, flush=True)

    def sleep(self, seconds: float) -> defer.Deferred:
        return task.deferLater(self.reactor, seconds, lambda: None)

    @defer.inlineCallbacks
    def wait_for(self, condition: Any, timeout: float, what: str):
        start = self.reactor.seconds()
        told = start
        while not condition():
            now = self.reactor.seconds()
            if now - start > timeout:
                self.inv._violate("timeout", now, f"{what}: not within {timeout:.0f} s")
                self.say(f"TIMEOUT: {what} not within {timeout:.0f} s ({self.inv.why_not_healed(now)})")
                return None
            if now - told > 5.0:
                told = now
                self.say(f"  still waiting for {what}: {self.inv.why_not_healed(now)}")
            yield self.sleep(0.2)
        return self.reactor.seconds() - start

    def healed(self) -> bool:
        return self.inv.healed(self.reactor.seconds())

    # -- faults --------------------------------------------------------------------------

    @defer.inlineCallbacks
    def fault(self, label: str, action: Any):
        """Mark the fault, run it, wait until healed; record the recovery time."""
        start = self.reactor.seconds()
        self.inv.fault(start, label)
        self.say(f"fault: {label}")
        yield action()
        end = self.reactor.seconds()
        recovered = yield self.wait_for(self.healed, self.bounds.agree + 10, f"healing after {label}")
        self.faults.append({"label": label, "t": round(start - self.t0, 3), "until": round(end - self.t0, 3),
                            "healed_after_s": None if recovered is None else round(end + recovered - start, 3)})
        self.say(f"healed {'(never)' if recovered is None else f'{end + recovered - start:.1f} s after the fault'}")
        yield self.sleep(1.0)

    def _registrar(self, index: int):
        return self.cluster.registrars[index]

    @defer.inlineCallbacks
    def kill_registrar(self, index: int):
        proc = self._registrar(index).proc
        self.inv.down(index)
        proc.signal("KILL")
        yield proc.ended

    @defer.inlineCallbacks
    def kill_registrar_and_pes(self, index: int, host: int):
        """A registrar and a PE process die together: the PEs homed at the
        registrar are adopted by its peers and must expire (the stale bound)."""
        yield defer.gatherResults([self.kill_registrar(index), self.kill_pe_host(host)])

    def start_registrar(self, index: int):
        self.cluster.start_registrar(index)
        self.inv.expected_up.add(index)
        self.inv.fault(self.reactor.seconds(), f"start of registrar {NAMES[index]}")
        return defer.succeed(None)

    @defer.inlineCallbacks
    def stop_and_continue(self, index: int):
        proc = self._registrar(index).proc
        self.inv.down(index)
        proc.signal("STOP")
        pause = self.timers.peer_dead_after + self.timers.takeover_ack_timeout + 2.0
        self.say(f"  registrar {NAMES[index]} stopped for {pause:.1f} s (MAX-TIME-LAST-HEARD "
                 f"{self.timers.max_time_last_heard} s)")
        yield self.sleep(pause)
        proc.signal("CONT")
        self.inv.fault(self.reactor.seconds(), f"SIGCONT of registrar {NAMES[index]}")
        self.inv.expected_up.add(index)

    @defer.inlineCallbacks
    def restart_registrar(self, index: int):
        proc = self._registrar(index).proc
        self.inv.down(index)
        proc.signal("TERM")
        yield proc.ended
        yield self.start_registrar(index)

    @defer.inlineCallbacks
    def kill_pe_host(self, index: int):
        spec = self.cluster.pe_hosts[index]
        dying = list(spec.pes)
        spec.proc.signal("KILL")
        self.inv.died(dying, self.reactor.seconds())
        self.live_counts.append((self.reactor.seconds(), len(self.inv.live)))
        yield spec.proc.ended
        self.say(f"  killed PE process {index} ({len(dying)} PEs)")

    @defer.inlineCallbacks
    def restart_pe_host(self, index: int):
        spec = self.cluster.pe_hosts[index]
        self.cluster.start_pe_host(index)
        yield self.wait_for(lambda: len(spec.pes) >= spec.count and all(p in self.inv.live for p in spec.pes),
                            30, f"PE process {index} registering")

    @defer.inlineCallbacks
    def kill_serving_pe(self, load: EchoLoad):
        pe_id = load.current_pe
        spec = self.cluster.host_of(pe_id) if pe_id is not None else None
        if spec is None:
            self.say(f"  PU {load.index}: no serving PE known")
            return
        before = len(load.failovers)
        self.say(f"  PU {load.index} is served by PE {pe_id:08x} in PE process {spec.index}: SIGKILL")
        yield self.kill_pe_host(spec.index)
        yield self.wait_for(lambda: len(load.failovers) > before, 30, f"PU {load.index} failing over")
        yield self.restart_pe_host(spec.index)

    # -- the run -------------------------------------------------------------------------

    @defer.inlineCallbacks
    def run(self):
        args, cluster, inv = self.args, self.cluster, self.inv
        self.say(f"run directory {cluster.dir}; bounds: visible {self.bounds.visible:.1f} s, stale "
                 f"{self.bounds.stale:.1f} s, agree {self.bounds.agree:.1f} s")
        for index in range(3):
            yield self.start_registrar(index)
        for index, spec in enumerate(cluster.registrars):
            observer = Observer(self.reactor, index, spec.asap_port, str(cluster.ca), POOL, inv.view)
            self.observers.append(observer)
            observer.start()
        yield self.wait_for(lambda: all(i in inv.serving_since for i in range(3)), 60, "registrars serving")
        per_host = max(1, args.pes // args.pe_procs)
        for index in range(args.pe_procs):
            cluster.pe_hosts[index].count = per_host
            cluster.start_pe_host(index)
        total = per_host * args.pe_procs
        yield self.wait_for(lambda: len(inv.live) >= total, 90, f"{total} PEs registering")
        yield self.wait_for(self.healed, 60, "every PE visible everywhere")
        self.say(f"{len(inv.live)} PEs registered and visible at all three registrars")
        for index in range(args.pus):
            load = EchoLoad(self.reactor, index, [s.asap_port for s in cluster.registrars], str(cluster.ca), POOL,
                            rate=args.rate)
            self.loads.append(load)
        yield defer.gatherResults([load.start() for load in self.loads])
        self.say(f"{len(self.loads)} PU echo sessions running at {args.rate:g} messages/s each")
        self.load_start = self.reactor.seconds()
        yield self.sleep(2.0)

        for round_ in range(args.rounds):
            victim = round_ % 3
            paused = (round_ + 1) % 3
            yield self.fault(f"SIGKILL registrar {NAMES[victim]}", lambda: self.kill_registrar(victim))
            yield self.fault(f"restart registrar {NAMES[victim]}", lambda: self.start_registrar(victim))
            yield self.fault(f"SIGSTOP registrar {NAMES[paused]} past MAX-TIME-LAST-HEARD, SIGCONT",
                             lambda: self.stop_and_continue(paused))
            for index in range(3):
                yield self.fault(f"rolling restart: registrar {NAMES[index]}", lambda: self.restart_registrar(index))
            host = round_ % len(cluster.pe_hosts)
            yield self.fault(f"SIGKILL PE process {host}", lambda: self.kill_pe_host(host))
            yield self.fault(f"new PE process {host}", lambda: self.restart_pe_host(host))
            for load in self.loads:
                yield self.fault(f"SIGKILL of PU {load.index}'s serving PE",
                                 lambda: self.kill_serving_pe(load))
            host = (round_ + 1) % len(cluster.pe_hosts)
            yield self.fault(f"SIGKILL registrar {NAMES[victim]} and PE process {host} together",
                             lambda: self.kill_registrar_and_pes(victim, host))
            yield self.fault(f"restart registrar {NAMES[victim]}, new PE process {host}",
                             lambda: defer.gatherResults([self.start_registrar(victim),
                                                          self.restart_pe_host(host)]))

        for load in self.loads:
            load.stop_sending()
        yield self.wait_for(lambda: all(load.outstanding == 0 for load in self.loads), 20, "last echoes")
        self.end = self.reactor.seconds()
        return self.report()

    def report(self) -> dict:
        inv = self.inv
        echo = {
            "sessions": len(self.loads),
            "sent": sum(load.sent for load in self.loads),
            "echoed": sum(load.echoed for load in self.loads),
            "lost": sum(load.outstanding for load in self.loads),
            "duplicated": sum(load.duplicates for load in self.loads),
            "out_of_order": sum(len(load.out_of_order) for load in self.loads),
            "errors": sum(len(load.errors) for load in self.loads),
            "failovers": sum(len(load.failovers) for load in self.loads),
            "failovers_without_cookie": sum(1 for load in self.loads for f in load.failovers if not f[3]),
            "sessions_without_failover": sum(1 for load in self.loads if not load.failovers),
            "cookies_refused_by_pes": self.cookie_refusals,
        }
        for key in ("lost", "duplicated", "out_of_order", "errors", "failovers_without_cookie",
                    "sessions_without_failover", "cookies_refused_by_pes"):
            if echo[key]:
                inv.counts["echo_" + key] += echo[key]
        views = [v for _, v, _ in inv.views.values() if v is not None]
        checksums = [{f"{home:08x}": f"{c:04x}" for home, c in sorted(pe_checksums(v, POOL).items())} for v in views]
        result = {
            "ok": not inv.counts,
            "pes": self.args.pes, "pe_processes": self.args.pe_procs, "registrars": 3,
            "timers": self.timers.__dict__, "bounds": self.bounds.__dict__,
            "faults": self.faults, "echo": echo, **inv.report(),
            "checksums_at_end": checksums, "checksums_agree_at_end": len({json.dumps(c) for c in checksums}) == 1,
            "pes_lost": echo["lost"],
            "duration_s": round(self.reactor.seconds() - self.t0, 1),
            "timeline": self.timeline(),
        }
        return result

    def timeline(self) -> dict:
        t0 = self.t0
        rate: dict[int, int] = {}
        for load in self.loads:
            for t in load.echo_times:
                rate[int(t - t0)] = rate.get(int(t - t0), 0) + 1
        return {
            "visible": [(round(t - t0, 2), r, n) for t, r, n in self.inv.samples],
            "live": [(round(t - t0, 2), n) for t, n in self.live_counts],
            "echo_rate": sorted(rate.items()),
            "faults": [(f["t"], f["until"], f["label"]) for f in self.faults],
        }

    @defer.inlineCallbacks
    def shutdown(self):
        for load in self.loads:
            yield load.close()
        for observer in self.observers:
            yield observer.stop()
        yield self.cluster.stop_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="RSerPool failure campaign (issue 14)")
    parser.add_argument("--quick", action="store_true", help="the short version (CI): fewer PEs, one round")
    parser.add_argument("--pes", type=int, default=None, help="PEs in all (default 300; --quick 90)")
    parser.add_argument("--pe-procs", type=int, default=None, help="PE processes (default 6; --quick 3)")
    parser.add_argument("--pus", type=int, default=None, help="PU echo sessions (default 4; --quick 2)")
    parser.add_argument("--rate", type=float, default=20.0, help="messages/s per PU session")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of faults (default 2; --quick 1)")
    parser.add_argument("--json", help="write the result as JSON to this file ('-': stdout)")
    parser.add_argument("--plot", help="write the timeline PNG here (needs matplotlib: pip install -e .[plot])")
    parser.add_argument("--dir", help="run directory (default: a temporary one, removed unless --keep)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs, configs, PKI)")
    parser.add_argument("--timer", action="append", default=[], metavar="NAME=SECONDS",
                        help="change one of the short timers (_failover_cluster.Timers), e.g. "
                             "max_time_last_heard=3; the bounds follow")
    args = parser.parse_args(argv)
    args.timers = {}
    for item in args.timer:
        name, _, value = item.partition("=")
        if name not in Timers.__dataclass_fields__ or not value:
            parser.error(f"--timer {item}: one of {', '.join(Timers.__dataclass_fields__)} = a number")
        args.timers[name] = int(value) if name == "registration_life" else float(value)
    args.pes = args.pes or (90 if args.quick else 300)
    args.pe_procs = args.pe_procs or (3 if args.quick else 6)
    args.pus = args.pus or (2 if args.quick else 4)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.json_only = args.json == "-"

    from twisted.internet import reactor

    tmp = None
    if args.dir:
        directory = Path(args.dir)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="rserpool-failover-")
        directory = Path(tmp.name)
    campaign = Campaign(reactor, args, directory)
    outcome: dict = {}

    @defer.inlineCallbacks
    def go():
        try:
            result = yield campaign.run()
            outcome.update(result)
        except Exception:
            import traceback
            traceback.print_exc()
            outcome.update({"ok": False, "error": "campaign crashed", "log": campaign.log_lines})
        finally:
            yield campaign.shutdown()
            reactor.stop()

    reactor.callWhenRunning(go)
    started = time.monotonic()
    reactor.run()
    outcome.setdefault("wall_s", round(time.monotonic() - started, 1))
    if args.plot and "timeline" in outcome:
        from _failover_plot import plot_timeline

        written = plot_timeline(outcome, args.plot)
        outcome["plot"] = written
        if not args.json_only:
            print(f"timeline: {written}" if written else "timeline PNG not written: matplotlib is not installed "
                                                       "(pip install -e .[plot]); the data is in the JSON")
    if args.json:
        text = json.dumps(outcome, indent=1, default=str)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    if not args.json_only:
        summary = {k: outcome.get(k) for k in ("ok", "violations", "stale_pe_max_s", "missing_pe_max_s",
                                               "pes_lost", "echo", "checksums_agree_at_end", "duration_s")}
        print(json.dumps(summary, indent=1, default=str))
        for fault in outcome.get("faults", []):
            print(f"  {fault['label']:<60} healed after {fault['healed_after_s']} s")
        for violation in outcome.get("first_violations", [])[:20]:
            print(f"  VIOLATION {violation}")
    if args.keep or args.dir:
        print(f"run directory kept: {directory}", file=sys.stderr)
    elif tmp is not None:
        tmp.cleanup()
    return 0 if outcome.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
