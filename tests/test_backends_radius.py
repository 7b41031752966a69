"""Unit tests of rserpool.backends.radius: task.Clock and a fake UDP transport.

The "server" side is pyrad's codec used directly in the test: it decodes
what the client wrote and builds replies (right, unsigned, wrongly signed,
tampered).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest
from pyrad import packet as _packet
from twisted.internet import task

from rserpool.backends.radius import (
    DEFAULT_DICTIONARY,
    RCVBUF_BYTES,
    BackendUnavailable,
    RadiusClient,
    RadiusError,
    RadiusOverloaded,
    RadiusServer,
    load_dictionary,
    local_address_for,
    parse_servers,
)
from rserpool.backends.radius_decision import RadiusDecision

DICT = load_dictionary()
A = RadiusServer("127.0.0.1", 18121, b"secret-a")
B = RadiusServer("127.0.0.2", 18122, b"secret-b")
CHALLENGE = bytes(range(16))
RESPONSE = bytes(range(100, 116))


class FakeSocket:
    def __init__(self) -> None:
        self.options: list[tuple[int, int, int]] = []

    def setsockopt(self, level: int, name: int, value: int) -> None:
        self.options.append((level, name, value))


class FakePort:
    """A listening UDP port: records writes."""

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.socket = FakeSocket()
        self.stopped = False
        protocol.makeConnection(self)

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.written.append((data, addr))

    def stopListening(self) -> None:  # noqa: N802 (Twisted)
        self.stopped = True
        self.protocol.doStop()


class FakeReactor(task.Clock):
    def __init__(self) -> None:
        super().__init__()
        self.ports: list[FakePort] = []
        self.interfaces: list[str] = []

    def listenUDP(self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192) -> FakePort:  # noqa: N802,N803
        fake = FakePort(protocol)
        self.ports.append(fake)
        self.interfaces.append(interface)
        return fake


def make_client(servers=(A,), **kwargs: Any) -> tuple[RadiusClient, FakeReactor]:
    reactor = FakeReactor()
    options = dict(timeout=1.0, retries=2, dead_time=30.0)
    options.update(kwargs)
    return RadiusClient(reactor, list(servers), dictionary=DICT, **options), reactor


def writes(reactor: FakeReactor) -> list[tuple[bytes, tuple[str, int]]]:
    return [w for port in reactor.ports for w in port.written]


def decode(data: bytes, server: RadiusServer = A) -> _packet.AuthPacket:
    return _packet.AuthPacket(packet=data, secret=server.secret, dict=DICT)


def reply_to(data: bytes, server: RadiusServer = A, *, code: int = _packet.AccessAccept,
             sign: bool = True, secret: bytes | None = None, **attributes: Any) -> bytes:
    request = _packet.AuthPacket(packet=data, secret=secret or server.secret, dict=DICT)
    reply = request.CreateReply(message_authenticator=sign)
    reply.code = code
    for name, value in attributes.items():
        reply[name.replace("_", "-")] = value
    return reply.ReplyPacket()


def deliver(reactor: FakeReactor, data: bytes, source: tuple[str, int] = A.address) -> None:
    reactor.ports[0].protocol.datagramReceived(data, source)


def result_of(d: Any) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    return out[0]


def chap(client: RadiusClient, identity: str = "pe1"):
    return client.chap_verify(identity, 7, CHALLENGE, RESPONSE)


# ---------------------------------------------------------------- request format

def test_chap_request_attributes_and_message_authenticator() -> None:
    client, reactor = make_client()
    chap(client)
    [(data, addr)] = writes(reactor)
    assert addr == A.address
    request = decode(data)
    assert request.code == _packet.AccessRequest
    assert request["User-Name"] == ["pe1"]
    assert request["CHAP-Password"] == [bytes([7]) + RESPONSE]
    assert request["CHAP-Challenge"] == [CHALLENGE]
    assert request["NAS-Identifier"] == ["rserpool"]
    assert data[20] == 80  # Message-Authenticator is the first attribute
    assert request.verify_message_authenticator()
    assert not decode(data, B).verify_message_authenticator()  # keyed with A's secret


def test_authorize_only_request() -> None:
    client, reactor = make_client(nas_identifier="enrp-7")
    client.authorize_only("pe-cert")
    request = decode(writes(reactor)[0][0])
    assert request["Service-Type"] == ["Authorize-Only"]
    assert data_value(request, 6) == (17).to_bytes(4, "big")
    assert "CHAP-Password" not in request and "User-Password" not in request
    assert request["NAS-Identifier"] == ["enrp-7"]
    assert request.verify_message_authenticator()


def data_value(pkt: _packet.Packet, code: int) -> bytes:
    raw = pkt.raw_packet[20:]
    while raw:
        if raw[0] == code:
            return raw[2:raw[1]]
        raw = raw[raw[1]:]
    raise KeyError(code)


@pytest.mark.parametrize("identity", ["", "x" * 254, "a\x00b"])
def test_bad_identity_fails_without_sending(identity: str) -> None:
    client, reactor = make_client()
    failure = result_of(chap(client, identity))
    assert failure.check(RadiusError) and not failure.check(BackendUnavailable)
    assert writes(reactor) == []


def test_user_name_is_the_normalize_identity() -> None:
    # rserpool.identity: "PE1" and " pe1" are pe1 for the RADIUS server too.
    client, reactor = make_client()
    chap(client, " PE1")
    client.authorize_only("Pe1")
    assert [decode(data)["User-Name"] for data, _ in writes(reactor)] == [["pe1"], ["pe1"]]
    failure = result_of(chap(client, "pe\u200b1"))
    assert failure.check(RadiusError) and len(writes(reactor)) == 2


def test_bad_chap_lengths() -> None:
    client, _ = make_client()
    for d in (client.chap_verify("pe1", 7, b"short", RESPONSE),
              client.chap_verify("pe1", 7, CHALLENGE, RESPONSE + b"x"),
              client.chap_verify("pe1", 256, CHALLENGE, RESPONSE)):
        errors: list[Any] = []
        d.addErrback(errors.append)
        assert errors and errors[0].check(RadiusError)


# ---------------------------------------------------------------- replies

def test_accept_with_attributes() -> None:
    client, reactor = make_client()
    d = chap(client)
    data = writes(reactor)[0][0]
    deliver(reactor, reply_to(data, Class=b"rserpool:pools=echo", Filter_Id="echo-servers",
                              RSerPool_Allowed_Pool=["echo", "discard"]))
    results: list[RadiusDecision] = []
    d.addCallback(results.append)
    [decision] = results
    assert decision.accepted and decision.identity == "pe1"
    assert decision.attributes["RSerPool-Allowed-Pool"] == ("echo", "discard")
    assert decision.attributes["Class"] == (b"rserpool:pools=echo",)
    assert "Message-Authenticator" not in decision.attributes
    assert client.in_flight == 0 and client.stats["accepts"] == 1
    reactor.advance(100)  # no retransmission after the answer
    assert len(writes(reactor)) == 1


def test_reject_is_a_refusal_not_an_error() -> None:
    client, reactor = make_client()
    d = chap(client)
    deliver(reactor, reply_to(writes(reactor)[0][0], code=_packet.AccessReject))
    results: list[RadiusDecision] = []
    d.addCallback(results.append)
    assert results[0].accepted is False
    assert client.stats["rejects"] == 1


@pytest.mark.parametrize("kind", ["unsigned", "wrong-secret", "tampered", "wrong-source",
                                  "wrong-id", "short", "garbage-code", "truncated"])
def test_bad_replies_are_dropped_and_request_survives(kind: str) -> None:
    client, reactor = make_client()
    d = chap(client)
    data = writes(reactor)[0][0]
    good = reply_to(data, Class=b"rserpool:pools=echo")
    source = A.address
    if kind == "unsigned":
        bad = reply_to(data, sign=False, Class=b"rserpool:pools=echo")
        assert bad[20] != 80 and len(bad) < len(good)
    elif kind == "wrong-secret":
        bad = reply_to(data, secret=b"not-the-secret")
    elif kind == "tampered":
        bad = good[:-1] + bytes([good[-1] ^ 1])
    elif kind == "wrong-source":
        bad, source = good, ("127.0.0.9", A.port)
    elif kind == "wrong-id":
        bad = good[:1] + bytes([(good[1] + 1) % 256]) + good[2:]
    elif kind == "short":
        bad = good[:19]
    elif kind == "garbage-code":
        bad = bytes([_packet.AccessChallenge]) + good[1:]
    else:
        bad = good[:4] + good[4:30]  # Length field larger than the datagram
    deliver(reactor, bad, source)
    assert not d.called
    assert client.stats["dropped"] == 1 and client.in_flight == 1
    deliver(reactor, good)
    assert d.called and client.stats["accepts"] == 1


def test_a_replayed_reply_does_not_answer_a_later_request_with_the_same_id() -> None:
    """An Accept recorded on the wire for one request, replayed when a later
    request happens to use the same id: its Response Authenticator covers
    the earlier request's authenticator, so it is dropped."""
    client, reactor = make_client()
    first = chap(client, "pe1")
    request1 = writes(reactor)[0][0]
    accept1 = reply_to(request1, Class=b"rserpool:pools=echo")
    deliver(reactor, accept1)
    assert result_of(first).accepted
    sock = reactor.ports[0].protocol
    sock._next = request1[1]  # the next request gets the same id
    second = chap(client, "pe1")
    request2 = writes(reactor)[1][0]
    assert request2[1] == request1[1] and request2[4:20] != request1[4:20]
    deliver(reactor, accept1)  # the replay
    assert not second.called and client.stats["dropped"] == 1
    deliver(reactor, reply_to(request2, code=_packet.AccessReject))
    assert result_of(second).accepted is False


def test_a_flood_of_forged_replies_is_dropped_and_costs_no_request() -> None:
    client, reactor = make_client()
    d = chap(client)
    data = writes(reactor)[0][0]
    forged = [reply_to(data, secret=b"guess-%d" % n) for n in range(200)]
    for n in range(5000):
        deliver(reactor, forged[n % len(forged)] if n % 2 else bytes([2, data[1]]) + bytes(30))
        deliver(reactor, reply_to(data), ("127.0.0.%d" % (2 + n % 200), A.port))  # from elsewhere
    assert not d.called and client.stats["dropped"] == 10000 and client.in_flight == 1
    assert len(writes(reactor)) == 1  # no retransmission, no new request caused
    deliver(reactor, reply_to(data))
    assert result_of(d).accepted and client.stats["accepts"] == 1


def test_wrong_message_authenticator_with_right_response_authenticator() -> None:
    """A reply whose Response Authenticator is right but whose
    Message-Authenticator is not (the BlastRADIUS shape) is dropped."""
    client, reactor = make_client()
    d = chap(client)
    data = writes(reactor)[0][0]
    good = reply_to(data)
    assert good[20] == 80
    forged = bytearray(good)
    forged[22:38] = bytes(16)
    import hashlib
    forged[4:20] = hashlib.md5(bytes(forged[:4]) + data[4:20] + bytes(forged[20:]) + A.secret).digest()
    deliver(reactor, bytes(forged))
    assert not d.called and client.stats["dropped"] == 1


# ---------------------------------------------------------------- timing, failover

def test_retransmits_same_bytes_then_unavailable() -> None:
    client, reactor = make_client(timeout=2.0, retries=2)
    d = chap(client)
    reactor.advance(1.999)
    assert len(writes(reactor)) == 1
    reactor.advance(0.001)
    reactor.advance(2.0)
    sent = writes(reactor)
    assert len(sent) == 3 and len({data for data, _ in sent}) == 1
    assert not d.called
    reactor.advance(1.999)
    assert not d.called
    reactor.advance(0.001)
    errors: list[Any] = []
    d.addErrback(errors.append)
    assert errors[0].check(BackendUnavailable) and not errors[0].check(RadiusOverloaded)
    assert client.stats["retransmits"] == 2 and client.in_flight == 0
    assert client.is_dead(A)


def test_late_reply_after_retransmission_is_accepted() -> None:
    client, reactor = make_client()
    d = chap(client)
    reactor.advance(1.0)
    deliver(reactor, reply_to(writes(reactor)[0][0]))
    assert d.called


def test_failover_order_dead_time_and_revival() -> None:
    client, reactor = make_client(servers=(A, B), timeout=1.0, retries=1, dead_time=30.0)
    d = chap(client)
    reactor.pump([1.0, 1.0])  # A: 2 sends, no answer
    sent = writes(reactor)
    assert [addr for _, addr in sent] == [A.address, A.address, B.address]
    to_b = sent[2][0]
    assert to_b[4:20] != sent[0][0][4:20]  # re-encoded: fresh authenticator
    assert decode(to_b, B).verify_message_authenticator()
    deliver(reactor, reply_to(sent[0][0]), A.address)  # late answer from A: id reused, wrong source
    assert not d.called
    deliver(reactor, reply_to(to_b, B), B.address)
    assert d.called and client.stats["failovers"] == 1
    # A is dead: the next request goes to B first
    chap(client, "pe2")
    assert writes(reactor)[-1][1] == B.address
    deliver(reactor, reply_to(writes(reactor)[-1][0], B), B.address)
    reactor.advance(30.0)  # A's dead time is over
    chap(client, "pe3")
    assert writes(reactor)[-1][1] == A.address


def test_all_dead_still_tried_oldest_first_and_revived_by_an_answer() -> None:
    client, reactor = make_client(servers=(A, B), timeout=1.0, retries=0, dead_time=60.0)
    d1 = chap(client)
    reactor.advance(1.0)  # A dies at t=1
    reactor.advance(1.0)  # B dies at t=2
    assert d1.called and client.is_dead(A) and client.is_dead(B)
    d1.addErrback(lambda f: None)
    chap(client, "pe2")
    last = writes(reactor)[-1]
    assert last[1] == A.address  # the oldest failure first
    deliver(reactor, reply_to(last[0]), A.address)
    assert not client.is_dead(A) and client.is_dead(B)


def test_unavailable_within_bound() -> None:
    client, reactor = make_client(servers=(A, B), timeout=0.5, retries=2)
    d = chap(client)
    reactor.pump([0.5] * 5 + [0.499])
    assert not d.called
    reactor.advance(0.001)
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures and failures[0].check(BackendUnavailable)


# ---------------------------------------------------------------- ids and queueing

def test_ids_unique_and_queue_bounded() -> None:
    client, reactor = make_client(max_in_flight=2, max_queue=1)
    d1, d2, d3 = chap(client, "a"), chap(client, "b"), chap(client, "c")
    assert len(writes(reactor)) == 2 and client.queued == 1
    d4 = chap(client, "d")
    failures: list[Any] = []
    d4.addErrback(failures.append)
    assert failures[0].check(RadiusOverloaded) and failures[0].check(BackendUnavailable)
    first, second = writes(reactor)
    assert first[0][1] != second[0][1]
    deliver(reactor, reply_to(first[0]))
    assert d1.called and len(writes(reactor)) == 3 and client.queued == 0
    third = writes(reactor)[2][0]
    assert decode(third)["User-Name"] == ["c"]
    assert third[1] not in (second[0][1],)
    deliver(reactor, reply_to(second[0]))
    deliver(reactor, reply_to(third))
    assert d2.called and d3.called and client.in_flight == 0


def test_256_ids_in_flight() -> None:
    client, reactor = make_client(max_in_flight=256, max_queue=10)
    for n in range(257):
        chap(client, f"pe{n}")
    sent = writes(reactor)
    assert len(sent) == 256 and len({data[1] for data, _ in sent}) == 256
    assert client.queued == 1
    deliver(reactor, reply_to(sent[100][0]))
    assert len(writes(reactor)) == 257
    assert writes(reactor)[-1][0][1] == sent[100][0][1]  # the only free id


def test_stop_fails_pending_and_closes() -> None:
    client, reactor = make_client(max_in_flight=1)
    d1, d2 = chap(client, "a"), chap(client, "b")
    stopped = client.stop()
    for d in (d1, d2):
        failures: list[Any] = []
        d.addErrback(failures.append)
        assert failures[0].check(BackendUnavailable)
    assert stopped.called and reactor.ports[0].stopped
    assert reactor.getDelayedCalls() == []


def test_socket_receive_buffer_raised() -> None:
    client, reactor = make_client()
    client.start()
    assert (socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES) in reactor.ports[0].socket.options


def test_sockets_are_bound_to_the_route_to_the_server_never_the_wildcard() -> None:
    v6 = RadiusServer("::1", 1812, b"secret-6")
    remote = RadiusServer("192.0.2.10", 1812, b"secret-r")  # reached from 192.0.2.77 here
    unroutable = RadiusServer("198.51.100.1", 1812, b"secret-u")

    def local(server: RadiusServer) -> str:
        if server is unroutable:
            raise OSError("Network is unreachable")
        return "192.0.2.77" if server is remote else local_address_for(server)

    client, reactor = make_client(servers=(unroutable, A, B, v6, remote), local_address=local)
    client.start()
    # One socket per local address: A and B share loopback; nothing on 0.0.0.0 or ::.
    assert reactor.interfaces == ["127.0.0.1", "::1", "192.0.2.77"]
    d = chap(client)  # the unroutable server has no socket: A is asked at once
    [(_, addr)] = reactor.ports[0].written
    assert addr == A.address
    reactor.ports[0].protocol.datagramReceived(reply_to(reactor.ports[0].written[0][0]), A.address)
    assert result_of(d).accepted
    assert local_address_for(A) == local_address_for(B) == "127.0.0.1"
    assert local_address_for(v6) == "::1"
    # An explicit bind address is used for every server; the wildcard is refused.
    explicit, reactor = make_client(servers=(A, B), bind_address="127.0.0.1")
    explicit.start()
    assert reactor.interfaces == ["127.0.0.1"]
    for wildcard in ("0.0.0.0", "::"):
        with pytest.raises(ValueError):
            make_client(bind_address=wildcard)
    # Only unusable servers: unavailable, not a refusal, and nothing bound.
    lonely, reactor = make_client(servers=(unroutable,), local_address=local)
    failures: list[Any] = []
    chap(lonely).addErrback(failures.append)
    assert failures[0].check(BackendUnavailable) and reactor.interfaces == []


def test_secret_not_in_repr_and_servers_parsed() -> None:
    assert "secret-a" not in repr(A)
    servers = parse_servers("127.0.0.1:18121, [::1]:1812 127.0.0.2", b"s")
    assert [s.address for s in servers] == [("127.0.0.1", 18121), ("::1", 1812), ("127.0.0.2", 1812)]
    with pytest.raises(ValueError):
        RadiusServer("radius.example", 1812, b"s")
    with pytest.raises(ValueError):
        RadiusServer("127.0.0.1", 1812, b"")
    with pytest.raises(ValueError):
        parse_servers(" ", b"s")


def test_shipped_dictionary_matches_freeradius_addition() -> None:
    def vendor_block(text: str) -> list[tuple[str, ...]]:
        lines = [line.split("#")[0].split() for line in text.splitlines()]
        start = next(i for i, words in enumerate(lines) if words[:1] == ["VENDOR"])
        return [tuple(words) for words in lines[start:] if words]

    shipped = Path(DEFAULT_DICTIONARY).read_text()
    example = (Path(__file__).resolve().parent.parent / "etc" / "freeradius" / "dictionary.rserpool").read_text()
    assert vendor_block(shipped) == vendor_block(example)
    assert re.search(r"VENDOR\s+RSerPool\s+32473", shipped)
    for name in ("User-Name", "CHAP-Password", "CHAP-Challenge", "Class", "Filter-Id",
                 "Message-Authenticator", "NAS-Identifier", "Service-Type", "RSerPool-Group"):
        assert name in DICT.attributes

