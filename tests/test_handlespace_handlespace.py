"""Unit tests of rserpool.handlespace.handlespace, the store."""

from __future__ import annotations

import random
from typing import Any

import pytest

from rserpool.handlespace import (
    CAUSE_INCONSISTENT_DATA_CONTROL,
    CAUSE_INCONSISTENT_POLICY,
    CAUSE_INCONSISTENT_TRANSPORT,
    CAUSE_INVALID_VALUES,
    CAUSE_LACK_OF_RESOURCES,
    CAUSE_SECURITY,
    CAUSE_UNKNOWN_POOL_HANDLE,
    INFINITE_LIFE,
    LEAST_USED,
    ROUND_ROBIN,
    TRANSPORT_SCTP,
    TRANSPORT_TCP,
    TRANSPORT_UDP,
    USE_DATA_AND_CONTROL,
    USE_DATA_ONLY,
    Handlespace,
    HandlespaceError,
    HandlespaceLimits,
    PolicySettings,
)
from rserpool.wire.checksum import pe_checksum

RR = PolicySettings(ROUND_ROBIN)


class StandInPolicy:
    """A trivial policy: members in pe_id order, rotating start."""

    def __init__(self, policy_type: int) -> None:
        self.policy_type = policy_type
        self.members: dict[int, Any] = {}
        self.head = 0
        self.updates: list[tuple[int, PolicySettings]] = []

    def add(self, member: Any) -> None:
        assert member.pe_id not in self.members
        self.members[member.pe_id] = member
        member.policy_state = "stand-in"

    def remove(self, member: Any) -> None:
        del self.members[member.pe_id]

    def update(self, member: Any, settings: PolicySettings) -> None:
        self.updates.append((member.pe_id, settings))
        member.settings = settings

    def select(self, n: int) -> list[Any]:
        ordered = [self.members[k] for k in sorted(self.members)]
        if not ordered:
            return []
        start = self.head % len(ordered)
        self.head += 1
        rotated = ordered[start:] + ordered[:start]
        return rotated[:n]

    def __len__(self) -> int:
        return len(self.members)


def make_hs(**limits: Any) -> Handlespace:
    return Handlespace(HandlespaceLimits(**limits), random.Random(1), StandInPolicy)


def reg(hs: Handlespace, handle: bytes = b"pool", pe_id: int = 1, now: float = 0.0, **kw: Any):
    args: dict[str, Any] = dict(
        pool_handle=handle,
        pe_id=pe_id,
        settings=RR,
        transport_type=TRANSPORT_SCTP,
        transport_use=USE_DATA_ONLY,
        registration_life=30,
        home_server_id=100,
        identity=None,
        payload=None,
    )
    args.update(kw)
    return hs.register(now, **args)


def snapshot(hs: Handlespace) -> tuple:
    pools = []
    for handle in sorted(hs.pool_handles()):
        info = hs.pool_info(handle)
        members = sorted(
            (e.pe_id, e.settings, e.home_server_id, e.identity, e.registration_life, e.expires_at, e.payload)
            for e in hs.pool_members(handle)
        )
        pools.append((info, tuple(members)))
    owners = sorted((o, hs.checksum_total(o), hs.owned_count(o)) for o in hs.owners())
    return (len(hs), tuple(pools), tuple(owners), hs.next_deadline())


# ----------------------------------------------------------------- pools


def test_first_pe_creates_pool_with_its_settings() -> None:
    hs = make_hs()
    result = reg(hs, transport_type=TRANSPORT_TCP, transport_use=USE_DATA_ONLY, payload="pe-param")
    assert result.created and result.previous_owner is None
    info = hs.pool_info(b"pool")
    assert info is not None
    assert (info.policy_type, info.transport_type, info.transport_use, info.size) == (
        ROUND_ROBIN,
        TRANSPORT_TCP,
        USE_DATA_ONLY,
        1,
    )
    entry = hs.get(b"pool", 1)
    assert entry is result.entry and entry.payload == "pe-param" and entry.policy_state == "stand-in"
    assert len(hs) == 1 and hs.pool_count == 1


def test_pool_removed_with_its_last_pe() -> None:
    hs = make_hs()
    reg(hs, pe_id=1)
    reg(hs, pe_id=2)
    assert hs.deregister(b"pool", 1) is not None
    assert hs.pool_count == 1
    assert hs.deregister(b"pool", 2) is not None
    assert hs.pool_count == 0 and len(hs) == 0 and hs.pool_info(b"pool") is None
    assert hs.owners() == []
    # A new first PE may now set different pool settings.
    reg(hs, pe_id=3, settings=PolicySettings(LEAST_USED, load=5), transport_type=TRANSPORT_UDP)
    assert hs.pool_info(b"pool").policy_type == LEAST_USED


def test_deregister_unknown_is_none() -> None:
    hs = make_hs()
    assert hs.deregister(b"nothing", 1) is None
    reg(hs)
    assert hs.deregister(b"pool", 2) is None
    assert len(hs) == 1


@pytest.mark.parametrize(
    "change, cause",
    [
        ({"settings": PolicySettings(LEAST_USED)}, CAUSE_INCONSISTENT_POLICY),
        ({"transport_type": TRANSPORT_TCP}, CAUSE_INCONSISTENT_TRANSPORT),
        ({"transport_use": USE_DATA_AND_CONTROL}, CAUSE_INCONSISTENT_DATA_CONTROL),
    ],
)
@pytest.mark.parametrize("pe_id", [1, 2])  # 1: re-registration, 2: new PE
def test_consistency_rules(change: dict, cause: int, pe_id: int) -> None:
    hs = make_hs()
    reg(hs, pe_id=1)
    before = snapshot(hs)
    with pytest.raises(HandlespaceError) as info:
        reg(hs, pe_id=pe_id, home_server_id=200, now=5.0, **change)
    assert info.value.cause == cause
    assert snapshot(hs) == before


@pytest.mark.parametrize(
    "change",
    [
        {"transport_type": 0x1},
        {"transport_use": 2},
        {"registration_life": -2},
        {"pe_id": -1},
        {"pe_id": 1 << 32},
        {"home_server_id": 1 << 32},
        {"pool_handle": b""},
    ],
)
def test_invalid_values(change: dict) -> None:
    hs = make_hs()
    with pytest.raises(HandlespaceError) as info:
        reg(hs, **change)
    assert info.value.cause == CAUSE_INVALID_VALUES
    assert len(hs) == 0 and hs.pool_count == 0


def test_unusable_policy_type_is_refused_without_a_pool() -> None:
    def factory(policy_type: int) -> StandInPolicy:
        raise ValueError("reserved policy type")

    hs = Handlespace(HandlespaceLimits(), random.Random(1), factory)
    with pytest.raises(HandlespaceError) as info:
        reg(hs)
    assert info.value.cause == CAUSE_INVALID_VALUES
    assert hs.pool_count == 0


def test_failing_policy_add_changes_nothing() -> None:
    class Refusing(StandInPolicy):
        def add(self, member: Any) -> None:
            if member.pe_id == 2:
                raise MemoryError("simulated")
            super().add(member)

    hs = Handlespace(HandlespaceLimits(), random.Random(1), Refusing)
    with pytest.raises(MemoryError):
        reg(hs, pe_id=2)
    assert hs.pool_count == 0 and len(hs) == 0 and hs.owners() == []
    reg(hs, pe_id=1)
    before = snapshot(hs)
    with pytest.raises(MemoryError):
        reg(hs, pe_id=2)
    assert snapshot(hs) == before


# -------------------------------------------------------- re-registration


def test_reregistration_updates_in_place_and_moves_ownership() -> None:
    hs = make_hs()
    first = reg(hs, pe_id=7, home_server_id=100, registration_life=30, payload="a").entry
    assert hs.checksum(100) == pe_checksum([(b"pool", 7)])
    new_settings = PolicySettings(ROUND_ROBIN)
    second = reg(hs, pe_id=7, home_server_id=200, registration_life=60, payload="b", now=10.0, settings=new_settings)
    assert not second.created and second.previous_owner == 100
    assert second.entry is first
    assert first.home_server_id == 200 and first.registration_life == 60 and first.payload == "b"
    assert first.expires_at == 70.0
    pool_policy = hs._pools[b"pool"].policy
    assert pool_policy.updates == [(7, new_settings)]
    assert hs.owners() == [200]
    assert hs.checksum(100) == 0xFFFF
    assert hs.checksum(200) == pe_checksum([(b"pool", 7)])
    assert hs.pes_owned_by(200) == [first] and hs.pes_owned_by(100) == []
    assert len(hs) == 1


# -------------------------------------------------------------- checksums


def test_checksum_known_values() -> None:
    hs = make_hs()
    assert hs.checksum(1) == 0xFFFF
    reg(hs, handle=b"EchoPool", pe_id=0x12345678, home_server_id=1)
    assert hs.checksum(1) == 0x29A5
    reg(hs, handle=b"abc", pe_id=1, home_server_id=1)
    assert hs.checksum(1) == 0x6541
    assert hs.recompute_checksum(1) == 0x6541
    hs.deregister(b"EchoPool", 0x12345678)
    assert hs.checksum(1) == pe_checksum([(b"abc", 1)]) == hs.recompute_checksum(1)


def test_checksums_match_recomputation_after_random_operations() -> None:
    rnd = random.Random(7)
    hs = make_hs()
    handles = [b"a", b"bb", b"ccc", b"dddd", b"eeeee\x00\xff"]
    for step in range(600):
        handle = rnd.choice(handles)
        pe_id = rnd.randrange(1, 40) * 0x01010101 & 0xFFFFFFFF
        if rnd.random() < 0.7:
            reg(hs, handle=handle, pe_id=pe_id, home_server_id=rnd.choice([1, 2, 3]), now=step)
        else:
            hs.deregister(handle, pe_id)
        if rnd.random() < 0.05:
            hs.take_over(rnd.choice([1, 2, 3]), rnd.choice([1, 2, 3]))
    for owner in (1, 2, 3, 4):
        assert hs.checksum(owner) == hs.recompute_checksum(owner)
        expected = [(e.pool_handle, e.pe_id) for e in hs.entries() if e.home_server_id == owner]
        assert hs.checksum(owner) == pe_checksum(expected)
        assert hs.owned_count(owner) == len(expected)


def test_take_over_and_set_owner() -> None:
    hs = make_hs()
    for pe_id in range(1, 6):
        reg(hs, pe_id=pe_id, home_server_id=1)
    reg(hs, handle=b"other", pe_id=9, home_server_id=2)
    moved = hs.take_over(1, 3)
    assert sorted(e.pe_id for e in moved) == list(range(1, 6))
    assert hs.owned_count(1) == 0 and hs.owned_count(3) == 5
    assert hs.checksum(3) == hs.recompute_checksum(3) and hs.checksum(1) == 0xFFFF
    hs.set_owner(b"other", 9, 3)
    assert sorted(hs.owners()) == [3] and hs.checksum(3) == hs.recompute_checksum(3)
    with pytest.raises(HandlespaceError) as info:
        hs.set_owner(b"missing", 9, 3)
    assert info.value.cause == CAUSE_UNKNOWN_POOL_HANDLE


# ----------------------------------------------------------------- expiry


def test_expiry_of_registration_life() -> None:
    hs = make_hs()
    reg(hs, pe_id=1, registration_life=10, now=0.0)
    reg(hs, pe_id=2, registration_life=20, now=0.0)
    reg(hs, pe_id=3, registration_life=INFINITE_LIFE, now=0.0)
    assert hs.next_deadline() == 10.0
    assert hs.expire(9.99) == []
    assert [e.pe_id for e in hs.expire(10.0)] == [1]
    reg(hs, pe_id=2, registration_life=20, now=15.0)  # re-registration extends it to 35
    assert hs.expire(30.0) == []
    assert [e.pe_id for e in hs.expire(35.0)] == [2]
    assert hs.expire(1e12) == [] and len(hs) == 1 and hs.next_deadline() is None
    # A finite life made infinite by re-registration never expires.
    reg(hs, pe_id=4, registration_life=5, now=0.0)
    reg(hs, pe_id=4, registration_life=INFINITE_LIFE, now=1.0)
    assert hs.expire(1e12) == [] and len(hs) == 2


def test_expire_limit_and_order() -> None:
    hs = make_hs()
    for pe_id in range(1, 11):
        reg(hs, pe_id=pe_id, registration_life=100 - pe_id)
    first = hs.expire(1000.0, limit=3)
    assert [e.pe_id for e in first] == [10, 9, 8]
    assert len(hs.expire(1000.0)) == 7 and hs.pool_count == 0


def test_max_registration_life_bounds_lives() -> None:
    hs = make_hs(max_registration_life=60)
    assert reg(hs, pe_id=1, registration_life=INFINITE_LIFE).entry.expires_at == 60.0
    assert reg(hs, pe_id=2, registration_life=1000).entry.registration_life == 60


# ----------------------------------------------------------------- limits


def test_limit_max_pools() -> None:
    hs = make_hs(max_pools=2)
    reg(hs, handle=b"a")
    reg(hs, handle=b"b")
    before = snapshot(hs)
    with pytest.raises(HandlespaceError) as info:
        reg(hs, handle=b"c")
    assert info.value.cause == CAUSE_LACK_OF_RESOURCES and snapshot(hs) == before
    reg(hs, handle=b"a", pe_id=2)  # existing pools still accept PEs


def test_limit_pes_per_pool_and_total() -> None:
    hs = make_hs(max_pes_per_pool=2, max_pes=3)
    reg(hs, pe_id=1)
    reg(hs, pe_id=2)
    before = snapshot(hs)
    with pytest.raises(HandlespaceError) as info:
        reg(hs, pe_id=3)
    assert info.value.cause == CAUSE_LACK_OF_RESOURCES and snapshot(hs) == before
    reg(hs, pe_id=2, now=3.0)  # re-registration in a full pool is fine
    reg(hs, handle=b"other", pe_id=1)
    before = snapshot(hs)
    with pytest.raises(HandlespaceError) as info:
        reg(hs, handle=b"third", pe_id=1)
    assert info.value.cause == CAUSE_LACK_OF_RESOURCES and snapshot(hs) == before


def test_limit_pool_handle_length() -> None:
    hs = make_hs(max_pool_handle_length=4)
    reg(hs, handle=b"abcd")
    with pytest.raises(HandlespaceError) as info:
        reg(hs, handle=b"abcde")
    assert info.value.cause == CAUSE_LACK_OF_RESOURCES and hs.pool_count == 1


def test_limit_pes_per_identity() -> None:
    hs = make_hs(max_pes_per_identity=2)
    reg(hs, pe_id=1, identity="alice")
    reg(hs, handle=b"x", pe_id=1, identity="alice")
    reg(hs, pe_id=3)  # unbound PE, not counted
    before = snapshot(hs)
    with pytest.raises(HandlespaceError) as info:
        reg(hs, pe_id=2, identity="alice")
    assert info.value.cause == CAUSE_LACK_OF_RESOURCES and snapshot(hs) == before
    with pytest.raises(HandlespaceError):  # binding an unbound PE counts too
        reg(hs, pe_id=3, identity="alice")
    assert hs.owner_identity(b"pool", 3) is None
    reg(hs, pe_id=1, identity="alice")  # re-registration does not count again
    hs.deregister(b"x", 1)
    assert hs.identity_count("alice") == 1
    reg(hs, pe_id=3, identity="alice")
    assert hs.owner_identity(b"pool", 3) == "alice" and hs.identity_count("alice") == 2
    reg(hs, pe_id=4, identity="bob")
    hs.expire(1e9)
    assert hs.identity_count("alice") == 0 and hs.identity_count("bob") == 0


def test_pe_identifier_zero_is_refused_with_invalid_values() -> None:
    hs = make_hs()
    with pytest.raises(HandlespaceError) as info:
        reg(hs, pe_id=0)
    assert (info.value.cause, info.value.field) == (CAUSE_INVALID_VALUES, "pe_id")
    assert len(hs) == 0 and hs.pool_count == 0


def test_pools_per_identity_are_counted() -> None:
    # The facts the gate's max_pools_per_identity decides on (issue 12).
    hs = make_hs()
    assert hs.identity_pools("alice") == 0 and not hs.identity_in_pool("alice", b"pool")
    reg(hs, pe_id=1, identity="alice")
    reg(hs, pe_id=2, identity="alice")
    reg(hs, handle=b"x", pe_id=1, identity="Alice")  # one identity, any spelling
    reg(hs, handle=b"y", pe_id=3)  # unbound: counted for nobody
    assert hs.identity_pools("ALICE") == 2
    assert hs.identity_in_pool("alice", b"pool") and hs.identity_in_pool("alice", b"x")
    assert not hs.identity_in_pool("alice", b"y")
    reg(hs, handle=b"y", pe_id=3, identity="alice")  # binding an unbound PE joins its pool
    assert hs.identity_pools("alice") == 3
    hs.deregister(b"pool", 1)
    assert hs.identity_in_pool("alice", b"pool")  # PE 2 is still there
    hs.deregister(b"pool", 2)
    assert not hs.identity_in_pool("alice", b"pool") and hs.identity_pools("alice") == 2
    hs.expire(1e9)
    assert hs.identity_pools("alice") == 0


# --------------------------------------------------------------- identity


def test_identity_binding() -> None:
    hs = make_hs()
    reg(hs, pe_id=1, identity="alice", home_server_id=100)
    before = snapshot(hs)
    with pytest.raises(HandlespaceError) as info:
        reg(hs, pe_id=1, identity="mallory", home_server_id=200, now=1.0)
    assert info.value.cause == CAUSE_SECURITY and snapshot(hs) == before
    with pytest.raises(HandlespaceError) as info:
        hs.deregister(b"pool", 1, identity="mallory")
    assert info.value.cause == CAUSE_SECURITY and len(hs) == 1
    # An update without identity (from an ENRP peer) keeps the binding.
    reg(hs, pe_id=1, identity=None, home_server_id=200, now=2.0)
    assert hs.owner_identity(b"pool", 1) == "alice"
    reg(hs, pe_id=1, identity="alice", home_server_id=100, now=3.0)
    assert hs.owner_identity(b"pool", 1) == "alice"
    assert hs.owner_identity(b"pool", 99) is None
    assert hs.deregister(b"pool", 1, identity="alice") is not None


def test_identity_spellings_are_one_owner_with_one_quota() -> None:
    # rserpool.identity's rule: "Alice", " alice " and "ALICE" are alice.
    hs = make_hs(max_pes_per_identity=2)
    reg(hs, pe_id=1, identity="Alice")
    assert hs.owner_identity(b"pool", 1) == "alice"
    reg(hs, pe_id=1, identity=" ALICE ", now=1.0)  # the owner re-registers
    reg(hs, pe_id=2, identity="alice")
    assert hs.identity_count("ALICE") == hs.identity_count("alice") == 2
    with pytest.raises(HandlespaceError) as info:  # one quota for every spelling
        reg(hs, pe_id=3, identity="aLiCe")
    assert info.value.cause == CAUSE_LACK_OF_RESOURCES
    for bad in ("", "al\tice", "alice\u200b"):
        with pytest.raises(HandlespaceError) as info:
            reg(hs, pe_id=4, identity=bad)
        assert info.value.cause == CAUSE_SECURITY
    assert hs.deregister(b"pool", 2, identity="ALICE") is not None
    with pytest.raises(HandlespaceError):
        hs.deregister(b"pool", 1, identity="mallory")
    assert len(hs) == 1


# ------------------------------------------------------------- resolution


def test_resolve() -> None:
    hs = make_hs()
    with pytest.raises(HandlespaceError) as info:
        hs.resolve(b"pool", 3)
    assert info.value.cause == CAUSE_UNKNOWN_POOL_HANDLE
    for pe_id in (5, 1, 3, 4):
        reg(hs, pe_id=pe_id)
    assert [e.pe_id for e in hs.resolve(b"pool", 3)] == [1, 3, 4]
    assert [e.pe_id for e in hs.resolve(b"pool", 3)] == [3, 4, 5]
    assert sorted(e.pe_id for e in hs.resolve(b"pool")) == [1, 3, 4, 5]
    with pytest.raises(ValueError):
        hs.resolve(b"pool", 0)


# ------------------------------------------------------------- keep-alive


def test_keepalives() -> None:
    hs = make_hs()
    for pe_id in (1, 2, 3):
        reg(hs, pe_id=pe_id, registration_life=INFINITE_LIFE)
    hs.schedule_keepalive(b"pool", 1, 5.0)
    hs.schedule_keepalive(b"pool", 2, 3.0)
    hs.schedule_keepalive(b"pool", 3, 4.0)
    hs.schedule_keepalive(b"pool", 2, 6.0)  # rescheduled
    hs.cancel_keepalive(b"pool", 3)
    assert hs.next_deadline() == 5.0
    assert hs.due_keepalives(4.9) == []
    due = hs.due_keepalives(10.0)
    assert [e.pe_id for e in due] == [1, 2] and all(e.keepalive_due is None for e in due)
    assert hs.due_keepalives(10.0) == []
    hs.schedule_keepalive(b"pool", 1, 11.0)
    hs.deregister(b"pool", 1)
    assert hs.due_keepalives(20.0) == [] and hs.next_deadline() is None
    with pytest.raises(HandlespaceError):
        hs.schedule_keepalive(b"nothing", 1, 1.0)
    with pytest.raises(KeyError):
        hs.schedule_keepalive(b"pool", 1, 1.0)


# ---------------------------------------------------------- unreachability


def test_unreachable_reports() -> None:
    hs = make_hs(max_unreachable_reporters=3, unreachable_window=10.0)
    reg(hs, pe_id=1)
    assert hs.report_unreachable(b"pool", 1, "pu-a", 0.0) == 1
    assert hs.report_unreachable(b"pool", 1, "pu-a", 1.0) == 1  # same reporter once
    assert hs.report_unreachable(b"pool", 1, "pu-b", 2.0) == 2
    assert hs.report_unreachable(b"pool", 1, "pu-c", 3.0) == 3
    assert hs.report_unreachable(b"pool", 1, "pu-d", 4.0) == 3  # bounded
    assert hs.report_unreachable(b"pool", 1, "pu-e", 20.0) == 1  # new window
    reg(hs, pe_id=1, now=21.0)  # re-registration resets
    assert hs.report_unreachable(b"pool", 1, "pu-e", 22.0) == 1
    hs.report_unreachable(b"pool", 1, "pu-f", 22.0)
    hs.clear_unreachable(b"pool", 1)
    assert hs.report_unreachable(b"pool", 1, "pu-f", 23.0) == 1
    assert hs.report_unreachable(b"pool", 2, "pu-f", 23.0) == 0
    assert hs.report_unreachable(b"none", 2, "pu-f", 23.0) == 0


# ------------------------------------------------- with the real policies


def test_reserved_policy_types_are_invalid_values() -> None:
    hs = Handlespace(HandlespaceLimits(), random.Random(1))
    for policy_type in (0x00000000, 0x40000000):
        with pytest.raises(HandlespaceError) as info:
            reg(hs, settings=PolicySettings(policy_type))
        assert info.value.cause == CAUSE_INVALID_VALUES
    assert hs.pool_count == 0


def test_default_factory_uses_make_policy_least_used() -> None:
    hs = Handlespace(HandlespaceLimits(), random.Random(1))
    for pe_id, load in ((1, 50), (2, 10), (3, 30), (4, 20)):
        reg(hs, pe_id=pe_id, settings=PolicySettings(LEAST_USED, load=load))
    assert [e.pe_id for e in hs.resolve(b"pool", 3)] == [2, 4, 3]
    # A re-registration with a new load re-ranks the PE in place.
    reg(hs, pe_id=1, settings=PolicySettings(LEAST_USED, load=0), now=1.0)
    assert hs.resolve(b"pool", 1)[0].pe_id == 1
    assert hs.get(b"pool", 1).settings.load == 0
    hs.deregister(b"pool", 1)
    assert [e.pe_id for e in hs.resolve(b"pool")] == [2, 4, 3]


def test_default_factory_round_robin_rotates() -> None:
    hs = Handlespace(HandlespaceLimits(), random.Random(1))
    for pe_id in (1, 2, 3):
        reg(hs, pe_id=pe_id)
    firsts = [hs.resolve(b"pool", 1)[0].pe_id for _ in range(6)]
    assert sorted(firsts) == [1, 1, 2, 2, 3, 3]
    assert firsts[:3] == firsts[3:]


def test_entries_are_slotted() -> None:
    hs = make_hs()
    entry = reg(hs).entry
    assert not hasattr(entry, "__dict__")
    with pytest.raises(AttributeError):
        entry.extra = 1  # type: ignore[attr-defined]


# ----------------------------------------------------------------- per-owner pools, learned entries


def test_owned_pool_count_follows_registrations_moves_and_removals() -> None:
    hs = make_hs()
    reg(hs, b"a", 1, home_server_id=7)
    reg(hs, b"a", 2, home_server_id=7)
    reg(hs, b"b", 3, home_server_id=7)
    reg(hs, b"b", 4, home_server_id=8)
    assert (hs.owned_pool_count(7), hs.owned_pool_count(8), hs.owned_pool_count(9)) == (2, 1, 0)
    assert hs.owns_in_pool(7, b"a") and not hs.owns_in_pool(8, b"a")
    hs.set_owner(b"b", 3, 8)
    assert (hs.owned_pool_count(7), hs.owned_pool_count(8)) == (1, 1)
    hs.deregister(b"a", 1)
    assert hs.owns_in_pool(7, b"a")
    hs.deregister(b"a", 2)
    assert hs.owned_pool_count(7) == 0 and not hs.owns_in_pool(7, b"a")
    hs.take_over(8, 7)
    assert (hs.owned_pool_count(7), hs.owned_pool_count(8)) == (1, 0)


def test_cancel_expiry_keeps_an_entry_until_registered_again() -> None:
    hs = make_hs()
    entry = reg(hs, b"a", 1, registration_life=10).entry
    hs.cancel_expiry(entry)
    assert entry.expires_at is None and hs.next_deadline() is None
    assert hs.expire(1e9) == [] and hs.get(b"a", 1) is entry
    reg(hs, b"a", 1, now=5.0, registration_life=10)
    assert entry.expires_at == 15.0 and hs.expire(20.0) == [entry]


def test_a_registration_without_deadline_keeps_none() -> None:
    hs = make_hs()
    entry = reg(hs, b"a", 1, registration_life=10, deadline=False).entry  # a new PE
    assert entry.expires_at is None and hs.next_deadline() is None and entry.registration_life == 10
    reg(hs, b"a", 1, now=5.0, registration_life=20, deadline=False)  # the fast path of a re-registration
    reg(hs, b"a", 1, now=5.0, registration_life=20, identity="alice", deadline=False)  # the general one
    assert entry.expires_at is None and hs.expire(1e9) == [] and entry.registration_life == 20
    reg(hs, b"a", 1, now=6.0, registration_life=10)  # its own registration sets one again
    assert entry.expires_at == 16.0
    reg(hs, b"a", 1, now=7.0, registration_life=10, deadline=False)  # and this takes it away
    assert entry.expires_at is None and hs.next_deadline() is None and hs.get(b"a", 1) is entry


def test_identity_pools_joining_gives_both_facts_in_one_call() -> None:
    hs = make_hs()
    assert hs.identity_pools_joining("alice", b"pool") == 0
    reg(hs, pe_id=1, identity="alice")
    reg(hs, handle=b"x", pe_id=1, identity="alice")
    assert hs.identity_pools_joining("ALICE", b"pool") is None  # has a PE there: no new pool
    assert hs.identity_pools_joining(" alice", b"y") == 2  # would join a third pool
    for handle in (b"pool", b"x", b"y"):
        joining = hs.identity_pools_joining("alice", handle)
        assert joining == (None if hs.identity_in_pool("alice", handle) else hs.identity_pools("alice"))


def test_remove_entry_removes_only_the_registered_entry() -> None:
    hs = make_hs()
    first = reg(hs, pe_id=1, identity="alice").entry
    hs.deregister(b"pool", 1)
    second = reg(hs, pe_id=1, identity="alice").entry
    assert not hs.remove_entry(first)  # an older entry under the same key: nothing changes
    assert hs.get(b"pool", 1) is second and len(hs) == 1
    assert hs.remove_entry(second)
    assert hs.get(b"pool", 1) is None and len(hs) == 0 and hs.pool_count == 0
    assert hs.identity_count("alice") == 0 and hs.checksum_total(100) == 0
    assert not hs.remove_entry(second)  # gone already


@pytest.mark.parametrize("field, value, cause", [
    ("pool_handle", b"", CAUSE_INVALID_VALUES),
    ("pool_handle", "pool", CAUSE_INVALID_VALUES),
    ("pool_handle", b"x" * 100_000, CAUSE_LACK_OF_RESOURCES),
    ("pe_id", -1, CAUSE_INVALID_VALUES),
    ("pe_id", 1 << 32, CAUSE_INVALID_VALUES),
    ("pe_id", 1.0, CAUSE_INVALID_VALUES),
    ("home_server_id", 1 << 32, CAUSE_INVALID_VALUES),
    ("transport_type", 0x7777, CAUSE_INVALID_VALUES),
    ("transport_use", 2, CAUSE_INVALID_VALUES),
    ("registration_life", -2, CAUSE_INVALID_VALUES),
    ("registration_life", 1 << 31, CAUSE_INVALID_VALUES),
])
def test_register_refuses_each_bad_value_and_changes_nothing(field: str, value: Any, cause: int) -> None:
    hs = make_hs()
    with pytest.raises(HandlespaceError) as info:
        reg(hs, **{"pe_id": 2, ("handle" if field == "pool_handle" else field): value})
    assert info.value.cause == cause
    assert len(hs) == 0 and hs.pool_count == 0


def test_register_takes_int_subclasses_and_infinite_life_as_before() -> None:
    hs = make_hs()
    assert reg(hs, pe_id=True).entry.pe_id == 1  # isinstance(True, int): as the field-by-field checks say
    assert reg(hs, pe_id=5, registration_life=INFINITE_LIFE).entry.expires_at is None
