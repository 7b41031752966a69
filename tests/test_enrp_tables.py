"""Handle-table pages: bounded in PEs and bytes, M while keys remain."""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address

from rserpool.enrp.tables import Serving, encoded_pe, next_page
from rserpool.handlespace import Handlespace
from rserpool.asap.registrar import policy_settings
from rserpool.wire import (
    EnrpHandleTableResponse, LeastUsedPolicy, PoolElement, TcpTransport, decode_message,
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
