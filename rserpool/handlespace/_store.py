"""The handlespace's internal records, shared by its store
(:mod:`rserpool.handlespace.handlespace`) and its bulk path
(:mod:`rserpool.handlespace.bulk`): a pool and the per-owner index.

Pure Python: no Twisted, no clock.
"""

from __future__ import annotations

from rserpool.handlespace.entries import CAUSE_INVALID_VALUES, HandlespaceError, PoolElementEntry
from rserpool.handlespace.types import MAX_UINT32, SelectionPolicy
from rserpool.wire.checksum import pe_sum

__all__ = ["Pool", "Owner", "check_uint32"]


class Pool:
    __slots__ = ("handle", "policy", "policy_type", "transport_type", "transport_use", "members", "handle_sum")

    def __init__(self, handle: bytes, policy: SelectionPolicy, policy_type: int, transport_type: int, use: int):
        self.handle = handle
        self.policy = policy
        self.policy_type = policy_type
        self.transport_type = transport_type
        self.transport_use = use
        self.members: dict[int, PoolElementEntry] = {}
        # pe_sum is linear: pe_sum(h, id) == pe_sum(h, 0) + (id >> 16) + (id & 0xffff).
        self.handle_sum = pe_sum(handle, 0)


class Owner:
    __slots__ = ("members", "total", "pools")

    def __init__(self) -> None:
        self.members: dict[PoolElementEntry, None] = {}
        self.total = 0
        self.pools: dict[bytes, int] = {}  # pool handle -> PEs of this owner in it


def check_uint32(name: str, value: int) -> None:
    if not isinstance(value, int) or not 0 <= value <= MAX_UINT32:
        raise HandlespaceError(CAUSE_INVALID_VALUES, f"{name} out of the 32-bit range")
