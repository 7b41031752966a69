"""The Python session generator of ``bench_sessions.py --py-generator``.

A child process (``_session_pygen.py SPEC``, pinned by the caller): slots of
Twisted TLS clients whose ``Channel`` runs the PE library's
``PeAuthenticator`` (SRP-6a or CHAP, pipelined like ``PoolElementService``
unless the spec says otherwise), then one ASAP_REGISTRATION, then close.  It
prints what ``sessgen.c`` prints (READY, the START/END window lines with the
server's CPU time and /proc/stat, RESULT with the counts and its own CPU), so
``bench_sessions.run_generator`` reads both alike.  It saturates its own core
before the registrar does: a check of the PE library end to end, not the
generator for the registrar's CPU ratios (``sessgen.c`` is).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_sessions import SERVER_NAME, identity, registration, secret  # noqa: E402


# -- CPU accounting at the window boundaries (as sessgen.c) ---------------------------------------------


def server_cpu_ns(pid: int) -> int:
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as handle:
                total += int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def cpu_jiffies() -> tuple[list[int], list[int]]:
    busy, total = [-1, -1], [-1, -1]
    with open("/proc/stat") as handle:
        for line in handle:
            name, *fields = line.split()
            if name in ("cpu0", "cpu1"):
                values = [int(v) for v in fields[:8]]
                cpu = int(name[3:])
                total[cpu] = sum(values)
                busy[cpu] = total[cpu] - values[3] - values[4]
    return busy, total


def boundary_line(word: str, pid: int) -> str:
    busy, total = cpu_jiffies()
    return f"{word} window {server_cpu_ns(pid)} {busy[0]} {total[0]} {busy[1]} {total[1]}"


# -- the generator ---------------------------------------------------------------------------


def generate(spec_path: str) -> int:
    """Slots of TLS + SRP/CHAP (PeAuthenticator) + registration + close, per the JSON spec."""
    from OpenSSL._util import lib as ssl_lib
    from twisted.internet import endpoints, reactor
    from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
    from twisted.internet.protocol import Factory
    from zope.interface import implementer

    from rserpool.security import exchange as ex
    from rserpool.security import tls
    from rserpool.service.auth import PeAuthenticator
    from rserpool.service.channel import Channel, ChannelSettings
    from rserpool.wire import AsapRegistrationResponse

    spec = json.loads(Path(spec_path).read_text())
    mechanism, identities, resume = spec["mechanism"], spec["identities"], spec["resume"]
    wanted = ex.MECH_SRP_SHA256_2048 if mechanism == "srp" else ex.MECH_CHAP_MD5
    base = tls.client_options(SERVER_NAME, [spec["ca"]])
    settings = ChannelSettings(heartbeat_interval=1000, dead_after=2000)
    counts = {"completed": 0, "completed_total": 0, "resumed": 0}
    errors = {"connect": 0, "auth": 0, "rejected": 0, "unexpected": 0, "closed": 0}
    state = {"measuring": False, "stopping": False}
    messages = [registration(mechanism, i) for i in range(identities)]
    pipelined = spec.get("pipelined", True)

    @implementer(IOpenSSLClientConnectionCreator)
    class Creator:
        def __init__(self) -> None:
            self.session: Any = None

        def clientConnectionForTLS(self, protocol: Any) -> Any:
            connection = base.clientConnectionForTLS(protocol)
            if resume and self.session is not None:
                connection.set_session(self.session)
            return connection

    class Slot:
        def __init__(self, index: int) -> None:
            self.index = index % identities
            self.creator = Creator()
            self.endpoint = endpoints.wrapClientTLS(
                self.creator, endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", spec["port"]))
            self.auth = PeAuthenticator(reactor, identity(mechanism, self.index),
                                        secret(mechanism, self.index), preferences=(wanted,), timeout=30.0,
                                        pipelined=pipelined)
            self.done = False

        def start(self) -> None:
            if state["stopping"]:
                return
            self.done = False
            factory = Factory.forProtocol(lambda: Channel(self, reactor, settings, tls=True, initiator=True))
            self.endpoint.connect(factory).addErrback(self.connect_failed)

        def connect_failed(self, failure: Any) -> None:
            errors["connect"] += 1
            reactor.callLater(0.01, self.start)

        # ChannelHandler
        def channel_ready(self, channel: Any) -> None:
            registration = messages[self.index]
            if pipelined:  # as PoolElementService does: the registration right behind the proof
                self.auth.authenticate(channel, then=lambda: channel.send(registration)).addErrback(
                    self.auth_failed)
            else:
                self.auth.authenticate(channel).addCallbacks(lambda _: channel.send(registration),
                                                             self.auth_failed)

        def auth_failed(self, failure: Any) -> None:
            if state["stopping"]:
                return
            errors["auth"] += 1
            if errors["auth"] <= 3:
                print(f"authentication failed: {failure.getErrorMessage()}", file=sys.stderr)

        def message_received(self, channel: Any, message: Any, now: float) -> None:
            if type(message) is not AsapRegistrationResponse or self.done:
                errors["unexpected"] += 1
                channel.abort()
                return
            if message.reject:
                errors["rejected"] += 1
                channel.abort()
                return
            self.done = True
            counts["completed_total"] += 1
            connection = tls.tls_connection(channel.transport)
            if state["measuring"]:
                counts["completed"] += 1
                counts["resumed"] += 1 if ssl_lib.SSL_session_reused(connection._ssl) == 1 else 0
            if resume:
                self.creator.session = connection.get_session()
            channel.close()

        def wire_error(self, channel: Any, ppid: int, error: Any, now: float) -> None:
            errors["unexpected"] += 1
            channel.abort()

        def data_received(self, channel: Any, ppid: int, payload: bytes, now: float) -> None:
            errors["unexpected"] += 1
            channel.abort()

        def channel_closed(self, channel: Any, reason: Any) -> None:
            if not self.done:
                errors["closed"] += 1
            self.start()

    marks: dict[str, float] = {}

    def rusage() -> tuple[float, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime, usage.ru_stime

    def begin() -> None:
        marks["start"] = time.monotonic()
        marks["user0"], marks["sys0"] = rusage()
        state["measuring"] = True
        print(boundary_line("START", spec["server_pid"]), flush=True)

    def end() -> None:
        state["measuring"] = False
        state["stopping"] = True
        marks["end"] = time.monotonic()
        marks["user1"], marks["sys1"] = rusage()
        print(boundary_line("END", spec["server_pid"]), flush=True)
        result = {"window_s": marks["end"] - marks["start"], **counts,
                  "gen_cpu_user_s": marks["user1"] - marks["user0"],
                  "gen_cpu_sys_s": marks["sys1"] - marks["sys0"], "slots": spec["slots"], "errors": errors}
        print("RESULT " + json.dumps(result), flush=True)
        reactor.stop()

    print("READY", flush=True)
    for i in range(spec["slots"]):
        Slot(i).start()
    reactor.callLater(spec["warmup"], begin)
    reactor.callLater(spec["warmup"] + spec["measure"], end)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(generate(sys.argv[1]))
