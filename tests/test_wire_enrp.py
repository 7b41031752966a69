"""The fast paths of ENRP decoding give exactly what the general ones give.

``rserpool.wire.enrp``'s one-pass decoding of ENRP_HANDLE_TABLE_RESPONSE
entries and ``rserpool.wire.params``' one-unpack Pool Element with a TCP
transport on one IPv4 address: for well-formed messages and for thousands of
broken ones, decoding with them and without them (the general ``walk``
paths, by patching them out) gives equal messages with equal skip-and-report
causes, or the same error (cause, quoted bytes, text), under the default
limits and under tight ones.
"""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv6Address

import pytest

import rserpool.wire.enrp as wire_enrp
import rserpool.wire.params as wire_params
from rserpool.wire import (
    PPID_ENRP, EnrpHandleTableResponse, EnrpHandleUpdate, LeastUsedPolicy, Limits, OpaquePolicy, PoolElement,
    PoolEntry, PriorityPolicy, RoundRobinPolicy, SctpTransport, TcpTransport, UdpTransport, WireError,
    decode_message,
)
from rserpool.wire import codes
from rserpool.wire.samples import all_samples
from rserpool.wire.tlv import new_ctx
from tests.test_wire_fuzz import mutate
from tests.wirecorpus import mutants

V4 = IPv4Address("192.0.2.1")


def tcp(pe_id: int, policy=None, address=V4, asap=None) -> PoolElement:
    return PoolElement(pe_id, 0x0A, 30, TcpTransport(7000 + pe_id, address), policy or LeastUsedPolicy(pe_id), asap)


def table(*entries: PoolEntry, more: bool = False) -> EnrpHandleTableResponse:
    return EnrpHandleTableResponse(0x0A, 0x0B, entries, more=more)


MESSAGES = [
    table(PoolEntry(b"echo", tuple(tcp(i) for i in range(1, 6)))),
    table(PoolEntry(b"echo", tuple(tcp(i) for i in range(1, 4)), ("pe1", None, "pe3")),
          PoolEntry(b"other", (tcp(9, RoundRobinPolicy()), tcp(10, PriorityPolicy(3))), ("pe9", "pe9")), more=True),
    table(PoolEntry(b"mixed", (tcp(1, OpaquePolicy(0x80000001, b"abc")), tcp(2, address=IPv6Address("2001:db8::1")),
                               tcp(3, asap=SctpTransport(3863, (V4,))),
                               PoolElement(4, 0x0A, -1, UdpTransport(7, V4), RoundRobinPolicy()),
                               PoolElement(5, 0x0A, 5, SctpTransport(7, (V4, V4)), LeastUsedPolicy(1))),
                    ("é" * 10, None, "x", None, "y"))),
    table(),
    EnrpHandleUpdate(0x0A, 0, codes.UPDATE_ADD_PE, b"echo", tcp(1), "pe1"),
    EnrpHandleUpdate(0x0A, 0, codes.UPDATE_DEL_PE, b"echo", tcp(2, PriorityPolicy(1))),
] + [m for ppid, m in all_samples() if ppid == PPID_ENRP]
LIMITS = [Limits(), Limits(max_parameters=9), Limits(max_depth=2), Limits(max_depth=3), Limits(max_pool_handle=4)]


def outcome(data: bytes, limits: Limits):
    try:
        message = decode_message(data, PPID_ENRP, limits)
    except WireError as err:
        return "error", err.cause, err.offending, err.detail
    return "ok", message, message.unrecognized


def corpus() -> list[bytes]:
    rng = random.Random(13)
    out = []
    for message in MESSAGES:
        data = message.encode()
        out.append(data)
        out.extend(broken for broken, _ in mutants(PPID_ENRP, data))
        out.extend(mutate(rng, data) for _ in range(150))
    return out


CORPUS = corpus()


def test_the_fast_paths_are_taken():
    data = MESSAGES[1].encode()
    assert wire_enrp._entries_fast(data, len(data), new_ctx()) is not None
    pe = tcp(5).encode()
    assert wire_params._tcp4_pool_element(pe, 4, len(pe), 1, new_ctx()) == tcp(5)


@pytest.mark.parametrize("limits", LIMITS, ids=lambda limits: repr(limits))
def test_fast_and_general_decoding_agree(monkeypatch, limits):
    fast = [outcome(data, limits) for data in CORPUS]
    monkeypatch.setattr(wire_enrp, "_entries_fast", lambda data, length, ctx: None)
    monkeypatch.setattr(wire_params, "_tcp4_pool_element", lambda data, s, e, depth, ctx: None)
    general = [outcome(data, limits) for data in CORPUS]
    differ = [(data.hex(), a, b) for data, a, b in zip(CORPUS, fast, general) if a != b]
    assert not differ, differ[:3]
    assert {kind for kind, *_ in fast} == {"ok", "error"}  # the corpus has both


@pytest.mark.parametrize("policy", [LeastUsedPolicy(7), RoundRobinPolicy(), PriorityPolicy(0xFFFFFFFF)]
                         + [OpaquePolicy(0x80000001, b"x" * n) for n in range(6)])
@pytest.mark.parametrize("use", [0, 1])
def test_a_tcp_pool_element_encodes_as_its_parts_do(policy, use):
    """The one-pack encoding of a Pool Element with a TCP transport on one
    IPv4 address: the bytes of the general rule (RFC 5354 3.10, the last
    padding not counted)."""
    import struct

    from rserpool.wire.tlv import last_padding

    pe = PoolElement(0x12345678, 0x0A, -1, TcpTransport(7, V4, use), policy)
    parts = [pe.user_transport.encode(), policy.encode()]
    body = b"".join(parts)
    expected = struct.pack("!HHIIi", codes.PARAM_POOL_ELEMENT, 16 + len(body) - last_padding(parts), pe.pe_id,
                           pe.home_server_id, pe.registration_life) + body
    assert pe.encode() == expected
    assert decode_message(EnrpHandleUpdate(0x0A, 0, 0, b"h", pe).encode(), PPID_ENRP).pool_element == pe
