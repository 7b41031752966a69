"""Hypothesis state machine: registrars that die, stop, come back and are
replaced, with PEs that re-register elsewhere or die with them (takeover,
re-homing and restarting in place, docs/takeover.md), while ENRP messages
are delayed, interleaved and lost with dropped channels.  Table pages hold
two PEs, so downloads are pipelined (a page applied when the test delivers
its turn, like a message) and runs of new PEs go in at once, while
takeovers, claims and adoptions happen around them.

The model keeps, for every PE, the registrar it is registered at (or none:
dead).  A PE whose registrar is killed either re-registers at another
running registrar (its channel closed, its server hunt found another) or
dies with it; one whose registrar is stopped may move the same way (its
channel's dead-peer detection) or wait for it.  After quiescence (every
stopped registrar continued, every channel up, long enough for every
takeover and every adopted PE's registration life): every running
registrar holds the same PEs with the same homes, every live PE homed
where it is registered, and no dead PE anywhere.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, rule

from rserpool.enrp import Restarted
from tests.enrphelpers import FAST, Cluster, Node

IDS = [0x10, 0x20, 0x30]
PE_IDS = [1, 2, 3, 4, 5]
LIFE = 15  # the adopted PEs' bound (max_adopted_life); registrations are for ever (-1)
PAGE_PES = 2


class TakeoverCluster(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cluster = Cluster(IDS, seed=2, max_adopted_life=float(LIFE), page_pes=PAGE_PES)
        self.cluster.start(expect_peers=True)
        self.cluster.connect_all()
        self.cluster.deliver_all()
        self.cluster.advance(3.0)
        self.at: dict[int, Node] = {}  # PE id -> the registrar it is registered at
        self.closing: dict[Node, set[int]] = {}  # stopped registrar -> PEs that closed their channel to it
        self.killed: list[Node] = []  # for ever (also once replaced)
        self.replaced = 0
        self.next_id = 0x40

    # -- helpers -----------------------------------------------------------------------

    @property
    def running(self) -> list[Node]:
        return self.cluster.nodes

    def _register(self, pe_id: int, node: Node) -> None:
        reply = node.register(b"echo", pe_id, f"pe{pe_id}", life=-1)
        assert not reply.reject, reply
        self.at[pe_id] = node

    def _orphans(self, node: Node) -> list[int]:
        return [pe_id for pe_id, home in self.at.items() if home is node]

    def _restarted(self, node: Node) -> None:
        """``node`` restarted in place: the channels of its PEs closed."""
        for pe_id in self._orphans(node):
            del self.at[pe_id]

    # -- PEs -----------------------------------------------------------------------------

    @rule(pe_id=st.sampled_from(PE_IDS), index=st.integers(0, 2))
    def register(self, pe_id: int, index: int) -> None:
        node = self.running[index % len(self.running)]
        old = self.at.get(pe_id)
        if old is not None and old is not node:
            if old in self.running:
                old.close_asap_channel(f"pe{pe_id}")  # it leaves its old registrar first
            else:
                self.closing.setdefault(old, set()).add(pe_id)
        self._register(pe_id, node)

    @rule(pe_id=st.sampled_from(PE_IDS))
    def pe_dies(self, pe_id: int) -> None:
        node = self.at.get(pe_id)
        if node is not None and node in self.running:
            node.close_asap_channel(f"pe{pe_id}")
            del self.at[pe_id]

    # -- registrars --------------------------------------------------------------------------

    @rule(index=st.integers(0, 2), data=st.data())
    def kill(self, index: int, data: st.DataObject) -> None:
        if len(self.running) < 2:
            return
        node = self.running[index % len(self.running)]
        self.cluster.kill(node)
        self.killed.append(node)
        self.closing.pop(node, None)
        for pe_id in self._orphans(node):
            del self.at[pe_id]
            if data.draw(st.booleans(), label=f"PE {pe_id} survives"):
                self._register(pe_id, data.draw(st.sampled_from(self.running), label="its new registrar"))

    @rule(index=st.integers(0, 2), data=st.data())
    def stop(self, index: int, data: st.DataObject) -> None:
        if len(self.running) < 2:
            return
        node = self.running[index % len(self.running)]
        self.cluster.pause(node)
        for pe_id in self._orphans(node):
            if data.draw(st.booleans(), label=f"PE {pe_id} moves away"):
                self.closing.setdefault(node, set()).add(pe_id)
                self._register(pe_id, data.draw(st.sampled_from(self.running), label="its new registrar"))

    @rule()
    def cont(self) -> None:
        stopped = [n for n in self.cluster.stopped if n not in self.killed]
        if stopped:
            self._continue(stopped[0])

    def _continue(self, node: Node) -> None:
        before = len([e for e in node.events if type(e) is Restarted])
        self.cluster.resume(node)
        for pe_id in self.closing.pop(node, set()):
            node.close_asap_channel(f"pe{pe_id}")  # the channels it missed closing
        node.tick()
        if len([e for e in node.events if type(e) is Restarted]) > before:
            self._restarted(node)

    @rule()
    def replace_killed(self) -> None:
        """A killed registrar's host starts a new registrar (a new server ID)."""
        if self.replaced >= len(self.killed):
            return
        self.replaced += 1
        node = Node(self.next_id, self.cluster, max_adopted_life=float(LIFE), page_pes=PAGE_PES)
        self.next_id += 0x10
        self.cluster.nodes.append(node)
        node.enrp_output(node.enrp.start(self.cluster.now, True))
        for other in list(self.running):
            if other is not node:
                self.cluster.connect(node, other)

    # -- the network ---------------------------------------------------------------------------

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
        counts = {n: len([e for e in n.events if type(e) is Restarted]) for n in self.running}
        self.cluster.advance(seconds, step=1.0, deliver=deliver)
        for node, count in counts.items():
            if len([e for e in node.events if type(e) is Restarted]) > count:
                self._restarted(node)

    @rule(a=st.integers(0, 3), b=st.integers(0, 3))
    def reconnect(self, a: int, b: int) -> None:
        nodes = self.running
        first, second = nodes[a % len(nodes)], nodes[b % len(nodes)]
        if first is not second:
            self.cluster.connect(first, second)

    @rule(a=st.integers(0, 3), b=st.integers(0, 3))
    def drop_channel(self, a: int, b: int) -> None:
        nodes = self.running
        first, second = nodes[a % len(nodes)], nodes[b % len(nodes)]
        for wire in self.cluster.wires.values():
            if wire.up and set(wire.ends) == {first, second}:
                wire.drop("dropped by the test")

    # -- quiescence ----------------------------------------------------------------------------

    def teardown(self) -> None:
        for node in [n for n in self.cluster.stopped if n not in self.killed]:
            self._continue(node)
        # Long enough for every dead registrar's takeover and every adopted
        # PE's registration life, with audits between.
        horizon = FAST["max_time_last_heard"] + FAST["max_time_no_response"] + 5 + LIFE + 3 * FAST["heartbeat_cycle"]
        rounds = int(horizon / (FAST["heartbeat_cycle"] * 1.6)) + 3
        for _ in range(rounds):
            counts = {n: len([e for e in n.events if type(e) is Restarted]) for n in self.running}
            self.cluster.settle(rounds=1)
            for node, count in counts.items():
                if len([e for e in node.events if type(e) is Restarted]) > count:
                    self._restarted(node)
        self.cluster.assert_consistent()
        for node in self.running:
            held = {e.pe_id: e.home_server_id for e in node.handlespace.entries()}
            expected = {pe_id: home.server_id for pe_id, home in self.at.items()}
            assert held == expected, (hex(node.server_id), held, expected)


TakeoverCluster.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=35,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestTakeoverClusterStateMachine = TakeoverCluster.TestCase
