"""The PE checksum of RFC 5353 section 3.6.2.

Each pool element owned by an ENRP server contributes one block: its pool
handle, zero-padded to a multiple of 4 bytes, followed by its 32-bit PE
identifier in network byte order.  The checksum is the RFC 1071 Internet
checksum (the ones'-complement of the ones'-complement sum of 16-bit words)
over the concatenation of all blocks.

Ones'-complement addition is the ordinary sum of the 16-bit words with the
carries folded back in at the end, so an owner's checksum can be kept
incrementally and exactly as a plain integer: add ``pe_sum(handle, id)`` when
a PE is added, subtract it when the PE leaves, and call ``finish`` on the
running total to get the value for the PE Checksum parameter.  An owner with
no PEs has total 0 and checksum 0xffff, as RFC 1071 gives for empty data.
"""

from __future__ import annotations

import struct
from typing import Iterable

__all__ = ["pe_sum", "finish", "pe_checksum"]


def pe_sum(pool_handle: bytes, pe_id: int) -> int:
    """The plain (unfolded) sum of the 16-bit words of one PE's block."""
    size = len(pool_handle)
    block = pool_handle + _PAD[size & 3]
    total = sum(struct.unpack(_WORDS[size] if size <= 256 else f"!{len(block) >> 1}H", block))
    pe_id &= 0xFFFFFFFF
    return total + (pe_id >> 16) + (pe_id & 0xFFFF)


#: Zero padding to a multiple of 4 bytes, by the length's remainder.
_PAD = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")
#: The struct format of the 16-bit words of a padded handle of each short length.
_WORDS = tuple(f"!{((n + 3) & ~3) >> 1}H" for n in range(257))


def finish(total: int) -> int:
    """The checksum for a running total of ``pe_sum`` values."""
    if total < 0:
        raise ValueError("negative checksum total: a PE was removed twice")
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pe_checksum(entries: Iterable[tuple[bytes, int]]) -> int:
    """Full computation over ``(pool_handle, pe_id)`` pairs."""
    return finish(sum(pe_sum(h, p) for h, p in entries))
