"""The registrar's own CPU work per new certificate session, in one process.

``bench_sessions.py`` measures whole sessions over the network, where TLS,
the reactor and the kernel dominate and the machine's load moves every
figure.  This script measures only what the registrar adds to a session,
with ``time.thread_time`` around its accepting channel's entry points
(connection set-up, TLS handshake completion with the certificate identity
and the gate, every read with the registration and its answer, the close
with the PE's removal) and the clientAuth check it adds to OpenSSL's
certificate verification, over many sessions of real TLS 1.3 with a client
certificate on an in-memory network (``tests/memnet.py``: no sockets, no
wall clock).  The TLS handshake itself (OpenSSL inside Twisted's TLS
protocol) and the client's work are not counted.

    .venv/bin/python benchmarks/bench_session_work.py [--sessions N] [--repetitions N] [--json]
    .venv/bin/python benchmarks/bench_session_work.py --bytecodes [--sessions 200]

The figure, ``registrar_us_per_session``, is the median over repetitions of
the registrar's own CPU per session; the stages split it.  On a loaded
machine CPU times move by 10-20 % between runs; ``--bytecodes`` instead
counts the Python bytecodes the registrar executes in the same entry points
(``sys.settrace`` opcode events: the times are then meaningless, the count
is exact and repeatable), an A/B measure of per-session trims that does not
see work done in C (OpenSSL, dict and struct operations).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

STAGES = ("verify", "connection", "handshake", "reads", "close")
#: label -> [CPU seconds, calls], filled by the wrappers ``_timed`` installs once.
CELLS: dict[str, list[float]] = {}
#: label -> Python bytecodes executed (``--bytecodes``), filled by ``_count``'s wrappers.
BYTECODES: dict[str, int] = {}


def _count(counts: dict[str, int]) -> None:
    """Trace the same entry points as ``_timed`` (installed first, so inside
    its wrappers) and count the bytecodes executed under each, by stage."""
    if counts:
        return  # installed already
    from rserpool.security import tls as tls_module
    from rserpool.service import channel as channel_module
    from rserpool.service import registrar as registrar_module

    counts.update(dict.fromkeys(STAGES, 0))
    active: list[str] = []  # the stage counted now (an entry point called inside another counts in it)

    def opcodes(frame: Any, event: str, arg: Any) -> Any:
        if event == "opcode":
            counts[active[0]] += 1
        return opcodes

    def trace(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        return opcodes

    def counted(original: Any, label: str, accepting_only: bool) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if active or (accepting_only and args[0].initiator):
                return original(*args, **kwargs)
            active.append(label)
            sys.settrace(trace)
            try:
                return original(*args, **kwargs)
            finally:
                sys.settrace(None)
                active.clear()

        return wrapper

    tls_module._verify_client_certificate = counted(tls_module._verify_client_certificate, "verify", False)
    factory = registrar_module._RegistrarFactory
    factory.buildProtocol = counted(factory.buildProtocol, "connection", False)
    for attribute, label in (("connectionMade", "connection"), ("handshakeCompleted", "handshake"),
                             ("dataReceived", "reads"), ("connectionLost", "close")):
        setattr(channel_module.Channel, attribute,
                counted(getattr(channel_module.Channel, attribute), label, True))


def _timed(cells: dict[str, list[float]]) -> None:
    """Wrap the accepting Channel's entry points (the registrar's handlers
    run inside them) and the factory's buildProtocol."""
    if cells:
        return  # installed already
    from rserpool.service import channel as channel_module
    from rserpool.service import registrar as registrar_module

    clock = time.thread_time

    def wrap(owner: Any, attribute: str, label: str, accepting_only: bool) -> None:
        original = getattr(owner, attribute)
        cell = cells.setdefault(label, [0.0, 0])

        def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
            if accepting_only and self.initiator:
                return original(self, *args, **kwargs)
            began = clock()
            try:
                return original(self, *args, **kwargs)
            finally:
                cell[0] += clock() - began
                cell[1] += 1

        setattr(owner, attribute, timed)

    from rserpool.security import tls as tls_module

    verify = tls_module._verify_client_certificate  # OpenSSL's verify callback (clientAuth check)
    verify_cell = cells.setdefault("verify", [0.0, 0])

    def timed_verify(*args: Any) -> Any:
        began = clock()
        try:
            return verify(*args)
        finally:
            verify_cell[0] += clock() - began
            verify_cell[1] += 1

    tls_module._verify_client_certificate = timed_verify  # before any server context is made
    wrap(registrar_module._RegistrarFactory, "buildProtocol", "connection", False)
    wrap(channel_module.Channel, "connectionMade", "connection", True)
    wrap(channel_module.Channel, "handshakeCompleted", "handshake", True)
    wrap(channel_module.Channel, "dataReceived", "reads", True)
    wrap(channel_module.Channel, "connectionLost", "close", True)


def run(sessions: int, directory: Path, bytecodes: bool = False) -> dict[str, Any]:
    from twisted.internet import endpoints

    from rserpool.asap.registrar import RegistrarSettings
    from rserpool.gate import GatePolicy
    from rserpool.security import tls
    from rserpool.security.ratelimit import RateLimit
    from rserpool.service.channel import Channel, ChannelSettings, tls_client_endpoint
    from rserpool.service.registrar import RegistrarService
    from rserpool.testing import AllowAll
    from rserpool.wire import AsapRegistration, AsapRegistrationResponse, LeastUsedPolicy, PoolElement, TcpTransport
    from tests.memnet import MemoryNetwork
    from tests.tlshelpers import make_test_pki

    if bytecodes:
        _count(BYTECODES)  # inside the timing wrappers
    _timed(CELLS)  # before the server's TLS context takes the verify callback
    pki = make_test_pki(directory)
    net = MemoryNetwork()
    net.advance(time.time())
    unlimited = RateLimit(1e9, 2e9)
    registrar = RegistrarService(
        RegistrarSettings(server_id=0x5E55, keepalive_interval=1e6, keepalive_timeout=1e6), reactor=net,
        listen=["tcp:0:interface=127.0.0.1"],
        tls_options=tls.server_options(pki.server.cert, pki.server.key, [pki.ca.cert], require_client_cert=False),
        authorizer=AllowAll(),
        gate_policy=GatePolicy(registration_rate=unlimited, registration_rate_per_address=unlimited))
    registrar.startService()
    net.run()
    port = registrar.listening_addresses[0].port
    creator = tls.client_options("localhost", [pki.ca.cert], client_cert=pki.pe1.pair)

    class Client:
        def __init__(self, pe_id: int) -> None:
            self.pe_id = pe_id
            self.answered = False

        def channel_ready(self, channel: Any) -> None:
            pe = PoolElement(self.pe_id, 0, 60, TcpTransport(7, IPv4Address("127.0.0.1")), LeastUsedPolicy(1))
            channel.send(AsapRegistration(b"bench", pe))

        def message_received(self, channel: Any, message: Any, now: float) -> None:
            if type(message) is AsapRegistrationResponse and not message.reject:
                self.answered = True
            channel.close()

        def wire_error(self, channel: Any, ppid: int, error: Any, now: float) -> None:
            channel.abort()

        def data_received(self, channel: Any, ppid: int, payload: bytes, now: float) -> None:
            channel.abort()

        def channel_closed(self, channel: Any, reason: Any) -> None:
            pass

    def session(pe_id: int) -> bool:
        client = Client(pe_id)
        tcp = endpoints.TCP4ClientEndpoint(net, "127.0.0.1", port)
        endpoints.connectProtocol(tls_client_endpoint(creator, tcp, net),
                                  Channel(client, net, ChannelSettings(), tls=True, initiator=True))
        net.run()
        return client.answered

    for n in range(50):  # warm-up: caches, imports, first-call costs
        session(1 + n)
    cells = CELLS
    for cell in cells.values():
        cell[0] = cell[1] = 0
    for label in BYTECODES:
        BYTECODES[label] = 0
    answered = sum(session(1000 + n) for n in range(sessions))
    registrar.stopService()
    net.run()
    us = {label: round(cells[label][0] / sessions * 1e6, 2) for label in STAGES}
    result = {"sessions": sessions, "answered": answered, "stages_us": us,
              "registrar_us_per_session": round(sum(us.values()), 2)}
    if bytecodes:
        counted = {label: round(BYTECODES[label] / sessions) for label in STAGES}
        result["stages_bytecodes"] = counted
        result["bytecodes_per_session"] = sum(counted.values())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="500 sessions, one repetition")
    parser.add_argument("--log-level", choices=("warn", "info"), default="info",
                        help="the registrar's log level: its lines are formatted into memory as twistd "
                             "writes them to its log (default info, as twistd runs it)")
    parser.add_argument("--bytecodes", action="store_true",
                        help="count the Python bytecodes the registrar executes per session (exact, slow; "
                             "one repetition of 200 sessions unless given)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sessions, reps = (500, 1) if args.quick else (args.sessions, args.repetitions)
    if args.bytecodes:
        sessions = sessions if "--sessions" in (argv if argv is not None else sys.argv) else 200
        reps = 1
    import io

    from twisted.logger import (
        FilteringLogObserver, LogLevel, LogLevelFilterPredicate, globalLogBeginner, textFileLogObserver,
    )

    sink = io.StringIO()
    level = LogLevel.levelWithName(args.log_level)
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(
        textFileLogObserver(sink), [LogLevelFilterPredicate(defaultLogLevel=level)])], redirectStandardIO=False)
    runs = []
    for rep in range(reps):
        with tempfile.TemporaryDirectory(prefix="rserpool-bench-session-work-") as tmp:
            result = run(sessions, Path(tmp), args.bytecodes)
        runs.append(result)
        if args.bytecodes:
            print(f"{result['bytecodes_per_session']} Python bytecodes of the registrar per session "
                  f"({', '.join(f'{k} {v}' for k, v in result['stages_bytecodes'].items())}); "
                  f"the times below are under tracing", flush=True)
        print(f"#{rep + 1}: {result['registrar_us_per_session']:.1f} us of registrar CPU per session "
              f"({', '.join(f'{k} {v:.1f}' for k, v in result['stages_us'].items())}); "
              f"{result['answered']}/{result['sessions']} registered", flush=True)
    summary = {
        **({"bytecodes_per_session": runs[0]["bytecodes_per_session"],
            "stages_bytecodes": runs[0]["stages_bytecodes"]} if args.bytecodes else {}),
        "registrar_us_per_session": round(statistics.median(r["registrar_us_per_session"] for r in runs), 2),
        "stages_us": {label: round(statistics.median(r["stages_us"][label] for r in runs), 2) for label in STAGES},
        "sessions": sessions, "repetitions": reps, "log_level": args.log_level, "runs": runs,
    }
    print(f"median: {summary['registrar_us_per_session']:.1f} us of registrar CPU per certificate session")
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
