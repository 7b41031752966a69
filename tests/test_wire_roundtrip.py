"""Hypothesis round trips over every message, parameter, transport and policy."""

from hypothesis import given, settings, strategies as st

from rserpool.wire import (
    AsapBusinessCard, AsapCookie, AsapCookieEcho, AsapDeregistration,
    AsapDeregistrationResponse, AsapEndpointKeepAlive, AsapEndpointKeepAliveAck,
    AsapEndpointUnreachable, AsapError, AsapHandleResolution, AsapHandleResolutionResponse,
    AsapRegistration, AsapRegistrationResponse, AsapServerAnnounce, DccpTransport,
    EnrpError, EnrpHandleTableRequest, EnrpHandleTableResponse, EnrpHandleUpdate,
    EnrpInitTakeover, EnrpInitTakeoverAck, EnrpListRequest, EnrpListResponse, EnrpPresence,
    EnrpTakeoverServer, ErrorCause, IPv4Address, IPv6Address, LeastUsedDegradationPolicy,
    LeastUsedPolicy, OpaquePolicy, OpaqueTransport, OperationError, PoolElement, PoolEntry,
    PriorityLeastUsedPolicy, PriorityPolicy, RandomizedLeastUsedPolicy, RandomPolicy,
    RoundRobinPolicy, SctpTransport, ServerInformation, TcpTransport, UdpLiteTransport,
    UdpTransport, WeightedRandomPolicy, WeightedRoundRobinPolicy, decode_message,
)
from rserpool.wire.policy import POLICY_CLASSES
from rserpool.wire.jsonform import message_from_json, message_to_json

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
s32 = st.integers(-0x80000000, 0x7FFFFFFF)
handles = st.binary(min_size=1, max_size=40)
small_bytes = st.binary(max_size=40)
addresses = st.one_of(
    st.builds(IPv4Address, st.binary(min_size=4, max_size=4)),
    st.builds(IPv6Address, st.binary(min_size=16, max_size=16)),
)
sctp = st.builds(SctpTransport, u16, st.lists(addresses, min_size=1, max_size=4).map(tuple), u16)
transports = st.one_of(
    sctp,
    st.builds(TcpTransport, u16, addresses, u16),
    st.builds(UdpTransport, u16, addresses, u16),
    st.builds(UdpLiteTransport, u16, addresses, u16),
    st.builds(DccpTransport, u16, u32, addresses, u16),
    st.builds(OpaqueTransport, small_bytes),
)
policies = st.one_of(
    st.just(RoundRobinPolicy()), st.just(RandomPolicy()),
    st.builds(WeightedRoundRobinPolicy, u32), st.builds(WeightedRandomPolicy, u32),
    st.builds(PriorityPolicy, u32), st.builds(LeastUsedPolicy, u32),
    st.builds(RandomizedLeastUsedPolicy, u32),
    st.builds(LeastUsedDegradationPolicy, u32, u32), st.builds(PriorityLeastUsedPolicy, u32, u32),
    st.builds(OpaquePolicy, u32.filter(lambda t: t not in POLICY_CLASSES), small_bytes),
)
pool_elements = st.builds(PoolElement, u32, u32, s32, transports, policies,
                          st.one_of(st.none(), sctp))
pes = st.lists(pool_elements, max_size=3).map(tuple)
pes1 = st.lists(pool_elements, min_size=1, max_size=3).map(tuple)
causes = st.builds(ErrorCause, u16, small_bytes)
errors = st.builds(OperationError, st.lists(causes, min_size=1, max_size=3).map(tuple))
opt_errors = st.one_of(st.none(), errors)
servers = st.builds(ServerInformation, u32, sctp)

# The PE Identity extension (docs/enrp.md): 1..255 UTF-8 bytes, or absent.
opt_identities = st.one_of(st.none(), st.text(min_size=1, max_size=60))
pool_entries = pes1.flatmap(lambda pes: st.builds(
    PoolEntry, handles, st.just(pes),
    st.one_of(st.just(()), st.lists(opt_identities, min_size=len(pes), max_size=len(pes)).map(tuple))))

messages = st.one_of(
    st.builds(AsapRegistration, handles, pool_elements),
    st.builds(AsapDeregistration, handles, u32),
    st.builds(AsapRegistrationResponse, handles, u32, st.booleans(), opt_errors),
    st.builds(AsapDeregistrationResponse, handles, u32, opt_errors),
    st.builds(AsapHandleResolution, handles, st.booleans()),
    st.builds(AsapHandleResolutionResponse, handles, pes, st.one_of(st.none(), policies),
              opt_errors, st.booleans()),
    st.builds(AsapEndpointKeepAlive, u32, handles, st.booleans(), st.one_of(st.none(), u32)),
    st.builds(AsapEndpointKeepAliveAck, handles, u32),
    st.builds(AsapEndpointUnreachable, handles, u32),
    st.builds(AsapServerAnnounce, u32, st.lists(st.one_of(
        sctp, st.builds(TcpTransport, u16, addresses, u16)), max_size=3).map(tuple)),
    st.builds(AsapCookie, small_bytes),
    st.builds(AsapCookieEcho, small_bytes),
    st.builds(AsapBusinessCard, handles, pes1, st.one_of(st.none(), policies)),
    st.builds(AsapError, errors),
    st.builds(EnrpPresence, u32, u32, st.one_of(st.none(), u16), st.one_of(st.none(), servers),
              st.booleans()),
    st.builds(EnrpHandleTableRequest, u32, u32, st.booleans()),
    st.builds(EnrpHandleTableResponse, u32, u32,
              st.lists(pool_entries, max_size=3).map(tuple),
              st.booleans(), st.booleans()),
    st.builds(EnrpHandleUpdate, u32, u32, st.sampled_from([0, 1]), handles, pool_elements,
              opt_identities),
    st.builds(EnrpListRequest, u32, u32),
    st.builds(EnrpListResponse, u32, u32, st.lists(servers, max_size=3).map(tuple),
              st.booleans()),
    st.builds(EnrpInitTakeover, u32, u32, u32),
    st.builds(EnrpInitTakeoverAck, u32, u32, u32),
    st.builds(EnrpTakeoverServer, u32, u32, u32),
    st.builds(EnrpError, u32, u32, errors),
)


@settings(max_examples=400, deadline=None)
@given(messages)
def test_message_round_trip(msg):
    data = msg.encode()
    assert len(data) % 4 == 0
    assert int.from_bytes(data[2:4], "big") <= len(data) < int.from_bytes(data[2:4], "big") + 4
    decoded = decode_message(data, msg.PPID)
    assert decoded == msg
    assert type(decoded) is type(msg)
    assert decoded.encode() == data
    assert decoded.unrecognized == ()
    assert str(decoded).startswith(msg.name)


@settings(max_examples=200, deadline=None)
@given(messages)
def test_json_round_trip(msg):
    import json
    form = message_to_json(msg)
    assert message_from_json(json.loads(json.dumps(form))) == msg


@settings(max_examples=200, deadline=None)
@given(st.one_of(transports, policies, pool_elements, causes, errors, servers))
def test_parameter_values_are_immutable_and_printable(value):
    import dataclasses
    import pytest
    assert str(value)
    field = dataclasses.fields(value)[0].name if dataclasses.fields(value) else None
    if field is not None:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, field, getattr(value, field))
