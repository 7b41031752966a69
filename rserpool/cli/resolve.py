"""``rserpool resolve POOL``: resolve a pool handle at a registrar over TLS
and print its pool elements.

The registrar is authenticated first: its certificate must chain to
``--ca`` and carry ``--server-name`` (default: the host of each
``--registrar``).  A client certificate (``--cert``/``--key``) is optional.

Output: one line per PE, ``pe-id transport address[,address...] port
policy``, or with ``--json`` one JSON object.  Exit status 0 on success, 1
when the pool is unknown, the resolution is refused, or no registrar could
be reached (with the reason on standard error), 2 for usage errors.
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
    parser.add_argument("-v", "--verbose", action="store_true", help="log to standard error")
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
    return 1


def _hunt_failures(pu: Any) -> list[str]:
    hunt_round = getattr(pu.hunt, "round", None)
    failures = getattr(hunt_round, "failures", None) or []
    return [f"{candidate.host}:{candidate.port}: {why}" for candidate, why in failures]


def resolve_command(args: argparse.Namespace, reactor: Any, out: TextIO, err: TextIO) -> Any:
    """Resolve ``args.pool`` and print the answer; a Deferred firing with the
    exit status (it never fails)."""
    from twisted.internet import defer
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from rserpool.asap.pu import (
        PuError, PuSettings, ResolutionRefused, ResolutionTimeout, UnknownPool, policy_name,
    )
    from rserpool.security import tls
    from rserpool.service.pu import PoolUser

    if args.verbose:
        globalLogBeginner.beginLoggingTo([textFileLogObserver(err)], redirectStandardIO=False)
    if (args.cert is None) != (args.key is None):
        return defer.succeed(_error(err, "--cert and --key go together"))
    if args.timeout <= 0 or args.n < 0:
        return defer.succeed(_error(err, "--timeout must be positive and -n not negative"))
    handle = args.pool.encode("utf-8")
    if not handle:
        return defer.succeed(_error(err, "empty pool handle"))
    client_cert = (args.cert, args.key) if args.cert is not None else None
    try:
        # Load the trust roots and the certificate now, for a clear message.
        tls.client_options(args.server_name or "localhost", list(args.ca), client_cert=client_cert)
        settings = PuSettings(t1=args.timeout / 3, max_request_retransmit=2)
        pu = PoolUser.connecting_to(
            reactor, args.registrar, list(args.ca), client_cert=client_cert,
            # One hunt round within the timeout (each registrar tried once; a
            # later round would forget the reasons of this one's failures).
            server_name=args.server_name, settings=settings, t5_initial=2 * args.timeout,
            attempt_timeout=min(7.5, args.timeout / 2))
    except Exception as exc:  # bad files or addresses: say which
        return defer.succeed(_error(err, f"{type(exc).__name__}: {exc}"))

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
        if isinstance(error, UnknownPool):
            return _error(err, f"unknown pool {args.pool!r}")
        if isinstance(error, ResolutionRefused):
            return _error(err, f"the registrar refused to resolve {args.pool!r}: {error}")
        if isinstance(error, ResolutionTimeout):
            if pu.home is None:
                reasons = _hunt_failures(pu)
                detail = "; ".join(reasons) if reasons else "no answer"
                return _error(err, f"cannot reach an authenticated registrar within "
                                   f"{args.timeout:g} s ({detail})")
            return _error(err, f"the registrar did not answer within {args.timeout:g} s")
        if isinstance(error, PuError):
            return _error(err, str(error))
        return _error(err, f"{type(error).__name__}: {error}")

    def finish(status: int) -> Any:
        return pu.stop().addBoth(lambda _: status)

    d = pu.resolve(handle)
    d.addCallbacks(show, failed)
    d.addCallback(finish)
    return d
