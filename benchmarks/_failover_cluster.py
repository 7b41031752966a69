"""Real processes on loopback for benchmarks/failover.py and bench_storm.py:
three (or more) registrars run by ``twistd rserpool-registrar`` from
generated ini files, and PE host processes (``_failover_pe_host.py``).

Everything lives in one run directory: the development PKI
(``rserpool.security.devpki.ensure_cluster_pki``), the rules file, one ini
per registrar, and each process's log.  Ports are free ephemeral ports
picked at the start and kept across restarts (the PEs' and peers' lists
name them).  Faults are signals: SIGKILL, SIGSTOP/SIGCONT, SIGTERM (a
clean stop), and a restart is a new process with the same ini (a new
random server ID: ``server_id = auto``).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer, protocol

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

__all__ = ["Timers", "Cluster", "Proc", "free_ports"]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (bound, then released)."""
    sockets, ports = [], []
    try:
        while len(ports) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


@dataclass(frozen=True)
class Timers:
    """Short timers, so that a fault heals in seconds (all configurable)."""

    heartbeat_cycle: float = 0.5        # ENRP PEER-HEARTBEAT-CYCLE
    max_time_last_heard: float = 2.0    # ENRP MAX-TIME-LAST-HEARD
    max_time_no_response: float = 1.0  # ENRP MAX-TIME-NO-RESPONSE
    takeover_ack_timeout: float = 1.0
    mentor_discovery_timeout: float = 2.0
    channel_heartbeat: float = 0.5      # TCP-mapping HEARTBEAT (registrar and PE sides)
    channel_dead_after: float = 2.0     # a channel silent this long is closed
    keepalive_interval: float = 2.0     # ASAP ENDPOINT_KEEP_ALIVE
    keepalive_timeout: float = 2.0
    registration_life: int = 8          # PEs' registration life (s); also the adopted PEs' bound
    hunt_attempt_timeout: float = 2.0

    @property
    def peer_dead_after(self) -> float:
        """Longest silence before a peer is declared dead (its last PRESENCE
        can be 1.5 cycles old)."""
        return 1.5 * self.heartbeat_cycle + self.max_time_last_heard + self.max_time_no_response


class Proc(protocol.ProcessProtocol):
    """A child process: stdout JSON lines to ``on_event``, everything else
    to its log file; ``ended`` fires when it exits."""

    def __init__(self, name: str, log_path: Path, on_event: Callable[["Proc", dict], None] | None = None,
                 json_lines: bool = False) -> None:
        self.name = name
        self.log = open(log_path, "ab")
        self.on_event = on_event
        self.json_lines = json_lines
        self.ended: defer.Deferred = defer.Deferred()
        self.buffer = b""
        self.pid: int | None = None
        self.alive = False
        self.stopped = False

    def connectionMade(self) -> None:  # noqa: N802 (Twisted)
        self.pid = self.transport.pid
        self.alive = True

    def outReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted)
        if not self.json_lines:
            self.log.write(data)
            return
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"{"):
                try:
                    event = json.loads(line)
                except ValueError:
                    self.log.write(line + b"\n")
                    continue
                if self.on_event is not None:
                    self.on_event(self, event)
            else:
                self.log.write(line + b"\n")

    def errReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted)
        self.log.write(data)

    def processEnded(self, reason: Any) -> None:  # noqa: N802 (Twisted)
        self.alive = False
        self.log.flush()
        self.log.close()
        if not self.ended.called:
            self.ended.callback(reason.value)

    def signal(self, name: str) -> None:
        if self.alive and self.pid is not None:
            os.kill(self.pid, getattr(signal, "SIG" + name))
            if name == "STOP":
                self.stopped = True
            elif name == "CONT":
                self.stopped = False


@dataclass
class RegistrarSpec:
    name: str
    asap_port: int
    enrp_port: int
    ini: Path
    proc: Proc | None = None
    starts: int = 0

    @property
    def entry(self) -> str:
        """Its static hunt entry: ``host:port tls-name``."""
        return f"127.0.0.1:{self.asap_port} {self.name}"


@dataclass
class PeHostSpec:
    index: int
    count: int
    identity: str
    proc: Proc | None = None
    starts: int = 0
    pes: dict = field(default_factory=dict)  # pe_id -> listening port


class Cluster:
    """The processes of one campaign or benchmark run."""

    def __init__(self, reactor: Any, directory: Path, *, registrars: int = 3, timers: Timers = Timers(),
                 pe_hosts: int = 0, pe_identities: int | None = None, pool: str = "echo",
                 max_resolution_items: int = 4096, on_pe_event: Callable[[PeHostSpec, dict], None] | None = None,
                 extra_ini: str = "", pool_patterns: str | None = None) -> None:
        from rserpool.security.devpki import ensure_cluster_pki

        self.reactor = reactor
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.timers = timers
        self.pool = pool
        self.on_pe_event = on_pe_event
        names = [f"registrar-{chr(ord('a') + i)}.rserpool.test" for i in range(registrars)]
        identities = [f"pe{i + 1}" for i in range(pe_identities if pe_identities is not None else max(pe_hosts, 1))]
        self.pki = self.dir / "pki"
        ensure_cluster_pki(self.pki, names, pe_names=identities)
        self.ca = self.pki / "ca.pem"
        self.cookie_key = secrets.token_hex(32)
        ports = free_ports(2 * registrars)
        self.registrars = [RegistrarSpec(name, ports[2 * i], ports[2 * i + 1], self.dir / f"{name.split('.')[0]}.ini")
                           for i, name in enumerate(names)]
        rules = [f"{name}  peer  *" for name in names]
        rules += [f"{identity}  register,deregister  {pool_patterns or pool}" for identity in identities]
        rules.append("*  resolve  *")
        (self.dir / "authz.rules").write_text("\n".join(rules) + "\n")
        for spec in self.registrars:
            spec.ini.write_text(self._ini(spec, max_resolution_items, extra_ini))
        self.pe_hosts = [PeHostSpec(i, 0, identities[i % len(identities)]) for i in range(pe_hosts)]

    # -- configuration ------------------------------------------------------------------

    def _ini(self, spec: RegistrarSpec, max_items: int, extra: str) -> str:
        t = self.timers
        peers = "\n".join(f"    127.0.0.1:{o.enrp_port} {o.name}" for o in self.registrars if o is not spec)
        short = spec.name.split(".")[0]
        return f"""# generated by benchmarks/_failover_cluster.py
[registrar]
server_id = auto
asap_listen = tcp:port={spec.asap_port}:interface=127.0.0.1
state_dir = state-{short}

[tls]
enabled = yes
certificate = pki/{spec.name}.pem
private_key = pki/{spec.name}.key
ca_certificates = pki/ca.pem
crls = pki/crl.pem
require_client_certificate = no
server_name = {spec.name}

[asap]
keepalive_interval = {t.keepalive_interval}
keepalive_timeout = {t.keepalive_timeout}
max_resolution_items = {max_items}
heartbeat_interval = {t.channel_heartbeat}
heartbeat_timeout = {t.channel_dead_after}

[announce]
targets =

[security]
authenticators = certificate
authorizer = file
rules = authz.rules
registration_rate = 100000
registration_rate_per_address = 100000
resolution_rate = 100000

[limits]
max_pes_per_identity = 100000
max_connections_per_address = 100000

[enrp]
enabled = yes
listen = tcp:port={spec.enrp_port}:interface=127.0.0.1
peers =
{peers}
heartbeat_cycle = {t.heartbeat_cycle}
max_time_last_heard = {t.max_time_last_heard}
max_time_no_response = {t.max_time_no_response}
mentor_discovery_timeout = {t.mentor_discovery_timeout}
takeover_ack_timeout = {t.takeover_ack_timeout}
max_adopted_life = {t.registration_life}
{extra}"""

    # -- registrars ---------------------------------------------------------------------

    def start_registrar(self, index: int) -> Proc:
        spec = self.registrars[index]
        spec.starts += 1
        short = spec.name.split(".")[0]
        proc = Proc(short, self.dir / f"{short}.log")
        twistd = str(Path(sys.executable).parent / "twistd")
        self.reactor.spawnProcess(proc, twistd, [twistd, "--nodaemon", "--pidfile=", "rserpool-registrar",
                                                 "--config", str(spec.ini)],
                                  env=dict(os.environ), path=str(self.dir))
        spec.proc = proc
        return proc

    # -- PE hosts -------------------------------------------------------------------------

    def start_pe_host(self, index: int, count: int | None = None, *, pool: str | None = None,
                      first: int | None = None, stagger: float | None = None, t5: float | None = None) -> Proc:
        spec = self.pe_hosts[index]
        if count is not None:
            spec.count = count
        spec.starts += 1
        spec.pes = {}
        name = f"pes{index}"
        proc = Proc(name, self.dir / f"{name}.log", lambda p, event: self._pe_event(spec, event), json_lines=True)
        args = [sys.executable, str(HERE / "_failover_pe_host.py"), "--count", str(spec.count),
                "--rotate", str(index), "--pool", pool or self.pool, "--ca", str(self.ca),
                "--cert", str(self.pki / f"{spec.identity}.pem"), "--key", str(self.pki / f"{spec.identity}.key"),
                "--server-cert", str(self.pki / "registrar.pem"), "--server-key", str(self.pki / "registrar.key"),
                "--cookie-key", self.cookie_key, "--life", str(self.timers.registration_life),
                "--heartbeat", str(self.timers.channel_heartbeat),
                "--dead-after", str(self.timers.channel_dead_after),
                "--attempt-timeout", str(self.timers.hunt_attempt_timeout),
                "--log", str(self.dir / f"{name}.twisted.log")]
        if first is not None:
            args += ["--first", str(first)]
        if stagger is not None:
            args += ["--stagger", str(stagger)]
        if t5 is not None:
            args += ["--t5", str(t5)]
        for registrar in self.registrars:
            args += ["--registrar", registrar.entry]
        self.reactor.spawnProcess(proc, sys.executable, args, env=dict(os.environ), path=str(ROOT))
        spec.proc = proc
        return proc

    def _pe_event(self, spec: PeHostSpec, event: dict) -> None:
        if event.get("ev") == "listen":
            spec.pes[event["pe"]] = event["port"]
        if self.on_pe_event is not None:
            self.on_pe_event(spec, event)

    def host_of(self, pe_id: int) -> PeHostSpec | None:
        for spec in self.pe_hosts:
            if spec.proc is not None and spec.proc.alive and pe_id in spec.pes:
                return spec
        return None

    # -- all ------------------------------------------------------------------------------

    def procs(self) -> list[Proc]:
        return [s.proc for s in list(self.registrars) + list(self.pe_hosts) if s.proc is not None and s.proc.alive]

    @defer.inlineCallbacks
    def stop_all(self, grace: float = 5.0):
        """SIGCONT the stopped, SIGTERM all, SIGKILL what is left after ``grace`` s."""
        procs = self.procs()
        for proc in procs:
            if proc.stopped:
                proc.signal("CONT")
            proc.signal("TERM")
        waiting = defer.DeferredList([p.ended for p in procs])
        timer = self.reactor.callLater(grace, lambda: [p.signal("KILL") for p in procs if p.alive])
        yield waiting
        if timer.active():
            timer.cancel()
