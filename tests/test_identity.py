"""rserpool.identity: the one rule for identity spellings (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rserpool.identity import MAX_IDENTITY_LENGTH, normalize_identity, is_normalized_identity


@pytest.mark.parametrize("spelling", ["pe1", "PE1", "Pe1", " pe1", "pe1 ", "ＰＥ１",
                                      "pe1\u00a0"])
def test_spellings_a_backend_takes_for_pe1_are_pe1(spelling: str) -> None:
    assert normalize_identity(spelling) == "pe1"


def test_inner_white_space_case_and_compatibility_forms() -> None:
    assert normalize_identity("  Alice   Smith ") == "alice smith"
    assert normalize_identity("Alice\u3000Smith") == "alice smith"  # ideographic space
    assert normalize_identity("STRASSE") == normalize_identity("Straße") == "strasse"
    assert normalize_identity("e\u0301") == "\u00e9"  # composed


@pytest.mark.parametrize("bad", ["", " ", "\u00a0", "pe\t1", "pe1\n", "pe\u200b1", "pe1\u202e",
                                 "pe\x001", "pe\x7f", "pe\u2028", "x" * (MAX_IDENTITY_LENGTH + 1),
                                 "é" * 128, None, b"pe1", 7])
def test_no_identity(bad: object) -> None:
    assert normalize_identity(bad) is None
    assert not is_normalized_identity(bad)


def test_longest() -> None:
    assert normalize_identity("x" * MAX_IDENTITY_LENGTH) == "x" * MAX_IDENTITY_LENGTH
    assert normalize_identity(" " * 900 + "pe1") == "pe1"
    assert normalize_identity(" " * 2000 + "pe1") is None  # refused before any work


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_normalized_form_is_a_fixed_point(text: str) -> None:
    name = normalize_identity(text)
    if name is not None:
        assert normalize_identity(name) == name and is_normalized_identity(name)
        assert len(name.encode()) <= MAX_IDENTITY_LENGTH and name == name.strip()
