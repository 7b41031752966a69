"""ENRP benchmark (issue 13 item 9): three registrars on this machine.

(a) **Registration ratio.** Registrar A (pinned to CPU 0, built as twistd
    builds it) takes lock-step re-registrations that all change something
    (the load alternates), from ``benchmarks/loadgen.c`` (pinned to CPU 1,
    50 TLS connections, one identity each, a pool of 1,000 PEs), so every
    accepted re-registration is an ENRP_HANDLE_UPDATE to each peer.  Run
    once with peers B and C (each applying A's updates) and once with A
    alone, alternately; ``enrp_registration_ratio`` is the accepted rate
    with peers over the rate without.
(b) **Visibility latency.** During A's measured window with peers, a probe
    registers a new PE at A (pool ``visibility``), and from A's
    REGISTRATION_RESPONSE resolves that pool at B back to back until B
    returns the PE; then deregisters it.  ``enrp_visibility_p50_ms`` and
    ``enrp_visibility_p99_ms``.
(c) **Join.** A registrar whose handlespace holds 100,000 PEs (its own,
    registered in-process: the time that takes is the handlespace's own
    registration rate, measured in the same run) is the mentor of a new
    registrar.  From the new registrar's channel to the mentor coming up to
    its initialization (the LIST exchange and the paged W=0 download) its
    checksums come to agree (checked); ``enrp_join_pes_per_s`` is the PEs
    over that time, ``enrp_join_ratio`` that rate over the in-process one.

    .venv/bin/python benchmarks/bench_enrp.py [--quick] [--json]

``--quick`` takes well under a minute (20,000 PEs for the join); ``--json``
prints one JSON object on the last line.  Needs ``gcc``, OpenSSL headers and
``taskset``.  Run it on a quiet machine for figures that mean something.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_registrar as br  # noqa: E402  (the load generator and its script format)

from rserpool.security import pki  # noqa: E402
from rserpool.wire import (  # noqa: E402
    AsapDeregistration, AsapHandleResolution, AsapRegistration, LeastUsedPolicy, PoolElement, TcpTransport,
    decode_message,
)
from rserpool.wire.tcpmap import MessageReceived, TcpMapConnection  # noqa: E402

PROBE_POOL = b"visibility"
TARGET_REGISTRATION_RATIO = 0.7
TARGET_JOIN_RATIO = 0.3
PEERS = ("registrar-b.bench", "registrar-c.bench")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- PKI and configuration -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClusterPKI:
    bench: br.BenchPKI  # CA, A's certificate (localhost), the load generator's identities
    peers: dict[str, tuple[Path, Path]]  # B, C and the joiner
    probe: tuple[Path, Path]


def make_pki(directory: Path, identities: int) -> ClusterPKI:
    now = dt.datetime.now(dt.timezone.utc)
    ca = pki.create_ca("rserpool ENRP benchmark CA", now, days=2)
    ca_path = pki.write_certificate(directory / "ca.pem", ca.certificate)
    server = pki.create_server_certificate(ca, [br.SERVER_NAME, "127.0.0.1"], now, days=2)
    server_cert = pki.write_certificate(directory / "server.pem", server.certificate)
    server_key = pki.write_private_key(directory / "server.key", server.private_key)
    clients = []
    for index in range(identities):
        name = f"bench-pe{index}"
        issued = pki.create_client_certificate(ca, name, now, days=2)
        clients.append((name, pki.write_certificate(directory / f"{name}.pem", issued.certificate),
                        pki.write_private_key(directory / f"{name}.key", issued.private_key)))
    peers = {}
    for name in PEERS + ("registrar-join.bench",):
        issued = pki.create_server_certificate(ca, [name, "127.0.0.1"], now, days=2)
        peers[name] = (pki.write_certificate(directory / f"{name}.pem", issued.certificate),
                       pki.write_private_key(directory / f"{name}.key", issued.private_key))
    probe = pki.create_client_certificate(ca, "bench-probe", now, days=2)
    probe_files = (pki.write_certificate(directory / "probe.pem", probe.certificate),
                   pki.write_private_key(directory / "probe.key", probe.private_key))
    return ClusterPKI(br.BenchPKI(ca_path, server_cert, server_key, tuple(clients)), peers, probe_files)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_ini(directory: Path, name: str, cluster: ClusterPKI, cert: tuple[Path, Path], enrp_port: int | None,
              peers: list[tuple[int, str]]) -> Path:
    rules = directory / "bench-enrp.rules"
    if not rules.exists():
        rules.write_text("".join(f"{n} register,deregister {br.POOL_HANDLE.decode()}\n"
                                 for n, _, _ in cluster.bench.clients)
                         + f"bench-probe register,deregister {PROBE_POOL.decode()}\n* resolve *\n"
                         + "".join(f"{n} peer *\n" for n in (br.SERVER_NAME, *cluster.peers)))
    enrp = "enabled = no\n"
    if enrp_port is not None:
        enrp = (f"enabled = yes\nlisten = tcp:port={enrp_port}:interface=127.0.0.1\n"
                f"peers = {', '.join(f'127.0.0.1:{port} {tls_name}' for port, tls_name in peers)}\n"
                "mentor_discovery_timeout = 2\nupdate_rate = 1000000\nmax_pes_per_peer = 1000000\n")
    ini = directory / f"{name}.ini"
    ini.write_text(f"""\
[registrar]
server_id = auto
asap_listen = tcp:port=0:interface=127.0.0.1
state_dir = {directory / ('var-' + name)}

[tls]
enabled = yes
certificate = {cert[0]}
private_key = {cert[1]}
ca_certificates = {cluster.bench.ca}
require_client_certificate = no
server_name = {br.SERVER_NAME}

[asap]
keepalive_interval = 100000
keepalive_timeout = 100000
max_resolution_items = {br.RESOLUTION_ITEMS}
max_registration_life = 3600

[limits]
max_pes_per_pool = 1000000
max_pes_per_identity = 1000000

[security]
rules = {rules}
registration_rate = 1e9
registration_rate_per_address = 1e9
resolution_rate = 1e9

[admin]
listen =

[enrp]
{enrp}""")
    return ini


# -- the registrar children ---------------------------------------------------------------------


def serve(ini: str, populate: int) -> int:
    """Child: a registrar built as twistd builds it; prints ``READY asap enrp``,
    ``POPULATED n seconds checksum``, ``UP t`` and ``JOINED t pes checksums``."""
    from twisted.internet import reactor
    from twisted.logger import (
        FilteringLogObserver, LogLevel, LogLevelFilterPredicate, globalLogBeginner, textFileLogObserver,
    )

    from rserpool.asap.registrar import policy_settings
    from rserpool.config import load_config
    from rserpool.service.enrp import EnrpService
    from rserpool.tap import build_registrar

    observer = FilteringLogObserver(textFileLogObserver(sys.stderr),
                                    [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    service = build_registrar(load_config(ini), reactor)
    enrp = next((child for child in service if isinstance(child, EnrpService)), None)
    if populate:
        hs, own = service.handlespace, service.server_id
        pes = [PoolElement(0x20000000 + i, own, 3600, TcpTransport(10000 + i % 50000, IPv4Address("127.0.0.1")),
                           LeastUsedPolicy(i)) for i in range(populate)]
        settings = [policy_settings(pe.policy) for pe in pes]
        started = time.perf_counter()
        for pe, policy in zip(pes, settings):
            hs.register(reactor.seconds(), pool_handle=b"big-pool", pe_id=pe.pe_id, settings=policy, transport_type=5,
                        transport_use=0, registration_life=3600, home_server_id=own, identity="bench-pe0",
                        payload=pe)
        elapsed = time.perf_counter() - started
        print(f"POPULATED {populate} {elapsed:.6f} {hs.checksum(own)} {own}", flush=True)
    if enrp is not None:
        core = enrp.core
        initialize = core._initialize
        seen = {"up": False}

        def initialized(mentor: Any, now: float, out: list) -> None:
            initialize(mentor, now, out)
            if mentor is not None:
                print(f"JOINED {time.monotonic():.6f} {len(core.handlespace)} {mentor} "
                      f"{core.handlespace.checksum(mentor)}", flush=True)

        core._initialize = initialized

        def watch() -> None:
            if not seen["up"] and any(True for _ in core.peers.active()):
                seen["up"] = True
                print(f"UP {time.monotonic():.6f}", flush=True)

        enrp.watchers.append(watch)

    def ready(_: Any) -> None:
        enrp_port = enrp.listening_addresses[0].port if enrp is not None else 0
        print(f"READY {service.listening_addresses[0].port} {enrp_port}", flush=True)

    reactor.callWhenRunning(lambda: service.startService().addCallback(ready))
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0


class Child:
    """A ``--serve`` child; ``pin``: the CPU it runs on (None: any)."""

    def __init__(self, ini: Path, log: Path, pin: str | None = None, populate: int = 0) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve", str(ini), "--populate", str(populate)]
        if pin is not None:
            argv = ["taskset", "-c", pin, *argv]
        self._log = open(log, "w")
        self.log = log
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log, text=True)
        self.lines: list[str] = []

    def wait_for(self, word: str, timeout: float = 120.0) -> list[str]:
        deadline = time.monotonic() + timeout
        for line in self.lines:
            if line.split()[0] == word:
                return line.split()
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"child ended before {word}: {self.log.read_text()[-3000:]}")
            self.lines.append(line)
            if line.split()[0] == word:
                return line.split()
        raise RuntimeError(f"no {word} within {timeout} s")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# -- the visibility probe -----------------------------------------------------------------------------


class BlockingClient:
    """A lock-step ASAP client over TLS and the TCP mapping (for the probe)."""

    def __init__(self, port: int, ca: Path, cert: tuple[Path, Path] | None = None,
                 server_name: str = br.SERVER_NAME) -> None:
        context = ssl.create_default_context(cafile=str(ca))
        if cert is not None:
            context.load_cert_chain(str(cert[0]), str(cert[1]))
        raw = socket.create_connection(("127.0.0.1", port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = context.wrap_socket(raw, server_hostname=server_name)
        self.mapping = TcpMapConnection()
        self.sock.sendall(self.mapping.initiate())

    def request(self, message: Any) -> Any:
        self.sock.sendall(self.mapping.data_to_send() + self.mapping.send_message(message.PPID, message.encode()))
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError("connection closed")
            for event in self.mapping.receive_data(data):
                if type(event) is MessageReceived:
                    return decode_message(event.payload, event.ppid)

    def close(self) -> None:
        self.sock.close()


class Probe(threading.Thread):
    def __init__(self, a_port: int, b_port: int, cluster: ClusterPKI) -> None:
        super().__init__(daemon=True)
        self.a = BlockingClient(a_port, cluster.bench.ca, cluster.probe)
        self.b = BlockingClient(b_port, cluster.bench.ca, server_name=PEERS[0])
        self.stop_event = threading.Event()
        self.samples: list[tuple[float, float]] = []  # (registration answered at, latency s)
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            pe_id = 0x30000000
            while not self.stop_event.is_set():
                pe_id += 1
                pe = PoolElement(pe_id, 0, 600, TcpTransport(7, IPv4Address("127.0.0.1")), LeastUsedPolicy(0))
                reply = self.a.request(AsapRegistration(PROBE_POOL, pe))
                answered = time.monotonic()
                if reply.reject:
                    raise RuntimeError(f"probe registration refused: {reply}")
                while True:
                    answer = self.b.request(AsapHandleResolution(PROBE_POOL))
                    if any(p.pe_id == pe_id for p in getattr(answer, "pool_elements", ())):
                        self.samples.append((answered, time.monotonic() - answered))
                        break
                    if time.monotonic() - answered > 10:
                        raise RuntimeError("a PE registered at A never became visible at B")
                self.a.request(AsapDeregistration(PROBE_POOL, pe_id))
        except Exception as exc:  # reported by the main thread
            self.error = exc
        finally:
            self.a.close()
            self.b.close()


def run_load(loadgen: Path, script: Path, server: Child, port: int, ca: Path) -> tuple[list[dict], dict]:
    """The generator against A; per-phase results, and the monotonic times of
    the measured window's START and END lines."""
    argv = ["taskset", "-c", br.GENERATOR_CPU, str(loadgen), "-H", "127.0.0.1", "-p", str(port),
            "-s", str(script), "-A", str(ca), "-n", br.SERVER_NAME, "-P", str(server.pid)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    results, window = [], {}
    assert proc.stdout is not None
    for line in proc.stdout:
        word, _, rest = line.strip().partition(" ")
        if word in ("START", "END"):
            window[word] = time.monotonic()
            fields = rest.split()
            if len(fields) >= 2 and int(fields[1]) >= 0:
                window[word + "_server_ns"] = int(fields[1])  # A's CPU time then (benchgen.h)
        elif word == "RESULT":
            results.append(json.loads(rest))
    if proc.wait(timeout=120) != 0:
        raise RuntimeError(f"load generator failed with exit code {proc.returncode}")
    return results, window


# -- the three measurements ------------------------------------------------------------------------


def registration_run(directory: Path, cluster: ClusterPKI, loadgen: Path, with_peers: bool, rep: int,
                     conns: int, per_conn: int, warmup: float, measure: float,
                     peers_cpu: str | None = None) -> dict[str, Any]:
    tag = f"{'peers' if with_peers else 'alone'}{rep}"
    children: list[Child] = []
    try:
        ports = {name: free_port() for name in ("a", "b", "c")}
        a_peers = [(ports["b"], PEERS[0]), (ports["c"], PEERS[1])] if with_peers else []
        ini_a = write_ini(directory, f"a-{tag}", cluster, (cluster.bench.server_cert, cluster.bench.server_key),
                          ports["a"] if with_peers else None, a_peers)
        a = Child(ini_a, directory / f"a-{tag}.log", pin=br.SERVER_CPU)
        children.append(a)
        a_port = int(a.wait_for("READY")[1])
        b_port = None
        if with_peers:
            for letter, name in (("b", PEERS[0]), ("c", PEERS[1])):
                others = [(ports["a"], br.SERVER_NAME)] + [(ports[x], n) for x, n in (("b", PEERS[0]), ("c", PEERS[1]))
                                                           if x != letter]
                ini = write_ini(directory, f"{letter}-{tag}", cluster, cluster.peers[name], ports[letter], others)
                child = Child(ini, directory / f"{letter}-{tag}.log", pin=peers_cpu)
                children.append(child)
                port = int(child.wait_for("READY")[1])
                b_port = b_port or port
            a.wait_for("UP", timeout=30)
            time.sleep(3.0)  # let the three join each other before the load starts
        script = directory / f"load-{tag}.lg"
        br.write_script(script, cluster.bench, [
            br.registration_phase(conns, per_conn),
            br.reregistration_phase(conns, per_conn, warmup, measure, tag),
        ])
        probe = Probe(a_port, b_port, cluster) if with_peers else None
        if probe is not None:
            probe.start()
        results, window = run_load(loadgen, script, a, a_port, cluster.bench.ca)
        if probe is not None:
            probe.stop_event.set()
            probe.join(timeout=30)
            if probe.error is not None:
                raise probe.error
        setup, rereg = results
        if setup["completed"] != conns * per_conn or setup["rejected"] or setup["unexpected"]:
            raise RuntimeError(f"registration of the pool failed: {setup}")
        latencies = []
        if probe is not None and window:
            latencies = [lat for at, lat in probe.samples if window["START"] <= at <= window["END"]]
        # A's CPU over the measured window (the generator reads A's schedstat at its edges)
        a_cpu_s = (window["END_server_ns"] - window["START_server_ns"]) / 1e9 \
            if "END_server_ns" in window and "START_server_ns" in window else None
        return {"rate_per_s": rereg["completed"] / rereg["window_s"] if rereg["window_s"] else 0.0,
                "a_us_per_reregistration": a_cpu_s / rereg["completed"] * 1e6 if a_cpu_s and rereg["completed"] else None,
                "a_cpu_share": a_cpu_s / (window["END"] - window["START"]) if a_cpu_s else None,
                "errors": rereg["unexpected"] + rereg["rejected"], "latencies": latencies}
    finally:
        for child in reversed(children):
            child.stop()


def join_run(directory: Path, cluster: ClusterPKI, pes: int) -> dict[str, Any]:
    mentor_port, joiner_port = free_port(), free_port()
    children: list[Child] = []
    try:
        ini_m = write_ini(directory, "mentor", cluster, cluster.peers[PEERS[0]], mentor_port, [])
        mentor = Child(ini_m, directory / "mentor.log", pin=br.SERVER_CPU, populate=pes)
        children.append(mentor)
        _, count, seconds, checksum, mentor_id = mentor.wait_for("POPULATED", timeout=600)
        mentor.wait_for("READY")
        ini_j = write_ini(directory, "joiner", cluster, cluster.peers["registrar-join.bench"], joiner_port,
                          [(mentor_port, PEERS[0])])
        joiner = Child(ini_j, directory / "joiner.log", pin=br.GENERATOR_CPU)
        children.append(joiner)
        up = float(joiner.wait_for("UP", timeout=60)[1])
        _, joined, held, mentor_seen, their_checksum = joiner.wait_for("JOINED", timeout=600)
        if int(held) != pes or int(mentor_seen) != int(mentor_id) or int(their_checksum) != int(checksum):
            raise RuntimeError(f"the joiner holds {held} PEs, checksum {their_checksum}; the mentor "
                               f"{pes}, checksum {checksum}")
        join_s = float(joined) - up
        in_process = int(count) / float(seconds)
        return {"join_s": join_s, "join_pes_per_s": pes / join_s, "in_process_pes_per_s": in_process}
    finally:
        for child in reversed(children):
            child.stop()


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (well under a minute)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    parser.add_argument("--repetitions", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--join-pes", type=int, default=None, help="default 100000 (20000 with --quick)")
    parser.add_argument("--peers-cpu", default=br.GENERATOR_CPU,
                        help="CPU of peers B and C (default: the generator's, so that A's core does only A's "
                             "work, as when the peers run on other machines; 'any': unpinned)")
    parser.add_argument("--serve", metavar="INI", help=argparse.SUPPRESS)
    parser.add_argument("--populate", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve, args.populate)

    reps = args.repetitions or (1 if args.quick else 3)
    peers_cpu = None if args.peers_cpu == "any" else args.peers_cpu
    join_pes = args.join_pes or (20_000 if args.quick else 100_000)
    conns, per_conn = 50, 20
    warmup, measure = (0.5, 2.0) if args.quick else (1.0, 4.0)
    started = time.monotonic()
    runs: dict[str, list[dict[str, Any]]] = {"peers": [], "alone": []}
    with tempfile.TemporaryDirectory(prefix="rserpool-bench-enrp-") as tmp:
        directory = Path(os.environ.get("RSERPOOL_BENCH_KEEP") or tmp)
        cluster = make_pki(directory, conns)
        loadgen = br.build_loadgen(directory)
        say(f"ENRP benchmark: A on CPU {br.SERVER_CPU}, load generator on CPU {br.GENERATOR_CPU} ({conns} TLS "
            f"connections, {conns * per_conn} PEs, re-registrations that all change the load), peers B and C "
            f"on CPU {args.peers_cpu}; {reps} repetition(s) of {warmup:.1f} s + {measure:.1f} s; join of {join_pes} PEs")
        for rep in range(reps):
            order = (True, False) if rep % 2 == 0 else (False, True)
            for with_peers in order:
                run = registration_run(directory, cluster, loadgen, with_peers, rep, conns, per_conn, warmup, measure,
                                       peers_cpu)
                key = "peers" if with_peers else "alone"
                runs[key].append(run)
                say(f"  A {key:5s} #{rep + 1}: {run['rate_per_s']:8.0f} re-registrations/s, "
                    f"A {run['a_us_per_reregistration'] or 0:.1f} us CPU each (CPU {100 * (run['a_cpu_share'] or 0):.0f}%), "
                    f"errors {run['errors']}"
                    + (f", {len(run['latencies'])} visibility samples" if with_peers else ""))
        join = join_run(directory, cluster, join_pes)
        say(f"  join: {join_pes} PEs in {join['join_s']:.2f} s ({join['join_pes_per_s']:.0f} PEs/s); in-process "
            f"registration {join['in_process_pes_per_s']:.0f} PEs/s")
    with_peers = statistics.median(r["rate_per_s"] for r in runs["peers"])
    alone = statistics.median(r["rate_per_s"] for r in runs["alone"])
    latencies = [lat * 1000 for r in runs["peers"] for lat in r["latencies"]]
    cpu = {key: statistics.median(r["a_us_per_reregistration"] for r in runs[key]
                                  if r["a_us_per_reregistration"] is not None) for key in runs}
    share = {key: statistics.median(r["a_cpu_share"] for r in runs[key] if r["a_cpu_share"] is not None)
             for key in runs}
    summary = {
        "enrp_registration_ratio": round(with_peers / alone, 3) if alone else None,
        "enrp_registrations_per_s_with_peers": round(with_peers),
        "enrp_registrations_per_s_alone": round(alone),
        # A's CPU per accepted re-registration: with its peers' updates, and alone;
        # their ratio is what the updates cost A, whatever the machine's other load.
        "a_us_per_reregistration_with_peers": round(cpu["peers"], 1),
        "a_us_per_reregistration_alone": round(cpu["alone"], 1),
        "enrp_registration_cpu_ratio": round(cpu["alone"] / cpu["peers"], 3),
        "a_cpu_share_with_peers": round(share["peers"], 3),
        "a_cpu_share_alone": round(share["alone"], 3),
        "enrp_visibility_p50_ms": None if not latencies else round(statistics.median(latencies), 2),
        "enrp_visibility_p99_ms": None if not latencies else round(percentile(latencies, 0.99), 2),
        "enrp_visibility_samples": len(latencies),
        "enrp_join_pes": join_pes,
        "enrp_join_s": round(join["join_s"], 3),
        "enrp_join_pes_per_s": round(join["join_pes_per_s"]),
        "enrp_join_in_process_pes_per_s": round(join["in_process_pes_per_s"]),
        "enrp_join_ratio": round(join["join_pes_per_s"] / join["in_process_pes_per_s"], 3),
        "targets": {"enrp_registration_ratio": TARGET_REGISTRATION_RATIO, "enrp_join_ratio": TARGET_JOIN_RATIO},
        "repetitions": reps,
        "peers_cpu": args.peers_cpu,
        "quick": args.quick,
        "duration_s": round(time.monotonic() - started, 1),
    }
    say(f"A's CPU per re-registration: {summary['a_us_per_reregistration_with_peers']} us with peers, "
        f"{summary['a_us_per_reregistration_alone']} us alone (CPU ratio {summary['enrp_registration_cpu_ratio']}; "
        f"A busy {100 * summary['a_cpu_share_with_peers']:.0f}% and {100 * summary['a_cpu_share_alone']:.0f}%)")
    say(f"registration ratio {summary['enrp_registration_ratio']} (target {TARGET_REGISTRATION_RATIO}); "
        f"visibility p50 {summary['enrp_visibility_p50_ms']} ms, p99 {summary['enrp_visibility_p99_ms']} ms "
        f"({len(latencies)} samples); join {summary['enrp_join_pes_per_s']} PEs/s, ratio "
        f"{summary['enrp_join_ratio']} (target {TARGET_JOIN_RATIO})")
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
