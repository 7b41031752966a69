"""One instance of every ASAP and ENRP message type.

Together the samples cover every parameter type, transport, address
family, RFC 5354 error cause and RFC 5356 policy type, plus an opaque
(private) policy; used by the conformance test and as CLI examples.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import rserpool.wire.codes as codes
from rserpool.wire.asap import (
    AsapBusinessCard, AsapCookie, AsapCookieEcho, AsapDeregistration,
    AsapDeregistrationResponse, AsapEndpointKeepAlive, AsapEndpointKeepAliveAck,
    AsapEndpointUnreachable, AsapError, AsapHandleResolution, AsapHandleResolutionResponse,
    AsapRegistration, AsapRegistrationResponse, AsapServerAnnounce,
)
from rserpool.wire.enrp import (
    EnrpError, EnrpHandleTableRequest, EnrpHandleTableResponse, EnrpHandleUpdate,
    EnrpInitTakeover, EnrpInitTakeoverAck, EnrpListRequest, EnrpListResponse, EnrpPresence,
    EnrpTakeoverServer, PoolEntry,
)
from rserpool.wire.errors import ErrorCause
from rserpool.wire.messages import Message
from rserpool.wire.params import OperationError, PoolElement, ServerInformation
from rserpool.wire.policy import (
    LeastUsedDegradationPolicy, LeastUsedPolicy, OpaquePolicy, PriorityLeastUsedPolicy,
    PriorityPolicy, RandomizedLeastUsedPolicy, RandomPolicy, RoundRobinPolicy,
    WeightedRandomPolicy, WeightedRoundRobinPolicy,
)
from rserpool.wire.transports import (
    DccpTransport, OpaqueTransport, SctpTransport, TcpTransport, UdpLiteTransport, UdpTransport,
)

__all__ = ["all_samples", "auth_samples", "OPAQUE_POLICY_TYPE"]

# A private policy type (bit 31 set) that the codec keeps opaque.  It is
# rsplib's PriorityLeastUsedDegradation (load, load degradation), which
# Wireshark also knows, so the conformance test can check its layout.
OPAQUE_POLICY_TYPE = 0xB0001003

V4 = IPv4Address("127.0.0.1")
V4B = IPv4Address("127.0.0.2")
V6 = IPv6Address("::1")
ASAP_SCTP = SctpTransport(3863, (V4, V6), codes.TRANSPORT_USE_DATA_PLUS_CONTROL)


def _pe(pe_id: int, transport, policy, asap: SctpTransport | None = None,
        life: int = 300, home: int = 0) -> PoolElement:
    return PoolElement(pe_id, home, life, transport, policy, asap)


def all_samples() -> list[tuple[int, Message]]:
    """``[(ppid, message), ...]``: the 14 ASAP then the 10 ENRP message types."""
    a, e = codes.PPID_ASAP, codes.PPID_ENRP
    handle = b"echo-pool"  # 9 bytes: 3 bytes of padding
    tcp_lu = _pe(0x12345678, TcpTransport(7, V4), LeastUsedPolicy(0x10000000))
    sctp_rr = _pe(0x00000001, SctpTransport(7, (V4, V6)), RoundRobinPolicy(),
                  ASAP_SCTP, life=-1, home=0x0A0B0C0D)
    udp_wrr = _pe(0x00000002, UdpTransport(7, V6), WeightedRoundRobinPolicy(3))
    udplite_rand = _pe(0x00000003, UdpLiteTransport(7, V4B), RandomPolicy())
    dccp_wrand = _pe(0x00000004, DccpTransport(7, 42, V4), WeightedRandomPolicy(5))
    tcp6_prio = _pe(0x00000005, TcpTransport(7, V6), PriorityPolicy(9))
    sctp_lud = _pe(0x00000006, SctpTransport(7, (V4,)), LeastUsedDegradationPolicy(1, 2))
    sctp_plu = _pe(0x00000007, SctpTransport(7, (V6,)), PriorityLeastUsedPolicy(3, 4))
    sctp_rlu = _pe(0x00000008, SctpTransport(7, (V4B,)), RandomizedLeastUsedPolicy(5))
    sctp_opaque = _pe(0x00000009, SctpTransport(7, (V4,)),
                      OpaquePolicy(OPAQUE_POLICY_TYPE, bytes.fromhex("0000000100000002")))
    opaque_rr = _pe(0x0000000A, OpaqueTransport(b"opaque-transport"), RoundRobinPolicy())
    server = ServerInformation(0x0A0B0C0D, SctpTransport(9901, (V4, V6)))
    server2 = ServerInformation(0x01020304, SctpTransport(9901, (V4B,)))
    policy_tlv = LeastUsedPolicy(0).encode()
    transport_tlv = TcpTransport(7, V4).encode()
    unknown_tlv = bytes.fromhex("4abc0006beef")  # a 01-type TLV, length 6
    unknown_msg = bytes.fromhex("4f000004")  # a 01-type message
    asap = [
        AsapRegistration(handle, tcp_lu),
        AsapDeregistration(handle, 0x12345678),
        AsapRegistrationResponse(handle, 0x12345678, reject=True, error=OperationError((
            ErrorCause(codes.CAUSE_INCONSISTENT_POLICY, policy_tlv),
            ErrorCause(codes.CAUSE_INCONSISTENT_TRANSPORT, transport_tlv),
            ErrorCause(codes.CAUSE_INCONSISTENT_DATA_CONTROL),
        ))),
        AsapDeregistrationResponse(handle, 0x12345678, OperationError((
            ErrorCause(codes.CAUSE_UNSPECIFIED), ErrorCause(codes.CAUSE_NON_UNIQUE_PE_ID)))),
        AsapHandleResolution(handle, subscribe=True),
        AsapHandleResolutionResponse(handle, (sctp_rr, udp_wrr, udplite_rand, dccp_wrand,
                                              tcp6_prio), WeightedRoundRobinPolicy(1),
                                     accept=True),
        AsapEndpointKeepAlive(0x0A0B0C0D, handle, home=True),
        AsapEndpointKeepAliveAck(handle, 0x12345678),
        AsapEndpointUnreachable(handle, 0x12345678),
        AsapServerAnnounce(0x0A0B0C0D, (SctpTransport(3863, (V4, V6)), TcpTransport(3863, V4))),
        AsapCookie(b"a cookie of 23 bytes..."),
        AsapCookieEcho(b"a cookie of 23 bytes..."),
        AsapBusinessCard(handle, (sctp_lud, sctp_plu, sctp_rlu, sctp_opaque, opaque_rr)),
        AsapError(OperationError((
            ErrorCause(codes.CAUSE_UNRECOGNIZED_PARAMETER, unknown_tlv),
            ErrorCause(codes.CAUSE_UNRECOGNIZED_MESSAGE, unknown_msg),
            ErrorCause(codes.CAUSE_INVALID_VALUES, transport_tlv),
            ErrorCause(codes.CAUSE_LACK_OF_RESOURCES),
            ErrorCause(codes.CAUSE_UNKNOWN_POOL_HANDLE),
            ErrorCause(codes.CAUSE_SECURITY),
        ))),
    ]
    enrp = [
        EnrpPresence(0x0A0B0C0D, 0, 0x29A5, server, reply_required=True),
        EnrpHandleTableRequest(0x0A0B0C0D, 0x01020304, own_children_only=True),
        EnrpHandleTableResponse(0x01020304, 0x0A0B0C0D, (
            PoolEntry(handle, (sctp_rr,)),
            PoolEntry(b"abc", (_pe(0x11, TcpTransport(7, V4), LeastUsedPolicy(1), ASAP_SCTP),
                                _pe(0x12, UdpTransport(7, V4), RoundRobinPolicy(), ASAP_SCTP)),
                      ("pe1", None)),
        ), more=True),
        EnrpHandleUpdate(0x0A0B0C0D, 0, codes.UPDATE_ADD_PE, handle, sctp_rr, identity="pe-01"),
        EnrpListRequest(0x0A0B0C0D, 0x01020304),
        EnrpListResponse(0x01020304, 0x0A0B0C0D, (server, server2)),
        EnrpInitTakeover(0x0A0B0C0D, 0, 0x01020304),
        EnrpInitTakeoverAck(0x05060708, 0x0A0B0C0D, 0x01020304),
        EnrpTakeoverServer(0x0A0B0C0D, 0, 0x01020304),
        EnrpError(0x0A0B0C0D, 0x01020304, OperationError((
            ErrorCause(codes.CAUSE_UNRECOGNIZED_MESSAGE, unknown_msg),))),
    ]
    return [(a, m) for m in asap] + [(e, m) for m in enrp]


def auth_samples() -> list[tuple[int, Message]]:
    """One instance of every authentication extension message (PPID 11).

    Deliberately *not* part of :func:`all_samples`: those are the RFC
    messages the Wireshark conformance test dissects field by field, and
    Wireshark does not know the extension types (0x70-0x78).  The extension
    has its own conformance check in tests/test_wire_auth.py: Wireshark must
    report these samples as an unknown message type, not as malformed.
    """
    from rserpool.wire.auth import (
        AsapAuthChapChallenge, AsapAuthChapResponse, AsapAuthFailure, AsapAuthHello,
        AsapAuthOffer, AsapAuthRequest, AsapAuthSrpChallenge, AsapAuthSrpProof,
        AsapAuthSuccess,
    )

    msgs: list[Message] = [
        AsapAuthRequest(),
        AsapAuthOffer(("SRP-6a-SHA256-2048", "CHAP-MD5")),
        AsapAuthHello("SRP-6a-SHA256-2048", "pe1@example"),
        AsapAuthSrpChallenge(bytes(range(16)), bytes(range(256))),
        AsapAuthSrpProof(bytes(range(255, -1, -1)), bytes(range(32))),
        AsapAuthChapChallenge(0x2A, bytes(range(32, 64))),
        AsapAuthChapResponse(0x2A, bytes(range(16))),
        AsapAuthSuccess("SRP-6a-SHA256-2048", bytes(range(64, 96))),
        AsapAuthFailure(1, may_retry=True),
    ]
    return [(codes.PPID_ASAP, m) for m in msgs]
