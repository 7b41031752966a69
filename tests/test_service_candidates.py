"""rserpool.service.candidates: where a PE or PU looks for registrars
(static list, DNS, SRV, announces), with a fake resolver, fake UDP
transport and task.Clock.  The whole hunt over real loopback is in
test_service_hunt.py."""

from __future__ import annotations

import random
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.names import dns
from twisted.names.error import DNSNameError
from twisted.python.failure import Failure

from rserpool.asap.hunt import AnnounceTable, Candidate, Origin, StaticEntry
from rserpool.service.candidates import (
    SRV_SERVICE, AnnounceReceiver, RegistrarCandidates, describe_failure,
)
from rserpool.wire import AsapHandleResolution, AsapServerAnnounce, IPv4Address, SctpTransport
from rserpool.wire import TcpTransport


def test_describe_failure() -> None:
    from twisted.internet import error

    from rserpool.security.tlserrors import CertificateRejected

    assert describe_failure(Failure(error.ConnectionRefusedError())) == \
        "connection refused (nothing listens there)"
    assert describe_failure(Failure(defer.CancelledError())) == "cancelled"
    assert describe_failure(Failure(CertificateRejected("certificate verify failed: x"))) == \
        "certificate verify failed: x"


# --- announces --------------------------------------------------------------------------------


class UdpTransport:
    def __init__(self) -> None:
        self.groups: list[str] = []

    def joinGroup(self, group: str) -> None:
        self.groups.append(group)


def receiver(clock: Clock, **kwargs: Any) -> AnnounceReceiver:
    r = AnnounceReceiver(clock, **kwargs)
    r.makeConnection(UdpTransport())
    return r


def announce(*transports: Any, server_id: int = 0x1234) -> bytes:
    return AsapServerAnnounce(server_id, tuple(transports)).encode()


def test_announce_without_transport_uses_source_and_iana_port() -> None:
    clock = Clock()
    r = receiver(clock)
    r.datagramReceived(announce(), ("127.0.0.5", 40000))
    [c] = r.candidates()
    assert (c.host, c.port, c.tls_name, c.origin, c.server_id) == (
        "127.0.0.5", 3864, "127.0.0.5", Origin.ANNOUNCE, 0x1234)


def test_announce_rsplib_style_source_port() -> None:
    r = receiver(Clock(), default_port=None, server_name="registrar.test")
    r.datagramReceived(announce(), ("127.0.0.5", 40000))
    [c] = r.candidates()
    assert (c.port, c.tls_name) == (40000, "registrar.test")


def test_announce_tcp_transports_and_address_checks() -> None:
    r = receiver(Clock())
    here = TcpTransport(5001, IPv4Address("127.0.0.7"))
    wildcard = TcpTransport(5002, IPv4Address("0.0.0.0"))
    elsewhere = TcpTransport(5003, IPv4Address("192.0.2.1"))
    sctp = SctpTransport(5004, (IPv4Address("127.0.0.7"),))
    r.datagramReceived(announce(here, wildcard, elsewhere), ("127.0.0.7", 1))
    r.datagramReceived(announce(sctp), ("127.0.0.7", 1))
    assert [(c.host, c.port) for c in r.candidates()] == [("127.0.0.7", 5001), ("127.0.0.7", 5002)]
    trusting = receiver(Clock(), trust_announced_addresses=True)
    trusting.datagramReceived(announce(elsewhere), ("127.0.0.7", 1))
    assert [(c.host, c.port) for c in trusting.candidates()] == [("192.0.2.1", 5003)]


def test_announce_garbage_is_dropped() -> None:
    r = receiver(Clock(), allowed_sources=["127.0.0.0/8"], max_datagram=64)
    r.datagramReceived(b"\x0a\x00\x00\x05xyz", ("127.0.0.1", 1))
    r.datagramReceived(AsapHandleResolution(b"pool").encode(), ("127.0.0.1", 1))
    r.datagramReceived(announce() + b"\0" * 100, ("127.0.0.1", 1))
    r.datagramReceived(announce(), ("10.0.0.1", 1))
    assert r.candidates() == [] and r.dropped == 4 and r.received == 4
    r.datagramReceived(announce(), ("127.0.0.1", 1))
    assert len(r.candidates()) == 1


def test_announce_flood_is_bounded_and_expires() -> None:
    clock = Clock()
    listened: list[list[Candidate]] = []
    r = receiver(clock, table=AnnounceTable(lifetime=5, max_entries=4, max_per_source=2))
    r.listeners.append(listened.append)
    for n in range(1, 50):
        r.datagramReceived(announce(TcpTransport(6000 + n, IPv4Address("0.0.0.0"))),
                           (f"127.0.1.{n}", 1))
    assert len(r.candidates()) == 4 and r.dropped == 45 and len(listened) == 4
    clock.advance(5)
    assert r.candidates() == []


def test_announce_multicast_is_optional() -> None:
    assert receiver(Clock()).transport.groups == []
    assert receiver(Clock(), multicast_group="224.0.1.185").transport.groups == ["224.0.1.185"]


# --- candidate gathering with a fake resolver ----------------------------------------------------


class FakeResolver:
    def __init__(self, zone: dict[tuple[str, int], list[Any]]) -> None:
        self.zone = zone
        self.queries: list[tuple[str, int]] = []

    def _lookup(self, name: str, qtype: int) -> defer.Deferred[Any]:
        self.queries.append((name, qtype))
        if (name, qtype) not in self.zone:
            return defer.fail(DNSNameError(name))
        answers = [dns.RRHeader(name, qtype, payload=p) for p in self.zone[(name, qtype)]]
        return defer.succeed((answers, [], []))

    def lookupAddress(self, name: str, timeout: Any = None) -> defer.Deferred[Any]:
        return self._lookup(name, dns.A)

    def lookupIPV6Address(self, name: str, timeout: Any = None) -> defer.Deferred[Any]:
        return self._lookup(name, dns.AAAA)

    def lookupService(self, name: str, timeout: Any = None) -> defer.Deferred[Any]:
        return self._lookup(name, dns.SRV)


def gathered(source: RegistrarCandidates) -> list[Candidate]:
    out: list[list[Candidate]] = []
    source.candidates().addCallback(out.append)
    return out[0]


def test_candidates_in_defined_order() -> None:
    srv = f"{SRV_SERVICE}.example.test"
    resolver = FakeResolver({
        ("static.example.test", dns.A): [dns.Record_A("127.0.0.2")],
        ("static.example.test", dns.AAAA): [dns.Record_AAAA("::1")],
        (srv, dns.SRV): [dns.Record_SRV(20, 0, 7002, "b.example.test"),
                         dns.Record_SRV(10, 0, 7001, "a.example.test")],
        ("a.example.test", dns.A): [dns.Record_A("127.0.0.3")],
        ("b.example.test", dns.A): [dns.Record_A("127.0.0.4")],
    })
    clock = Clock()
    announces = receiver(clock)
    announces.datagramReceived(announce(), ("127.0.0.9", 1))
    source = RegistrarCandidates(
        static=["127.0.0.1:3000 reg.example.test", "static.example.test:3001", "nowhere.test:1"],
        srv_names=["example.test"], announces=announces, resolver=resolver,
        rng=random.Random(0))
    got = [(c.host, c.port, c.tls_name, c.origin) for c in gathered(source)]
    assert got == [
        ("127.0.0.1", 3000, "reg.example.test", Origin.STATIC),
        ("127.0.0.2", 3001, "static.example.test", Origin.STATIC),
        ("::1", 3001, "static.example.test", Origin.STATIC),
        ("127.0.0.3", 7001, "a.example.test", Origin.SRV),
        ("127.0.0.4", 7002, "b.example.test", Origin.SRV),
        ("127.0.0.9", 3864, "127.0.0.9", Origin.ANNOUNCE),
    ]
    domain = RegistrarCandidates(srv_names=[srv], resolver=resolver, srv_name_check="domain")
    assert {c.tls_name for c in gathered(domain)} == {"example.test"}
    with pytest.raises(ValueError):
        RegistrarCandidates(srv_name_check="whatever")


def test_static_entry_objects_and_duplicates() -> None:
    source = RegistrarCandidates(static=[StaticEntry("127.0.0.1", 1), "127.0.0.1:1 other"])
    [c] = gathered(source)
    assert c.tls_name == "127.0.0.1"
