"""Restarting in place (rserpool.enrp.restart, docs/takeover.md): a
registrar not run for longer than MAX-TIME-LAST-HEARD, or told it was
taken over, drops its state and rejoins under a new server ID; it serves
nothing stale, resurrects nothing and does not fight the takeover."""

from __future__ import annotations

from rserpool.enrp import Restarted, TookOver
from rserpool.wire import EnrpHandleTableResponse, EnrpHandleUpdate, EnrpPresence, EnrpTakeoverServer, PoolEntry
from tests.enrphelpers import FAST, Probe
from tests.test_enrp_takeover import ACK_TIMEOUT, DEAD_AFTER, events, homes, pe, run_until, started

A, B, C = 0x0A, 0x0B, 0x0C
EVIL = 0x0E


def test_a_registrar_stopped_past_max_time_last_heard_restarts_in_place_and_does_not_fight():
    cluster = started()
    a, b, c = cluster.nodes
    c.register(b"echo", 0x31, "pe31", life=-1)  # its PE will die while C is stopped
    c.register(b"echo", 0x32, "pe32", life=-1)
    a.register(b"echo", 0x11, "pe11", life=-1)
    cluster.deliver_all()
    cluster.pause(c)
    run_until(cluster, lambda: events(b, TookOver), DEAD_AFTER + ACK_TIMEOUT + 2)
    cluster.deliver_all()
    a.deregister(b"echo", 0x11, "pe11")  # deleted while C was away
    b.register(b"echo", 0x32, "pe32")  # pe32 found B
    cluster.deliver_all()
    cluster.resume(c)
    cluster.advance(1)
    [restart] = events(c, Restarted)
    assert restart.old_id == C and restart.new_id not in (0, C)
    assert not c.enrp.initialized and len(c.handlespace) == 0  # nothing stale is kept or served
    assert c.asap.holding and c.asap.settings.server_id == restart.new_id
    cluster.settle()
    assert c.enrp.initialized
    # Nothing resurrected, nothing fought over: pe11 stays deleted, pe31 stays
    # with the takeover's winner (until its life), pe32 with B.
    for node in cluster.nodes:
        assert homes(node) == {0x31: B, 0x32: B}, (hex(node.server_id), homes(node))
    assert C not in {link.server_id for node in (a, b) for link in node.enrp.peers.active()}
    cluster.assert_consistent()


def test_a_registrar_told_it_was_taken_over_restarts_in_place():
    cluster = started()
    a = cluster.nodes[0]
    probe = Probe(a, "registrar-e", EVIL)
    probe.send(EnrpPresence(EVIL, 0, 0xFFFF))
    probe.send(EnrpTakeoverServer(EVIL, A, A))
    [restart] = events(a, Restarted)
    assert restart.old_id == A and a.enrp.server_id == restart.new_id


def test_a_restarted_registrar_sends_its_updates_under_its_new_id():
    """Updates are framed with a header encoded once per server ID: a new ID
    needs a new header (a peer would otherwise see the old ID and close)."""
    cluster = started()
    a = cluster.nodes[0]
    probe = Probe(a, "registrar-e", EVIL)
    probe.send(EnrpPresence(EVIL, 0, 0xFFFF))
    probe.send(EnrpTakeoverServer(EVIL, A, A))
    [restart] = events(a, Restarted)
    again = Probe(a, "registrar-e", EVIL)
    again.send(EnrpPresence(EVIL, 0, 0xFFFF))
    a.register(b"echo", 0x77, "pe77")
    a.deregister(b"echo", 0x77, "pe77")
    updates = again.of_type(EnrpHandleUpdate)
    assert [u.sender_id for u in updates] == [restart.new_id, restart.new_id]


def test_a_held_back_page_whose_turn_comes_after_a_pause_restarts_and_applies_nothing():
    """The shell's later turn for a pipelined page is an entry point with
    ``now`` too: after a pause it restarts in place like any other."""
    cluster = started()
    a = cluster.nodes[0]
    probe = Probe(a, "registrar-e", EVIL)
    probe.send(EnrpPresence(EVIL, 0, 0xFFFF))  # A re-synchronizes with EVIL (W=1)
    probe.send(EnrpHandleTableResponse(EVIL, A, (PoolEntry(b"echo", (pe(0x71, EVIL),)),), more=True))
    cluster.now += FAST["max_time_last_heard"] + 1
    assert a.later.deliver_one(a)
    [restart] = events(a, Restarted)
    assert len(a.handlespace) == 0 and a.enrp.stats["pages_dropped"] == 1 and probe.closed


def test_a_short_pause_is_no_restart():
    cluster = started()
    a, b, c = cluster.nodes
    cluster.pause(c)
    cluster.advance(5)  # well under MAX-TIME-LAST-HEARD
    cluster.resume(c)
    cluster.advance(2)
    assert not events(c, Restarted) and c.enrp.server_id == C


def test_a_restarted_registrar_takes_new_registrations_while_it_rejoins():
    cluster = started()
    a, b, c = cluster.nodes
    cluster.pause(c)
    cluster.advance(DEAD_AFTER + ACK_TIMEOUT)
    cluster.resume(c)
    cluster.advance(1)
    [restart] = events(c, Restarted)
    reply = c.register(b"echo", 0x77, "pe77")
    assert not reply.reject
    cluster.settle()
    for node in cluster.nodes:
        assert homes(node) == {0x77: restart.new_id}
    cluster.assert_consistent()
