"""The child processes of ``bench_aaa.py`` (see its docstring): the client-rate
driver, the instrumented registrar, the PU and the registration load.

Each runs its own Twisted reactor; ``bench_aaa.py --serve-...`` starts them."""

from __future__ import annotations

import gc
import json
import os
import secrets
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

SERVER_CPU = "0"
OTHER_CPU = "1"
BENCH_POOL = b"bench-pool"
SUFFIX = "dc=rserpool,dc=test"
SERVICE_DN = f"uid=enrp-svc,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "svc-secret"  # etc/ldap/example.ldif
ELEMENTS = f"ou=elements,{SUFFIX}"
POOLS = f"ou=pools,{SUFFIX}"


def identity(index: int) -> str:
    return f"bench-pe{index}"


def chap_secret(index: int) -> bytes:
    return f"bench-secret-{index}".encode()


def say(text: str) -> None:
    print(text, flush=True)


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile (no interpolation)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(-(-fraction * len(ordered) // 1)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(seconds: list[float]) -> dict[str, Any]:
    ms = [value * 1e3 for value in seconds]
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 3) if ms else None,
        "p99_ms": round(percentile(ms, 0.99), 3) if ms else None,
        "max_ms": round(max(ms), 3) if ms else None,
    }


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")



# -- child: client rates ------------------------------------------------------------------


def drive(reactor: Any, operation: Callable[[int], Any], *, users: int, concurrency: int,
          warmup: int, window: float, server_pid: int | None = None) -> Any:
    """Keep ``concurrency`` operations outstanding for ``window`` seconds
    (after ``warmup`` operations); fires with the figures.  ``operation(i)``
    returns a Deferred firing True for the expected answer."""
    from twisted.internet import defer

    state = {"next": 0, "ok": 0, "bad": 0, "failed": 0}
    latencies: list[float] = []

    @defer.inlineCallbacks
    def worker(end: float, record: bool):
        while time.perf_counter() < end:
            index = state["next"] % users
            state["next"] += 1
            began = time.perf_counter()
            try:
                good = yield operation(index)
            except Exception:  # noqa: BLE001 - counted, reported
                state["failed"] += 1
                continue
            if record:
                latencies.append(time.perf_counter() - began)
                state["ok" if good else "bad"] += 1

    @defer.inlineCallbacks
    def run():
        # warm-up: ``warmup`` operations in parallel batches
        done = 0
        while done < warmup:
            batch = min(concurrency, warmup - done)
            yield defer.DeferredList([defer.maybeDeferred(operation, (done + k) % users)
                                      for k in range(batch)], consumeErrors=True)
            done += batch
        state["next"] = 0
        server0 = process_cpu_s(server_pid) if server_pid else 0.0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        yield defer.gatherResults([worker(wall0 + window, True) for _ in range(concurrency)])
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        server = process_cpu_s(server_pid) - server0 if server_pid else None
        completed = state["ok"] + state["bad"]
        figures = {"per_s": round(completed / wall, 1), "completed": completed,
                   "wrong_answers": state["bad"], "failed": state["failed"],
                   "client_cpu_us_per_op": round(cpu / completed * 1e6, 1) if completed else None,
                   "server_cpu_us_per_op": (round(server / completed * 1e6, 1)
                                            if completed and server is not None else None),
                   "window_s": round(wall, 3), "concurrency": concurrency}
        figures.update({f"latency_{k}": v for k, v in latency_summary(latencies).items() if k != "n"})
        return figures

    return run()


def serve_clients(spec_path: str) -> int:
    """Child: the client-side rates against the running FreeRADIUS and slapd."""
    from twisted.internet import defer, reactor

    from rserpool.backends.ldap import LdapDirectory
    from rserpool.backends.ldap_authz import LdapAuthorizer
    from rserpool.backends.radius import RadiusClient, RadiusServer
    from rserpool.backends.radius_authz import RadiusAuthorizer
    from rserpool.security.chap import chap_response

    spec = json.loads(Path(spec_path).read_text())
    users, window = spec["users"], spec["window"]
    server = RadiusServer("127.0.0.1", spec["radius_port"], spec["radius_secret"].encode())
    results: dict[str, Any] = {}

    def chap(client: Any) -> Callable[[int], Any]:
        def call(index: int) -> Any:
            ident, challenge = index % 256, secrets.token_bytes(16)
            response = chap_response(ident, chap_secret(index), challenge)
            return client.chap_verify(identity(index), ident, challenge, response).addCallback(
                lambda decision: decision.accepted)
        return call

    def authorize(authorizer: Any) -> Callable[[int], Any]:
        def call(index: int) -> Any:
            return authorizer.authorize(identity(index), frozenset(), "register", BENCH_POOL)
        return call

    def srp(directory: Any) -> Callable[[int], Any]:
        def call(index: int) -> Any:
            return directory.srp_verifier(identity(index)).addCallback(lambda pair: pair is not None)
        return call

    def ldap_directory(ttl: float) -> Any:
        directory = LdapDirectory(reactor, spec["ldap_uri"], SERVICE_DN, SERVICE_PASSWORD, ELEMENTS,
                                  allow_plaintext=True, cache_ttl=ttl, negative_cache_ttl=ttl,
                                  pool_max=spec["ldap_pool"])
        directory.start()
        return directory

    @defer.inlineCallbacks
    def main():
        common = {"users": users, "window": window, "server_pid": spec["radius_pid"]}
        client = RadiusClient(reactor, [server], timeout=1.0, retries=2,
                              max_in_flight=spec["radius_in_flight"])
        client.start()
        try:
            concurrency = spec["radius_concurrency"]
            results["radius_chap"] = yield drive(reactor, chap(client), concurrency=concurrency,
                                                 warmup=200, **common)
            off = RadiusAuthorizer(client, reactor, ttl=0, negative_ttl=0)
            results["radius_authorize_cache_off"] = yield drive(
                reactor, authorize(off), concurrency=concurrency, warmup=200, **common)
            on = RadiusAuthorizer(client, reactor, ttl=300, negative_ttl=30)
            results["radius_authorize_cache_on"] = yield drive(
                reactor, authorize(on), concurrency=concurrency, warmup=users, **common)
            results["radius_client_stats"] = dict(client.stats)
        finally:
            yield client.stop()
        concurrency = spec["ldap_concurrency"]
        common["server_pid"] = spec["slapd_pid"]
        for label, ttl, warm in (("cache_off", 0.0, 100), ("cache_on", 300.0, users)):
            directory = ldap_directory(ttl)
            try:
                results[f"ldap_srp_{label}"] = yield drive(
                    reactor, srp(directory), concurrency=concurrency, warmup=warm, **common)
                directory.forget()
                authorizer = LdapAuthorizer(directory, modes=("groups", "attribute"))
                results[f"ldap_authorize_{label}"] = yield drive(
                    reactor, authorize(authorizer), concurrency=concurrency, warmup=warm, **common)
            finally:
                directory.stop()

    def finish(outcome: Any) -> None:
        if isinstance(outcome, Exception) or hasattr(outcome, "getTraceback"):
            sys.stderr.write(outcome.getTraceback() if hasattr(outcome, "getTraceback") else str(outcome))
            results["error"] = str(getattr(outcome, "value", outcome))
        print(json.dumps(results), flush=True)
        reactor.stop()

    reactor.callWhenRunning(lambda: main().addBoth(finish))
    reactor.run()
    return 0 if "error" not in results else 1


def set_nodelay(transport: Any) -> bool:
    """TCP_NODELAY on the TCP transport under ``transport`` (through TLS wrappers)."""
    for _ in range(4):
        if transport is None:
            return False
        if hasattr(transport, "setTcpNoDelay"):
            transport.setTcpNoDelay(True)
            return True
        transport = getattr(transport, "transport", None)
    return False


def patch_nodelay() -> None:
    """Benchmark-only experiment (``nodelay`` variants): every registrar
    channel gets TCP_NODELAY, which rserpool does not set."""
    from rserpool.service.channel import Channel

    original = Channel.connectionMade

    def connection_made(self: Any) -> None:
        set_nodelay(self.transport)
        original(self)

    Channel.connectionMade = connection_made  # type: ignore[method-assign]


def count_ldap_requests() -> list[int]:
    """Count the requests LdapDirectory hands to its thread pool (a cell)."""
    from rserpool.backends.ldap import LdapDirectory

    cell = [0]
    original = LdapDirectory._submit

    def submit(self: Any, *args: Any) -> Any:
        cell[0] += 1
        return original(self, *args)

    LdapDirectory._submit = submit  # type: ignore[method-assign]
    return cell


def serve_registrar(ini: str, stats_path: str, nodelay: bool = False) -> int:
    """Child: the registrar as ``twistd rserpool-registrar`` builds it, plus a
    5 ms ticker; SIGUSR1 starts a window, SIGUSR2 appends its figures
    (reactor lag, backend requests) to ``stats_path`` as a JSON line."""
    from twisted.internet import reactor, task
    from twisted.logger import (
        FilteringLogObserver, LogLevel, LogLevelFilterPredicate, globalLogBeginner, textFileLogObserver,
    )

    from rserpool.config import load_config
    from rserpool.tap import build_registrar

    observer = FilteringLogObserver(textFileLogObserver(sys.stderr),
                                    [LogLevelFilterPredicate(defaultLogLevel=LogLevel.error)])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    if nodelay:
        patch_nodelay()
    ldap_requests = count_ldap_requests()
    service = build_registrar(load_config(ini), reactor)
    period = 0.005
    gaps: list[float] = []
    busy: list[float] = []
    last = [time.perf_counter(), time.thread_time()]

    def tick() -> None:
        # lag: how late this tick is; busy: CPU of the reactor thread since
        # the last tick (long only if the reactor itself ran that long, not
        # when other processes or threads held the core or the GIL)
        now, cpu = time.perf_counter(), time.thread_time()
        gaps.append(now - last[0] - period)
        busy.append(cpu - last[1])
        last[0], last[1] = now, cpu

    def backend_requests() -> int | None:
        stats = getattr(service.authorizer, "stats", None)
        if isinstance(stats, dict):
            return stats.get("requests")
        return ldap_requests[0] if "ldap" in type(service.authorizer).__module__ else None

    window: dict[str, Any] = {}
    collections: list[tuple[int, float]] = []  # (generation, seconds) of each GC run
    gc_began = [0.0]

    def gc_callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_began[0] = time.perf_counter()
        else:
            collections.append((info["generation"], time.perf_counter() - gc_began[0]))

    gc.callbacks.append(gc_callback)

    def begin(*_: Any) -> None:
        gaps.clear()
        busy.clear()
        collections.clear()
        window.update(requests=backend_requests(), wall=time.perf_counter())

    def end(*_: Any) -> None:
        out: dict[str, Any] = {"lag_ms": [round(max(0.0, gap) * 1e3, 4) for gap in gaps],
                               "busy_ms": [round(value * 1e3, 4) for value in busy],
                               "gc_ms": [(gen, round(seconds * 1e3, 3)) for gen, seconds in collections]}
        requests = backend_requests()
        if requests is not None and window.get("requests") is not None:
            wall = time.perf_counter() - window["wall"]
            out["backend_requests"] = requests - window["requests"]
            out["backend_requests_per_s"] = round(out["backend_requests"] / wall, 1)
        with open(stats_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(out) + "\n")

    signal.signal(signal.SIGUSR1, begin)
    signal.signal(signal.SIGUSR2, end)

    def ready(_: Any) -> None:
        last[0], last[1] = time.perf_counter(), time.thread_time()
        task.LoopingCall(tick).start(period, now=False)
        print(f"READY {service.listening_addresses[0].port}", flush=True)

    reactor.callWhenRunning(lambda: service.startService().addCallback(ready))
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0


# -- children: the PU and the registration load ----------------------------------------------


class _Commands:
    """Lines from stdin (the orchestrator) to ``handle(line)``."""

    def __init__(self, handle: Callable[[str], None]) -> None:
        from twisted.internet import stdio
        from twisted.protocols.basic import LineReceiver

        class Lines(LineReceiver):
            delimiter = b"\n"

            def lineReceived(self, line: bytes) -> None:  # noqa: N802 (Twisted)
                handle(line.decode().strip())

            def connectionLost(self, reason: Any = None) -> None:  # noqa: N802 (Twisted)
                handle("quit")

        self.stdio = stdio.StandardIO(Lines())


def serve_pu(spec_path: str) -> int:
    """Child: one PU connection; ``measure S`` -> lock-step resolutions of the
    bench pool for S seconds, one JSON line of latencies."""
    from twisted.internet import defer, reactor

    from rserpool.security import tls
    from rserpool.wire import AsapHandleResolution, AsapHandleResolutionResponse
    from tests.asaphelpers import connect_raw

    spec = json.loads(Path(spec_path).read_text())
    client: list[Any] = []

    @defer.inlineCallbacks
    def measure(seconds: float):
        latencies: list[float] = []
        errors = 0
        end = time.perf_counter() + seconds
        request = AsapHandleResolution(BENCH_POOL)
        while time.perf_counter() < end:
            began = time.perf_counter()
            answer = yield client[0].request(request)
            latencies.append(time.perf_counter() - began)
            if type(answer) is not AsapHandleResolutionResponse or not answer.pool_elements:
                errors += 1
        out = {"errors": errors, "seconds": seconds,
               "ms": [round(value * 1e3, 4) for value in latencies]}
        print(json.dumps(out), flush=True)

    def command(line: str) -> None:
        word, _, rest = line.partition(" ")
        if word == "measure":
            measure(float(rest))
        elif word == "quit" and reactor.running:
            reactor.stop()

    @defer.inlineCallbacks
    def start():
        creator = tls.client_options("localhost", [spec["ca"]])
        client.append((yield connect_raw(reactor, spec["port"], creator)))
        set_nodelay(client[0].channel.transport)  # the tool's own Nagle delays are not the registrar's
        _Commands(command)
        print("READY", flush=True)

    reactor.callWhenRunning(start)
    reactor.run()
    return 0


def serve_load(spec_path: str) -> int:
    """Child: K PE connections (one client certificate each) register P PEs in
    the bench pool, print READY; ``go`` starts register + deregister cycles,
    each in a fresh pool handle (a new authorization decision each);
    ``mark`` prints the counts so far; ``stop`` ends the cycles."""
    from twisted.internet import defer, reactor

    from rserpool.security import tls
    from rserpool.wire import AsapDeregistration, AsapDeregistrationResponse, AsapRegistration, \
        AsapRegistrationResponse, LeastUsedPolicy
    from tests.asaphelpers import connect_raw, make_pe

    spec = json.loads(Path(spec_path).read_text())
    clients: list[Any] = []
    counts = {"operations": 0, "refused": 0}
    running = [False]

    def ok(answer: Any, kind: type) -> bool:
        return type(answer) is kind and not getattr(answer, "reject", False) and answer.error is None

    serials = [0] * len(spec["clients"])

    @defer.inlineCallbacks
    def cycles(number: int, client: Any):
        pe_id = 0x20000000 + number
        while running[0]:
            serials[number] += 1  # never the same pool twice: always a new decision
            handle = f"bench-load-{number}-{serials[number]}".encode()
            answer = yield client.request(AsapRegistration(handle, make_pe(pe_id, life=3600)))
            counts["operations"] += 1
            if not ok(answer, AsapRegistrationResponse):
                counts["refused"] += 1
                continue
            answer = yield client.request(AsapDeregistration(handle, pe_id))
            counts["operations"] += 1
            if not ok(answer, AsapDeregistrationResponse):
                counts["refused"] += 1

    active: set[int] = set()

    def loop(number: int, client: Any) -> None:
        active.add(number)
        d = cycles(number, client)
        d.addErrback(lambda failure: failure.printTraceback(file=sys.stderr))
        d.addBoth(lambda _: active.discard(number))

    def command(line: str) -> None:
        if line == "go":
            running[0] = True
            for number, client in enumerate(clients):
                if number not in active:
                    loop(number, client)
        elif line == "mark":
            print(json.dumps({**counts, "t": time.perf_counter()}), flush=True)
        elif line == "stop":
            running[0] = False
        elif line == "quit" and reactor.running:
            reactor.stop()

    @defer.inlineCallbacks
    def start():
        for number, (cert, key) in enumerate(spec["clients"]):
            creator = tls.client_options("localhost", [spec["ca"]], client_cert=(cert, key))
            clients.append((yield connect_raw(reactor, spec["port"], creator)))
            set_nodelay(clients[-1].channel.transport)
        refused = 0
        for number, client in enumerate(clients):
            for index in range(spec["pes_per_connection"]):
                pe = make_pe(0x10000000 + number * 1000 + index, life=3600,
                             policy=LeastUsedPolicy(number * 1000 + index))
                if not ok((yield client.request(AsapRegistration(BENCH_POOL, pe))),
                          AsapRegistrationResponse):
                    refused += 1
        _Commands(command)
        print(f"READY {refused}", flush=True)

    reactor.callWhenRunning(lambda: start().addErrback(lambda f: (f.printTraceback(), reactor.stop())))
    reactor.run()
    return 0
