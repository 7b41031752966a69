"""``rserpool echo``: talk to the echo pool through the PU-PE session layer.

    rserpool echo --pool echo --registrar 127.0.0.1:3864 --ca ca.pem \\
        [--cert pu.pem --key pu.key] [--registrar-name localhost] [--pe-name NAME]

Each line read from stdin is sent as one data message to a PE of the pool
through :class:`rserpool.demo.echo_client.EchoSession`; each echo is printed
on stdout as it arrives, each failover on stderr.  Lines are delivered at
least once (see ``EchoSession``).  Exit status 0 when every line came back,
1 when the pool cannot be reached or an echo is late (one line per reason
on stderr), 2 for mistakes in the command line found before connecting.
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
                        help="seconds to wait for the session to start and for each echo "
                             "(default 30); every registrar failing ends it sooner")
    parser.add_argument("--log-level", metavar="LEVEL", default=None,
                        help="log the library's lines at LEVEL (debug, info, warn, error) on "
                             "standard error (default: no log)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from twisted.internet import defer, task

    from rserpool.cli.network import check_registrars, check_tls_files, report

    problems = [] if args.timeout > 0 else ["--timeout must be positive"]
    problems += check_registrars(args.registrar)
    problems += check_tls_files([args.ca], args.cert, args.key)
    if problems:
        report("rserpool echo", problems, sys.stderr)
        return 2
    status: list[int] = [1]

    def main(reactor: Any) -> Any:
        d = defer.ensureDeferred(_echo_lines(reactor, args, sys.stdin.buffer, sys.stdout, sys.stderr))
        return d.addCallback(lambda code: status.__setitem__(0, code))

    try:
        task.react(main)
    except SystemExit:  # task.react always exits; the status is ours
        pass
    return status[0]


async def _echo_lines(reactor: Any, args: argparse.Namespace, stdin: Any, stdout: Any,
                      stderr: Any) -> int:
    """0 when every line was echoed; 1 (one line per reason on ``stderr``)
    when the pool cannot be reached or an echo does not come back within
    ``--timeout``."""
    from twisted.internet import defer, threads

    from rserpool.asap.pu import UnknownPool
    from rserpool.cli.network import Attempt, ToolFailure, report
    from rserpool.demo.echo_client import EchoSession
    from rserpool.logs import start_tool_logging
    from rserpool.security.tlserrors import connection_error_text
    from rserpool.service.pu import PoolUser
    from rserpool.service.pu_session import pe_tls_options
    from rserpool.wire.params import pool_handle_text

    start_tool_logging(args.log_level, stderr)
    client_cert = (args.cert, args.key) if args.cert else None
    handle = args.pool.encode()
    pu = PoolUser.connecting_to(reactor, args.registrar, [args.ca], client_cert=client_cert,
                                server_name=args.registrar_name, t5_initial=2 * args.timeout,
                                attempt_timeout=min(7.5, args.timeout))
    connecting = Attempt(reactor, args.timeout, pu, "session with a PE of the pool",
                         last_error=lambda: session.client.core.last_error)

    def select(pool_handle: bytes) -> Any:
        d = pu.select(pool_handle)

        def unknown(failure: Any) -> Any:
            if failure.check(UnknownPool):  # final: no need to try again
                connecting.fail([f"unknown pool {pool_handle_text(pool_handle)}"])
            return failure

        return d.addErrback(unknown)

    def failover(old: PoolElement, new: PoolElement, echoed: bool) -> None:
        print(f"# failover from PE {old.pe_id:08x} to PE {new.pe_id:08x}"
              f" (cookie echoed: {'yes' if echoed else 'no'})", file=stderr, flush=True)

    session = EchoSession(
        reactor, selector=select, report_unreachable=pu.report_unreachable,
        tls_options_for=pe_tls_options([args.ca], client_cert=client_cert, pe_name=args.pe_name),
        pool_handle=handle, ppid=args.ppid, on_failover=failover)
    status = 0
    try:
        pe = await connecting.run(session.start)
        print(f"# connected to PE {pe.pe_id:08x} ({pe.user_transport})", file=stderr, flush=True)
        # One line at a time, read in a thread so the reactor (heartbeats,
        # failover) runs while the user types; each is sent once the
        # previous echo came back.
        while True:
            line = await threads.deferToThreadPool(reactor, reactor.getThreadPool(), stdin.readline)
            if not line:
                break
            payload = line.rstrip(b"\r\n")
            echo = await Attempt(reactor, args.timeout, pu, "echo").run(lambda: session.send(payload))
            print(echo.decode(errors="replace"), file=stdout, flush=True)
    except ToolFailure as exc:
        report("rserpool echo", exc.lines, stderr)
        status = 1
    except Exception as exc:  # reported, not raised: this is a command
        report("rserpool echo", [connection_error_text(exc)], stderr)
        status = 1
    finally:
        await defer.DeferredList([defer.maybeDeferred(session.close), defer.maybeDeferred(pu.stop)],
                                 consumeErrors=True)
    return status
