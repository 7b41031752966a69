"""Unit tests of rserpool.handlespace.entries: the stored values, the
limits and the errors."""

from __future__ import annotations

import pytest

from rserpool.handlespace import (
    CAUSE_LACK_OF_RESOURCES,
    ROUND_ROBIN,
    TRANSPORT_TCP,
    USE_DATA_ONLY,
    HandlespaceError,
    HandlespaceLimits,
    PolicySettings,
)
from rserpool.handlespace.entries import PoolElementEntry


def test_limits_validation() -> None:
    with pytest.raises(ValueError):
        HandlespaceLimits(max_pools=0)
    with pytest.raises(ValueError):
        HandlespaceLimits(unreachable_window=0)
    for name in ("max_pes", "max_pes_per_identity", "max_pool_handle_length",
                 "max_registration_life", "max_unreachable_reporters", "max_pes_per_pool"):
        with pytest.raises(ValueError, match=name):
            HandlespaceLimits(**{name: 0})
    assert HandlespaceLimits().max_registration_life == 0x7FFFFFFF


def test_error_carries_its_cause() -> None:
    error = HandlespaceError(CAUSE_LACK_OF_RESOURCES, "too many PEs")
    assert (error.cause, error.detail) == (0x6, "too many PEs")
    assert str(error) == "cause 0x6: too many PEs"


def test_a_new_entry_has_no_deadlines_and_no_reports() -> None:
    entry = PoolElementEntry(b"pool", 0x1234, PolicySettings(ROUND_ROBIN), TRANSPORT_TCP,
                             USE_DATA_ONLY, 30_000, 0x99, identity="pe1", payload="wire")
    assert (entry.expires_at, entry.keepalive_due, entry.unreachable) == (None, None, None)
    assert (entry.identity, entry.payload, entry.payload_cache, entry.reply_cache) == (
        "pe1", "wire", None, None)
    assert repr(entry) == ("PoolElementEntry(pool_handle=b'pool', pe_id=0x00001234, "
                           "policy=0x00000001, home=0x00000099)")
    assert not hasattr(entry, "__dict__")
