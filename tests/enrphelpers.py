"""An in-memory cluster of registrars for the ENRP core tests.

Each ``Node`` is a registrar's cores without any I/O: a ``Handlespace``, the
ASAP ``RegistrarCore`` and the ``EnrpCore``, with time passed in.  A
``Cluster`` joins nodes pairwise with ``Wire``s: two FIFO queues of encoded
ENRP messages (a channel's order guarantee), delivered only when a test says
so, so that messages can be delayed, interleaved across channels, and lost
when a wire is dropped.  Every message crosses the real codec.  A table page
the core holds back (``ApplyPage``) waits in its node's ``Later`` queue,
delivered like a wire's messages: at random among them, or not before the
next message of its link (which the core then applies first).

A node taken out of ``Cluster.nodes`` (``Cluster.pause``) is not run: no
timer, no message delivered to it (a stopped process); ``Cluster.kill``
also drops its wires (a killed one); ``Cluster.resume`` runs it again.
"""

from __future__ import annotations

import random
from collections import deque
from ipaddress import IPv4Address
from typing import Any

from rserpool.asap.registrar import PoolElementAdded, PoolElementRemoved, RegistrarCore, RegistrarSettings
from rserpool.enrp import (
    Announce, ApplyPage, Close, Connect, EnrpCore, EnrpSettings, Initialized, PeerDead, PeerDown, PeerLimits,
    PeerUp, Restarted, Send, TakenOver, TakeoverAborted, TakeoverStarted, TookOver,
)
from rserpool.gate import AskAuthorizer, Gate, GatePolicy
from rserpool.handlespace import Handlespace, HandlespaceLimits
from rserpool.outputs import Send as AsapSend
from rserpool.testing import identified_channel
from rserpool.wire import (
    AsapDeregistration, AsapRegistration, LeastUsedPolicy, PoolElement, SctpTransport,
    ServerInformation, TcpTransport, decode_message,
)
from rserpool.wire.codes import PPID_ENRP

FAST = dict(heartbeat_cycle=10.0, max_time_last_heard=25.0, max_time_no_response=5.0,
            mentor_discovery_timeout=5.0, mentor_retry=1.0)


class Node:
    """One registrar's cores; ``events`` collects the ENRP outputs other than sends."""

    def __init__(self, server_id: int, cluster: "Cluster", *, peer_limits: PeerLimits | None = None,
                 hs_limits: HandlespaceLimits | None = None, **enrp: Any) -> None:
        self.server_id = server_id
        self.identity = f"registrar-{server_id:x}"  # its certificate's name: kept across restarts
        self.cluster = cluster
        self.handlespace = Handlespace(hs_limits or HandlespaceLimits(), rng=random.Random(server_id))
        self.asap = RegistrarCore(
            RegistrarSettings(server_id, keepalive_interval=1e9, keepalive_timeout=1e9),
            self.handlespace, gate=Gate(GatePolicy(check_pe_addresses=False)), rng=random.Random(server_id),
            log=self._log)
        settings = dict(FAST)
        settings.update(enrp)
        self.enrp = EnrpCore(EnrpSettings(server_id, peer_limits=peer_limits or PeerLimits(), **settings),
                             self.handlespace, rng=random.Random(server_id), log=self._log)
        self.enrp.server_info = ServerInformation(
            server_id, SctpTransport(9902, (IPv4Address("127.0.0.1"),)))
        self.asap_channels: dict[str, Any] = {}
        self.events: list = []
        self.logs: list[str] = []
        self.asap_replies: list = []
        self.later = Later(self)

    def _log(self, fmt: str, **kwargs: Any) -> None:
        self.logs.append(fmt.format(**kwargs))

    def asap_channel(self, identity: str) -> Any:
        state = self.asap_channels.get(identity)
        if state is None:
            state = self.asap_channels[identity] = identified_channel(self.asap, "127.0.0.1", identity)
        return state

    # -- ASAP side -----------------------------------------------------------------

    def register(self, handle: bytes, pe_id: int, identity: str, *, load: int = 0, life: int = -1,
                 port: int = 7) -> Any:
        pe = PoolElement(pe_id, 0, life, TcpTransport(port, IPv4Address("127.0.0.1")), LeastUsedPolicy(load))
        return self.asap_input(self.asap.message_received(self.asap_channel(identity),
                                                          AsapRegistration(handle, pe), self.cluster.now))

    def deregister(self, handle: bytes, pe_id: int, identity: str) -> Any:
        return self.asap_input(self.asap.message_received(self.asap_channel(identity),
                                                          AsapDeregistration(handle, pe_id), self.cluster.now))

    def close_asap_channel(self, identity: str) -> None:
        state = self.asap_channels.pop(identity, None)
        if state is not None:
            self.asap_input(self.asap.close_channel(state, self.cluster.now))

    def asap_input(self, outputs: list) -> Any:
        now = self.cluster.now
        reply = None
        while outputs:
            output = outputs.pop(0)
            if type(output) is AskAuthorizer:
                outputs.extend(self.asap.authorization_done(output, True, now))
            elif type(output) is AsapSend:
                reply = output.message
                self.asap_replies.append(reply)
            elif type(output) is PoolElementAdded:
                self.enrp_output(self.enrp.pe_added(output.entry))
            elif type(output) is PoolElementRemoved:
                self.enrp_output(self.enrp.pe_removed(output.entry))
        return reply

    # -- ENRP side -----------------------------------------------------------------

    def enrp_output(self, outputs: list) -> None:
        for output in outputs:
            kind = type(output)
            if kind is Send:
                wire = output.channel.channel
                data = output.data if output.data is not None else output.message.encode()
                wire.carry(self, output.message.PPID, data)
            elif kind is Close:
                output.channel.channel.drop(f"{self.server_id:x}: {output.reason}")
            elif kind is ApplyPage:
                self.later.queue.append(output.link)
            elif kind is Restarted:
                self.events.append(output)
                self.server_id = output.new_id
                self.asap_channels.clear()
                self.asap_input(self.asap.restart_in_place(output.new_id))
            else:
                assert kind in (Announce, Connect, PeerUp, PeerDown, PeerDead, Initialized, TakeoverStarted,
                                TakeoverAborted, TookOver, TakenOver), output
                self.events.append(output)

    def tick(self) -> None:
        now = self.cluster.now
        self.asap_input(self.asap.on_timer(now))
        self.enrp_output(self.enrp.on_timer(now))

    def snapshot(self) -> dict:
        """Everything resolution and audit depend on, per PE."""
        return {(e.pool_handle, e.pe_id): (e.home_server_id, e.payload, e.identity)
                for e in self.handlespace.entries()}

    def own(self) -> dict:
        return {k: v for k, v in self.snapshot().items() if v[0] == self.server_id}


class Later:
    """The pages a node's core holds back (``ApplyPage``), applied when
    delivered (the shell's later reactor turn)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.queue: deque = deque()
        self.up = True

    def deliver_one(self, to: Node) -> bool:
        if not self.queue:
            return False
        link = self.queue.popleft()
        to.enrp_output(to.enrp.apply_page(link, to.cluster.now))
        return True


class Wire:
    """One channel between two nodes: a FIFO queue each way."""

    def __init__(self, a: Node, b: Node, now: float) -> None:
        self.ends = (a, b)
        self.queues = {a: deque(), b: deque()}  # messages *to* that node
        self.links: dict[Node, Any] = {}
        self.up = True
        self.drops: list[str] = []
        for node, initiator in ((a, True), (b, False)):
            link, outputs = node.enrp.link_up(self, self.identity_of(node), "127.0.0.1", initiator, now)
            self.links[node] = link
            node.enrp_output(outputs)

    def identity_of(self, node: Node) -> str:
        other = self.ends[1] if node is self.ends[0] else self.ends[0]
        return other.identity

    def other(self, node: Node) -> Node:
        return self.ends[1] if node is self.ends[0] else self.ends[0]

    def carry(self, sender: Node, ppid: int, data: bytes) -> None:
        if self.up:
            self.queues[self.other(sender)].append((ppid, data))

    def pending(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def deliver_one(self, to: Node) -> bool:
        queue = self.queues[to]
        if not self.up or not queue:
            return False
        ppid, data = queue.popleft()
        message = decode_message(data, ppid)
        to.enrp_output(to.enrp.message_received(self.links[to], message, to.cluster.now))
        return True

    def drop(self, why: str = "dropped") -> None:
        if not self.up:
            return
        self.up = False
        self.drops.append(why)
        for node in self.ends:
            self.queues[node].clear()
            node.enrp_output(node.enrp.link_down(self.links[node], node.cluster.now, why))


class Cluster:
    def __init__(self, ids: list[int], *, seed: int = 0, **node_kw: Any) -> None:
        self.now = 1000.0
        self.rng = random.Random(seed)
        self.nodes = [Node(i, self, **node_kw) for i in ids]
        self.wires: dict[tuple[int, int], Wire] = {}

        self.stopped: list[Node] = []

    def node(self, server_id: int) -> Node:
        return next(n for n in self.nodes + self.stopped if n.server_id == server_id)

    def pause(self, node: Node) -> None:
        """SIGSTOP: the node runs no timer and reads nothing; its channels stay up."""
        self.nodes.remove(node)
        self.stopped.append(node)

    def kill(self, node: Node) -> None:
        """SIGKILL: paused for good, and its channels close."""
        self.pause(node)
        for wire in list(self.wires.values()):
            if node in wire.ends and wire.up:
                wire.drop("killed")

    def resume(self, node: Node) -> None:
        """SIGCONT."""
        self.stopped.remove(node)
        self.nodes.append(node)

    def start(self, expect_peers: bool = True) -> None:
        for node in self.nodes:
            node.enrp_output(node.enrp.start(self.now, expect_peers))

    def connect(self, a: Node, b: Node) -> Wire:
        key = (min(a.server_id, b.server_id), max(a.server_id, b.server_id))
        wire = self.wires.get(key)
        if wire is None or not wire.up or wire.ends not in ((a, b), (b, a)):
            first, second = (a, b) if a.server_id < b.server_id else (b, a)
            wire = self.wires[key] = Wire(first, second, self.now)
        return wire

    def connect_all(self) -> None:
        for i, a in enumerate(self.nodes):
            for b in self.nodes[i + 1:]:
                self.connect(a, b)

    def queues(self) -> list[tuple[Any, Node]]:
        """What can be delivered: a wire's next message to a running node,
        or a running node's next held-back page (``Later``)."""
        running = self.nodes
        return ([(w, n) for w in self.wires.values() if w.up for n in w.ends if w.queues[n] and n in running]
                + [(n.later, n) for n in running if n.later.queue])

    def deliver_all(self, limit: int = 200_000, shuffle: bool = True) -> int:
        """Deliver until every queue is empty (channels interleaved at random)."""
        count = 0
        while count < limit:
            ready = self.queues()
            if not ready:
                return count
            wire, node = self.rng.choice(ready) if shuffle else ready[0]
            wire.deliver_one(node)
            count += 1
        raise AssertionError("messages still flowing after %d deliveries" % limit)

    def advance(self, seconds: float, step: float = 1.0, deliver: bool = True) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for node in self.nodes:
                node.tick()
            if deliver:
                self.deliver_all()

    def settle(self, rounds: int = 4) -> None:
        """Quiescence: every channel up, every message delivered, a few
        heartbeat cycles (audits and re-synchronizations) run."""
        for _ in range(rounds):
            self.connect_all()
            self.deliver_all()
            self.advance(FAST["heartbeat_cycle"] * 1.6, step=1.0)

    def assert_consistent(self) -> None:
        union: dict = {}
        for node in self.nodes:
            own = node.own()
            overlap = set(own) & set(union)
            assert not overlap, f"PEs homed at two registrars: {overlap}"
            union.update(own)
        for node in self.nodes:
            snapshot = node.snapshot()
            missing = set(union) - set(snapshot)
            extra = set(snapshot) - set(union)
            differ = {k for k in set(union) & set(snapshot) if union[k] != snapshot[k]}
            assert not (missing or extra or differ), (
                f"registrar {node.server_id:x}: missing {sorted(missing)}, extra {sorted(extra)}, "
                f"different {sorted(differ)}")
        for node in self.nodes:
            for other in self.nodes:
                assert node.handlespace.checksum(other.server_id) == other.handlespace.checksum(other.server_id)


class Probe:
    """A hand-driven peer channel into one node: the test plays the peer
    (``send``) and reads what the node answers (``received``)."""

    def __init__(self, node: Node, identity: str, server_id: int, *, initiator: bool = False) -> None:
        self.node = node
        self.server_id = server_id
        self.received: list = []
        self.closed: list[str] = []
        self.link, outputs = node.enrp.link_up(self, identity, "127.0.0.1", initiator, node.cluster.now)
        node.enrp_output(outputs)

    def carry(self, sender: Node, ppid: int, data: bytes) -> None:
        self.received.append(decode_message(data, ppid))

    def drop(self, why: str = "dropped") -> None:
        if not self.closed:
            self.closed.append(why)
            self.node.enrp_output(self.node.enrp.link_down(self.link, self.node.cluster.now, why))

    def send(self, message: Any) -> list:
        """Deliver ``message`` (through the codec); the node's new answers."""
        before = len(self.received)
        decoded = decode_message(message.encode(), message.PPID)
        self.node.enrp_output(self.node.enrp.message_received(self.link, decoded, self.node.cluster.now))
        return self.received[before:]

    def of_type(self, kind: type) -> list:
        return [m for m in self.received if type(m) is kind]
