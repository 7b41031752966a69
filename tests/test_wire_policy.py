"""Pool Member Selection Policy parameters, byte for byte from the RFC 5356
figures (Param Type 0x8, Length, Policy Type, policy-specific values)."""

import pytest

from rserpool.wire import (
    PPID_ASAP, AsapHandleResolutionResponse, LeastUsedDegradationPolicy, LeastUsedPolicy,
    OpaquePolicy, PriorityLeastUsedPolicy, PriorityPolicy, RandomizedLeastUsedPolicy,
    RandomPolicy, RoundRobinPolicy, WeightedRandomPolicy, WeightedRoundRobinPolicy,
    decode_message,
)

POLICIES = [
    (RoundRobinPolicy(), "0008 0008 00000001"),                       # RFC 5356 3.1.1
    (WeightedRoundRobinPolicy(7), "0008 000c 00000002 00000007"),     # 3.1.2
    (RandomPolicy(), "0008 0008 00000003"),                           # 3.1.3
    (WeightedRandomPolicy(7), "0008 000c 00000004 00000007"),         # 3.1.4
    (PriorityPolicy(7), "0008 000c 00000005 00000007"),               # 3.1.5
    (LeastUsedPolicy(7), "0008 000c 40000001 00000007"),              # 4.1.1
    (LeastUsedDegradationPolicy(7, 8), "0008 0010 40000002 00000007 00000008"),  # 4.1.2
    (PriorityLeastUsedPolicy(7, 8), "0008 0010 40000003 00000007 00000008"),     # 4.1.3
    (RandomizedLeastUsedPolicy(7), "0008 000c 40000004 00000007"),    # 4.1.4
    (OpaquePolicy(0x80000001, b"xyz"), "0008 000b 80000001 78797a 00"),  # private, unaligned
    (OpaquePolicy(0x40000000), "0008 0008 40000000"),                 # reserved code: opaque
]


@pytest.mark.parametrize("policy,hexbytes", POLICIES, ids=[str(p) for p, _ in POLICIES])
def test_policy_bytes(policy, hexbytes):
    data = bytes.fromhex(hexbytes)
    assert policy.encode() == data
    msg = AsapHandleResolutionResponse(b"p", policy=policy)
    assert decode_message(msg.encode(), PPID_ASAP).policy == policy


def test_policy_names_and_types():
    assert str(LeastUsedDegradationPolicy(1, 2)) == "LUD(load=1 load_degradation=2)"
    assert RoundRobinPolicy().policy_type == 1 and str(RoundRobinPolicy()) == "RR"
    assert OpaquePolicy(0xB0001003, b"\x01").name == "policy-0xb0001003"


def test_opaque_policy_refuses_known_types():
    with pytest.raises(ValueError):
        OpaquePolicy(0x40000001, b"\0\0\0\0")
