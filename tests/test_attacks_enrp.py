"""Attacks on ENRP between registrars, over real loopback TLS (issue 13,
item 8; docs/threats.md 2.5, 2.12, 2.15, 2.17).

A victim registrar A runs with a legitimate peer B.  The attacker is a raw
TCP-mapping client on A's ENRP port: without a certificate, with a PE's
certificate, with a registrar certificate the rules do not grant ``peer``,
or as an insider (a registrar certificate that is granted ``peer``: a
compromised registrar, RFC 5355 2.17).  Every test checks, from A's side,
that the attacker changed nothing it does not own and that A kept serving.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Address
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest

from rserpool.enrp import PeerLimits
from rserpool.security import tls
from rserpool.security.ratelimit import RateLimit
from rserpool.wire import (
    AsapHandleResolution, AsapRegistration, EnrpError, EnrpHandleTableRequest, EnrpHandleTableResponse,
    EnrpHandleUpdate, EnrpPresence, PoolElement, PoolEntry, RoundRobinPolicy, SctpTransport,
    ServerInformation, TcpTransport,
)
from rserpool.wire.codes import CAUSE_LACK_OF_RESOURCES, CAUSE_SECURITY, UPDATE_ADD_PE, UPDATE_DEL_PE
from tests.asaphelpers import make_pe
from tests.enrpnet import EnrpClusterMixin, all_linked, registrar_cert, start_node, transfers_done, until, views_agree

pytestmark = pytest.mark.integration

H = b"echo"
EVIL = 0x0E0E0E0E
ALLOWED = ("registrar-a.rserpool.test", "registrar-b.rserpool.test", "registrar-evil.rserpool.test")


def pe(pe_id: int, home: int, port: int = 7) -> PoolElement:
    """A PE as the pool's (round robin, TCP) others are."""
    return PoolElement(pe_id, home, 60, TcpTransport(port, IPv4Address("127.0.0.1")), RoundRobinPolicy())


def snapshot(node) -> dict:
    return {(e.pool_handle, e.pe_id): (e.home_server_id, e.payload, e.identity)
            for e in node.handlespace.entries()}


class EnrpAttacks(EnrpClusterMixin, unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def victim(self, **kw):
        """A and B linked, each with a PE of its own."""
        a = yield start_node(reactor, self.pki, "registrar-a", peers_allowed=ALLOWED, **kw)
        b = yield start_node(reactor, self.pki, "registrar-b", peers_allowed=ALLOWED)
        self.nodes += [a, b]
        a.peers.entries = [b.candidate()]
        a.enrp.connector.rediscover()
        yield until([a, b], lambda: all_linked([a, b]))
        for node, cert, pe_id in ((a, self.pki.pe1, 0x0A), (b, self.pki.pe2, 0x0B)):
            client = yield self.client(node, cert, node.asap_port)
            reply = yield client.request(AsapRegistration(H, make_pe(pe_id)))
            self.assertFalse(reply.reject, reply)
        yield until([a, b], lambda: len(a.handlespace) == 2 and views_agree([a, b]) and transfers_done([a, b]))
        return a, b

    def client(self, node, cert, port=None):
        """A raw TLS client of ``node``'s ENRP port unless ``port`` says otherwise."""
        return super().client(node, cert, port or node.enrp_port)

    @defer.inlineCallbacks
    def insider(self, a, server_id: int = EVIL):
        """A registrar certificate granted ``peer``, linked to A as ``server_id``;
        it answers A's first re-synchronization request with an empty table."""
        evil = yield self.client(a, registrar_cert(self.pki, "registrar-evil"))
        evil.server_id = server_id
        evil.send(EnrpPresence(server_id, 0, 0xFFFF))
        while True:
            message = yield evil.next()
            if type(message) is EnrpHandleTableRequest:
                break
        evil.send(EnrpHandleTableResponse(server_id, a.registrar.server_id, ()))
        yield until([a], lambda: a.enrp.core.peers.link_of(server_id) is not None)
        return evil

    @defer.inlineCallbacks
    def drain(self, client, kinds=(EnrpError,)) -> Any:
        """The messages ``client`` received of ``kinds``, after a round trip:
        a HANDLE_TABLE_REQUEST is answered after everything sent before it."""
        client.send(EnrpHandleTableRequest(client.server_id, 0, own_children_only=True))
        got = []
        while True:
            message = yield client.next()
            if type(message) is EnrpHandleTableResponse:
                return got
            if type(message) in kinds:
                got.append(message)

    # -- RFC 5355 2.5 / 2.15: who may be a peer at all ---------------------------------------------

    @defer.inlineCallbacks
    def test_a_peer_without_certificate_cannot_join_or_change_anything(self):
        a, b = yield self.victim()
        before = snapshot(a)
        creator = tls.client_options("registrar-a.rserpool.test", [self.pki.ca.cert])
        from tests.asaphelpers import RawClient
        from rserpool.service.channel import Channel, ChannelSettings
        from twisted.internet import endpoints
        from twisted.internet.protocol import Factory

        client = RawClient()
        endpoint = endpoints.wrapClientTLS(creator, endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1",
                                                                                  a.enrp_port))
        yield endpoint.connect(Factory.forProtocol(lambda: Channel(client, reactor, ChannelSettings(),
                                                                   initiator=True)))
        try:
            yield client.ready
            client.send(EnrpHandleUpdate(EVIL, 0, UPDATE_DEL_PE, H, pe(0x0A, a.registrar.server_id)))
        except Exception:
            pass
        yield client.closed
        self.assertEqual(snapshot(a), before)
        self.assertEqual({l.identity for l in a.enrp.core.peers.links}, {"registrar-b.rserpool.test"})

    @defer.inlineCallbacks
    def test_a_pe_certificate_is_not_a_registrar(self):
        a, b = yield self.victim()
        before = snapshot(a)
        for cert in (self.pki.pe1, registrar_cert(self.pki, "registrar-x")):  # x is not granted peer
            rogue = yield self.client(a, cert)
            rogue.send(EnrpPresence(EVIL, 0, 0xFFFF))
            rogue.send(EnrpHandleUpdate(EVIL, 0, UPDATE_DEL_PE, H, pe(0x0A, a.registrar.server_id)))
            rogue.send(EnrpHandleUpdate(EVIL, 0, UPDATE_ADD_PE, H, pe(0x99, EVIL)))
            reply = yield rogue.next()
            self.assertIsInstance(reply, EnrpError)
            self.assertEqual([c.code for c in reply.error.causes], [CAUSE_SECURITY])
            yield rogue.closed
        self.assertEqual(snapshot(a), before)
        self.assertIsNone(a.enrp.core.peers.link_of(EVIL))
        self.assertNotIn(EVIL, a.enrp.core.peers.records)

    # -- server ID binding -------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_an_insider_claiming_another_peers_server_id_is_refused(self):
        a, b = yield self.victim()
        before = snapshot(a)
        rogue = yield self.client(a, registrar_cert(self.pki, "registrar-evil"))
        rogue.send(EnrpPresence(b.registrar.server_id, 0, 0xFFFF))
        rogue.send(EnrpHandleUpdate(b.registrar.server_id, 0, UPDATE_DEL_PE, H, pe(0x0B, b.registrar.server_id)))
        yield rogue.closed
        self.assertEqual(snapshot(a), before)
        self.assertEqual(a.enrp.core.peers.link_of(b.registrar.server_id).identity, "registrar-b.rserpool.test")
        # B still works: a change at B reaches A.
        pe3 = yield self.client(b, self.pki.pe2, b.asap_port)
        yield pe3.request(AsapRegistration(H, make_pe(0x0C)))
        yield until([a, b], lambda: len(a.handlespace) == 3 and views_agree([a, b]))

    # -- RFC 5355 2.17: a compromised peer ---------------------------------------------------------

    @defer.inlineCallbacks
    def test_an_insider_cannot_delete_add_or_rewrite_pes_it_does_not_own(self):
        a, b = yield self.victim()
        before = snapshot(a)
        evil = yield self.insider(a)
        ida, idb = a.registrar.server_id, b.registrar.server_id
        for message in (
                EnrpHandleUpdate(EVIL, 0, UPDATE_DEL_PE, H, pe(0x0A, ida)),
                EnrpHandleUpdate(EVIL, 0, UPDATE_DEL_PE, H, pe(0x0B, idb)),
                EnrpHandleUpdate(EVIL, 0, UPDATE_ADD_PE, H, pe(0x0B, EVIL, 99)),  # steal B's PE
                EnrpHandleUpdate(EVIL, 0, UPDATE_ADD_PE, H, pe(0x0A, ida, 99)),  # rewrite A's own
                EnrpHandleUpdate(EVIL, 0, UPDATE_ADD_PE, H, pe(0x0D, idb)),  # a PE "of B"
                EnrpHandleUpdate(EVIL, 0, UPDATE_ADD_PE, H, pe(0x0E, EVIL), "pe1")):  # its own, as pe1
            evil.send(message)
        errors = yield self.drain(evil)
        self.assertEqual([c.code for m in errors for c in m.error.causes], [CAUSE_SECURITY])
        after = snapshot(a)
        self.assertEqual({k: v for k, v in after.items() if k != (H, 0x0E)}, before)
        self.assertEqual(after[(H, 0x0E)][0], EVIL)  # it may announce PEs of its own
        # ... and B's PE is still resolvable at A with B as its home.
        pu = yield self.client(a, None, a.asap_port)
        answer = yield pu.request(AsapHandleResolution(H))
        homes = {p.pe_id: p.home_server_id for p in answer.pool_elements}
        self.assertEqual((homes[0x0A], homes[0x0B]), (ida, idb))

    @defer.inlineCallbacks
    def test_an_update_flood_is_bounded_and_the_registrar_keeps_serving(self):
        limits = PeerLimits(update_rate=RateLimit(rate=100.0, burst=200.0), max_pes=10_000)
        a, b = yield self.victim(peer_limits=limits)
        evil = yield self.insider(a)
        for i in range(3000):
            evil.send(EnrpHandleUpdate(EVIL, 0, UPDATE_ADD_PE, b"flood", pe(0x1000 + i, EVIL)))
        errors = yield self.drain(evil)
        flood = a.handlespace.owned_count(EVIL)
        self.assertLess(flood, 400)  # the burst, plus what the rate refilled meanwhile
        self.assertGreaterEqual(flood, 200)
        self.assertEqual([c.code for m in errors for c in m.error.causes], [CAUSE_LACK_OF_RESOURCES])
        pu = yield self.client(a, None, a.asap_port)
        answer = yield pu.request(AsapHandleResolution(H))
        self.assertEqual(sorted(p.pe_id for p in answer.pool_elements), [0x0A, 0x0B])

    @defer.inlineCallbacks
    def test_a_handle_table_claiming_a_million_pes_is_cut_off(self):
        limits = PeerLimits(max_pes=1000, max_response_pes=200)
        a, b = yield self.victim(peer_limits=limits, timers={"page_pes": 100})
        evil = yield self.client(a, registrar_cert(self.pki, "registrar-evil"))
        evil.server_id = EVIL
        evil.send(EnrpPresence(EVIL, 0, 0xFFFF))
        # One response over the per-response bound: refused whole.
        while type((yield evil.next())) is not EnrpHandleTableRequest:
            pass
        evil.send(EnrpHandleTableResponse(EVIL, a.registrar.server_id, (
            PoolEntry(b"million", tuple(pe(i + 1, EVIL) for i in range(201))),), more=True))
        errors = yield self.drain(evil)
        self.assertEqual([c.code for m in errors for c in m.error.causes], [CAUSE_LACK_OF_RESOURCES])
        self.assertEqual(a.handlespace.owned_count(EVIL), 0)
        # Pages within the bound, "more" for ever (a million PEs): it stops at max_pes.
        evil.send(EnrpPresence(EVIL, 0, 0x1234))  # a checksum mismatch: A asks again
        pages = 0
        while True:
            message = yield evil.next()
            if type(message) is not EnrpHandleTableRequest:
                continue
            if pages * 200 > 1_000_000:
                break
            evil.send(EnrpHandleTableResponse(EVIL, a.registrar.server_id, (
                PoolEntry(b"million", tuple(pe(pages * 200 + i + 1, EVIL) for i in range(200))),), more=True))
            pages += 1
            if pages > 5:
                yield self.drain(evil, ())
                break
        self.assertLessEqual(pages, 6)
        self.assertEqual(a.handlespace.owned_count(EVIL), 1000)
        self.assertIsNone(a.enrp.core.peers.link_of(EVIL).fetch)

    # -- RFC 5355 2.12: forged discovery ------------------------------------------------------------

    @defer.inlineCallbacks
    def test_forged_udp_presence_is_only_a_rate_limited_hint(self):
        timers = {"max_time_last_heard": 1.5, "max_time_no_response": 1.0, "heartbeat_cycle": 0.5}
        a, b = yield self.victim(presence_listen=("127.0.0.1", 0), timers=timers)
        presence_port = a.enrp._presence_port.getHost().port
        idb = b.registrar.server_id
        resyncs = a.enrp.core.stats["resyncs"]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)

        def forge(sender: int, checksum: int, port: int) -> None:
            info = ServerInformation(sender, SctpTransport(port, (IPv4Address("127.0.0.1"),)))
            sock.sendto(EnrpPresence(sender, 0, checksum, info).encode(), ("127.0.0.1", presence_port))

        # B's checksum forged wrong: no re-synchronization with B.
        for _ in range(20):
            forge(idb, 0x4242, b.enrp_port)
        yield deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(a.enrp.core.stats["resyncs"], resyncs)
        # B stops; forged PRESENCE in B's name does not keep it alive.
        b_node = self.nodes.pop()
        yield b_node.stop()
        for _ in range(30):
            forge(idb, 0xFFFF, b.enrp_port)
            yield deferLater(reactor, 0.1, lambda: None)
        yield until([a], lambda: idb not in a.enrp.core.peers.records, timeout=10)
        # A flood of forged PRESENCE from many "servers": a bounded number of dials.
        dialled = a.enrp.connector.dialled
        for i in range(500):
            forge(0x5000 + i, 0xFFFF, 20_000 + i)
        yield deferLater(reactor, 0.5, lambda: None)
        self.assertLessEqual(a.enrp.connector.dialled - dialled, 5)
        self.assertEqual(set(a.enrp.core.peers.records), set())
        self.assertEqual(len(a.handlespace), 2)
