"""The ENRP shell's part in takeover and re-homing (docs/takeover.md), over
real loopback TLS in this process: resolutions wait until a registrar is in
sync, a registrar's own shutdown deletes nothing at its peers, the peers
take it over and the adopted PEs expire, and a restart in place closes the
PEs' channels and rejoins under a new server ID.  (The same with real
processes and signals: tests/test_failover_campaign.py.)
"""

from __future__ import annotations

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from rserpool.enrp.restart import restart_in_place
from rserpool.wire import AsapHandleResolution, AsapRegistration
from tests.asaphelpers import make_pe
from tests.enrpnet import EnrpClusterMixin, all_linked, connect_all, until, views_agree


class TakeoverOverTLS(EnrpClusterMixin, unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_a_joining_registrar_answers_resolutions_only_once_in_sync(self):
        a, b = yield self.start("registrar-a", "registrar-b")
        connect_all([a, b])
        yield until([a, b], lambda: all_linked([a, b]))
        pe = yield self.client(a, self.pki.pe1)
        reply = yield pe.request(AsapRegistration(b"echo", make_pe(0x31)))
        self.assertFalse(reply.reject)
        [c] = yield self.start("registrar-c")
        self.assertTrue(c.registrar.core.holding)  # joining: nothing is answered from an empty handlespace
        pu = yield self.client(c)
        answer = pu.request(AsapHandleResolution(b"echo"))
        yield task.deferLater(reactor, 0.3, lambda: None)
        self.assertFalse(answer.called)  # waiting, not "unknown pool"
        c.peers.entries = [a.candidate(), b.candidate()]
        c.enrp.connector.rediscover()
        answer = yield answer
        self.assertTrue(c.enrp.core.initialized)
        self.assertEqual([p.pe_id for p in answer.pool_elements], [0x31])
        self.assertFalse(c.registrar.core.holding)

    @defer.inlineCallbacks
    def test_a_stopped_registrars_pes_stay_with_its_peers_until_taken_over_then_expire(self):
        nodes = yield self.start("registrar-a", "registrar-b", "registrar-c",
                                 timers={"takeover_ack_timeout": 1.0, "max_adopted_life": 2.0})
        a, b, c = nodes
        connect_all(nodes)
        yield until(nodes, lambda: all_linked(nodes))
        pe = yield self.client(a, self.pki.pe1)
        reply = yield pe.request(AsapRegistration(b"echo", make_pe(0x41, life=2)))
        self.assertFalse(reply.reject)
        yield until(nodes, lambda: all(n.handlespace.get(b"echo", 0x41) is not None for n in nodes))
        old = a.registrar.server_id
        yield a.stop()  # a clean stop: its PE's channel closes, but that is our doing, no news for the peers
        self.assertIsNotNone(b.handlespace.get(b"echo", 0x41))
        self.assertEqual(b.handlespace.get(b"echo", 0x41).home_server_id, old)
        # The peers find it dead, one of them takes it over and adopts the PE ...
        yield until([b, c], lambda: all(n.handlespace.get(b"echo", 0x41) is not None
                                        and n.handlespace.get(b"echo", 0x41).home_server_id != old
                                        for n in (b, c)), timeout=20)
        winner = b.handlespace.get(b"echo", 0x41).home_server_id
        self.assertIn(winner, (b.registrar.server_id, c.registrar.server_id))
        self.assertEqual(c.handlespace.get(b"echo", 0x41).home_server_id, winner)
        # ... which never comes back (its process is gone): it expires everywhere.
        yield until([b, c], lambda: all(n.handlespace.get(b"echo", 0x41) is None for n in (b, c)), timeout=20)

    @defer.inlineCallbacks
    def test_a_restart_in_place_closes_the_pes_channels_and_rejoins_under_a_new_id(self):
        nodes = yield self.start("registrar-a", "registrar-b")
        a, b = nodes
        connect_all(nodes)
        yield until(nodes, lambda: all_linked(nodes))
        pe = yield self.client(a, self.pki.pe1)
        reply = yield pe.request(AsapRegistration(b"echo", make_pe(0x51)))
        self.assertFalse(reply.reject)
        yield until(nodes, lambda: b.handlespace.get(b"echo", 0x51) is not None)
        old = a.registrar.server_id
        out: list = []
        restart_in_place(a.enrp.core, reactor.seconds(), 99.0, out)  # what a detected pause does
        a.enrp._carry_out(out)
        new = a.registrar.server_id
        self.assertNotEqual(new, old)
        self.assertEqual(a.enrp.server_id, new)
        self.assertEqual(len(a.handlespace), 0)
        self.assertTrue(a.registrar.core.holding)
        yield pe.closed  # the PE's channel closed: it re-registers through its server hunt
        yield until(nodes, lambda: all_linked(nodes))
        self.assertFalse(a.registrar.core.holding)
        self.assertEqual({link.server_id for link in b.enrp.core.peers.active()}, {new})
        # Nothing stale came back: the PE is still homed at the old ID at B
        # (until B takes the old ID over), and A holds it as B says, not as its own.
        yield until(nodes, lambda: views_agree(nodes))
        entry = a.handlespace.get(b"echo", 0x51)
        self.assertTrue(entry is None or entry.home_server_id != new)

    @defer.inlineCallbacks
    def test_pes_whose_channels_close_because_the_registrar_stops_get_no_del_pe(self):
        nodes = yield self.start("registrar-a", "registrar-b")
        a, b = nodes
        connect_all(nodes)
        yield until(nodes, lambda: all_linked(nodes))
        pe = yield self.client(a, self.pki.pe1)
        yield pe.request(AsapRegistration(b"echo", make_pe(0x61)))
        other = yield self.client(a, self.pki.pe2)
        yield other.request(AsapRegistration(b"echo", make_pe(0x62, port=8)))
        yield until(nodes, lambda: len(b.handlespace) == 2)
        deleted = b.enrp.core.applier.stats["deleted"]
        other.channel.abort()  # an ordinary lost channel: its DEL_PE removes the PE everywhere
        yield until(nodes, lambda: b.handlespace.get(b"echo", 0x62) is None)
        self.assertEqual(b.enrp.core.applier.stats["deleted"], deleted + 1)
        a.registrar.stopping = True  # the registrar is shutting down and closes its channels itself
        pe.channel.abort()
        yield pe.closed
        yield until([a], lambda: a.handlespace.get(b"echo", 0x61) is None)
        yield a.stop()  # (a live registrar's next PRESENCE would have its peers' audit drop it)
        yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(b.enrp.core.applier.stats["deleted"], deleted + 1)  # no DEL_PE for it
        self.assertIsNotNone(b.handlespace.get(b"echo", 0x61))  # it will re-register elsewhere
