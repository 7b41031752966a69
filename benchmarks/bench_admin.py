"""The admin endpoint's cost (issue 15 item 8).

1. ``metrics_overhead_ratio``: the registrar benchmark's handle-resolution
   phase (``bench_registrar.py``: 50 TLS connections, a pool of 1,000 PEs,
   the C load generator on CPU 1, the registrar on CPU 0) run with the admin
   endpoint on and ``/metrics`` scraped over HTTPS every second, divided by
   the same run with the admin endpoint off.  Both alternate within one
   run, in both orders; the ratio of the medians is reported (target: at
   least 0.97).
2. ``scrape_100k_stall_ms``: a registrar holding 100,000 PEs (50 pools of
   1,000, and one pool of 50,000) in this process, with its admin endpoint
   on loopback; a 1 ms ``LoopingCall`` records the gaps between reactor
   iterations while ``/metrics`` is fetched (from a thread, over TLS); the
   longest gap during a scrape is the figure (target: at most 50 ms).  The
   status page, ``/api/v1/status`` and a 500-PE page of the JSON API are
   measured the same way and reported beside it.

    .venv/bin/python benchmarks/bench_admin.py [--quick] [--json]

``--quick`` runs one repetition of each with short windows (about 40 s).
Needs what ``bench_registrar.py`` needs (gcc, OpenSSL headers, taskset).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_registrar as br  # noqa: E402

TOKEN = "bench-admin-token-0123456789abcdef"
TARGET_OVERHEAD_RATIO = 0.97
TARGET_STALL_MS = 50.0


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- 1. throughput with and without the admin endpoint -----------------------------------------


def admin_ini(directory: Path, base: Path, token: Path) -> Path:
    ini = directory / "registrar-admin.ini"
    ini.write_text(base.read_text() + f"""
[admin]
listen = tcp:port=0:interface=127.0.0.1
token_file = {token}
""")
    return ini


def serve(ini: str) -> int:
    """Child: the registrar as twistd builds it; prints ``READY <asap port> <admin port or 0>``."""
    from twisted.internet import reactor
    from twisted.logger import FilteringLogObserver, LogLevel, LogLevelFilterPredicate, globalLogBeginner
    from twisted.logger import textFileLogObserver

    from rserpool.admin import AdminService
    from rserpool.config import load_config
    from rserpool.tap import build_registrar

    observer = FilteringLogObserver(textFileLogObserver(sys.stderr),
                                    [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    service = build_registrar(load_config(ini), reactor)
    admins = [child for child in service if isinstance(child, AdminService)]

    def ready(_: Any) -> None:
        admin_port = admins[0].addresses[0].port if admins else 0
        print(f"READY {service.listening_addresses[0].port} {admin_port}", flush=True)

    reactor.callWhenRunning(lambda: service.startService().addCallback(ready))
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0


class Child(br.Server):
    """``bench_registrar.Server`` that also reads the admin port."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self._log_handle = open(log, "w")
        self.proc = subprocess.Popen(["taskset", "-c", br.SERVER_CPU, *argv], stdout=subprocess.PIPE,
                                     stderr=self._log_handle, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"registrar did not start: {line!r}\n{log.read_text()[-3000:]}")
        _, port, admin = line.split()
        self.port, self.admin_port = int(port), int(admin)


class Scraper(threading.Thread):
    """GET /metrics with the bearer token every ``interval`` seconds until stopped."""

    def __init__(self, port: int, ca: Path, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.url = f"https://localhost:{port}/metrics"
        self.context = ssl.create_default_context(cafile=str(ca))
        self.interval = interval
        self.stopping = threading.Event()
        self.scrapes = 0
        self.errors: list[str] = []
        self.last = b""

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            request = urllib.request.Request(self.url, headers={"Authorization": f"Bearer {TOKEN}"})
            try:
                with urllib.request.urlopen(request, context=self.context, timeout=5) as answer:
                    self.last = answer.read()
                self.scrapes += 1
            except OSError as exc:
                self.errors.append(str(exc))
            self.stopping.wait(max(0.0, self.interval - (time.monotonic() - started)))


def overhead(directory: Path, reps: int, warmup: float, measure: float, conns: int, per_conn: int) -> dict:
    bench_pki = br.make_pki(directory, conns)
    loadgen = br.build_loadgen(directory)
    base = br.registrar_ini(directory, bench_pki)
    token = directory / "admin.token"
    token.write_text(TOKEN + "\n")
    os.chmod(token, 0o600)
    with_admin = admin_ini(directory, base, token)
    rates: dict[str, list[float]] = {"off": [], "on": []}
    scrapes = []
    for rep in range(reps):
        order = ("off", "on") if rep % 2 == 0 else ("on", "off")
        for mode in order:
            script = directory / f"{mode}{rep}.lg"
            br.write_script(script, bench_pki, [br.registration_phase(conns, per_conn),
                                                br.resolution_phase(conns, warmup, measure, f"#{rep + 1}")])
            ini = with_admin if mode == "on" else base
            child = Child([sys.executable, str(Path(__file__).resolve()), "--serve", str(ini)],
                          directory / f"{mode}{rep}.log")
            scraper = None
            try:
                if mode == "on":
                    scraper = Scraper(child.admin_port, bench_pki.ca)
                    scraper.start()
                _, results = br.run_generator(loadgen, script, child, bench_pki.ca)
            finally:
                if scraper is not None:
                    scraper.stopping.set()
                    scraper.join(10)
                child.stop()
            setup, resolve = results
            if setup["completed"] != conns * per_conn or setup["rejected"] or setup["unexpected"]:
                raise RuntimeError(f"registration of the pool failed: {setup}")
            rate = br.figures(resolve)["rate_per_s"]
            rates[mode].append(rate)
            line = f"  admin {mode:3s} #{rep + 1}: {rate:9.0f} resolutions/s"
            if scraper is not None:
                if scraper.errors or not scraper.scrapes:
                    raise RuntimeError(f"scrapes failed: {scraper.errors[:3]}")
                if f"rserpool_handlespace_pool_elements {float(conns * per_conn)}".encode() not in scraper.last:
                    raise RuntimeError("the scrape did not show the pool")
                scrapes.append(scraper.scrapes)
                line += f" ({scraper.scrapes} scrapes)"
            say(line)
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    return {"metrics_overhead_ratio": round(on / off, 4), "resolution_rate_admin_off": round(off),
            "resolution_rate_admin_on": round(on), "rates_off": [round(r) for r in rates["off"]],
            "rates_on": [round(r) for r in rates["on"]], "scrapes_per_run": scrapes,
            "metrics_overhead_target": TARGET_OVERHEAD_RATIO}


# -- 2. the reactor while a big registrar is scraped ---------------------------------------------


def fill(registrar: Any, pools: dict[bytes, int]) -> int:
    """Registers PEs straight into the handlespace (as the core stores them)."""
    from rserpool.asap.registrar import policy_settings
    from rserpool.wire import LeastUsedPolicy, PoolElement, TcpTransport

    handlespace = registrar.handlespace
    server_id = registrar.server_id
    rng = random.Random(7)
    count = 0
    for handle, size in pools.items():
        for index in range(size):
            pe = PoolElement(0x1000 + index, server_id, 3600, TcpTransport(1024 + index % 60000,
                                                                        IPv4Address("127.0.0.1")),
                             LeastUsedPolicy(rng.randrange(2**32)))
            handlespace.register(0.0, pool_handle=handle, pe_id=pe.pe_id, settings=policy_settings(pe.policy),
                                 transport_type=pe.user_transport.PARAM_TYPE, transport_use=0,
                                 registration_life=3600, home_server_id=server_id,
                                 identity=f"pe{index % 1000}", payload=pe)
            count += 1
    return count


def stalls(directory: Path, scrapes: int) -> dict:
    from twisted.internet import defer, reactor, task, threads

    from rserpool.admin import AdminAccess, AdminService, AdminSettings
    from rserpool.asap.registrar import RegistrarSettings
    from rserpool.handlespace import HandlespaceLimits
    from rserpool.security import pki as pkimod
    from rserpool.security import tls
    from rserpool.service.registrar import RegistrarService
    from rserpool.testing import AllowAll  # nothing registers over ASAP here: fill() writes the handlespace

    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    ca = pkimod.create_ca("bench admin CA", now, days=2)
    server = pkimod.create_server_certificate(ca, ["localhost", "127.0.0.1"], now, days=2)
    ca_path = pkimod.write_certificate(directory / "stall-ca.pem", ca.certificate)
    cert = pkimod.write_certificate(directory / "stall-server.pem", server.certificate, *server.chain)
    key = pkimod.write_private_key(directory / "stall-server.key", server.private_key)
    registrar = RegistrarService(RegistrarSettings(server_id=0x5ca1e), reactor=reactor, listen=[],
                                 tls_options=tls.server_options(cert, key, [ca_path], require_client_cert=False),
                                 authorizer=AllowAll(), limits=HandlespaceLimits(max_pes_per_identity=1_000_000))
    pools = {b"pool-%03d" % n: 1000 for n in range(50)}
    pools[b"big"] = 50_000
    started = time.monotonic()
    total = fill(registrar, pools)
    say(f"  filled {total} PEs in {len(pools)} pools in {time.monotonic() - started:.1f} s")
    from rserpool.gate import Gate

    access = AdminAccess(authorizer=None, identity_of=lambda cert, transport: None, gate=Gate(), clock=reactor,
                         token=TOKEN.encode(), token_scope="all")
    admin = AdminService(registrar, reactor=reactor, listen=["tcp:0:interface=127.0.0.1"],
                         tls_options=tls.server_options(cert, key, [ca_path], require_client_cert=False),
                         access=access, settings=AdminSettings(page_size=500))
    context = ssl.create_default_context(cafile=str(ca_path))
    result: dict[str, Any] = {"pes": total, "pools": len(pools)}
    gaps: list[float] = []
    last = [time.perf_counter()]

    def tick() -> None:
        moment = time.perf_counter()
        gaps.append(moment - last[0])
        last[0] = moment

    def fetch(path: str) -> tuple[int, float]:
        request = urllib.request.Request(f"https://localhost:{port[0]}{path}",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        begun = time.perf_counter()
        with urllib.request.urlopen(request, context=context, timeout=30) as answer:
            size = len(answer.read())
        return size, time.perf_counter() - begun

    port = [0]

    @defer.inlineCallbacks
    def run():
        yield admin.startService()
        port[0] = admin.addresses[0].port
        ticker = task.LoopingCall(tick)
        ticker.start(0.001)
        try:
            for label, path in (("metrics", "/metrics"), ("status_json", "/api/v1/status"),
                                ("status_page", "/"), ("pool_page_json", "/api/v1/pools/"
                                                       + b"big".hex() + "?offset=25000&limit=500"),
                                ("pool_page_html", "/pool/" + b"big".hex() + "?offset=49000")):
                worst, sizes, seconds = [], [], []
                for _ in range(scrapes):
                    yield task.deferLater(reactor, 0.05, lambda: None)  # settle
                    del gaps[:]
                    last[0] = time.perf_counter()
                    size, took = yield threads.deferToThread(fetch, path)
                    worst.append(max(gaps) * 1000 if gaps else 0.0)
                    sizes.append(size)
                    seconds.append(took)
                result[f"{label}_stall_ms"] = round(max(worst), 2)
                result[f"{label}_bytes"] = sizes[-1]
                result[f"{label}_request_ms"] = round(statistics.median(seconds) * 1000, 2)
                say(f"  {label:15s} longest reactor gap {max(worst):6.2f} ms (median {statistics.median(worst):.2f}),"
                    f" {sizes[-1]} bytes, {statistics.median(seconds) * 1000:.1f} ms per request")
            del gaps[:]
            last[0] = time.perf_counter()
            yield task.deferLater(reactor, 0.5, lambda: None)
            result["idle_stall_ms"] = round(max(gaps) * 1000, 2)
        finally:
            ticker.stop()
            yield admin.stopService()
            reactor.stop()

    reactor.callWhenRunning(run)
    reactor.run()
    result["scrape_100k_stall_ms"] = result["metrics_stall_ms"]
    result["scrape_100k_target_ms"] = TARGET_STALL_MS
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short repetition of each part")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    parser.add_argument("--repetitions", type=int, default=None, help="throughput runs per mode (default 6, 1 quick)")
    parser.add_argument("--serve", metavar="INI", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve)
    reps = args.repetitions or (1 if args.quick else 6)
    warmup, measure = (0.5, 2.0) if args.quick else (0.5, 3.0)
    summary: dict[str, Any] = {"quick": args.quick}
    with tempfile.TemporaryDirectory(prefix="rserpool-bench-admin-") as tmp:
        directory = Path(tmp)
        say(f"admin endpoint overhead: registrar resolutions with the admin endpoint off and on "
            f"(/metrics scraped every 1 s), {reps} repetition(s) each, alternating")
        summary.update(overhead(directory, reps, warmup, measure, conns=50, per_conn=20))
        say(f"  metrics_overhead_ratio {summary['metrics_overhead_ratio']:.3f} (target >= {TARGET_OVERHEAD_RATIO})")
        say("reactor stalls while a registrar with 100,000 PEs is scraped")
        summary.update(stalls(directory, 1 if args.quick else 5))
        say(f"  scrape_100k_stall_ms {summary['scrape_100k_stall_ms']:.2f} (target <= {TARGET_STALL_MS})")
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
