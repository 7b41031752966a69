"""rserpool.service.channel: deadlines a slow client cannot stretch
(task.Clock and StringTransport: deterministic).

The heartbeat liveness check closes a channel only when *nothing* arrives
for ``dead_after``; a client that trickles one byte now and then defeats
it.  These tests play such clients against an accepting channel.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.testing import StringTransport

from rserpool.service.channel import Channel, ChannelSettings
from rserpool.wire import AsapHandleResolution
from rserpool.wire.codes import PPID_ASAP
from rserpool.wire.tcpmap import TcpMapConnection


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
