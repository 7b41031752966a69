"""Registrar throughput benchmark (issue 4 item 7).

A registrar process (``rserpool.tap.build_registrar`` from an ini file, TLS
with required client certificates, rules authorizer) is pinned to CPU 0; a
C load generator (``benchmarks/loadgen.c``, OpenSSL, epoll) pinned to CPU 1
opens 50 established TLS connections, each with its own client certificate
(50 identities the rules allow), and

1. registers 20 PEs per connection (a pool of 1,000 Least-Used PEs);
2. does lock-step handle resolutions of the pool (3 PEs per answer) for a
   warm-up and a measured window;
3. does lock-step re-registrations of each connection's own PEs, the load
   value alternating so that the pool's Least-Used order changes.

Then, with the same generator, connections, certificates and request and
response sizes, a minimal Twisted TLS server (``_echo_server.py``) that
answers with precomputed bytes gives the baseline.  Registrar and baseline
runs alternate per repetition.  At the boundaries of each measured window
the generator reads the server's CPU time (``/proc/PID/task/*/schedstat``)
and CPU 0/1 busy time (``/proc/stat``), and its own CPU (``getrusage``), so
registrar CPU microseconds per request (robust to other load on the
machine) come next to the rates.

    .venv/bin/python benchmarks/bench_registrar.py [--quick] [--json] [--profile DIR]

``--quick`` finishes in under 30 s; ``--json`` prints one JSON object on
the last line.  The registrar always times its own work (``Channel.dataReceived``
and below) in one read out of eight, about 0.3 us of overhead per read, so
that the report splits its CPU into its own code and TLS + reactor + kernel
(the echo baseline runs uninstrumented); ``--breakdown`` times
every stage (decode, core, handlespace, encode, TCP mapping, timers) at
about 1.5 us per timed call.  ``--profile DIR`` runs the registrar under
cProfile during the measured windows (slower; only for finding where time
goes) and writes ``DIR/repN/windowK.prof``.  Needs ``gcc``, OpenSSL
headers and ``taskset``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from rserpool.security import pki
from rserpool.wire import (
    AsapHandleResolution,
    AsapHandleResolutionResponse,
    AsapRegistration,
    AsapRegistrationResponse,
    LeastUsedPolicy,
    PoolElement,
    TcpTransport,
)
from rserpool.wire.codes import (
    ASAP_HANDLE_RESOLUTION_RESPONSE,
    ASAP_REGISTRATION_RESPONSE,
    PPID_ASAP,
)
from rserpool.wire.tcpmap import DataChunk, encode_chunk

HERE = Path(__file__).resolve().parent
POOL_HANDLE = b"bench-pool"
PE_LIFE = 600  # seconds
RESOLUTION_ITEMS = 3
SERVER_NAME = "localhost"
TARGET_RESOLUTION_RATIO = 0.6
TARGET_REREGISTRATION_RATIO = 0.45
SERVER_CPU = "0"
GENERATOR_CPU = "1"


# -- the throwaway PKI -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BenchPKI:
    ca: Path
    server_cert: Path
    server_key: Path
    clients: tuple[tuple[str, Path, Path], ...]  # (identity, cert, key)


def make_pki(directory: Path, identities: int) -> BenchPKI:
    """An ECDSA P-256 CA, a server certificate and one client certificate per identity."""
    now = dt.datetime.now(dt.timezone.utc)
    ca = pki.create_ca("rserpool benchmark CA", now, days=2)
    server = pki.create_server_certificate(ca, [SERVER_NAME, "127.0.0.1"], now, days=2)
    ca_path = pki.write_certificate(directory / "ca.pem", ca.certificate)
    server_cert = pki.write_certificate(directory / "server.pem", server.certificate, *server.chain)
    server_key = pki.write_private_key(directory / "server.key", server.private_key)
    clients = []
    for index in range(identities):
        name = f"bench-pe{index}"
        issued = pki.create_client_certificate(ca, name, now, days=2)
        cert = pki.write_certificate(directory / f"{name}.pem", issued.certificate, *issued.chain)
        key = pki.write_private_key(directory / f"{name}.key", issued.private_key)
        clients.append((name, cert, key))
    return BenchPKI(ca_path, server_cert, server_key, tuple(clients))


# -- messages ------------------------------------------------------------------------------


def data_chunk(message: Any) -> bytes:
    """A DATA chunk as the generator sends it (INIT flags omit TSN and stream)."""
    return encode_chunk(DataChunk(message.encode(), ppid=PPID_ASAP))


def response_chunk(message: Any) -> bytes:
    """What the registrar writes for a response: DATA with TSN, stream and PPID, then the ACK."""
    return encode_chunk(DataChunk(message.encode(), ppid=PPID_ASAP, tsn=0, stream_id=0, stream_seq=0)) + \
        b"\x03\x00\x00\x04"


def pe_id_of(connection: int, index: int) -> int:
    return 0x10000000 + connection * 1000 + index


def load_of(connection: int, index: int, variant: int) -> int:
    # Two load values per PE, interleaved across the pool so that every
    # re-registration moves the PE within the Least-Used order.
    return (connection * 20 + index) * 2 + variant * 1_000_003


def registration(connection: int, index: int, variant: int) -> AsapRegistration:
    pe = PoolElement(pe_id_of(connection, index), 0, PE_LIFE,
                     TcpTransport(20000 + index, IPv4Address("127.0.0.1")),
                     LeastUsedPolicy(load_of(connection, index, variant)))
    return AsapRegistration(POOL_HANDLE, pe)


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    timed: bool
    expected_type: int
    warmup_s: float
    measure_s: float
    messages: tuple[tuple[bytes, ...], ...]  # per connection, encoded DATA chunks


def registration_phase(connections: int, per_connection: int) -> Phase:
    msgs = tuple(tuple(data_chunk(registration(c, i, 1)) for i in range(per_connection))
                 for c in range(connections))
    return Phase("register", False, ASAP_REGISTRATION_RESPONSE, 0.0, 0.0, msgs)


def resolution_phase(connections: int, warmup: float, measure: float, tag: str) -> Phase:
    chunk = data_chunk(AsapHandleResolution(POOL_HANDLE))
    return Phase(f"resolve{tag}", True, ASAP_HANDLE_RESOLUTION_RESPONSE, warmup, measure,
                 tuple((chunk,) for _ in range(connections)))


def reregistration_phase(connections: int, per_connection: int, warmup: float, measure: float,
                         tag: str) -> Phase:
    msgs = tuple(
        tuple(data_chunk(registration(c, i, variant)) for variant in (0, 1) for i in range(per_connection))
        for c in range(connections)
    )
    return Phase(f"reregister{tag}", True, ASAP_REGISTRATION_RESPONSE, warmup, measure, msgs)


def echo_responses(server_id: int = 1) -> dict[int, bytes]:
    """Request chunk length -> the registrar's response bytes for it (same sizes)."""
    pes = tuple(
        PoolElement(pe_id_of(0, i), server_id, PE_LIFE, TcpTransport(20000 + i, IPv4Address("127.0.0.1")),
                    LeastUsedPolicy(load_of(0, i, 0)))
        for i in range(RESOLUTION_ITEMS)
    )
    resolution = response_chunk(AsapHandleResolutionResponse(POOL_HANDLE, pes, LeastUsedPolicy(0)))
    reg = response_chunk(AsapRegistrationResponse(POOL_HANDLE, pe_id_of(0, 0)))
    resolve_len = struct.unpack_from("!H", data_chunk(AsapHandleResolution(POOL_HANDLE)), 2)[0]
    register_len = struct.unpack_from("!H", data_chunk(registration(0, 0, 0)), 2)[0]
    if resolve_len == register_len:
        raise RuntimeError("resolution and registration requests have the same size")
    return {resolve_len: resolution, register_len: reg}


def write_script(path: Path, bench_pki: BenchPKI, phases: list[Phase]) -> None:
    """The binary script loadgen.c reads (format in its header comment)."""
    out = bytearray(b"RSLG") + struct.pack("!II", 1, len(bench_pki.clients))

    def text(value: str) -> bytes:
        raw = value.encode()
        return struct.pack("!H", len(raw)) + raw

    for _, cert, key in bench_pki.clients:
        out += text(str(cert)) + text(str(key))
    out += struct.pack("!I", len(phases))
    for phase in phases:
        out += text(phase.name)
        out += struct.pack("!BBII", 1 if phase.timed else 0, phase.expected_type,
                           int(phase.warmup_s * 1000), int(phase.measure_s * 1000))
        for per_connection in phase.messages:
            out += struct.pack("!I", len(per_connection))
            for chunk in per_connection:
                out += struct.pack("!I", len(chunk)) + chunk
    path.write_bytes(bytes(out))


# -- processes and CPU accounting ----------------------------------------------------------------


def build_loadgen(directory: Path) -> Path:
    binary = directory / "loadgen"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(HERE / "loadgen.c"), "-lssl", "-lcrypto"],
                   check=True)
    return binary


@dataclass(frozen=True, slots=True)
class Boundary:
    """What the generator read at a window boundary (START or END line)."""

    server_cpu_ns: int
    cpu_busy: tuple[int, int]  # jiffies of CPU 0 and CPU 1
    cpu_total: tuple[int, int]

    @classmethod
    def parse(cls, fields: list[str]) -> "Boundary":
        ns, busy0, total0, busy1, total1 = (int(v) for v in fields)
        return cls(ns, (busy0, busy1), (total0, total1))


def busy_fraction(start: Boundary, end: Boundary, cpu: int) -> float | None:
    total = end.cpu_total[cpu] - start.cpu_total[cpu]
    if start.cpu_total[cpu] < 0 or total <= 0:
        return None
    return (end.cpu_busy[cpu] - start.cpu_busy[cpu]) / total


class Server:
    """A server child pinned to CPU 0 that prints ``READY <port>``."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self._log_handle = open(log, "w")
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CPU, *argv], stdout=subprocess.PIPE,
                                     stderr=self._log_handle, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"server did not start: {line!r}\n{log.read_text()[-3000:]}")
        self.port = int(line.split()[1])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_handle.close()


def run_generator(loadgen: Path, script: Path, server: Server, ca: Path,
                  signal_windows: bool = False) -> tuple[str, list[dict[str, Any]]]:
    """Run the generator against ``server``; per-phase results with CPU figures.

    The generator itself reads the server's CPU time and /proc/stat at the
    exact window boundaries (and signals the registrar with SIGUSR1/SIGUSR2
    when ``signal_windows``), so a slow benchmark process cannot skew them."""
    argv = ["taskset", "-c", GENERATOR_CPU, str(loadgen), "-H", "127.0.0.1", "-p", str(server.port),
            "-s", str(script), "-A", str(ca), "-n", SERVER_NAME, "-P", str(server.pid)]
    if signal_windows:
        argv.append("-S")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    results: list[dict[str, Any]] = []
    tls_version = "?"
    bounds: dict[tuple[str, str], Boundary] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            word, _, rest = line.strip().partition(" ")
            if word == "READY":
                tls_version = rest.split()[-1]
            elif word in ("START", "END"):
                name, *fields = rest.split()
                bounds[(word, name)] = Boundary.parse(fields)
            elif word == "RESULT":
                result = json.loads(rest)
                name = result["phase"]
                if ("START", name) in bounds and ("END", name) in bounds:
                    b0, b1 = bounds[("START", name)], bounds[("END", name)]
                    result["server_cpu_s"] = (b1.server_cpu_ns - b0.server_cpu_ns) / 1e9
                    result["cpu0_busy"] = busy_fraction(b0, b1, int(SERVER_CPU))
                    result["cpu1_busy"] = busy_fraction(b0, b1, int(GENERATOR_CPU))
                results.append(result)
    finally:
        if proc.wait(timeout=120) != 0:
            raise RuntimeError(f"load generator failed with exit code {proc.returncode}")
    return tls_version, results


# -- the registrar and echo children ---------------------------------------------------------------


def registrar_ini(directory: Path, bench_pki: BenchPKI) -> Path:
    rules = directory / "bench.rules"
    rules.write_text("".join(f"{name} register,deregister {POOL_HANDLE.decode()}\n"
                             for name, _, _ in bench_pki.clients) + "* resolve *\n")
    ini = directory / "registrar.ini"
    ini.write_text(f"""\
[registrar]
server_id = auto
asap_listen = tcp:port=0:interface=127.0.0.1
state_dir = {directory / 'var'}

[tls]
enabled = yes
certificate = {bench_pki.server_cert}
private_key = {bench_pki.server_key}
ca_certificates = {bench_pki.ca}
require_client_certificate = yes
server_name = {SERVER_NAME}

[asap]
# Keep-alives far beyond the run: the generator is not a PE stack.
keepalive_interval = 100000
keepalive_timeout = 100000
max_resolution_items = {RESOLUTION_ITEMS}
max_registration_life = 3600

[security]
rules = {rules}
# Raised for the benchmark: one identity does hundreds of operations/s.
registration_rate = 1e9
registration_rate_per_address = 1e9
resolution_rate = 1e9
""")
    return ini


def serve_registrar(ini: str, stats_path: str, profile_dir: str | None, detailed: bool) -> int:
    """Child: the registrar built exactly as ``twistd rserpool-registrar`` builds it."""
    from twisted.internet import reactor
    from twisted.logger import (
        FilteringLogObserver, LogLevel, LogLevelFilterPredicate, globalLogBeginner, textFileLogObserver,
    )

    from rserpool.config import load_config
    from rserpool.tap import build_registrar

    observer = FilteringLogObserver(textFileLogObserver(sys.stderr),
                                    [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    service = build_registrar(load_config(ini), reactor)
    _install_window_hooks(service, Path(stats_path), Path(profile_dir) if profile_dir else None, detailed)

    def ready(_: Any) -> None:
        print(f"READY {service.listening_addresses[0].port}", flush=True)

    def stop() -> Any:
        return service.stopService()

    reactor.callWhenRunning(lambda: service.startService().addCallback(ready))
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()
    return 0


#: Stages timed inside the registrar with ``--breakdown`` (label, module, owner, attribute).
#: Each is inclusive of what it calls; ``app`` is all of the registrar's own
#: work for the bytes of one read (everything but TLS, the reactor and the kernel).
_STAGES = (
    ("app", "rserpool.service.channel", "Channel", "dataReceived"),
    ("tcpmap_receive", "rserpool.wire.tcpmap", "TcpMapConnection", "receive_data"),
    ("decode", "rserpool.service.channel", None, "decode_message"),
    ("core", "rserpool.asap.registrar", "RegistrarCore", "message_received"),
    ("handlespace_resolve", "rserpool.handlespace", "Handlespace", "resolve"),
    ("handlespace_register", "rserpool.handlespace", "Handlespace", "register"),
    ("carry_out", "rserpool.service.registrar", "RegistrarService", "_carry_out"),
    ("encode", "rserpool.wire.messages", "Message", "encode"),
    ("tcpmap_send", "rserpool.wire.tcpmap", "TcpMapConnection", "send_message"),
    ("arm_timer", "rserpool.service.registrar", "RegistrarService", "_arm_timer"),
)


#: Without ``--breakdown``, one read in this many is timed for the split
#: between the registrar's own work and TLS + reactor + kernel (a power of 2).
LIGHT_SAMPLING = 8


def _install_window_hooks(service: Any, stats_path: Path, profile_dir: Path | None, detailed: bool) -> None:
    """SIGUSR1 opens a measured window, SIGUSR2 closes it.

    Always: the CPU time spent in ``Channel.dataReceived`` (the registrar's
    own work, as opposed to TLS, reactor and kernel) and the number of ASAP
    messages handled, appended as one JSON line per window to ``stats_path``.
    Without ``detailed`` only one read in ``LIGHT_SAMPLING`` is timed (a
    ``thread_time`` call is a system call of about 0.6 us here, which the
    uninstrumented echo baseline does not pay) and the time is scaled up, and
    the messages are counted from the core's own counters.  With
    ``detailed``, every call of every stage of ``_STAGES`` is timed (each
    wrapper costs about 1.5 us, so rates are then lower).  With
    ``profile_dir``, cProfile runs during the window (``windowN.prof``).
    """
    import cProfile
    import importlib

    clock = time.thread_time
    totals: dict[str, list[float]] = {}
    if detailed:
        for label, module_name, owner_name, attribute in _STAGES:
            module = importlib.import_module(module_name)
            owner = getattr(module, owner_name) if owner_name else module
            totals[label] = _time_calls(owner, attribute, clock)
    else:
        channel_cls = importlib.import_module("rserpool.service.channel").Channel
        totals["app"] = _time_sampled_calls(channel_cls, "dataReceived", clock, LIGHT_SAMPLING)
    counters = ("registrations", "reregistrations", "deregistrations", "resolutions", "refused")
    stats = service.core.stats
    base = [0]

    def handled_so_far() -> int:
        return sum(stats.get(name, 0) for name in counters)

    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"profiler": None, "count": 0}

    def start(signum: int, frame: Any) -> None:
        for cell in totals.values():
            cell[:] = [0.0] + [0] * (len(cell) - 1)
        base[0] = handled_so_far()
        if profile_dir is not None:
            state["profiler"] = cProfile.Profile()
            state["profiler"].enable()

    def stop(signum: int, frame: Any) -> None:
        profiler = state["profiler"]
        state["count"] += 1
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(profile_dir / f"window{state['count']}.prof"))  # type: ignore[operator]
            state["profiler"] = None
        handled = handled_so_far() - base[0]
        cpu = {}
        for label, cell in totals.items():
            # [cpu, timed calls] or, sampled, [cpu, timed calls, all calls]
            cpu[label] = cell[0] * (cell[2] / cell[1]) if len(cell) == 3 and cell[1] else cell[0]
        line = {"window": state["count"], "messages": handled, "cpu_s": cpu}
        with open(stats_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)


def _time_sampled_calls(owner: Any, attribute: str, clock: Any, every: int) -> list[float]:
    """Wrap ``owner.attribute`` to time one call in ``every`` (a power of 2):
    the returned cell holds [CPU of the timed calls, timed calls, all calls]."""
    original = getattr(owner, attribute)
    cell = [0.0, 0, 0]
    mask = every - 1

    def sampled(*args: Any) -> Any:
        calls = cell[2] = cell[2] + 1
        if calls & mask:
            return original(*args)
        began = clock()
        try:
            return original(*args)
        finally:
            cell[0] += clock() - began
            cell[1] += 1

    setattr(owner, attribute, sampled)
    return cell


def _time_calls(owner: Any, attribute: str, clock: Any) -> list[float]:
    """Wrap ``owner.attribute`` to add its CPU time and calls to the returned cell."""
    original = getattr(owner, attribute)
    cell = [0.0, 0]

    def timed(*args: Any, **kwargs: Any) -> Any:
        began = clock()
        try:
            return original(*args, **kwargs)
        finally:
            cell[0] += clock() - began
            cell[1] += 1

    setattr(owner, attribute, timed)
    return cell


# -- figures ---------------------------------------------------------------------------------------


def figures(result: dict[str, Any]) -> dict[str, Any]:
    window = result["window_s"]
    completed = result["completed"]
    server_cpu = result.get("server_cpu_s", 0.0)
    gen_cpu = result["gen_cpu_user_s"] + result["gen_cpu_sys_s"]
    return {
        "rate_per_s": completed / window if window else 0.0,
        "completed": completed,
        "window_s": window,
        "server_cpu_share": server_cpu / window if window else None,
        "server_us_per_request": server_cpu / completed * 1e6 if completed else None,
        "generator_cpu_share": gen_cpu / window if window else None,
        "generator_us_per_request": gen_cpu / completed * 1e6 if completed else None,
        "cpu0_busy": result.get("cpu0_busy"),
        "cpu1_busy": result.get("cpu1_busy"),
        "errors": result["unexpected"] + result["rejected"] + result["size_mismatch"],
        "response_chunk_bytes": result["response_chunk_bytes"],
        "request_chunk_bytes": result["request_chunk_bytes"],
    }


def stage_figures(window: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """Per-message CPU of the registrar's stages in one window; ``transport``
    is the rest of the server's CPU (TLS, reactor, kernel)."""
    handled = window["messages"] or 0
    if not handled:
        return {}
    stages = {label: cpu / handled * 1e6 for label, cpu in window["cpu_s"].items()}
    out: dict[str, Any] = {"app_us_per_request": stages.get("app")}
    if run.get("server_us_per_request") is not None and stages.get("app") is not None:
        out["transport_us_per_request"] = run["server_us_per_request"] - stages["app"]
    if len(stages) > 1:
        out["stages_us"] = stages
    return out


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else None


def say(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short repetition (< 30 s)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--pes-per-connection", type=int, default=20)
    parser.add_argument("--repetitions", type=int, default=None, help="default 5 (1 with --quick)")
    parser.add_argument("--measure", type=float, default=None, help="seconds per measured window")
    parser.add_argument("--profile", metavar="DIR", help="cProfile the registrar during measured windows")
    parser.add_argument("--breakdown", action="store_true",
                        help="time every stage inside the registrar (adds ~0.3 us per stage call)")
    parser.add_argument("--serve-registrar", metavar="INI", help=argparse.SUPPRESS)
    parser.add_argument("--stats", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_registrar:
        return serve_registrar(args.serve_registrar, args.stats, args.profile, args.breakdown)

    # Short windows, many alternating repetitions: other load on the shared
    # cores then hits registrar and baseline alike, and medians absorb it.
    reps = args.repetitions or (1 if args.quick else 5)
    warmup = 0.5
    measure = args.measure or (2.0 if args.quick else 2.5)
    conns, per_conn = args.connections, args.pes_per_connection
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rserpool-bench-") as tmp:
        directory = Path(os.environ.get("RSERPOOL_BENCH_KEEP") or tmp)
        bench_pki = make_pki(directory, conns)
        loadgen = build_loadgen(directory)
        ini = registrar_ini(directory, bench_pki)
        echo_spec = directory / "echo.json"
        echo_spec.write_text(json.dumps({
            "cert": str(bench_pki.server_cert), "key": str(bench_pki.server_key), "ca": str(bench_pki.ca),
            "responses": {str(k): v.hex() for k, v in echo_responses().items()},
        }))
        say(f"registrar benchmark: {conns} TLS connections (one identity each), pool of {conns * per_conn} PEs, "
            f"{reps} repetition(s) of {warmup:.1f} s warm-up + {measure:.1f} s measured per phase; "
            f"server on CPU {SERVER_CPU}, generator on CPU {GENERATOR_CPU}")
        runs: dict[str, list[dict[str, Any]]] = {"resolve": [], "reregister": [], "echo_resolve": [],
                                                 "echo_reregister": []}
        tls_version = "?"
        for rep in range(reps):
            tag = f"#{rep + 1}"
            script = directory / f"registrar{rep}.lg"
            write_script(script, bench_pki, [
                registration_phase(conns, per_conn),
                resolution_phase(conns, warmup, measure, tag),
                reregistration_phase(conns, per_conn, warmup, measure, tag),
            ])
            stats = directory / f"registrar{rep}.stats"
            argv_child = [sys.executable, str(Path(__file__).resolve()), "--serve-registrar", str(ini),
                          "--stats", str(stats)]
            if args.profile:
                argv_child += ["--profile", str(Path(args.profile).resolve() / f"rep{rep + 1}")]
            if args.breakdown:
                argv_child.append("--breakdown")
            server = Server(argv_child, directory / f"registrar{rep}.log")
            try:
                tls_version, results = run_generator(loadgen, script, server, bench_pki.ca, signal_windows=True)
            finally:
                server.stop()
            setup, resolve, rereg = results
            if setup["completed"] != conns * per_conn or setup["rejected"] or setup["unexpected"]:
                raise RuntimeError(f"registration of the pool failed: {setup}")
            windows = [json.loads(line) for line in stats.read_text().splitlines()] if stats.exists() else []
            for index, (key, result) in enumerate((("resolve", resolve), ("reregister", rereg))):
                run = figures(result)
                if index < len(windows):
                    run.update(stage_figures(windows[index], run))
                runs[key].append(run)

            script = directory / f"echo{rep}.lg"
            write_script(script, bench_pki, [
                resolution_phase(conns, warmup, measure, tag),
                reregistration_phase(conns, per_conn, warmup, measure, tag),
            ])
            server = Server([sys.executable, str(HERE / "_echo_server.py"), str(echo_spec)],
                            directory / f"echo{rep}.log")
            try:
                _, results = run_generator(loadgen, script, server, bench_pki.ca)
            finally:
                server.stop()
            for key, result in zip(("echo_resolve", "echo_reregister"), results):
                runs[key].append(figures(result))

            for key in runs:
                run = runs[key][-1]
                say(f"  {key:16s} {tag}: {run['rate_per_s']:9.0f}/s  server {run['server_us_per_request']:6.1f} "
                    f"us/req (CPU {run['server_cpu_share']:.0%}), generator CPU {run['generator_cpu_share']:.0%}"
                    f", cpu0 busy {run['cpu0_busy']:.0%}, errors {run['errors']}")

    summary = summarize(runs, conns, per_conn, reps, warmup, measure, tls_version)
    summary["duration_s"] = round(time.monotonic() - started, 1)
    summary["instrumented"] = "profile" if args.profile else "breakdown" if args.breakdown else "light"
    report(summary)
    if args.profile or args.breakdown:
        say("  ** instrumented run (--profile/--breakdown): the rates are lower than uninstrumented ones **")
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0


def summarize(runs: dict[str, list[dict[str, Any]]], conns: int, per_conn: int, reps: int,
              warmup: float, measure: float, tls_version: str) -> dict[str, Any]:
    def med(kind: str, key: str) -> float | None:
        return median_of(runs[kind], key)

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    def rounded(value: float | None, digits: int = 1) -> float | None:
        return None if value is None else round(value, digits)

    resolutions = med("resolve", "rate_per_s")
    rereg = med("reregister", "rate_per_s")
    echo_res = med("echo_resolve", "rate_per_s")
    echo_rereg = med("echo_reregister", "rate_per_s")
    us = {kind: med(kind, "server_us_per_request") for kind in runs}
    gen_share = max((med(kind, "generator_cpu_share") or 0.0) for kind in runs)
    summary: dict[str, Any] = {
        "resolutions_per_s": rounded(resolutions, 0),
        "reregistrations_per_s": rounded(rereg, 0),
        "echo_baseline_per_s": rounded(echo_res, 0),
        "echo_reregistration_baseline_per_s": rounded(echo_rereg, 0),
        "resolution_ratio": ratio(resolutions, echo_res),
        "reregistration_ratio": ratio(rereg, echo_rereg),
        "registrar_us_per_resolution": rounded(us["resolve"], 2),
        "registrar_us_per_reregistration": rounded(us["reregister"], 2),
        "echo_us_per_resolution": rounded(us["echo_resolve"], 2),
        "echo_us_per_reregistration": rounded(us["echo_reregister"], 2),
        # CPU-time based: what one fully used core would give; robust to other load.
        "resolutions_per_cpu_s": rounded(1e6 / us["resolve"], 0) if us["resolve"] else None,
        "reregistrations_per_cpu_s": rounded(1e6 / us["reregister"], 0) if us["reregister"] else None,
        "echo_per_cpu_s": rounded(1e6 / us["echo_resolve"], 0) if us["echo_resolve"] else None,
        # Inside the registrar: its own work (Channel.dataReceived and below) and the rest.
        "registrar_app_us_per_resolution": rounded(med("resolve", "app_us_per_request"), 2),
        "registrar_app_us_per_reregistration": rounded(med("reregister", "app_us_per_request"), 2),
        "registrar_transport_us_per_resolution": rounded(med("resolve", "transport_us_per_request"), 2),
        "registrar_transport_us_per_reregistration": rounded(med("reregister", "transport_us_per_request"), 2),
        "cpu_resolution_ratio": ratio(us["echo_resolve"], us["resolve"]),
        "cpu_reregistration_ratio": ratio(us["echo_reregister"], us["reregister"]),
        "server_cpu_share": {kind: rounded(med(kind, "server_cpu_share"), 3) for kind in runs},
        "generator_cpu_share": {kind: rounded(med(kind, "generator_cpu_share"), 3) for kind in runs},
        "generator_us_per_request": {kind: rounded(med(kind, "generator_us_per_request"), 2) for kind in runs},
        "cpu0_busy": {kind: rounded(med(kind, "cpu0_busy"), 3) for kind in runs},
        "cpu1_busy": {kind: rounded(med(kind, "cpu1_busy"), 3) for kind in runs},
        "generator_saturated": gen_share > 0.85,
        "errors": sum(run["errors"] for kind in runs for run in runs[kind]),
        "response_chunk_bytes": {kind: runs[kind][0]["response_chunk_bytes"] for kind in runs},
        "request_chunk_bytes": {kind: runs[kind][0]["request_chunk_bytes"] for kind in runs},
        "connections": conns,
        "pes_per_connection": per_conn,
        "pool_size": conns * per_conn,
        "resolution_items": RESOLUTION_ITEMS,
        "repetitions": reps,
        "warmup_s": warmup,
        "measure_s": measure,
        "tls_version": tls_version,
        "targets": {"resolution_ratio": TARGET_RESOLUTION_RATIO, "reregistration_ratio": TARGET_REREGISTRATION_RATIO},
        "runs": runs,
    }
    for kind in ("resolve", "reregister"):
        labels = sorted({label for run in runs[kind] for label in run.get("stages_us", {})})
        if labels:
            summary.setdefault("stages_us", {})[kind] = {
                label: round(statistics.median(run["stages_us"][label] for run in runs[kind]
                                               if label in run.get("stages_us", {})), 2)
                for label in labels}
    summary["targets_met"] = {
        "resolution": (summary["resolution_ratio"] or 0) >= TARGET_RESOLUTION_RATIO,
        "reregistration": (summary["reregistration_ratio"] or 0) >= TARGET_REREGISTRATION_RATIO,
    }
    return summary


def report(s: dict[str, Any]) -> None:
    say(f"TLS {s['tls_version']}, {s['connections']} connections, pool of {s['pool_size']} PEs, "
        f"{s['resolution_items']} PEs per resolution; medians of {s['repetitions']}:")
    rows = (
        ("handle resolutions", s["resolutions_per_s"], s["registrar_us_per_resolution"], s["resolution_ratio"],
         s["cpu_resolution_ratio"], TARGET_RESOLUTION_RATIO),
        ("re-registrations", s["reregistrations_per_s"], s["registrar_us_per_reregistration"],
         s["reregistration_ratio"], s["cpu_reregistration_ratio"], TARGET_REREGISTRATION_RATIO),
    )
    for name, rate, us, ratio, cpu_ratio, target in rows:
        say(f"  {name:19s} {rate:9.0f}/s  {us:6.1f} us registrar CPU/req  ratio to echo {ratio:.2f} "
            f"(by CPU time {cpu_ratio:.2f}; target {target})")
    say(f"  echo baseline       {s['echo_baseline_per_s']:9.0f}/s (resolution sizes), "
        f"{s['echo_reregistration_baseline_per_s']:.0f}/s (registration sizes); "
        f"{s['echo_us_per_resolution']:.1f} / {s['echo_us_per_reregistration']:.1f} us CPU/req")
    if s["registrar_app_us_per_resolution"] is not None:
        say(f"  inside the registrar: own work (Channel.dataReceived and below) "
            f"{s['registrar_app_us_per_resolution']:.1f} / {s['registrar_app_us_per_reregistration']:.1f} us, "
            f"TLS + reactor + kernel {s['registrar_transport_us_per_resolution']:.1f} / "
            f"{s['registrar_transport_us_per_reregistration']:.1f} us (resolution / re-registration)")
    for kind, stages in s.get("stages_us", {}).items():
        say(f"  stages of {kind} (us per message, inclusive): "
            + ", ".join(f"{label} {value:.1f}" for label, value in stages.items()))
    shares = ", ".join(f"{k} {v:.0%}" for k, v in s["generator_cpu_share"].items() if v is not None)
    say(f"  generator CPU share of its core: {shares}"
        + ("  ** the generator is near saturation: rates may be generator-bound **" if s["generator_saturated"] else ""))
    if s["errors"]:
        say(f"  ** {s['errors']} unexpected, rejected or wrongly sized responses **")


if __name__ == "__main__":
    sys.exit(main())
