"""One process hosting many echo pool elements, for benchmarks/failover.py and
benchmarks/bench_storm.py (not a product program: a load generator).

Every PE is the demo echo PE with the PU-PE session layer
(``rserpool.demo.echo_session``: echoes, sealed cookies): its own TLS
listener on 127.0.0.1 and its own registration through the PE library,
hunting among the registrars given (the list is rotated per PE, so that the
PEs spread over the registrars, and hunted one at a time).  All PEs of the
process share one client certificate (one identity) and one server
certificate for their listeners.

Events go to stdout as JSON lines, one per event, for the harness:
``{"ev": "listen", "pe": id, "port": p}``, ``{"ev": "reg", "pe": id,
"home": server-id, "fo": failover, "t": time}``, ``{"ev": "cookie", "pe": id,
"ok": bool}``, ``{"ev": "ready"}`` once every PE listens.

    python benchmarks/_failover_pe_host.py --registrar '127.0.0.1:3871 registrar-a.rserpool.test' ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from twisted.internet import defer, reactor  # noqa: E402
from twisted.logger import LogLevel, LogLevelFilterPredicate, FilteringLogObserver  # noqa: E402
from twisted.logger import globalLogBeginner, textFileLogObserver  # noqa: E402

from rserpool.asap.pe import Registered  # noqa: E402
from rserpool.demo.echo_pe import EchoPoolElement  # noqa: E402
from rserpool.demo.echo_session import EchoSessionApplication  # noqa: E402
from rserpool.security import tls  # noqa: E402
from rserpool.service.candidates import RegistrarCandidates  # noqa: E402
from rserpool.service.channel import ChannelSettings  # noqa: E402
from rserpool.service.pe_session import SessionServer  # noqa: E402


def emit(**event) -> None:
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registrar", action="append", required=True,
                        help="'host:port tls-name' of a registrar (repeat)")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--rotate", type=int, default=0, help="rotation of the registrar list for PE 0")
    parser.add_argument("--first", type=int, default=None,
                        help="every PE hunts this registrar (index) first, then the others, rotated")
    parser.add_argument("--pool", default="echo")
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--server-cert", required=True)
    parser.add_argument("--server-key", required=True)
    parser.add_argument("--cookie-key", required=True, help="hex")
    parser.add_argument("--life", type=int, default=10, help="registration life (s)")
    parser.add_argument("--heartbeat", type=float, default=0.5, help="channel HEARTBEAT interval (s)")
    parser.add_argument("--dead-after", type=float, default=2.0, help="channel dead-peer timeout (s)")
    parser.add_argument("--attempt-timeout", type=float, default=2.0, help="server hunt attempt timeout (s)")
    parser.add_argument("--stagger", type=float, default=0.01, help="seconds between PE starts")
    parser.add_argument("--t5", type=float, default=1.0, help="T5-Serverhunt: first round's length (s)")
    parser.add_argument("--log", help="Twisted log file (info level)")
    args = parser.parse_args(argv)

    if args.log:
        observer = FilteringLogObserver(textFileLogObserver(open(args.log, "a")),
                                        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)])
        globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)

    client_options: dict[str, tls.ClientTLSOptions] = {}

    def tls_options_factory(name: str) -> tls.ClientTLSOptions:
        options = client_options.get(name)
        if options is None:
            options = client_options[name] = tls.client_options(name, [args.ca], client_cert=(args.cert, args.key))
        return options

    server_tls = tls.server_options(args.server_cert, args.server_key, [args.ca], require_client_cert=False)
    channel_settings = ChannelSettings(heartbeat_interval=args.heartbeat, dead_after=args.dead_after)
    cookie_key = bytes.fromhex(args.cookie_key)
    pool = args.pool.encode()
    registrars = list(args.registrar)
    pes: list[EchoPoolElement] = []

    @defer.inlineCallbacks
    def start_one(index: int):
        if args.first is None:
            shift = (args.rotate + index) % len(registrars)
            order = registrars[shift:] + registrars[:shift]
        else:
            others = registrars[:args.first] + registrars[args.first + 1:]
            shift = (args.rotate + index) % max(1, len(others))
            order = [registrars[args.first]] + others[shift:] + others[:shift]
        app = EchoSessionApplication(cookie_key, pool_handle=pool, clock=reactor)
        sessions = SessionServer(app, reactor=reactor, channel_settings=channel_settings)
        pe = EchoPoolElement(
            reactor, server_tls_options=server_tls, pool_handle=pool, protocol_factory=sessions,
            registration_life=args.life, candidates=RegistrarCandidates(static=order),
            tls_options_factory=tls_options_factory, channel_settings=channel_settings,
            hunt_options={"max_parallel": 1, "t5_initial": args.t5, "t5_max": max(4.0, args.t5),
                          "attempt_timeout": args.attempt_timeout},
            hunt_retry=(0.2, 2.0))
        pes.append(pe)
        yield pe.start()
        pe_id = pe.pe.pe_id
        echoed = app.cookie_echoed

        def cookie_echoed(session, cookie, pe_id=pe_id, echoed=echoed):
            refused = app.cookies_refused
            echoed(session, cookie)
            emit(ev="cookie", pe=pe_id, ok=app.cookies_refused == refused)

        app.cookie_echoed = cookie_echoed

        def observe(event, pe_id=pe_id):
            if type(event) is Registered:
                emit(ev="reg", pe=pe_id, home=event.server_id, fo=event.failover, t=reactor.seconds())

        pe.pe.add_observer(observe)
        emit(ev="listen", pe=pe_id, port=pe.address[1])

    @defer.inlineCallbacks
    def start_all():
        for index in range(args.count):
            yield start_one(index)
            if args.stagger:
                d = defer.Deferred()
                reactor.callLater(args.stagger, d.callback, None)
                yield d
        emit(ev="ready")

    def stop_all():
        return defer.DeferredList([defer.maybeDeferred(pe.stopService) for pe in pes])

    reactor.callWhenRunning(lambda: start_all().addErrback(lambda f: (sys.stderr.write(f.getTraceback()),
                                                                      reactor.stop())))
    reactor.addSystemEventTrigger("before", "shutdown", stop_all)
    reactor.run()


if __name__ == "__main__":
    main()
