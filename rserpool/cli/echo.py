"""``rserpool echo``: talk to the echo pool through the PU-PE session layer.

    rserpool echo --pool echo --registrar 127.0.0.1:3864 --ca ca.pem \\
        [--cert pu.pem --key pu.key] [--registrar-name localhost] [--pe-name NAME]

Each line read from stdin is sent as one data message to a PE of the pool
through :class:`rserpool.demo.echo_client.EchoSession`; each echo is printed
on stdout as it arrives, each failover on stderr.  Lines are delivered at
least once (see ``EchoSession``).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from rserpool.asap.session import DEFAULT_DATA_PPID

if TYPE_CHECKING:
    from rserpool.wire import PoolElement

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "echo", help="send stdin lines to the echo pool through the session layer",
        description="Send each stdin line to a PE of the pool over TLS (PU-PE session "
                    "layer, with failover) and print the echoes.")
    parser.add_argument("--pool", default="echo", help="pool handle (default: echo)")
    parser.add_argument("--registrar", action="append", required=True, metavar="HOST:PORT",
                        help="a registrar to resolve the pool at (repeatable)")
    parser.add_argument("--registrar-name", default=None,
                        help="TLS name the registrars' certificates must carry (default: the host)")
    parser.add_argument("--ca", required=True, help="PEM trust roots for registrars and PEs")
    parser.add_argument("--cert", help="PU client certificate (PEM)")
    parser.add_argument("--key", help="its private key")
    parser.add_argument("--pe-name", default=None,
                        help="DNS name every PE certificate must carry (default: the PE's IP address)")
    parser.add_argument("--ppid", type=int, default=DEFAULT_DATA_PPID, help="data PPID (default 0)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for each echo (default 30)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from twisted.internet import defer, task

    if (args.cert is None) != (args.key is None):
        print("rserpool echo: --cert and --key go together", file=sys.stderr)
        return 2
    result: list[int] = [0]

    async def main(reactor: Any) -> None:
        result[0] = await _echo_lines(reactor, args, sys.stdin.buffer, sys.stdout, sys.stderr)

    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    return result[0]


async def _echo_lines(reactor: Any, args: argparse.Namespace, stdin: Any, stdout: Any,
                      stderr: Any) -> int:
    from twisted.internet import threads

    from rserpool.demo.echo_client import EchoSession
    from rserpool.service.pu import PoolUser
    from rserpool.service.pu_session import pe_tls_options

    client_cert = (args.cert, args.key) if args.cert else None
    pu = PoolUser.connecting_to(reactor, args.registrar, [args.ca], client_cert=client_cert,
                                server_name=args.registrar_name)

    def failover(old: PoolElement, new: PoolElement, echoed: bool) -> None:
        print(f"# failover from PE {old.pe_id:08x} to PE {new.pe_id:08x}"
              f" (cookie echoed: {'yes' if echoed else 'no'})", file=stderr, flush=True)

    session = EchoSession(
        reactor, selector=pu.select, report_unreachable=pu.report_unreachable,
        tls_options_for=pe_tls_options([args.ca], client_cert=client_cert, pe_name=args.pe_name),
        pool_handle=args.pool.encode(), ppid=args.ppid, on_failover=failover)
    status = 0
    try:
        pe = await session.start()
        print(f"# connected to PE {pe.pe_id:08x} ({pe.user_transport})", file=stderr, flush=True)
        # One line at a time, read in a thread so the reactor (heartbeats,
        # failover) runs while the user types; each is sent once the
        # previous echo came back.
        while True:
            line = await threads.deferToThreadPool(reactor, reactor.getThreadPool(), stdin.readline)
            if not line:
                break
            answer = session.send(line.rstrip(b"\r\n"))
            answer.addTimeout(args.timeout, reactor)
            echo = await answer
            print(echo.decode(errors="replace"), file=stdout, flush=True)
    except Exception as exc:  # reported, not raised: this is a command
        print(f"rserpool echo: {exc or type(exc).__name__}", file=stderr, flush=True)
        status = 1
    finally:
        await session.close()
        await pu.stop()
    return status
