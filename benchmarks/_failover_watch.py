"""What benchmarks/failover.py watches, continuously, while it breaks things.

- ``Observer``: a pool user pinned to one registrar (a static candidate
  list of one) that resolves the pool, all its PEs, every ``interval``
  seconds through the ordinary PU library.  An answer within ``timeout`` is
  the registrar's view (PE ID -> home server ID, from the PE parameters);
  no answer means the registrar is not serving (dead, stopped, or holding
  resolutions while it syncs).
- ``EchoLoad``: a pool user keeping one echo session through the PU-PE
  session layer (``rserpool.demo.echo_client.EchoSession``), sending
  sequence-numbered messages at a steady rate with a bounded window; every
  echo must come back once and in order; every failover must echo the
  cookie and run the application's callback.
- ``Invariants``: the bounds the campaign states, checked at every view:

  * visible: a live PE (its process alive, registered once) is returned by
    every serving registrar, except within ``visible_bound`` seconds of the
    last fault, of its registration, or of the registrar starting to serve;
  * stale: a dead PE (its process killed) is returned by no registrar more
    than ``stale_bound`` seconds after it died;
  * agree: once ``agree_bound`` seconds passed since the last fault, every
    serving registrar returns the same PEs with the same homes (so every
    per-home PE checksum agrees);
  * echo: no message lost or duplicated, every failover with its cookie
    echoed and its callback run, no cookie refused by a PE.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.internet import defer, task
from twisted.python.failure import Failure

__all__ = ["Observer", "EchoLoad", "Invariants", "Bounds", "pe_checksums", "pool_user"]


def pe_checksums(view: dict[int, int], pool: bytes) -> dict[int, int]:
    """The RFC 5353 PE checksum of each home server's PEs in ``view``."""
    from rserpool.wire.checksum import pe_checksum

    by_home: dict[int, list] = defaultdict(list)
    for pe_id, home in view.items():
        by_home[home].append((pool, pe_id))
    return {home: pe_checksum(keys) for home, keys in by_home.items()}


def pool_user(reactor: Any, ports: list[int], ca: str, settings: Any) -> Any:
    """A ``PoolUser`` hunting among the registrars on ``ports`` (127.0.0.1),
    with a short T5 (0.5 s, at most 1 s): a registrar that comes back is
    found again at once."""
    from rserpool.security import tls
    from rserpool.service.candidates import RegistrarCandidates
    from rserpool.service.channel import ChannelSettings
    from rserpool.service.hunt import ServerHunt, make_channel_factory
    from rserpool.service.pu import PoolUser

    holder: list = []
    options: dict = {}

    def tls_options(name: str) -> Any:
        if name not in options:
            options[name] = tls.client_options(name, [ca])
        return options[name]

    factory = make_channel_factory(lambda candidate: holder[0], reactor,
                                   ChannelSettings(heartbeat_interval=0.5, dead_after=2.0))
    hunt = ServerHunt(reactor, RegistrarCandidates(static=[f"127.0.0.1:{p}" for p in ports]), tls_options,
                      factory, t5_initial=0.5, t5_max=1.0, attempt_timeout=1.0)
    pu = PoolUser(reactor, hunt, settings=settings)
    holder.append(pu)
    return pu


class Observer:
    """Resolves ``pool`` at one registrar, over and over."""

    def __init__(self, reactor: Any, index: int, port: int, ca: str, pool: bytes, on_view: Callable,
                 interval: float = 0.3, timeout: float = 1.5) -> None:
        from rserpool.asap.pu import PuSettings

        self.reactor = reactor
        self.index = index
        self.pool = pool
        self.on_view = on_view
        self.interval = interval
        self.timeout = timeout
        self.pu = pool_user(reactor, [port], ca, PuSettings(stale_cache_value=0.0, max_pes_per_pool=16384,
                                                            t1=timeout, max_request_retransmit=0))
        self._busy = False
        self._loop = task.LoopingCall(self.poll)
        self._loop.clock = reactor

    def start(self) -> None:
        self._loop.start(self.interval, now=True)

    def stop(self) -> defer.Deferred:
        if self._loop.running:
            self._loop.stop()
        return defer.maybeDeferred(self.pu.stop) if hasattr(self.pu, "stop") else defer.succeed(None)

    def poll(self) -> None:
        if self._busy:
            return
        self._busy = True
        asked = self.reactor.seconds()
        done: defer.Deferred = defer.Deferred()
        timer = self.reactor.callLater(self.timeout, lambda: done.called or done.callback(None))
        d = self.pu.refresh(self.pool)

        def answered(pes: Any) -> None:
            if not done.called:
                done.callback({pe.pe_id: pe.home_server_id for pe in pes})

        def failed(failure: Failure) -> None:
            from rserpool.asap.pu import UnknownPool

            if done.called:
                return
            done.callback({} if failure.check(UnknownPool) else None)

        d.addCallbacks(answered, failed)

        def report(view: Any) -> None:
            self._busy = False
            if timer.active():
                timer.cancel()
            self.on_view(self.index, asked, self.reactor.seconds(), view)

        done.addCallback(report)


class EchoLoad:
    """One PU with one echo session, sending numbered messages."""

    def __init__(self, reactor: Any, index: int, registrar_ports: list[int], ca: str, pool: bytes,
                 rate: float = 10.0, window: int = 32) -> None:
        from rserpool.asap.pu import PuSettings
        from rserpool.asap.pu_session import PuSessionSettings
        from rserpool.demo.echo_client import EchoSession
        from rserpool.service.channel import ChannelSettings
        from rserpool.service.pu_session import pe_tls_options

        self.reactor = reactor
        self.index = index
        self.rate = rate
        self.window = window
        ports = registrar_ports[index % len(registrar_ports):] + registrar_ports[:index % len(registrar_ports)]
        self.pu = pool_user(reactor, ports, ca, PuSettings(stale_cache_value=1.0, max_pes_per_pool=16384, t1=2.0))
        self.session = EchoSession(
            reactor, selector=self.pu.select, report_unreachable=self.pu.report_unreachable,
            tls_options_for=pe_tls_options([ca]), pool_handle=pool, on_failover=self._failover,
            settings=PuSessionSettings(max_attempts=50, backoff_initial=0.1, backoff_max=1.0, max_queued=1024),
            channel_settings=ChannelSettings(heartbeat_interval=0.5, dead_after=2.0), max_outstanding=4096)
        self.sent = 0
        self.echoed = 0
        self.out_of_order: list[tuple[int, int]] = []
        self.errors: list[str] = []
        self.failovers: list[tuple[float, int, int, bool]] = []
        self.echo_times: list[float] = []
        self.started_at: float | None = None
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = reactor
        self.sending = False

    @property
    def current_pe(self) -> int | None:
        pe = self.session.client.current_pe
        return None if pe is None else pe.pe_id

    @defer.inlineCallbacks
    def start(self):
        self.started_at = self.reactor.seconds()
        yield self.session.start()
        self.sending = True
        self._loop.start(1.0 / self.rate, now=True)

    def stop_sending(self) -> None:
        self.sending = False
        if self._loop.running:
            self._loop.stop()

    @property
    def outstanding(self) -> int:
        return self.sent - self.echoed

    def _tick(self) -> None:
        if not self.sending or self.outstanding >= self.window:
            return
        self.sent += 1
        seq = self.sent
        try:
            d = self.session.send(b"%d:%d" % (self.index, seq))
        except Exception as exc:  # busy or closed: that message never left
            self.sent -= 1
            self.errors.append(f"send {seq}: {exc}")
            return
        d.addCallbacks(self._echo, self._lost, callbackArgs=(seq,), errbackArgs=(seq,))

    def _echo(self, payload: bytes, seq: int) -> None:
        if payload != b"%d:%d" % (self.index, seq) or seq != self.echoed + 1:
            self.out_of_order.append((seq, self.echoed))
        self.echoed += 1
        self.echo_times.append(self.reactor.seconds())

    def _lost(self, failure: Failure, seq: int) -> None:
        if not failure.check(defer.CancelledError):
            self.errors.append(f"message {seq}: {failure.getErrorMessage()}")

    def _failover(self, old: Any, new: Any, cookie_echoed: bool) -> None:
        self.failovers.append((self.reactor.seconds(), old.pe_id, new.pe_id, cookie_echoed))

    @property
    def duplicates(self) -> int:
        return len(self.session.unexpected)

    def close(self) -> defer.Deferred:
        self.stop_sending()
        d = self.session.close()
        d.addErrback(lambda f: None)
        return d


@dataclass
class Bounds:
    visible: float   # a live PE is visible at every serving registrar within this after a fault
    stale: float     # a dead PE is gone everywhere within this after its death
    agree: float     # serving registrars agree (same PEs, homes, checksums) this long after a fault


@dataclass
class Invariants:
    bounds: Bounds
    pool: bytes
    registrars: int
    live: dict = field(default_factory=dict)       # pe_id -> first registered (s)
    dead: dict = field(default_factory=dict)       # pe_id -> died (s)
    last_fault: float = 0.0
    fault_label: str = "start"
    views: dict = field(default_factory=dict)      # registrar -> (t, view or None)
    serving_since: dict = field(default_factory=dict)
    expected_up: set = field(default_factory=set)  # registrars that should be serving
    violations: list = field(default_factory=list)
    counts: dict = field(default_factory=lambda: defaultdict(int))
    stale_max: float = 0.0                         # longest a dead PE was still returned (s)
    missing_max: float = 0.0                       # longest a live PE was not returned, past its grace (s)
    samples: list = field(default_factory=list)    # (t, registrar, visible PEs or None)

    def fault(self, t: float, label: str) -> None:
        self.last_fault = t
        self.fault_label = label

    def down(self, registrar: int) -> None:
        """``registrar`` is being killed, stopped or restarted: not expected
        to serve, and what it answered before counts no more."""
        self.expected_up.discard(registrar)
        self.views.pop(registrar, None)
        self.serving_since.pop(registrar, None)

    def registered(self, pe_id: int, t: float) -> None:
        if pe_id not in self.live and pe_id not in self.dead:
            self.live[pe_id] = t

    def died(self, pe_ids: Any, t: float) -> None:
        for pe_id in pe_ids:
            if self.live.pop(pe_id, None) is not None or pe_id not in self.dead:
                self.dead[pe_id] = t

    def _violate(self, kind: str, t: float, text: str) -> None:
        self.counts[kind] += 1
        if len(self.violations) < 200:
            self.violations.append({"t": round(t, 3), "kind": kind, "after": self.fault_label, "what": text})

    def view(self, registrar: int, asked: float, t: float, view: dict | None) -> None:
        self.samples.append((t, registrar, None if view is None else len(view)))
        previous = self.views.get(registrar)
        self.views[registrar] = (t, view, asked)
        if view is None:
            self.serving_since.pop(registrar, None)
            return
        if previous is None or previous[1] is None or registrar not in self.serving_since:
            self.serving_since[registrar] = t
        since = self.serving_since[registrar]
        grace_from = max(self.last_fault, since)
        bounds = self.bounds
        # asked..t: the answer reflects the registrar at some moment in between.
        for pe_id, registered in self.live.items():
            if pe_id not in view:
                late = asked - max(grace_from, registered) - bounds.visible
                if late > 0:
                    self.missing_max = max(self.missing_max, late + bounds.visible)
                    self._violate("visible", t, f"live PE {pe_id:08x} not returned by registrar {registrar}")
        for pe_id in view:
            died = self.dead.get(pe_id)
            if died is not None:
                self.stale_max = max(self.stale_max, asked - died)
                if asked - died > bounds.stale:
                    self._violate("stale", t, f"PE {pe_id:08x} dead for {asked - died:.1f} s returned by "
                                              f"registrar {registrar}")
        if asked - self.last_fault > bounds.agree:
            others = [v for r, (vt, v, _) in self.views.items() if r != registrar and v is not None
                      and r in self.serving_since and t - vt < 1.0 and vt - self.serving_since[r] > 1.0]
            for other in others:
                if other != view:
                    self._violate("agree", t, f"registrar {registrar} differs from another serving registrar: "
                                              f"{_diff(view, other)}")
                    break

    def why_not_healed(self, now: float) -> str:
        """What ``healed`` is still waiting for (for the log)."""
        reasons = []
        views = {}
        for registrar in sorted(self.expected_up):
            seen = self.views.get(registrar)
            if seen is None or seen[1] is None:
                reasons.append(f"registrar {registrar} not serving")
            elif seen[2] <= self.last_fault:
                reasons.append(f"registrar {registrar} not asked since the fault")
            elif registrar not in self.serving_since:
                reasons.append(f"registrar {registrar} not serving yet")
            else:
                views[registrar] = seen[1]
        live = set(self.live)
        for registrar, view in views.items():
            missing, extra = live - set(view), set(view) - live
            homes = set(view.values())
            if missing or extra:
                reasons.append(f"registrar {registrar}: {len(missing)} live PEs missing, {len(extra)} others")
            if len(homes) > len(self.expected_up):
                reasons.append(f"registrar {registrar}: PEs homed at {len(homes)} servers "
                               f"({', '.join(f'{h:08x}' for h in sorted(homes))})")
        if len({tuple(sorted(v.items())) for v in views.values()}) > 1:
            reasons.append("views differ")
        return "; ".join(reasons) or "healed"

    def healed(self, now: float) -> bool:
        """Every expected registrar serves and, asked after the last fault,
        returns every live PE and no dead one, the same view everywhere,
        with no PE homed at a registrar that is gone (no more distinct homes
        than registrars up: the takeover and the re-homing are over)."""
        views = []
        for registrar in self.expected_up:
            seen = self.views.get(registrar)
            if (seen is None or seen[1] is None or seen[2] <= self.last_fault
                    or registrar not in self.serving_since):
                return False
            views.append(seen[1])
        if not views:
            return False
        live = set(self.live)
        first = views[0]
        return (all(v == first for v in views) and set(first) == live
                and len(set(first.values())) <= len(self.expected_up))

    def report(self) -> dict:
        return {"violations": dict(self.counts), "first_violations": self.violations[:50],
                "stale_pe_max_s": round(self.stale_max, 3), "missing_pe_max_s": round(self.missing_max, 3),
                "pes_live_at_end": len(self.live), "pes_died": len(self.dead)}


def _diff(one: dict, other: dict) -> str:
    only_one = sorted(set(one) - set(other))[:3]
    only_other = sorted(set(other) - set(one))[:3]
    homes = sorted(k for k in set(one) & set(other) if one[k] != other[k])[:3]
    return (f"only here {[f'{k:08x}' for k in only_one]}, only there {[f'{k:08x}' for k in only_other]}, "
            f"other home {[f'{k:08x}' for k in homes]}")
