"""The status page: server-rendered HTML, no scripts, no external assets,
refreshing itself with ``<meta http-equiv="refresh">``.

Built from the same views as the JSON API (``rserpool.stats``), so the page
and ``/api/v1/...`` always agree.  The page is bounded whatever the
handlespace holds: at most ``MAX_POOLS`` pools and ``MAX_ROWS`` PE rows on
the main page; a pool's own page shows one page of PEs with links to the
next.  The inline style sheet is allowed by its hash in the
Content-Security-Policy (no ``unsafe-inline``).

The HTML is built by :func:`tag`, a small builder in the manner of
twisted.web.template's ``tags`` that escapes every text and attribute value
it is given (only what :func:`tag` itself made passes unescaped).
twisted.web.template itself was measured at about 0.3 ms per table row
(a 1,000-PE page stalled the reactor for 260 ms); this builder renders the
same page in a few milliseconds (benchmarks/bench_admin.py).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timezone
from html import escape
from typing import Any, Iterable

__all__ = ["CONTENT_SECURITY_POLICY", "MAX_POOLS", "MAX_ROWS", "Markup", "pool_page", "render", "status_page",
           "tag"]

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


class Markup(str):
    """HTML made by :func:`tag`: inserted as it is, never escaped again."""

    __slots__ = ()


def _html(child: Any) -> str:
    if isinstance(child, Markup):
        return child
    if isinstance(child, (list, tuple)):
        return "".join(_html(item) for item in child)
    if child is None or child == "":
        return ""
    return escape(str(child), quote=False)


_VOID = frozenset({"meta", "link", "br"})


def tag(element: str, /, *children: Any, **attributes: Any) -> Markup:
    """``<element attributes>children</element>``: text children and attribute
    values are escaped; ``class_`` stands for ``class``, ``http_equiv``
    for ``http-equiv``; an attribute whose value is None is left out."""
    attrs = "".join(f' {key.rstrip("_").replace("_", "-")}="{escape(str(value), quote=True)}"'
                    for key, value in attributes.items() if value is not None)
    if element in _VOID:
        return Markup(f"<{element}{attrs} />")
    return Markup(f"<{element}{attrs}>{_html(children)}</{element}>")


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


def _page(title: str, refresh: int, *body: Any) -> Markup:
    return tag("html", tag("head",
                           tag("meta", charset="utf-8"),
                           tag("meta", http_equiv="refresh", content=str(refresh)),
                           tag("meta", name="viewport", content="width=device-width, initial-scale=1"),
                           tag("link", rel="icon", href="data:,"),
                           tag("title", title),
                           tag("style", Markup(STYLE))),
               tag("body", *body), lang="en")


def _table(headers: Iterable[str], rows: list, **attributes: str) -> Markup:
    return tag("table", tag("thead", tag("tr", [tag("th", h) for h in headers])), tag("tbody", rows), **attributes)


def _td(content: Any, **attributes: Any) -> Markup:
    return tag("td", content, **attributes)


def _pe_rows(pool: dict[str, Any], pes: list[dict[str, Any]]) -> list[Markup]:
    """One row per PE: the page's bulk, so written out in one format string
    per row (every value still escaped) rather than a dozen :func:`tag` calls."""
    rows = []
    handle_hex = escape(pool["handle_hex"], quote=True)
    handle = f'<td><code>{escape(pool["handle"], quote=False)}</code></td>'
    for pe in pes:
        load = pe.get("load_percent")
        identity = pe["identity"]
        pe_id = escape(pe["pe_id"], quote=True)
        rows.append(Markup(
            f'<tr id="pe-{handle_hex}-{pe_id}" class="pe">{handle}<td><code>{pe_id}</code></td>'
            f'<td>{escape(identity, quote=False) if identity is not None else _NONE}</td>'
            f'<td><code>{escape(pe["home_server_id"], quote=False)}</code></td>'
            f'<td>{escape(", ".join(pe["transports"]), quote=False)}</td>'
            f'<td>{escape(pe["policy"], quote=False)}</td>'
            f'<td class="num">{"" if load is None else f"{load:.2f} %"}</td>'
            f'<td>{_duration(pe["expires_in"])}</td></tr>'))
    return rows


_NONE = '<span class="muted">none</span>'
_PE_HEADERS = ("pool", "PE id", "identity", "home registrar", "transports", "policy", "load", "expires in")


def _muted(text: str, **attributes: Any) -> Markup:
    return tag("p", text, class_="muted", **attributes)


def status_page(registrar: dict[str, Any], pools: list[dict[str, Any]], pe_pages: dict[str, dict[str, Any]],
                refusals: list[dict[str, Any]], refresh: int) -> Markup:
    """The main page.  ``pe_pages`` maps a pool's ``handle_hex`` to its
    first page of PEs (only the pools shown with PEs)."""
    counters = registrar["counters"]
    summary = _table(("server ID", "started", "uptime", "ASAP channels", "pools", "PEs"), [tag(
        "tr", _td(tag("code", registrar["server_id"])), _td(_time(registrar["started"])),
        _td(_duration(registrar["uptime"])), _td(str(registrar["asap_channels"]), class_="num"),
        _td(str(registrar["pools"]), class_="num"),
        _td(str(registrar["pool_elements"]), class_="num", id="pe-count"))], id="registrar")
    if registrar["peers"]:
        peers = _table(("server ID", "state", "last heard"), [
            tag("tr", _td(tag("code", p.get("server_id", ""))), _td(p.get("state", "")),
                _td(_time(p.get("last_heard")))) for p in registrar["peers"]], id="peers")
    else:
        peers = _muted("No ENRP peers.", id="peers")
    pool_rows = [tag("tr", _td(tag("a", tag("code", p["handle"]), href=f"/pool/{p['handle_hex']}")),
                     _td(p["policy"]), _td(str(p["pool_elements"]), class_="num"))
                 for p in pools[:MAX_POOLS]]
    more_pools = (_muted(f"{len(pools) - MAX_POOLS} more pools: see /api/v1/pools.")
                  if len(pools) > MAX_POOLS else "")
    pe_rows: list[Markup] = []
    notes = []
    for pool in pools[:MAX_POOLS]:
        page = pe_pages.get(pool["handle_hex"])
        if page is None:
            continue
        pe_rows += _pe_rows(pool, page["pool_elements"])
        if page["next"] is not None:
            notes.append(tag("li", tag("a", f"all {page['total']} PEs of {pool['handle']}",
                                       href=f"/pool/{pool['handle_hex']}")))
    counter_rows = [tag("tr", _td(name), _td(str(counters[name]), class_="num"))
                    for name in ("registrations", "reregistrations", "deregistrations", "resolutions", "refused",
                                 "removed", "keepalive_timeouts", "unreachable_reports", "unauthorized",
                                 "authorization_outages", "tls_handshake_failures") if name in counters]
    counter_rows += [tag("tr", _td(f"refused, cause {cause}"), _td(str(count), class_="num"))
                     for cause, count in counters["refused_by_cause"].items()]
    counter_rows += [tag("tr", _td(f"authentication {a['mechanism']} {a['outcome']}"),
                         _td(str(a["count"]), class_="num")) for a in counters.get("authentication", ())]
    counter_rows += [tag("tr", _td(f"backend outage: {backend}"), _td(str(count), class_="num"))
                     for backend, count in counters.get("backend_outages", {}).items()]
    refusal_rows = [tag("tr", _td(_time(r["time"])), _td(r["address"]), _td(r["identity"] or "none"),
                        _td(r["request"]), _td(tag("code", r["pool"] or "")), _td(r["pe_id"] or ""),
                        _td(f"{r['cause']} {r['cause_name']}")) for r in refusals]
    return _page(
        f"rserpool registrar {registrar['server_id']}", refresh,
        tag("h1", f"Registrar {registrar['server_id']}"),
        _muted(f"As of {_time(registrar['now'])}; this page refreshes every {refresh} s. JSON: /api/v1/status"),
        summary,
        tag("h2", "Peers"), peers,
        tag("h2", "Pools"),
        _table(("pool", "policy", "PEs"), pool_rows, id="pools") if pool_rows else _muted("No pools."),
        more_pools,
        tag("h2", "Pool elements"),
        _table(_PE_HEADERS, pe_rows, id="pes") if pe_rows else _muted("No PEs.", id="pes"),
        tag("ul", notes) if notes else "",
        tag("h2", "Last refused requests"),
        _table(("time", "address", "identity", "request", "pool", "PE id", "cause"), refusal_rows, id="refusals")
        if refusal_rows else _muted("None.", id="refusals"),
        tag("h2", "Counters"),
        _table(("counter", "value"), counter_rows, id="counters"),
    )


def pool_page(page: dict[str, Any], refresh: int, server_id: str) -> Markup:
    """One page of one pool's PEs, with links to the neighbouring pages."""
    pool = {"handle": page["handle"], "handle_hex": page["handle_hex"]}
    rows = _pe_rows(pool, page["pool_elements"])
    links = [tag("a", "status", href="/")]
    size = max(1, len(page["pool_elements"]))
    if page["offset"] > 0:
        links.append(tag("a", "previous", href=f"/pool/{page['handle_hex']}?offset={max(0, page['offset'] - size)}"))
    if page["next"] is not None:
        links.append(tag("a", "next", href=f"/pool/{page['handle_hex']}?offset={page['next']}"))
    first = page["offset"] + 1 if page["pool_elements"] else 0
    return _page(
        f"pool {page['handle']} - rserpool registrar {server_id}", refresh,
        tag("h1", "Pool ", tag("code", page["handle"])),
        tag("p", f"PEs {first}-{page['offset'] + len(page['pool_elements'])} of {page['total']}."),
        tag("p", [Markup(link + " ") for link in links]),
        _table(_PE_HEADERS, rows, id="pes") if rows else _muted("No PEs.", id="pes"),
    )


def render(document: Markup) -> bytes:
    """The document as UTF-8 bytes."""
    return b"<!DOCTYPE html>\n" + document.encode("utf-8")
