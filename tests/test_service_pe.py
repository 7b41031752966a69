"""The PE library's Twisted shell (rserpool.service.pe): deterministic tests
with task.Clock, and integration tests over loopback TLS against
RegistrarService (the demo echo PE: tests/test_demo_echo_pe.py)."""

from __future__ import annotations

import random
import re
from ipaddress import IPv4Address

import pytest
from twisted.internet import address, defer, task
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest

from rserpool.asap.pe import Deregistered, HomeChanged, KeepAliveDropped, NeedServer, PeState
from rserpool.service.channel import Channel, ChannelSettings
from rserpool.service.pe import (
    PoolElementService, PoolElementStopped, RegistrationFailedError, RegistrationRefusedError,
)
from rserpool.wire import (
    AsapDeregistration, AsapDeregistrationResponse, AsapEndpointKeepAlive,
    AsapEndpointKeepAliveAck, AsapRegistration, AsapRegistrationResponse, LeastUsedPolicy,
    OperationError, TcpTransport, decode_message,
)
from rserpool.wire.codes import CAUSE_SECURITY, PPID_ASAP
from rserpool.wire.tcpmap import MessageReceived, TcpMapConnection
from tests.asaphelpers import LoopbackRegistrarsMixin, within

H = b"echo"
TRANSPORT = TcpTransport(7, IPv4Address("127.0.0.1"))


# -- deterministic tests ---------------------------------------------------------------


class FakeChannel:
    """Stands in for a Channel: records what is sent."""

    def __init__(self, port: int = 3864) -> None:
        self.peer = address.IPv4Address("TCP", "127.0.0.1", port)
        self.sent: list = []
        self.closed = False
        self.closing = False  # True when the PE closed it (Channel.close)
        self.handler = None

    def send(self, message) -> None:
        assert not self.closed
        self.sent.append(message)

    def abort(self) -> None:
        """The connection is gone (the registrar died, or the test says so)."""
        if not self.closed:
            self.closed = True
            self.handler.channel_closed(self, Failure(ConnectionLost()))

    def close(self) -> None:
        self.closing = True
        self.abort()

    def closed_deferred(self):
        return defer.succeed(None)


class Hunts:
    """An injected hunt: each call waits for the test to hand over a channel."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple, defer.Deferred]] = []

    def __call__(self, avoid):
        d = defer.Deferred()
        self.calls.append((avoid, d))
        return d

    def deliver(self, channel) -> None:
        avoid, d = self.calls[-1]
        assert not d.called
        d.callback(channel)


def make_service(clock, hunts, **kw) -> PoolElementService:
    kw.setdefault("randbits", random.Random(3).getrandbits)
    return PoolElementService(clock, H, TRANSPORT, LeastUsedPolicy(1), hunt=hunts, **kw)


def answer_registration(pe, channel, reject=False, error=None) -> None:
    reg = channel.sent[-1]
    assert isinstance(reg, AsapRegistration)
    pe.message_received(channel, AsapRegistrationResponse(H, reg.pool_element.pe_id, reject, error),
                        pe.reactor.seconds())


@pytest.fixture
def setup():
    clock = task.Clock()
    hunts = Hunts()
    pe = make_service(clock, hunts, registration_life=60)
    events: list = []
    pe.add_observer(events.append)
    return clock, hunts, pe, events


def test_register_keepalive_and_t4(setup):
    clock, hunts, pe, events = setup
    pe.startService()
    assert len(hunts.calls) == 1 and hunts.calls[0][0] == ()
    waiting = pe.registered()
    assert not waiting.called
    a = FakeChannel()
    hunts.deliver(a)
    assert a.handler is pe and pe.channels == {a}
    (reg,) = a.sent
    assert reg.pool_element.pe_id == pe.pe_id and reg.pool_element.registration_life == 60
    clock.advance(1)
    answer_registration(pe, a)
    assert waiting.called and waiting.result.pe_id == pe.pe_id
    assert pe.is_registered
    pe.message_received(a, AsapEndpointKeepAlive(0xABC, H), clock.seconds())
    assert a.sent[-1] == AsapEndpointKeepAliveAck(H, pe.pe_id)
    assert pe.home_server_id == 0xABC
    # T4 = life - 20 s = 40 s after the registration was sent (at 0).
    clock.advance(38.9)
    assert len([m for m in a.sent if isinstance(m, AsapRegistration)]) == 1
    clock.advance(0.2)
    assert isinstance(a.sent[-1], AsapRegistration)
    nxt = pe.next_registration()
    answer_registration(pe, a)
    assert nxt.result.reregistration
    assert pe.registered().result is nxt.result  # registered now: at once


def test_failover_reregisters_with_the_same_id(setup):
    clock, hunts, pe, events = setup
    pe.startService()
    a = FakeChannel(port=1111)
    hunts.deliver(a)
    answer_registration(pe, a)
    waiting = pe.next_registration()
    a.abort()  # the home registrar died
    assert any(isinstance(e, NeedServer) and e.failover for e in events)
    assert len(hunts.calls) == 2 and hunts.calls[1][0] == (("127.0.0.1", 1111),)
    assert not pe.is_registered
    b = FakeChannel(port=2222)
    hunts.deliver(b)
    assert b.sent[0].pool_element.pe_id == pe.pe_id
    answer_registration(pe, b)
    assert waiting.result.failover
    assert pe.home_channel is b


def test_update_policy_fires_after_the_registration_carrying_it(setup):
    clock, hunts, pe, events = setup
    pe.startService()
    a = FakeChannel()
    hunts.deliver(a)
    d = pe.update_policy(LeastUsedPolicy(9))  # while the first registration is pending
    answer_registration(pe, a)
    assert not d.called
    assert a.sent[-1].pool_element.policy == LeastUsedPolicy(9)
    answer_registration(pe, a)
    assert d.called
    d2 = pe.update_policy(LeastUsedPolicy(10))
    assert a.sent[-1].pool_element.policy == LeastUsedPolicy(10)
    answer_registration(pe, a)
    assert d2.called


def test_refusal_fails_waiters_and_stops_retrying(setup):
    clock, hunts, pe, events = setup
    pe.startService()
    d = pe.registered()
    a = FakeChannel()
    hunts.deliver(a)
    answer_registration(pe, a, reject=True, error=OperationError.of(CAUSE_SECURITY))
    failure = unittest.TestCase().failureResultOf(d, RegistrationRefusedError)
    assert failure.value.cause.causes[0].code == CAUSE_SECURITY
    clock.advance(3600)
    assert len(a.sent) == 1 and len(hunts.calls) == 1
    retried = pe.update_policy(LeastUsedPolicy(2))
    assert len(a.sent) == 2
    answer_registration(pe, a)
    assert retried.called


def test_max_reg_attempt_fails(setup):
    clock, hunts, pe, events = setup
    pe.startService()
    d = pe.registered()
    hunts.deliver(FakeChannel())
    clock.advance(30)  # T2
    assert len(hunts.calls) == 2
    hunts.deliver(FakeChannel())
    clock.advance(30)
    unittest.TestCase().failureResultOf(d, RegistrationFailedError)
    assert pe.state is PeState.FAILED and len(hunts.calls) == 2


def test_home_change_reported(setup):
    clock, hunts, pe, events = setup
    pe.startService()
    a = FakeChannel()
    hunts.deliver(a)
    answer_registration(pe, a)
    pe.message_received(a, AsapEndpointKeepAlive(5, H, home=True), 0.0)
    assert HomeChanged(5, None, a) in events


def test_stop_deregisters_and_closes(setup):
    clock, hunts, pe, events = setup
    pe.startService()
    a = FakeChannel()
    hunts.deliver(a)
    answer_registration(pe, a)
    stopped = pe.stopService()
    assert a.sent[-1] == AsapDeregistration(H, pe.pe_id)
    assert not stopped.called
    pe.message_received(a, AsapDeregistrationResponse(H, pe.pe_id), 0.0)
    assert stopped.called and a.closed
    assert Deregistered(True) in events
    assert clock.getDelayedCalls() == []


def test_stop_is_bounded_by_t3(setup):
    clock, hunts, pe, events = setup
    pe.startService()
    a = FakeChannel()
    hunts.deliver(a)
    answer_registration(pe, a)
    stopped = pe.stopService()
    clock.advance(29.9)
    assert not stopped.called
    clock.advance(0.1)
    assert stopped.called and Deregistered(False) in events
    assert clock.getDelayedCalls() == []


def test_stop_while_hunting_cancels_the_hunt(setup):
    clock, hunts, pe, events = setup
    pe.startService()
    waiting = pe.registered()
    stopped = pe.stopService()
    assert stopped.called
    assert hunts.calls[0][1].called  # cancelled
    unittest.TestCase().failureResultOf(waiting, PoolElementStopped)


def test_failed_hunt_is_retried_with_backoff():
    clock = task.Clock()
    calls = []

    def hunt(avoid):
        calls.append(clock.seconds())
        return defer.fail(RuntimeError("no registrar"))

    pe = PoolElementService(clock, H, TRANSPORT, LeastUsedPolicy(0), hunt=hunt, hunt_retry=(1.0, 4.0))
    pe.startService()
    clock.pump([0.5] * 30)
    assert calls[:5] == [0.0, 1.0, 3.0, 7.0, 11.0]
    pe.stopService()
    assert clock.getDelayedCalls() == []


class _Connecting:
    """The channel's handler until the PE takes it over."""

    def channel_ready(self, channel) -> None:
        pass


def test_real_channel_bytes_over_string_transport():
    """The shell over a real Channel: TCP-mapping framed ASAP on the wire."""
    clock = task.Clock()
    transport = StringTransport()
    channel = Channel(_Connecting(), clock, ChannelSettings(heartbeat_interval=5, dead_after=15),
                      tls=False, initiator=True)
    hunts = []

    def hunt(avoid):
        hunts.append(avoid)
        if len(hunts) > 1:
            return defer.Deferred()  # the failover hunt: left pending
        channel.makeConnection(transport)
        return defer.succeed(channel)

    pe = PoolElementService(clock, H, TRANSPORT, LeastUsedPolicy(0), hunt=hunt, pe_id=0x42)
    pe.startService()
    registrar = TcpMapConnection()
    received = [decode_message(e.payload, e.ppid) for e in
                registrar.receive_data(transport.value(), 0.0) if isinstance(e, MessageReceived)]
    transport.clear()
    assert [type(m) for m in received] == [AsapRegistration]
    channel.dataReceived(registrar.data_to_send()
                         + registrar.send_message(PPID_ASAP, AsapRegistrationResponse(H, 0x42).encode())
                         + registrar.send_message(PPID_ASAP, AsapEndpointKeepAlive(9, H).encode()))
    assert pe.is_registered
    answers = [decode_message(e.payload, e.ppid) for e in
               registrar.receive_data(transport.value(), 1.0) if isinstance(e, MessageReceived)]
    assert answers == [AsapEndpointKeepAliveAck(H, 0x42)]
    # Dead-peer detection: nothing heard for 15 s aborts the channel -> failover hunt.
    clock.pump([5, 5, 5])
    assert transport.disconnecting
    channel.connectionLost(Failure(ConnectionLost()))  # what the reactor does after the abort
    assert pe.core.state is PeState.HUNTING
    assert hunts == [(), (("192.168.1.1", 54321),)]  # StringTransport's peer, tried last


# -- RFC 5355 2.14: a keep-alive flood from the registrar ------------------------------------


@pytest.fixture
def drop_log():
    """The shell's warnings about dropped keep-alives, formatted."""
    lines: list[str] = []

    def observer(event) -> None:
        if (event.get("log_namespace") == "rserpool.service.keepalive_log"
                and event.get("log_level") is LogLevel.warn
                and "keep-alive" in (event.get("log_format") or "")):
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


def test_keepalive_flood_over_a_real_channel_is_bounded(drop_log):
    """1,000 keep-alives at once over a real Channel: the PE answers the
    burst, stays registered, answers 5/s under a continued flood, logs one
    line per minute at most, and answers every keep-alive at a normal rate."""
    clock = task.Clock()
    transport = StringTransport()
    channel = Channel(_Connecting(), clock, ChannelSettings(heartbeat_interval=5, dead_after=15),
                      tls=False, initiator=True)

    def hunt(avoid):
        if channel.closed:
            return defer.Deferred()  # the failover hunt: left pending
        channel.makeConnection(transport)
        return defer.succeed(channel)

    pe = PoolElementService(clock, H, TRANSPORT, LeastUsedPolicy(0), hunt=hunt, pe_id=0x42)
    pe.startService()
    registrar = TcpMapConnection()

    def answers() -> list:
        data, _ = transport.value(), transport.clear()
        return [decode_message(e.payload, e.ppid) for e in registrar.receive_data(data, clock.seconds())
                if isinstance(e, MessageReceived)]

    def registrar_sends(*messages) -> None:
        channel.dataReceived(registrar.data_to_send() + b"".join(
            registrar.send_message(PPID_ASAP, m.encode()) for m in messages))

    ack = AsapEndpointKeepAliveAck(H, 0x42)
    keepalive = AsapEndpointKeepAlive(9, H)
    assert [type(m) for m in answers()] == [AsapRegistration]
    dropped = []
    pe.add_observer(lambda e: dropped.append(e) if type(e) is KeepAliveDropped else None)

    registrar_sends(AsapRegistrationResponse(H, 0x42), *[keepalive] * 1000)
    assert pe.is_registered
    assert answers() == [ack] * 40  # the default burst
    assert pe.stats == {"keepalives_answered": 40, "keepalives_dropped": 960}
    assert len(dropped) == 960 and all(e.channel is channel for e in dropped)
    assert len(drop_log) == 1
    assert "faster than 5/s (burst 40)" in drop_log[0] and "RFC 5355 2.14" in drop_log[0]

    # The flood goes on, 20 a second for two minutes: 5 a second are answered.
    answered = 0
    for _ in range(240):
        clock.advance(0.5)
        registrar_sends(*[keepalive] * 10)
        answered += len(answers())
    assert 600 - 3 <= answered <= 600 + 1
    assert pe.is_registered and pe.stats["keepalives_dropped"] == 960 + 2400 - answered
    # The first line, then a summary at 60 s and at 120 s.
    assert len(drop_log) == 3, drop_log
    assert all("in the last 60 s" in line for line in drop_log[1:])

    # At a normal rate (1/s) every keep-alive is answered; the drops made
    # from 120 s on get their summary at 180 s, then the log stays quiet.
    for _ in range(130):
        clock.advance(1)
        registrar_sends(keepalive)
        assert answers() == [ack]
    assert len(drop_log) == 4
    # Every drop was counted in a line: the first one, then the summaries.
    summarized = [int(re.search(r"dropped (\d+) more", line).group(1)) for line in drop_log[1:]]
    assert 1 + sum(summarized) == pe.stats["keepalives_dropped"]
    assert pe.is_registered and pe.core.state is PeState.REGISTERED

    # The channel goes: its bucket and its log state go with it.
    channel.connectionLost(Failure(ConnectionLost()))
    assert pe.core.keepalive_channels == 0 and pe.drop_log.channels == {}
    assert len(drop_log) == 4


def test_dropped_keepalives_are_summarized_when_the_channel_closes(setup, drop_log):
    clock, hunts, pe, events = setup
    pe.startService()
    a = FakeChannel(port=1111)
    hunts.deliver(a)
    answer_registration(pe, a)
    for _ in range(100):
        pe.message_received(a, AsapEndpointKeepAlive(5, H), clock.seconds())
    assert a.sent.count(AsapEndpointKeepAliveAck(H, pe.pe_id)) == 40
    assert pe.stats["keepalives_dropped"] == 60 and len(drop_log) == 1
    assert len([e for e in events if type(e) is KeepAliveDropped]) == 60  # observers see each
    clock.advance(10)
    a.abort()  # before the summary is due: it is logged now, and not again
    assert len(drop_log) == 2 and "59 more" in drop_log[1] and "before the channel closed" in drop_log[1]
    assert pe.core.keepalive_channels == 0 and pe.drop_log.channels == {}
    clock.advance(120)
    assert len(drop_log) == 2
    # The next registrar channel starts afresh: full burst, its own first line.
    b = FakeChannel(port=2222)
    hunts.deliver(b)
    answer_registration(pe, b)
    for _ in range(41):
        pe.message_received(b, AsapEndpointKeepAlive(6, H), clock.seconds())
    assert b.sent.count(AsapEndpointKeepAliveAck(H, pe.pe_id)) == 40
    assert len(drop_log) == 3 and pe.stats == {"keepalives_answered": 80, "keepalives_dropped": 61}
    # Stopping leaves no summary timer behind.
    stopped = pe.stopService()
    pe.message_received(b, AsapDeregistrationResponse(H, pe.pe_id), clock.seconds())
    assert stopped.called and clock.getDelayedCalls() == []
    assert pe.drop_log.channels == {}


def test_keepalive_log_interval_is_validated():
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="keepalive_log_interval"):
            make_service(task.Clock(), Hunts(), keepalive_log_interval=bad)


def test_hunt_returning_a_closed_channel_is_retried_later():
    clock = task.Clock()
    calls = []
    closed = FakeChannel()
    closed.closed = True

    def hunt(avoid):
        calls.append(clock.seconds())
        return defer.succeed(closed)

    pe = PoolElementService(clock, H, TRANSPORT, LeastUsedPolicy(0), hunt=hunt, hunt_retry=(1.0, 1.0))
    pe.startService()
    clock.pump([1.0] * 3)
    assert calls == [0.0, 1.0, 2.0, 3.0]
    pe.stopService()
    unittest.TestCase().failureResultOf(pe.registered(), PoolElementStopped)


# -- integration over loopback TLS ---------------------------------------------------------


@pytest.mark.integration
class PoolElementOverTLS(LoopbackRegistrarsMixin, unittest.TestCase):
    timeout = 30

    def pe_options(self, *registrars):
        return dict(super().pe_options(*registrars),
                    channel_settings=ChannelSettings(heartbeat_interval=0.5, dead_after=2.0))

    def make_pe(self, *registrars, port=7, **kw) -> PoolElementService:
        pe = PoolElementService(self.reactor, H, TcpTransport(port, IPv4Address("127.0.0.1")),
                                LeastUsedPolicy(1), registration_life=30,
                                **self.pe_options(*registrars), **kw)
        self.services.append(pe)
        return pe

    @defer.inlineCallbacks
    def test_register_keepalives_update_and_deregister(self):
        registrar = yield self.registrar()
        pe = self.make_pe(registrar)
        keepalives = []
        enough = defer.Deferred()
        original = pe.message_received

        def counting(channel, message, now):
            original(channel, message, now)
            if isinstance(message, AsapEndpointKeepAlive):
                keepalives.append(now)
                if len(keepalives) == 5 and not enough.called:
                    enough.callback(None)

        pe.message_received = counting
        pe.startService()
        event = yield within(pe.registered(), 10, self.reactor)
        self.assertEqual(event.pe_id, pe.pe_id)
        entry = registrar.handlespace.get(H, pe.pe_id)
        self.assertIsNotNone(entry)
        self.assertEqual(entry.identity, "pe1")
        self.assertEqual(entry.home_server_id, registrar.server_id)
        # Five keep-alives answered, each within the 0.2 s timeout: still registered.
        yield within(enough, 10, self.reactor)
        self.assertIs(registrar.handlespace.get(H, pe.pe_id), entry)
        self.assertEqual(pe.home_server_id, registrar.server_id)
        # A new load through a re-registration.
        yield within(pe.update_policy(LeastUsedPolicy(77)), 10, self.reactor)
        self.assertEqual(registrar.handlespace.get(H, pe.pe_id).payload.policy, LeastUsedPolicy(77))
        self.assertEqual(registrar.core.stats["reregistrations"], 1)
        # Stop: deregistered at the registrar.
        yield within(pe.stopService(), 10, self.reactor)
        self.assertIsNone(registrar.handlespace.get(H, pe.pe_id))
        self.assertEqual(pe.last_deregistered, Deregistered(True))
        self.assertEqual(registrar.core.stats["deregistrations"], 1)

    @defer.inlineCallbacks
    def test_stop_closes_cleanly_with_every_message_acknowledged(self):
        """A planned stop: the deregistration response is ACKed (tcp mapping),
        TLS closes with close_notify both ways, nothing is logged above info."""
        from twisted.internet.error import ConnectionDone

        registrar = yield self.registrar()
        pe = self.make_pe(registrar)
        pe.startService()
        yield within(pe.registered(), 10, self.reactor)
        (server_side,) = registrar.channels
        seen = {}
        original = registrar.channel_closed

        def closed(channel, reason):
            seen["unacked"] = channel.mapping.unacked
            seen["reason"] = reason
            original(channel, reason)

        registrar.channel_closed = closed
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        yield within(pe.stopService(), 10, self.reactor)
        yield within(server_side.closed_deferred(), 10, self.reactor)
        self.assertEqual(pe.last_deregistered, Deregistered(True))
        self.assertIsInstance(seen["reason"].value, ConnectionDone)  # close_notify, then FIN
        self.assertEqual(seen["unacked"], 0)  # the DEREGISTRATION_RESPONSE was ACKed
        loud = [formatEvent(e) for e in events if e.get("log_level", LogLevel.info) >= LogLevel.warn]
        self.assertEqual(loud, [])

    @defer.inlineCallbacks
    def test_failover_to_a_second_registrar(self):
        first = yield self.registrar()
        second = yield self.registrar()
        pe = self.make_pe(first, second)
        pe.startService()
        yield within(pe.registered(), 10, self.reactor)
        home = first if first.handlespace.get(H, pe.pe_id) is not None else second
        other = second if home is first else first
        self.assertIsNone(other.handlespace.get(H, pe.pe_id))
        again = pe.next_registration()
        started = self.reactor.seconds()
        yield home.stopService()  # kill the home registrar
        event = yield within(again, 10, self.reactor)
        elapsed = self.reactor.seconds() - started
        self.assertTrue(event.failover)
        entry = other.handlespace.get(H, pe.pe_id)
        self.assertIsNotNone(entry)
        self.assertEqual(entry.home_server_id, other.server_id)
        self.assertLess(elapsed, 5.0)
        yield within(pe.stopService(), 10, self.reactor)
        self.assertIsNone(other.handlespace.get(H, pe.pe_id))

    @defer.inlineCallbacks
    def test_refused_registration_reported(self):
        registrar = yield self.registrar()
        # The registrar checks that the registered address is the channel's source.
        pe = PoolElementService(self.reactor, H, TcpTransport(7, IPv4Address("192.0.2.1")),
                                LeastUsedPolicy(1), **self.pe_options(registrar))
        self.services.append(pe)
        pe.startService()
        with self.assertRaises(RegistrationRefusedError):
            yield within(pe.registered(), 10, self.reactor)
        self.assertEqual(len(registrar.handlespace), 0)
