"""rserpool.identity: the one rule for identity spellings (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rserpool.identity import MAX_IDENTITY_BYTES, canonical_identity, is_canonical_identity


@pytest.mark.parametrize("spelling", ["pe1", "PE1", "Pe1", " pe1", "pe1 ", "ＰＥ１",
                                      "pe1\u00a0"])
def test_spellings_a_backend_takes_for_pe1_are_pe1(spelling: str) -> None:
    assert canonical_identity(spelling) == "pe1"


def test_inner_white_space_case_and_compatibility_forms() -> None:
    assert canonical_identity("  Alice   Smith ") == "alice smith"
    assert canonical_identity("Alice\u3000Smith") == "alice smith"  # ideographic space
    assert canonical_identity("STRASSE") == canonical_identity("Straße") == "strasse"
    assert canonical_identity("e\u0301") == "\u00e9"  # composed


@pytest.mark.parametrize("bad", ["", " ", "\u00a0", "pe\t1", "pe1\n", "pe\u200b1", "pe1\u202e",
                                 "pe\x001", "pe\x7f", "pe\u2028", "x" * (MAX_IDENTITY_BYTES + 1),
                                 "é" * 128, None, b"pe1", 7])
def test_no_identity(bad: object) -> None:
    assert canonical_identity(bad) is None
    assert not is_canonical_identity(bad)


def test_longest() -> None:
    assert canonical_identity("x" * MAX_IDENTITY_BYTES) == "x" * MAX_IDENTITY_BYTES
    assert canonical_identity(" " * 900 + "pe1") == "pe1"
    assert canonical_identity(" " * 2000 + "pe1") is None  # refused before any work


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_canonical_form_is_a_fixed_point(text: str) -> None:
    name = canonical_identity(text)
    if name is not None:
        assert canonical_identity(name) == name and is_canonical_identity(name)
        assert len(name.encode()) <= MAX_IDENTITY_BYTES and name == name.strip()
