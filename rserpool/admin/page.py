"""The status page: server-rendered HTML (twisted.web.template), no scripts,
no external assets, refreshing itself with ``<meta http-equiv="refresh">``.

Built from the same views as the JSON API (``rserpool.stats``), so the page
and ``/api/v1/...`` always agree.  The page is bounded whatever the
handlespace holds: at most ``MAX_POOLS`` pools and ``MAX_ROWS`` PE rows on
the main page; a pool's own page shows one page of PEs with links to the
next.  The inline style sheet is allowed by its hash in the
Content-Security-Policy (no ``unsafe-inline``).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timezone
from typing import Any, Iterable

from twisted.web.template import Tag, flattenString, tags

__all__ = ["CONTENT_SECURITY_POLICY", "MAX_POOLS", "MAX_ROWS", "pool_page", "render", "status_page"]

MAX_POOLS = 200
MAX_ROWS = 200

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; margin: 0 0 .3em; } h2 { font-size: 1.15em; margin: 1.4em 0 .4em; }
table { border-collapse: collapse; background: #fff; margin-bottom: .5em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #eee; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: #777; } code { font-size: .95em; }
"""

_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = (f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src data:; "
                           "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _time(value: float | None) -> str:
    if value is None:
        return "never"
    return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "infinite"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _page(title: str, refresh: int, *body: Any) -> Tag:
    return tags.html(lang="en")(
        tags.head(
            tags.meta(charset="utf-8"),
            tags.meta(**{"http-equiv": "refresh", "content": str(refresh)}),
            tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
            tags.link(rel="icon", href="data:,"),
            tags.title(title),
            tags.style(STYLE),
        ),
        tags.body(*body),
    )


def _table(headers: Iterable[str], rows: list, **attributes: str) -> Tag:
    return tags.table(**attributes)(tags.thead(tags.tr(*[tags.th(h) for h in headers])), tags.tbody(*rows))


def _pe_rows(pool: dict[str, Any], pes: list[dict[str, Any]]) -> list[Tag]:
    rows = []
    for pe in pes:
        load = pe.get("load_percent")
        rows.append(tags.tr(id=f"pe-{pool['handle_hex']}-{pe['pe_id']}", class_="pe")(
            tags.td(tags.code(pool["handle"])),
            tags.td(tags.code(pe["pe_id"])),
            tags.td(pe["identity"] if pe["identity"] is not None else tags.span(class_="muted")("none")),
            tags.td(tags.code(pe["home_server_id"])),
            tags.td(", ".join(pe["transports"])),
            tags.td(pe["policy"]),
            tags.td(class_="num")("" if load is None else f"{load:.2f} %"),
            tags.td(_duration(pe["expires_in"])),
        ))
    return rows


_PE_HEADERS = ("pool", "PE id", "identity", "home registrar", "transports", "policy", "load", "expires in")


def status_page(registrar: dict[str, Any], pools: list[dict[str, Any]], pe_pages: dict[str, dict[str, Any]],
                refusals: list[dict[str, Any]], refresh: int) -> Tag:
    """The main page.  ``pe_pages`` maps a pool's ``handle_hex`` to its
    first page of PEs (only the pools shown with PEs)."""
    counters = registrar["counters"]
    summary = _table(("server ID", "started", "uptime", "ASAP channels", "pools", "PEs"), [tags.tr(
        tags.td(tags.code(registrar["server_id"])), tags.td(_time(registrar["started"])),
        tags.td(_duration(registrar["uptime"])), tags.td(class_="num")(str(registrar["asap_sessions"])),
        tags.td(class_="num")(str(registrar["pools"])),
        tags.td(class_="num", id="pe-count")(str(registrar["pool_elements"])))], id="registrar")
    if registrar["peers"]:
        peers: Any = _table(("server ID", "state", "last heard"), [
            tags.tr(tags.td(tags.code(p.get("server_id", ""))), tags.td(p.get("state", "")),
                    tags.td(_time(p.get("last_heard")))) for p in registrar["peers"]], id="peers")
    else:
        peers = tags.p(class_="muted", id="peers")("No ENRP peers.")
    pool_rows = [tags.tr(tags.td(tags.a(href=f"/pool/{p['handle_hex']}")(tags.code(p["handle"]))),
                         tags.td(p["policy"]), tags.td(class_="num")(str(p["pool_elements"])))
                 for p in pools[:MAX_POOLS]]
    more_pools = (tags.p(class_="muted")(f"{len(pools) - MAX_POOLS} more pools: see /api/v1/pools.")
                  if len(pools) > MAX_POOLS else "")
    pe_rows: list[Tag] = []
    notes = []
    for pool in pools[:MAX_POOLS]:
        page = pe_pages.get(pool["handle_hex"])
        if page is None:
            continue
        pe_rows += _pe_rows(pool, page["pool_elements"])
        if page["next"] is not None:
            notes.append(tags.li(tags.a(href=f"/pool/{pool['handle_hex']}")(
                f"all {page['total']} PEs of {pool['handle']}")))
    counter_rows = [tags.tr(tags.td(name), tags.td(class_="num")(str(counters[name])))
                    for name in ("registrations", "reregistrations", "deregistrations", "resolutions", "refused",
                                 "removed", "keepalive_timeouts", "unreachable_reports", "unauthorized",
                                 "authorization_outages", "tls_handshake_failures") if name in counters]
    counter_rows += [tags.tr(tags.td(f"refused, cause {cause}"), tags.td(class_="num")(str(count)))
                     for cause, count in counters["refused_by_cause"].items()]
    counter_rows += [tags.tr(tags.td(f"authentication {a['mechanism']} {a['outcome']}"),
                             tags.td(class_="num")(str(a["count"]))) for a in counters.get("authentication", ())]
    counter_rows += [tags.tr(tags.td(f"backend outage: {backend}"), tags.td(class_="num")(str(count)))
                     for backend, count in counters.get("backend_outages", {}).items()]
    refusal_rows = [tags.tr(tags.td(_time(r["time"])), tags.td(r["address"]), tags.td(r["identity"] or "none"),
                            tags.td(r["request"]), tags.td(tags.code(r["pool"] or "")), tags.td(r["pe_id"] or ""),
                            tags.td(f"{r['cause']} {r['cause_name']}")) for r in refusals]
    return _page(
        f"rserpool registrar {registrar['server_id']}", refresh,
        tags.h1(f"Registrar {registrar['server_id']}"),
        tags.p(class_="muted")(f"As of {_time(registrar['now'])}; this page refreshes every {refresh} s. "
                               "JSON: /api/v1/status"),
        summary,
        tags.h2("Peers"), peers,
        tags.h2("Pools"),
        _table(("pool", "policy", "PEs"), pool_rows, id="pools") if pool_rows
        else tags.p(class_="muted")("No pools."),
        more_pools,
        tags.h2("Pool elements"),
        _table(_PE_HEADERS, pe_rows, id="pes") if pe_rows else tags.p(class_="muted", id="pes")("No PEs."),
        tags.ul(*notes) if notes else "",
        tags.h2("Last refused requests"),
        _table(("time", "address", "identity", "request", "pool", "PE id", "cause"), refusal_rows, id="refusals")
        if refusal_rows else tags.p(class_="muted", id="refusals")("None."),
        tags.h2("Counters"),
        _table(("counter", "value"), counter_rows, id="counters"),
    )


def pool_page(page: dict[str, Any], refresh: int, server_id: str) -> Tag:
    """One page of one pool's PEs, with links to the neighbouring pages."""
    pool = {"handle": page["handle"], "handle_hex": page["handle_hex"]}
    rows = _pe_rows(pool, page["pool_elements"])
    links = [tags.a(href="/")("status")]
    size = max(1, len(page["pool_elements"]))
    if page["offset"] > 0:
        links.append(tags.a(href=f"/pool/{page['handle_hex']}?offset={max(0, page['offset'] - size)}")("previous"))
    if page["next"] is not None:
        links.append(tags.a(href=f"/pool/{page['handle_hex']}?offset={page['next']}")("next"))
    nav = tags.p(*[item for link in links for item in (link, " ")])
    first = page["offset"] + 1 if page["pool_elements"] else 0
    return _page(
        f"pool {page['handle']} - rserpool registrar {server_id}", refresh,
        tags.h1("Pool ", tags.code(page["handle"])),
        tags.p(f"PEs {first}-{page['offset'] + len(page['pool_elements'])} of {page['total']}."),
        nav,
        _table(_PE_HEADERS, rows, id="pes") if rows else tags.p(class_="muted", id="pes")("No PEs."),
    )


def render(tag: Tag) -> bytes:
    """The document as bytes (the tags hold no Deferreds: this is synchronous)."""
    result: list[bytes] = []
    failures: list[Any] = []
    flattenString(None, tag).addCallbacks(result.append, failures.append)
    if failures:
        failures[0].raiseException()
    return b"<!DOCTYPE html>\n" + result[0]
