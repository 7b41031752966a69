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
