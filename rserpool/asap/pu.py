"""The pool user's ASAP side (RFC 5352 sections 3.3, 3.5, 3.7.2), sans-IO.

``PuCore`` keeps

- a **cache** of handle resolutions (C1-C4): one entry per pool handle with
  the PEs of the last ASAP_HANDLE_RESOLUTION_RESPONSE, the pool's overall
  policy (round robin when the response carries none) and the time it was
  fetched; an entry older than ``stale_cache_value`` is stale and is
  refreshed before use.  The number of pools (LRU eviction) and of PEs per
  pool (the registrar's first ones are kept) are bounded: a registrar,
  authenticated or not, must not make the PU grow without limit;
- **local selection** state per pool (``rserpool.handlespace.pu_selection``:
  the "Pool User Considerations" of RFC 5356), kept across calls so that
  round robin goes on from where it stopped;
- **pending requests**, one per pool handle, shared by every caller waiting
  for that handle, each with its T1-ENRPrequest deadline and retransmission
  count (3.7.2: on expiry re-send, restart T1 and ask for a server hunt in
  parallel; after MAX-REQUEST-RETRANSMIT retransmissions give up);
- the **unreachability reports** already sent: at most one
  ASAP_ENDPOINT_UNREACHABLE per PE until the PE is resolved again (3.5).

Nothing here reads a clock or touches a socket.  The shell calls in with
``now`` and carries out the outputs:

- ``Send(None, message)``: write on the home registrar's channel;
- ``StartHunt(reason)``: find a (new) home registrar; call ``home_up`` when
  one is connected (the current one may stay in use meanwhile) and
  ``home_lost`` when the home channel closes;
- ``Resolved(tokens, handle, pool_elements)``: the callers ``tokens`` get
  their answer;
- ``ResolutionFailed(tokens, handle, error)``: the callers get ``error`` (a ``PuError``).

``next_deadline()`` tells when ``on_timer(now)`` must run.  See
docs/pu-library.md.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, Union

from rserpool.asap.registrar import policy_settings
from rserpool.handlespace.pu_selection import PuSelector
from rserpool.handlespace.types import (
    POLICY_NAMES,
    ROUND_ROBIN,
    WEIGHTED_RANDOM,
    WEIGHTED_ROUND_ROBIN,
    PolicySettings,
)
from rserpool.outputs import Send
from rserpool.wire import (
    AsapEndpointUnreachable,
    AsapHandleResolution,
    AsapHandleResolutionResponse,
    PoolElement,
)
from rserpool.wire import codes
from rserpool.wire.params import pool_handle_text

__all__ = [
    "CacheEntry",
    "ResolutionFailed",
    "NoUsablePoolElement",
    "PuBusy",
    "PuCore",
    "PuError",
    "PuSettings",
    "Resolved",
    "ResolutionRefused",
    "ResolutionTimeout",
    "Send",
    "StartHunt",
    "UnknownPool",
    "policy_name",
]

#: Default stale_cache_value (RFC 5352 7.2 gives none).  Five seconds: the
#: registrar's keep-alive cycle (interval plus timeout) removes a dead PE
#: within about ten seconds, and adaptive policies (LU, RLU...) carry loads
#: that go out of date quickly, so a longer life would mostly serve stale
#: choices; a shorter one sends a resolution for nearly every use.
DEFAULT_STALE_CACHE_VALUE = 5.0
#: T1-ENRPrequest (RFC 5352 7.1).
DEFAULT_T1 = 15.0
#: MAX-REQUEST-RETRANSMIT (RFC 5352 7.3).
DEFAULT_MAX_REQUEST_RETRANSMIT = 2


# --- errors --------------------------------------------------------------------------


class PuError(Exception):
    """Base of every error the pool-user library reports to its caller."""


class UnknownPool(PuError):
    """The registrar answered Unknown Pool Handle (cause 0x9)."""

    def __init__(self, pool_handle: bytes) -> None:
        super().__init__(f"unknown pool handle {pool_handle_text(pool_handle)}")
        self.pool_handle = pool_handle
        self.cause = codes.CAUSE_UNKNOWN_POOL_HANDLE


class ResolutionRefused(PuError):
    """A negative response with another cause (0xa security, 0x6 resources...)."""

    def __init__(self, pool_handle: bytes, cause: int) -> None:
        name = codes.CAUSE_NAMES.get(cause, f"cause 0x{cause:04x}")
        super().__init__(f"resolution of pool {pool_handle_text(pool_handle)} refused: {name} (0x{cause:x})")
        self.pool_handle = pool_handle
        self.cause = cause


class ResolutionTimeout(PuError):
    """No answer after MAX-REQUEST-RETRANSMIT retransmissions (RFC 5352 3.7.2)."""

    def __init__(self, pool_handle: bytes, attempts: int, waited: float) -> None:
        super().__init__(f"no answer for pool {pool_handle_text(pool_handle)} after {attempts} attempt(s) "
                         f"in {waited:g} s")
        self.pool_handle = pool_handle
        self.attempts = attempts


class NoUsablePoolElement(PuError):
    """The pool is known but no PE can be chosen (all reported or weight 0)."""

    def __init__(self, pool_handle: bytes) -> None:
        super().__init__(f"no usable pool element in pool {pool_handle_text(pool_handle)}")
        self.pool_handle = pool_handle


class PuBusy(PuError):
    """A local limit (pending requests, waiters) refused the request."""


# --- settings -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PuSettings:
    """Timers and limits of a pool user.

    ``serve_stale``: C3 allows answering from a stale entry while it is
    refreshed in the background; off by default (callers wait for the fresh
    answer).  ``resolution_items`` is not sent (RFC 5352 has no item count;
    the registrar decides how many PEs it lists).
    """

    stale_cache_value: float = DEFAULT_STALE_CACHE_VALUE
    t1: float = DEFAULT_T1
    max_request_retransmit: int = DEFAULT_MAX_REQUEST_RETRANSMIT
    max_pools: int = 1024
    max_pes_per_pool: int = 256
    max_pending: int = 256
    max_waiters: int = 1024
    max_reported: int = 4096
    max_queued_reports: int = 64
    serve_stale: bool = False

    def __post_init__(self) -> None:
        if self.stale_cache_value < 0:
            raise ValueError("stale_cache_value must not be negative")
        if self.t1 <= 0:
            raise ValueError("t1 must be positive")
        if self.max_request_retransmit < 0:
            raise ValueError("max_request_retransmit must not be negative")
        for name in ("max_pools", "max_pes_per_pool", "max_pending", "max_waiters",
                     "max_reported", "max_queued_reports"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


# --- outputs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartHunt:
    reason: str


@dataclass(frozen=True, slots=True)
class Resolved:
    tokens: tuple[int, ...]
    pool_handle: bytes
    pool_elements: tuple[PoolElement, ...]


@dataclass(frozen=True, slots=True)
class ResolutionFailed:
    tokens: tuple[int, ...]
    pool_handle: bytes
    error: PuError


Output = Union[Send, StartHunt, Resolved, ResolutionFailed]


# --- state --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Choice:
    """What the PU-side selector needs: the PE id, its policy values, the PE."""

    pe_id: int
    settings: PolicySettings
    element: PoolElement


def policy_name(policy_type: int) -> str:
    return POLICY_NAMES.get(policy_type, f"0x{policy_type:08x}")


def _settings_of(pe: PoolElement) -> PolicySettings:
    try:
        return policy_settings(pe.policy)
    except ValueError:  # pragma: no cover - the wire already checks 32-bit values
        return PolicySettings(getattr(pe.policy, "policy_type", 0))


class CacheEntry:
    """One pool's cached resolution and its selection state."""

    __slots__ = ("pool_handle", "policy_type", "fetched_at", "truncated", "_choices",
                 "_removed", "_selector")

    def __init__(self, pool_handle: bytes, pool_elements: Iterable[PoolElement],
                 policy_type: int, fetched_at: float, rng: random.Random,
                 truncated: bool = False) -> None:
        self.pool_handle = pool_handle
        self.policy_type = policy_type
        self.fetched_at = fetched_at
        self.truncated = truncated
        choices = tuple(_Choice(pe.pe_id, _settings_of(pe), pe) for pe in pool_elements)
        self._choices = choices
        self._removed: set[int] = set()
        usable = choices
        if policy_type in (WEIGHTED_ROUND_ROBIN, WEIGHTED_RANDOM):
            usable = tuple(c for c in choices if c.settings.weight > 0)  # weight 0: cannot serve
        self._selector: PuSelector[_Choice] = PuSelector(policy_type, usable, rng)

    @property
    def pool_elements(self) -> tuple[PoolElement, ...]:
        removed = self._removed
        return tuple(c.element for c in self._choices if c.pe_id not in removed)

    def __len__(self) -> int:
        return len(self._choices) - len(self._removed)

    def __contains__(self, pe_id: int) -> bool:
        return pe_id not in self._removed and any(c.pe_id == pe_id for c in self._choices)

    def stale(self, now: float, stale_cache_value: float) -> bool:
        return now - self.fetched_at >= stale_cache_value or now < self.fetched_at

    def remove(self, pe_id: int) -> bool:
        """Drop one PE (reported unreachable or purged); True if it was there."""
        if pe_id in self:
            self._removed.add(pe_id)
            return True
        return False

    def select(self) -> PoolElement | None:
        choice = self._selector.select(self._removed)
        return None if choice is None else choice.element


@dataclass(eq=False, slots=True)
class _Pending:
    pool_handle: bytes
    created: float
    deadline: float
    tokens: list[int] = field(default_factory=list)
    retransmissions: int = 0
    sent: int = 0


# --- the core ---------------------------------------------------------------------------


class PuCore:
    """Cache, selection, pending requests and reports of one pool user."""

    def __init__(self, settings: PuSettings | None = None, *, rng: random.Random | None = None) -> None:
        self.settings = settings or PuSettings()
        self.rng = rng or random.Random()
        self.has_home = False
        self._cache: OrderedDict[bytes, CacheEntry] = OrderedDict()
        self._pending: dict[bytes, _Pending] = {}
        self._token_handle: dict[int, bytes] = {}
        self._reported: OrderedDict[tuple[bytes, int], None] = OrderedDict()
        self._queued_reports: list[AsapEndpointUnreachable] = []
        self._hunt_requested = False
        self.stats = {"requests": 0, "retransmissions": 0, "responses": 0, "cache_hits": 0,
                      "reports": 0, "reports_suppressed": 0, "truncated": 0, "ignored": 0}

    # -- cache ------------------------------------------------------------------------

    def cached(self, pool_handle: bytes) -> CacheEntry | None:
        """The cache entry of ``pool_handle`` (fresh or stale), if any."""
        return self._cache.get(pool_handle)

    def is_fresh(self, pool_handle: bytes, now: float) -> bool:
        entry = self._cache.get(pool_handle)
        return entry is not None and not entry.stale(now, self.settings.stale_cache_value)

    def invalidate(self, pool_handle: bytes, pe_id: int | None = None) -> bool:
        """Cache purge (RFC 5352 6.4): the whole pool, or one PE of it."""
        entry = self._cache.get(pool_handle)
        if entry is None:
            return False
        if pe_id is None:
            del self._cache[pool_handle]
            return True
        return entry.remove(pe_id)

    def pool_count(self) -> int:
        return len(self._cache)

    # -- requests ---------------------------------------------------------------------

    def resolve(self, pool_handle: bytes, token: int, now: float, *, force: bool = False) -> list[Output]:
        """Caller ``token`` wants the PEs of ``pool_handle`` (C1-C4).

        A fresh cache entry answers at once (C4); otherwise (or with
        ``force``, the cache-populate primitive of RFC 5352 6.3) the caller
        joins the pending request for that handle, sending one if there is
        none (NR1-NR4).
        """
        if not isinstance(pool_handle, bytes) or not pool_handle:
            raise ValueError("a pool handle is non-empty bytes")
        if token in self._token_handle:
            raise ValueError(f"token {token} is already waiting")
        entry = self._cache.get(pool_handle)
        if entry is not None and not force:
            stale = entry.stale(now, self.settings.stale_cache_value)
            if not stale or self.settings.serve_stale:
                self._cache.move_to_end(pool_handle)
                self.stats["cache_hits"] += 1
                out: list[Output] = [Resolved((token,), pool_handle, entry.pool_elements)]
                if stale and pool_handle not in self._pending:
                    out.extend(self._refresh(pool_handle, None, now))
                return out
        return self._refresh(pool_handle, token, now)

    def _refresh(self, pool_handle: bytes, token: int | None, now: float) -> list[Output]:
        pending = self._pending.get(pool_handle)
        if pending is not None:
            if token is not None:
                if len(pending.tokens) >= self.settings.max_waiters:
                    return [ResolutionFailed((token,), pool_handle,
                                   PuBusy(f"too many callers waiting for pool {pool_handle_text(pool_handle)}"))]
                pending.tokens.append(token)
                self._token_handle[token] = pool_handle
            return []
        if len(self._pending) >= self.settings.max_pending:
            if token is None:
                return []
            return [ResolutionFailed((token,), pool_handle, PuBusy("too many pending handle resolutions"))]
        pending = _Pending(pool_handle, now, now + self.settings.t1)
        if token is not None:
            pending.tokens.append(token)
            self._token_handle[token] = pool_handle
        self._pending[pool_handle] = pending
        self.stats["requests"] += 1
        if self.has_home:
            pending.sent += 1
            return [Send(None, AsapHandleResolution(pool_handle))]
        return self._want_hunt("no home registrar")

    def cancel(self, token: int) -> None:
        """Caller ``token`` is no longer interested (the request stays shared)."""
        handle = self._token_handle.pop(token, None)
        if handle is None:
            return
        pending = self._pending.get(handle)
        if pending is not None and token in pending.tokens:
            pending.tokens.remove(token)

    def _want_hunt(self, reason: str) -> list[Output]:
        if self._hunt_requested:
            return []
        self._hunt_requested = True
        return [StartHunt(reason)]

    # -- registrar connection ----------------------------------------------------------

    def home_up(self, now: float) -> list[Output]:
        """A (new) home registrar is connected: send every pending request
        to it and restart their T1 (3.7.2: adopt the responding server and
        re-send), then the queued unreachability reports."""
        self.has_home = True
        self._hunt_requested = False
        out: list[Output] = []
        for pending in self._pending.values():
            pending.deadline = now + self.settings.t1
            pending.sent += 1
            out.append(Send(None, AsapHandleResolution(pending.pool_handle)))
        queued, self._queued_reports = self._queued_reports, []
        out.extend(Send(None, report) for report in queued)
        return out

    def home_lost(self, now: float) -> list[Output]:
        """The home channel closed (3.7.1: hunt, then re-send)."""
        self.has_home = False
        self._hunt_requested = False
        if self._pending or self._queued_reports:
            return self._want_hunt("home registrar lost")
        return []

    def hunt_over(self) -> None:
        """The shell's hunt ended without a new home (e.g. it was cancelled)."""
        self._hunt_requested = False

    # -- responses ----------------------------------------------------------------------

    def message_received(self, message: Any, now: float) -> list[Output]:
        """A message from the home registrar."""
        if type(message) is AsapHandleResolutionResponse:
            return self._on_response(message, now)
        self.stats["ignored"] += 1  # ASAP_ERROR and others: T1 covers a lost request
        return []

    def _on_response(self, msg: AsapHandleResolutionResponse, now: float) -> list[Output]:
        handle = msg.pool_handle
        pending = self._pending.pop(handle, None)
        if pending is None:
            self.stats["ignored"] += 1  # not asked for (or already given up): not cached
            return []
        self.stats["responses"] += 1
        tokens = tuple(pending.tokens)
        for token in tokens:
            self._token_handle.pop(token, None)
        if msg.error is not None:
            cause = msg.error.causes[0].code if msg.error.causes else codes.CAUSE_UNSPECIFIED
            if cause == codes.CAUSE_UNKNOWN_POOL_HANDLE:
                self._cache.pop(handle, None)  # the pool is gone
                error: PuError = UnknownPool(handle)
            else:
                error = ResolutionRefused(handle, cause)
            return [ResolutionFailed(tokens, handle, error)] if tokens else []
        entry = self._store(handle, msg, now)
        return [Resolved(tokens, handle, entry.pool_elements)] if tokens else []

    def _store(self, handle: bytes, msg: AsapHandleResolutionResponse, now: float) -> CacheEntry:
        limit = self.settings.max_pes_per_pool
        pes = msg.pool_elements
        truncated = len(pes) > limit
        if truncated:
            self.stats["truncated"] += 1
            pes = pes[:limit]
        # Duplicated PE ids (a confused registrar): keep the first.
        seen: set[int] = set()
        unique = []
        for pe in pes:
            if pe.pe_id not in seen:
                seen.add(pe.pe_id)
                unique.append(pe)
        policy_type = msg.policy.policy_type if msg.policy is not None else ROUND_ROBIN
        entry = CacheEntry(handle, unique, policy_type, now, self.rng, truncated)
        self._cache[handle] = entry
        self._cache.move_to_end(handle)
        while len(self._cache) > self.settings.max_pools:
            self._cache.popitem(last=False)
        for pe_id in seen:  # resolved again: a new failure is a new event
            self._reported.pop((handle, pe_id), None)
        return entry

    # -- selection ---------------------------------------------------------------------

    def select(self, pool_handle: bytes) -> PoolElement:
        """One PE of the cached pool by its overall policy (RFC 5356 PU rules).

        Raises ``KeyError`` when the pool is not cached and
        ``NoUsablePoolElement`` when no PE can be chosen.
        """
        entry = self._cache[pool_handle]
        chosen = entry.select()
        if chosen is None:
            raise NoUsablePoolElement(pool_handle)
        return chosen

    # -- unreachability -------------------------------------------------------------------

    def report_unreachable(self, pool_handle: bytes, pe_id: int, now: float) -> tuple[bool, list[Output]]:
        """The PE ``pe_id`` of ``pool_handle`` failed (RFC 5352 3.5).

        Removes it from the cache and reports it to the registrar, at most
        once until the PE is resolved again.  Returns (reported, outputs).
        """
        entry = self._cache.get(pool_handle)
        if entry is not None:
            entry.remove(pe_id)
        key = (pool_handle, pe_id)
        if key in self._reported:
            self.stats["reports_suppressed"] += 1
            return False, []
        self._reported[key] = None
        while len(self._reported) > self.settings.max_reported:
            self._reported.popitem(last=False)
        self.stats["reports"] += 1
        report = AsapEndpointUnreachable(pool_handle, pe_id)
        if self.has_home:
            return True, [Send(None, report)]
        if len(self._queued_reports) >= self.settings.max_queued_reports:
            self._queued_reports.pop(0)
        self._queued_reports.append(report)
        return True, self._want_hunt("unreachability report to send")

    def was_reported(self, pool_handle: bytes, pe_id: int) -> bool:
        return (pool_handle, pe_id) in self._reported

    # -- timers -------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        if not self._pending:
            return None
        return min(p.deadline for p in self._pending.values())

    def on_timer(self, now: float) -> list[Output]:
        """T1-ENRPrequest expiries (3.7.2)."""
        out: list[Output] = []
        hunt = False
        for handle, pending in list(self._pending.items()):
            if pending.deadline > now:
                continue
            if pending.retransmissions >= self.settings.max_request_retransmit:
                del self._pending[handle]
                tokens = tuple(pending.tokens)
                for token in tokens:
                    self._token_handle.pop(token, None)
                if tokens:
                    error = ResolutionTimeout(handle, pending.sent, now - pending.created)
                    out.append(ResolutionFailed(tokens, handle, error))
                continue
            pending.retransmissions += 1
            pending.deadline = now + self.settings.t1
            hunt = True
            if self.has_home:
                pending.sent += 1
                self.stats["retransmissions"] += 1
                out.append(Send(None, AsapHandleResolution(handle)))
        if hunt:
            out.extend(self._want_hunt("T1-ENRPrequest expired"))
        return out
