"""Hypothesis state machine: the handlespace against a naive model.

Random register / re-register / deregister / expire (advancing ``now``) /
resolve / take-over sequences; after every step the store must hold the same
pools and PEs as the model (plain dicts), its incremental per-owner checksums
must equal the full recomputation and the model's, limits must hold and no
empty pool may remain.
"""

from __future__ import annotations

import random
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rserpool.handlespace import (
    CAUSE_INCONSISTENT_DATA_CONTROL,
    CAUSE_INCONSISTENT_POLICY,
    CAUSE_INCONSISTENT_TRANSPORT,
    CAUSE_LACK_OF_RESOURCES,
    CAUSE_SECURITY,
    CAUSE_UNKNOWN_POOL_HANDLE,
    INFINITE_LIFE,
    LEAST_USED,
    ROUND_ROBIN,
    TRANSPORT_SCTP,
    TRANSPORT_TCP,
    Handlespace,
    HandlespaceError,
    HandlespaceLimits,
    PolicySettings,
)
from rserpool.wire.checksum import pe_checksum

LIMITS = HandlespaceLimits(
    max_pools=3,
    max_pes_per_pool=4,
    max_pes=6,
    max_pes_per_identity=3,
    max_pool_handle_length=4,
)
HANDLES = [b"a", b"bc", b"def\x00", b"ghij", b"toolong"]
PE_IDS = [1, 2, 0x10000, 0xFFFFFFFF, 0x12345678]  # 0 is refused (test_handlespace_handlespace)
OWNERS = [1, 2, 0xFFFFFFFF]
IDENTITIES = [None, "alice", "bob"]
SETTINGS = [
    PolicySettings(ROUND_ROBIN),
    PolicySettings(LEAST_USED, load=10),
    PolicySettings(LEAST_USED, load=0xFFFFFFFF),
]


class HandlespaceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.hs = Handlespace(LIMITS, random.Random(0))  # the real make_policy
        self.now = 0.0
        # handle -> {"policy", "transport", "use", "pes": {pe_id: dict}}
        self.model: dict[bytes, dict[str, Any]] = {}

    # ----------------------------------------------------------- model

    def _model_count(self) -> int:
        return sum(len(pool["pes"]) for pool in self.model.values())

    def _identity_count(self, identity: str) -> int:
        return sum(1 for pool in self.model.values() for pe in pool["pes"].values() if pe["identity"] == identity)

    def _expected_register(
        self, handle: bytes, pe_id: int, policy: PolicySettings, transport: int, use: int, identity: str | None
    ) -> int | None:
        """The cause the store must answer, or None for acceptance."""
        if len(handle) > LIMITS.max_pool_handle_length:
            return CAUSE_LACK_OF_RESOURCES
        pool = self.model.get(handle)
        pe = None if pool is None else pool["pes"].get(pe_id)
        if pe is not None and pe["identity"] is not None and identity is not None and identity != pe["identity"]:
            return CAUSE_SECURITY
        if pool is not None:
            if policy.policy_type != pool["policy"]:
                return CAUSE_INCONSISTENT_POLICY
            if transport != pool["transport"]:
                return CAUSE_INCONSISTENT_TRANSPORT
            if use != pool["use"]:
                return CAUSE_INCONSISTENT_DATA_CONTROL
        if pe is None:
            if pool is None and len(self.model) >= LIMITS.max_pools:
                return CAUSE_LACK_OF_RESOURCES
            if pool is not None and len(pool["pes"]) >= LIMITS.max_pes_per_pool:
                return CAUSE_LACK_OF_RESOURCES
            if self._model_count() >= LIMITS.max_pes:
                return CAUSE_LACK_OF_RESOURCES
        bound = identity if identity is not None else (pe["identity"] if pe is not None else None)
        if bound is not None and (pe is None or pe["identity"] != bound):
            if self._identity_count(bound) >= LIMITS.max_pes_per_identity:
                return CAUSE_LACK_OF_RESOURCES
        return None

    # ----------------------------------------------------------- rules

    @rule(
        handle=st.sampled_from(HANDLES),
        pe_id=st.sampled_from(PE_IDS),
        policy=st.sampled_from(SETTINGS),
        transport=st.sampled_from([TRANSPORT_SCTP, TRANSPORT_SCTP, TRANSPORT_TCP]),
        use=st.sampled_from([0, 0, 1]),
        life=st.sampled_from([INFINITE_LIFE, 0, 1, 5, 20]),
        owner=st.sampled_from(OWNERS),
        identity=st.sampled_from(IDENTITIES),
    )
    def register(
        self,
        handle: bytes,
        pe_id: int,
        policy: PolicySettings,
        transport: int,
        use: int,
        life: int,
        owner: int,
        identity: str | None,
    ) -> None:
        expected = self._expected_register(handle, pe_id, policy, transport, use, identity)
        try:
            result = self.hs.register(
                self.now,
                pool_handle=handle,
                pe_id=pe_id,
                settings=policy,
                transport_type=transport,
                transport_use=use,
                registration_life=life,
                home_server_id=owner,
                identity=identity,
                payload=(handle, pe_id, self.now),
            )
        except HandlespaceError as exc:
            assert exc.cause == expected, (exc, expected)
            return
        assert expected is None, f"accepted, expected cause 0x{expected:x}"
        pool = self.model.setdefault(
            handle, {"policy": policy.policy_type, "transport": transport, "use": use, "pes": {}}
        )
        old = pool["pes"].get(pe_id)
        assert result.created == (old is None)
        assert result.previous_owner == (None if old is None else old["owner"])
        pool["pes"][pe_id] = {
            "owner": owner,
            "identity": identity if identity is not None else (old["identity"] if old else None),
            "expires_at": None if life == INFINITE_LIFE else self.now + life,
            "settings": policy,
            "payload": (handle, pe_id, self.now),
        }

    @rule(handle=st.sampled_from(HANDLES), pe_id=st.sampled_from(PE_IDS), identity=st.sampled_from(IDENTITIES))
    def deregister(self, handle: bytes, pe_id: int, identity: str | None) -> None:
        pool = self.model.get(handle)
        pe = None if pool is None else pool["pes"].get(pe_id)
        refused = pe is not None and identity is not None and pe["identity"] not in (None, identity)
        try:
            removed = self.hs.deregister(handle, pe_id, identity)
        except HandlespaceError as exc:
            assert refused and exc.cause == CAUSE_SECURITY
            return
        assert not refused
        if pe is None:
            assert removed is None
            return
        assert removed is not None and removed.pe_id == pe_id
        del pool["pes"][pe_id]
        if not pool["pes"]:
            del self.model[handle]

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 3.0, 10.0, 30.0]))
    def expire(self, dt: float) -> None:
        self.now += dt
        removed = self.hs.expire(self.now)
        expected = set()
        for handle, pool in list(self.model.items()):
            for pe_id, pe in list(pool["pes"].items()):
                if pe["expires_at"] is not None and pe["expires_at"] <= self.now:
                    expected.add((handle, pe_id))
                    del pool["pes"][pe_id]
            if not pool["pes"]:
                del self.model[handle]
        got = [(e.pool_handle, e.pe_id) for e in removed]
        assert len(got) == len(set(got))
        assert set(got) == expected
        deadlines = [e.expires_at for e in removed]
        assert deadlines == sorted(deadlines)

    @rule(handle=st.sampled_from(HANDLES), n=st.one_of(st.none(), st.integers(1, 6)))
    def resolve(self, handle: bytes, n: int | None) -> None:
        pool = self.model.get(handle)
        try:
            chosen = self.hs.resolve(handle, n)
        except HandlespaceError as exc:
            assert pool is None and exc.cause == CAUSE_UNKNOWN_POOL_HANDLE
            return
        assert pool is not None
        ids = [e.pe_id for e in chosen]
        assert len(ids) == len(set(ids))
        assert set(ids) <= set(pool["pes"])
        size = len(pool["pes"])
        assert len(ids) == (size if n is None else min(n, size))

    @rule(old=st.sampled_from(OWNERS), new=st.sampled_from(OWNERS))
    def take_over(self, old: int, new: int) -> None:
        moved = self.hs.take_over(old, new)
        expected = {
            (handle, pe_id)
            for handle, pool in self.model.items()
            for pe_id, pe in pool["pes"].items()
            if pe["owner"] == old
        }
        assert {(e.pool_handle, e.pe_id) for e in moved} == expected
        for handle, pe_id in expected:
            self.model[handle]["pes"][pe_id]["owner"] = new

    # ------------------------------------------------------ invariants

    @invariant()
    def same_pools_and_pes(self) -> None:
        hs = self.hs
        assert sorted(hs.pool_handles()) == sorted(self.model)
        assert len(hs) == self._model_count()
        for handle, pool in self.model.items():
            info = hs.pool_info(handle)
            assert info is not None and info.size > 0
            assert (info.policy_type, info.transport_type, info.transport_use) == (
                pool["policy"],
                pool["transport"],
                pool["use"],
            )
            entries = {e.pe_id: e for e in hs.pool_members(handle)}
            assert set(entries) == set(pool["pes"])
            for pe_id, pe in pool["pes"].items():
                entry = entries[pe_id]
                assert entry.pool_handle == handle
                assert entry.home_server_id == pe["owner"]
                assert entry.identity == pe["identity"]
                assert entry.expires_at == pe["expires_at"]
                assert entry.settings == pe["settings"]
                assert entry.payload == pe["payload"]

    @invariant()
    def checksums_agree(self) -> None:
        hs = self.hs
        model_owners = {pe["owner"] for pool in self.model.values() for pe in pool["pes"].values()}
        assert set(hs.owners()) == model_owners
        for owner in OWNERS:
            pairs = [
                (handle, pe_id)
                for handle, pool in self.model.items()
                for pe_id, pe in pool["pes"].items()
                if pe["owner"] == owner
            ]
            incremental = hs.checksum(owner)
            assert incremental == hs.recompute_checksum(owner) == pe_checksum(pairs)
            assert hs.owned_count(owner) == len(pairs)
            assert sorted((e.pool_handle, e.pe_id) for e in hs.pes_owned_by(owner)) == sorted(pairs)

    @invariant()
    def limits_hold(self) -> None:
        hs = self.hs
        assert hs.pool_count <= LIMITS.max_pools
        assert len(hs) <= LIMITS.max_pes
        for handle in hs.pool_handles():
            assert 1 <= hs.pool_size(handle) <= LIMITS.max_pes_per_pool
            assert len(handle) <= LIMITS.max_pool_handle_length
        for identity in ("alice", "bob"):
            count = self._identity_count(identity)
            assert hs.identity_count(identity) == count <= LIMITS.max_pes_per_identity

    @invariant()
    def next_deadline_is_earliest_expiry(self) -> None:
        deadlines = [
            pe["expires_at"]
            for pool in self.model.values()
            for pe in pool["pes"].values()
            if pe["expires_at"] is not None
        ]
        assert self.hs.next_deadline() == (min(deadlines) if deadlines else None)

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data())
    def reregister_existing(self, data: st.DataObject) -> None:
        """Re-register a known PE with the pool's own settings (the common case)."""
        handle = data.draw(st.sampled_from(sorted(self.model)))
        pool = self.model[handle]
        pe_id = data.draw(st.sampled_from(sorted(pool["pes"])))
        policy = data.draw(st.sampled_from([s for s in SETTINGS if s.policy_type == pool["policy"]]))
        self.register(
            handle,
            pe_id,
            policy,
            pool["transport"],
            pool["use"],
            data.draw(st.sampled_from([INFINITE_LIFE, 1, 5, 20])),
            data.draw(st.sampled_from(OWNERS)),
            data.draw(st.sampled_from(IDENTITIES)),
        )


    @rule(data=st.data())
    def register_consistent(self, data: st.DataObject) -> None:
        """Register any PE with the settings its pool already has (fills pools up to the limits)."""
        handle = data.draw(st.sampled_from(HANDLES))
        pool = self.model.get(handle)
        if pool is None:
            policy, transport, use = SETTINGS[0], TRANSPORT_SCTP, 0
        else:
            policy = [s for s in SETTINGS if s.policy_type == pool["policy"]][0]
            transport, use = pool["transport"], pool["use"]
        self.register(
            handle,
            data.draw(st.sampled_from(PE_IDS)),
            policy,
            transport,
            use,
            data.draw(st.sampled_from([INFINITE_LIFE, INFINITE_LIFE, 20])),
            data.draw(st.sampled_from(OWNERS)),
            data.draw(st.sampled_from(IDENTITIES)),
        )


HandlespaceMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestHandlespaceStateMachine = HandlespaceMachine.TestCase
