"""Pool Member Selection Policy parameter (RFC 5354 3.8, RFC 5356).

One frozen class per RFC 5356 policy; any other policy type (private ones
with bit 31 set, reserved or future codes) is kept as ``OpaquePolicy``
with its policy-specific bytes unchanged.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Union

from rserpool.fastinit import fast_constructor
import rserpool.wire.codes as codes
from rserpool.wire.tlv import DECODERS, U32, Ctx, frame, malformed

__all__ = [
    "RoundRobinPolicy", "WeightedRoundRobinPolicy", "RandomPolicy",
    "WeightedRandomPolicy", "PriorityPolicy", "LeastUsedPolicy",
    "LeastUsedDegradationPolicy", "PriorityLeastUsedPolicy",
    "RandomizedLeastUsedPolicy", "OpaquePolicy", "Policy", "POLICY_CLASSES",
]

_P0 = struct.Struct("!HHI")
_P1 = struct.Struct("!HHII")
_P2 = struct.Struct("!HHIII")
_V1 = struct.Struct("!I")
_V2 = struct.Struct("!II")
_MAX32 = 0xFFFFFFFF


def _check32(name: str, value: int) -> None:
    if type(value) is not int or not 0 <= value <= _MAX32:
        raise ValueError(f"{name} must be a 32-bit unsigned integer: {value!r}")


class _PolicyBase:
    __slots__ = ()
    POLICY_TYPE: ClassVar[int]
    FIELDS: ClassVar[tuple[str, ...]] = ()

    @property
    def policy_type(self) -> int:
        return self.POLICY_TYPE

    @property
    def name(self) -> str:
        return codes.POLICY_NAMES[self.POLICY_TYPE]

    def __str__(self) -> str:
        vals = " ".join(f"{f}={getattr(self, f)}" for f in self.FIELDS)
        return f"{self.name}({vals})" if vals else self.name

    __repr__ = __str__


class _NoValue(_PolicyBase):
    __slots__ = ()

    def __post_init__(self) -> None:
        pass

    def encode(self) -> bytes:
        return _P0.pack(codes.PARAM_POLICY, 8, self.POLICY_TYPE)

    @classmethod
    def _from_value(cls, data: bytes, s: int, e: int):
        return cls._make()


@dataclass(frozen=True, slots=True, repr=False)
class RoundRobinPolicy(_NoValue):
    POLICY_TYPE: ClassVar[int] = codes.POLICY_ROUND_ROBIN


@dataclass(frozen=True, slots=True, repr=False)
class RandomPolicy(_NoValue):
    POLICY_TYPE: ClassVar[int] = codes.POLICY_RANDOM


class _OneValue(_PolicyBase):
    __slots__ = ()

    def __post_init__(self) -> None:
        _check32(self.FIELDS[0], getattr(self, self.FIELDS[0]))

    def encode(self) -> bytes:
        return _P1.pack(codes.PARAM_POLICY, 12, self.POLICY_TYPE, getattr(self, self.FIELDS[0]))

    @classmethod
    def _from_value(cls, data: bytes, s: int, e: int):
        return cls._make(_V1.unpack_from(data, s)[0])


@dataclass(frozen=True, slots=True, repr=False)
class WeightedRoundRobinPolicy(_OneValue):
    weight: int
    POLICY_TYPE: ClassVar[int] = codes.POLICY_WEIGHTED_ROUND_ROBIN
    FIELDS: ClassVar[tuple[str, ...]] = ("weight",)


@dataclass(frozen=True, slots=True, repr=False)
class WeightedRandomPolicy(_OneValue):
    weight: int
    POLICY_TYPE: ClassVar[int] = codes.POLICY_WEIGHTED_RANDOM
    FIELDS: ClassVar[tuple[str, ...]] = ("weight",)


@dataclass(frozen=True, slots=True, repr=False)
class PriorityPolicy(_OneValue):
    priority: int
    POLICY_TYPE: ClassVar[int] = codes.POLICY_PRIORITY
    FIELDS: ClassVar[tuple[str, ...]] = ("priority",)


@dataclass(frozen=True, slots=True, repr=False)
class LeastUsedPolicy(_OneValue):
    load: int
    POLICY_TYPE: ClassVar[int] = codes.POLICY_LEAST_USED
    FIELDS: ClassVar[tuple[str, ...]] = ("load",)

    def encode(self) -> bytes:  # the hot path of a registration
        return _P1.pack(8, 12, 0x40000001, self.load)


@dataclass(frozen=True, slots=True, repr=False)
class RandomizedLeastUsedPolicy(_OneValue):
    load: int
    POLICY_TYPE: ClassVar[int] = codes.POLICY_RANDOMIZED_LEAST_USED
    FIELDS: ClassVar[tuple[str, ...]] = ("load",)


class _TwoValues(_PolicyBase):
    __slots__ = ()
    FIELDS: ClassVar[tuple[str, ...]] = ("load", "load_degradation")

    def __post_init__(self) -> None:
        _check32("load", self.load)
        _check32("load_degradation", self.load_degradation)

    def encode(self) -> bytes:
        return _P2.pack(codes.PARAM_POLICY, 16, self.POLICY_TYPE, self.load, self.load_degradation)

    @classmethod
    def _from_value(cls, data: bytes, s: int, e: int):
        return cls._make(*_V2.unpack_from(data, s))


@dataclass(frozen=True, slots=True, repr=False)
class LeastUsedDegradationPolicy(_TwoValues):
    load: int
    load_degradation: int
    POLICY_TYPE: ClassVar[int] = codes.POLICY_LEAST_USED_DEGRADATION


@dataclass(frozen=True, slots=True, repr=False)
class PriorityLeastUsedPolicy(_TwoValues):
    load: int
    load_degradation: int
    POLICY_TYPE: ClassVar[int] = codes.POLICY_PRIORITY_LEAST_USED


@dataclass(frozen=True, slots=True, repr=False)
class OpaquePolicy:
    """A policy this codec does not know: its type and raw policy data."""

    policy_type: int
    data: bytes = b""

    def __post_init__(self) -> None:
        _check32("policy_type", self.policy_type)
        if self.policy_type in POLICY_CLASSES:
            raise ValueError(f"policy type 0x{self.policy_type:08x} is known: use its class")
        if not isinstance(self.data, bytes):
            raise ValueError("OpaquePolicy.data must be bytes")
        if len(self.data) > 0xFFFF - 8:
            raise ValueError("OpaquePolicy.data too long")

    @property
    def name(self) -> str:
        return f"policy-0x{self.policy_type:08x}"

    def encode(self) -> bytes:
        return frame(codes.PARAM_POLICY, U32.pack(self.policy_type) + self.data)

    def __str__(self) -> str:
        return f"{self.name}(data={self.data.hex() or '-'})"

    __repr__ = __str__


Policy = Union[
    RoundRobinPolicy, WeightedRoundRobinPolicy, RandomPolicy, WeightedRandomPolicy,
    PriorityPolicy, LeastUsedPolicy, LeastUsedDegradationPolicy, PriorityLeastUsedPolicy,
    RandomizedLeastUsedPolicy, OpaquePolicy,
]

POLICY_CLASSES: dict[int, type] = {
    cls.POLICY_TYPE: cls
    for cls in (RoundRobinPolicy, WeightedRoundRobinPolicy, RandomPolicy,
                WeightedRandomPolicy, PriorityPolicy, LeastUsedPolicy,
                LeastUsedDegradationPolicy, PriorityLeastUsedPolicy,
                RandomizedLeastUsedPolicy)
}
for _cls in POLICY_CLASSES.values():
    _cls._make = staticmethod(fast_constructor(_cls))
_MK_LU = fast_constructor(LeastUsedPolicy)
_MK_OPAQUE = fast_constructor(OpaquePolicy)
# Value length (after the policy type) of each known policy.
_VALUE_LENGTH = {t: 4 * len(c.FIELDS) for t, c in POLICY_CLASSES.items()}


def decode_policy(data: bytes, s: int, e: int, depth: int, ctx: Ctx):
    if e - s < 4:
        raise malformed(f"policy parameter of length {e - s + 4}, without a policy type")
    ptype = U32.unpack_from(data, s)[0]
    if ptype == 0x40000001 and e - s == 8:  # LU, the common case
        return _MK_LU(U32.unpack_from(data, s + 4)[0])
    cls = POLICY_CLASSES.get(ptype)
    if cls is None:
        return _MK_OPAQUE(ptype, data[s + 4:e])
    if e - s - 4 != _VALUE_LENGTH[ptype]:
        raise malformed(f"{codes.POLICY_NAMES[ptype]} policy of length {e - s + 4},"
                        f" {_VALUE_LENGTH[ptype] + 8} expected")
    return cls._from_value(data, s + 4, e)


DECODERS[codes.PARAM_POLICY] = decode_policy
