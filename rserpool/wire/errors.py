"""The codec's single error type, the RFC 5354 error causes it carries,
and its resource limits.

The bottom of the codec: it imports only :mod:`rserpool.wire.codes`, and
every other codec module imports it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from rserpool.wire.codes import CAUSE_NAMES

__all__ = ["WireError", "ErrorCause", "Limits", "DEFAULT_LIMITS"]

_CAUSE_HDR = struct.Struct("!HH")
_PADDING = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")


class WireError(Exception):
    """A message that cannot be decoded (or must not be processed further).

    ``cause`` is the RFC 5354 error cause code a receiver reports, or None
    when the RFC says to discard the message silently.  ``detail`` is for
    humans; ``offending`` holds the cause-specific information of the
    report exactly as RFC 5354 3.12 defines it for that cause: the whole
    unrecognized parameter TLV (0x1), the whole unrecognized message (0x2),
    the offending TLV that contains the invalid value (0x3), nothing for
    the causes that carry no information.  ``prior`` holds "skip and
    report" causes collected before the stop, so that one report carries
    every unrecognized parameter (RFC 5354 3.12.2).

    Invalid Values is only ever raised with its TLV: a fault that no
    complete, well-framed TLV holds (a wrong message length, a parameter
    length that overruns its container or does not fit its type, a missing
    parameter, a bad fixed field) is Unspecified Error (0x0), whose
    definition (RFC 5354 3.12.1) carries no information; see docs/wire.md.
    """

    def __init__(
        self,
        cause: int | None,
        detail: str,
        offending: bytes = b"",
        prior: tuple = (),
    ) -> None:
        super().__init__(detail)
        if cause == CAUSE_INVALID_VALUES and not offending:
            cause = CAUSE_UNSPECIFIED  # Invalid Values without its TLV is not RFC 5354
        self.cause = cause
        self.detail = detail
        self.offending = bytes(offending)
        self.prior = tuple(prior)
        # Set by ``tlv.invalid_container``: the TLV that holds the fault is
        # the one being walked by the caller, who fills ``offending`` in.
        self.needs_container = False

    @property
    def report(self):
        """The error causes a peer would send back, or None (silent discard)."""
        if self.cause is None:
            return None
        if self.cause not in _CAUSES_WITH_INFO:
            return self.prior + (ErrorCause(self.cause, b""),)
        if len(self.offending) > MAX_CAUSE_INFO:
            # Only an unrecognized message of more than 65531 bytes: quoting
            # part of it would send a message with a wrong length inside.
            return self.prior + (ErrorCause(CAUSE_UNSPECIFIED, b""),)
        return self.prior + (ErrorCause(self.cause, self.offending),)

    def __str__(self) -> str:
        code = "silent" if self.cause is None else f"cause 0x{self.cause:x}"
        return f"{self.detail} ({code})"

    def __repr__(self) -> str:
        return f"WireError({self.cause!r}, {self.detail!r}, {len(self.offending)} bytes)"


CAUSE_UNSPECIFIED = 0x0
CAUSE_INVALID_VALUES = 0x3
# Causes whose cause-specific information is the offending bytes.
_CAUSES_WITH_INFO = frozenset({0x1, 0x2, 0x3})
# The most cause-specific information one Error Cause can hold.
MAX_CAUSE_INFO = 0xFFFF - 4


@dataclass(frozen=True, slots=True, repr=False)
class ErrorCause:
    """One error cause (RFC 5354 3.12): its code and cause-specific bytes.

    An Operation Error parameter (:class:`rserpool.wire.params.OperationError`)
    carries one or more of them.
    """

    code: int
    info: bytes = b""

    def __post_init__(self) -> None:
        if type(self.code) is not int or not 0 <= self.code <= 0xFFFF:
            raise ValueError(f"cause code must be 16-bit: {self.code!r}")
        if not isinstance(self.info, bytes):
            raise ValueError("cause info must be bytes")
        if len(self.info) > 0xFFFF - 4:
            raise ValueError("cause info too long")

    @property
    def name(self) -> str:
        return CAUSE_NAMES.get(self.code, f"cause-0x{self.code:04x}")

    def encode(self) -> bytes:
        n = 4 + len(self.info)
        return _CAUSE_HDR.pack(self.code, n) + self.info + _PADDING[n & 3]

    def __str__(self) -> str:
        info = f"[{len(self.info)}B {self.info[:16].hex()}{'..' if len(self.info) > 16 else ''}]"
        return f"{self.name}{info if self.info else ''}"

    __repr__ = __str__


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits on what an attacker controls in one message.

    ``max_message_size`` bounds the bytes handed to ``decode_message``
    (65535 is the 16-bit Message Length maximum).  ``max_parameters``
    counts every TLV, nested ones included; ``max_depth`` is the TLV
    nesting depth (message-level parameters have depth 1, an address inside
    a PE's transport depth 3).  ``max_addresses`` applies per transport,
    ``max_pool_handle`` to the handle's bytes, ``max_causes`` per
    Operation Error.
    """

    max_message_size: int = 65535
    max_parameters: int = 8192
    max_depth: int = 4
    max_addresses: int = 64
    max_pool_handle: int = 255
    max_causes: int = 64

    def __post_init__(self) -> None:
        if not 4 <= self.max_message_size <= 65535 + 3:
            raise ValueError("max_message_size must be within 4..65538")
        for name in ("max_parameters", "max_depth", "max_addresses",
                     "max_pool_handle", "max_causes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")


DEFAULT_LIMITS = Limits()
