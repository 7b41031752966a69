"""The admin endpoint's one twisted.web resource: admission, then a fixed set of routes.

Every request is admitted first (``rserpool.admin.access``), whatever its
path; only then is the path looked at.  Only these exist (GET or HEAD;
anything else is 405, any other path 404; nothing is ever served from the
file system):

=================================  ============================================
``/``                              the status page (HTML, refreshes itself)
``/pool/<hex handle>?offset=N``    one page of a pool's PEs (HTML)
``/metrics``                       Prometheus exposition (text or OpenMetrics)
``/api/v1/status``                 the registrar, its peers, pools, counters and
                                   last refusals (JSON)
``/api/v1/pools``                  every pool: handle, policy, PE count (JSON)
``/api/v1/pools/<hex handle>``     one page of a pool's PEs,
                                   ``?offset=N&limit=M`` (M at most 500) (JSON)
=================================  ============================================

Responses carry ``Cache-Control: no-store``, ``X-Content-Type-Options:
nosniff`` and a Content-Security-Policy without scripts.
"""

from __future__ import annotations

import json
import re
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from rserpool import stats
from rserpool.admin.page import CONTENT_SECURITY_POLICY, MAX_POOLS, MAX_ROWS, pool_page, render, status_page
from rserpool.admin.metrics import exposition, make_registry
from rserpool.service.channel import address_text

__all__ = ["AdminResource"]

_log = Logger()

_HEX_HANDLE = re.compile(r"^[0-9a-f]{2,256}$")
_MAX_QUERY_NUMBER = 10**9
_REFUSALS = {401: b"unauthorized\n", 403: b"forbidden\n", 429: b"too many requests\n"}


class _BadRequest(ValueError):
    pass


def _number(request: Any, name: bytes, default: int) -> int:
    values = request.args.get(name)
    if not values:
        return default
    text = values[0]
    if not text.isdigit() or len(text) > 10 or int(text) > _MAX_QUERY_NUMBER:
        raise _BadRequest(f"{name.decode()} must be a number")
    return int(text)


def _handle(hex_text: str) -> bytes:
    if not _HEX_HANDLE.match(hex_text) or len(hex_text) % 2:
        raise _BadRequest("a pool is named by its handle in lower-case hex")
    return bytes.fromhex(hex_text)


class AdminResource(Resource):
    """Serves the routes above for ``registrar`` (a ``RegistrarService``)."""

    isLeaf = True

    def __init__(self, registrar: Any, access: Any, *, refresh: int = 5, page_size: int = 100) -> None:
        super().__init__()
        self.registrar = registrar
        self.access = access
        self.refresh = refresh
        self.page_size = page_size
        self.registry = make_registry(registrar)

    # -- entry ------------------------------------------------------------------

    def render(self, request: Any) -> Any:
        request.setHeader(b"server", b"rserpool-admin")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY.encode())
        client = request.getClientAddress()
        d = self.access.admit(request.channel, request.channel.transport, getattr(client, "host", "?"),
                              request.getHeader(b"authorization"), port=getattr(client, "port", None))
        finished: list[bool] = []
        request.notifyFinish().addBoth(finished.append)
        d.addCallback(self._admitted, request, finished)
        d.addErrback(self._failed, request, finished)
        return NOT_DONE_YET

    def _admitted(self, grant: Any, request: Any, finished: list) -> None:
        if finished:
            return  # the client went away while the decision was made
        events = self.registrar.events
        path = request.path.decode("ascii", "replace")
        peer = address_text(request.getClientAddress())
        if not grant.covers(path):
            events.admin_request("refused")
            _log.warn("admin endpoint: refused {method} {path} from {peer} ({who}: {reason})",
                      method=request.method.decode("ascii", "replace"), path=path[:200], peer=peer,
                      who=grant.who, reason=grant.reason or "outside the token's scope")
            status = grant.status if not grant.allowed else 403
            request.channel.persistent = False  # a refused client gets its answer, then the door closes
            request.setHeader(b"connection", b"close")
            if status == 401:
                request.setHeader(b"www-authenticate", b'Bearer realm="rserpool-admin"')
            self._finish(request, status, b"text/plain; charset=utf-8", _REFUSALS.get(status, b"forbidden\n"))
            return
        events.admin_request("allowed")
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            self._finish(request, 405, b"text/plain; charset=utf-8", b"method not allowed\n")
            return
        try:
            status, content_type, body = self._route(path, request)
        except _BadRequest as exc:
            status, content_type, body = 400, b"text/plain; charset=utf-8", f"{exc}\n".encode()
        self._finish(request, status, content_type, body)

    def _failed(self, failure: Failure, request: Any, finished: list) -> None:
        self.registrar.events.admin_request("error")
        _log.failure("admin endpoint: request failed", failure)
        if not finished:
            self._finish(request, 500, b"text/plain; charset=utf-8", b"internal error\n")

    @staticmethod
    def _finish(request: Any, status: int, content_type: bytes, body: bytes) -> None:
        request.setResponseCode(status)
        request.setHeader(b"content-type", content_type)
        request.setHeader(b"content-length", str(len(body)).encode())
        if request.method != b"HEAD":
            request.write(body)
        request.finish()

    # -- routes -----------------------------------------------------------------------

    def _route(self, path: str, request: Any) -> tuple[int, bytes, bytes]:
        now = self.registrar.clock.seconds()
        if path == "/":
            return 200, b"text/html; charset=utf-8", self._status_page(now)
        if path == "/metrics":
            accept = (request.getHeader(b"accept") or b"").decode("latin-1")
            body, content_type = exposition(self.registry, accept)
            return 200, content_type.encode(), body
        if path == "/api/v1/status":
            return self._json(self.status(now))
        if path == "/api/v1/pools":
            return self._json({"pools": stats.pool_views(self.registrar.handlespace)})
        parts = path.split("/")
        if len(parts) == 5 and parts[:4] == ["", "api", "v1", "pools"]:
            handle = _handle(parts[4])
            result = stats.pe_page(self.registrar.handlespace, handle, now, _number(request, b"offset", 0),
                                   _number(request, b"limit", self.page_size))
            return self._json(result) if result is not None else self._not_found()
        if len(parts) == 3 and parts[1] == "pool":
            handle = _handle(parts[2])
            result = stats.pe_page(self.registrar.handlespace, handle, now, _number(request, b"offset", 0),
                                   min(self.page_size, MAX_ROWS))
            if result is None:
                return self._not_found()
            return 200, b"text/html; charset=utf-8", render(
                pool_page(result, self.refresh, f"{self.registrar.server_id:08x}"))
        return self._not_found()

    @staticmethod
    def _not_found() -> tuple[int, bytes, bytes]:
        return 404, b"text/plain; charset=utf-8", b"not found\n"

    @staticmethod
    def _json(value: Any) -> tuple[int, bytes, bytes]:
        return 200, b"application/json", json.dumps(value, separators=(",", ":")).encode() + b"\n"

    def status(self, now: float) -> dict[str, Any]:
        """What ``/api/v1/status`` serves."""
        registrar = self.registrar
        view = stats.registrar_view(
            registrar.core, now=now, started=registrar.started if registrar.started is not None else now,
            channels=len(registrar.core.channel_states), events=registrar.events,
            listening=[f"{a.host}:{a.port}" for a in registrar.listening_addresses if hasattr(a, "port")],
            peers=self._peers())
        view["pool_list"] = stats.pool_views(registrar.handlespace)
        view["recent_refusals"] = stats.recent_refusals(registrar.core)
        return view

    def _peers(self) -> list[dict[str, Any]]:
        return self.registrar.peer_views()

    def _status_page(self, now: float) -> bytes:
        view = self.status(now)
        pools = view["pool_list"]
        pages: dict[str, dict[str, Any]] = {}
        rows = 0
        for pool in pools[:MAX_POOLS]:
            if rows >= MAX_ROWS:
                break
            limit = min(self.page_size, MAX_ROWS - rows)
            result = stats.pe_page(self.registrar.handlespace, bytes.fromhex(pool["handle_hex"]), now, 0, limit)
            if result is not None:
                pages[pool["handle_hex"]] = result
                rows += len(result["pool_elements"])
        return render(status_page(view, pools, pages, view["recent_refusals"][:20], self.refresh))
