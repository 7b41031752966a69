"""``rserpool resolve POOL``: resolve a pool handle at a registrar over TLS
and print its pool elements.

The registrar is authenticated first: its certificate must chain to
``--ca`` and carry ``--server-name`` (default: the host of each
``--registrar``).  A client certificate (``--cert``/``--key``) is optional.

Output: one line per PE, ``pe-id transport address[,address...] port
policy``, or with ``--json`` one JSON object.  Exit status 0 on success, 1
when the pool is unknown, the resolution is refused, or no registrar could
be reached (one line per reason on standard error: refused, certificate
verify failed, name mismatch...), 2 for mistakes in the command line
(found before connecting: a file that is missing or not PEM, a key that
does not match its certificate).  ``--timeout`` bounds the whole command;
it ends sooner when every registrar has failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

__all__ = ["register", "resolve_command", "format_pe", "pe_to_json", "run"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "resolve",
        help="resolve a pool handle at a registrar (TLS) and print its pool elements",
        description=(
            "Resolve POOL at a registrar over TLS (the registrar is authenticated by --ca "
            "and --server-name) and print one line per pool element: identifier, "
            "transport, addresses, port and policy. Exit status 1 if the pool is unknown "
            "or no registrar can be reached."
        ),
    )
    parser.add_argument("pool", metavar="POOL", help="the pool handle (UTF-8 text)")
    parser.add_argument("--registrar", action="append", required=True, metavar="HOST:PORT",
                        help="a registrar's ASAP/TLS address (repeatable; tried as in a server hunt)")
    parser.add_argument("--ca", action="append", required=True, metavar="PEM",
                        help="trust roots for the registrar's certificate (repeatable)")
    parser.add_argument("--cert", metavar="PEM", help="client certificate (optional)")
    parser.add_argument("--key", metavar="PEM", help="private key of --cert")
    parser.add_argument("--server-name", metavar="NAME",
                        help="the name the registrar's certificate must carry "
                             "(default: the host of each --registrar)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("-n", type=int, default=0, metavar="N",
                        help="print at most N pool elements (default: all returned)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="give up after this long (default 10)")
    parser.add_argument("--log-level", metavar="LEVEL", default=None,
                        help="log the library's lines at LEVEL (debug, info, warn, error) on "
                             "standard error (default: no log)")
    parser.add_argument("-v", "--verbose", action="store_true", help="the same as --log-level info")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The handler: runs the reactor until the resolution is over."""
    from twisted.internet import task

    status: list[int] = []

    def main(reactor: Any) -> Any:
        d = resolve_command(args, reactor, sys.stdout, sys.stderr)
        return d.addCallback(status.append)

    try:
        task.react(main)
    except SystemExit:
        pass
    return status[0] if status else 1


def _policy_text(policy: Any) -> str:
    return str(policy)


def format_pe(pe: Any) -> str:
    transport = pe.user_transport
    addresses = ",".join(str(a) for a in getattr(transport, "all_addresses", ())) or "-"
    port = getattr(transport, "port", "-")
    return (f"0x{pe.pe_id:08x} {getattr(transport, 'NAME', 'opaque')} {addresses} {port} "
            f"{_policy_text(pe.policy)}")


def pe_to_json(pe: Any) -> dict[str, Any]:
    from rserpool.asap.pu import policy_name

    transport = pe.user_transport
    policy = pe.policy
    values = {name: getattr(policy, name) for name in getattr(policy, "FIELDS", ())}
    return {
        "pe_id": pe.pe_id,
        "transport": getattr(transport, "NAME", "opaque"),
        "addresses": [str(a) for a in getattr(transport, "all_addresses", ())],
        "port": getattr(transport, "port", None),
        "transport_use": getattr(transport, "transport_use", 0),
        "policy": {"type": policy.policy_type, "name": policy_name(policy.policy_type), **values},
        "home_server_id": pe.home_server_id,
        "registration_life": pe.registration_life,
    }


def _error(err: TextIO, text: str) -> int:
    err.write(f"rserpool resolve: {text}\n")
    err.flush()
    return 1


def resolve_command(args: argparse.Namespace, reactor: Any, out: TextIO, err: TextIO) -> Any:
    """Resolve ``args.pool`` and print the answer; a Deferred firing with the
    exit status (it never fails): 0 success, 1 failure (one line each on
    ``err``), 2 a mistake in the command line found before connecting."""
    from twisted.internet import defer

    from rserpool.asap.pu import PuError, PuSettings, ResolutionRefused, UnknownPool, policy_name
    from rserpool.cli.network import Attempt, ToolFailure, check_registrars, check_tls_files, report
    from rserpool.logs import start_tool_logging
    from rserpool.security.tlserrors import connection_error_text
    from rserpool.service.pu import PoolUser
    from rserpool.wire.params import pool_handle_text

    start_tool_logging("info" if args.verbose and args.log_level is None else args.log_level, err)
    problems = []
    if args.timeout <= 0:
        problems.append("--timeout must be positive")
    if args.n < 0:
        problems.append("-n must not be negative")
    handle = args.pool.encode("utf-8")
    if not handle:
        problems.append("the pool handle is empty")
    problems += check_registrars(args.registrar)
    problems += check_tls_files(args.ca, args.cert, args.key)
    if problems:
        report("rserpool resolve", problems, err)
        return defer.succeed(2)
    client_cert = (args.cert, args.key) if args.cert is not None else None
    # One request, retransmitted once, within the deadline; the hunt's round
    # outlives the deadline (its T5), so each registrar is tried once and a
    # round in which all failed ends the command at once.
    settings = PuSettings(t1=args.timeout / 2, max_request_retransmit=1)
    pu = PoolUser.connecting_to(
        reactor, args.registrar, list(args.ca), client_cert=client_cert,
        server_name=args.server_name, settings=settings, t5_initial=2 * args.timeout,
        attempt_timeout=min(7.5, args.timeout))

    def show(pes: list) -> int:
        if args.n:
            pes = pes[: args.n]
        entry = pu.core.cached(handle)
        policy = entry.policy_type if entry is not None else 1
        if args.json:
            out.write(json.dumps({"pool_handle": args.pool, "policy": policy_name(policy),
                                  "pool_elements": [pe_to_json(pe) for pe in pes]}) + "\n")
        else:
            for pe in pes:
                out.write(format_pe(pe) + "\n")
        return 0

    def failed(failure: Any) -> int:
        error = failure.value
        if isinstance(error, ToolFailure):
            report("rserpool resolve", error.lines, err)
            return 1
        if isinstance(error, UnknownPool):
            return _error(err, f"unknown pool {pool_handle_text(handle)}")
        if isinstance(error, ResolutionRefused):
            return _error(err, str(error))
        if isinstance(error, PuError):
            return _error(err, str(error))
        return _error(err, connection_error_text(failure))

    def finish(status: int) -> Any:
        return pu.stop().addBoth(lambda _: status)

    d = Attempt(reactor, args.timeout, pu, "answer").run(lambda: pu.resolve(handle))
    d.addCallbacks(show, failed)
    d.addCallback(finish)
    return d
