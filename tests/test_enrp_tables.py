"""Handle-table pages: bounded in PEs and bytes, M while keys remain."""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address

import pytest

from rserpool.enrp.settings import PeerLimits
from rserpool.enrp.tables import Fetch, Serving, apply_page, encoded_pe, next_page
from rserpool.enrp.updates import Contested, Refused, UpdateApplier
from rserpool.handlespace import Handlespace
from rserpool.asap.registrar import policy_settings
from rserpool.wire import (
    EnrpHandleTableResponse, LeastUsedPolicy, PoolElement, PoolEntry, TcpTransport, decode_message,
)
from rserpool.wire.codes import PPID_ENRP

OWN, OTHER = 1, 2


def filled(count: int, pools: int = 3) -> Handlespace:
    hs = Handlespace()
    for i in range(count):
        home = OWN if i % 2 == 0 else OTHER
        pe = PoolElement(i + 1, home, 30, TcpTransport(7, IPv4Address("127.0.0.1")), LeastUsedPolicy(i))
        hs.register(0.0, pool_handle=b"pool%d" % (i % pools), pe_id=i + 1, settings=policy_settings(pe.policy),
                    transport_type=5, transport_use=0, registration_life=30, home_server_id=home,
                    identity=None if i % 3 else f"pe{i}", payload=pe)
    return hs


def drain(hs: Handlespace, serving: Serving, max_pes: int, max_bytes: int) -> list:
    pages = []
    while True:
        message, data = next_page(hs, serving, OWN, OTHER, max_pes, max_bytes)
        assert decode_message(data, PPID_ENRP) == message  # the bytes are the message
        assert len(data) <= max_bytes + 3
        pages.append(message)
        if not message.more:
            return pages


def test_pages_are_bounded_and_cover_everything_once():
    hs = filled(50)
    serving = Serving.start(hs, OWN, False, 0.0)
    pages = drain(hs, serving, 7, 60_000)
    counts = [sum(len(e.pool_elements) for e in p.entries) for p in pages]
    assert counts == [7] * 7 + [1] and all(p.more for p in pages[:-1])
    seen = [(e.pool_handle, pe.pe_id) for p in pages for e in p.entries for pe in e.pool_elements]
    assert sorted(seen) == sorted((e.pool_handle, e.pe_id) for e in hs.entries())
    identities = {pe.pe_id: e.identity_of(i) for p in pages for e in p.entries
                  for i, pe in enumerate(e.pool_elements)}
    assert identities == {e.pe_id: e.identity for e in hs.entries()}


def test_byte_bound():
    hs = filled(60)
    serving = Serving.start(hs, OWN, False, 0.0)
    pages = drain(hs, serving, 1000, 1024)
    assert len(pages) >= 3
    assert all(len(p.encode()) <= 1024 for p in pages)


def test_own_children_only_and_pes_that_left_meanwhile():
    hs = filled(20)
    serving = Serving.start(hs, OWN, True, 0.0)
    assert len(serving.keys) == 10
    hs.deregister(b"pool0", 1)
    pages = drain(hs, serving, 100, 60_000)
    sent = [pe for p in pages for e in p.entries for pe in e.pool_elements]
    assert len(sent) == 9 and all(pe.home_server_id == OWN for pe in sent)


def test_empty_table_is_one_final_page():
    serving = Serving.start(Handlespace(), OWN, True, 0.0)
    message, _ = next_page(Handlespace(), serving, OWN, OTHER, 10, 60_000)
    assert message == EnrpHandleTableResponse(OWN, OTHER, ()) and serving.done


def test_encoded_pe_is_cached_with_its_payload():
    hs = filled(1)
    entry = next(hs.entries())
    data = encoded_pe(entry)
    assert data == entry.payload.encode() and encoded_pe(entry) is data
    entry.payload = "not a pool element"
    assert encoded_pe(entry) is None


def test_a_full_download_sends_each_pool_home_by_home():
    hs = filled(30)  # homes alternate within every pool
    serving = Serving.start(hs, OWN, False, 0.0)
    order = [(key[0], hs.get(*key).home_server_id) for key in serving.keys]
    runs = [run for run, _ in itertools.groupby(order)]
    assert len(runs) == len(set(runs)) == 6  # one run per pool and home
    assert sorted(serving.keys) == sorted((e.pool_handle, e.pe_id) for e in hs.entries())
    pages = drain(hs, serving, 4, 60_000)
    sent = [(e.pool_handle, pe.pe_id, pe.home_server_id) for p in pages for e in p.entries for pe in e.pool_elements]
    assert [(h, home) for h, _, home in sent] == order


# -- applying a page under takeover's rules (docs/takeover.md) ------------------------------------

P, Q, D, R = 0x0B, 0x0C, 0x0D, 0x0E  # the sender, a live peer, a dead one, a third home


def _pe(pe_id: int, home: int, load: int = 0) -> PoolElement:
    return PoolElement(pe_id, home, 30, TcpTransport(7, IPv4Address("127.0.0.1")), LeastUsedPolicy(load))


def _held_in_every_form() -> UpdateApplier:
    """PEs registered here, homed at a live peer, at a dead one, adopted
    here from the dead one, an unchanged copy of the sender's, and claims
    waiting on some of them and on PEs not held at all."""
    a = UpdateApplier(Handlespace(), OWN, PeerLimits())
    a.handlespace.register(0.0, pool_handle=b"x", pe_id=10, settings=policy_settings(LeastUsedPolicy(0)),
                           transport_type=5, transport_use=0, registration_life=30, home_server_id=OWN,
                           identity="pe10", payload=_pe(10, OWN))
    a.add(Q, b"x", _pe(11, Q), "pe11", 0.0)
    a.add(D, b"x", _pe(12, D), None, 0.0)
    adopted = a.add(D, b"x", _pe(13, D), None, 0.0)
    a.rehome(adopted, OWN)
    a.adopted[(b"x", 13)] = (D, OWN)
    a.handlespace.schedule_expiry(adopted, 30.0)
    a.add(P, b"x", _pe(14, P), None, 0.0)
    a.holds = lambda server_id: server_id != D
    a.defer(Q, b"x", _pe(14, Q), None, 0.5)  # on the sender's unchanged copy
    a.defer(Q, b"new", _pe(21, Q), None, 0.5)  # on a PE nobody holds here
    a.defer(Q, b"third", _pe(31, Q), None, 0.5)  # on a PE the mentor lists for a third home
    return a


def _state(a: UpdateApplier) -> tuple:
    hs = a.handlespace
    entries = sorted((e.pool_handle, e.pe_id, e.home_server_id, e.identity, e.payload, e.expires_at)
                     for e in hs.entries())
    claims = {key: (c.sender, c.pe, c.identity, c.at) for key, c in a.claims.items()}
    return (entries, sorted(a.provisional), dict(a.adopted), claims, {o: hs.checksum(o) for o in hs.owners()},
            hs.next_deadline())


def _one_by_one(a: UpdateApplier, fetch: Fetch, msg: EnrpHandleTableResponse, homes, now: float) -> list:
    """Takeover's page path before the shortcuts: every entry through
    add / add_from_mentor, a contested one kept as a claim."""
    refused = []
    for entry in msg.entries:
        for index, pe in enumerate(entry.pool_elements):
            identity = entry.identities[index] if entry.identities else None
            try:
                if homes is not None:
                    a.add_from_mentor(msg.sender_id, homes, entry.pool_handle, pe, identity, now)
                else:
                    a.add(msg.sender_id, entry.pool_handle, pe, identity, now)
            except Contested:
                a.defer(msg.sender_id, entry.pool_handle, pe, identity, now)
            except Refused as exc:
                refused.append(exc.cause)
                continue
            fetch.marked.discard((entry.pool_handle, pe.pe_id))
    return refused


@pytest.mark.parametrize("mentor", [False, True])
def test_a_page_ends_as_takeovers_one_by_one_path_with_adopted_pes_and_contested_claims(mentor):
    entries = [PoolEntry(b"new", tuple(_pe(i, P) for i in range(20, 26))),  # a run of new PEs: one insert
               PoolEntry(b"x", tuple(_pe(i, P) for i in range(10, 15)))]  # held in every form
    if mentor:
        entries.append(PoolEntry(b"third", (_pe(30, R), _pe(31, R), _pe(32, R))))  # provisional copies
    msg = EnrpHandleTableResponse(P, OWN, tuple(entries), more=True)
    homes = {P, Q, R} if mentor else None
    marked = {(b"x", 14), (b"new", 21), (b"x", 99)}
    fast, slow = _held_in_every_form(), _held_in_every_form()
    fast_fetch = Fetch(not mentor, mentor, 0.0, set(marked))
    slow_fetch = Fetch(not mentor, mentor, 0.0, set(marked))
    refused: list = []
    assert apply_page(fast, fast_fetch, msg, homes, 1.0, lambda exc: refused.append(exc.cause))
    assert refused == _one_by_one(slow, slow_fetch, msg, homes, 1.0) == []
    assert _state(fast) == _state(slow) and fast_fetch.marked == slow_fetch.marked == {(b"x", 99)}
    # What the rules say, spelled out: held here and at live Q: claims; the
    # dead home's and the adopted copy: taken; the claim on the unchanged copy
    # and on a new PE: gone, the one on a mentor's provisional copy: kept.
    homes_now = {(e.pool_handle, e.pe_id): e.home_server_id for e in fast.handlespace.entries()}
    assert [homes_now[(b"x", i)] for i in range(10, 15)] == [OWN, Q, P, P, P]
    assert sorted(fast.claims) == [(b"third", 31), (b"x", 10), (b"x", 11)]
    assert not fast.adopted and fast.stats["yielded"] == slow.stats["yielded"] == 1
