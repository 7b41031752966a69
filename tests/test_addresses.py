"""rserpool.addresses: the per-address accounting key (pure)."""

from __future__ import annotations

import pytest

from rserpool.addresses import address_key


def test_ipv4_is_its_own_key() -> None:
    assert address_key("192.0.2.1") == "192.0.2.1"
    assert address_key("192.0.2.1") != address_key("192.0.2.2")


def test_ipv6_counts_by_prefix() -> None:
    one, other = address_key("2001:db8:1:2::1"), address_key("2001:db8:1:2:ffff:ffff:ffff:fffe")
    assert one == other == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != one
    assert address_key("2001:db8:1:2::1", 128) != address_key("2001:db8:1:2::2", 128)
    assert address_key("2001:db8:1:2:3::1", 48) == address_key("2001:db8:1:99::1", 48)
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key("::1") == "::/64"


def test_ipv4_mapped_and_odd_hosts() -> None:
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key("") == "" and address_key("/run/x.sock") == "/run/x.sock"
    assert address_key("not:an:address") == "not:an:address"
    with pytest.raises(ValueError):
        address_key("2001:db8::1", 129)
