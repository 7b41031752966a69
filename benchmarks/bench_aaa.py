"""AAA benchmark (issue 6 item 6): RADIUS and LDAP through real servers.

A private FreeRADIUS (``tests/radius_fixture.py``) and a private slapd
(``tests/ldap_fixture.py``) are started on loopback ports with ``N`` bench
identities (``bench-pe0`` ...: a CHAP secret and ``Class`` pools
``bench-*`` in the users file; an entry with an SRP salt and verifier,
``rserpoolPool: bench-*`` and membership of group ``bench-pool`` in the
directory).  Both servers are pinned to CPU 1.

1. **Client rates** (a child pinned to CPU 0, the servers on CPU 1): for a
   fixed window, ``concurrency`` operations are kept outstanding and the
   completions counted:

   - ``radius_chap``: :meth:`RadiusClient.chap_verify` (no cache exists:
     every request reaches FreeRADIUS);
   - ``radius_authorize``: :meth:`RadiusAuthorizer.authorize` (authorize-only
     requests), cache off (``ttl=0``) and on (warm cache: served from it);
   - ``ldap_srp``: :meth:`LdapDirectory.srp_verifier`, cache off and on;
   - ``ldap_authorize``: :meth:`LdapAuthorizer.authorize` (groups and
     attribute modes), cache off and on.

   Identities rotate, so concurrent requests are never coalesced.

2. **Handle-resolution latency** (registrar child ``taskset -c 0``, built by
   ``rserpool.tap.build_registrar`` from an ini file, TLS, certificate
   authentication, authorizer ``radius`` or ``ldap``): a load child (CPU 1)
   opens 8 TLS connections with client certificates ``bench-pe0`` ... and
   registers 10 PEs each in ``bench-pool``; a PU child (CPU 1) measures
   lock-step ASAP_HANDLE_RESOLUTION latency on one connection, alternately
   idle and while the load child registers and deregisters a PE in a fresh
   pool handle per operation (lock-step per connection).  Every such
   operation is a new (action, pool) for the session, so the registrar asks
   its authorizer each time; with the backend's cache off every one is a
   RADIUS authorize-only request or an LDAP search (counted in the
   registrar).  The registrar runs a 5 ms ticker and reports its reactor lag
   and the CPU its reactor thread used between ticks.  The benchmark's own
   clients set TCP_NODELAY; the ``*-nodelay`` variants also set it on the
   registrar's channels (an experiment: rserpool does not).

    .venv/bin/python benchmarks/bench_aaa.py [--quick] [--json]

``--quick`` finishes in under 30 s; ``--json`` prints one JSON object on the
last line.  Needs ``freeradius`` (and read access to /etc/freeradius),
``slapd``, ``ldapadd``, ``taskset`` and ``nice``.  ``--only clients|latency``,
``--variants``, ``--rounds``, ``--window``, ``--latency-window``,
``--load-nice`` and ``--workdir`` (keep configurations and logs) are for
exploring.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _path in (str(HERE), str(REPO)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from bench_registrar import Server, make_pki  # noqa: E402  (benchmarks/ is on sys.path)

from _aaa_children import (  # noqa: E402
    ELEMENTS, OTHER_CPU, POOLS, SERVER_CPU, SERVICE_DN, SERVICE_PASSWORD, chap_secret, identity,
    latency_summary, process_cpu_s, say, serve_clients, serve_load, serve_pu, serve_registrar,
)

USERS = 200
LOAD_CONNECTIONS = 8
PES_PER_CONNECTION = 10


# -- the backends' data -----------------------------------------------------------------


def users_file(count: int) -> str:
    entries = []
    for index in range(count):
        entries.append(f'{identity(index)}\tCleartext-Password := "{chap_secret(index).decode()}"\n'
                       f'\tClass := "rserpool:pools=bench-*;groups=bench",\n'
                       f'\tRSerPool-Allowed-Pool += "bench-*"\n')
    return "\n# benchmark identities\n" + "\n".join(entries)


def bench_ldif(count: int) -> str:
    blocks = []
    for index in range(count):
        salt, verifier = secrets.token_bytes(16), secrets.token_bytes(256)
        blocks.append("\n".join([
            f"dn: uid={identity(index)},{ELEMENTS}", "objectClass: account",
            "objectClass: rserpoolPoolElement", f"uid: {identity(index)}",
            ldif_value("rserpoolSrpSalt", salt), ldif_value("rserpoolSrpVerifier", verifier),
            "rserpoolPool: bench-*"]))
    members = "\n".join(f"member: uid={identity(index)},{ELEMENTS}" for index in range(count))
    blocks.append(f"dn: cn=bench-pool,{POOLS}\nobjectClass: groupOfNames\ncn: bench-pool\n{members}")
    return "\n\n".join(blocks) + "\n"


def ldif_value(name: str, value: bytes) -> str:
    from tests.ldap_fixture import ldif_value as fixture_value

    return fixture_value(name, value)


def pin(pid: int, cpu: str) -> None:
    """Pin every thread of ``pid`` to ``cpu``."""
    subprocess.run(["taskset", "-a", "-p", "-c", cpu, str(pid)], check=True, capture_output=True)


def start_backends(directory: Path, users: int) -> tuple[Any, Any]:
    from tests.ldap_fixture import Slapd
    from tests.radius_fixture import FreeRadius

    radius = FreeRadius(directory / "radius")
    radius.configure()
    authorize = radius.raddb / "mods-config" / "files" / "authorize"
    authorize.write_text(authorize.read_text() + users_file(users))
    radius.start()
    slapd = Slapd(directory / "ldap")
    try:
        slapd.start()
        slapd.load()
        ldif = directory / "bench.ldif"
        ldif.write_text(bench_ldif(users))
        slapd.load(ldif)
    except BaseException:
        radius.stop()
        slapd.stop()
        raise
    assert radius.process is not None and slapd.process is not None
    pin(radius.process.pid, OTHER_CPU)
    pin(slapd.process.pid, OTHER_CPU)
    return radius, slapd


def registrar_ini(directory: Path, bench_pki: Any, variant: dict[str, Any], backends: dict[str, Any]) -> Path:
    ttl, negative = ("300", "30") if variant["cache"] else ("0", "0")
    if variant["backend"] == "radius":
        secret = directory / "radius.secret"
        secret.write_bytes(backends["radius_secret"].encode() + b"\n")
        secret.chmod(0o600)
        backend = f"""\
[radius]
servers = 127.0.0.1:{backends['radius_port']}
secret_file = {secret}
authorization = class,filter-id,vsa
authorize_only = yes
timeout = 1.0
retries = 2
max_in_flight = 64
cache_ttl = {ttl}
negative_cache_ttl = {negative}
"""
    else:
        password = directory / "ldap.pw"
        password.write_text(SERVICE_PASSWORD + "\n")
        password.chmod(0o600)
        backend = f"""\
[ldap]
uri = {backends['ldap_uri']}
bind_dn = {SERVICE_DN}
bind_password_file = {password}
base_dn = {ELEMENTS}
group_base = {POOLS}
group_attribute = memberOf
authorization = groups,attribute
allow_plaintext = yes
connect_timeout = 1
receive_timeout = 2
timeout = 2
pool_size = 4
cache_ttl = {ttl}
negative_cache_ttl = {negative}
"""
    ini = directory / f"registrar-{variant['name']}.ini"
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
require_client_certificate = no
server_name = localhost

[asap]
keepalive_interval = 100000
keepalive_timeout = 100000
max_resolution_items = 3
max_registration_life = 3600

[security]
allow_unauthenticated = no
authenticators = certificate
authorizer = {variant['backend']}
authorize_resolution = no
registration_rate = 1e9
registration_rate_per_address = 1e9
resolution_rate = 1e9

{backend}""")
    return ini


# -- the orchestrator ------------------------------------------------------------------------


class Child:
    """A child speaking JSON lines on stdout and taking commands on stdin."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self._log = open(log, "w")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True)
        self.log = log

    def line(self) -> str:
        assert self.proc.stdout is not None
        text = self.proc.stdout.readline()
        if not text:
            raise RuntimeError(f"child {self.proc.args} ended:\n{self.log.read_text()[-3000:]}")
        return text.strip()

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def ask(self, command: str) -> dict[str, Any]:
        self.send(command)
        return json.loads(self.line())

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def cpu_times(cpu: str) -> tuple[int, int]:
    """(busy, total) jiffies of one CPU from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + values[4]
            return sum(values) - idle, sum(values)
    return 0, 0


def registrar_run(directory: Path, bench_pki: Any, backends: dict[str, Any], variant: dict[str, Any],
                  window_s: float, rounds: int, load_nice: int = 0) -> dict[str, Any]:
    """Resolution latency against one registrar: ``rounds`` times an idle
    window then a window under registration load; samples pooled per phase."""
    ini = registrar_ini(directory, bench_pki, variant, backends)
    name = variant["name"]
    stats = directory / f"registrar-{name}.stats"
    registrar = Server([sys.executable, str(Path(__file__).resolve()), "--serve-registrar", str(ini),
                        "--stats", str(stats)] + (["--nodelay"] if variant.get("nodelay") else []),
                       directory / f"registrar-{name}.log")
    children: list[Child] = []
    try:
        spec = directory / f"clients-{name}.json"
        spec.write_text(json.dumps({
            "port": registrar.port, "ca": str(bench_pki.ca), "pes_per_connection": PES_PER_CONNECTION,
            "clients": [(str(cert), str(key)) for _, cert, key in bench_pki.clients]}))
        me = [sys.executable, str(Path(__file__).resolve())]
        load = Child(["taskset", "-c", OTHER_CPU, "nice", "-n", str(load_nice), *me, "--serve-load", str(spec)],
                     directory / f"load-{name}.log")
        children.append(load)
        word, _, refused = load.line().partition(" ")
        if word != "READY" or refused != "0":
            raise RuntimeError(f"the bench pool could not be registered: {word} {refused} refused\n"
                               + load.log.read_text()[-2000:])
        pu = Child(["taskset", "-c", OTHER_CPU, *me, "--serve-pu", str(spec)], directory / f"pu-{name}.log")
        children.append(pu)
        if pu.line() != "READY":
            raise RuntimeError("PU child did not start")
        pu.ask("measure 0.3")  # warm-up
        phases: dict[str, dict[str, Any]] = {
            phase: {"ms": [], "errors": 0, "seconds": 0.0, "registrar_cpu_s": 0.0, "cpu0": [0, 0], "cpu1": [0, 0],
                    "operations": 0, "refused": 0, "load_s": 0.0}
            for phase in ("idle", "under_auth")}

        def window(phase: str) -> None:
            acc = phases[phase]
            loaded = phase == "under_auth"
            if loaded:
                load.send("go")
                time.sleep(0.2)  # ramp up
            cpu0, busy0, server0 = process_cpu_s(registrar.pid), cpu_times(OTHER_CPU), cpu_times(SERVER_CPU)
            before = load.ask("mark")
            registrar.proc.send_signal(signal.SIGUSR1)
            figures = pu.ask(f"measure {window_s}")
            registrar.proc.send_signal(signal.SIGUSR2)
            after = load.ask("mark")
            busy1, server1 = cpu_times(OTHER_CPU), cpu_times(SERVER_CPU)
            if loaded:
                load.send("stop")
                time.sleep(0.1)  # let the last operations finish
            acc["ms"] += figures["ms"]
            acc["errors"] += figures["errors"]
            acc["seconds"] += figures["seconds"]
            acc["registrar_cpu_s"] += process_cpu_s(registrar.pid) - cpu0
            acc["cpu1"][0] += busy1[0] - busy0[0]
            acc["cpu1"][1] += busy1[1] - busy0[1]
            acc["cpu0"][0] += server1[0] - server0[0]
            acc["cpu0"][1] += server1[1] - server0[1]
            acc["operations"] += after["operations"] - before["operations"]
            acc["refused"] += after["refused"] - before["refused"]
            acc["load_s"] += after["t"] - before["t"]

        for _ in range(rounds):
            window("idle")
            window("under_auth")
        lines: list[dict[str, Any]] = []
        for _ in range(100):  # the registrar appends a line per SIGUSR2
            lines = [json.loads(line) for line in stats.read_text().splitlines()] if stats.exists() else []
            if len(lines) >= 2 * rounds:
                break
            time.sleep(0.05)
        out: dict[str, Any] = {}
        for index, (phase, acc) in enumerate(phases.items()):
            figures = latency_summary([value / 1e3 for value in acc["ms"]])
            inside = lines[index::2]
            figures.update({
                "errors": acc["errors"],
                "resolutions_per_s": round(len(acc["ms"]) / acc["seconds"], 1),
                "registrar_cpu_share": round(acc["registrar_cpu_s"] / acc["seconds"], 3),
                "cpu0_busy": round(acc["cpu0"][0] / max(1, acc["cpu0"][1]), 3),
                "cpu1_busy": round(acc["cpu1"][0] / max(1, acc["cpu1"][1]), 3),
                "auth_operations_per_s": round(acc["operations"] / acc["load_s"], 1),
                "auth_refused": acc["refused"],
            })
            lag = latency_summary([value / 1e3 for w in inside for value in w["lag_ms"]])
            busy = latency_summary([value / 1e3 for w in inside for value in w["busy_ms"]])
            figures.update({f"reactor_lag_{k}": v for k, v in lag.items()})
            figures.update({f"reactor_cpu_between_ticks_{k}": v for k, v in busy.items() if k != "n"})
            pauses = [(gen, ms) for w in inside for gen, ms in w.get("gc_ms", [])]
            figures["gc_collections"] = len(pauses)
            figures["gc_max_ms"] = max((ms for _, ms in pauses), default=0.0)
            figures["gc_gen2_max_ms"] = max((ms for gen, ms in pauses if gen == 2), default=0.0)
            if inside and all("backend_requests" in w for w in inside):
                figures["backend_requests_per_s"] = round(
                    sum(w["backend_requests"] for w in inside) / acc["seconds"], 1)
            out[phase] = figures
        return out
    finally:
        for child in reversed(children):
            child.stop()
        registrar.stop()


def client_rates(directory: Path, backends: dict[str, Any], window: float) -> dict[str, Any]:
    say(f"client rates: the bench process on CPU {SERVER_CPU}, {window:g} s windows")
    spec = directory / "clients.json"
    spec.write_text(json.dumps({**backends, "users": USERS, "window": window,
                                "radius_in_flight": 64, "radius_concurrency": 64,
                                "ldap_pool": 4, "ldap_concurrency": 16}))
    result = subprocess.run(["taskset", "-c", SERVER_CPU, sys.executable, str(Path(__file__).resolve()),
                             "--serve-clients", str(spec)], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"client benchmark failed:\n{result.stderr[-3000:]}")
    clients = json.loads(result.stdout.strip().splitlines()[-1])
    for key, f in clients.items():
        if isinstance(f, dict) and "per_s" in f:
            say(f"  {key:27s} {f['per_s']:8.0f}/s  latency median {f['latency_median_ms']} ms p99 "
                f"{f['latency_p99_ms']} ms; CPU us/op: client {f['client_cpu_us_per_op']}, "
                f"server {f.get('server_cpu_us_per_op')}; wrong {f['wrong_answers']} failed {f['failed']}")
    return clients


def latency_runs(directory: Path, bench_pki: Any, backends: dict[str, Any], chosen: list[dict[str, Any]],
                 window: float, rounds: int, load_nice: int) -> dict[str, Any]:
    say(f"resolution latency: registrar on CPU {SERVER_CPU}; PU (1 connection, lock-step) and load "
        f"({LOAD_CONNECTIONS} PE connections, lock-step register + deregister in fresh pools, nice {load_nice}) "
        f"on CPU {OTHER_CPU}; {rounds} x ({window:g} s idle + {window:g} s under load)")
    runs = {}
    for variant in chosen:
        run = registrar_run(directory, bench_pki, backends, variant, window, rounds, load_nice)
        runs[variant["name"]] = run
        for phase in ("idle", "under_auth"):
            f = run[phase]
            extra = (f"; load {f['auth_operations_per_s']:.0f} (de)registrations/s, backend requests "
                     f"{f.get('backend_requests_per_s', 'n/a')}/s, refused {f['auth_refused']}"
                     if phase == "under_auth" else "")
            say(f"  {variant['name']:16s} {phase:10s}: resolution median {f['median_ms']} ms p99 {f['p99_ms']} ms "
                f"max {f['max_ms']} ms ({f['resolutions_per_s']:.0f}/s, errors {f['errors']}); reactor lag p99 "
                f"{f['reactor_lag_p99_ms']} ms max {f['reactor_lag_max_ms']} ms (reactor CPU between 5 ms ticks p99 "
                f"{f['reactor_cpu_between_ticks_p99_ms']} max {f['reactor_cpu_between_ticks_max_ms']} ms; GC max "
                f"{f['gc_max_ms']} ms); registrar CPU "
                f"{f['registrar_cpu_share']:.0%} (CPU {SERVER_CPU} busy {f['cpu0_busy']:.0%}), CPU {OTHER_CPU} busy "
                f"{f['cpu1_busy']:.0%}" + extra)
    return runs


VARIANTS = (
    {"name": "radius-cache-off", "backend": "radius", "cache": False},
    {"name": "radius-cache-on", "backend": "radius", "cache": True},
    {"name": "ldap-cache-off", "backend": "ldap", "cache": False},
    # Experiment, not the shipped registrar: TCP_NODELAY on its channels.
    {"name": "radius-cache-off-nodelay", "backend": "radius", "cache": False, "nodelay": True},
    {"name": "ldap-cache-off-nodelay", "backend": "ldap", "cache": False, "nodelay": True},
)
QUICK_VARIANTS = ("radius-cache-off", "radius-cache-on", "ldap-cache-off")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows (< 30 s)")
    parser.add_argument("--json", action="store_true", help="one JSON object on the last line")
    parser.add_argument("--window", type=float, default=None, help="seconds per client-rate window")
    parser.add_argument("--latency-window", type=float, default=None,
                        help="seconds per idle or loaded resolution window")
    parser.add_argument("--rounds", type=int, default=None,
                        help="idle + loaded window pairs per registrar variant (default 5, 2 with --quick)")
    parser.add_argument("--load-nice", type=int, default=0, help="nice value of the load child (CPU 1)")
    parser.add_argument("--workdir", help="keep configurations and logs in this (new) directory")
    parser.add_argument("--only", choices=("clients", "latency"), help="run one part only")
    parser.add_argument("--variants", default=None,
                        help="registrar variants to run, comma-separated (default all; with --quick "
                             + ", ".join(QUICK_VARIANTS) + "): " + ", ".join(v["name"] for v in VARIANTS))
    parser.add_argument("--serve-clients", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--serve-registrar", metavar="INI", help=argparse.SUPPRESS)
    parser.add_argument("--stats", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--nodelay", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-pu", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--serve-load", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_clients:
        return serve_clients(args.serve_clients)
    if args.serve_registrar:
        return serve_registrar(args.serve_registrar, args.stats, args.nodelay)
    if args.serve_pu:
        return serve_pu(args.serve_pu)
    if args.serve_load:
        return serve_load(args.serve_load)

    window = args.window or (0.4 if args.quick else 3.0)
    latency_window = args.latency_window or (0.5 if args.quick else 2.0)
    rounds = args.rounds or (2 if args.quick else 5)
    names = args.variants.split(",") if args.variants else (
        QUICK_VARIANTS if args.quick else [v["name"] for v in VARIANTS])
    chosen = [v for v in VARIANTS if v["name"] in names]
    started = time.monotonic()
    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rserpool-bench-aaa-") as tmp:
        directory = Path(args.workdir or tmp)
        directory.mkdir(parents=True, exist_ok=True)
        bench_pki = make_pki(directory, LOAD_CONNECTIONS)
        radius, slapd = start_backends(directory, USERS)
        try:
            backends = {"radius_port": radius.port, "radius_secret": radius.secret.decode(),
                        "ldap_uri": slapd.uri, "radius_pid": radius.process.pid,
                        "slapd_pid": slapd.process.pid}
            say(f"AAA benchmark: FreeRADIUS (-X) on 127.0.0.1:{radius.port} and slapd on {slapd.uri}, "
                f"both on CPU {OTHER_CPU}; {USERS} bench identities")
            if args.only in (None, "clients"):
                summary["clients"] = client_rates(directory, backends, window)
            if args.only in (None, "latency"):
                summary["registrar"] = latency_runs(directory, bench_pki, backends, chosen,
                                                    latency_window, rounds, args.load_nice)
        finally:
            radius.stop()
            slapd.stop()
    figures = flatten(summary)
    figures["duration_s"] = round(time.monotonic() - started, 1)
    figures["quick"] = args.quick
    say(f"done in {figures['duration_s']} s")
    if args.json:
        print(json.dumps(figures, sort_keys=True))
    return 0


def flatten(summary: dict[str, Any]) -> dict[str, Any]:
    """The headline keys, plus everything measured under ``clients`` and ``registrar``."""
    clients = summary.get("clients", {})

    def rate(key: str) -> float | None:
        return clients.get(key, {}).get("per_s")

    out: dict[str, Any] = {
        "radius_auths_per_s": rate("radius_chap"),
        "radius_authorizations_per_s_cache_off": rate("radius_authorize_cache_off"),
        "radius_authorizations_per_s_cache_on": rate("radius_authorize_cache_on"),
        "ldap_auths_per_s": rate("ldap_srp_cache_off"),
        "ldap_auths_per_s_cache_on": rate("ldap_srp_cache_on"),
        "ldap_authorizations_per_s_cache_off": rate("ldap_authorize_cache_off"),
        "ldap_authorizations_per_s_cache_on": rate("ldap_authorize_cache_on"),
    }
    registrar = summary.get("registrar", {})
    headline = registrar.get("radius-cache-off") or next(iter(registrar.values()), None)
    if headline:
        out["resolution_p99_ms_idle"] = headline["idle"]["p99_ms"]
        out["resolution_median_ms_idle"] = headline["idle"]["median_ms"]
        out["resolution_p99_ms_under_auth"] = headline["under_auth"]["p99_ms"]
        out["resolution_median_ms_under_auth"] = headline["under_auth"]["median_ms"]
    for name, run in registrar.items():
        tag = name.replace("-", "_")
        for phase in ("idle", "under_auth"):
            out[f"resolution_p99_ms_{phase}_{tag}"] = run[phase]["p99_ms"]
            out[f"resolution_median_ms_{phase}_{tag}"] = run[phase]["median_ms"]
        out[f"auth_load_per_s_{tag}"] = run["under_auth"].get("auth_operations_per_s")
        out[f"backend_requests_per_s_{tag}"] = run["under_auth"].get("backend_requests_per_s")
    out["clients"] = clients
    out["registrar"] = registrar
    out["setup"] = {"users": USERS, "load_connections": LOAD_CONNECTIONS,
                    "pes_per_connection": PES_PER_CONNECTION, "registrar_cpu": SERVER_CPU,
                    "other_cpu": OTHER_CPU}
    return out


if __name__ == "__main__":
    sys.exit(main())
