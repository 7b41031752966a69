"""Many new pool elements of one home in one pool at once: the handlespace's
bulk path, for the pages of an ENRP handle-table download (RFC 5353 3.2.3
rules A and B) and a peer's re-synchronization (3.6.3).

``insert_new(handlespace, pool_handle, home_server_id, items)`` (also
``Handlespace.insert_new``) adds PEs none of which is registered yet.  Each
item is checked exactly as ``Handlespace.register`` checks a new PE, in
order and as if the items before it had been registered: identity
(normalized, 0xa), values (0x3, PE identifier 0 included), consistency
with the pool, or with the first item when the pool is new (0x5, 0x7,
0x8), and every limit (pools, PEs per pool, PEs, PEs per identity: 0x6).  A PE already in the pool, or
twice in ``items``, is refused too (0x4): this path adds, it never
re-registers.  The first refusal raises ``HandlespaceError`` with that
item's cause and **nothing is changed**; otherwise all are added, in
order, with the state ``register`` would leave (selection order, owner
index and PE checksum, identity counts), except that they get no
registration deadline: PEs learned from their home registrar are expired
by it, which announces it (what ``cancel_expiry`` after ``register``
does).  Identity counts and the pools per identity are kept as
``register`` keeps them.

Checking first and then adding, with the per-owner index, the checksum and
the identity counts updated once per call instead of once per PE, costs
about half of ``register`` per PE.

Pure Python: no Twisted, no clock.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

from rserpool.handlespace._store import Owner, Pool, check_uint32
from rserpool.handlespace.entries import (
    CAUSE_INCONSISTENT_DATA_CONTROL, CAUSE_INCONSISTENT_POLICY, CAUSE_INCONSISTENT_TRANSPORT,
    CAUSE_INVALID_VALUES, CAUSE_LACK_OF_RESOURCES, CAUSE_NON_UNIQUE_PE_ID, CAUSE_SECURITY, INFINITE_LIFE,
    MAX_INT32, TRANSPORT_TYPES, USE_DATA_AND_CONTROL, USE_DATA_ONLY, HandlespaceError, PoolElementEntry,
)
from rserpool.handlespace.types import ADAPTIVE_BIT, MAX_UINT32, PolicySettings
from rserpool.identity import normalize_identity

__all__ = ["NewEntry", "insert_new"]

_USES = (USE_DATA_ONLY, USE_DATA_AND_CONTROL)
_NOT_RESERVED = ~ADAPTIVE_BIT & MAX_UINT32  # 0 and 0x40000000 are reserved (RFC 5356 7.1)
_UNSEEN = object()


class NewEntry(NamedTuple):
    """One PE for ``insert_new``: what ``Handlespace.register`` takes for it
    (a plain tuple in this order will do)."""

    pe_id: int
    settings: PolicySettings
    transport_type: int
    transport_use: int
    registration_life: int
    identity: str | None = None
    payload: Any = None


def insert_new(handlespace: Any, pool_handle: bytes, home_server_id: int,
               items: Sequence[tuple]) -> list[PoolElementEntry]:
    """Add the new PEs ``items`` (``NewEntry`` tuples) of ``home_server_id``
    to pool ``pool_handle``: all of them, or none and ``HandlespaceError``."""
    if not items:
        return []
    hs = handlespace
    limits = hs.limits
    pool = hs._pools.get(pool_handle) if type(pool_handle) is bytes else None
    members = pool.members if pool is not None else {}
    kinds = None if pool is None else (pool.policy_type, pool.transport_type, pool.transport_use)
    max_life = limits.max_registration_life
    max_per_pool, max_pes = limits.max_pes_per_pool, limits.max_pes
    max_per_identity = limits.max_pes_per_identity
    identity_counts = hs._identity_counts
    size = len(members)
    count = hs._count
    normalized: dict[Any, str | None] = {}
    added: dict[str, int] = {}
    seen: set[int] = set()
    prepared = []
    first = True
    for pe_id, settings, transport_type, transport_use, life, identity, payload in items:
        # The checks of Handlespace.register for a new PE, in its order.
        if identity is not None:
            norm = normalized.get(identity, _UNSEEN)
            if norm is _UNSEEN:
                norm = normalized[identity] = normalize_identity(identity)
            if norm is None:
                raise HandlespaceError(CAUSE_SECURITY, "not a valid identity")
        else:
            norm = None
        if first:
            if not isinstance(pool_handle, bytes) or not pool_handle:
                raise HandlespaceError(CAUSE_INVALID_VALUES, "empty or non-bytes pool handle", "pool_handle")
            if len(pool_handle) > limits.max_pool_handle_length:
                raise HandlespaceError(CAUSE_LACK_OF_RESOURCES, "pool handle too long")
        if type(pe_id) is not int or not 0 <= pe_id <= MAX_UINT32:
            check_uint32("pe_id", pe_id)  # raises for what is not an int in range
        if pe_id == 0:  # as register: no PE has identifier 0
            raise HandlespaceError(CAUSE_INVALID_VALUES, "PE identifier 0 is reserved", "pe_id")
        if first:
            check_uint32("home_server_id", home_server_id)
        if transport_type not in TRANSPORT_TYPES:
            raise HandlespaceError(CAUSE_INVALID_VALUES, f"unknown transport type 0x{transport_type:x}", "transport")
        if transport_use not in _USES:
            raise HandlespaceError(CAUSE_INVALID_VALUES, f"invalid transport use {transport_use}", "transport")
        if life != INFINITE_LIFE and not 0 <= life <= MAX_INT32:
            raise HandlespaceError(CAUSE_INVALID_VALUES, f"invalid registration life {life}", "registration_life")
        if life == INFINITE_LIFE:
            life = max_life if max_life < MAX_INT32 else INFINITE_LIFE
        elif life > max_life:
            life = max_life
        policy_type = settings.policy_type
        if not policy_type & _NOT_RESERVED:  # is_reserved_policy_type, inline
            raise HandlespaceError(CAUSE_INVALID_VALUES, "reserved policy type (RFC 5356 section 7.1)", "policy")
        if pe_id in members or pe_id in seen:
            raise HandlespaceError(CAUSE_NON_UNIQUE_PE_ID, f"PE {pe_id:08x} is already in the pool")
        if kinds is None:  # a new pool: its first PE sets the pool's policy and transport
            if len(hs._pools) >= limits.max_pools:
                raise HandlespaceError(CAUSE_LACK_OF_RESOURCES, "too many pools")
            kinds = (policy_type, transport_type, transport_use)
        elif policy_type != kinds[0]:
            raise HandlespaceError(CAUSE_INCONSISTENT_POLICY, "policy type differs from the pool's")
        elif transport_type != kinds[1]:
            raise HandlespaceError(CAUSE_INCONSISTENT_TRANSPORT, "transport type differs from the pool's")
        elif transport_use != kinds[2]:
            raise HandlespaceError(CAUSE_INCONSISTENT_DATA_CONTROL, "transport use differs from the pool's")
        if size >= max_per_pool:
            raise HandlespaceError(CAUSE_LACK_OF_RESOURCES, "pool is full")
        if count >= max_pes:
            raise HandlespaceError(CAUSE_LACK_OF_RESOURCES, "handlespace is full")
        if norm is not None:
            mine = added.get(norm, 0)
            if identity_counts.get(norm, 0) + mine >= max_per_identity:
                raise HandlespaceError(CAUSE_LACK_OF_RESOURCES, "too many PEs for this identity")
            added[norm] = mine + 1
        size += 1
        count += 1
        seen.add(pe_id)
        first = False
        prepared.append((pe_id, settings, transport_type, transport_use, life, norm, payload))
    created = pool is None
    if created:
        try:
            policy = hs._factory(kinds[0])
        except ValueError as exc:
            raise HandlespaceError(CAUSE_INVALID_VALUES, f"unusable policy: {exc}", "policy") from exc
        pool = Pool(pool_handle, policy, kinds[0], kinds[1], kinds[2])
    entries: list[PoolElementEntry] = []
    add = pool.policy.add
    try:
        for pe_id, settings, transport_type, transport_use, life, norm, payload in prepared:
            entry = PoolElementEntry(pool_handle, pe_id, settings, transport_type, transport_use, life,
                                     home_server_id, norm, payload)
            add(entry)
            entries.append(entry)
    except BaseException:
        remove = pool.policy.remove
        for entry in entries:  # validated above, so not expected; but nothing stays half-added
            remove(entry)
        raise
    # Commit: nothing below can fail.
    if created:
        hs._pools[pool_handle] = pool
    members = pool.members
    total = len(entries) * pool.handle_sum
    for entry in entries:
        pe_id = entry.pe_id
        members[pe_id] = entry
        total += (pe_id >> 16) + (pe_id & 0xFFFF)
    hs._count = count
    owner = hs._owners.get(home_server_id)
    if owner is None:
        owner = hs._owners[home_server_id] = Owner()
    owner.members.update(dict.fromkeys(entries))
    owner.total += total
    owner.pools[pool_handle] = owner.pools.get(pool_handle, 0) + len(entries)
    identity_pools = hs._identity_pools
    for norm, more in added.items():
        identity_counts[norm] = identity_counts.get(norm, 0) + more
        pools = identity_pools.get(norm)
        if pools is None:
            pools = identity_pools[norm] = {}
        pools[pool_handle] = pools.get(pool_handle, 0) + more
    return entries
