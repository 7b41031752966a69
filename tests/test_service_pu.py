"""The pool user's Twisted shell: deterministic tests with a Clock and fake
channels, then integration over real loopback TLS against RegistrarService
with PEs registered through ASAP."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import pytest
from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest

from rserpool.asap.pu import (
    NoUsablePoolElement, PuSettings, ResolutionRefused, ResolutionTimeout, UnknownPool,
)
from rserpool.asap.registrar import RegistrarSettings
from rserpool.security import tls
from rserpool.service.pu import PoolUser
from rserpool.wire import (
    AsapEndpointUnreachable, AsapHandleResolution, AsapHandleResolutionResponse,
    AsapRegistration, ErrorCause, OperationError, PriorityPolicy,
)
from rserpool.wire.codes import CAUSE_SECURITY, CAUSE_UNKNOWN_POOL_HANDLE
from tests.asaphelpers import AllowAll, connect_raw, make_pe, registrar_port, start_registrar
from tests.tlshelpers import make_test_pki

H = b"echo"


# --- deterministic shell tests ---------------------------------------------------------------


class FakeChannel:
    def __init__(self, name: str) -> None:
        self.name = name
        self.peer = name
        self.handler = None
        self.closed = False
        self.sent: list = []

    def send(self, message) -> None:
        assert not self.closed
        self.sent.append(message)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.handler.channel_closed(self, Failure(ConnectionDone()))

    def closed_deferred(self):
        return defer.succeed(None)

    def answer(self, message, now: float) -> None:
        self.handler.message_received(self, message, now)


class FakeHunt:
    """``hunt()`` callable: each call waits until the test hands a channel."""

    def __init__(self) -> None:
        self.calls: list[defer.Deferred] = []

    def __call__(self) -> defer.Deferred:
        d = defer.Deferred()
        self.calls.append(d)
        return d


def shell(**kw):
    clock = Clock()
    hunt = FakeHunt()
    pu = PoolUser(clock, hunt, settings=PuSettings(**kw), rng=random.Random(3))
    return clock, hunt, pu


def ok(pe_ids, policy=None):
    return AsapHandleResolutionResponse(H, tuple(make_pe(i) for i in pe_ids), policy)


def test_first_resolve_hunts_then_sends_and_answers():
    clock, hunt, pu = shell()
    d = pu.resolve(H)
    assert len(hunt.calls) == 1 and not d.called
    channel = FakeChannel("r1")
    hunt.calls[0].callback(channel)
    assert channel.handler is pu and pu.home is channel
    assert channel.sent == [AsapHandleResolution(H)]
    channel.answer(ok([1, 2]), clock.seconds())
    assert [pe.pe_id for pe in d.result] == [1, 2]
    # Cached: no new request, fired at once.
    again = pu.resolve(H)
    assert [pe.pe_id for pe in again.result] == [1, 2]
    assert channel.sent == [AsapHandleResolution(H)]


def test_t1_retransmission_parallel_hunt_and_new_home():
    clock, hunt, pu = shell(t1=15.0, max_request_retransmit=2)
    d = pu.resolve(H)
    first = FakeChannel("r1")
    hunt.calls[0].callback(first)
    clock.advance(15.0)
    assert first.sent == [AsapHandleResolution(H)] * 2
    assert len(hunt.calls) == 2  # 3.7.2: the hunt runs in parallel
    second = FakeChannel("r2")
    hunt.calls[1].callback(second)
    assert first.closed and pu.home is second
    assert second.sent == [AsapHandleResolution(H)]
    first.answer(ok([9]), clock.seconds())  # the old channel is no longer heard
    assert not d.called
    second.answer(ok([4]), clock.seconds())
    assert [pe.pe_id for pe in d.result] == [4]
    assert clock.getDelayedCalls() == []


def test_give_up_after_max_request_retransmit():
    clock, hunt, pu = shell(t1=2.0, max_request_retransmit=1)
    d = pu.resolve(H)
    channel = FakeChannel("r1")
    hunt.calls[0].callback(channel)
    clock.advance(2.0)
    clock.advance(2.0)
    failure = d.result
    assert isinstance(failure, Failure) and failure.check(ResolutionTimeout)
    d.addErrback(lambda _: None)
    assert len(channel.sent) == 2
    assert clock.getDelayedCalls() == []


def test_negative_answers_are_typed():
    clock, hunt, pu = shell()
    d1 = pu.resolve(H)
    channel = FakeChannel("r1")
    hunt.calls[0].callback(channel)
    channel.answer(AsapHandleResolutionResponse(
        H, error=OperationError((ErrorCause(CAUSE_UNKNOWN_POOL_HANDLE),))), 0.0)
    assert d1.result.check(UnknownPool)
    d1.addErrback(lambda _: None)
    d2 = pu.resolve(b"secret")
    channel.answer(AsapHandleResolutionResponse(
        b"secret", error=OperationError((ErrorCause(CAUSE_SECURITY),))), 0.0)
    assert d2.result.check(ResolutionRefused) and d2.result.value.cause == CAUSE_SECURITY
    d2.addErrback(lambda _: None)


def test_select_and_report_unreachable_through_the_shell():
    clock, hunt, pu = shell()
    d = pu.select(H)
    channel = FakeChannel("r1")
    hunt.calls[0].callback(channel)
    channel.answer(ok([1, 2, 3], PriorityPolicy(1)), 0.0)
    assert d.result.pe_id == 1  # all priorities equal (the helper's PEs are RR): list order
    assert pu.report_unreachable(H, 1)
    assert not pu.report_unreachable(H, 1)
    assert channel.sent[-1] == AsapEndpointUnreachable(H, 1)
    assert [m for m in channel.sent if type(m) is AsapEndpointUnreachable] == [
        AsapEndpointUnreachable(H, 1)]
    assert [pe.pe_id for pe in pu.cached(H)] == [2, 3]
    assert pu.invalidate(H, 2) and [pe.pe_id for pe in pu.cached(H)] == [3]
    pu.invalidate(H, 3)
    empty = pu.select(H)
    assert empty.result.check(NoUsablePoolElement)
    empty.addErrback(lambda _: None)  # consumed: a dropped failed Deferred is logged later
    pu.invalidate(H)
    assert pu.cached(H) is None


def test_lost_home_with_pending_request_hunts_again_and_resends():
    clock, hunt, pu = shell()
    d = pu.resolve(H)
    first = FakeChannel("r1")
    hunt.calls[0].callback(first)
    first.close()
    assert pu.home is None and len(hunt.calls) == 2
    second = FakeChannel("r2")
    hunt.calls[1].callback(second)
    second.answer(ok([5]), clock.seconds())
    assert [pe.pe_id for pe in d.result] == [5]


def test_stop_cancels_everything():
    clock, hunt, pu = shell()
    d = pu.resolve(H)
    c = pu.connect()
    pu.stop()
    assert d.result.check(defer.CancelledError)
    assert c.result.check(defer.CancelledError)
    for x in (d, c):
        x.addErrback(lambda _: None)
    assert clock.getDelayedCalls() == []
    later = pu.resolve(H)
    assert later.result.check(defer.CancelledError)
    later.addErrback(lambda _: None)


def test_cancelling_one_caller_keeps_the_shared_request():
    clock, hunt, pu = shell()
    d1 = pu.resolve(H)
    d2 = pu.resolve(H)
    d1.cancel()
    d1.addErrback(lambda _: None)
    channel = FakeChannel("r1")
    hunt.calls[0].callback(channel)
    channel.answer(ok([1]), 0.0)
    assert [pe.pe_id for pe in d2.result] == [1]


def test_bad_handle_fails_the_deferred():
    clock, hunt, pu = shell()
    d = pu.resolve("echo")  # type: ignore[arg-type]
    assert d.result.check(ValueError)
    d.addErrback(lambda _: None)


# --- integration over loopback TLS ---------------------------------------------------------


@pytest.mark.integration
class PoolUserOverTLS(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.pki = make_test_pki(Path(cls._tmp.name))

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    @defer.inlineCallbacks
    def setUp(self):
        self.registrar = yield start_registrar(
            reactor, self.pki, authorizer=AllowAll(),
            settings=RegistrarSettings(server_id=random.randrange(1, 2**32), max_resolution_items=0))
        self.port = registrar_port(self.registrar)
        self.received: list = []
        original = self.registrar.core.message_received

        def spy(session, message, now):
            self.received.append(message)
            return original(session, message, now)

        self.registrar.core.message_received = spy
        self.users: list[PoolUser] = []
        # The PE registers through ASAP with its client certificate.
        creator = tls.client_options("localhost", [self.pki.ca.cert], client_cert=self.pki.pe1.pair)
        self.pe = yield connect_raw(reactor, self.port, creator)
        self.pe.pe_ids = []
        self.pe.auto_ack_keepalives = True
        for pe_id in (0x11, 0x22, 0x33):
            reply = yield self.pe.request(AsapRegistration(H, make_pe(pe_id, port=7000 + pe_id)))
            self.assertFalse(reply.reject, reply)
            self.pe.pe_ids.append((H, pe_id))

    @defer.inlineCallbacks
    def tearDown(self):
        for pu in self.users:
            yield pu.stop()
        if self.pe.channel is not None and not self.pe.channel.closed:
            self.pe.channel.abort()
            yield self.pe.closed
        yield self.registrar.stopService()

    def user(self, *, roots=None, server_name="localhost", **settings) -> PoolUser:
        pu = PoolUser.connecting_to(
            reactor, [f"127.0.0.1:{self.port}"], roots or [self.pki.ca.cert],
            server_name=server_name, settings=PuSettings(**settings), t5_initial=0.5,
            attempt_timeout=2.0)
        self.users.append(pu)
        return pu

    def resolutions(self) -> int:
        return sum(1 for m in self.received if type(m) is AsapHandleResolution)

    @defer.inlineCallbacks
    def test_resolve_cached_then_stale(self):
        pu = self.user(stale_cache_value=3600.0)
        pes = yield pu.resolve(H)
        self.assertEqual(sorted(pe.pe_id for pe in pes), [0x11, 0x22, 0x33])
        self.assertEqual(self.resolutions(), 1)
        again = yield pu.resolve(H)
        self.assertEqual(sorted(pe.pe_id for pe in again), [0x11, 0x22, 0x33])
        self.assertEqual(self.resolutions(), 1)  # C4: served from the cache
        chosen = yield defer.gatherResults([pu.select(H) for _ in range(3)])
        self.assertEqual(sorted(pe.pe_id for pe in chosen), [0x11, 0x22, 0x33])  # RR
        self.assertEqual(self.resolutions(), 1)

        stale = self.user(stale_cache_value=0.0)
        yield stale.resolve(H)
        yield stale.resolve(H)
        self.assertEqual(self.resolutions(), 3)  # C2: each stale hit asks again

    @defer.inlineCallbacks
    def test_stop_closes_cleanly_with_the_last_answer_acknowledged(self):
        from twisted.internet.error import ConnectionDone
        from twisted.logger import LogLevel, formatEvent, globalLogPublisher

        pu = self.user()
        yield pu.resolve(H)
        (server_side,) = [c for c in self.registrar.channels if c.state is not None
                          and c.state.identity is None]
        seen = {}
        original = self.registrar.channel_closed

        def closed(channel, reason):
            if channel is server_side:
                seen["unacked"], seen["reason"] = channel.mapping.unacked, reason
            original(channel, reason)

        self.registrar.channel_closed = closed
        events: list = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        yield pu.stop()
        yield server_side.closed_deferred()
        self.assertIsInstance(seen["reason"].value, ConnectionDone)
        self.assertEqual(seen["unacked"], 0)  # the resolution answer was ACKed
        loud = [formatEvent(e) for e in events if e.get("log_level", LogLevel.info) >= LogLevel.warn]
        self.assertEqual(loud, [])

    @defer.inlineCallbacks
    def test_concurrent_resolutions_share_one_request(self):
        pu = self.user()
        results = yield defer.gatherResults([pu.resolve(H) for _ in range(10)])
        self.assertEqual({len(r) for r in results}, {3})
        self.assertEqual(self.resolutions(), 1)

    @defer.inlineCallbacks
    def test_unknown_pool(self):
        pu = self.user()
        with self.assertRaises(UnknownPool):
            yield pu.resolve(b"nope")

    @defer.inlineCallbacks
    def test_report_unreachable_reaches_the_registrar_once(self):
        pu = self.user()
        yield pu.resolve(H)
        self.assertTrue(pu.report_unreachable(H, 0x22))
        self.assertFalse(pu.report_unreachable(H, 0x22))
        self.assertNotIn(0x22, [pe.pe_id for pe in pu.cached(H)])
        # The channel is ordered: once this answer is back, the report was handled.
        yield pu.refresh(H)
        reports = [m for m in self.received if type(m) is AsapEndpointUnreachable]
        self.assertEqual(reports, [AsapEndpointUnreachable(H, 0x22)])
        entry = self.registrar.handlespace.get(H, 0x22)
        self.assertIsNotNone(entry)  # the PE answered the probe keep-alive
        self.assertEqual(len(entry.unreachable[1]), 1)  # the registrar counted one report
        # Re-resolved: a new failure is a new event.
        self.assertTrue(pu.report_unreachable(H, 0x22))

    @defer.inlineCallbacks
    def test_untrusted_registrar_is_refused(self):
        pu = self.user(roots=[self.pki.rogue_ca.cert], t1=0.5, max_request_retransmit=0)
        with self.assertRaises(ResolutionTimeout):
            yield pu.resolve(H)
        self.assertEqual(self.resolutions(), 0)
        self.assertEqual(len(self.registrar.channels), 1)  # only the PE's

    @defer.inlineCallbacks
    def test_wrong_server_name_is_refused(self):
        pu = self.user(server_name="other.rserpool.test", t1=0.5, max_request_retransmit=0)
        with self.assertRaises(ResolutionTimeout):
            yield pu.resolve(H)
        self.assertEqual(self.resolutions(), 0)
        self.assertEqual(len(self.registrar.channels), 1)

    @defer.inlineCallbacks
    def test_client_certificate_is_optional_and_used_when_given(self):
        pu = PoolUser.connecting_to(reactor, [f"127.0.0.1:{self.port}"], [self.pki.ca.cert],
                                    server_name="localhost", client_cert=self.pki.pu1.pair)
        self.users.append(pu)
        pes = yield pu.resolve(H)
        self.assertEqual(len(pes), 3)
        identities = {s.identity for s in (c.state for c in self.registrar.channels)}
        self.assertIn("pu1", identities)

    @defer.inlineCallbacks
    def test_fails_over_to_another_registrar_when_home_dies(self):
        second = yield start_registrar(reactor, self.pki, authorizer=AllowAll())
        try:
            seen: list = []
            original = second.core.message_received
            second.core.message_received = lambda s, m, now: seen.append(m) or original(s, m, now)
            pu = PoolUser.connecting_to(
                reactor, [f"127.0.0.1:{self.port}", f"127.0.0.1:{registrar_port(second)}"],
                [self.pki.ca.cert], server_name="localhost", settings=PuSettings(stale_cache_value=0.0))
            self.users.append(pu)
            pes = yield pu.resolve(H)
            self.assertEqual(len(pes), 3)
            self.assertEqual(seen, [])
            closed = pu.home.closed_deferred()
            yield self.registrar.stopService()
            yield closed
            self.assertIsNone(pu.home)
            # The PE was registered only at the first registrar: the second one
            # answers, so the hunt found it.
            with self.assertRaises(UnknownPool):
                yield pu.resolve(H)
            self.assertEqual(seen, [AsapHandleResolution(H)])
        finally:
            yield second.stopService()
