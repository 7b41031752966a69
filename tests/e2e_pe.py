"""One echo pool element as a process of its own, for tests/test_e2e.py.

    python tests/e2e_pe.py --registrar 127.0.0.1:PORT1 --registrar 127.0.0.1:PORT2 \\
        --ca ca.pem --cert pe1.pem --key pe1.key \\
        --server-cert listener.pem --server-key listener.key --cookie-key-file cookie.key

It listens on 127.0.0.1 (TLS, the listener certificate), runs the session
layer's echo application (``rserpool.demo.echo_session``: cookies sealed
with the key read from ``--cookie-key-file``) and registers in the pool
through the PE library, hunting the registrars in the order given (one
attempt at a time by default, so the first one reachable becomes home).

Everything the test needs to know is printed on stdout, one JSON object a
line, flushed at once:

- ``{"event": "listening", "port": P}``
- ``{"event": "registered", "pe_id": N, "port": P, "registrar_port": R,
  "server_id": S or null, "reregistration": bool, "failover": bool}`` at every
  (re-)registration, so also after a failover to another registrar (``R``:
  the home registrar's port; ``S`` is known only once it sent a keep-alive);
- ``{"event": "home_changed", "server_id": S, "previous": S0}``;
- ``{"event": "cookie_accepted", "count": N}`` when a failed-over PU echoed a
  cookie of the pool (``N``: the message count sealed in it);
- ``{"event": "session_started"}`` for every new PU session.

It runs until killed (SIGTERM deregisters first; SIGKILL does not).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registrar", action="append", required=True, metavar="HOST:PORT",
                        help="a registrar (static hunt entry, repeatable, in order)")
    parser.add_argument("--ca", required=True, help="trust root (registrars and PUs)")
    parser.add_argument("--cert", required=True, help="client certificate towards the registrar")
    parser.add_argument("--key", required=True, help="its private key")
    parser.add_argument("--server-cert", required=True, help="listener certificate (IP SAN 127.0.0.1)")
    parser.add_argument("--server-key", required=True, help="its private key")
    parser.add_argument("--cookie-key-file", required=True, help="cookie sealing key (shared by the pool)")
    parser.add_argument("--pool", default="echo", help="pool handle (default: echo)")
    parser.add_argument("--registration-life", type=int, default=60, help="seconds (default 60)")
    parser.add_argument("--max-parallel", type=int, default=1,
                        help="registrars tried at once in a hunt (default 1: strictly in order)")
    parser.add_argument("--attempt-timeout", type=float, default=2.0,
                        help="seconds for one registrar connection attempt (default 2)")
    parser.add_argument("--log", action="store_true", help="twisted.logger output on stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from rserpool.asap.pe import HomeChanged, Registered
    from rserpool.demo.echo_pe import echo_pool_element
    from rserpool.demo.echo_session import EchoSessionApplication
    from rserpool.service.pe_session import SessionServer

    if args.log:
        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    cookie_key = Path(args.cookie_key_file).read_bytes().strip()
    pool = args.pool.encode()

    class ReportingEchoApplication(EchoSessionApplication):
        def session_started(self, session: Any) -> None:
            super().session_started(session)
            emit("session_started")

        def cookie_echoed(self, session: Any, cookie: bytes) -> None:
            accepted = self.cookies_accepted
            super().cookie_echoed(session, cookie)
            if self.cookies_accepted > accepted:
                emit("cookie_accepted", count=session.state)
            else:
                emit("cookie_refused")

    app = ReportingEchoApplication(cookie_key, pool_handle=pool, clock=reactor)
    server = SessionServer(app, reactor=reactor)
    element = echo_pool_element(
        reactor, registrars=args.registrar, ca=args.ca, cert=args.cert, key=args.key,
        server_cert=args.server_cert, server_key=args.server_key, pool_handle=pool,
        protocol_factory=server, registration_life=args.registration_life,
        hunt_options={"max_parallel": args.max_parallel, "attempt_timeout": args.attempt_timeout,
                      "t5_initial": 2.0})

    def observe(event: Any) -> None:
        if type(event) is Registered:
            address = element.address
            home = element.pe.home_channel if element.pe is not None else None
            peer = getattr(home, "peer", None)
            emit("registered", pe_id=event.pe_id, port=address[1] if address else None,
                 registrar_port=getattr(peer, "port", None), server_id=event.server_id,
                 reregistration=event.reregistration, failover=event.failover)
        elif type(event) is HomeChanged:
            emit("home_changed", server_id=event.server_id, previous=event.previous)

    def started(_: Any) -> None:
        emit("listening", port=element.address[1])
        assert element.pe is not None
        element.pe.add_observer(observe)

    def failed(failure: Any) -> None:
        print(f"e2e_pe: cannot start: {failure.getErrorMessage()}", file=sys.stderr, flush=True)
        reactor.stop()

    reactor.callWhenRunning(lambda: element.start().addCallbacks(started, failed))
    reactor.addSystemEventTrigger("before", "shutdown", element.stopService)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
