"""rserpool.asap.hunt: the pure parts of the ENRP server hunt (``now`` passed in)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from rserpool.asap.hunt import (
    ASAP_TLS_PORT, AnnounceTable, AnnounceVerdict, Backoff, Candidate, HuntRound, Origin,
    SrvTarget, StaticEntry, dedupe, order_for_round, parse_host_port, srv_order,
)


def cand(n: int, port: int = 3864, origin: Origin = Origin.STATIC) -> Candidate:
    return Candidate(f"127.0.0.{n}", port, f"r{n}.test", origin)


# --- parsing -----------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:3864", ("127.0.0.1", 3864)),
    ("registrar.Example.NET.:99", ("registrar.example.net", 99)),
    ("[::1]:3864", ("::1", 3864)),
    ("[::1]", ("::1", ASAP_TLS_PORT)),
    ("::1", ("::1", ASAP_TLS_PORT)),
    ("2001:db8::0001", ("2001:db8::1", ASAP_TLS_PORT)),
    ("host", ("host", ASAP_TLS_PORT)),
])
def test_parse_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text, ASAP_TLS_PORT) == expected


@pytest.mark.parametrize("text", ["", ":80", "host:", "host:0", "host:65536", "host:x1",
                                  "[::1", "[::1]x", "[::1]:"])
def test_parse_host_port_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_host_port(text, 3864)


def test_parse_needs_port_without_default() -> None:
    with pytest.raises(ValueError):
        parse_host_port("host")


def test_static_entry_names() -> None:
    ip = StaticEntry.parse("127.0.0.1:4000")
    assert (ip.host, ip.port, ip.is_ip, ip.tls_name) == ("127.0.0.1", 4000, True, "127.0.0.1")
    named_ip = StaticEntry.parse("10.0.0.1:4000  registrar.example.net")
    assert named_ip.tls_name == "registrar.example.net"
    dns = StaticEntry.parse("Registrar.Example.net")
    assert (dns.is_ip, dns.port, dns.tls_name) == (False, ASAP_TLS_PORT, "registrar.example.net")
    with pytest.raises(ValueError):
        StaticEntry.parse("a:1 b c")


def test_candidate_validation() -> None:
    with pytest.raises(ValueError):
        Candidate("registrar.test", 1, "x")  # must be resolved first
    with pytest.raises(ValueError):
        Candidate("127.0.0.1", 0, "x")
    with pytest.raises(ValueError):
        Candidate("127.0.0.1", 1, "")
    assert Candidate("::1", 5, "x").describe().startswith("[::1]:5")
    # One form of an address in log lines; the TLS name and the origin only when they add something.
    assert Candidate("127.0.0.1", 3864, "127.0.0.1", Origin.STATIC, "127.0.0.1:3864").describe() \
        == "127.0.0.1:3864 (static)"
    assert Candidate("127.0.0.1", 9911, "registrar-a.test", Origin.STATIC, "127.0.0.1:9911").describe() \
        == "127.0.0.1:9911 (registrar-a.test, static)"
    assert Candidate("192.0.2.7", 3864, "192.0.2.7", Origin.ANNOUNCE, "from 192.0.2.7").describe() \
        == "192.0.2.7:3864 (announce from 192.0.2.7)"
    assert Candidate("::1", 5, "x").family == 6


# --- SRV ordering (RFC 2782) -------------------------------------------------------------


def test_srv_priority_first() -> None:
    records = [SrvTarget(20, 100, 1, "c"), SrvTarget(10, 0, 2, "a"), SrvTarget(10, 0, 3, "b"),
               SrvTarget(30, 0, 4, "d")]
    order = srv_order(records, random.Random(1))
    assert [r.priority for r in order] == [10, 10, 20, 30]
    assert {r.target for r in order[:2]} == {"a", "b"}


def test_srv_dot_target_means_no_service() -> None:
    assert srv_order([SrvTarget(0, 0, 0, ".")], random.Random(0)) == []


def test_srv_weights_distribution() -> None:
    rng = random.Random(42)
    records = [SrvTarget(10, 60, 1, "heavy"), SrvTarget(10, 30, 2, "mid"),
               SrvTarget(10, 10, 3, "light"), SrvTarget(10, 0, 4, "zero")]
    firsts = Counter(srv_order(records, rng)[0].target for _ in range(4000))
    # P(first) = weight / (total + 1 draw slot for 0): 60/100, 30/100, 10/100, ~0
    assert 0.55 < firsts["heavy"] / 4000 < 0.65
    assert 0.25 < firsts["mid"] / 4000 < 0.35
    assert 0.07 < firsts["light"] / 4000 < 0.13
    assert firsts["zero"] / 4000 < 0.02  # 1/101


def test_srv_all_zero_weights_each_can_come_first() -> None:
    rng = random.Random(3)
    records = [SrvTarget(1, 0, p, f"t{p}") for p in range(1, 4)]
    firsts = Counter(srv_order(records, rng)[0].target for _ in range(300))
    assert set(firsts) == {"t1", "t2", "t3"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 20)), max_size=12), st.integers())
def test_srv_order_is_a_priority_sorted_permutation(spec, seed) -> None:
    records = [SrvTarget(p, w, i + 1, f"t{i}") for i, (p, w) in enumerate(spec)]
    order = srv_order(records, random.Random(seed))
    assert sorted(order, key=lambda r: r.port) == records
    assert [r.priority for r in order] == sorted(r.priority for r in records)


# --- ordering, dedupe ----------------------------------------------------------------------


def test_dedupe_keeps_first() -> None:
    a = Candidate("127.0.0.1", 1, "first")
    b = Candidate("127.0.0.1", 1, "second", Origin.SRV)
    assert dedupe([a, b, cand(2)]) == [a, cand(2)]


def test_order_for_round_moves_avoided_to_the_end() -> None:
    cs = [cand(1), cand(2), cand(3), cand(4)]
    assert order_for_round(cs, {cand(2).key, cand(1).key}) == [cand(3), cand(4), cand(1), cand(2)]
    assert order_for_round(cs) == cs


# --- T5 back-off ---------------------------------------------------------------------------


def test_backoff_sequence() -> None:
    b = Backoff()
    assert b.sequence(6) == [10, 20, 40, 60, 60, 60]
    assert [b.current] + [b.expired() for _ in range(5)] == [10, 20, 40, 60, 60, 60]
    b.reset()
    assert b.current == 10
    assert Backoff(1.5, 5).sequence(4) == [1.5, 3, 5, 5]
    with pytest.raises(ValueError):
        Backoff(10, 5)
    with pytest.raises(ValueError):
        Backoff(0, 5)


# --- announces -------------------------------------------------------------------------------


def test_announce_expiry_and_refresh() -> None:
    table = AnnounceTable(lifetime=5.0)
    a = cand(1, origin=Origin.ANNOUNCE)
    assert table.observe(a, "127.0.0.1", now=100.0) is AnnounceVerdict.NEW
    assert table.candidates(104.9) == [a]
    assert table.observe(a, "127.0.0.1", now=104.0) is AnnounceVerdict.REFRESHED
    assert table.candidates(108.9) == [a]  # refreshed at 104: lives until 109
    assert table.next_expiry() == 109.0
    assert table.candidates(109.0) == []
    assert len(table) == 0


def test_announce_order_is_first_seen() -> None:
    table = AnnounceTable()
    for n in (3, 1, 2):
        table.observe(cand(n), f"127.0.0.{n}", 0.0)
    table.observe(cand(3), "127.0.0.3", 1.0)  # a refresh keeps its place
    assert table.candidates(2.0) == [cand(3), cand(1), cand(2)]


def test_announce_bound_total_refuses_new_keeps_known() -> None:
    table = AnnounceTable(lifetime=10.0, max_entries=3, max_per_source=3)
    for n in range(1, 4):
        assert table.observe(cand(n), f"10.0.0.{n}", 0.0) is AnnounceVerdict.NEW
    # a flood of new addresses is refused; the known ones stay and refresh
    for n in range(4, 50):
        assert table.observe(cand(n), f"10.0.0.{n}", 1.0) is AnnounceVerdict.REJECTED_FULL
    assert table.observe(cand(1), "10.0.0.1", 2.0) is AnnounceVerdict.REFRESHED
    assert table.rejected == 46
    assert table.candidates(3.0) == [cand(1), cand(2), cand(3)]
    # once entries expire there is room again
    assert table.candidates(11.5) == [cand(1)]
    assert table.observe(cand(9), "10.0.0.9", 11.5) is AnnounceVerdict.NEW


def test_announce_bound_per_source() -> None:
    table = AnnounceTable(max_entries=10, max_per_source=2)
    assert table.observe(cand(1, 1), "10.9.9.9", 0.0) is AnnounceVerdict.NEW
    assert table.observe(cand(1, 2), "10.9.9.9", 0.0) is AnnounceVerdict.NEW
    assert table.observe(cand(1, 3), "10.9.9.9", 0.0) is AnnounceVerdict.REJECTED_SOURCE
    assert table.observe(cand(2, 3), "10.0.0.2", 0.0) is AnnounceVerdict.NEW
    assert len(table) == 3


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.integers(1, 6), st.floats(0, 3)), max_size=80))
def test_announce_table_never_exceeds_bounds(events) -> None:
    table = AnnounceTable(lifetime=4.0, max_entries=8, max_per_source=3)
    now = 0.0
    for host, source, step in events:
        now += step
        table.observe(cand(host), f"10.0.0.{source}", now)
        live = table.candidates(now)
        assert len(live) <= 8
        assert max(Counter(e.source_ip for e in table._entries.values()).values(), default=0) <= 3
        assert table.next_expiry() is None or table.next_expiry() > now


# --- rounds -----------------------------------------------------------------------------------


def test_round_at_most_three_in_flight_in_order() -> None:
    r = HuntRound([cand(n) for n in range(1, 7)])
    assert r.to_start() == [cand(1), cand(2), cand(3)]
    assert r.to_start() == []
    r.failed(cand(2), "refused")
    assert r.to_start() == [cand(4)]
    assert len(r.in_flight) == 3
    r.failed(cand(1), "x")
    r.failed(cand(3), "x")
    assert r.to_start() == [cand(5), cand(6)]
    assert not r.exhausted
    others = r.succeeded(cand(5))
    assert others == [cand(4), cand(6)]
    assert r.winner == cand(5) and r.to_start() == [] and not r.exhausted
    assert [c for c, _ in r.failures] == [cand(2), cand(1), cand(3)]


def test_round_exhausted_and_late_additions() -> None:
    r = HuntRound([cand(1)], max_parallel=1)
    [c] = r.to_start()
    r.failed(c, "no")
    assert r.exhausted
    assert r.add([cand(1), cand(2)]) == 1  # cand(1) was tried in this round already
    assert r.to_start() == [cand(2)]
    assert r.stop() == [cand(2)] and r.exhausted


def test_round_rejects_bad_parallelism_and_unknown_winner() -> None:
    with pytest.raises(ValueError):
        HuntRound([], max_parallel=4)
    with pytest.raises(ValueError):
        HuntRound([], max_parallel=0)
    r = HuntRound([cand(1)])
    with pytest.raises(ValueError):
        r.succeeded(cand(1))  # not started
