"""rserpool.service.slots: connection limits that idle anonymous channels
cannot hold against newcomers (pure; the time is passed in)."""

from __future__ import annotations

import pytest

from rserpool.service.slots import ConnectionSlots


class Fake:
    def __init__(self, name: str, last: float = 0.0, keep: bool = False) -> None:
        self.name, self.last_message_at, self.keep = name, last, keep
        self.slot_key = None

    def __repr__(self) -> str:
        return self.name


def evictable(channel: Fake, now: float) -> float | None:
    """As on the registrar: never while it is someone; else 5 s after its last message."""
    return None if channel.keep else channel.last_message_at + 5.0


def fill(slots: ConnectionSlots, hosts: list[str], now: float = 0.0, **kw) -> list[Fake]:
    out = []
    for n, host in enumerate(hosts):
        admission = slots.admit(host, now, evictable)
        assert admission.key is not None and admission.evicted is None
        channel = Fake(f"{host}#{n}", now, **kw)
        slots.add(admission.key, channel)
        out.append(channel)
    return out


def test_per_address_limit_evicts_the_longest_idle_of_that_address() -> None:
    slots = ConnectionSlots(100, 3)
    a = fill(slots, ["127.0.0.1"] * 3)
    fill(slots, ["127.0.0.2"] * 3, now=0.0)
    a[0].last_message_at, a[1].last_message_at, a[2].last_message_at = 2.0, 1.0, 4.0
    # Nobody idle 5 s yet: refused.
    assert slots.admit("127.0.0.1", 5.5, evictable).key is None
    admission = slots.admit("127.0.0.1", 6.5, evictable)
    assert admission.key == "127.0.0.1" and admission.evicted is a[1]  # idle since 1.0
    assert a[1].slot_key is None and slots.counts()["127.0.0.1"] == 2
    slots.remove(a[1])  # its close arrives later: nothing happens twice
    assert slots.total == 5 and slots.evictions == 1


def test_global_limit_evicts_from_any_address_but_not_identities() -> None:
    slots = ConnectionSlots(4, 10)
    kept = fill(slots, ["127.0.0.1", "127.0.0.2"], keep=True)  # authenticated, or holding PEs
    idle = fill(slots, ["127.0.0.3", "127.0.0.4"])
    idle[1].last_message_at = -3.0
    admission = slots.admit("127.0.0.9", 10.0, evictable)
    assert admission.evicted is idle[1]
    slots.add(admission.key, Fake("new", 10.0))
    slots.add(slots.admit("127.0.0.9", 10.0, evictable).key, Fake("new2", 10.0))  # idle[0] goes
    assert slots.total == 4 and all(c.slot_key is not None for c in kept)
    assert slots.admit("127.0.0.8", 10.0, evictable).key is None  # only the kept and the new


def test_full_listener_is_not_rescanned_for_every_refused_newcomer() -> None:
    slots = ConnectionSlots(50, 50)
    fill(slots, [f"127.0.1.{n}" for n in range(50)], keep=True)
    calls = []

    def counting(channel: Fake, now: float) -> float | None:
        calls.append(channel)
        return evictable(channel, now)

    for n in range(100):
        assert slots.admit("127.0.0.9", 1.0 + n * 0.001, counting).key is None
    assert len(calls) == 50  # one scan, then refused at once until a second later
    assert slots.admit("127.0.0.9", 2.5, counting).key is None and len(calls) == 100


def test_ipv6_hosts_of_one_prefix_share_the_per_address_limit() -> None:
    slots = ConnectionSlots(100, 2)
    fill(slots, ["2001:db8:1:2::1", "2001:db8:1:2::2"])
    assert slots.admit("2001:db8:1:2::3", 1.0, evictable).key is None
    assert slots.admit("2001:db8:1:3::1", 1.0, evictable).key == "2001:db8:1:3::/64"
    eight = ConnectionSlots(100, 2, ipv6_prefix=128)
    fill(eight, ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2::3"])
    with pytest.raises(ValueError):
        ConnectionSlots(0, 1)
