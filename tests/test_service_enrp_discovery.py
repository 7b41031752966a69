"""Finding ENRP peers: UDP PRESENCE as hints only, the connector's pacing,
and peers named by DNS names and SRV records (a real twisted.names server
on loopback)."""

from __future__ import annotations

import tempfile
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor, task
from twisted.names import dns, server
from twisted.trial import unittest

from rserpool.asap.hunt import Candidate
from rserpool.service.enrp_discovery import ENRP_SRV_SERVICE, PeerConnector, PresenceReceiver, peer_candidates
from rserpool.wire import (
    EnrpHandleTableRequest, EnrpPresence, SctpTransport, ServerInformation,
)
from tests.enrpnet import all_linked, start_node, until
from tests.test_service_hunt import MemoryAuthority
from tests.tlshelpers import make_test_pki


def presence(sender: int, port: int = 9902, address: str = "127.0.0.1") -> bytes:
    info = ServerInformation(sender, SctpTransport(port, (IPv4Address(address),)))
    return EnrpPresence(sender, 0, 0x1234, info).encode()


class Hints:
    def __init__(self) -> None:
        self.got: list = []

    def __call__(self, server_id: int, host: str, port: int) -> None:
        self.got.append((server_id, host, port))


def test_presence_datagram_yields_a_hint_with_the_source_address():
    hints, clock = Hints(), task.Clock()
    receiver = PresenceReceiver(hints, clock)
    receiver.datagramReceived(presence(7, 9999), ("127.0.0.5", 9901))
    # A third party's address in the datagram is not believed: the source is dialled.
    receiver.datagramReceived(presence(8, 9998, "10.9.9.9"), ("127.0.0.6", 9901))
    assert hints.got == [(7, "127.0.0.5", 9999), (8, "127.0.0.6", 9998)]


@pytest.mark.parametrize("datagram", [
    b"\x01\x00\x00\x10" + b"\x00" * 12,  # a PRESENCE without Server Information
    EnrpHandleTableRequest(7, 0).encode(),  # not a PRESENCE
    b"garbage",
    b"\x01" * 2000,  # oversized
    EnrpPresence(7, 0, 1, ServerInformation(8, SctpTransport(1, (IPv4Address("127.0.0.1"),)))).encode(),
])
def test_other_datagrams_are_dropped(datagram):
    hints = Hints()
    receiver = PresenceReceiver(hints, task.Clock())
    receiver.datagramReceived(datagram, ("127.0.0.5", 9901))
    assert hints.got == [] and receiver.dropped == 1


def test_presence_is_rate_limited_per_source():
    hints, clock = Hints(), task.Clock()
    receiver = PresenceReceiver(hints, clock)
    for _ in range(1000):
        receiver.datagramReceived(presence(7), ("127.0.0.5", 9901))
    assert len(hints.got) == 50 and receiver.dropped == 950


class FakeDial:
    def __init__(self) -> None:
        self.calls: list[Candidate] = []
        self.pending: list[defer.Deferred] = []

    def __call__(self, candidate: Candidate) -> defer.Deferred:
        self.calls.append(candidate)
        d: defer.Deferred = defer.Deferred()
        self.pending.append(d)
        return d

    def fail_all(self) -> None:
        pending, self.pending = self.pending, []
        for d in pending:
            d.errback(ConnectionRefusedError())


def test_connector_dials_configured_peers_with_back_off():
    clock, dial = task.Clock(), FakeDial()
    source = peer_candidates(["127.0.0.1:9902 reg-b.test", "127.0.0.2 reg-c.test"])
    connector = PeerConnector(clock, dial, source)
    connector.start()
    assert [(c.host, c.port, c.tls_name) for c in dial.calls] == [
        ("127.0.0.1", 9902, "reg-b.test"), ("127.0.0.2", 9902, "reg-c.test")]
    dial.fail_all()
    times = []
    for _ in range(4):
        before = len(dial.calls)
        while len(dial.calls) == before:
            clock.advance(0.25)
        times.append(clock.seconds())
        dial.fail_all()
    assert times == [1.0, 3.0, 7.0, 15.0]  # 1, 2, 4, 8 s apart
    connector.stop()
    assert clock.getDelayedCalls() == []


def test_forged_presence_floods_cost_bounded_connection_attempts():
    """RFC 5355 2.12: forged hints from many addresses cost a handful of
    refused attempts, not one per datagram."""
    clock, dial = task.Clock(), FakeDial()
    connector = PeerConnector(clock, dial, None)
    connector.start()
    receiver = PresenceReceiver(lambda sid, host, port: connector.hint(sid, host, port), clock)
    for second in range(60):
        for i in range(100):
            receiver.datagramReceived(presence(1000 + i, 10_000 + i), (f"127.0.{second % 4}.{i + 1}", 9901))
        clock.advance(1.0)
        dial.fail_all()
    # One attempt per accepted hint: 4 at once, then one every 2 s.
    assert 30 <= len(dial.calls) <= 4 + 30
    connector.stop()


@pytest.mark.integration
class PeersByDns(unittest.TestCase):
    """Peers named by a DNS name and by an SRV record, resolved by
    twisted.names against a real DNS server on loopback."""

    timeout = 60

    @defer.inlineCallbacks
    def test_registrars_find_each_other_by_dns_name_and_srv(self) -> Any:
        from twisted.names import client

        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        test_pki = make_test_pki(Path(tmp.name))
        a = yield start_node(reactor, test_pki, "registrar-a")
        b = yield start_node(reactor, test_pki, "registrar-b")
        self.addCleanup(a.stop)
        self.addCleanup(b.stop)
        domain = "cluster.rserpool.test"
        zone = [
            (domain, dns.Record_SOA(mname="ns." + domain, rname="root." + domain, serial=1)),
            (f"{ENRP_SRV_SERVICE}.{domain}", dns.Record_SRV(10, 0, a.enrp_port, "registrar-a.rserpool.test")),
            (f"{ENRP_SRV_SERVICE}.{domain}", dns.Record_SRV(10, 0, b.enrp_port, "registrar-b.rserpool.test")),
            ("registrar-a.rserpool.test", dns.Record_A("127.0.0.1")),
            ("registrar-b.rserpool.test", dns.Record_A("127.0.0.1")),
        ]
        factory = server.DNSServerFactory(authorities=[MemoryAuthority(zone)])
        port = reactor.listenUDP(0, dns.DNSDatagramProtocol(controller=factory), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        resolver = client.Resolver(servers=[("127.0.0.1", port.getHost().port)], reactor=reactor)
        # A knows B by its DNS name; B knows the cluster by its SRV records
        # (which list B itself: it skips its own address).
        a.enrp.connector.candidates = peer_candidates([f"registrar-b.rserpool.test:{b.enrp_port}"],
                                                      resolver=resolver)
        b.enrp.connector.candidates = peer_candidates(srv_names=[domain], resolver=resolver)
        for node in (a, b):
            node.enrp.connector.rediscover()
        yield until([a, b], lambda: all_linked([a, b]))
        targets = b.enrp.connector.targets.targets
        self.assertEqual(set(targets), {("127.0.0.1", a.enrp_port)})
        self.assertEqual(targets[("127.0.0.1", a.enrp_port)].candidate.tls_name, "registrar-a.rserpool.test")
