"""Applying what peers say to the handlespace: the ownership rules and the
per-peer limits (RFC 5353 3.3 and 3.2.3 merge rules; RFC 5355 2.5, 2.17).

A registrar takes a peer's word only about the PEs whose home the peer is:

- ``add(sender, ...)`` (an ADD_PE, or an entry of a table the sender sent
  about its own PEs) needs the PE parameter's home to be the sender.  The
  local copy of the PE, if any, may be homed elsewhere only if its home no
  longer holds it (docs/takeover.md, "re-homing"): a copy that is
  provisional (below), homed at a server that has no live channel to us
  (dead, stopped, being taken over), or *adopted* by a takeover (here or
  at the peer that won it) and not re-registered there since.  A PE that its home still holds (registered
  here, or homed at a live peer) is not rewritten: the sender's word is a
  ``Contested`` claim, kept (``defer``) until that home lets the PE go (its
  DEL_PE, a sweep, its channel closing, its takeover), then applied, or
  dropped after ``claim_ttl``.  So no peer can steal, rewrite or delete a PE
  that a live registrar holds; a PE whose registrar died moves to the
  registrar it re-registered at as soon as that one says so.
- ``delete(sender, ...)`` removes a PE only if it is homed at the sender.
- ``add_from_mentor`` takes the join download's entries about third
  servers' PEs (RFC 5353 3.2.3): only for a home the mentor listed or that
  is a linked peer, never for this registrar's own PEs, and only where no
  copy exists yet.  Such entries are *provisional*: the home's own word
  (its updates, its re-synchronization) replaces or sweeps them.
- Per-peer limits (``PeerLimits``): PEs homed at the peer, pools holding
  them, the rate of updates.  A refusal changes nothing and says why.

The PE identity (the rserpool extension parameter, docs/enrp.md) goes to
``Handlespace.register``, whose binding rule refuses a PE identifier bound to
another identity (cause 0xa): threat 2.3 holds across registrars.

Learned PEs get no registration deadline here: their home expires them and
announces it (``Handlespace.register(..., deadline=False)``).

Two shortcuts for table pages, each with the result of the rules above:
``add_batch`` takes a run of new PEs of one home in one pool at once
(``Handlespace.insert_new``, all or nothing) when none of the rules or
limits would refuse one of them, else it changes nothing and the caller
takes them one by one; ``add(..., keep_unchanged=True)`` of a copy that is
already exactly what the sender says (a re-synchronization of an unchanged
table) changes nothing.

Pure: no Twisted, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from rserpool.asap.registrar import policy_settings
from rserpool.handlespace import Handlespace, HandlespaceError, PoolElementEntry
from rserpool.enrp.settings import PeerLimits
from rserpool.security.ratelimit import RateLimiter
from rserpool.wire import PoolElement
from rserpool.wire import codes

__all__ = ["Claim", "Contested", "Refused", "UpdateApplier"]


class Refused(Exception):
    """An update refused: ``cause`` (RFC 5354) and a reason for the log."""

    def __init__(self, cause: int, reason: str) -> None:
        super().__init__(reason)
        self.cause = cause
        self.reason = reason


class Contested(Refused):
    """A claim on a PE that its current home (``home``) still holds: not
    applied now; the caller may ``defer`` it."""

    def __init__(self, cause: int, reason: str, home: int) -> None:
        super().__init__(cause, reason)
        self.home = home


@dataclass(slots=True)
class Claim:
    """A contested ADD_PE (or table entry) kept until the PE's home lets go."""

    sender: int
    pool_handle: bytes
    pe: PoolElement
    identity: str | None
    at: float


_SECURITY = codes.CAUSE_SECURITY
_RESOURCES = codes.CAUSE_LACK_OF_RESOURCES


class UpdateApplier:
    """The ownership checks and limits between peers and the handlespace."""

    def __init__(self, handlespace: Handlespace, own_id: int, limits: PeerLimits,
                 max_claims: int = 65536) -> None:
        self.handlespace = handlespace
        self.own_id = own_id
        self.limits = limits
        self.provisional: set[tuple[bytes, int]] = set()
        #: PEs re-homed by a takeover and not re-registered since at their
        #: new home: key -> (the server taken over, the winner: this
        #: registrar or a peer).
        self.adopted: dict[tuple[bytes, int], tuple[int, int]] = {}
        #: Contested claims, one per PE (the latest).
        self.claims: dict[tuple[bytes, int], Claim] = {}
        self.max_claims = max_claims
        #: Whether ``server_id`` still holds its PEs (a live channel to it);
        #: the core answers, alone every home is taken as live.
        self.holds: Callable[[int], bool] = lambda server_id: True
        self._rates = RateLimiter(limits.update_rate, max_keys=4096)
        self.stats = {"applied": 0, "deleted": 0, "refused": 0, "swept": 0, "claims_applied": 0,
                      "claims_dropped": 0, "yielded": 0}
        #: Called with each entry this module removed (the core logs them).
        self.on_removed: Callable[[PoolElementEntry, str], None] = lambda entry, why: None

    # -- rate ---------------------------------------------------------------------------

    def rate_allows(self, sender: int, now: float) -> bool:
        return self._rates.allow(sender, now)

    # -- additions -----------------------------------------------------------------------

    def add(self, sender: int, pool_handle: bytes, pe: PoolElement, identity: str | None,
            now: float, keep_unchanged: bool = False) -> PoolElementEntry:
        """ADD_PE from ``sender`` about its own PE (or its table entry).
        ``keep_unchanged`` (a table entry, which repeats what the sender sent
        before more often than not): a copy that is already exactly that is
        left as it is."""
        if pe.home_server_id != sender:
            self._refuse(_SECURITY, f"PE {pe.pe_id:08x} names home {pe.home_server_id:08x}, not the sender")
        key = (pool_handle, pe.pe_id)
        existing = self.handlespace.get(pool_handle, pe.pe_id)
        adopted = None
        if existing is not None:
            home = existing.home_server_id
            if home != sender:
                adopted = self.adopted.get(key)
                if adopted is not None and adopted[1] == home:
                    pass  # held by a takeover only: the PE's re-registration takes it
                elif home == self.own_id:
                    self._contest(f"PE {pe.pe_id:08x} is homed at this registrar", home)
                elif key not in self.provisional and self.holds(home):
                    self._contest(f"PE {pe.pe_id:08x} is homed at {home:08x}", home)
            elif (keep_unchanged and (identity is None or identity == existing.identity)
                  and key not in self.provisional and (existing.payload is pe or existing.payload == pe)):
                # The sender's word is what we hold: register would change
                # nothing; the rest is what storing it does.
                if self.claims:
                    self.claims.pop(key, None)
                return existing
        entry = self._store(sender, pool_handle, pe, identity, existing, now)
        self.provisional.discard(key)
        self.claims.pop(key, None)
        if adopted is not None:
            del self.adopted[key]
            self.stats["yielded"] += 1
        return entry

    def confirmed(self, pool_handle: bytes, pe_id: int, sender: int) -> None:
        """``sender``'s own update about a PE it adopted: the PE re-registered
        there (a takeover no longer explains where it is)."""
        key = (pool_handle, pe_id)
        adopted = self.adopted.get(key)
        if adopted is not None and adopted[1] == sender:
            del self.adopted[key]

    def add_batch(self, sender: int, pool_handle: bytes, pes: Sequence[PoolElement],
                  identities: Sequence[str | None] | None, now: float,
                  mentor_homes: set[int] | None = None) -> list[PoolElementEntry] | None:
        """New PEs ``pes`` of one home in one pool, from ``sender``'s table
        page, all at once: what ``add`` (``mentor_homes`` None) or
        ``add_from_mentor`` (``mentor_homes``: the homes it accepts) would do
        with each of them when it refuses and skips none (a new PE has no
        home that holds it, so none is contested; a claim waiting on it
        goes, as ``add`` drops it).  None, with nothing changed, when one of
        them needs those one by one: a copy exists here (held, provisional
        or adopted), a rule or a limit (per peer or of the handlespace)
        would refuse one."""
        home = pes[0].home_server_id
        provisional = home != sender
        if provisional and (mentor_homes is None or home == self.own_id or home not in mentor_homes):
            return None
        hs = self.handlespace
        items = []
        for index, pe in enumerate(pes):
            if pe.home_server_id != home:
                return None
            transport = pe.user_transport
            items.append((pe.pe_id, policy_settings(pe.policy), transport.PARAM_TYPE,
                          getattr(transport, "transport_use", 0), pe.registration_life,
                          identities[index] if identities else None, pe))
        limits = self.limits
        if hs.owned_count(home) + len(items) > limits.max_pes:
            return None
        if not hs.owns_in_pool(home, pool_handle) and hs.owned_pool_count(home) >= limits.max_pools:
            return None
        try:
            entries = hs.insert_new(pool_handle, home, items)
        except HandlespaceError:  # a copy exists (0x4), or a rule or limit of the handlespace
            return None
        self.stats["applied"] += len(entries)
        keys = [(pool_handle, pe.pe_id) for pe in pes]
        if provisional:
            self.provisional.update(keys)  # add_from_mentor: a claim on it stays
            return entries
        if self.provisional:
            self.provisional.difference_update(keys)
        claims = self.claims
        if claims:
            for key in keys:
                claims.pop(key, None)
        return entries

    def add_from_mentor(self, mentor: int, known_homes: set[int], pool_handle: bytes,
                        pe: PoolElement, identity: str | None, now: float) -> PoolElementEntry | None:
        """A join-download entry (RFC 5353 3.2.3).  The mentor's own PEs go
        through ``add``; others are taken only as provisional copies (None:
        skipped, e.g. a copy exists or the home is unknown)."""
        home = pe.home_server_id
        if home == mentor:
            return self.add(mentor, pool_handle, pe, identity, now)
        if home == self.own_id or home not in known_homes:
            return None
        if self.handlespace.get(pool_handle, pe.pe_id) is not None:
            return None
        entry = self._store(home, pool_handle, pe, identity, None, now)
        self.provisional.add((pool_handle, pe.pe_id))
        return entry

    def _store(self, home: int, pool_handle: bytes, pe: PoolElement, identity: str | None,
               existing: PoolElementEntry | None, now: float) -> PoolElementEntry:
        handlespace = self.handlespace
        limits = self.limits
        if existing is None or existing.home_server_id != home:
            if handlespace.owned_count(home) >= limits.max_pes:
                self._refuse(_RESOURCES, f"{home:08x} would home more than {limits.max_pes} PEs")
            if (not handlespace.owns_in_pool(home, pool_handle)
                    and handlespace.owned_pool_count(home) >= limits.max_pools):
                self._refuse(_RESOURCES, f"{home:08x} would have PEs in more than {limits.max_pools} pools")
        transport = pe.user_transport
        try:
            result = handlespace.register(
                now,
                pool_handle=pool_handle,
                pe_id=pe.pe_id,
                settings=policy_settings(pe.policy),
                transport_type=transport.PARAM_TYPE,
                transport_use=getattr(transport, "transport_use", 0),
                registration_life=pe.registration_life,
                home_server_id=home,
                identity=identity,
                payload=pe,
                deadline=False,
            )
        except HandlespaceError as exc:
            self._refuse(exc.cause, f"PE {pe.pe_id:08x}: {exc.detail}")
        self.stats["applied"] += 1
        return result.entry

    # -- removals ------------------------------------------------------------------------

    def delete(self, sender: int, pool_handle: bytes, pe_id: int, now: float = 0.0) -> PoolElementEntry | None:
        """DEL_PE from ``sender``: only a PE homed at it (None: unknown PE,
        nothing to do, RFC 5353 3.3.2).  A claim waiting for it is applied."""
        entry = self.handlespace.get(pool_handle, pe_id)
        if entry is None:
            return None
        if entry.home_server_id != sender:
            self._refuse(_SECURITY, f"PE {pe_id:08x} is homed at {entry.home_server_id:08x}, not the sender")
        self._remove(entry, "deleted by its home registrar", now)
        self.stats["deleted"] += 1
        return entry

    def sweep(self, sender: int, marked: set, now: float = 0.0) -> int:
        """Remove the marked PEs still homed at ``sender`` (RFC 5353 3.6.3 step 5)."""
        count = 0
        for pool_handle, pe_id in list(marked):
            entry = self.handlespace.get(pool_handle, pe_id)
            if entry is not None and entry.home_server_id == sender:
                self._remove(entry, "not in its home registrar's table", now)
                count += 1
        self.stats["swept"] += count
        return count

    def _remove(self, entry: PoolElementEntry, why: str, now: float) -> None:
        key = (entry.pool_handle, entry.pe_id)
        self.handlespace.deregister(entry.pool_handle, entry.pe_id)
        self.provisional.discard(key)
        self.adopted.pop(key, None)
        self.on_removed(entry, why)
        self.settle(key, now)

    def forget(self, entry: Any) -> None:
        """A PE left by other means (e.g. re-registered here): not provisional,
        not adopted."""
        key = (entry.pool_handle, entry.pe_id)
        self.provisional.discard(key)
        self.adopted.pop(key, None)

    def _refuse(self, cause: int, reason: str) -> None:
        self.stats["refused"] += 1
        raise Refused(cause, reason)

    def _contest(self, reason: str, home: int) -> None:
        raise Contested(_SECURITY, reason, home)

    # -- re-homing: adopted PEs and contested claims (docs/takeover.md) -----------------------

    def rehome(self, entry: PoolElementEntry, home: int) -> None:
        """Make ``home`` the home of ``entry`` (a takeover), its Pool Element
        parameter saying so too."""
        self.handlespace.set_owner(entry.pool_handle, entry.pe_id, home)
        payload = entry.payload
        if type(payload) is PoolElement and payload.home_server_id != home:
            entry.payload = replace(payload, home_server_id=home)
            entry.payload_cache = None
        self.provisional.discard((entry.pool_handle, entry.pe_id))

    def defer(self, sender: int, pool_handle: bytes, pe: PoolElement, identity: str | None,
              now: float) -> bool:
        """Keep a contested claim (the latest per PE); False if there are
        too many already."""
        key = (pool_handle, pe.pe_id)
        if key not in self.claims and len(self.claims) >= self.max_claims:
            self.stats["claims_dropped"] += 1
            return False
        self.claims[key] = Claim(sender, pool_handle, pe, identity, now)
        return True

    def withdraw(self, sender: int, pool_handle: bytes, pe_id: int) -> bool:
        """``sender`` let go of a PE it had claimed (its DEL_PE for a PE homed
        elsewhere here): its claim goes; whether there was one."""
        key = (pool_handle, pe_id)
        claim = self.claims.get(key)
        if claim is None or claim.sender != sender:
            return False
        del self.claims[key]
        return True

    def settle(self, key: tuple[bytes, int], now: float) -> PoolElementEntry | None:
        """Apply the claim on ``key`` if the PE's home let it go meanwhile
        (the entry is gone, or its home no longer holds it)."""
        claim = self.claims.get(key)
        if claim is None:
            return None
        try:
            entry = self.add(claim.sender, claim.pool_handle, claim.pe, claim.identity, now)
        except Contested:
            return None  # still held: the claim waits
        except Refused:
            self.claims.pop(key, None)
            self.stats["claims_dropped"] += 1
            return None
        self.stats["claims_applied"] += 1
        return entry

    def settle_home(self, home: int, now: float) -> int:
        """``home`` no longer holds its PEs (its channel closed, it was taken
        over): apply the claims on them."""
        applied = 0
        for key in [k for k in self.claims if self._home_of(k) in (home, None)]:
            if self.settle(key, now) is not None:
                applied += 1
        return applied

    def drop_claims(self, sender: int | None = None, older_than: float | None = None) -> int:
        """Forget the claims of ``sender`` (its channel closed), or those
        made before ``older_than``."""
        doomed = [key for key, claim in self.claims.items()
                  if (sender is not None and claim.sender == sender)
                  or (older_than is not None and claim.at < older_than)]
        for key in doomed:
            del self.claims[key]
        self.stats["claims_dropped"] += len(doomed)
        return len(doomed)

    def _home_of(self, key: tuple[bytes, int]) -> int | None:
        entry = self.handlespace.get(*key)
        return None if entry is None else entry.home_server_id
