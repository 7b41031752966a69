"""Hypothesis state machine: three registrars sharing one handlespace by ENRP.

Random registrations (new PEs, re-registrations that change the load,
moves to another registrar), deregistrations, lost ASAP channels and
registration-life expiries at random registrars, while ENRP messages are
delayed (not delivered), interleaved at random across channels (each channel
stays FIFO, as TCP is), and channels are dropped (their messages in flight
lost) and re-established.  All three start together and join each other.
After quiescence (every channel up, every message delivered, a few
heartbeat cycles for audits and re-synchronizations) every registrar holds
the same PEs with the same home, attributes and identity, and every PE
checksum agrees: ``Cluster.assert_consistent``.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, rule

from tests.enrphelpers import Cluster

IDS = [0x10, 0x20, 0x30]
PE_IDS = [1, 2, 0xFFFFFFFF]
HANDLES = [b"echo", b"pool-b"]


def handle_of(pe_id: int) -> bytes:
    return HANDLES[pe_id % 2]


class EnrpCluster(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cluster = Cluster(IDS, seed=1, page_pes=2)
        self.cluster.start(expect_peers=True)
        self.cluster.connect_all()
        self.home: dict[int, int] = {}  # PE id -> index of the registrar it is registered at

    def node(self, index: int):
        return self.cluster.nodes[index]

    def refresh(self) -> None:
        """Forget PEs their home no longer holds (expired)."""
        for pe_id, index in list(self.home.items()):
            entry = self.node(index).handlespace.get(handle_of(pe_id), pe_id)
            if entry is None or entry.home_server_id != IDS[index]:
                del self.home[pe_id]

    @rule(index=st.integers(0, 2), pe_id=st.sampled_from(PE_IDS), load=st.integers(0, 3),
          life=st.sampled_from([-1, -1, 15]))
    def register(self, index: int, pe_id: int, load: int, life: int) -> None:
        self.refresh()
        old = self.home.get(pe_id)
        if old is not None and old != index:  # a move: the PE leaves its old registrar first
            self.node(old).deregister(handle_of(pe_id), pe_id, f"pe{pe_id}")
        reply = self.node(index).register(handle_of(pe_id), pe_id, f"pe{pe_id}", load=load, life=life)
        assert not reply.reject, reply
        self.home[pe_id] = index

    @rule(pe_id=st.sampled_from(PE_IDS))
    def deregister(self, pe_id: int) -> None:
        self.refresh()
        index = self.home.pop(pe_id, None)
        if index is not None:
            self.node(index).deregister(handle_of(pe_id), pe_id, f"pe{pe_id}")

    @rule(pe_id=st.sampled_from(PE_IDS))
    def lose_asap_channel(self, pe_id: int) -> None:
        self.refresh()
        index = self.home.get(pe_id)
        if index is not None:
            self.node(index).close_asap_channel(f"pe{pe_id}")
            self.refresh()

    @rule(count=st.integers(1, 20), data=st.data())
    def deliver(self, count: int, data: st.DataObject) -> None:
        for _ in range(count):
            ready = self.cluster.queues()
            if not ready:
                return
            wire, node = data.draw(st.sampled_from(ready))
            wire.deliver_one(node)

    @rule(seconds=st.sampled_from([1.0, 4.0, 16.0]), deliver=st.booleans())
    def advance(self, seconds: float, deliver: bool) -> None:
        self.cluster.advance(seconds, step=1.0, deliver=deliver)
        self.refresh()

    @rule(a=st.integers(0, 2), b=st.integers(0, 2))
    def drop_channel(self, a: int, b: int) -> None:
        if a != b:
            wire = self.cluster.wires.get((min(IDS[a], IDS[b]), max(IDS[a], IDS[b])))
            if wire is not None:
                wire.drop("dropped by the test")

    @rule(a=st.integers(0, 2), b=st.integers(0, 2))
    def connect_channel(self, a: int, b: int) -> None:
        if a != b:
            self.cluster.connect(self.node(a), self.node(b))

    def teardown(self) -> None:
        self.cluster.settle()
        self.refresh()
        self.cluster.assert_consistent()
        for pe_id, index in self.home.items():
            for node in self.cluster.nodes:
                entry = node.handlespace.get(handle_of(pe_id), pe_id)
                assert entry is not None and entry.home_server_id == IDS[index], (pe_id, node.server_id)


EnrpCluster.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEnrpClusterStateMachine = EnrpCluster.TestCase
