"""Every kind of error reply the codec and the registrar send, built
deterministically, for the Wireshark conformance test and the RFC 5354
3.12 cause-information checks.

``codec_error_replies()`` mutates every sample message (all_samples and
auth_samples) in every way that breaks a rule: each TLV's length field
(too short, off by one, overrunning), its type (each of the four
unknown-type actions, and known types put where they do not belong), each
TLV dropped or duplicated, the message length, truncations, and the
message type (unknown, with and without report).  Each mutant that
``decode_message`` refuses with a cause gives the ASAP_ERROR/ENRP_ERROR
the registrar would send (``error_reply``); identical replies are kept once.

``registrar_error_replies()`` drives ``RegistrarCore`` through every refusal
it has (security gate, rate limits, address check, authorization,
handlespace consistency and limits, unknown pools, unrecognized messages,
undecodable messages) and collects every reply that carries a cause.
"""

from __future__ import annotations

import random
from ipaddress import IPv4Address
from typing import Iterator

from rserpool.wire import (
    PPID_ASAP, PPID_ENRP, WireError, codes, decode_message, error_reply,
)
from rserpool.wire.samples import all_samples, auth_samples

# Bytes of fixed fields after the message header (RFC 5352 2.2, RFC 5353 2).
_ASAP_FIXED = {codes.ASAP_ENDPOINT_KEEP_ALIVE: 4, codes.ASAP_SERVER_ANNOUNCE: 4}
_ENRP_FIXED = {codes.ENRP_HANDLE_UPDATE: 12, codes.ENRP_INIT_TAKEOVER: 12,
               codes.ENRP_INIT_TAKEOVER_ACK: 12, codes.ENRP_TAKEOVER_SERVER: 12}
# TLV types whose value holds TLVs after a fixed prefix of this many bytes.
NESTED_PREFIX = {0x3: 8, 0x4: 4, 0x5: 4, 0x6: 4, 0x7: 4, 0xA: 12, 0xB: 4}


def fixed_size(ppid: int, mtype: int) -> int:
    if ppid == PPID_ASAP:
        return _ASAP_FIXED.get(mtype, 0)
    return _ENRP_FIXED.get(mtype, 8)


def tlv_positions(data: bytes, pos: int, end: int) -> list[tuple[int, int, int]]:
    """(offset, type, length) of every TLV in ``data[pos:end]``, nested ones too."""
    out = []
    while pos + 4 <= end:
        ptype = int.from_bytes(data[pos:pos + 2], "big")
        plen = int.from_bytes(data[pos + 2:pos + 4], "big")
        if plen < 4:
            break
        out.append((pos, ptype, plen))
        if ptype in NESTED_PREFIX:
            out += tlv_positions(data, pos + 4 + NESTED_PREFIX[ptype], pos + plen)
        pos += (plen + 3) & ~3
    return out


def _relength(data: bytes) -> bytes:
    return data[:2] + len(data).to_bytes(2, "big") + data[4:]


def mutants(ppid: int, data: bytes) -> Iterator[tuple[bytes, str]]:
    """Broken variants of one well-formed message."""
    size = len(data)
    for n in (0, 2, 3, size - 4, size - 1, size + 1, size + 4, 0xFFFF):
        if 0 <= n <= 0xFFFF and n != int.from_bytes(data[2:4], "big"):
            yield data[:2] + n.to_bytes(2, "big") + data[4:], f"message length {n}"
    for cut in (2, 4, size - 4, size - 1):
        if 0 < cut < size:
            yield data[:cut], f"truncated to {cut} bytes"
    for mtype in (0x0F, 0x4F, 0x7F, 0x8F, 0xCF):
        yield bytes([mtype]) + data[1:], f"message type 0x{mtype:02x}"
    fixed = fixed_size(ppid, data[0])
    for pos, ptype, plen in tlv_positions(data, 4 + fixed, size):
        padded = (plen + 3) & ~3
        for n in (0, 3, 4, 5, plen - 1, plen + 1, plen + 4, plen + 8, 0xFFFF):
            if 0 <= n <= 0xFFFF and n != plen:
                yield data[:pos + 2] + n.to_bytes(2, "big") + data[pos + 4:], \
                    f"TLV 0x{ptype:04x}@{pos} length {n}"
        for new in (0x0011, 0x4011, 0x8011, 0xC011, 0x0001, 0x0008, 0x0009, 0x000C, 0x000D,
                    0x7F01, 0x7F05):
            if new != ptype:
                yield data[:pos] + new.to_bytes(2, "big") + data[pos + 2:], \
                    f"TLV 0x{ptype:04x}@{pos} typed 0x{new:04x}"
        yield _relength(data[:pos] + data[pos + padded:]), f"TLV 0x{ptype:04x}@{pos} dropped"
        yield _relength(data[:pos + padded] + data[pos:pos + padded] + data[pos + padded:]), \
            f"TLV 0x{ptype:04x}@{pos} repeated"
        if plen >= 8:
            # The TLV shortened by 4 bytes, everything around it relengthed.
            cut = data[:pos + 2] + (plen - 4).to_bytes(2, "big") + data[pos + 4:pos + plen - 4] \
                + data[pos + plen:]
            yield _relength(cut), f"TLV 0x{ptype:04x}@{pos} shortened"


def _sources() -> list[tuple[int, bytes]]:
    sources = [(ppid, msg.encode()) for ppid, msg in all_samples() + auth_samples()]
    # A message of the maximum size with an unrecognized type: its quote
    # cannot fit in a reply.
    sources.append((PPID_ASAP, bytes.fromhex("4f00ffff") + bytes(0xFFFF - 4)))
    return sources


def codec_error_replies() -> list[tuple[int, bytes, str, WireError]]:
    """(ppid, reply bytes, what was mutated, the WireError) for every
    distinct error reply of the codec."""
    seen: dict[bytes, tuple[int, bytes, str, WireError]] = {}
    for ppid, data in _sources():
        candidates = list(mutants(ppid, data)) if len(data) < 0xFFFF else [(data, "huge")]
        for bad, what in candidates:
            try:
                decode_message(bad, ppid)
            except WireError as err:
                if err.report is None:
                    continue
                reply = error_reply(err, ppid).encode()
                seen.setdefault(reply, (ppid, reply, what, err))
    return list(seen.values())


# -- the registrar ------------------------------------------------------------------------


def registrar_error_replies() -> list[tuple[str, object]]:
    """(scenario, reply message) for every refusal the registrar core makes."""
    from dataclasses import fields

    from rserpool.asap.registrar import RegistrarCore, RegistrarSettings
    from rserpool.gate import AskAuthorizer, Gate, GatePolicy
    from rserpool.handlespace import Handlespace, HandlespaceLimits
    from rserpool.outputs import Send
    from rserpool.testing import identified_channel
    from rserpool.security.ratelimit import RateLimit
    from rserpool.wire import (
        AsapDeregistration, AsapHandleResolution, AsapRegistration, LeastUsedPolicy,
        OpaquePolicy, PoolElement, RoundRobinPolicy, TcpTransport, UdpTransport,
    )
    from rserpool.wire.auth import AsapAuthRequest

    def pe(pe_id: int, *, policy=None, transport=None, life: int = 30) -> PoolElement:
        return PoolElement(pe_id, 0, life, transport or TcpTransport(7, IPv4Address("127.0.0.1")),
                           policy or LeastUsedPolicy(0), None)

    gate_fields = {f.name for f in fields(GatePolicy)}

    def core(limits: HandlespaceLimits = HandlespaceLimits(), **settings) -> RegistrarCore:
        policy = GatePolicy(**{k: v for k, v in settings.items() if k in gate_fields})
        return RegistrarCore(RegistrarSettings(server_id=0x5EED, **{k: v for k, v in settings.items()
                                                                     if k not in gate_fields}),
                             Handlespace(limits, rng=random.Random(1)), Gate(policy), rng=random.Random(2))

    replies: list[tuple[str, object]] = []

    def run(what: str, registrar: RegistrarCore, channel, message, allowed: bool = True) -> None:
        outputs = registrar.message_received(channel, message, 0.0)
        while outputs:
            output = outputs.pop(0)
            if type(output) is AskAuthorizer:
                outputs += registrar.authorization_done(output, allowed, 0.0)
            elif type(output) is Send:
                error = getattr(output.message, "error", None)
                if error is not None:
                    replies.append((what, output.message))

    def open_asap_channel(registrar, secure=True, identity="pe1", address="127.0.0.1"):
        return identified_channel(registrar, address, identity, tls=secure)

    handle = b"echo"
    r = core()
    run("registration over a channel without TLS", r, open_asap_channel(r, secure=False),
        AsapRegistration(handle, pe(1)))
    run("registration without an identity", r, open_asap_channel(r, identity=None),
        AsapRegistration(handle, pe(1)))
    run("deregistration without an identity", r, open_asap_channel(r, identity=None),
        AsapDeregistration(handle, 1))
    run("registration of another address", r, open_asap_channel(r, address="127.0.0.9"),
        AsapRegistration(handle, pe(1)))
    run("registration not authorized", r, open_asap_channel(r), AsapRegistration(b"secret", pe(1)),
        allowed=False)
    r2 = core(authorize_resolution=True)
    run("resolution not authorized", r2, open_asap_channel(r2), AsapHandleResolution(handle), allowed=False)
    s = open_asap_channel(r)
    run("first registration", r, s, AsapRegistration(handle, pe(1)))
    run("inconsistent policy", r, s, AsapRegistration(handle, pe(2, policy=RoundRobinPolicy())))
    run("inconsistent transport", r, s, AsapRegistration(
        handle, pe(3, transport=UdpTransport(7, IPv4Address("127.0.0.1")))))
    run("inconsistent data/control", r, s, AsapRegistration(
        handle, pe(4, transport=TcpTransport(7, IPv4Address("127.0.0.1"), 1))))
    run("PE identifier bound to another identity", r, open_asap_channel(r, identity="pe2"),
        AsapRegistration(handle, pe(1)))
    run("deregistration by another identity", r, open_asap_channel(r, identity="pe2"),
        AsapDeregistration(handle, 1))
    run("invalid registration life", r, s, AsapRegistration(b"life", pe(5, life=-2)))
    run("invalid transport use", r, s, AsapRegistration(
        b"use", pe(6, transport=TcpTransport(7, IPv4Address("127.0.0.1"), 7))))
    run("reserved policy type", r, s, AsapRegistration(b"reserved", pe(7, policy=OpaquePolicy(0x40000000))))
    run("unknown pool", r, s, AsapHandleResolution(b"nowhere"))
    run("pool handle too long", r, s, AsapRegistration(b"h" * 65, pe(8)))
    full = core(HandlespaceLimits(max_pes_per_pool=1, max_pools=1, max_pes_per_identity=2))
    fs = open_asap_channel(full)
    run("first registration", full, fs, AsapRegistration(handle, pe(1)))
    run("pool full", full, fs, AsapRegistration(handle, pe(2)))
    run("too many pools", full, fs, AsapRegistration(b"other", pe(3)))
    limited = core(registration_rate=RateLimit(rate=0.001, burst=1.0),
                   resolution_rate=RateLimit(rate=0.001, burst=1.0))
    ls = open_asap_channel(limited)
    for n in range(3):
        run("registration rate limit", limited, ls, AsapRegistration(handle, pe(10 + n)))
        run("resolution rate limit", limited, ls, AsapHandleResolution(handle))
    pending = core(max_pending_per_channel=1)
    ps = open_asap_channel(pending)
    pending.message_received(ps, AsapRegistration(b"a", pe(1)), 0.0)  # left pending
    run("too many pending authorizations", pending, ps, AsapRegistration(b"b", pe(2)))
    run("authentication extension disabled (unrecognized message)", r, s, AsapAuthRequest())
    for ppid, data, what, err in codec_error_replies():
        if ppid == PPID_ASAP:
            for output in r.wire_error(s, err):
                replies.append((f"undecodable message: {what}", output.message))
            break  # wire_error sends error_reply(err): the codec corpus covers the rest
    return replies


__all__ = ["codec_error_replies", "registrar_error_replies", "mutants", "tlv_positions",
           "fixed_size", "NESTED_PREFIX", "PPID_ENRP"]
