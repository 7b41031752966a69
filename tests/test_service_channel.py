"""Channel: a clean close acknowledges what was received, then closes TLS;
a peer that does not finish the close is aborted after close_timeout."""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.testing import StringTransport

from rserpool.service.channel import Channel, ChannelSettings
from rserpool.wire import AsapDeregistrationResponse, AsapHandleResolution
from rserpool.wire.codes import PPID_ASAP
from rserpool.wire.tcpmap import AckReceived, InitReceived, TcpMapConnection

import pytest


class Recorder:
    """A ChannelHandler that closes the channel on the first message."""

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
    handler = Recorder()
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
    handler = Recorder(close_on_message=False)
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
    handler = Recorder(close_on_message=False)
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
    from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

    from rserpool.service.channel import address_text

    assert address_text(IPv4Address("TCP", "127.0.0.1", 3864)) == "127.0.0.1:3864"
    assert address_text(IPv6Address("TCP", "::1", 3864)) == "[::1]:3864"
    assert address_text(None) == "None"
    assert "UNIXAddress" in address_text(UNIXAddress(b"/tmp/x"))
