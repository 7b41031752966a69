"""rserpool.service.hunt: the server hunt shell.

Unit tests run on ``twisted.internet.task.Clock`` with fake endpoints
(candidate gathering is tested in test_service_candidates.py).  ``HuntLoopbackTest`` (integration) uses a real twisted.names
DNS server, real TLS listeners and a real announce datagram on 127.0.0.1;
its TLS handshakes need the real clock, so it is a trial TestCase.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, endpoints, protocol
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.names import authority, client, dns, server
from twisted.python.failure import Failure
from twisted.trial import unittest

from zope.interface import implementer

from rserpool.interfaces import IWatchedCandidateSource
from rserpool.asap.hunt import Candidate, Origin
from rserpool.security import tls
from rserpool.service.channel import Channel, ChannelSettings
from rserpool.service.candidates import (
    SRV_SERVICE, AnnounceReceiver, RegistrarCandidates, listen_for_announces,
)
from rserpool.service.hunt import ServerHunt, make_channel_factory
from rserpool.wire import AsapServerAnnounce, IPv4Address, TcpTransport
from tests.tlshelpers import TestPKI, make_test_pki


def cand(n: int, origin: Origin = Origin.STATIC) -> Candidate:
    return Candidate(f"127.0.0.{n}", 4000 + n, f"r{n}.test", origin)


# --- fakes ---------------------------------------------------------------------------


@implementer(IWatchedCandidateSource)
class ListSource:
    """A candidate source returning a fixed list; counts rounds and their times."""

    def __init__(self, clock: Clock, candidates: list[Candidate]) -> None:
        self.clock = clock
        self.items = candidates
        self.calls: list[float] = []
        self.listeners: list[Any] = []

    def candidates(self) -> defer.Deferred[list[Candidate]]:
        self.calls.append(self.clock.seconds())
        return defer.succeed(list(self.items))

    def add_listener(self, listener: Any) -> None:
        self.listeners.append(listener)

    def remove_listener(self, listener: Any) -> None:
        self.listeners.remove(listener)


class AbortingTransport(StringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.protocol: Any = None
        self.aborted = False

    def abortConnection(self) -> None:
        if not self.aborted:
            self.aborted = True
            self.protocol.connectionLost(Failure(ConnectionRefusedError("aborted")))

    loseConnection = abortConnection


class Network:
    """Fake endpoints: every connect waits until the test decides."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.pending: dict[tuple[str, int], tuple[defer.Deferred[Any], Any]] = {}
        self.started: list[Candidate] = []
        self.cancelled: list[tuple[str, int]] = []
        self.peak = 0

    def endpoint(self, candidate: Candidate) -> Any:
        network = self

        class Endpoint:
            def connect(self, factory: Any) -> defer.Deferred[Any]:
                network.started.append(candidate)
                if network.refuse:
                    return defer.fail(ConnectionRefusedError("refused"))
                d: defer.Deferred[Any] = defer.Deferred(
                    lambda _: network.cancelled.append(candidate.key))
                network.pending[candidate.key] = (d, factory)
                d.addBoth(network._done, candidate.key)
                network.peak = max(network.peak, len(network.pending))
                return d

        return Endpoint()

    def _done(self, result: Any, key: tuple[str, int]) -> Any:
        self.pending.pop(key, None)
        return result

    def refuse_one(self, key: tuple[str, int]) -> None:
        d, _ = self.pending[key]
        d.errback(ConnectionRefusedError("refused"))

    def connect(self, key: tuple[str, int]) -> tuple[Channel, AbortingTransport]:
        d, factory = self.pending[key]
        protocol = factory.buildProtocol(None)
        transport = AbortingTransport()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        d.callback(protocol)
        return protocol, transport


class RecordingHandler:
    def __init__(self, events: list[tuple[str, Any]], candidate: Candidate) -> None:
        self.events = events
        self.candidate = candidate

    def channel_ready(self, channel: Channel) -> None:
        self.events.append(("ready", self.candidate.key))

    def channel_closed(self, channel: Channel, reason: Failure) -> None:
        self.events.append(("closed", self.candidate.key))

    def message_received(self, channel: Channel, message: Any, now: float) -> None:
        self.events.append(("message", message))


class Rig:
    def __init__(self, candidates: list[Candidate], refuse: bool = False, **kwargs: Any) -> None:
        self.clock = Clock()
        self.network = Network(refuse)
        self.source = ListSource(self.clock, candidates)
        self.events: list[tuple[str, Any]] = []
        factory = make_channel_factory(lambda c: RecordingHandler(self.events, c), self.clock,
                                       ChannelSettings(heartbeat_interval=5, dead_after=15))
        self.hunt = ServerHunt(self.clock, self.source, lambda name: None, factory,
                               endpoint_factory=self.network.endpoint, **kwargs)
        self.results: list[Any] = []

    def find(self, **kwargs: Any) -> defer.Deferred[Channel]:
        d = self.hunt.find(**kwargs)
        d.addBoth(self.results.append)
        return d


@pytest.fixture
def logged() -> Any:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def texts(events: list[dict[str, Any]]) -> str:
    from twisted.logger import formatEvent

    return "\n".join(formatEvent(e) for e in events)


# --- the hunt on a fake network ------------------------------------------------------------


def test_at_most_three_attempts_in_flight_in_order() -> None:
    rig = Rig([cand(n) for n in range(1, 8)])
    rig.find()
    assert [c.key for c in rig.network.started] == [cand(n).key for n in (1, 2, 3)]
    rig.network.refuse_one(cand(2).key)
    assert rig.network.started[-1] == cand(4)
    assert rig.hunt.in_flight == 3
    for n in (1, 3, 4, 5):
        rig.network.refuse_one(cand(n).key)
        assert rig.hunt.in_flight <= 3
    assert rig.network.peak == 3
    assert [c.key for c in rig.network.started] == [cand(n).key for n in range(1, 8)]


def test_max_parallel_is_capped_by_sh1() -> None:
    with pytest.raises(ValueError):
        Rig([], max_parallel=4)
    rig = Rig([cand(n) for n in range(1, 5)], max_parallel=1)
    rig.find()
    assert len(rig.network.pending) == 1


def test_first_authenticated_channel_wins_and_others_are_closed() -> None:
    rig = Rig([cand(n) for n in range(1, 5)])
    rig.find()
    slow, slow_transport = rig.network.connect(cand(1).key)  # TCP up, TLS still pending
    winner, _ = rig.network.connect(cand(2).key)
    assert rig.results == []
    winner.handshakeCompleted()  # the server certificate checked out
    assert rig.results == [winner] and rig.hunt.home == cand(2)
    assert winner.handler.__class__ is RecordingHandler and winner.ready
    assert slow_transport.aborted and slow.closed
    assert cand(3).key in rig.network.cancelled  # never connected: its connect was cancelled
    assert rig.network.pending == {}
    assert rig.events == [("ready", cand(2).key)]  # losers' handlers heard nothing
    assert not rig.hunt.hunting
    # a late handshake of a loser cannot change anything
    slow.handshakeCompleted()
    assert rig.results == [winner]


def test_tls_failure_after_connect_tries_next_and_logs_why(logged: list[dict[str, Any]]) -> None:
    from service_identity import VerificationError

    rig = Rig([cand(1), cand(2)], max_parallel=1)
    rig.find()
    channel, _ = rig.network.connect(cand(1).key)
    channel.connectionLost(Failure(VerificationError("DNS-ID mismatch r1.test")))
    assert [c.key for c in rig.network.started] == [cand(1).key, cand(2).key]
    assert "name mismatch" in texts(logged)
    assert "r1.test" in texts(logged)
    assert rig.events == []


def test_t5_back_off_timing_when_everything_fails() -> None:
    rig = Rig([cand(1), cand(2)], refuse=True)
    rig.find()
    rig.clock.advance(0)
    for _ in range(6 * 60):
        rig.clock.advance(1)
    assert rig.source.calls == [0, 10, 30, 70, 130, 190, 250, 310]
    assert len(rig.network.started) == 2 * len(rig.source.calls)
    assert rig.results == []


def test_custom_t5_and_reset_after_success() -> None:
    rig = Rig([cand(1)], refuse=True, t5_initial=1, t5_max=3)
    rig.find()
    rig.clock.pump([0.5] * 20)
    assert rig.source.calls == [0, 1, 3, 6, 9]
    rig.network.refuse = False
    rig.clock.advance(3)  # round at t=12
    channel, _ = rig.network.connect(cand(1).key)
    channel.handshakeCompleted()
    assert rig.results == [channel] and rig.hunt.backoff.current == 3
    rig.network.refuse = True
    rig.find()
    assert rig.hunt.backoff.current == 1  # SH3: reset for a new hunt


def test_t5_expiry_stops_attempts_and_prefers_other_addresses() -> None:
    rig = Rig([cand(n) for n in range(1, 6)], attempt_timeout=None)
    rig.find()
    assert set(rig.network.pending) == {cand(1).key, cand(2).key, cand(3).key}
    rig.clock.advance(10)  # nothing answered: SH5
    assert {cand(1).key, cand(2).key, cand(3).key} <= set(rig.network.cancelled)
    assert set(rig.network.pending) == {cand(4).key, cand(5).key, cand(1).key}
    assert rig.hunt.backoff.current == 20


def test_attempt_timeout_frees_the_slot() -> None:
    rig = Rig([cand(1), cand(2)], max_parallel=1, attempt_timeout=2.0)
    rig.find()
    channel, transport = rig.network.connect(cand(1).key)  # TLS never completes
    rig.clock.advance(2.0)
    assert transport.aborted
    assert rig.network.started[-1] == cand(2)


def test_cancel_stops_everything() -> None:
    rig = Rig([cand(n) for n in range(1, 5)])
    d = rig.find()
    channel, transport = rig.network.connect(cand(1).key)
    d.cancel()
    assert isinstance(rig.results[0], Failure) and rig.results[0].check(defer.CancelledError)
    assert transport.aborted and rig.network.pending == {}
    assert rig.clock.getDelayedCalls() == []  # no T5, no attempt timer, no heartbeat left
    assert rig.source.listeners == []
    assert rig.events == []
    rig.clock.advance(100)
    assert rig.source.calls == [0]  # no more rounds


def test_only_one_hunt_at_a_time_but_reusable() -> None:
    rig = Rig([cand(1), cand(2)])
    d = rig.find()
    with pytest.raises(RuntimeError):
        rig.hunt.find()
    d.cancel()
    rig.find(avoid=[cand(1)])
    assert rig.network.started[-2:] == [cand(2), cand(1)]


def test_no_candidates_then_an_announce_is_tried_at_once() -> None:
    rig = Rig([])
    rig.find()
    assert rig.network.started == []
    rig.clock.advance(3)
    for listener in list(rig.source.listeners):
        listener([cand(9, Origin.ANNOUNCE)])
    assert rig.network.started == [cand(9, Origin.ANNOUNCE)]
    channel, _ = rig.network.connect(cand(9).key)
    channel.handshakeCompleted()
    assert rig.results == [channel] and rig.source.listeners == []


def test_failing_source_is_an_empty_round(logged: list[dict[str, Any]]) -> None:
    rig = Rig([])
    rig.source.candidates = lambda: defer.fail(RuntimeError("boom"))  # type: ignore[method-assign]
    rig.find()
    rig.clock.advance(10)
    assert rig.results == [] and rig.hunt.rounds == 2


# --- real loopback: DNS server, TLS listeners, an announce datagram ------------------------------

_PKI: TestPKI | None = None
DOMAIN = "rserpool.test"
GOOD = "registrar.rserpool.test"  # in the test server certificate's SANs
BAD = "bad.rserpool.test"  # not in them


def shared_pki() -> TestPKI:
    global _PKI
    if _PKI is None:
        directory = tempfile.mkdtemp(prefix="rserpool-hunt-test-")
        atexit.register(shutil.rmtree, directory, True)
        _PKI = make_test_pki(Path(directory))
    return _PKI


class MemoryAuthority(authority.FileAuthority):
    """An authoritative zone given as ``[(name, record), ...]`` (first one the SOA)."""

    def loadFile(self, zone: list[tuple[str, Any]]) -> None:  # type: ignore[override]
        self.soa = (dns.domainString(zone[0][0]), zone[0][1])
        self.records = {}
        for name, record in zone:
            self.records.setdefault(dns.domainString(name).lower(), []).append(record)


class ServerSide:
    """What a registrar's listener needs for these tests: accept TLS, say nothing."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready: list[Channel] = []
        self.closed: list[defer.Deferred[None]] = []

    def channel_ready(self, channel: Channel) -> None:
        self.ready.append(channel)

    def channel_closed(self, channel: Channel, reason: Failure) -> None:
        channel.session.callback(None)

    def message_received(self, channel: Channel, message: Any, now: float) -> None:
        pass


class _ServerFactory(protocol.Factory):
    def __init__(self, reactor: Any, side: ServerSide) -> None:
        self.reactor = reactor
        self.side = side

    def buildProtocol(self, addr: Any) -> Channel:
        channel = Channel(self.side, self.reactor, ChannelSettings(), tls=True)
        channel.session = defer.Deferred()
        self.side.closed.append(channel.session)
        return channel


@pytest.mark.integration
class HuntLoopbackTest(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        from twisted.internet import reactor

        self.reactor = reactor
        self.pki = shared_pki()
        self.sides: list[ServerSide] = []
        self.ports = {}
        for name in (GOOD, BAD):
            side = ServerSide(name)
            self.sides.append(side)
            options = tls.server_options(self.pki.server.cert, self.pki.server.key,
                                         self.pki.ca.cert, environ={})
            endpoint = endpoints.SSL4ServerEndpoint(reactor, 0, options, interface="127.0.0.1")
            port = yield endpoint.listen(_ServerFactory(reactor, side))
            self.addCleanup(port.stopListening)
            self.ports[name] = port.getHost().port
        zone = [
            (DOMAIN, dns.Record_SOA(mname="ns." + DOMAIN, rname="root." + DOMAIN, serial=1)),
            (f"{SRV_SERVICE}.{DOMAIN}", dns.Record_SRV(10, 0, self.ports[BAD], BAD)),
            (f"{SRV_SERVICE}.{DOMAIN}", dns.Record_SRV(20, 0, self.ports[GOOD], GOOD)),
            (GOOD, dns.Record_A("127.0.0.1")),
            (BAD, dns.Record_A("127.0.0.1")),
        ]
        factory = server.DNSServerFactory(authorities=[MemoryAuthority(zone)])
        dns_port = reactor.listenUDP(0, dns.DNSDatagramProtocol(controller=factory),
                                     interface="127.0.0.1")
        self.addCleanup(dns_port.stopListening)
        self.resolver = client.Resolver(servers=[("127.0.0.1", dns_port.getHost().port)],
                                        reactor=reactor)
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def hunt(self, source: Any, **kwargs: Any) -> ServerHunt:
        def tls_options(name: str) -> Any:
            return tls.client_options(name, self.pki.ca.cert, client_cert=self.pki.pe1.pair,
                                      environ={})

        self.client_events: list[tuple[str, Any]] = []
        factory = make_channel_factory(lambda c: RecordingHandler(self.client_events, c),
                                       self.reactor)
        return ServerHunt(self.reactor, source, tls_options, factory, **kwargs)

    @defer.inlineCallbacks
    def finish(self, channel: Channel) -> Any:
        """Close the winner and wait until every server-side channel is gone."""
        channel.close()
        for side in self.sides:
            yield defer.gatherResults(list(side.closed))

    @defer.inlineCallbacks
    def test_srv_better_priority_with_wrong_certificate_is_rejected(self) -> Any:
        source = RegistrarCandidates(srv_names=[DOMAIN], resolver=self.resolver)
        hunt = self.hunt(source, max_parallel=1)
        channel = yield hunt.find()
        try:
            self.assertTrue(channel.ready)
            self.assertEqual(channel.transport.getPeer().port, self.ports[GOOD])
            self.assertIsNotNone(tls.peer_certificate(channel.transport))
            self.assertEqual(self.client_events, [("ready", (channel.transport.getPeer().host,
                                                             self.ports[GOOD]))])
            text = texts(self.logged)
            self.assertIn(f"name {BAD!r}", text)
            self.assertIn("name mismatch: expected", text)
            self.assertLess(text.index(BAD), text.index("home registrar"))
        finally:
            yield self.finish(channel)
        good, bad = self.sides
        self.assertEqual(len(good.ready), 1)
        self.assertEqual(bad.ready, [])  # its handshake never completed
        self.assertEqual(len(bad.closed), 1)  # but it was tried, first

    @defer.inlineCallbacks
    def test_static_dns_name_and_parallel_attempts(self) -> Any:
        source = RegistrarCandidates(
            static=[f"127.0.0.1:{self.ports[BAD]} {BAD}", f"{GOOD}:{self.ports[GOOD]}"],
            resolver=self.resolver)
        channel = yield self.hunt(source).find()
        try:
            self.assertEqual(channel.transport.getPeer().port, self.ports[GOOD])
        finally:
            yield self.finish(channel)

    @defer.inlineCallbacks
    def test_announce_datagram_finds_a_registrar(self) -> Any:
        receiver = AnnounceReceiver(self.reactor)  # TLS name: the announced IP
        udp = listen_for_announces(self.reactor, 0, receiver, "127.0.0.1")
        self.addCleanup(udp.stopListening)
        source = RegistrarCandidates(announces=receiver, resolver=self.resolver)
        hunt = self.hunt(source)
        found = hunt.find()
        self.assertEqual(hunt.in_flight, 0)  # nothing known yet
        message = AsapServerAnnounce(0xC0FFEE, (TcpTransport(self.ports[GOOD],
                                                             IPv4Address("127.0.0.1")),))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(message.encode(), ("127.0.0.1", udp.getHost().port))
        channel = yield found
        try:
            self.assertEqual(channel.transport.getPeer().port, self.ports[GOOD])
            [known] = receiver.candidates()
            self.assertEqual((known.server_id, known.tls_name), (0xC0FFEE, "127.0.0.1"))
        finally:
            yield self.finish(channel)
