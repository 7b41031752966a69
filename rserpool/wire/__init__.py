"""The RSerPool wire codec: ASAP (RFC 5352) and ENRP (RFC 5353) messages
with the common parameters of RFC 5354 and the policies of RFC 5356.

Pure Python: no Twisted, no sockets, no clock.  ``decode_message`` raises
only ``WireError``; see docs/wire.md.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from rserpool.wire.codes import PPID_ASAP, PPID_ENRP
from rserpool.wire.errors import DEFAULT_LIMITS, Limits, WireError
from rserpool.wire.policy import (
    LeastUsedDegradationPolicy, LeastUsedPolicy, OpaquePolicy, Policy, PriorityLeastUsedPolicy,
    PriorityPolicy, RandomizedLeastUsedPolicy, RandomPolicy, RoundRobinPolicy,
    WeightedRandomPolicy, WeightedRoundRobinPolicy,
)
from rserpool.wire.transports import (
    DccpTransport, IPAddress, OpaqueTransport, SctpTransport, TcpTransport, Transport,
    UdpLiteTransport, UdpTransport,
)
from rserpool.wire.params import (
    REGISTRATION_LIFE_INFINITE, Cookie, ErrorCause, OperationError, PeChecksum, PoolElement,
    ServerInformation,
)
from rserpool.wire.messages import DecodeCache, Message, decode_message, encode_message, error_reply
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

__all__ = [
    "WireError", "Limits", "DEFAULT_LIMITS", "PPID_ASAP", "PPID_ENRP",
    "DecodeCache", "decode_message", "encode_message", "error_reply", "Message",
    "IPv4Address", "IPv6Address", "IPAddress",
    "SctpTransport", "TcpTransport", "UdpTransport", "UdpLiteTransport", "DccpTransport",
    "OpaqueTransport", "Transport",
    "RoundRobinPolicy", "WeightedRoundRobinPolicy", "RandomPolicy", "WeightedRandomPolicy",
    "PriorityPolicy", "LeastUsedPolicy", "LeastUsedDegradationPolicy",
    "PriorityLeastUsedPolicy", "RandomizedLeastUsedPolicy", "OpaquePolicy", "Policy",
    "ErrorCause", "OperationError", "Cookie", "PeChecksum", "PoolElement",
    "ServerInformation", "PoolEntry", "REGISTRATION_LIFE_INFINITE",
    "AsapRegistration", "AsapDeregistration", "AsapRegistrationResponse",
    "AsapDeregistrationResponse", "AsapHandleResolution", "AsapHandleResolutionResponse",
    "AsapEndpointKeepAlive", "AsapEndpointKeepAliveAck", "AsapEndpointUnreachable",
    "AsapServerAnnounce", "AsapCookie", "AsapCookieEcho", "AsapBusinessCard", "AsapError",
    "EnrpPresence", "EnrpHandleTableRequest", "EnrpHandleTableResponse", "EnrpHandleUpdate",
    "EnrpListRequest", "EnrpListResponse", "EnrpInitTakeover", "EnrpInitTakeoverAck",
    "EnrpTakeoverServer", "EnrpError",
]
