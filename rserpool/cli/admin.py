"""``rserpool status`` and ``rserpool handlespace dump``: the admin endpoint's
JSON API from the command line (the hsdump of rsplib, over HTTPS).

Both authenticate the endpoint by ``--ca`` (its certificate must carry the
URL's host name or address) and themselves by a client certificate
(``--cert``/``--key``) that the registrar's rules allow the ``admin``
action, or by a bearer token (``--token-file``) whose scope covers the API.
Exit status 0 on success, 1 when the endpoint cannot be reached, refuses,
or does not know the pool (the reason on standard error), 2 for usage
errors.  ``RSERPOOL_ADMIN_URL``, ``RSERPOOL_ADMIN_CA``, ``RSERPOOL_ADMIN_CERT``
and ``RSERPOOL_ADMIN_KEY`` give defaults for the options.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import sys
import urllib.parse
from typing import Any, TextIO

__all__ = ["AdminClient", "AdminError", "register"]

#: PEs asked for per request while dumping (the endpoint's maximum).
DUMP_PAGE = 500
MAX_RESPONSE = 64 * 1024 * 1024


class AdminError(Exception):
    """The endpoint could not be reached, refused, or answered nonsense."""


class AdminUsageError(AdminError):
    """The command line is wrong (a missing option, a file that cannot be
    used): exit status 2.  ``str()`` may hold several lines, one problem each."""


def _common(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--admin", metavar="URL", default=env("RSERPOOL_ADMIN_URL"),
                        help="the admin endpoint, e.g. https://127.0.0.1:8864 (env RSERPOOL_ADMIN_URL)")
    parser.add_argument("--ca", metavar="PEM", default=env("RSERPOOL_ADMIN_CA"),
                        help="trust roots for the endpoint's certificate (env RSERPOOL_ADMIN_CA)")
    parser.add_argument("--cert", metavar="PEM", default=env("RSERPOOL_ADMIN_CERT"),
                        help="client certificate with the admin right (env RSERPOOL_ADMIN_CERT)")
    parser.add_argument("--key", metavar="PEM", default=env("RSERPOOL_ADMIN_KEY"),
                        help="private key of --cert (env RSERPOOL_ADMIN_KEY)")
    parser.add_argument("--token-file", metavar="FILE", help="send the bearer token in FILE instead")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="give up on a request after this long (default 10)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def register(subparsers: Any) -> None:
    status = subparsers.add_parser(
        "status", help="a registrar's summary from its admin endpoint",
        description="Print a registrar's identity, uptime, pools, peers, counters and last refusals, "
                    "read from its HTTPS admin endpoint.")
    _common(status)
    status.set_defaults(func=run_status)
    handlespace = subparsers.add_parser("handlespace", help="read a registrar's handlespace")
    actions = handlespace.add_subparsers(title="actions", metavar="ACTION")
    dump = actions.add_parser(
        "dump", help="list every pool and pool element (the hsdump equivalent)",
        description="List every pool (or only --pool) with all its pool elements: identifier, owner "
                    "identity, home registrar, transports, policy and expiry.")
    _common(dump)
    dump.add_argument("--pool", metavar="POOL", help="only this pool (its handle as text, or hex:...)")
    dump.set_defaults(func=run_dump)
    handlespace.set_defaults(func=lambda args: _usage(handlespace))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


class AdminClient:
    """Blocking HTTPS GETs of the admin endpoint's JSON API (one connection each)."""

    def __init__(self, url: str, ca: str, cert: str | None = None, key: str | None = None,
                 token: str | None = None, timeout: float = 10.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "https" or not parsed.hostname:
            raise AdminError(f"{url!r}: the admin endpoint is an https:// URL")
        self.url = url.rstrip("/")
        self.host = parsed.hostname
        self.port = parsed.port or 443
        self.base = parsed.path.rstrip("/")
        try:
            context = ssl.create_default_context(cafile=ca)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if cert:
                context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise AdminError(f"cannot load the TLS files: {exc}") from None
        self.context = context
        self.token = token
        self.timeout = timeout

    def get(self, path: str) -> Any:
        connection = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=self.timeout)
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            connection.request("GET", self.base + path, headers=headers)
            response = connection.getresponse()
            body = response.read(MAX_RESPONSE + 1)
        except ssl.SSLCertVerificationError as exc:
            raise AdminError(f"{self.url}: the endpoint's certificate is not trusted: {exc.verify_message}") from None
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
            raise AdminError(f"{self.url}: TLS failed ({str(reason).replace('_', ' ').lower()}); the "
                             "endpoint may require a client certificate (--cert/--key) it trusts") from None
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise AdminError(f"cannot reach the admin endpoint at {self.url}: {reason.lower()}") from None
        except http.client.HTTPException as exc:
            raise AdminError(f"{self.url}: bad HTTP answer: {exc}") from None
        finally:
            connection.close()
        if response.status in (401, 403):
            raise AdminError(f"{self.url} refused access ({response.status} "
                             f"{response.reason.lower()}): the certificate or token is not "
                             "authorized for the admin action (see docs/operations.md)")
        if response.status == 404:
            raise LookupError(path)
        if response.status != 200 or len(body) > MAX_RESPONSE:
            raise AdminError(f"{self.url}{path}: unexpected answer {response.status} {response.reason}")
        try:
            return json.loads(body)
        except ValueError:
            raise AdminError(f"{self.url}{path}: the answer is not JSON") from None


def _client(args: argparse.Namespace) -> AdminClient:
    from rserpool.cli.network import check_tls_files

    if not args.admin:
        raise AdminUsageError("no admin endpoint: give --admin URL (or set RSERPOOL_ADMIN_URL)")
    if not args.ca:
        raise AdminUsageError("no trust roots: give --ca PEM (or set RSERPOOL_ADMIN_CA)")
    if args.key and not args.cert:
        raise AdminUsageError("--key needs --cert")
    problems = check_tls_files([args.ca], args.cert, args.key if args.cert else None)
    if problems:  # each file named, before any connection
        raise AdminUsageError("\n".join(problems))
    token = None
    if args.token_file:
        try:
            with open(args.token_file, encoding="ascii") as handle:
                token = handle.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise AdminError(f"--token-file: {exc}") from None
    if not args.cert and token is None:
        raise AdminError("no credentials: give --cert/--key (a certificate with the admin right) or --token-file")
    return AdminClient(args.admin, args.ca, args.cert, args.key, token, args.timeout)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h{minutes}m"
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def format_status(status: dict[str, Any]) -> str:
    counters = status["counters"]
    lines = [
        f"registrar {status['server_id']}  up {_duration(status['uptime'])}  "
        f"ASAP channels {status['asap_sessions']}",
        f"pools {status['pools']}  PEs {status['pool_elements']} ({status['owned_pool_elements']} owned)",
        "peers: " + (", ".join(f"{p.get('server_id')} {p.get('state', '')}".strip() for p in status["peers"])
                     or "none"),
        f"registrations {counters['registrations']}  re-registrations {counters['reregistrations']}  "
        f"deregistrations {counters['deregistrations']}  resolutions {counters['resolutions']}",
        f"removed {counters['removed']} (keep-alive timeouts {counters['keepalive_timeouts']})  "
        f"unreachability reports {counters['unreachable_reports']}",
        f"refused {counters['refused']}" + "".join(f"  {cause}: {n}"
                                                 for cause, n in counters["refused_by_cause"].items()),
    ]
    for pool in status.get("pool_list", []):
        lines.append(f"  pool {pool['handle']}  {pool['policy']}  {pool['pool_elements']} PEs")
    refusals = status.get("recent_refusals", [])
    if refusals:
        lines.append("last refusals:")
        for r in refusals[:10]:
            lines.append(f"  {r['address']} {r['identity'] or '-'} {r['request']} {r['pool'] or ''} "
                         f"{r['pe_id'] or ''}: {r['cause']} {r['cause_name']}")
    return "\n".join(lines) + "\n"


def format_pe(pe: dict[str, Any]) -> str:
    extra = ""
    if "load_percent" in pe:
        extra += f"  load {pe['load_percent']:.2f}%"
    return (f"  {pe['pe_id']}  {', '.join(pe['transports']) or '-'}  {pe['policy']}{extra}  "
            f"home {pe['home_server_id']}  identity {pe['identity'] or '-'}  "
            f"expires in {_duration(pe['expires_in']) if pe['expires_in'] is not None else 'never'}")


def dump(client: AdminClient, pool: str | None) -> list[dict[str, Any]]:
    """Every pool (or ``pool``) with all its PEs, page by page."""
    from rserpool.stats import parse_handle

    if pool is not None:
        try:
            handles = [parse_handle(pool).hex()]
        except ValueError:
            raise AdminError(f"--pool {pool!r}: bad hex") from None
    else:
        handles = [p["handle_hex"] for p in client.get("/api/v1/pools")["pools"]]
    result = []
    for handle_hex in handles:
        offset: int | None = 0
        entry: dict[str, Any] | None = None
        while offset is not None:
            try:
                page = client.get(f"/api/v1/pools/{handle_hex}?offset={offset}&limit={DUMP_PAGE}")
            except LookupError:
                if pool is not None:
                    raise AdminError(f"unknown pool {pool!r}") from None
                break  # the pool went away while dumping
            if entry is None:
                entry = {"handle": page["handle"], "handle_hex": page["handle_hex"], "pool_elements": []}
            entry["pool_elements"] += page["pool_elements"]
            offset = page["next"]
        if entry is not None:
            result.append(entry)
    return result


def _failed(prog: str, exc: Exception, err: TextIO) -> int:
    for line in str(exc).splitlines() or [type(exc).__name__]:
        err.write(f"{prog}: {line}\n")
    return 2 if isinstance(exc, AdminUsageError) else 1


def run_status(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        status = _client(args).get("/api/v1/status")
    except (AdminError, LookupError) as exc:
        return _failed("rserpool status", exc, err)
    out.write(json.dumps(status, indent=1) + "\n" if args.json else format_status(status))
    return 0


def run_dump(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        pools = dump(_client(args), args.pool)
    except AdminError as exc:
        return _failed("rserpool handlespace dump", exc, err)
    if args.json:
        out.write(json.dumps({"pools": pools}, indent=1) + "\n")
        return 0
    for pool in pools:
        out.write(f"pool {pool['handle']}: {len(pool['pool_elements'])} PEs\n")
        for pe in pool["pool_elements"]:
            out.write(format_pe(pe) + "\n")
    if not pools:
        out.write("no pools\n")
    return 0
