"""The handlespace store: pools, pool elements, owners, checksums, deadlines.

What it stores and answers (``PoolElementEntry``, ``PoolInfo``,
``RegistrationResult``), its limits and its errors are in
:mod:`rserpool.handlespace.entries`.

Pure Python (no Twisted, no clock, no wire framing): every call that needs
the time takes ``now`` in float seconds.  Rules follow RFC 5352 section 3.1
(registration, re-registration, consistency of policy type, transport type
and data/control use), section 3.2 (deregistration), 3.3 (handle
resolution), 3.5 (unreachability reports) and RFC 5353 sections 3.6.2
(PE checksum per owner, kept incrementally) and 3.9 (takeover).  Refusals
raise ``HandlespaceError`` with the RFC 5354 cause code and change nothing.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterator, Sequence

from rserpool.fastinit import fast_constructor
from rserpool.handlespace.entries import (
    CAUSE_INCONSISTENT_DATA_CONTROL, CAUSE_INCONSISTENT_POLICY, CAUSE_INCONSISTENT_TRANSPORT,
    CAUSE_INVALID_VALUES, CAUSE_LACK_OF_RESOURCES, CAUSE_SECURITY, CAUSE_UNKNOWN_POOL_HANDLE,
    INFINITE_LIFE, MAX_INT32, TRANSPORT_TYPES, USE_DATA_AND_CONTROL, USE_DATA_ONLY,
    HandlespaceError, HandlespaceLimits, PoolElementEntry, PoolInfo, RegistrationResult,
)
from rserpool.handlespace._store import Owner as _Owner, Pool as _Pool, check_uint32 as _check_uint32
from rserpool.handlespace.bulk import NewEntry, insert_new
from rserpool.handlespace.policies import is_reserved_policy_type, make_policy
from rserpool.handlespace.timers import DeadlineQueue
from rserpool.handlespace.types import MAX_UINT32, PolicySettings, SelectionPolicy
from rserpool.identity import normalize_identity
from rserpool.wire.checksum import finish, pe_checksum

__all__ = ["Handlespace", "NewEntry", "PolicyFactory"]

PolicyFactory = Callable[[int], SelectionPolicy]


def _default_factory(rng: random.Random) -> PolicyFactory:
    def factory(policy_type: int) -> SelectionPolicy:
        return make_policy(policy_type, rng)

    return factory


class Handlespace:
    """All pools of one registrar, with owners, checksums and deadlines."""

    def __init__(
        self,
        limits: HandlespaceLimits | None = None,
        rng: random.Random | None = None,
        policy_factory: PolicyFactory | None = None,
    ) -> None:
        self.limits = limits if limits is not None else HandlespaceLimits()
        self._rng = rng if rng is not None else random.Random()
        self._factory = policy_factory if policy_factory is not None else _default_factory(self._rng)
        self._pools: dict[bytes, _Pool] = {}
        self._owners: dict[int, _Owner] = {}
        self._identity_counts: dict[str, int] = {}
        self._identity_pools: dict[str, dict[bytes, int]] = {}  # identity -> pool -> its PEs there
        self._count = 0
        # Lazy postponement: a re-registration or the next keep-alive moves a
        # deadline later, which then costs no heap push.
        self._expiry: DeadlineQueue[PoolElementEntry] = DeadlineQueue(
            "_expiry_token", queued_slot="_expiry_queued", wanted_slot="expires_at")
        self._keepalives: DeadlineQueue[PoolElementEntry] = DeadlineQueue(
            "_keepalive_token", queued_slot="_keepalive_queued", wanted_slot="keepalive_due")

    # ------------------------------------------------------------------ reads

    def __len__(self) -> int:
        """The number of PEs in all pools."""
        return self._count

    @property
    def pool_count(self) -> int:
        return len(self._pools)

    def pool_handles(self) -> list[bytes]:
        return list(self._pools)

    def pool_info(self, pool_handle: bytes) -> PoolInfo | None:
        pool = self._pools.get(pool_handle)
        if pool is None:
            return None
        return PoolInfo(pool.handle, pool.policy_type, pool.transport_type, pool.transport_use, len(pool.members))

    def pool_size(self, pool_handle: bytes) -> int:
        pool = self._pools.get(pool_handle)
        return 0 if pool is None else len(pool.members)

    def get(self, pool_handle: bytes, pe_id: int) -> PoolElementEntry | None:
        pool = self._pools.get(pool_handle)
        return None if pool is None else pool.members.get(pe_id)

    def pool_members(self, pool_handle: bytes) -> list[PoolElementEntry]:
        """All PEs of a pool in registration order (no policy involved)."""
        pool = self._pools.get(pool_handle)
        if pool is None:
            raise HandlespaceError(CAUSE_UNKNOWN_POOL_HANDLE, "unknown pool handle")
        return list(pool.members.values())

    def entries(self) -> Iterator[PoolElementEntry]:
        """Every PE, pool by pool."""
        for pool in self._pools.values():
            yield from pool.members.values()

    def owner_identity(self, pool_handle: bytes, pe_id: int) -> str | None:
        """The authenticated identity bound to a PE (None: unbound or unknown)."""
        entry = self.get(pool_handle, pe_id)
        return None if entry is None else entry.identity

    def identity_count(self, identity: str) -> int:
        """PEs bound to ``identity`` (any spelling of it)."""
        return self._identity_counts.get(normalize_identity(identity) or "", 0)

    def identity_pools(self, identity: str) -> int:
        """The number of pools in which ``identity`` (any spelling) has PEs."""
        pools = self._identity_pools.get(normalize_identity(identity) or "")
        return 0 if pools is None else len(pools)

    def identity_in_pool(self, identity: str, pool_handle: bytes) -> bool:
        """Whether ``identity`` (any spelling) has a PE in the pool."""
        pools = self._identity_pools.get(normalize_identity(identity) or "")
        return pools is not None and pool_handle in pools

    def identity_pools_joining(self, identity: str, pool_handle: bytes) -> int | None:
        """For a registration by ``identity`` (any spelling) in the pool:
        None when it has a PE there already, else ``identity_pools``."""
        pools = self._identity_pools.get(normalize_identity(identity) or "")
        if pools is None:
            return 0
        return None if pool_handle in pools else len(pools)

    # -------------------------------------------------------------- ownership

    def owners(self) -> list[int]:
        """Server ids owning at least one PE."""
        return list(self._owners)

    def pes_owned_by(self, server_id: int) -> list[PoolElementEntry]:
        """The PEs whose home ENRP server is ``server_id``."""
        owner = self._owners.get(server_id)
        return [] if owner is None else list(owner.members)

    def owned_count(self, server_id: int) -> int:
        owner = self._owners.get(server_id)
        return 0 if owner is None else len(owner.members)

    def owned_pool_count(self, server_id: int) -> int:
        """The number of pools holding at least one PE of ``server_id``."""
        owner = self._owners.get(server_id)
        return 0 if owner is None else len(owner.pools)

    def owns_in_pool(self, server_id: int, pool_handle: bytes) -> bool:
        """Whether ``server_id`` is the home of a PE in pool ``pool_handle``."""
        owner = self._owners.get(server_id)
        return owner is not None and pool_handle in owner.pools

    def checksum(self, server_id: int) -> int:
        """The RFC 5353 PE checksum of ``server_id``'s PEs (0xffff if none)."""
        owner = self._owners.get(server_id)
        return finish(0 if owner is None else owner.total)

    def checksum_total(self, server_id: int) -> int:
        """The unfolded running total behind ``checksum``."""
        owner = self._owners.get(server_id)
        return 0 if owner is None else owner.total

    def recompute_checksum(self, server_id: int) -> int:
        """Full recomputation over all pools, independent of the owner index."""
        return pe_checksum(
            (entry.pool_handle, entry.pe_id) for entry in self.entries() if entry.home_server_id == server_id
        )

    def set_owner(self, pool_handle: bytes, pe_id: int, server_id: int) -> PoolElementEntry:
        """Move one PE to another home ENRP server."""
        pool = self._pools.get(pool_handle)
        if pool is None:
            raise HandlespaceError(CAUSE_UNKNOWN_POOL_HANDLE, "unknown pool handle")
        entry = pool.members.get(pe_id)
        if entry is None:
            raise KeyError(pe_id)
        _check_uint32("home_server_id", server_id)
        self._move_owner(pool, entry, server_id)
        return entry

    def take_over(self, old_server_id: int, new_server_id: int) -> list[PoolElementEntry]:
        """Make ``new_server_id`` the home of every PE of ``old_server_id``
        (RFC 5353 section 3.9); returns the moved PEs."""
        _check_uint32("new_server_id", new_server_id)
        moved = self.pes_owned_by(old_server_id)
        if old_server_id == new_server_id:
            return moved
        for entry in moved:
            self._move_owner(self._pools[entry.pool_handle], entry, new_server_id)
        return moved

    # ------------------------------------------------------------ registration

    def register(
        self,
        now: float,
        *,
        pool_handle: bytes,
        pe_id: int,
        settings: PolicySettings,
        transport_type: int,
        transport_use: int,
        registration_life: int,
        home_server_id: int,
        identity: str | None = None,
        payload: Any = None,
        deadline: bool = True,
    ) -> RegistrationResult:
        """Register a PE or re-register it in place (RFC 5352 section 3.1).

        The PE's owner becomes ``home_server_id`` (ownership moves on a
        re-registration).  Identity binding: a PE bound to an identity can
        only be re-registered by that identity (cause 0xa); ``identity=None``
        (e.g. an update learned from an ENRP peer) keeps the existing
        binding; an unbound PE becomes bound to the first identity given.
        ``deadline=False``: the PE keeps no registration deadline (one
        learned from its home registrar, which expires it; as
        ``cancel_expiry`` afterwards).
        Raises ``HandlespaceError`` and changes nothing on refusal.
        """
        limits = self.limits
        # Fast path: a re-registration consistent with its pool by the same (or
        # no) identity, with plain in-range values.  Whatever it does not take
        # goes through the checks below, which then find the same facts.
        pool = self._pools.get(pool_handle) if type(pool_handle) is bytes else None
        if (pool is not None and type(pe_id) is int and type(home_server_id) is int
                and type(registration_life) is int and 0 <= home_server_id <= MAX_UINT32
                and (0 <= registration_life <= limits.max_registration_life or registration_life == INFINITE_LIFE)
                and settings.policy_type == pool.policy_type and transport_type == pool.transport_type
                and transport_use == pool.transport_use and len(pool_handle) <= limits.max_pool_handle_length):
            entry = pool.members.get(pe_id)
            if entry is not None and (identity is None or identity == entry.identity):
                life = registration_life
                if life == INFINITE_LIFE and limits.max_registration_life < MAX_INT32:
                    life = limits.max_registration_life
                pool.policy.update(entry, settings)
                entry.transport_type = transport_type
                entry.transport_use = transport_use
                entry.registration_life = life
                entry.payload = payload
                entry.unreachable = None
                previous_owner = entry.home_server_id
                if previous_owner != home_server_id:
                    self._move_owner(pool, entry, home_server_id)
                if life == INFINITE_LIFE or not deadline:
                    entry.expires_at = None
                    self._expiry.cancel(entry)
                else:
                    self._expiry.schedule(entry, now + life)  # sets entry.expires_at
                return _make_result(entry, False, previous_owner)
        # Bound and counted in normalized form (rserpool.identity): one owner, one quota.
        if identity is not None:
            identity = normalize_identity(identity)
            if identity is None:
                raise HandlespaceError(CAUSE_SECURITY, "not a valid identity")
        # Validation (cause 0x3) and the handle length limit (0x6): plain
        # values pass one test; anything else is checked field by field.
        if not (type(pool_handle) is bytes and 0 < len(pool_handle) <= limits.max_pool_handle_length
                and type(pe_id) is int and 0 < pe_id <= MAX_UINT32
                and type(home_server_id) is int and 0 <= home_server_id <= MAX_UINT32
                and transport_type in TRANSPORT_TYPES
                and (transport_use == USE_DATA_ONLY or transport_use == USE_DATA_AND_CONTROL)
                and type(registration_life) is int and 0 <= registration_life <= MAX_INT32):
            _check_values(limits, pool_handle, pe_id, home_server_id, transport_type, transport_use,
                          registration_life)
        # A finite max_registration_life also bounds an infinite life.
        registration_life_used = registration_life
        if registration_life == INFINITE_LIFE:
            if limits.max_registration_life < MAX_INT32:
                registration_life_used = limits.max_registration_life
        elif registration_life > limits.max_registration_life:
            registration_life_used = limits.max_registration_life

        if is_reserved_policy_type(settings.policy_type):
            raise HandlespaceError(CAUSE_INVALID_VALUES, "reserved policy type (RFC 5356 section 7.1)", "policy")

        pool = self._pools.get(pool_handle)
        entry = None if pool is None else pool.members.get(pe_id)

        # Identity binding (cause 0xa).
        if entry is not None and entry.identity is not None and identity is not None and identity != entry.identity:
            raise HandlespaceError(CAUSE_SECURITY, "PE identifier bound to another identity")

        # Consistency with the pool (RFC 5352 section 3.1 rules 2 and 3).
        if pool is not None:
            if settings.policy_type != pool.policy_type:
                raise HandlespaceError(CAUSE_INCONSISTENT_POLICY, "policy type differs from the pool's")
            if transport_type != pool.transport_type:
                raise HandlespaceError(CAUSE_INCONSISTENT_TRANSPORT, "transport type differs from the pool's")
            if transport_use != pool.transport_use:
                raise HandlespaceError(CAUSE_INCONSISTENT_DATA_CONTROL, "transport use differs from the pool's")

        # Limits (cause 0x6), all checked before anything changes.
        new_identity = identity if identity is not None else (entry.identity if entry is not None else None)
        if entry is None:
            if pool is None and len(self._pools) >= limits.max_pools:
                raise HandlespaceError(CAUSE_LACK_OF_RESOURCES, "too many pools")
            if pool is not None and len(pool.members) >= limits.max_pes_per_pool:
                raise HandlespaceError(CAUSE_LACK_OF_RESOURCES, "pool is full")
            if self._count >= limits.max_pes:
                raise HandlespaceError(CAUSE_LACK_OF_RESOURCES, "handlespace is full")
        if new_identity is not None and (entry is None or entry.identity != new_identity):
            if self._identity_counts.get(new_identity, 0) >= limits.max_pes_per_identity:
                raise HandlespaceError(CAUSE_LACK_OF_RESOURCES, "too many PEs for this identity")

        created_pool = False
        if pool is None:
            try:
                policy = self._factory(settings.policy_type)
            except ValueError as exc:
                raise HandlespaceError(CAUSE_INVALID_VALUES, f"unusable policy: {exc}", "policy") from exc
            pool = _Pool(pool_handle, policy, settings.policy_type, transport_type, transport_use)
            created_pool = True

        if entry is None:
            entry = PoolElementEntry(
                pool_handle,
                pe_id,
                settings,
                transport_type,
                transport_use,
                registration_life_used,
                home_server_id,
                new_identity,
                payload,
            )
            pool.policy.add(entry)  # the one call that may fail: nothing is changed yet
            if created_pool:
                self._pools[pool_handle] = pool
            pool.members[pe_id] = entry
            self._count += 1
            self._owner_add(pool, entry, home_server_id)
            if new_identity is not None:
                self._identity_counts[new_identity] = self._identity_counts.get(new_identity, 0) + 1
                self._pool_joined(new_identity, pool_handle)
            previous_owner = None
            created = True
        else:
            pool.policy.update(entry, settings)
            entry.transport_type = transport_type
            entry.transport_use = transport_use
            entry.registration_life = registration_life_used
            entry.payload = payload
            entry.unreachable = None
            if new_identity != entry.identity:  # only None -> identity here
                self._identity_counts[new_identity] = self._identity_counts.get(new_identity, 0) + 1
                self._pool_joined(new_identity, pool_handle)
                entry.identity = new_identity
            previous_owner = entry.home_server_id
            self._move_owner(pool, entry, home_server_id)
            created = False

        if registration_life_used == INFINITE_LIFE or not deadline:
            entry.expires_at = None
            self._expiry.cancel(entry)
        else:
            self._expiry.schedule(entry, now + registration_life_used)  # sets entry.expires_at
        return _make_result(entry, created, previous_owner)

    def insert_new(self, pool_handle: bytes, home_server_id: int, items: Sequence[tuple]) -> list[PoolElementEntry]:
        """Add the new PEs ``items`` (``NewEntry`` tuples) of one home to one
        pool at once, all of them or none (``HandlespaceError``, nothing
        changed), checked as ``register`` checks each; they get no
        registration deadline (learned PEs).  See :mod:`rserpool.handlespace.bulk`."""
        return insert_new(self, pool_handle, home_server_id, items)

    def deregister(self, pool_handle: bytes, pe_id: int, identity: str | None = None) -> PoolElementEntry | None:
        """Remove a PE (RFC 5352 section 3.2); ``None`` if it is unknown
        (the registrar answers that as success).  With ``identity`` given, a
        PE bound to another identity is refused with cause 0xa."""
        entry = self.get(pool_handle, pe_id)
        if entry is None:
            return None
        if (identity is not None and entry.identity is not None and identity != entry.identity
                and normalize_identity(identity) != entry.identity):
            raise HandlespaceError(CAUSE_SECURITY, "PE identifier bound to another identity")
        self._remove(entry)
        return entry

    def remove_entry(self, entry: PoolElementEntry) -> bool:
        """Remove ``entry`` if it is still the PE registered under its key
        (False: it is not, nothing changed); no identity check."""
        pool = self._pools.get(entry.pool_handle)
        if pool is None or pool.members.get(entry.pe_id) is not entry:
            return False
        self._remove(entry)
        return True

    def expire(self, now: float, limit: int | None = None) -> list[PoolElementEntry]:
        """Remove and return the PEs whose registration life has run out
        (deadline ``<= now``), earliest first, at most ``limit``."""
        removed = self._expiry.pop_due(now, limit)
        for entry in removed:
            self._remove(entry)
        return removed

    def next_deadline(self) -> float | None:
        """The earliest expiry or keep-alive deadline (to arm one timer)."""
        expiry = self._expiry.next_deadline()
        keepalive = self._keepalives.next_deadline()
        if expiry is None or (keepalive is not None and keepalive < expiry):
            return keepalive
        return expiry

    def take_earliest_scheduled(self) -> float | None:
        """The earliest expiry or keep-alive deadline set since the last
        call (None: none was set).  A shell that armed its timer at
        ``next_deadline()`` and called this then must re-arm only when a
        later call returns something earlier (deadlines set since may have
        been moved again: the timer may then fire with nothing due).
        Deadlines moved later need no timer of their own and may be left
        out (see ``DeadlineQueue.take_low``)."""
        expiry = self._expiry.take_low()
        keepalive = self._keepalives.take_low()
        if expiry is None or (keepalive is not None and keepalive < expiry):
            return keepalive
        return expiry

    def schedule_expiry(self, entry: PoolElementEntry, deadline: float) -> None:
        """Expire a registered ``entry`` at ``deadline``: a PE this registrar
        took over from a dead peer (docs/takeover.md), kept until it
        re-registers or its registration life has passed."""
        self._expiry.schedule(entry, deadline)  # sets entry.expires_at

    def cancel_expiry(self, entry: PoolElementEntry) -> None:
        """Keep a registered ``entry`` without a registration deadline: an
        entry learned from an ENRP peer, which its home registrar expires and
        announces (docs/enrp.md).  A later ``register`` sets one again."""
        entry.expires_at = None
        self._expiry.cancel(entry)

    # ------------------------------------------------------------- resolution

    def resolve(self, pool_handle: bytes, n: int | None = None) -> list[PoolElementEntry]:
        """Select up to ``n`` PEs of a pool through its policy (``None``:
        all of them, still in the policy's order).  Unknown pool: cause 0x9."""
        pool = self._pools.get(pool_handle)
        if pool is None:
            raise HandlespaceError(CAUSE_UNKNOWN_POOL_HANDLE, "unknown pool handle")
        if n is None:
            n = len(pool.members)
        elif n < 1:
            raise ValueError("n must be at least 1")
        return list(pool.policy.select(n))

    # ------------------------------------------------------------- keep-alive

    def schedule_keepalive(self, pool_handle: bytes, pe_id: int, due: float) -> None:
        entry = self._require(pool_handle, pe_id)
        self._keepalives.schedule(entry, due)  # sets entry.keepalive_due

    def schedule_entry_keepalive(self, entry: PoolElementEntry, due: float) -> None:
        """``schedule_keepalive`` for an entry at hand (one returned by
        ``register``, still registered)."""
        self._keepalives.schedule(entry, due)  # sets entry.keepalive_due

    def cancel_keepalive(self, pool_handle: bytes, pe_id: int) -> None:
        entry = self.get(pool_handle, pe_id)
        if entry is not None:
            entry.keepalive_due = None
            self._keepalives.cancel(entry)

    def due_keepalives(self, now: float, limit: int | None = None) -> list[PoolElementEntry]:
        """Pop the PEs whose keep-alive is due (each is returned once; the
        caller schedules the next one)."""
        due = self._keepalives.pop_due(now, limit)
        for entry in due:
            entry.keepalive_due = None
        return due

    # ---------------------------------------------------------- unreachability

    def report_unreachable(self, pool_handle: bytes, pe_id: int, reporter: Any, now: float) -> int:
        """Count an ASAP_ENDPOINT_UNREACHABLE report (RFC 5352 section 3.5).

        Returns the number of distinct reporters within the current window
        (``limits.unreachable_window`` from the first report; bounded by
        ``limits.max_unreachable_reporters``); 0 for an unknown PE.  The
        registrar compares it with MAX-BAD-PE-REPORT.  A re-registration or
        ``clear_unreachable`` resets it.
        """
        entry = self.get(pool_handle, pe_id)
        if entry is None:
            return 0
        state = entry.unreachable
        if state is None or now - state[0] > self.limits.unreachable_window or now < state[0]:
            entry.unreachable = (now, (reporter,))
            return 1
        first, reporters = state
        if reporter not in reporters and len(reporters) < self.limits.max_unreachable_reporters:
            reporters = reporters + (reporter,)
            entry.unreachable = (first, reporters)
        return len(reporters)

    def clear_unreachable(self, pool_handle: bytes, pe_id: int) -> None:
        entry = self.get(pool_handle, pe_id)
        if entry is not None:
            entry.unreachable = None

    # --------------------------------------------------------------- internals

    def _require(self, pool_handle: bytes, pe_id: int) -> PoolElementEntry:
        pool = self._pools.get(pool_handle)
        if pool is None:
            raise HandlespaceError(CAUSE_UNKNOWN_POOL_HANDLE, "unknown pool handle")
        entry = pool.members.get(pe_id)
        if entry is None:
            raise KeyError(pe_id)
        return entry

    def _owner_add(self, pool: _Pool, entry: PoolElementEntry, server_id: int) -> None:
        owner = self._owners.get(server_id)
        if owner is None:
            owner = self._owners[server_id] = _Owner()
        owner.members[entry] = None
        pe_id = entry.pe_id
        owner.total += pool.handle_sum + (pe_id >> 16) + (pe_id & 0xFFFF)
        pools = owner.pools
        handle = pool.handle
        pools[handle] = pools.get(handle, 0) + 1
        entry.home_server_id = server_id

    def _owner_remove(self, pool: _Pool, entry: PoolElementEntry) -> None:
        server_id = entry.home_server_id
        owner = self._owners[server_id]
        del owner.members[entry]
        pe_id = entry.pe_id
        owner.total -= pool.handle_sum + (pe_id >> 16) + (pe_id & 0xFFFF)
        pools = owner.pools
        left = pools[pool.handle] - 1
        if left:
            pools[pool.handle] = left
        else:
            del pools[pool.handle]
        if not owner.members:
            del self._owners[server_id]

    def _pool_joined(self, identity: str, pool_handle: bytes) -> None:
        pools = self._identity_pools.get(identity)
        if pools is None:
            pools = self._identity_pools[identity] = {}
        pools[pool_handle] = pools.get(pool_handle, 0) + 1

    def _move_owner(self, pool: _Pool, entry: PoolElementEntry, server_id: int) -> None:
        if entry.home_server_id != server_id:
            self._owner_remove(pool, entry)
            self._owner_add(pool, entry, server_id)

    def _remove(self, entry: PoolElementEntry) -> None:
        pool = self._pools[entry.pool_handle]
        pool.policy.remove(entry)
        del pool.members[entry.pe_id]
        self._count -= 1
        self._owner_remove(pool, entry)
        identity = entry.identity
        if identity is not None:
            left = self._identity_counts[identity] - 1
            if left:
                self._identity_counts[identity] = left
            else:
                del self._identity_counts[identity]
            pools = self._identity_pools[identity]
            here = pools[entry.pool_handle] - 1
            if here:
                pools[entry.pool_handle] = here
            else:
                del pools[entry.pool_handle]
                if not pools:
                    del self._identity_pools[identity]
        self._expiry.cancel(entry)
        self._keepalives.cancel(entry)
        entry.keepalive_due = None
        if not pool.members:
            del self._pools[entry.pool_handle]


def _check_values(limits: HandlespaceLimits, pool_handle: Any, pe_id: Any, home_server_id: Any,
                  transport_type: Any, transport_use: Any, registration_life: Any) -> None:
    """``register``'s checks one by one (the first failure is the refusal)."""
    if not isinstance(pool_handle, bytes) or not pool_handle:
        raise HandlespaceError(CAUSE_INVALID_VALUES, "empty or non-bytes pool handle", "pool_handle")
    if len(pool_handle) > limits.max_pool_handle_length:
        raise HandlespaceError(CAUSE_LACK_OF_RESOURCES, "pool handle too long")
    _check_uint32("pe_id", pe_id)
    if pe_id == 0:  # no PE has identifier 0 (rsplib: "undefined"; the PE library never picks it)
        raise HandlespaceError(CAUSE_INVALID_VALUES, "PE identifier 0 is reserved", "pe_id")
    _check_uint32("home_server_id", home_server_id)
    if transport_type not in TRANSPORT_TYPES:
        raise HandlespaceError(CAUSE_INVALID_VALUES, f"unknown transport type 0x{transport_type:x}",
                               "transport")
    if transport_use not in (USE_DATA_ONLY, USE_DATA_AND_CONTROL):
        raise HandlespaceError(CAUSE_INVALID_VALUES, f"invalid transport use {transport_use}", "transport")
    if registration_life != INFINITE_LIFE and not 0 <= registration_life <= MAX_INT32:
        raise HandlespaceError(CAUSE_INVALID_VALUES, f"invalid registration life {registration_life}",
                               "registration_life")


_make_result = fast_constructor(RegistrationResult)
