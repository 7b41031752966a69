"""What an operator may see of a registrar: counters and read-only views, sans-IO.

Nothing here does I/O or reads a clock (``now`` is passed in) and nothing
here changes the registrar.  The admin endpoint (``rserpool.admin``) turns
these views into JSON, an HTML page and Prometheus metrics at request time.

- :class:`EventCounts` holds the counters the Twisted shell keeps itself
  (authentication outcomes by mechanism, backend outages, TLS handshake
  failures): each event costs one dictionary or attribute increment.
- :func:`counters` gathers every counter: the registrar core's own
  (``RegistrarCore.stats``, ``refused_by_cause``) and the shell's.
- :func:`registrar_view`, :func:`pool_views`, :func:`pe_view` and
  :func:`pe_page` are plain dicts of JSON-ready values.  A pool's PEs are
  read a page at a time, so no request walks 100,000 PEs.

Never shown: anything secret.  A PE view carries the identity *name* that
owns the PE (never a key, verifier, CHAP secret or PSK), its home
registrar, transports, policy and lifetimes; the registrar view carries
counters and settings that are not secret.  docs/metrics.md lists each value
with its RFC 5525 (RSerPool MIB) counterpart.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from rserpool.handlespace import POLICY_NAMES, PoolElementEntry
from rserpool.wire.codes import CAUSE_NAMES
from rserpool.wire.params import pool_handle_text

__all__ = [
    "EventCounts",
    "RefusalRecord",
    "cause_name",
    "counters",
    "pe_page",
    "pe_view",
    "pool_views",
    "recent_refusals",
    "registrar_view",
]

#: The largest page of PEs one request may ask for.
MAX_PAGE = 500

#: Counters of ``RegistrarCore.stats`` and what they count (docs/metrics.md).
CORE_COUNTERS = {
    "registrations": "PEs registered (new PEs)",
    "reregistrations": "re-registrations of PEs already registered",
    "deregistrations": "PEs deregistered by their own request",
    "resolutions": "handle resolutions answered with PEs",
    "refused": "requests refused (any cause), including dropped unreachability reports",
    "removed": "PEs removed by the registrar (expiry, keep-alive timeout, reports, channel loss)",
    "keepalive_timeouts": "PEs removed for an unanswered ENDPOINT_KEEP_ALIVE",
    "unreachable_reports": "ENDPOINT_UNREACHABLE reports received",
    "unauthorized": "requests refused because the authorizer said no",
    "authorization_outages": "requests refused because the authorizer could not answer",
}


class EventCounts:
    """Counters kept by the shell (one increment per event).

    ``authentication`` maps ``(mechanism, "success" | "failure")`` to a
    count: ``certificate`` and ``psk`` for identities TLS proved, the ASAP
    authentication extension's mechanism names for SRP and CHAP.
    ``backend_outages`` maps a backend role (``authorizer``,
    ``authenticator``, ``certificate-check``) to the number of requests it
    could not answer.  ``admin_requests`` maps an outcome (``allowed``,
    ``refused``, ``error``) to admin endpoint requests.
    """

    __slots__ = ("authentication", "backend_outages", "tls_handshake_failures", "admin_requests")

    def __init__(self) -> None:
        self.authentication: dict[tuple[str, str], int] = {}
        self.backend_outages: dict[str, int] = {}
        self.tls_handshake_failures = 0
        self.admin_requests: dict[str, int] = {}

    def authenticated(self, mechanism: str, succeeded: bool) -> None:
        key = (mechanism, "success" if succeeded else "failure")
        self.authentication[key] = self.authentication.get(key, 0) + 1

    def outage(self, backend: str) -> None:
        self.backend_outages[backend] = self.backend_outages.get(backend, 0) + 1

    def admin_request(self, outcome: str) -> None:
        self.admin_requests[outcome] = self.admin_requests.get(outcome, 0) + 1


#: ``RegistrarCore.recent_refusals`` entries:
#: ``(now, address, identity, request, pool handle, PE id or None, cause)``.
RefusalRecord = tuple


def cause_name(cause: int) -> str:
    return CAUSE_NAMES.get(cause, f"cause 0x{cause:x}")


def parse_handle(text: str) -> bytes:
    """The inverse of :func:`rserpool.wire.params.pool_handle_text`, the one
    form of a pool handle for people (``ValueError`` on bad hex)."""
    if text.startswith("hex:"):
        return bytes.fromhex(text[4:])
    return text.encode("utf-8")


def counters(core: Any, events: EventCounts | None = None) -> dict[str, Any]:
    """Every counter, as JSON-ready values.

    ``core`` is a ``RegistrarCore``; ``events`` the shell's counts."""
    stats = core.stats
    result: dict[str, Any] = {name: int(stats.get(name, 0)) for name in CORE_COUNTERS}
    result["refused_by_cause"] = {f"0x{cause:x}": count
                                  for cause, count in sorted(getattr(core, "refused_by_cause", {}).items())}
    if events is not None:
        result["authentication"] = [
            {"mechanism": mechanism, "outcome": outcome, "count": count}
            for (mechanism, outcome), count in sorted(events.authentication.items())]
        result["backend_outages"] = dict(sorted(events.backend_outages.items()))
        result["tls_handshake_failures"] = events.tls_handshake_failures
        result["admin_requests"] = dict(sorted(events.admin_requests.items()))
    return result


def recent_refusals(core: Any, limit: int = 50) -> list[dict[str, Any]]:
    """The last refused requests, newest first."""
    records: Iterable[RefusalRecord] = getattr(core, "recent_refusals", ())
    result = []
    for now, address, identity, request, handle, pe_id, cause in reversed(list(records)):
        result.append({
            "time": now,
            "address": address,
            "identity": identity,
            "request": request,
            "pool": pool_handle_text(handle) if handle is not None else None,
            "pe_id": None if pe_id is None else f"{pe_id:08x}",
            "cause": f"0x{cause:x}",
            "cause_name": cause_name(cause),
        })
        if len(result) >= limit:
            break
    return result


def registrar_view(core: Any, *, now: float, started: float, channels: int,
                   events: EventCounts | None = None, listening: Iterable[str] = (),
                   peers: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The registrar itself: identity, uptime, sizes, peers and counters."""
    handlespace = core.handlespace
    return {
        "server_id": f"{core.settings.server_id:08x}",
        "started": started,
        "uptime": max(0.0, now - started),
        "now": now,
        "asap_listening": list(listening),
        "asap_channels": channels,
        "pools": handlespace.pool_count,
        "pool_elements": len(handlespace),
        "owned_pool_elements": handlespace.owned_count(core.settings.server_id),
        "peers": [dict(peer) for peer in peers],
        "counters": counters(core, events),
    }


def pool_views(handlespace: Any) -> list[dict[str, Any]]:
    """One summary per pool (handle, policy, PE count), by handle.

    Costs one step per pool, not per PE."""
    views = []
    for handle in sorted(handlespace.pool_handles()):
        info = handlespace.pool_info(handle)
        if info is None:
            continue
        views.append({
            "handle": pool_handle_text(handle),
            "handle_hex": handle.hex(),
            "policy": POLICY_NAMES.get(info.policy_type, f"0x{info.policy_type:08x}"),
            "policy_type": f"0x{info.policy_type:08x}",
            "transport_type": info.transport_type,
            "transport_use": info.transport_use,
            "pool_elements": info.size,
        })
    return views


def _transports(payload: Any) -> list[str]:
    transport = getattr(payload, "user_transport", None)
    return [] if transport is None else [str(transport)]


def pe_view(entry: PoolElementEntry, now: float) -> dict[str, Any]:
    """One PE, for people and tools (no secret: the owner is a name)."""
    settings = entry.settings
    view: dict[str, Any] = {
        "pe_id": f"{entry.pe_id:08x}",
        "home_server_id": f"{entry.home_server_id:08x}",
        "identity": entry.identity,
        "transports": _transports(entry.payload),
        "policy": POLICY_NAMES.get(settings.policy_type, f"0x{settings.policy_type:08x}"),
        "registration_life": entry.registration_life,
        "expires_at": entry.expires_at,
        "expires_in": None if entry.expires_at is None else max(0.0, entry.expires_at - now),
    }
    if settings.weight:
        view["weight"] = settings.weight
    if settings.priority:
        view["priority"] = settings.priority
    policy_type = settings.policy_type
    if policy_type & 0x40000000:  # the adaptive policies carry a load
        view["load"] = settings.load
        view["load_percent"] = round(100.0 * settings.load / 0xFFFFFFFF, 2)
        if settings.load_degradation:
            view["load_degradation"] = settings.load_degradation
    return view


def pe_page(handlespace: Any, handle: bytes, now: float, offset: int = 0,
            limit: int = 100) -> dict[str, Any] | None:
    """Up to ``limit`` PEs of a pool from ``offset`` on, in registration
    order; None for an unknown pool.  ``next`` is the offset of the next
    page (None on the last).  PEs that register or leave between two pages
    may be missed or listed twice."""
    if handlespace.pool_info(handle) is None:
        return None
    offset = max(0, int(offset))
    limit = max(1, min(MAX_PAGE, int(limit)))
    members = handlespace.pool_members(handle)  # a list copy: pointers only
    page = members[offset:offset + limit]
    end = offset + len(page)
    return {
        "handle": pool_handle_text(handle),
        "handle_hex": handle.hex(),
        "total": len(members),
        "offset": offset,
        "next": end if end < len(members) else None,
        "pool_elements": [pe_view(entry, now) for entry in page],
    }

