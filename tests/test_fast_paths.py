"""The registrar's fast paths agree with the generic code they shortcut.

Each fast path (TCP-mapping DATA delivery, pre-encoded resolution answers,
the registration decoder, the handlespace's re-registration update) must
accept and reject exactly what the generic path does and produce equal
values and bytes.  Hypothesis draws valid and invalid inputs.
"""

from __future__ import annotations

import math
import random
import struct
from ipaddress import IPv4Address

import pytest
from hypothesis import example, given, settings, strategies as st
from twisted.internet.address import IPv4Address as TCPAddress
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from rserpool.asap.registrar import RegistrarCore, RegistrarSettings, policy_settings
from rserpool.gate import DOOR_ASAP, AskAuthorizer, GatePolicy
from rserpool.identity import MECH_CERTIFICATE, Identity
from rserpool.outputs import Send
from rserpool.testing import AllowAll
from rserpool.handlespace import ROUND_ROBIN, Handlespace, HandlespaceError, HandlespaceLimits, PolicySettings
from rserpool.handlespace import timers
from rserpool.handlespace.timers import DeadlineQueue
from rserpool.security.ratelimit import RateLimit
from rserpool.service.channel import Channel
from rserpool.service.registrar import RegistrarService
from rserpool.wire import (
    AsapDeregistration, AsapHandleResolution, AsapHandleResolutionResponse, AsapRegistration,
    AsapRegistrationResponse, IPv6Address, Limits, PoolElement, TcpTransport, UdpTransport, WireError,
    decode_message,
)
from rserpool.wire.asap import encode_registration_response, encode_resolution_response
from rserpool.wire.codes import ASAP_HANDLE_RESOLUTION, PPID_ASAP
from rserpool.wire.policy import (
    LeastUsedDegradationPolicy, LeastUsedPolicy, OpaquePolicy, PriorityPolicy, RoundRobinPolicy,
    WeightedRandomPolicy,
)
from rserpool.wire.tcpmap import (
    INIT_OMIT_PPID, INIT_OMIT_STREAM, INIT_OMIT_TSN, DataChunk, MessageReceived, TcpMapConnection,
    TcpMapError, data_header_size, decode_chunk, encode_chunk,
)
from rserpool.wire.messages import expect
from rserpool.wire.tlv import new_ctx, walk

SETTINGS = settings(max_examples=150, deadline=None)


def _generic_delivery(chunks: list[DataChunk], omit: int) -> list[tuple]:
    """What the TCP mapping must deliver, computed from decode_chunk's DataChunks."""
    out, tsn, seqs = [], 0, {}
    for chunk in chunks:
        decoded = decode_chunk(encode_chunk(chunk), omit)
        if decoded.tsn is not None and decoded.tsn != tsn:
            return out + [("error",)]
        stream = decoded.stream_id or 0
        if decoded.unordered:
            seq = 0
        else:
            seq = seqs.get(stream, 0)
            if decoded.stream_seq is not None and decoded.stream_seq != seq:
                return out + [("error",)]
            seqs[stream] = (seq + 1) & 0xFFFF
        out.append((decoded.ppid or 0, decoded.payload, tsn, stream, seq, decoded.unordered))
        tsn += 1
    return out


@st.composite
def data_streams(draw):
    omit = draw(st.integers(0, 7))
    chunks = []
    for index in range(draw(st.integers(1, 6))):
        in_order = draw(st.booleans())
        chunks.append(DataChunk(
            draw(st.binary(max_size=12)),
            None if omit & INIT_OMIT_PPID else draw(st.sampled_from([0, 11, 12, 0xFFFFFFFF])),
            None if omit & INIT_OMIT_TSN else (index if in_order else draw(st.integers(0, 8))),
            None if omit & INIT_OMIT_STREAM else draw(st.integers(0, 2)),
            None if omit & INIT_OMIT_STREAM else draw(st.integers(0, 3)),
            draw(st.booleans()),
        ))
    return omit, chunks


@SETTINGS
@given(data_streams())
def test_data_delivery_matches_the_generic_chunk_decoder(stream):
    omit, chunks = stream
    connection = TcpMapConnection()
    connection.initiate()
    wire = bytes([1, omit, 0, 4]) + b"".join(encode_chunk(c) for c in chunks)
    expected = _generic_delivery(chunks, omit)
    try:
        events = connection.receive_data(wire)
    except TcpMapError:
        assert expected[-1] == ("error",)
        return
    assert expected[-1:] != [("error",)]
    delivered = [e for e in events if type(e) is MessageReceived]
    assert [(m.ppid, m.payload, m.tsn, m.stream_id, m.stream_seq, m.unordered) for m in delivered] == expected
    assert delivered == [MessageReceived(*values) for values in expected]
    ack = b"\x03\x00\x00\x04" if omit & INIT_OMIT_TSN else None
    acks = connection.data_to_send()
    if ack is not None:
        assert acks == ack * len(chunks)
    else:
        assert acks == b"".join(struct.pack("!BBHI", 3, 0, 8, i) for i in range(len(chunks)))


# -- resolution answers from the PEs' cached encodings -------------------------------------


U32 = st.integers(0, 0xFFFFFFFF)
POLICIES = {
    "rr": st.just(RoundRobinPolicy()),
    "lu": st.builds(LeastUsedPolicy, U32),
    "lud": st.builds(LeastUsedDegradationPolicy, U32, U32),
    "prio": st.builds(PriorityPolicy, U32),
    "wrand": st.builds(WeightedRandomPolicy, st.integers(1, 0xFFFFFFFF)),
    "private": st.builds(OpaquePolicy, st.just(0x80000007), st.binary(max_size=9)),
}


def _pe(pe_id: int, policy, life: int = 30) -> PoolElement:
    return PoolElement(pe_id, 0, life, TcpTransport(1000 + pe_id % 50000, IPv4Address("127.0.0.1")), policy)


def _core(items: int) -> RegistrarCore:
    settings = RegistrarSettings(server_id=0x5EED, max_resolution_items=items)
    return RegistrarCore(settings, Handlespace(HandlespaceLimits(), rng=random.Random(1)), rng=random.Random(2))


def _channel_state(core, channel=None):
    """The channel state of a TLS channel from 127.0.0.1 whose certificate names "pe"."""
    admission = core.gate.open_channel(DOOR_ASAP, "127.0.0.1", True, 0.0, channel=channel)
    core.gate.identified(admission, Identity("pe", MECH_CERTIFICATE), 0.0)
    return core.open_channel(channel if channel is not None else object(), admission)


def _register(core, state, pe, now=0.0):
    out = core.message_received(state, AsapRegistration(b"pool", pe), now)
    for output in out:
        if type(output) is AskAuthorizer:
            core.authorization_done(output, True, now)


@SETTINGS
@given(st.sampled_from(sorted(POLICIES)), st.data(), st.integers(0, 4))
def test_resolution_answer_equals_the_generic_encoding(kind, data, items):
    core = _core(items)
    state = _channel_state(core)
    count = data.draw(st.integers(1, 6))
    for pe_id in range(1, count + 1):
        _register(core, state, _pe(pe_id, data.draw(POLICIES[kind])))
    for step in range(data.draw(st.integers(1, 5))):
        if data.draw(st.booleans()):  # a re-registration replaces the payload (and its cache)
            _register(core, state, _pe(data.draw(st.integers(1, count)), data.draw(POLICIES[kind]), 40),
                      float(step))
        (send,) = core.message_received(state, AsapHandleResolution(b"pool"), float(step))
        assert type(send) is Send and send.data is not None
        message = send.message
        entries = [core.handlespace.get(b"pool", pe.pe_id) for pe in message.pool_elements]
        assert [e.payload for e in entries] == list(message.pool_elements)
        generic = AsapHandleResolutionResponse(b"pool", tuple(e.payload for e in entries), message.policy)
        assert message == generic and type(message) is type(generic)
        assert send.data == generic.encode()
        assert decode_message(send.data, PPID_ASAP) == generic


@SETTINGS
@given(st.binary(min_size=1, max_size=70), st.sampled_from(sorted(POLICIES)), st.data())
def test_encode_resolution_response_equals_the_message_encoding(handle, kind, data):
    pes = tuple(_pe(i, data.draw(POLICIES[kind])) for i in range(data.draw(st.integers(0, 4))))
    policy = data.draw(st.none() | POLICIES[kind])
    message = AsapHandleResolutionResponse(handle, pes, policy)
    encoded = encode_resolution_response(handle, None if policy is None else policy.encode(),
                                         [pe.encode() for pe in pes])
    assert encoded == message.encode()


def test_a_foreign_payload_takes_the_generic_path():
    core = _core(0)
    state = _channel_state(core)
    _register(core, state, _pe(1, RoundRobinPolicy()))
    core.handlespace.get(b"pool", 1).payload = "not a PoolElement"
    try:
        core.message_received(state, AsapHandleResolution(b"pool"), 0.0)
    except ValueError as exc:  # the checking constructor refuses it, as before
        assert "not a PoolElement" in str(exc)
    else:
        raise AssertionError("a foreign payload must not be encoded")


# -- the registrar's timer follows only deadlines set earlier than the armed one ---------------


class _Entry:
    __slots__ = ("token",)

    def __init__(self) -> None:
        self.token = None


def test_take_low_reports_the_earliest_deadline_set_since_the_last_call():
    queue: DeadlineQueue = DeadlineQueue("token")
    a, b = _Entry(), _Entry()
    assert queue.take_low() is None
    queue.schedule(a, 5.0)
    queue.schedule(b, 3.0)
    queue.schedule(a, 9.0)
    assert queue.take_low() == 3.0 and queue.take_low() is None
    queue.cancel(b)
    assert queue.take_low() is None and queue.next_deadline() == 9.0


# -- lazy postponement: a lazy DeadlineQueue answers as a plain one ------------------------------


class _LazyEntry:
    __slots__ = ("token", "queued", "due")

    def __init__(self) -> None:
        self.token = self.queued = self.due = None


def _lazy_queue() -> DeadlineQueue:
    return DeadlineQueue("token", queued_slot="queued", wanted_slot="due")


class _Shell:
    """The registrar service's timer logic (``_arm_timer``/``_on_timer``) over one queue."""

    def __init__(self, queue: DeadlineQueue) -> None:
        self.queue = queue
        self.timer_at = None

    def fire_if_due(self, now: float) -> None:
        if self.timer_at is not None and self.timer_at <= now:
            self.timer_at = None

    def arm(self, low: float | None) -> None:
        if self.timer_at is not None:
            if low is not None and low < self.timer_at:
                self.timer_at = low
        else:
            self.timer_at = self.queue.next_deadline()


_QUEUE_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("schedule"), st.integers(0, 5), st.integers(0, 30)),
        st.tuples(st.just("schedule"), st.integers(0, 2), st.integers(0, 30)),
        st.tuples(st.just("later"), st.integers(0, 5), st.integers(0, 5)),  # as a re-registration does
        st.tuples(st.just("cancel"), st.integers(0, 5), st.just(0)),
        st.tuples(st.just("pop"), st.integers(0, 30), st.none() | st.integers(0, 3)),
        st.tuples(st.just("next"), st.just(0), st.just(0)),
    ),
    min_size=8,
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(_QUEUE_STEPS, st.sampled_from([0, 1, 4, timers.COMPACT_SLACK]))
@example([("schedule", 1, 5), ("schedule", 1, 6), ("schedule", 0, 1), ("schedule", 0, 0), ("cancel", 0, 0),
          ("next", 0, 0), ("pop", 5, None), ("pop", 6, None)], 0)  # compaction of a postponed entry
def test_a_lazy_deadline_queue_answers_as_a_plain_one(steps, slack):
    saved = timers.COMPACT_SLACK
    timers.COMPACT_SLACK = slack  # small values exercise the compaction
    try:
        lazy, plain = _lazy_queue(), DeadlineQueue("token")
        lazy_entries = [_LazyEntry() for _ in range(6)]
        plain_entries = [_Entry() for _ in range(6)]
        index = {id(e): i for entries in (lazy_entries, plain_entries) for i, e in enumerate(entries)}
        model: dict[int, tuple[float, int]] = {}  # entry -> (deadline, number of the schedule call)
        calls = 0
        shell = _Shell(lazy)
        heap_size = 0
        for action, a, b in steps:
            scheduled: list[float] = []
            if action in ("schedule", "later"):
                deadline = float(b) if action == "schedule" or a not in model else model[a][0] + b
                lazy.schedule(lazy_entries[a], deadline)
                plain.schedule(plain_entries[a], deadline)
                model[a] = (deadline, calls)
                calls += 1
                scheduled.append(deadline)
            elif action == "cancel":
                lazy.cancel(lazy_entries[a])
                plain.cancel(plain_entries[a])
                model.pop(a, None)
            elif action == "pop":
                now = float(a)
                shell.fire_if_due(now)
                expected = [i for _, _, i in sorted((d, n, i) for i, (d, n) in model.items() if d <= now)]
                if b is not None:
                    expected = expected[:b]
                for i in expected:
                    del model[i]
                assert [index[id(e)] for e in lazy.pop_due(now, b)] == expected
                assert [index[id(e)] for e in plain.pop_due(now, b)] == expected
            earliest = min((d for d, _ in model.values()), default=None)
            if action == "next":  # (not at every step: it moves postponed items)
                assert lazy.next_deadline() == plain.next_deadline() == earliest
            assert len(lazy) == len(plain) == len(model)
            for i, entry in enumerate(lazy_entries):
                assert (entry.token is None) == (i not in model)
                if i in model:
                    assert entry.due == model[i][0]
            # The heap grows only within the compaction bound.
            assert lazy.heap_size() <= max(heap_size, 2 * len(lazy) + slack + 1)
            heap_size = lazy.heap_size()
            # take_low: the lazy queue leaves out only deadlines it postponed to,
            # and a timer armed the service's way still covers every deadline.
            low, plain_low = lazy.take_low(), plain.take_low()
            assert plain_low == min(scheduled, default=None)
            assert low is None or low == plain_low
            shell.arm(low)
            if earliest is not None:
                assert shell.timer_at is not None and shell.timer_at <= earliest
        assert lazy.next_deadline() == plain.next_deadline() == min((d for d, _ in model.values()), default=None)
        expected = [i for _, _, i in sorted((d, n, i) for i, (d, n) in model.items())]
        assert [index[id(e)] for e in lazy.pop_due(float("inf"))] == expected
        assert [index[id(e)] for e in plain.pop_due(float("inf"))] == expected
        assert len(lazy) == 0 and lazy.next_deadline() is None and lazy.heap_size() == 0
    finally:
        timers.COMPACT_SLACK = saved


def test_a_postponed_entry_is_due_at_its_new_deadline_only():
    queue = _lazy_queue()
    a = _LazyEntry()
    queue.schedule(a, 5.0)
    assert queue.take_low() == 5.0
    queue.schedule(a, 9.0)
    assert queue.heap_size() == 1 and queue.take_low() is None and a.due == 9.0
    assert queue.pop_due(5.0) == [] and queue.pop_due(8.5) == [] and len(queue) == 1
    assert queue.next_deadline() == 9.0
    assert queue.pop_due(9.0) == [a] and len(queue) == 0 and a.token is None
    assert queue.next_deadline() is None and queue.heap_size() == 0
    # Between the queued item's deadline and the wanted one: still nothing pushed.
    queue.schedule(a, 5.0)
    queue.schedule(a, 9.0)
    queue.schedule(a, 7.0)
    assert queue.heap_size() == 1 and queue.take_low() == 5.0
    assert queue.pop_due(6.0) == [] and queue.next_deadline() == 7.0 and queue.pop_due(7.0) == [a]


def test_an_earlier_deadline_takes_effect_at_once():
    queue = _lazy_queue()
    a, b = _LazyEntry(), _LazyEntry()
    queue.schedule(a, 9.0)
    queue.schedule(b, 7.0)
    queue.take_low()
    queue.schedule(a, 4.0)
    assert queue.take_low() == 4.0 and queue.next_deadline() == 4.0
    assert queue.pop_due(4.0) == [a]
    assert queue.pop_due(9.0) == [b] and queue.heap_size() == 0  # a's old item was stale


def test_equal_deadlines_are_due_in_the_order_they_were_set():
    queue, plain = _lazy_queue(), DeadlineQueue("token")
    a, b, pa, pb = _LazyEntry(), _LazyEntry(), _Entry(), _Entry()
    for q, x, y in ((queue, a, b), (plain, pa, pb)):
        q.schedule(x, 3.0)
        q.schedule(y, 5.0)
        q.schedule(x, 5.0)  # lazily for ``queue``: set after y's
    assert queue.pop_due(5.0, 1) == [b] and plain.pop_due(5.0, 1) == [pb]
    assert queue.pop_due(5.0) == [a] and plain.pop_due(5.0) == [pa]


def test_re_registrations_push_nothing_onto_the_handlespace_queues():
    space = Handlespace(HandlespaceLimits(), random.Random(1))
    register = dict(pool_handle=b"pool", pe_id=1, settings=PolicySettings(ROUND_ROBIN), transport_type=0x5,
                    transport_use=0, registration_life=10, home_server_id=1, identity="pe")
    entry = space.register(0.0, **register).entry
    space.schedule_entry_keepalive(entry, 3.0)
    for step in range(1, 50):
        space.register(float(step), **register)
        space.schedule_entry_keepalive(entry, step + 3.0)
    assert space._expiry.heap_size() == 1 and space._keepalives.heap_size() == 1
    assert entry.expires_at == 59.0 and entry.keepalive_due == 52.0
    assert space.expire(58.0) == [] and space.due_keepalives(51.0) == []
    assert space.next_deadline() == 52.0
    assert space.due_keepalives(52.0) == [entry] and entry.keepalive_due is None
    assert space.expire(59.0) == [entry] and len(space) == 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["register", "deregister", "wait"]), st.integers(1, 4),
                          st.integers(0, 40), st.floats(0.0, 30.0)), max_size=25))
@example([("register", 1, 1, 0.0), ("wait", 1, 0, 1 / 3), ("register", 1, 13, 0.0), ("wait", 1, 0, 4.022459854971549)])
def test_no_deadline_is_missed(steps):
    clock = Clock()
    big = RateLimit(rate=1e9, burst=1e9)
    settings_ = RegistrarSettings(server_id=7, keepalive_interval=20.0, keepalive_timeout=3.0)
    service = RegistrarService(settings_, reactor=clock, listen=(), tls_options=object(),
                               authorizer=AllowAll(), rng=random.Random(3),
                               gate_policy=GatePolicy(registration_rate=big, registration_rate_per_address=big))
    service.running = 1
    channel = Channel(service, clock, service.channel_settings, tls=True)
    channel.makeConnection(StringTransport(peerAddress=TCPAddress("TCP", "127.0.0.1", 4000)))
    channel.state = _channel_state(service.core, channel)
    sender = TcpMapConnection()
    channel.dataReceived(sender.initiate())
    for action, pe_id, life, wait in steps:
        if action == "register":
            message = AsapRegistration(b"pool", _pe(pe_id, RoundRobinPolicy(), life))
        elif action == "deregister":
            message = AsapDeregistration(b"pool", pe_id)
        else:
            clock.advance(wait)
            message = None
        if message is not None:
            channel.dataReceived(sender.send_message(PPID_ASAP, message.encode()))
        # Whatever is due has been run: the next deadline lies ahead, and a
        # timer is armed no later than it.
        deadline = service.core.next_deadline()
        assert deadline is None or deadline > clock.seconds() or (message is not None and deadline == clock.seconds())
        if deadline is not None:
            assert service._timer is not None and service._timer.active()
            # (``now + (deadline - now)`` may round to an ulp or so past the
            # deadline: the deadline is then due when the timer fires, as it must be.)
            assert service._timer.getTime() <= deadline + 4 * math.ulp(deadline)


# -- registration: trusted values and the pre-encoded acceptance -----------------------------


def _generic_policy_settings(policy) -> PolicySettings:
    if type(policy) is OpaquePolicy:
        return PolicySettings(policy.policy_type, opaque=policy.data)
    return PolicySettings(policy.POLICY_TYPE, weight=getattr(policy, "weight", 0),
                          priority=getattr(policy, "priority", 0), load=getattr(policy, "load", 0),
                          load_degradation=getattr(policy, "load_degradation", 0))


@SETTINGS
@given(st.one_of(*POLICIES.values()))
def test_policy_settings_equal_the_generic_mapping(policy):
    assert policy_settings(policy) == _generic_policy_settings(policy)


def test_least_used_settings_are_shared_by_load_and_bounded():
    from rserpool.asap import registrar as core_module

    first = policy_settings(LeastUsedPolicy(77))
    assert policy_settings(LeastUsedPolicy(77)) is first == _generic_policy_settings(LeastUsedPolicy(77))
    for load in range(3000):
        assert policy_settings(LeastUsedPolicy(load)).load == load
    assert len(core_module._LEAST_USED_SETTINGS) <= 1024


@SETTINGS
@given(st.binary(min_size=1, max_size=300), U32)
def test_encode_registration_response_equals_the_message_encoding(handle, pe_id):
    assert encode_registration_response(handle, pe_id) == AsapRegistrationResponse(handle, pe_id).encode()


@SETTINGS
@given(st.sampled_from(sorted(POLICIES)), st.data())
def test_registration_answers_and_stored_pes_equal_the_generic_ones(kind, data):
    core = _core(3)
    state = _channel_state(core)
    for step in range(data.draw(st.integers(1, 6))):
        pe = _pe(data.draw(st.integers(1, 3)), data.draw(POLICIES[kind]), data.draw(st.integers(-1, 100)))
        out = core.message_received(state, AsapRegistration(b"pool", pe), float(step))
        for output in out:
            if type(output) is AskAuthorizer:
                out = core.authorization_done(output, True, float(step))
        (send,) = [o for o in out if type(o) is Send]
        assert send.message == AsapRegistrationResponse(b"pool", pe.pe_id)
        assert send.data == send.message.encode()
        entry = core.handlespace.get(b"pool", pe.pe_id)
        assert entry.payload == PoolElement(pe.pe_id, 0x5EED, pe.registration_life, pe.user_transport, pe.policy)
        assert entry.settings == _generic_policy_settings(pe.policy)
        assert entry.keepalive_due is not None and entry.unreachable is None


def _answered(core, state, message, now):
    out = core.message_received(state, message, now)
    for output in list(out):
        if type(output) is AskAuthorizer:
            out = core.authorization_done(output, True, now)
    return [o for o in out if type(o) is Send]


@SETTINGS
@given(st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=3, unique=True),
       st.lists(st.integers(1, 0xFFFFFFFF), min_size=1, max_size=3, unique=True),  # PE id 0 is refused
       st.lists(st.tuples(st.sampled_from(["register", "register", "deregister"]), st.integers(0, 2),
                          st.integers(0, 2), st.integers(-1, 100)), min_size=1, max_size=20))
def test_the_kept_registration_answer_equals_the_generic_one(handles, pe_ids, steps):
    core = _core(3)
    state = _channel_state(core)
    answered = {}  # (handle, PE id) -> (entry, the message of its last answer)
    for now, (action, h, p, life) in enumerate(steps):
        handle, pe_id = handles[h % len(handles)], pe_ids[p % len(pe_ids)]
        if action == "deregister":
            _answered(core, state, AsapDeregistration(handle, pe_id), float(now))
            assert core.handlespace.get(handle, pe_id) is None
            continue
        (send,) = _answered(core, state, AsapRegistration(handle, _pe(pe_id, RoundRobinPolicy(), life)), float(now))
        generic = AsapRegistrationResponse(handle, pe_id)
        assert send.message == generic and type(send.message) is type(generic)
        assert send.data == generic.encode() and decode_message(send.data, PPID_ASAP) == generic
        entry = core.handlespace.get(handle, pe_id)
        assert entry.reply_cache == (send.message, send.data)
        previous = answered.get((handle, pe_id))
        if previous is not None and previous[0] is entry:
            assert send.message is previous[1]  # kept, not made again
        answered[(handle, pe_id)] = (entry, send.message)


def test_the_address_check_compares_the_text_of_each_address_object():
    core = _core(3)
    state = _channel_state(core)
    assert state.admission.address_text(IPv4Address("127.0.0.1")) == "127.0.0.1"
    other = IPv4Address("127.0.0.2")
    assert state.admission.address_text(other) == "127.0.0.2"
    assert state.admission.address_text(IPv6Address("::1")) == "::1"
    for address, accepted in ((IPv4Address("127.0.0.1"), True), (other, False), (other, False),
                              (IPv4Address("127.0.0.1"), True)):
        pe = PoolElement(9, 0, 30, TcpTransport(80, address), RoundRobinPolicy())
        out = core.message_received(state, AsapRegistration(b"pool", pe), 0.0)
        refused = [o for o in out if type(o) is Send and o.message.reject]
        assert bool(refused) is not accepted


# -- the handle resolution decoder's fast path ---------------------------------------------


def _outcome(decode, data: bytes, length: int, limits: Limits):
    ctx = new_ctx(limits)
    try:
        value = decode(data, data[1], length, ctx)
    except WireError as exc:
        return ("error", exc.cause, str(exc), exc.report)
    except Exception as exc:  # decode_message maps these (short data) to WireError
        return ("raised", type(exc), str(exc))
    return ("ok", value, value.subscribe, ctx.count, ctx.unrecognized)


@st.composite
def resolution_bodies(draw):
    if draw(st.booleans()):
        body = draw(st.binary(max_size=24))
    else:
        handle = draw(st.binary(max_size=12))
        declared = draw(st.sampled_from([len(handle) + 4, len(handle) + 4, 0, 3, 4, len(handle) + 5, 300]))
        body = struct.pack("!HH", draw(st.sampled_from([9, 9, 9, 8, 0xC009])), declared) + handle
        body += b"\0" * draw(st.integers(0, 3)) + draw(st.sampled_from([b"", b"", b"\xc0\x09\x00\x05x"]))
    return body


@settings(max_examples=300, deadline=None)
@given(resolution_bodies(), st.integers(0, 3), st.integers(0, 255),
       st.sampled_from([Limits(), Limits(max_pool_handle=3), Limits(max_parameters=1), Limits(max_depth=1)]))
def test_resolution_decoder_fast_path_equals_the_tlv_walk(body, cut, flags, limits):
    data = bytes([ASAP_HANDLE_RESOLUTION, flags]) + struct.pack("!H", 4 + len(body)) + body
    length = max(4, len(data) - cut)  # decode_message allows up to 3 bytes of final padding
    data = data[:2] + struct.pack("!H", length) + data[4:]
    fast = _outcome(AsapHandleResolution._decode, data, length, limits)
    generic = _outcome(AsapHandleResolution._decode_walk, data, length, limits)
    assert fast == generic
    if fast[0] == "ok":
        assert decode_message(data, PPID_ASAP, limits) == fast[1]


# -- the handlespace's re-registration fast path -----------------------------------------------


class _Handle(bytes):
    """A bytes subclass: register() then always takes its checking path."""


def _state(space: Handlespace, handles) -> list:
    out = [len(space), space.checksum(1), space.checksum(2), space.next_deadline(), space.identity_count("a"),
           space.identity_count("b")]
    for handle in handles:
        try:
            members = space.pool_members(handle)
        except HandlespaceError:
            out.append(None)
            continue
        out.append([(e.pe_id, e.settings, e.transport_type, e.transport_use, e.registration_life,
                     e.home_server_id, e.identity, e.payload, e.expires_at, e.unreachable) for e in members])
        out.append([e.pe_id for e in space.resolve(handle)])
    return out


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([HandlespaceLimits(), HandlespaceLimits(max_registration_life=50, max_pes_per_identity=3)]),
       st.lists(st.tuples(
           st.sampled_from([b"p", b"p", b"q"]), st.integers(1, 3),
           st.sampled_from([0x40000001] * 6 + [0x00000001, 0x40000000]), st.integers(0, 3),
           st.sampled_from([5] * 6 + [6]), st.sampled_from([0] * 6 + [1, 2]),
           st.sampled_from([-1, 0, 30, 30, 30, 60, 0x7FFFFFFF, -5]), st.sampled_from([1] * 6 + [2, -1, 2**32]),
           st.sampled_from([None, "a", "a", "a", "b"]), st.booleans()), max_size=30))
def test_reregistration_fast_path_equals_the_checking_path(limits, steps):
    fast = Handlespace(limits, rng=random.Random(5))
    slow = Handlespace(limits, rng=random.Random(5))
    for now, (handle, pe_id, ptype, load, ttype, use, life, home, identity, report) in enumerate(steps):
        settings_ = PolicySettings(ptype, load=load)
        results = []
        for space, key in ((fast, handle), (slow, _Handle(handle))):
            if report:
                space.report_unreachable(key, pe_id, "x", float(now))
            try:
                done = space.register(float(now), pool_handle=key, pe_id=pe_id, settings=settings_,
                                      transport_type=ttype, transport_use=use, registration_life=life,
                                      home_server_id=home, identity=identity, payload=("pe", pe_id, now))
            except HandlespaceError as exc:
                results.append(("refused", exc.cause, exc.detail))
            else:
                results.append((done.entry.pe_id, done.created, done.previous_owner))
        assert results[0] == results[1]
        assert _state(fast, (b"p", b"q")) == _state(slow, (b"p", b"q"))


@pytest.mark.parametrize("life", [-1, 0, 49, 50, 51, 0x7FFFFFFF])
def test_reregistration_lives_are_bounded_alike(life):
    limits = HandlespaceLimits(max_registration_life=50)
    lives = []
    for key in (b"p", _Handle(b"p")):
        space = Handlespace(limits, rng=random.Random(5))
        for now in (0.0, 1.0):  # a registration, then a re-registration
            entry = space.register(now, pool_handle=key, pe_id=1, settings=PolicySettings(0x40000001),
                                   transport_type=5, transport_use=0, registration_life=life,
                                   home_server_id=1, identity="a").entry
        lives.append((entry.registration_life, entry.expires_at))
    expected = 50 if life == -1 or life > 50 else life
    assert lives == [(expected, 1.0 + expected)] * 2


def test_a_repeated_answer_is_reused_only_for_equal_values():
    core = _core(2)
    state = _channel_state(core)
    for handle in (b"pool", b"other"):
        for pe_id in (1, 2, 3):
            out = core.message_received(state, AsapRegistration(handle, _pe(pe_id, LeastUsedPolicy(pe_id))), 0.0)
            for output in out:
                if type(output) is AskAuthorizer:
                    core.authorization_done(output, True, 0.0)
    seen = []
    for step, (handle, load) in enumerate([(b"pool", None), (b"pool", None), (b"other", None), (b"pool", 9),
                                           (b"pool", None), (b"other", 0)]):
        if load is not None:
            _register(core, state, _pe(1, LeastUsedPolicy(load)), float(step))
            if handle == b"other":
                core.message_received(state, AsapRegistration(b"other", _pe(1, LeastUsedPolicy(load))), 0.0)
        (send,) = core.message_received(state, AsapHandleResolution(handle), float(step))
        entries = [core.handlespace.get(handle, pe.pe_id) for pe in send.message.pool_elements]
        generic = AsapHandleResolutionResponse(handle, tuple(e.payload for e in entries), LeastUsedPolicy(
            entries[0].payload.policy.load))
        assert send.message == generic and send.data == generic.encode()
        seen.append([pe.pe_id for pe in send.message.pool_elements])
    assert seen == [[1, 2], [1, 2], [1, 2], [2, 3], [2, 3], [1, 2]]


# -- the registration decoder's fastest path (TCP on IPv4, Least-Used) ------------------------

def _walk_registration(data: bytes, flags: int, length: int, ctx) -> AsapRegistration:
    subs = walk(data, 4, length, 1, ctx)
    handle, pe = expect(subs, ((0x9, "1"), (0xA, "1")), data, length, AsapRegistration.name)
    return AsapRegistration._make(handle, pe)


def _registration_outcome(decode, data: bytes, length: int, limits: Limits):
    ctx = new_ctx(limits)
    try:
        value = decode(data, data[1], length, ctx)
    except WireError as exc:
        return ("error", exc.cause, str(exc), exc.report)
    except Exception as exc:  # decode_message maps these to WireError
        return ("raised", type(exc), str(exc))
    return ("ok", value, ctx.count, ctx.unrecognized)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=12), U32, st.integers(-1, 0x7FFFFFFF), st.integers(0, 0xFFFF),
       st.sampled_from(["tcp4", "tcp4", "tcp4", "tcp6", "udp4", "tcp4-use"]),
       st.sampled_from(["lu", "lu", "lu", "rr", "lud"]),
       st.lists(st.tuples(st.integers(1, 80), st.integers(0, 255)), max_size=2), st.integers(0, 3),
       st.sampled_from([Limits(), Limits(max_depth=2), Limits(max_depth=3), Limits(max_parameters=5),
                        Limits(max_parameters=4), Limits(max_pool_handle=4)]))
def test_registration_decoder_equals_the_tlv_walk(handle, pe_id, life, port, transport, policy, flips, cut,
                                                   limits):
    address = IPv6Address("::1") if transport == "tcp6" else IPv4Address("127.0.0.1")
    user = (UdpTransport(port, address) if transport == "udp4"
            else TcpTransport(port, address, 1 if transport == "tcp4-use" else 0))
    pol = {"lu": LeastUsedPolicy(pe_id), "rr": RoundRobinPolicy(), "lud": LeastUsedDegradationPolicy(1, 2)}[policy]
    data = bytearray(AsapRegistration(handle, PoolElement(pe_id, 0, life, user, pol)).encode())
    for position, value in flips:  # damage some bytes (length fields included)
        if position < len(data):
            data[position] = value
    length = max(4, len(data) - cut)
    data[2:4] = struct.pack("!H", length)
    data = bytes(data)
    fast = _registration_outcome(AsapRegistration._decode, data, length, limits)
    assert fast == _registration_outcome(_walk_registration, data, length, limits)
    if fast[0] == "ok":
        assert decode_message(data, PPID_ASAP, limits) == fast[1]


def test_pe_addresses_of_every_transport_kind():
    from rserpool.asap.registrar import _addresses
    from rserpool.wire import OpaqueTransport, SctpTransport

    a, b = IPv4Address("127.0.0.1"), IPv6Address("::1")
    for transport, expected in ((TcpTransport(1, a), (a,)), (TcpTransport(1, b, 1), (b,)), (UdpTransport(2, a), (a,)),
                                (SctpTransport(3, (a, b)), (a, b)), (OpaqueTransport(b"x"), ())):
        assert tuple(_addresses(transport)) == expected


# -- sorted policies: the head replaced in place -------------------------------------------------


class _Rec:
    """A minimal pool member record."""

    def __init__(self, pe_id: int, settings: PolicySettings) -> None:
        self.pe_id = pe_id
        self.settings = settings
        self.policy_state = None


def _generic_sorted_select(policy, n: int) -> list:
    """_SortedPolicy.select without the in-place fast path: pop the head, add its new key."""
    from rserpool.handlespace import sorted_policies

    sl, by_key = policy._sl, policy._by_key
    if n <= 0 or not sl:
        return []
    out = [by_key[key] for key in sl[0:n]]
    old = sl.pop(0)
    head = by_key.pop(old)
    policy._seq += 1
    key = (old & sorted_policies._RANK_MASK) | policy._seq
    head.policy_state = key
    sl.add(key)
    by_key[key] = head
    return out


_SORTED_TYPES = st.sampled_from([0x1, 0x5, 0x40000001, 0x40000003])  # RR, PRIO, LU, PLU (LUD, WRR: own select)


@settings(max_examples=150, deadline=None)
@given(policy_type=_SORTED_TYPES, load=st.integers(4, 40),
       steps=st.lists(st.tuples(st.sampled_from("aaurss"), st.integers(0, 60), st.integers(0, 6),
                                st.integers(1, 5)), max_size=120))
def test_sorted_select_fast_path_equals_pop_and_add(policy_type, load, steps):
    from rserpool.handlespace.policies import make_policy

    fast, slow = make_policy(policy_type, random.Random(1)), make_policy(policy_type, random.Random(1))
    # Small sublists: the fast path's sublist-boundary conditions are reached.
    fast._sl._reset(load)
    slow._sl._reset(load)
    members: dict[int, tuple[_Rec, _Rec]] = {}
    for op, pe_id, value, n in steps:
        ps = PolicySettings(policy_type, priority=value, load=value, load_degradation=value % 3)
        if op == "a" and pe_id not in members:
            members[pe_id] = (_Rec(pe_id, ps), _Rec(pe_id, ps))
            fast.add(members[pe_id][0])
            slow.add(members[pe_id][1])
        elif op == "u" and pe_id in members:
            fast.update(members[pe_id][0], ps)
            slow.update(members[pe_id][1], ps)
        elif op == "r" and pe_id in members:
            a, b = members.pop(pe_id)
            fast.remove(a)
            slow.remove(b)
        elif op == "s":
            got = [m.pe_id for m in fast.select(n)]
            assert got == [m.pe_id for m in _generic_sorted_select(slow, n)]
        fast._sl._check()
        assert list(fast._sl) == list(slow._sl)
        assert fast._seq == slow._seq
        assert {k: m.pe_id for k, m in fast._by_key.items()} == {k: m.pe_id for k, m in slow._by_key.items()}
        assert all(m.policy_state == members[m.pe_id][1].policy_state for m in fast._by_key.values())


# -- TCP mapping: sending a DATA chunk -----------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(omit=st.sampled_from([0, INIT_OMIT_TSN, INIT_OMIT_STREAM, INIT_OMIT_TSN | INIT_OMIT_STREAM, INIT_OMIT_PPID]),
       initiate=st.booleans(),
       sends=st.lists(st.tuples(st.sampled_from([11, 11, 0, 12, 0xFFFFFFFF, 1 << 32, -1]),
                                st.sampled_from([0, 0, 1, 0xFFFF, 1 << 16, -1]), st.booleans(),
                                st.sampled_from([0, 5, 100, 65535 - 16, 65535 - 15])), max_size=12))
@example(omit=0, initiate=True, sends=[(11, 0, False, 4)] * 3)
@example(omit=0, initiate=False, sends=[(11, 1, False, 4), (11, 1, True, 4), (11, 1, False, 4)])
def test_send_message_equals_the_generic_chunk_encoding(omit, initiate, sends):
    conn = TcpMapConnection(omit_flags=omit)
    prefix = conn.initiate() if initiate else b""
    tsn, seqs = 0, {}
    for ppid, stream_id, unordered, size in sends:
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        carried = not (omit & INIT_OMIT_STREAM)
        valid = (0 <= ppid < 1 << 32 and 0 <= stream_id < 1 << 16
                 and not (omit & INIT_OMIT_PPID and ppid) and not (omit & INIT_OMIT_STREAM and stream_id)
                 and size <= 0xFFFF - data_header_size(omit))
        if not valid:
            with pytest.raises(ValueError):
                conn.send_message(ppid, payload, stream_id=stream_id, unordered=unordered)
            continue
        got = conn.send_message(ppid, payload, stream_id=stream_id, unordered=unordered)
        seq = 0 if unordered else seqs.get(stream_id, 0)
        if not unordered:
            seqs[stream_id] = (seq + 1) & 0xFFFF
        expected = encode_chunk(DataChunk(
            payload,
            ppid=None if omit & INIT_OMIT_PPID else ppid,
            tsn=None if omit & INIT_OMIT_TSN else tsn,
            stream_id=stream_id if carried else None,
            stream_seq=seq if carried else None,
            unordered=unordered,
        ))
        if not prefix and not initiate:
            prefix = bytes([1, omit, 0, 4])  # the INIT sent with the first chunk
            expected = prefix + expected
        assert got == expected
        tsn += 1
