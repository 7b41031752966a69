"""Takeover of a dead peer and the re-homing of its PEs (RFC 5353 3.5,
docs/takeover.md), with time passed in.

The in-memory cluster of ``tests.enrphelpers`` runs real cores over the real
codec; ``Cluster.kill`` / ``pause`` / ``resume`` play SIGKILL, SIGSTOP and
SIGCONT; ``Probe`` plays a peer by hand.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from rserpool.enrp import TakenOver, TakeoverAborted, TakeoverStarted, TookOver
from rserpool.wire import (
    EnrpHandleTableRequest, EnrpHandleTableResponse, EnrpHandleUpdate, EnrpInitTakeover, EnrpInitTakeoverAck,
    EnrpListResponse, EnrpPresence, EnrpTakeoverServer, LeastUsedPolicy, PoolElement, PoolEntry, SctpTransport,
    ServerInformation, TcpTransport,
)
from rserpool.wire import codes
from tests.enrphelpers import FAST, Cluster, Probe

A, B, C, D = 0x0A, 0x0B, 0x0C, 0x0D
EVIL = 0x0E
#: A killed peer is dead after MAX-TIME-LAST-HEARD + MAX-TIME-NO-RESPONSE of
#: silence; its last PRESENCE was at most 1.5 heartbeat cycles before.
DEAD_AFTER = FAST["max_time_last_heard"] + FAST["max_time_no_response"] + 1.5 * FAST["heartbeat_cycle"] + 1
ACK_TIMEOUT = 5.0


def pe(pe_id: int, home: int, life: int = 30) -> PoolElement:
    return PoolElement(pe_id, home, life, TcpTransport(7, IPv4Address("127.0.0.1")), LeastUsedPolicy(0))


def started(ids=(A, B, C), **kw) -> Cluster:
    cluster = Cluster(list(ids), **kw)
    cluster.start(expect_peers=True)
    cluster.connect_all()
    cluster.deliver_all()
    cluster.advance(3.0)
    assert all(node.enrp.initialized for node in cluster.nodes)
    return cluster


def start_takeover_with_slow_peer(cluster: Cluster, node, target: int, slow) -> None:
    """Run until ``node`` starts taking ``target`` over, ``slow`` stopped
    just before (so that its ACK waits, while it is not silent long enough
    to be declared dead itself)."""
    deadline = node.enrp.peers.records[target].last_heard + FAST["max_time_last_heard"] \
        + FAST["max_time_no_response"]
    run_until(cluster, lambda: cluster.now >= deadline - 2, DEAD_AFTER)
    cluster.pause(slow)
    run_until(cluster, lambda: target in node.enrp.takeover.attempts, 5)


def events(node, kind) -> list:
    return [e for e in node.events if type(e) is kind]


def homes(node, handle: bytes = b"echo") -> dict:
    return {e.pe_id: e.home_server_id for e in node.handlespace.entries() if e.pool_handle == handle}


def run_until(cluster: Cluster, condition, limit: float, step: float = 1.0) -> float:
    """Advance until ``condition()``; returns the seconds it took (fails past ``limit``)."""
    start = cluster.now
    while not condition():
        assert cluster.now - start < limit, f"not within {limit} s"
        cluster.advance(step, step=step)
    return cluster.now - start


# -- arbitration (3.5.1) -------------------------------------------------------------------------


def test_a_killed_peer_is_taken_over_by_one_winner_the_larger_id():
    cluster = started()
    a, b, c = cluster.nodes
    for pe_id in (0x31, 0x32):
        c.register(b"echo", pe_id, f"pe{pe_id:x}", life=30)
    cluster.deliver_all()
    cluster.kill(c)
    took = run_until(cluster, lambda: events(b, TookOver) or events(a, TookOver), DEAD_AFTER + ACK_TIMEOUT)
    cluster.deliver_all()
    # Both saw it die at the same moment and both started; A (smaller ID) gave way.
    assert [e.target for e in events(a, TakeoverStarted)] == [C] == [e.target for e in events(b, TakeoverStarted)]
    assert events(a, TakeoverAborted) and not events(a, TookOver)
    assert events(b, TookOver) == [TookOver(C, 2, ())]
    assert events(a, TakenOver) == [TakenOver(C, B, 2)]
    assert took <= DEAD_AFTER
    for node in (a, b):
        assert homes(node) == {0x31: B, 0x32: B}
        assert C not in node.enrp.peers.records
        # the Pool Element parameters say so too (they go out in tables and resolutions)
        assert {e.payload.home_server_id for e in node.handlespace.entries()} == {B}
    assert set(b.enrp.applier.adopted) == {(b"echo", 0x31), (b"echo", 0x32)}
    assert all(e.expires_at is not None for e in b.handlespace.entries())
    assert a.handlespace.checksum(B) == b.handlespace.checksum(B)


def test_adopted_pes_that_never_come_back_expire_everywhere_within_their_life():
    cluster = started()
    a, b, c = cluster.nodes
    c.register(b"echo", 0x31, "pe31", life=20)
    c.register(b"echo", 0x32, "pe32", life=-1)  # infinite: max_adopted_life bounds it
    cluster.deliver_all()
    cluster.kill(c)
    killed = cluster.now
    run_until(cluster, lambda: 0x31 not in homes(a), DEAD_AFTER + ACK_TIMEOUT + 20 + 2)
    assert 0x31 not in homes(b) and 0x32 in homes(a)
    assert cluster.now - killed <= DEAD_AFTER + ACK_TIMEOUT + 20 + 2
    run_until(cluster, lambda: not homes(a) and not homes(b), 300 + 2)


def test_the_target_answers_init_takeover_with_presence_and_the_initiator_stops():
    cluster = started((A, B))
    a, b = cluster.nodes
    probe = Probe(a, "registrar-c", C)
    probe.send(EnrpPresence(C, 0, 0xFFFF))
    probe.drop()  # A lost its channel to C ...
    start_takeover_with_slow_peer(cluster, a, C, b)  # ... and B's answers are slow
    assert [e.target for e in events(a, TakeoverStarted)] == [C]
    # C comes back before B acknowledged: any word from it stops the takeover.
    probe = Probe(a, "registrar-c", C)
    probe.send(EnrpPresence(C, A, 0xFFFF))
    assert events(a, TakeoverAborted) == [TakeoverAborted(C, "the target is alive")]
    cluster.resume(b)
    cluster.advance(ACK_TIMEOUT + 1)
    assert not events(a, TookOver) and C in a.enrp.peers.records


def test_init_takeover_of_ourselves_is_answered_with_presence_to_every_peer():
    cluster = started()
    a = cluster.nodes[0]
    probe = Probe(a, "registrar-e", EVIL)
    probe.send(EnrpPresence(EVIL, 0, 0xFFFF))
    before = sum(w.pending() for w in cluster.wires.values())
    probe.send(EnrpInitTakeover(EVIL, A, A))
    assert sum(w.pending() for w in cluster.wires.values()) == before + 2  # PRESENCE to B and C
    assert type(probe.received[-1]) is EnrpPresence and not probe.of_type(EnrpInitTakeoverAck)


def test_of_two_initiators_the_smaller_id_aborts_and_acknowledges():
    cluster = started((A, B))
    a, b = cluster.nodes
    for node in (a, b):
        Probe(node, "registrar-c", C).send(EnrpPresence(C, 0, 0xFFFF))
    for link in [link for link in a.enrp.peers.links if link.server_id == C]:
        link.channel.drop()
    # A starts its own takeover of C (its silence is long enough) ...
    start_takeover_with_slow_peer(cluster, a, C, b)
    low = Probe(a, "registrar-9", 0x09)
    low.send(EnrpPresence(0x09, 0, 0xFFFF))
    high = Probe(a, "registrar-e", EVIL)
    high.send(EnrpPresence(EVIL, 0, 0xFFFF))
    # ... a smaller initiator is ignored (3.5.1 2B) ...
    assert not [m for m in low.send(EnrpInitTakeover(0x09, A, C)) if type(m) is EnrpInitTakeoverAck]
    assert C in a.enrp.takeover.attempts
    # ... a larger one makes A abort and acknowledge (2A).
    answers = high.send(EnrpInitTakeover(EVIL, A, C))
    assert [m for m in answers if type(m) is EnrpInitTakeoverAck] == [EnrpInitTakeoverAck(A, EVIL, C)]
    assert C not in a.enrp.takeover.attempts and C not in a.enrp.peers.records


def test_a_peer_not_taking_over_acknowledges_and_stops_monitoring_the_target():
    cluster = started()
    a, b, c = cluster.nodes
    probe = Probe(a, "registrar-e", EVIL)
    probe.send(EnrpPresence(EVIL, 0, 0xFFFF))
    answers = probe.send(EnrpInitTakeover(EVIL, A, C))
    assert [m for m in answers if type(m) is EnrpInitTakeoverAck] == [EnrpInitTakeoverAck(A, EVIL, C)]
    assert C not in a.enrp.peers.records and not cluster.wires[(A, C)].up


def test_a_missing_ack_from_a_peer_that_died_too_does_not_block_the_takeover():
    cluster = started((A, B, C, D))
    a, b, c, d = cluster.nodes
    c.register(b"echo", 0x31, "pe31")
    cluster.deliver_all()
    cluster.kill(c)
    start_takeover_with_slow_peer(cluster, d, C, b)  # B stopped too: it answers nothing
    run_until(cluster, lambda: events(d, TookOver), ACK_TIMEOUT + 2)
    cluster.deliver_all()
    [won] = events(d, TookOver)
    assert won.target == C and won.missing == (B,)  # went on after the ACK timeout
    assert homes(a) == {0x31: D} == homes(d)


def test_a_peer_whose_channel_closes_is_no_longer_waited_for():
    cluster = started((A, B, C, D))
    a, b, c, d = cluster.nodes
    cluster.kill(c)
    start_takeover_with_slow_peer(cluster, d, C, b)
    cluster.deliver_all()
    assert not events(d, TookOver)
    cluster.wires[(B, D)].drop("B's channel to D closed")
    assert [e.target for e in events(d, TookOver)] == [C]


def test_takeover_server_rehomes_the_targets_pes_at_every_peer():
    cluster = started()
    a = cluster.nodes[0]
    probe = Probe(a, "registrar-e", EVIL)
    probe.send(EnrpPresence(EVIL, 0, 0xFFFF))
    probe.send(EnrpHandleTableResponse(EVIL, A, ()))
    probe.send(EnrpHandleUpdate(EVIL, 0, codes.UPDATE_ADD_PE, b"echo", pe(0x71, EVIL)))
    other = Probe(a, "registrar-d", D)
    other.send(EnrpPresence(D, 0, 0xFFFF))
    other.send(EnrpHandleTableResponse(D, A, ()))
    other.send(EnrpTakeoverServer(D, A, EVIL))
    assert homes(a) == {0x71: D} and EVIL not in a.enrp.peers.records
    assert events(a, TakenOver) == [TakenOver(EVIL, D, 1)]
    assert probe.closed  # its channel, if it lives, starts again from a clean slate


# -- pipelined table pages (rserpool.enrp.transfers) meet a takeover ----------------------------


def test_a_page_of_the_target_still_waiting_is_applied_before_its_pes_are_rehomed():
    """A page received (its successor asked for) and not applied yet came
    before the TAKEOVER_SERVER: its PEs are re-homed with the others."""
    cluster = started()
    a = cluster.nodes[0]
    probe = Probe(a, "registrar-e", EVIL)
    probe.send(EnrpPresence(EVIL, 0, 0xFFFF))  # A re-synchronizes with EVIL (W=1)
    other = Probe(a, "registrar-d", D)
    other.send(EnrpPresence(D, 0, 0xFFFF))
    other.send(EnrpHandleTableResponse(D, A, ()))
    probe.send(EnrpHandleTableResponse(EVIL, A, (PoolEntry(b"echo", (pe(0x71, EVIL), pe(0x72, EVIL))),),
                                       more=True))
    assert homes(a) == {} and a.later.queue  # held back for the shell's later turn
    other.send(EnrpTakeoverServer(D, A, EVIL))
    assert homes(a) == {0x71: D, 0x72: D} and events(a, TakenOver) == [TakenOver(EVIL, D, 2)]
    assert a.enrp.applier.adopted == {(b"echo", 0x71): (EVIL, D), (b"echo", 0x72): (EVIL, D)}
    assert a.later.deliver_one(a) and homes(a) == {0x71: D, 0x72: D}  # nothing left to apply


def test_a_mentors_page_still_waiting_is_applied_before_a_takeover_rehomes_its_pes():
    """A joiner's download from its mentor lists PEs of a third server; that
    server's takeover arrives on another channel before the page's turn: the
    PEs are adopted by the winner as if the page had been applied on arrival
    (else they would stay homed at a server gone for good)."""
    cluster = Cluster([C])
    joiner = cluster.nodes[0]
    joiner.enrp_output(joiner.enrp.start(cluster.now, expect_peers=True))
    mentor = Probe(joiner, "registrar-a", A)
    mentor.send(EnrpPresence(A, 0, 0xFFFF))
    mentor.send(EnrpListResponse(A, C, (ServerInformation(EVIL, SctpTransport(9902, (IPv4Address("127.0.0.5"),))),)))
    assert mentor.of_type(EnrpHandleTableRequest)
    winner = Probe(joiner, "registrar-d", D)
    winner.send(EnrpPresence(D, 0, 0xFFFF))
    mentor.send(EnrpHandleTableResponse(A, C, (PoolEntry(b"echo", (pe(0x11, A), pe(0x71, EVIL), pe(0x72, EVIL))),),
                                        more=True))
    assert homes(joiner) == {}
    winner.send(EnrpTakeoverServer(D, C, EVIL))
    assert homes(joiner) == {0x11: A, 0x71: D, 0x72: D} and events(joiner, TakenOver) == [TakenOver(EVIL, D, 2)]
    assert joiner.enrp.applier.adopted == {(b"echo", 0x71): (EVIL, D), (b"echo", 0x72): (EVIL, D)}
    mentor.send(EnrpHandleTableResponse(A, C, (), more=False))
    assert joiner.enrp.initialized and homes(joiner) == {0x11: A, 0x71: D, 0x72: D}


def test_a_server_the_mentor_listed_that_never_links_is_declared_dead_and_taken_over():
    """The mentor's table lists PEs homed at a server this registrar never
    reaches (stopped, then killed), and the mentor dies too: that server is
    a peer from the LIST on (RFC 5353 3.2.2), declared dead when it never
    links, taken over, and its PEs expire instead of staying for ever."""
    cluster = Cluster([C], max_adopted_life=10.0)
    joiner = cluster.nodes[0]
    joiner.enrp_output(joiner.enrp.start(cluster.now, expect_peers=True))
    mentor = Probe(joiner, "registrar-a", A)
    mentor.send(EnrpPresence(A, 0, 0xFFFF))
    mentor.send(EnrpListResponse(A, C, (ServerInformation(EVIL, SctpTransport(9902, (IPv4Address("127.0.0.5"),))),)))
    mentor.send(EnrpHandleTableResponse(A, C, (PoolEntry(b"echo", (pe(0x11, A), pe(0x71, EVIL))),)))
    assert joiner.enrp.initialized and homes(joiner) == {0x11: A, 0x71: EVIL}
    mentor.drop("killed")
    run_until(cluster, lambda: not homes(joiner), DEAD_AFTER + 15)
    assert sorted(e.target for e in events(joiner, TookOver)) == [A, EVIL]
    assert not joiner.enrp.peers.records


# -- re-homing (docs/takeover.md) --------------------------------------------------------------


def test_a_pe_re_registering_after_its_registrar_died_moves_at_once():
    cluster = started()
    a, b, c = cluster.nodes
    c.register(b"echo", 0x31, "pe31")
    cluster.deliver_all()
    cluster.kill(c)  # its channels close: C holds nothing any more
    a.register(b"echo", 0x31, "pe31", load=1)
    cluster.deliver_all()
    assert homes(a) == {0x31: A} == homes(b)


def test_a_stopped_registrars_pe_moves_when_its_home_is_taken_over_and_stays_resolvable():
    cluster = started()
    a, b, c = cluster.nodes
    c.register(b"echo", 0x31, "pe31")
    c.register(b"echo", 0x32, "pe32")
    cluster.deliver_all()
    cluster.pause(c)  # SIGSTOP: channels up, nothing answered
    a.register(b"echo", 0x31, "pe31", load=1)  # the PE gave up on C and found A
    cluster.deliver_all()
    assert homes(b)[0x31] == C  # C still holds it as far as B knows: the claim waits
    seen = []

    def settled() -> bool:
        seen.append(0x31 in homes(b))
        return homes(b).get(0x31) == A and (events(a, TookOver) or events(b, TookOver))

    run_until(cluster, settled, DEAD_AFTER + ACK_TIMEOUT + 2)
    cluster.deliver_all()
    assert all(seen)  # resolvable at B all along
    assert homes(a) == homes(b) == {0x31: A, 0x32: B}


def test_an_adopted_pe_yields_to_its_re_registration_elsewhere_without_a_gap():
    cluster = started((A, B, C, D))
    a, b, c, d = cluster.nodes
    c.register(b"echo", 0x31, "pe31")
    cluster.deliver_all()
    cluster.kill(c)
    run_until(cluster, lambda: events(d, TookOver), DEAD_AFTER + ACK_TIMEOUT)
    cluster.deliver_all()
    assert homes(a) == homes(b) == homes(d) == {0x31: D}
    a.register(b"echo", 0x31, "pe31", load=2)  # the PE is back, at A
    seen = []
    while cluster.queues():
        wire, node = cluster.rng.choice(cluster.queues())
        wire.deliver_one(node)
        seen.append(0x31 in homes(b))
    assert all(seen)  # resolvable at B after every single message
    assert homes(a) == homes(b) == homes(d) == {0x31: A}
    assert (b"echo", 0x31) not in d.enrp.applier.adopted
    assert d.handlespace.get(b"echo", 0x31).expires_at is None  # a learned copy again


def test_a_pe_re_registering_at_the_adopter_becomes_its_own():
    cluster = started()
    a, b, c = cluster.nodes
    c.register(b"echo", 0x31, "pe31", life=20)
    cluster.deliver_all()
    cluster.kill(c)
    run_until(cluster, lambda: events(b, TookOver), DEAD_AFTER + ACK_TIMEOUT)
    cluster.advance(15)
    b.register(b"echo", 0x31, "pe31", life=20)
    cluster.deliver_all()
    assert not b.enrp.applier.adopted
    cluster.advance(10)  # past the adopted expiry: a registration keeps it now
    assert homes(a) == homes(b) == {0x31: B}


def test_a_contested_claim_is_withdrawn_by_the_senders_own_del_pe():
    cluster = started()
    a, b, c = cluster.nodes
    c.register(b"echo", 0x31, "pe31")
    cluster.deliver_all()
    cluster.pause(c)
    a.register(b"echo", 0x31, "pe31")
    cluster.deliver_all()
    assert (b"echo", 0x31) in b.enrp.applier.claims
    a.deregister(b"echo", 0x31, "pe31")  # it left A again
    cluster.deliver_all()
    assert (b"echo", 0x31) not in b.enrp.applier.claims
    assert not [line for line in b.logs if "not the sender" in line]  # no refusal: a withdrawal


def test_a_partitioned_registrar_taken_over_gets_its_live_pes_back_and_its_deletions_apply():
    cluster = started()
    a, b, c = cluster.nodes
    c.register(b"echo", 0x31, "pe31")
    c.register(b"echo", 0x32, "pe32")
    cluster.deliver_all()
    for key in ((A, C), (B, C)):
        cluster.wires[key].drop("partition")
    run_until(cluster, lambda: events(b, TookOver), DEAD_AFTER + ACK_TIMEOUT)
    cluster.deliver_all()
    c.deregister(b"echo", 0x32, "pe32")  # while cut off
    cluster.settle()
    assert homes(a) == homes(b) == homes(c) == {0x31: C}
    cluster.assert_consistent()


def test_an_unreachability_report_about_an_adopted_pe_removes_it_everywhere():
    from rserpool.wire import AsapEndpointUnreachable

    cluster = started()
    a, b, c = cluster.nodes
    c.register(b"echo", 0x31, "pe31", life=-1)
    cluster.deliver_all()
    cluster.kill(c)
    run_until(cluster, lambda: events(b, TookOver), DEAD_AFTER + ACK_TIMEOUT)
    cluster.deliver_all()
    # The winner has no channel to probe it: one report from a PU that
    # failed over away from it is enough.
    b.asap_input(b.asap.message_received(b.asap_channel("pu"), AsapEndpointUnreachable(b"echo", 0x31), cluster.now))
    cluster.deliver_all()
    assert homes(a) == homes(b) == {}
