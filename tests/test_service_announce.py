"""rserpool.service.announce: the registrar's unicast announces, on a
test clock with a recording UDP socket (over real UDP:
tests/test_service_hunt.py::HuntLoopbackTest::test_announce_datagram_finds_a_registrar)."""

from __future__ import annotations

import random
from ipaddress import IPv4Address
from typing import Any

from twisted.internet.address import IPv4Address as Address
from twisted.internet.task import Clock

from rserpool.service.announce import ServerAnnouncer, listening_transports
from rserpool.wire import PPID_ASAP, AsapServerAnnounce, TcpTransport, decode_message


class Port:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []
        self.stopped = False

    def write(self, data: bytes, target: Any) -> None:
        if target[0] == "bad":
            raise OSError("no such host")
        self.sent.append((data, target))

    def stopListening(self) -> None:  # noqa: N802 (Twisted)
        self.stopped = True


class Reactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.udp: list[tuple[Port, str]] = []

    def listenUDP(self, port: int, protocol: Any, interface: str = "") -> Port:  # noqa: N802 (Twisted)
        udp = Port()
        self.udp.append((udp, interface))
        return udp


def test_announces_every_interval_with_jitter_to_each_target() -> None:
    reactor = Reactor()
    message = AsapServerAnnounce(7, (TcpTransport(3864, IPv4Address("127.0.0.1")),))
    announcer = ServerAnnouncer(reactor, lambda: message, targets=[("127.0.0.1", 3863), ("bad", 1),
                                                                   ("127.0.0.2", 3863)],
                                interval=1.0, rng=random.Random(1))
    announcer.start()
    ((port, interface),) = reactor.udp
    assert interface == ""  # "bad" is not a loopback address: not bound to loopback
    reactor.advance(0.87)
    assert port.sent == []
    reactor.advance(0.26)
    assert [target for _, target in port.sent] == [("127.0.0.1", 3863), ("127.0.0.2", 3863)]
    assert decode_message(port.sent[0][0], PPID_ASAP) == message
    for _ in range(10):
        reactor.advance(1.125)
    assert 20 <= len(port.sent) <= 24
    announcer.stop()
    assert port.stopped and reactor.getDelayedCalls() == []


def test_loopback_targets_bind_loopback_and_no_target_no_socket() -> None:
    reactor = Reactor()
    ServerAnnouncer(reactor, lambda: None, targets=[("127.0.0.1", 3863)]).start()
    assert reactor.udp[0][1] == "127.0.0.1"
    quiet = ServerAnnouncer(reactor, lambda: None)
    quiet.start()
    assert len(reactor.udp) == 1 and quiet.stop() is None


def test_listening_transports_skip_what_is_not_an_ip_address() -> None:
    addresses = [Address("TCP", "127.0.0.1", 3864), Address("TCP", "0.0.0.0", 3865), object()]
    assert listening_transports(addresses) == (TcpTransport(3864, IPv4Address("127.0.0.1")),
                                               TcpTransport(3865, IPv4Address("0.0.0.0")))
