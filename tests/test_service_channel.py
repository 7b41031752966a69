"""rserpool.service.channel, directly: a Channel on a StringTransport and a
task.Clock, its peer a sans-IO TcpMapConnection (and, for the TLS client
endpoint, real TLS over tests.memnet).  A clean close acknowledges what was
received, then closes TLS; a peer that does not finish the close is aborted
after close_timeout.  Deadlines (a started chunk, the handshake, the first
message) cannot be stretched by trickling bytes, and a pipelined flood is
handled a few events per reactor turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import endpoints, error, protocol, task
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from rserpool.security import tls
from rserpool.service.channel import Channel, ChannelSettings, address_text, tls_client_endpoint
from rserpool.service.pe_session import listen_sessions
from rserpool.wire import (
    AsapDeregistrationResponse, AsapHandleResolution, AsapRegistrationResponse, Limits, PPID_ASAP,
    PPID_ENRP, WireError, decode_message,
)
from rserpool.wire.tcpmap import (
    AckReceived, HeartbeatAckReceived, HeartbeatReceived, InitReceived, MessageReceived,
    TcpMapConnection,
)
from tests.memnet import MemoryNetwork
from tests.tlshelpers import TestPKI, make_test_pki

POOL = b"echo"


class Handler:
    """Records what the channel reports; can answer or close from a callback."""

    def __init__(self) -> None:
        self.ready = 0
        self.messages: list[Any] = []
        self.errors: list[tuple[int, WireError]] = []
        self.data: list[tuple[int, bytes]] = []
        self.closed: list[Failure] = []
        self.answer = False
        self.close_on_message = False

    def channel_ready(self, channel: Channel) -> None:
        self.ready += 1

    def message_received(self, channel: Channel, message: Any, now: float) -> None:
        self.messages.append((message, now))
        if self.answer:
            channel.send(AsapRegistrationResponse(POOL, 1))
        if self.close_on_message:
            channel.abort()

    def wire_error(self, channel: Channel, ppid: int, error: WireError, now: float) -> None:
        self.errors.append((ppid, error))

    def data_received(self, channel: Channel, ppid: int, payload: bytes, now: float) -> None:
        self.data.append((ppid, payload))

    def channel_closed(self, channel: Channel, reason: Failure) -> None:
        self.closed.append(reason)


class CountingTransport(StringTransport):
    """A StringTransport that counts write calls and can be aborted."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        super().write(data)

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


class Setup:
    def __init__(self, *, tls: bool = False, initiator: bool = False,
                 settings: ChannelSettings | None = None) -> None:
        self.clock = task.Clock()
        self.clock.advance(1000.0)
        self.handler = Handler()
        self.channel = Channel(self.handler, self.clock,
                               settings or ChannelSettings(heartbeat_interval=10.0, dead_after=30.0),
                               tls=tls, initiator=initiator)
        self.transport = CountingTransport()
        self.channel.makeConnection(self.transport)
        self.peer = TcpMapConnection()
        if not initiator:  # the peer opens the mapping
            self.feed(self.peer.initiate())

    def feed(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def sent(self) -> list[Any]:
        """What the channel wrote since the last call, as the peer sees it
        (without the INIT an accepting channel puts before its first chunk)."""
        data = self.transport.value()
        self.transport.clear()
        events = self.peer.receive_data(data, self.clock.seconds())
        return [e for e in events if type(e) is not InitReceived]

    def lose(self, reason: Failure | None = None) -> None:
        self.channel.connectionLost(reason or Failure(error.ConnectionDone()))


def messages(events: list[Any]) -> list[Any]:
    return [decode_message(e.payload, e.ppid) if e.ppid in (PPID_ASAP, PPID_ENRP) else e.payload
            for e in events if type(e) is MessageReceived]


# -- connecting ------------------------------------------------------------------------


def test_plain_channel_is_ready_at_once_and_the_initiator_sends_init() -> None:
    s = Setup(initiator=True)
    assert s.handler.ready == 1 and s.channel.ready
    assert [type(e) for e in s.peer.receive_data(s.transport.value())] == [InitReceived]
    accepting = Channel(Handler(), task.Clock(), ChannelSettings())
    transport = StringTransport()
    accepting.makeConnection(transport)
    assert transport.value() == b""  # the accepting side waits for the peer's INIT


def test_tls_channel_is_ready_after_the_handshake_only_once() -> None:
    s = Setup(tls=True)
    assert s.handler.ready == 0 and not s.channel.ready
    s.channel.handshakeCompleted()
    s.channel.handshakeCompleted()
    assert s.handler.ready == 1


def test_settings_are_checked_and_bound_the_chunk_size() -> None:
    for bad in ((0, 5), (5, 5), (10, 3)):
        with pytest.raises(ValueError):
            ChannelSettings(heartbeat_interval=bad[0], dead_after=bad[1])
    assert ChannelSettings(limits=Limits(max_message_size=1000)).max_chunk_size == 1016
    assert ChannelSettings().max_chunk_size == 0xFFFF


# -- receiving ----------------------------------------------------------------------


def test_asap_messages_are_decoded_and_other_ppids_are_data() -> None:
    s = Setup()
    request = AsapHandleResolution(POOL)
    s.feed(s.peer.send_message(PPID_ASAP, request.encode())
           + s.peer.send_message(47, b"application bytes")
           + s.peer.send_message(0, b""))
    assert s.handler.messages == [(request, 1000.0)]
    assert s.handler.data == [(47, b"application bytes"), (0, b"")]
    assert [type(e) for e in s.sent()] == [AckReceived] * 3  # one per DATA chunk


def test_a_handler_that_hands_the_channel_on_mid_read_is_replaced_for_the_rest_of_it() -> None:
    # The PE's authenticator gives the channel back on ASAP_AUTH_SUCCESS; the
    # answer to the registration sent behind the proof may be in the same read.
    s = Setup()
    first, second = s.handler, Handler()

    class HandsOn(Handler):
        def message_received(self, channel: Channel, message: Any, now: float) -> None:
            first.message_received(channel, message, now)
            channel.handler = second

    s.channel.handler = HandsOn()
    one, two = AsapHandleResolution(POOL), AsapRegistrationResponse(POOL, 1)
    s.feed(s.peer.send_message(PPID_ASAP, one.encode()) + s.peer.send_message(PPID_ASAP, two.encode())
           + s.peer.send_message(47, b"data"))
    assert [m for m, _ in first.messages] == [one]
    assert [m for m, _ in second.messages] == [two] and second.data == [(47, b"data")]


def test_a_message_that_does_not_decode_goes_to_the_handler_and_the_channel_stays() -> None:
    s = Setup()
    s.feed(s.peer.send_message(PPID_ASAP, b"\x0b\x00\x00\x05x")   # truncated
           + s.peer.send_message(PPID_ENRP, b"\x7f\x00\x00\x04"))  # unknown ENRP type
    assert [ppid for ppid, _ in s.handler.errors] == [PPID_ASAP, PPID_ENRP]
    assert all(isinstance(e, WireError) for _, e in s.handler.errors)
    assert not s.channel.closed and not s.transport.aborted
    s.feed(s.peer.send_message(PPID_ASAP, AsapHandleResolution(POOL).encode()))
    assert len(s.handler.messages) == 1


def test_a_framing_error_aborts_only_that_channel() -> None:
    bad, good = Setup(), Setup()
    bad.feed(b"\x00\x00\x00\x02")  # a chunk shorter than its header
    assert bad.transport.aborted and bad.handler.messages == []
    bad.lose(Failure(error.ConnectionLost()))
    assert bad.channel.closed and len(bad.handler.closed) == 1
    good.feed(good.peer.send_message(PPID_ASAP, AsapHandleResolution(POOL).encode()))
    assert len(good.handler.messages) == 1 and not good.transport.aborted
    bad.feed(bad.peer.send_message(PPID_ASAP, AsapHandleResolution(POOL).encode()))
    assert bad.handler.messages == []  # nothing more after the close


def test_answers_and_acks_of_one_read_leave_in_one_write() -> None:
    s = Setup()
    s.handler.answer = True
    reads = b"".join(s.peer.send_message(PPID_ASAP, AsapHandleResolution(POOL).encode())
                     for _ in range(5))
    s.feed(reads)
    assert len(s.transport.writes) == 1
    events = s.sent()
    # The same order as separate writes: the five answers, then the five ACKs.
    assert [type(e) for e in events] == [MessageReceived] * 5 + [AckReceived] * 5
    assert messages(events) == [AsapRegistrationResponse(POOL, 1)] * 5
    s.channel.send(AsapRegistrationResponse(POOL, 2))  # outside a read: written at once
    assert len(s.transport.writes) == 2


def test_a_handler_that_closes_in_a_read_stops_the_read_and_flushes_what_it_sent() -> None:
    s = Setup()
    s.handler.answer = True
    s.handler.close_on_message = True
    s.feed(b"".join(s.peer.send_message(PPID_ASAP, AsapHandleResolution(POOL).encode())
                    for _ in range(3)))
    assert len(s.handler.messages) == 1  # the rest of the read is not handled
    assert s.transport.aborted
    assert messages(s.sent()) == [AsapRegistrationResponse(POOL, 1)]


# -- sending and closing -----------------------------------------------------------------


def test_send_encoded_and_send_after_close() -> None:
    s = Setup()
    s.channel.send_encoded(47, b"raw data")
    s.channel.send_encoded(PPID_ASAP, AsapHandleResolution(POOL).encode())
    assert messages(s.sent()) == [b"raw data", AsapHandleResolution(POOL)]
    s.lose()
    s.channel.send(AsapHandleResolution(POOL))
    s.channel.send_encoded(47, b"late")
    s.channel.close()
    s.channel.abort()
    assert s.transport.value() == b"" and not s.transport.aborted


def test_close_is_graceful_and_abort_falls_back_to_lose_connection() -> None:
    s = Setup()
    s.channel.close()
    assert s.transport.disconnecting and not s.transport.aborted
    plain = Setup()
    plain.transport = StringTransport()  # no abortConnection
    plain.channel.transport = plain.transport
    plain.channel.abort()
    assert plain.transport.disconnecting


def test_closed_deferred_fires_once_the_connection_is_gone() -> None:
    s = Setup()
    first, second = s.channel.closed_deferred(), s.channel.closed_deferred()
    assert not first.called
    reason = Failure(error.ConnectionLost("gone"))
    s.lose(reason)
    assert first.called and second.called and first.result is None
    assert s.handler.closed == [reason]
    assert s.channel.closed_deferred().called  # after the close: at once


# -- liveness ---------------------------------------------------------------------


def test_heartbeat_when_idle_and_dead_after_silence() -> None:
    # (No first-message deadline here: this peer never sends a message.)
    s = Setup(settings=ChannelSettings(heartbeat_interval=10.0, dead_after=30.0,
                                       first_message_timeout=None))
    s.clock.advance(9.9)
    assert s.sent() == []
    s.clock.advance(0.1)
    assert [type(e) for e in s.sent()] == [HeartbeatReceived]
    s.clock.advance(10.0)
    assert [type(e) for e in s.sent()] == [HeartbeatReceived]
    s.clock.advance(9.9)
    assert not s.transport.aborted
    s.clock.advance(0.1)  # 30 s without hearing anything
    assert s.transport.aborted
    s.lose(Failure(error.ConnectionLost()))
    assert s.clock.getDelayedCalls() == []


def test_anything_heard_keeps_the_channel_alive_and_quiet() -> None:
    s = Setup(settings=ChannelSettings(heartbeat_interval=10.0, dead_after=30.0,
                                       first_message_timeout=None))
    for _ in range(10):
        s.clock.advance(9.0)
        s.feed(s.peer.heartbeat(now=s.clock.seconds()))
    # The peer's heartbeats were answered, none of ours was needed.
    assert [type(e) for e in s.sent()] == [HeartbeatAckReceived] * 10
    assert not s.transport.aborted
    s.feed(s.peer.data_to_send())
    s.clock.advance(10.0)
    assert [type(e) for e in s.sent()] == [HeartbeatReceived]


def test_the_heartbeat_timer_stops_with_the_connection() -> None:
    s = Setup()
    assert len(s.clock.getDelayedCalls()) == 1
    s.lose()
    assert s.clock.getDelayedCalls() == []


# -- the TLS client endpoint ------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_test_pki(Path(tmp_path_factory.mktemp("pki")))


class _Echo(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class _Client(protocol.Protocol):
    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


def test_tls_client_endpoint_batches_writes_on_the_injected_clock(pki: TestPKI) -> None:
    net = MemoryNetwork()
    options = tls.server_options(pki.server.cert, pki.server.key, require_client_cert=False)
    port = listen_sessions(net, "tcp:0:interface=127.0.0.1",
                           protocol.Factory.forProtocol(_Echo), options).result
    creator = tls.client_options("127.0.0.1", [pki.ca.cert])
    endpoint = tls_client_endpoint(
        creator, endpoints.TCP4ClientEndpoint(net, "127.0.0.1", port.getHost().port), net)
    client = _Client()
    connected = endpoints.connectProtocol(endpoint, client)
    net.run()
    assert connected.result is client  # the application protocol, not the TLS wrapper
    client.transport.write(b"hello")
    (link,) = net.links
    assert link.client.outgoing == []  # batched until the injected clock turns
    net.advance(0)
    assert link.client.outgoing != []
    net.run()
    assert client.received == b"hello"


# -- a clean close ---------------------------------------------------------------


class CloseRecorder:
    """A ChannelHandler that closes the channel on the first message (clean close)."""

    def __init__(self, close_on_message: bool = True) -> None:
        self.close_on_message = close_on_message
        self.messages: list = []
        self.closed: list = []

    def channel_ready(self, channel) -> None:
        pass

    def message_received(self, channel, message, now) -> None:
        self.messages.append(message)
        if self.close_on_message:
            channel.close()

    def wire_error(self, channel, ppid, error, now) -> None:
        raise AssertionError(error)

    def data_received(self, channel, ppid, payload, now) -> None:
        raise AssertionError(payload)

    def channel_closed(self, channel, reason) -> None:
        self.closed.append(reason)


def make_channel(handler, close_timeout: float = 5.0):
    clock = task.Clock()
    channel = Channel(handler, clock, ChannelSettings(close_timeout=close_timeout), tls=False)
    transport = StringTransport()
    channel.makeConnection(transport)
    return clock, channel, transport


def test_close_while_handling_a_message_acknowledges_it_first():
    handler = CloseRecorder()
    clock, channel, transport = make_channel(handler)
    peer = TcpMapConnection()
    message = AsapDeregistrationResponse(b"echo", 0x1234)
    channel.dataReceived(peer.send_message(PPID_ASAP, message.encode()))
    assert handler.messages == [message]
    assert transport.disconnecting and channel.closing
    # The ACK of the peer's DATA chunk went out before the close.
    events = peer.receive_data(transport.value())
    assert [type(e) for e in events if type(e) is not InitReceived] == [AckReceived]
    assert peer.unacked == 0


def test_nothing_is_sent_or_handled_once_closing():
    handler = CloseRecorder(close_on_message=False)
    clock, channel, transport = make_channel(handler)
    channel.close()
    written = transport.value()
    channel.send(AsapHandleResolution(b"echo"))
    channel.send_encoded(PPID_ASAP, AsapHandleResolution(b"echo").encode())
    assert transport.value() == written
    peer = TcpMapConnection()
    channel.dataReceived(peer.send_message(PPID_ASAP, AsapHandleResolution(b"echo").encode()))
    assert handler.messages == []


@pytest.mark.parametrize("finished", [True, False])
def test_a_close_the_peer_does_not_finish_is_aborted(finished):
    handler = CloseRecorder(close_on_message=False)
    clock, channel, transport = make_channel(handler, close_timeout=3.0)
    channel.close()
    assert not transport.disconnected  # a graceful close, not a reset
    if finished:
        channel.connectionLost(None)
    clock.advance(3.0)
    # StringTransport.abortConnection sets ``disconnected``.
    assert transport.disconnected is (not finished)
    if not finished:
        channel.connectionLost(None)  # what the abort leads to
    assert clock.getDelayedCalls() == []
    assert len(handler.closed) == 1


def test_close_timeout_must_be_positive():
    with pytest.raises(ValueError):
        ChannelSettings(close_timeout=0)


def test_address_text_is_host_and_port_not_a_repr():
    assert address_text(IPv4Address("TCP", "127.0.0.1", 3864)) == "127.0.0.1:3864"
    assert address_text(IPv6Address("TCP", "::1", 3864)) == "[::1]:3864"
    assert address_text(None) == "None"
    assert "UNIXAddress" in address_text(UNIXAddress(b"/tmp/x"))


# -- deadlines a slow client cannot stretch; fair service between connections -----------
#
# The heartbeat liveness check closes a channel only when *nothing* arrives
# for ``dead_after``; a client that trickles one byte now and then defeats
# it.  These tests play such clients against an accepting channel.


class Recorder:
    def __init__(self) -> None:
        self.ready = 0
        self.messages: list[Any] = []
        self.closed = 0

    def channel_ready(self, channel: Channel) -> None:
        self.ready += 1

    def message_received(self, channel: Channel, message: Any, now: float) -> None:
        self.messages.append((now, message))

    def wire_error(self, channel: Channel, ppid: int, error: Any, now: float) -> None:
        self.messages.append((now, error))

    def data_received(self, channel: Channel, ppid: int, payload: bytes, now: float) -> None:
        self.messages.append((now, payload))

    def channel_closed(self, channel: Channel, reason: Any) -> None:
        self.closed += 1


def accepted(*, tls: bool = False, **settings: Any) -> tuple[Channel, Recorder, task.Clock, StringTransport]:
    """An accepting (registrar-side) channel; with ``tls`` its handshake is
    pending until the test calls ``handshakeCompleted``."""
    clock = task.Clock()
    recorder = Recorder()
    options = dict(heartbeat_interval=10.0, dead_after=30.0)
    options.update(settings)
    channel = Channel(recorder, clock, ChannelSettings(**options), tls=tls)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, recorder, clock, transport


def aborted(channel: Channel, transport: StringTransport) -> bool:
    return transport.disconnecting or getattr(transport, "disconnected", False)


def resolution() -> bytes:
    peer = TcpMapConnection()
    return peer.initiate() + peer.send_message(PPID_ASAP, AsapHandleResolution(b"echo").encode())


def test_a_chunk_trickled_one_byte_every_nine_seconds_is_dropped() -> None:
    channel, recorder, clock, transport = accepted(first_message_timeout=None)
    data = resolution()
    fed = 0
    while not aborted(channel, transport) and fed < len(data):
        channel.dataReceived(data[fed:fed + 1])  # never 30 s of silence: dead_after never fires
        fed += 1
        clock.advance(9.0)
    # The chunk header arrived within the first 5 bytes (INIT is 4): dropped
    # within chunk_timeout (10 s) of its first byte, long before it is complete.
    assert aborted(channel, transport) and fed <= 7
    assert recorder.messages == []


def test_a_message_split_over_reads_in_time_is_served() -> None:
    channel, recorder, clock, transport = accepted(first_message_timeout=None)
    data = resolution() * 1
    for piece in (data[:9], data[9:15], data[15:]):
        channel.dataReceived(piece)
        clock.advance(4.0)
    assert len(recorder.messages) == 1 and not aborted(channel, transport)
    clock.advance(25.0)  # idle (heartbeats go out), whole chunks only: no chunk deadline
    assert not aborted(channel, transport)


def test_tls_handshake_must_finish_in_time() -> None:
    channel, recorder, clock, transport = accepted(tls=True, handshake_timeout=3.0)
    clock.advance(2.9)
    assert not aborted(channel, transport)
    clock.advance(0.2)
    assert aborted(channel, transport) and recorder.ready == 0


def test_first_message_must_arrive_in_time_heartbeats_do_not_count() -> None:
    channel, recorder, clock, transport = accepted(tls=True, first_message_timeout=4.0)
    clock.advance(1.0)
    channel.handshakeCompleted()
    assert recorder.ready == 1
    peer = TcpMapConnection()
    channel.dataReceived(peer.initiate())
    for _ in range(3):
        clock.advance(1.0)
        channel.dataReceived(peer.heartbeat())  # signs of life, no message
    assert not aborted(channel, transport)
    clock.advance(1.1)
    assert aborted(channel, transport)


def test_first_message_in_time_then_idle_is_kept() -> None:
    channel, recorder, clock, transport = accepted(tls=True, first_message_timeout=4.0)
    channel.handshakeCompleted()
    clock.advance(3.0)
    channel.dataReceived(resolution())
    assert channel.last_message_at == 3.0
    peer_heartbeats = TcpMapConnection()
    peer_heartbeats.initiate()
    for _ in range(10):
        clock.advance(9.0)
        channel.dataReceived(peer_heartbeats.heartbeat())
    assert not aborted(channel, transport) and len(recorder.messages) == 1


def test_initiating_side_has_no_handshake_or_first_message_deadline() -> None:
    clock = task.Clock()
    recorder = Recorder()
    channel = Channel(recorder, clock, ChannelSettings(handshake_timeout=1.0, first_message_timeout=1.0),
                      tls=True, initiator=True)
    transport = StringTransport()
    channel.makeConnection(transport)
    clock.advance(5.0)
    channel.handshakeCompleted()
    clock.advance(5.0)
    assert not aborted(channel, transport)


def test_deadlines_can_be_turned_off_and_are_validated() -> None:
    channel, _, clock, transport = accepted(tls=True, handshake_timeout=None)
    clock.advance(25.0)
    assert not aborted(channel, transport)
    for name in ("chunk_timeout", "handshake_timeout", "first_message_timeout"):
        with pytest.raises(ValueError):
            ChannelSettings(**{name: 0.0})


# -- fair service: a bounded number of events per connection per turn ---------------------


class Echo(Recorder):
    """Answers every message at once (like the registrar's synchronous answers)."""

    def message_received(self, channel: Channel, message: Any, now: float) -> None:
        super().message_received(channel, message, now)
        channel.send(message)


def one_turn(clock: task.Clock) -> None:
    """Run the calls due now, but not those they schedule (one reactor turn;
    ``Clock.advance(0)`` would run those too)."""
    due = [call for call in clock.getDelayedCalls() if call.getTime() <= clock.seconds()]
    for call in due:
        clock.calls.remove(call)
        call.func(*call.args, **call.kw)


def pipelined(count: int, peer: TcpMapConnection | None = None) -> tuple[TcpMapConnection, bytes]:
    peer = peer or TcpMapConnection()
    data = peer.initiate() + b"".join(
        peer.send_message(PPID_ASAP, AsapHandleResolution(b"p%d" % n).encode()) for n in range(count))
    return peer, data


def test_a_pipelined_flood_is_handled_a_few_events_per_turn_in_order() -> None:
    clock = task.Clock()
    flooder, bystander = Echo(), Echo()
    settings = ChannelSettings(first_message_timeout=None, max_events_per_turn=8)
    flood = Channel(flooder, clock, settings, tls=False)
    other = Channel(bystander, clock, settings, tls=False)
    flood_transport, other_transport = StringTransport(), StringTransport()
    flood.makeConnection(flood_transport)
    other.makeConnection(other_transport)
    peer, data = pipelined(100)
    flood.dataReceived(data)  # INIT + 100 messages in one read
    assert len(flooder.messages) == 7  # the INIT event and 7 messages: 8 events
    assert flood_transport.producerState == "paused"  # no more reading meanwhile
    # Another connection's read is handled at once, before the flood's next turn.
    other.dataReceived(pipelined(1)[1])
    assert len(bystander.messages) == 1 and len(flooder.messages) == 7
    turns = 0
    while len(flooder.messages) < 100:
        one_turn(clock)
        turns += 1
        assert len(flooder.messages) == min(100, 7 + 8 * turns)
    assert turns == 12 and flood_transport.producerState == "producing"
    handles = [m.pool_handle for _, m in flooder.messages]
    assert handles == [b"p%d" % n for n in range(100)]
    # The answers went out in TSN order (the peer's connection checks), in a
    # few large writes rather than one per turn.
    echoed = [e for e in peer.receive_data(flood_transport.value()) if hasattr(e, "payload")]
    assert len(echoed) == 100 and peer.unacked == 0


def test_reads_during_a_backlog_keep_their_place() -> None:
    clock = task.Clock()
    flooder = Echo()
    flood = Channel(flooder, clock, ChannelSettings(first_message_timeout=None, max_events_per_turn=4),
                    tls=False)
    transport = StringTransport()
    flood.makeConnection(transport)
    peer, data = pipelined(10)
    flood.dataReceived(data)
    more = b"".join(peer.send_message(PPID_ASAP, AsapHandleResolution(b"late%d" % n).encode())
                    for n in range(3))
    flood.dataReceived(more)  # (TLS can deliver what it had already decrypted)
    clock.advance(0)
    assert [m.pool_handle for _, m in flooder.messages] == (
        [b"p%d" % n for n in range(10)] + [b"late%d" % n for n in range(3)])
    assert len([e for e in peer.receive_data(transport.value()) if hasattr(e, "payload")]) == 13


def test_closing_during_a_backlog_drops_the_rest() -> None:
    clock = task.Clock()
    flooder = Echo()
    flood = Channel(flooder, clock, ChannelSettings(first_message_timeout=None, max_events_per_turn=4),
                    tls=False)
    transport = StringTransport()
    flood.makeConnection(transport)
    flood.dataReceived(pipelined(50)[1])
    flood.abort()
    clock.advance(0)
    assert len(flooder.messages) == 3  # the INIT and 3 messages, no more


def test_the_initiating_side_handles_a_read_at_once() -> None:
    clock = task.Clock()
    handler = Recorder()
    channel = Channel(handler, clock, ChannelSettings(max_events_per_turn=2), tls=False, initiator=True)
    channel.makeConnection(StringTransport())
    channel.dataReceived(pipelined(20)[1])
    assert len(handler.messages) == 20


class Pausing(Echo):
    """Answers, and pauses the channel for a second at the messages named."""

    def __init__(self, pause_at: set[bytes]) -> None:
        super().__init__()
        self.pause_at = pause_at

    def message_received(self, channel: Channel, message: Any, now: float) -> None:
        super().message_received(channel, message, now)
        if message.pool_handle in self.pause_at:
            channel.pause_input(now + 1.0)


def test_a_paused_channel_handles_nothing_until_the_pause_ends_and_keeps_the_order() -> None:
    # The gate rate limited the channel (issue 12): what it sent meanwhile
    # waits, reading paused, and costs nothing until then.
    clock = task.Clock()
    handler = Pausing({b"p2", b"p5"})
    channel = Channel(handler, clock, ChannelSettings(first_message_timeout=None, max_events_per_turn=8),
                      tls=False)
    transport = StringTransport()
    channel.makeConnection(transport)
    peer, data = pipelined(7)
    channel.dataReceived(data)
    assert [m.pool_handle for _, m in handler.messages] == [b"p0", b"p1", b"p2"]
    assert transport.producerState == "paused"
    more = b"".join(peer.send_message(PPID_ASAP, AsapHandleResolution(b"late%d" % n).encode()) for n in range(2))
    channel.dataReceived(more)  # what TLS had already decrypted waits too
    clock.advance(0.99)
    assert len(handler.messages) == 3
    clock.advance(0.01)
    assert [m.pool_handle for _, m in handler.messages][3:] == [b"p3", b"p4", b"p5"]  # paused again at p5
    clock.advance(1.0)
    assert [m.pool_handle for _, m in handler.messages][6:] == [b"p6", b"late0", b"late1"]
    assert transport.producerState == "producing"
    echoed = [e for e in peer.receive_data(transport.value()) if hasattr(e, "payload")]
    assert len(echoed) == 9 and peer.unacked == 0


def test_a_pause_after_the_last_message_still_stops_reading_until_it_ends() -> None:
    clock = task.Clock()
    handler = Pausing({b"p0"})
    channel = Channel(handler, clock, ChannelSettings(first_message_timeout=None), tls=False)
    transport = StringTransport()
    channel.makeConnection(transport)
    peer, data = pipelined(1)
    channel.dataReceived(data)
    assert transport.producerState == "paused"
    clock.advance(1.0)
    assert transport.producerState == "producing"
    channel.dataReceived(peer.send_message(PPID_ASAP, AsapHandleResolution(b"next").encode()))
    assert handler.messages[-1][1].pool_handle == b"next"
