"""rserpool.service.slots: which idle anonymous channel makes room for a
newcomer (pure; the time is passed in)."""

from __future__ import annotations

import pytest

from rserpool.service.slots import IdleEviction


class Fake:
    def __init__(self, name: str, last: float = 0.0, keep: bool = False) -> None:
        self.name, self.last_message_at, self.keep = name, last, keep
        self.slot_key = None

    def __repr__(self) -> str:
        return self.name


def evictable(channel: Fake, now: float) -> float | None:
    """As on the registrar: never while it is someone; else 5 s after its last message."""
    return None if channel.keep else channel.last_message_at + 5.0


def fill(eviction: IdleEviction, hosts: list[str], **kw) -> list[Fake]:
    out = []
    for n, host in enumerate(hosts):
        channel = Fake(f"{host}#{n}", **kw)
        eviction.add(host, channel)
        out.append(channel)
    return out


def test_from_the_same_address_the_longest_idle_goes() -> None:
    eviction = IdleEviction()
    a = fill(eviction, ["127.0.0.1"] * 3)
    fill(eviction, ["127.0.0.2"] * 3)
    a[0].last_message_at, a[1].last_message_at, a[2].last_message_at = 2.0, 1.0, 4.0
    assert eviction.pick("127.0.0.1", 5.5, evictable) is None  # nobody idle 5 s yet
    assert eviction.pick("127.0.0.1", 6.5, evictable) is a[1]  # idle since 1.0
    assert a[1].slot_key is None and len(eviction.by_key["127.0.0.1"]) == 2
    eviction.remove(a[1])  # its close arrives later: nothing happens twice
    assert eviction.evictions == 1


def test_from_any_address_but_never_an_identity() -> None:
    eviction = IdleEviction()
    kept = fill(eviction, ["127.0.0.1", "127.0.0.2"], keep=True)  # authenticated, or holding PEs
    idle = fill(eviction, ["127.0.0.3", "127.0.0.4"])
    idle[1].last_message_at = -3.0
    assert eviction.pick(None, 10.0, evictable) is idle[1]
    assert eviction.pick(None, 10.0, evictable) is idle[0]
    assert eviction.pick(None, 10.0, evictable) is None
    assert all(c.slot_key is not None for c in kept)


def test_a_full_listener_is_not_rescanned_for_every_newcomer() -> None:
    eviction = IdleEviction()
    fill(eviction, [f"127.0.1.{n}" for n in range(50)], keep=True)
    calls = []

    def counting(channel: Fake, now: float) -> float | None:
        calls.append(channel)
        return evictable(channel, now)

    for n in range(100):
        assert eviction.pick(None, 1.0 + n * 0.001, counting) is None
    assert len(calls) == 50  # one scan, then none until a second later
    assert eviction.pick(None, 2.5, counting) is None and len(calls) == 100


def test_ipv6_hosts_of_one_prefix_are_one_address() -> None:
    eviction = IdleEviction()
    one = fill(eviction, ["2001:db8:1:2::1", "2001:db8:1:2::2"])
    assert eviction.key_of("2001:db8:1:2::3") == "2001:db8:1:2::/64"
    assert eviction.pick("2001:db8:1:2::99", 10.0, evictable) in one
    assert eviction.pick("2001:db8:1:3::1", 10.0, evictable) is None
    assert IdleEviction(128).key_of("2001:db8:1:2::3") != IdleEviction(128).key_of("2001:db8:1:2::4")
    with pytest.raises(ValueError):
        IdleEviction(129)
