"""rserpool.handlespace.bulk: ``Handlespace.insert_new`` adds a batch of new
PEs exactly as ``register`` (then ``cancel_expiry``) one after the other
would, or refuses with the cause of the first PE ``register`` refuses and
changes nothing at all."""

from __future__ import annotations

import random
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from rserpool.handlespace import (
    CAUSE_INCONSISTENT_DATA_CONTROL, CAUSE_INCONSISTENT_POLICY, CAUSE_INCONSISTENT_TRANSPORT,
    CAUSE_INVALID_VALUES, CAUSE_LACK_OF_RESOURCES, CAUSE_NON_UNIQUE_PE_ID, CAUSE_SECURITY, INFINITE_LIFE,
    LEAST_USED, PRIORITY, RANDOM, ROUND_ROBIN, TRANSPORT_SCTP, TRANSPORT_TCP, Handlespace, HandlespaceError,
    HandlespaceLimits, NewEntry, PolicySettings,
)
from rserpool.wire.checksum import pe_checksum

LIMITS = HandlespaceLimits(max_pools=3, max_pes_per_pool=6, max_pes=10, max_pes_per_identity=4,
                           max_pool_handle_length=4, max_registration_life=1000)
LU = PolicySettings(LEAST_USED, load=5)
HOME = 0xA


def item(pe_id: int, settings: PolicySettings = LU, transport: int = TRANSPORT_TCP, use: int = 0,
         life: int = 30, identity: str | None = "alice", payload: Any = None) -> NewEntry:
    return NewEntry(pe_id, settings, transport, use, life, identity, payload if payload is not None else f"pe{pe_id}")


def state(hs: Handlespace) -> Any:
    """Everything the store holds, in order, without touching the policies."""
    pools = []
    for handle in hs.pool_handles():
        info = hs.pool_info(handle)
        pools.append((handle, info.policy_type, info.transport_type, info.transport_use, [
            (e.pe_id, e.settings, e.transport_type, e.transport_use, e.registration_life, e.home_server_id,
             e.identity, e.payload, e.expires_at, e.policy_state) for e in hs.pool_members(handle)]))
    owners = {o: (hs.checksum_total(o), hs.owned_pool_count(o), sorted((e.pool_handle, e.pe_id)
                                                                       for e in hs.pes_owned_by(o)))
              for o in hs.owners()}
    identities = {i: (hs.identity_count(i), hs.identity_pools(i),
                      [h for h in hs.pool_handles() if hs.identity_in_pool(i, h)]) for i in ("alice", "bob", "carol")}
    return len(hs), pools, owners, identities, hs.next_deadline()


def twins(seed: int = 0) -> tuple[Handlespace, Handlespace]:
    return Handlespace(LIMITS, random.Random(seed)), Handlespace(LIMITS, random.Random(seed))


def one_by_one(hs: Handlespace, handle: bytes, home: int, items: list) -> int | None:
    """What ``insert_new`` must match: ``register`` then ``cancel_expiry``
    per item; the cause of the first refusal (nothing undone), or None."""
    seen: set[int] = set()
    for pe_id, settings_, transport, use, life, identity, payload in items:
        if hs.get(handle, pe_id) is not None or pe_id in seen:
            return CAUSE_NON_UNIQUE_PE_ID  # register would re-register it: insert_new refuses
        seen.add(pe_id)
        try:
            result = hs.register(5.0, pool_handle=handle, pe_id=pe_id, settings=settings_, transport_type=transport,
                                 transport_use=use, registration_life=life, home_server_id=home, identity=identity,
                                 payload=payload)
        except HandlespaceError as exc:
            return exc.cause
        hs.cancel_expiry(result.entry)
    return None


def test_a_batch_is_added_as_register_would_add_it():
    bulk, single = twins()
    for hs in (bulk, single):
        hs.register(1.0, pool_handle=b"p", pe_id=1, settings=LU, transport_type=TRANSPORT_TCP, transport_use=0,
                    registration_life=30, home_server_id=HOME, identity="bob", payload="own")
    items = [item(i, PolicySettings(LEAST_USED, load=i % 3), identity="Alice" if i % 2 else None) for i in range(2, 7)]
    entries = bulk.insert_new(b"p", 0xB, items)
    assert one_by_one(single, b"p", 0xB, items) is None
    assert [e.pe_id for e in entries] == [2, 3, 4, 5, 6]
    assert state(bulk) == state(single)
    assert bulk.checksum(0xB) == pe_checksum((b"p", i) for i in range(2, 7))
    assert bulk.identity_count("alice") == 2 and all(e.expires_at is None for e in entries)
    assert [e.pe_id for e in bulk.resolve(b"p")] == [e.pe_id for e in single.resolve(b"p")]


def test_a_new_pool_takes_its_settings_from_the_first_pe():
    hs = Handlespace(LIMITS)
    hs.insert_new(b"new", HOME, [item(1, PolicySettings(ROUND_ROBIN), TRANSPORT_SCTP, 1, life=INFINITE_LIFE)])
    info = hs.pool_info(b"new")
    assert (info.policy_type, info.transport_type, info.transport_use) == (ROUND_ROBIN, TRANSPORT_SCTP, 1)
    assert hs.get(b"new", 1).registration_life == 1000  # max_registration_life bounds an infinite life
    assert hs.insert_new(b"new", HOME, []) == []


@pytest.mark.parametrize("handle, items, cause", [
    (b"p", [item(2), item(3, identity="")], CAUSE_SECURITY),
    (b"", [item(2)], CAUSE_INVALID_VALUES),
    (b"toolong", [item(2)], CAUSE_LACK_OF_RESOURCES),
    (b"p", [item(2), item(-1)], CAUSE_INVALID_VALUES),
    (b"p", [item(2), item(0)], CAUSE_INVALID_VALUES),  # PE identifier 0
    (b"p", [item(2), item(3, transport=0x99)], CAUSE_INVALID_VALUES),
    (b"p", [item(2), item(3, use=7)], CAUSE_INVALID_VALUES),
    (b"p", [item(2), item(3, life=-5)], CAUSE_INVALID_VALUES),
    (b"p", [item(2), item(3, PolicySettings(0x40000000))], CAUSE_INVALID_VALUES),
    (b"p", [item(2), item(1)], CAUSE_NON_UNIQUE_PE_ID),
    (b"p", [item(2), item(2)], CAUSE_NON_UNIQUE_PE_ID),
    (b"p", [item(2), item(3, PolicySettings(ROUND_ROBIN))], CAUSE_INCONSISTENT_POLICY),
    (b"p", [item(2), item(3, transport=TRANSPORT_SCTP)], CAUSE_INCONSISTENT_TRANSPORT),
    (b"p", [item(2), item(3, use=1)], CAUSE_INCONSISTENT_DATA_CONTROL),
    (b"q", [item(2), item(3, PolicySettings(PRIORITY))], CAUSE_INCONSISTENT_POLICY),
    (b"r", [item(2)], CAUSE_LACK_OF_RESOURCES),  # pools p, o and x exist: a fourth is too many
    (b"p", [item(i, identity=None) for i in range(2, 8)], CAUSE_LACK_OF_RESOURCES),  # pool full at the 6th
    (b"p", [item(i) for i in range(2, 6)], CAUSE_LACK_OF_RESOURCES),  # alice's fourth PE is her fifth
])
def test_a_refused_batch_changes_nothing(handle, items, cause):
    bulk, single = twins()
    for hs in (bulk, single):
        hs.register(1.0, pool_handle=b"p", pe_id=1, settings=LU, transport_type=TRANSPORT_TCP, transport_use=0,
                    registration_life=30, home_server_id=HOME, identity="alice", payload="own")
        hs.register(1.0, pool_handle=b"o", pe_id=9, settings=LU, transport_type=TRANSPORT_TCP, transport_use=0,
                    registration_life=30, home_server_id=HOME, identity=None, payload="other")
        if handle == b"r":
            hs.register(1.0, pool_handle=b"x", pe_id=9, settings=LU, transport_type=TRANSPORT_TCP,
                        transport_use=0, registration_life=30, home_server_id=HOME, payload="third pool")
    before = state(bulk)
    with pytest.raises(HandlespaceError) as refused:
        bulk.insert_new(handle, 0xB, items)
    assert refused.value.cause == cause
    assert state(bulk) == before
    assert one_by_one(single, handle, 0xB, items) == cause  # the cause register gives the first refused PE


def test_a_full_handlespace_refuses_the_whole_batch():
    hs = Handlespace(HandlespaceLimits(max_pes=5))
    hs.insert_new(b"a", HOME, [item(i, identity=None) for i in range(1, 4)])
    before = state(hs)
    with pytest.raises(HandlespaceError) as refused:
        hs.insert_new(b"b", HOME, [item(i, identity=None) for i in range(1, 4)])
    assert refused.value.cause == CAUSE_LACK_OF_RESOURCES and "handlespace is full" in str(refused.value)
    assert state(hs) == before and hs.pool_count == 1


def test_a_failing_policy_leaves_nothing_half_added():
    class Failing:
        policy_type = LEAST_USED

        def __init__(self) -> None:
            self.members: list = []

        def add(self, member: Any) -> None:
            if len(self.members) == 2:
                raise ValueError("no room")
            self.members.append(member)

        def remove(self, member: Any) -> None:
            self.members.remove(member)

    policy = Failing()
    hs = Handlespace(LIMITS, policy_factory=lambda policy_type: policy)
    with pytest.raises(ValueError):
        hs.insert_new(b"p", HOME, [item(i) for i in range(1, 5)])
    assert len(hs) == 0 and hs.pool_count == 0 and policy.members == [] and hs.owners() == []
    assert hs.identity_count("alice") == 0


BATCH = st.lists(st.tuples(
    st.sampled_from([1, 2, 3, 0xFFFFFFFF, 0]),
    st.sampled_from([LU, PolicySettings(LEAST_USED, load=9), PolicySettings(ROUND_ROBIN),
                     PolicySettings(RANDOM)]),
    st.sampled_from([TRANSPORT_TCP, TRANSPORT_TCP, TRANSPORT_SCTP]),
    st.sampled_from([0, 0, 1]),
    st.sampled_from([30, INFINITE_LIFE, 5000]),
    st.sampled_from([None, "alice", "ALICE ", "bob"]),
), max_size=7)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c"]), st.sampled_from([1, 2, 4]),
                                 st.sampled_from([HOME, 0xB])), max_size=6),
       handle=st.sampled_from([b"a", b"b", b"d", b"long!"]), home=st.sampled_from([HOME, 0xB]), batch=BATCH)
def test_insert_new_is_register_one_by_one_or_nothing(before, handle, home, batch):
    bulk, single = twins(7)
    for hs in (bulk, single):
        for pool, pe_id, owner in before:
            try:
                hs.register(1.0, pool_handle=pool, pe_id=pe_id, settings=LU, transport_type=TRANSPORT_TCP,
                            transport_use=0, registration_life=30, home_server_id=owner, identity="bob",
                            payload=(pool, pe_id))
            except HandlespaceError:
                pass
    items = [NewEntry(*values, payload=("new", values[0])) for values in batch]
    snapshot = state(bulk)
    try:
        bulk.insert_new(handle, home, items)
    except HandlespaceError as exc:
        assert one_by_one(single, handle, home, items) == exc.cause
        assert state(bulk) == snapshot
    else:
        assert one_by_one(single, handle, home, items) is None
        assert state(bulk) == state(single)
        for owner in bulk.owners():
            assert bulk.checksum(owner) == pe_checksum(
                (e.pool_handle, e.pe_id) for e in bulk.entries() if e.home_server_id == owner)
        for pool in bulk.pool_handles():  # the policies select alike
            assert [e.pe_id for e in bulk.resolve(pool, 2)] == [e.pe_id for e in single.resolve(pool, 2)]
