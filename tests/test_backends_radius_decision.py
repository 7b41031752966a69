"""rserpool.backends.radius_decision: pools and groups from a RADIUS reply's
attributes."""

from __future__ import annotations

import pytest

from rserpool.backends.radius_decision import MAX_POOLS, RadiusDecision, decision_from_attributes


ATTRS = {
    "Class": (b"rserpool:pools=echo, discard;groups=pe,ops", b"other-class", b"rserpool:junk",
              b"\xff\xfe"),
    "Filter-Id": ("echo-servers",),
    "RSerPool-Allowed-Pool": ("daytime-*", "echo"),
    "RSerPool-Group": ("vsa-group",),
}


def test_decision_sources() -> None:
    d = decision_from_attributes("pe1", True, ATTRS, ["class"])
    assert d.pools == ("echo", "discard") and d.groups == {"pe", "ops"}
    d = decision_from_attributes("pe1", True, ATTRS, ["filter-id"])
    assert d.pools == () and d.groups == {"echo-servers"}
    d = decision_from_attributes("pe1", True, ATTRS, ["vsa"])
    assert d.pools == ("daytime-*", "echo") and d.groups == {"vsa-group"}
    d = decision_from_attributes("pe1", True, ATTRS)
    assert d.pools == ("echo", "discard", "daytime-*") and len(d.groups) == 4
    refused = decision_from_attributes("pe1", False, ATTRS)
    assert refused.pools == () and refused.groups == frozenset()
    with pytest.raises(ValueError):
        decision_from_attributes("pe1", True, ATTRS, ["ldap"])


def test_decision_limits_and_blanks() -> None:
    many = ",".join(f"p{n}" for n in range(200))
    d = decision_from_attributes("x", True, {"Class": (f"rserpool:pools={many}, bad name,,".encode(),)})
    assert len(d.pools) == MAX_POOLS and "bad name" not in d.pools


def test_a_decision_compares_without_its_attributes() -> None:
    a = RadiusDecision(True, "pe1", frozenset({"g"}), ("p",), {"Class": (b"x",)})
    b = RadiusDecision(True, "pe1", frozenset({"g"}), ("p",), {})
    assert a == b and RadiusDecision(False, "pe1") != RadiusDecision(True, "pe1")
