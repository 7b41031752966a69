"""ENRP between registrars over real loopback TLS (in this process).

Three registrars with their own certificates find each other from static
peer lists, authenticate each other (TLS, client certificates required),
admit each other (the ``enrp`` action), join, and share one handlespace: a
PE registered at any of them is resolvable at all of them.  Then the
channel-level refusals of RFC 5355 2.5 and 2.15.
"""

from __future__ import annotations

from twisted.internet import defer, endpoints, reactor
from twisted.internet.protocol import Factory
from twisted.trial import unittest

from rserpool.security import tls
from rserpool.wire import (
    AsapDeregistration, AsapError, AsapHandleResolution, AsapRegistration, EnrpError, EnrpHandleUpdate,
    EnrpPresence,
)
from rserpool.wire.codes import CAUSE_SECURITY, CAUSE_UNRECOGNIZED_MESSAGE
from rserpool.service.channel import Channel, ChannelSettings
from tests.asaphelpers import RawClient, make_pe
from tests.enrpnet import EnrpClusterMixin, all_linked, connect_all, registrar_cert, start_node, until, views_agree

ALLOWED_AB = ("registrar-a.rserpool.test", "registrar-b.rserpool.test")


class EnrpOverTLS(EnrpClusterMixin, unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_three_registrars_serve_one_pool(self):
        nodes = yield self.start("registrar-a", "registrar-b", "registrar-c")
        connect_all(nodes)
        yield until(nodes, lambda: all_linked(nodes))
        pes = []
        for index, node in enumerate(nodes):
            pe = yield self.client(node, self.pki.pe1 if index != 1 else self.pki.pe2)
            reply = yield pe.request(AsapRegistration(b"echo", make_pe(0x100 + index, port=7000 + index)))
            self.assertFalse(reply.reject, reply)
            pes.append(pe)
        yield until(nodes, lambda: all(len(n.handlespace) == 3 for n in nodes) and views_agree(nodes))
        for node in nodes:
            pu = yield self.client(node)
            answer = yield pu.request(AsapHandleResolution(b"echo"))
            self.assertEqual(sorted(p.pe_id for p in answer.pool_elements), [0x100, 0x101, 0x102])
        # Every PE keeps its home; the identity travels with it.
        for index, node in enumerate(nodes):
            entry = nodes[(index + 1) % 3].handlespace.get(b"echo", 0x100 + index)
            self.assertEqual(entry.home_server_id, node.registrar.server_id)
            self.assertEqual(entry.identity, "pe2" if index == 1 else "pe1")
        # A deregistration reaches everyone; a lost ASAP channel too.
        reply = yield pes[0].request(AsapDeregistration(b"echo", 0x100))
        self.assertIsNone(reply.error)
        pes[2].channel.abort()
        yield until(nodes, lambda: all(len(n.handlespace) == 1 for n in nodes) and views_agree(nodes))

    @defer.inlineCallbacks
    def test_a_registrar_joining_later_downloads_the_handlespace(self):
        nodes = yield self.start("registrar-a", "registrar-b", timers={"mentor_discovery_timeout": 0.5,
                                                                       "page_pes": 16})
        connect_all(nodes)
        yield until(nodes, lambda: all_linked(nodes))
        pe = yield self.client(nodes[0], self.pki.pe1)
        for i in range(40):
            pe.send(AsapRegistration(b"echo", make_pe(0x200 + i, port=8000 + i)))
        yield until(nodes, lambda: all(len(n.handlespace) == 40 for n in nodes))
        late = yield start_node(reactor, self.pki, "registrar-c")
        self.nodes.append(late)
        late.peers.entries = [nodes[0].candidate(), nodes[1].candidate()]
        late.enrp.connector.rediscover()
        yield until(self.nodes, lambda: all_linked(self.nodes) and views_agree(self.nodes))
        self.assertEqual(len(late.handlespace), 40)
        self.assertGreaterEqual(late.enrp.core.stats["pages_received"], 3)

    @defer.inlineCallbacks
    def test_a_join_whose_mentor_channel_breaks_mid_table_completes_on_the_next_channel(self):
        """Pages are applied a turn after the next one is asked for; the
        channel breaks while one waits: that page is applied as the channel
        goes (it came first), and the next channel to the mentor downloads
        the table afresh."""
        nodes = yield self.start("registrar-a", timers={"page_pes": 8}, expect_peers=False)
        pe = yield self.client(nodes[0], self.pki.pe1)
        for i in range(40):
            pe.send(AsapRegistration(b"echo", make_pe(0x400 + i, port=8000 + i)))
        yield until(nodes, lambda: len(nodes[0].handlespace) == 40)
        late = yield start_node(reactor, self.pki, "registrar-c", timers={"page_pes": 8})
        self.nodes.append(late)
        core = late.enrp.core
        apply_page = core.apply_page
        broken = []

        def break_first(link, now):
            if not broken:  # the channel breaks while this page waits to be applied
                broken.append(link)
                link.channel.abort()
                return []
            return apply_page(link, now)

        core.apply_page = break_first
        late.peers.entries = [nodes[0].candidate()]
        late.enrp.connector.rediscover()
        yield until(self.nodes, lambda: all_linked(self.nodes) and views_agree(self.nodes))
        self.assertEqual(len(broken), 1)
        self.assertTrue(broken[0].closed)
        self.assertEqual(core.stats["pages_dropped"], 0)
        self.assertEqual(len(late.handlespace), 40)
        self.assertGreaterEqual(core.stats["pages_received"], 6)  # the first channel's pages, then all again

    @defer.inlineCallbacks
    def test_the_registrars_peer_list_for_the_admin_endpoint_is_the_enrp_services(self):
        nodes = yield self.start("registrar-a", "registrar-b")
        connect_all(nodes)
        yield until(nodes, lambda: all_linked(nodes))
        a, b = nodes
        (peer,) = a.registrar.peer_views()
        self.assertEqual(peer["server_id"], f"{b.enrp.core.server_id:08x}")
        self.assertEqual((peer["identity"], peer["state"]), ("registrar-b.rserpool.test", "linked"))
        from rserpool.admin.resource import AdminResource
        self.assertEqual(AdminResource(a.registrar, access=None).status(0.0)["peers"], [peer])

    @defer.inlineCallbacks
    def test_revoking_a_peer_closes_its_enrp_channel_through_the_shared_gate(self):
        """The registrar's gate is also the peer door's: revoking the peer's
        identity (RegistrarService.revoke) closes its live ENRP channel and
        removes no PE (a peer registers none on this registrar)."""
        nodes = yield self.start("registrar-a", "registrar-b", peers_allowed=ALLOWED_AB)
        connect_all(nodes)
        yield until(nodes, lambda: all_linked(nodes))
        a, b = nodes
        pe = yield self.client(a, self.pki.pe1)
        reply = yield pe.request(AsapRegistration(b"echo", make_pe(0x300)))
        self.assertFalse(reply.reject, reply)
        yield until(nodes, lambda: all(len(n.handlespace) == 1 for n in nodes))
        (channel,) = a.enrp.channels
        self.assertEqual(channel.admission.identity, "registrar-b.rserpool.test")
        closed = channel.closed_deferred()
        a.registrar.revoke(identity="registrar-b.rserpool.test", reason="test revocation")
        yield closed
        self.assertEqual(a.registrar.gate.stats["revoked"], 1)
        self.assertIsNotNone(a.handlespace.get(b"echo", 0x300))  # A's own PE stays
        self.assertFalse(pe.channel.closed)

    @defer.inlineCallbacks
    def test_a_registrar_not_authorized_as_peer_is_refused(self):
        nodes = yield self.start("registrar-a", "registrar-b", peers_allowed=ALLOWED_AB,
                                 expect_peers=False)
        rogue = yield start_node(reactor, self.pki, "registrar-x", peers_allowed=ALLOWED_AB)
        self.nodes.append(rogue)
        rogue.peers.entries = [nodes[0].candidate()]
        rogue.enrp.connector.rediscover()
        # A refuses the channel from X (not authorized) and says why.
        yield until([rogue], lambda: rogue.enrp.connector.targets.targets
                    and all(t.state == "idle" and t.attempts for t in rogue.enrp.connector.targets.targets.values()))
        self.assertEqual(nodes[0].enrp.core.peers.records, {})
        self.assertEqual(nodes[0].enrp.core.peers.links, set())

    @defer.inlineCallbacks
    def test_a_client_without_certificate_cannot_even_finish_the_handshake(self):
        (node,) = yield self.start("registrar-a", expect_peers=False)
        creator = tls.client_options("registrar-a.rserpool.test", [self.pki.ca.cert])
        client = RawClient()
        endpoint = endpoints.wrapClientTLS(creator, endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1",
                                                                                  node.enrp_port))
        yield endpoint.connect(Factory.forProtocol(
            lambda: Channel(client, reactor, ChannelSettings(), tls=True, initiator=True)))
        yield client.closed  # TLS 1.3: the client's side finished, the server's refused it
        self.assertEqual(client.messages, [])
        self.assertEqual(node.enrp.core.peers.links, set())
        self.assertEqual(node.enrp.channels, set())

    @defer.inlineCallbacks
    def test_a_pe_certificate_on_the_enrp_port_is_refused(self):
        (node,) = yield self.start("registrar-a", expect_peers=False)
        client = yield self.client(node, self.pki.pe1, port=node.enrp_port)
        client.send(EnrpPresence(0x1234, 0, 0xFFFF))
        client.send(AsapRegistration(b"echo", make_pe(1)))
        reply = yield client.next()
        self.assertIsInstance(reply, EnrpError)
        self.assertEqual(reply.error.causes[0].code, CAUSE_SECURITY)
        yield client.closed
        self.assertEqual(node.enrp.core.peers.records, {})
        self.assertEqual(len(node.handlespace), 0)

    @defer.inlineCallbacks
    def test_asap_on_the_enrp_port_of_an_admitted_peer_is_refused(self):
        nodes = yield self.start("registrar-a", "registrar-b", expect_peers=False)
        b_cert = registrar_cert(self.pki, "registrar-b")
        client = yield self.client(nodes[0], b_cert, port=nodes[0].enrp_port)
        client.send(AsapRegistration(b"echo", make_pe(1)))
        replies = [(yield client.next()), (yield client.next())]
        errors = [m for m in replies if isinstance(m, AsapError)]
        self.assertEqual([c.code for c in errors[0].error.causes], [CAUSE_UNRECOGNIZED_MESSAGE])
        self.assertEqual(len(nodes[0].handlespace), 0)

    @defer.inlineCallbacks
    def test_enrp_on_the_asap_port_is_refused(self):
        (node,) = yield self.start("registrar-a", expect_peers=False)
        client = yield self.client(node, registrar_cert(self.pki, "registrar-b"))
        reply = yield client.request(EnrpPresence(0x1234, 0, 0xFFFF))
        self.assertIsInstance(reply, EnrpError)
        self.assertEqual(reply.error.causes[0].code, CAUSE_UNRECOGNIZED_MESSAGE)
        self.assertEqual(node.enrp.core.peers.records, {})


class UpdatesWithoutTimerWork(unittest.TestCase):
    """The shell around updates, on a task.Clock with in-memory channels:
    local changes and peers' applied updates reach the channels and the
    watchers without the timer being looked at again (they move no ENRP
    deadline); a refused update, which is answered, is looked at."""

    def setUp(self):
        from ipaddress import IPv4Address

        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        from rserpool.enrp import EnrpSettings
        from rserpool.gate import Gate, GatePolicy
        from rserpool.handlespace import Handlespace
        from rserpool.service.enrp import EnrpService
        from rserpool.wire import LeastUsedPolicy, PoolElement, TcpTransport

        self.clock = Clock()
        self.clock.advance(1000)
        self.hs = Handlespace()
        self.service = EnrpService(EnrpSettings(0xA), reactor=self.clock, handlespace=self.hs, listen=[],
                                   server_tls=object(), client_tls=lambda name: None, gate=Gate(GatePolicy()),
                                   authorizer=None)
        self.service.running = True
        self.service.core.start(self.clock.seconds(), False)
        self.channels = []
        for peer in (0xB, 0xC):
            channel = Channel(self.service, self.clock, self.service.channel_settings, initiator=True)
            channel.admission = None  # not through the gate here: the core is fed directly
            channel.handshakeCompleted = lambda: None
            transport = StringTransport()
            channel.makeConnection(transport)
            link, _ = self.service.core.link_up(channel, f"registrar-{peer:x}", "127.0.0.1", True,
                                                self.clock.seconds())
            channel.state = link
            self.service.core.message_received(link, EnrpPresence(peer, 0, 0xFFFF), self.clock.seconds())
            transport.clear()
            self.channels.append((channel, transport))
        self.looked = []
        next_deadline = self.service.core.next_deadline
        self.service.core.next_deadline = lambda: self.looked.append(1) or next_deadline()
        self.watched = []
        self.service.watchers.append(lambda: self.watched.append(1))
        self.pe = lambda pe_id, home: PoolElement(pe_id, home, 30, TcpTransport(7, IPv4Address("127.0.0.1")),
                                                  LeastUsedPolicy(pe_id))

    def test_a_local_change_goes_to_every_peer(self):
        from rserpool.asap.registrar import PoolElementAdded, policy_settings

        pe = self.pe(0x11, 0xA)
        entry = self.hs.register(self.clock.seconds(), pool_handle=b"echo", pe_id=0x11,
                                 settings=policy_settings(pe.policy), transport_type=5, transport_use=0,
                                 registration_life=30, home_server_id=0xA, identity="pe1", payload=pe).entry
        self.service.local_change(PoolElementAdded(entry, True))
        sent = [transport.value() for _, transport in self.channels]
        self.assertTrue(all(sent) and sent[0] == sent[1])  # the same bytes to both
        self.assertIn(pe.encode(), sent[0])
        self.assertEqual((self.looked, self.watched), ([], [1]))

    def test_an_applied_update_needs_no_timer_work_and_a_refused_one_does(self):
        channel, transport = self.channels[0]
        self.service.message_received(channel, EnrpHandleUpdate(0xB, 0, 0, b"echo", self.pe(0x22, 0xB)),
                                      self.clock.seconds())
        self.assertEqual(self.hs.get(b"echo", 0x22).home_server_id, 0xB)
        self.assertEqual((self.looked, self.watched, transport.value()), ([], [1], b""))
        self.service.message_received(channel, EnrpHandleUpdate(0xB, 0, 0, b"echo", self.pe(0x33, 0xC)),
                                      self.clock.seconds())  # not its PE: refused and answered
        self.assertIsNone(self.hs.get(b"echo", 0x33))
        self.assertTrue(transport.value() and self.looked)


class PagesTwoTurnsLater(UpdatesWithoutTimerWork):
    """The shell applies a page held back by the core (``ApplyPage``) two
    reactor turns after the request for the next one was written."""

    def page(self, *pe_ids, more=True):
        from rserpool.wire import EnrpHandleTableResponse, PoolEntry

        return EnrpHandleTableResponse(0xB, 0xA, (PoolEntry(b"echo", tuple(self.pe(i, 0xB) for i in pe_ids)),),
                                       more=more)

    def test_a_page_is_applied_two_turns_after_the_next_request(self):
        channel, transport = self.channels[0]
        self.service.message_received(channel, self.page(1, 2), self.clock.seconds())
        self.assertTrue(transport.value())  # the request for the next page is written at once
        self.assertEqual(len(self.hs), 0)
        link = channel.state
        first = self.service._page_calls[link]
        first.func(*first.args)  # the first turn: it only waits for one more
        first.cancel()
        self.assertEqual(len(self.hs), 0)
        self.assertIsNot(self.service._page_calls[link], first)
        self.clock.advance(0)  # the second turn
        self.assertEqual(len(self.hs), 2)
        self.assertEqual(self.service._page_calls, {})

    def test_a_newer_page_takes_the_place_of_the_waiting_one_and_stopping_cancels(self):
        channel, _ = self.channels[0]
        self.service.message_received(channel, self.page(1, 2), self.clock.seconds())
        first = self.service._page_calls[channel.state]
        self.service.message_received(channel, self.page(3), self.clock.seconds())  # page 1 goes first
        self.assertEqual(len(self.hs), 2)
        self.assertFalse(first.active())
        second = self.service._page_calls[channel.state]
        self.service.stopService()
        self.assertFalse(second.active())
        self.assertEqual(self.service._page_calls, {})
        self.clock.advance(0)
        self.clock.advance(0)
        self.assertEqual(len(self.hs), 2)  # page 3 waits for the next message (the channel is gone)
