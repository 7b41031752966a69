"""The peer table: server IDs bound to certificate identities."""

from __future__ import annotations

import pytest

from rserpool.enrp.peers import BindRefused, PeerLink, PeerTable

OWN = 0x50


def link(identity: str, initiator: bool = False) -> PeerLink:
    return PeerLink(object(), identity, "127.0.0.1", initiator, 0.0)


def test_bind_records_identity_and_time():
    table = PeerTable(OWN, 4)
    first = link("reg-a")
    table.add_link(first)
    assert table.bind(first, 0x10, 5.0) is None
    assert first.server_id == 0x10 and first.bound
    record = table.records[0x10]
    assert (record.identity, record.last_heard, record.link) == ("reg-a", 5.0, first)
    assert list(table.active()) == [first]


@pytest.mark.parametrize("server_id, reason", [(0, "reserved"), (OWN, "own server ID")])
def test_reserved_and_own_ids_are_refused(server_id, reason):
    table = PeerTable(OWN, 4)
    with pytest.raises(BindRefused, match=reason):
        table.bind(link("reg-a"), server_id, 0.0)
    assert table.records == {}


def test_an_id_held_by_another_identity_is_refused_even_after_its_channel_closed():
    table = PeerTable(OWN, 4)
    first = link("reg-a")
    table.bind(first, 0x10, 0.0)
    with pytest.raises(BindRefused, match="held by reg-a"):
        table.bind(link("reg-b"), 0x10, 1.0)
    table.unlink(first)
    with pytest.raises(BindRefused, match="held by reg-a"):
        table.bind(link("reg-b"), 0x10, 2.0)
    again = link("reg-a")
    assert table.bind(again, 0x10, 3.0) is None  # the same peer reconnecting
    assert table.records[0x10].link is again


@pytest.mark.parametrize("own, new_initiator, keep_new", [
    (OWN, False, True),   # 0x10 < OWN: keep the channel 0x10 opened (we did not initiate it)
    (OWN, True, False),
    (0x05, True, True),   # OWN 0x05 < 0x10: keep the channel we opened
    (0x05, False, False),
])
def test_two_channels_between_the_same_servers_keep_the_smaller_ids(own, new_initiator, keep_new):
    table = PeerTable(own, 4)
    old = link("reg-a", initiator=not new_initiator)
    table.bind(old, 0x10, 0.0)
    new = link("reg-a", initiator=new_initiator)
    if keep_new:
        assert table.bind(new, 0x10, 1.0) is old
        assert table.records[0x10].link is new
    else:
        with pytest.raises(BindRefused) as info:
            table.bind(new, 0x10, 1.0)
        assert info.value.duplicate and table.records[0x10].link is old


def test_the_peer_list_is_bounded():
    table = PeerTable(OWN, 2)
    table.bind(link("a"), 1, 0.0)
    table.bind(link("b"), 2, 0.0)
    with pytest.raises(BindRefused, match="full"):
        table.bind(link("c"), 3, 0.0)


def test_heard_clears_the_probe_and_unlink_keeps_the_record():
    table = PeerTable(OWN, 4)
    first = link("reg-a")
    table.add_link(first)
    table.bind(first, 0x10, 0.0)
    first.probe_deadline = 9.0
    table.heard(first, 7.0)
    assert first.probe_deadline is None and table.records[0x10].last_heard == 7.0
    record = table.unlink(first)
    assert record is table.records[0x10] and record.link is None and first.closed
    assert list(table.active()) == [] and table.drop(0x10) is record


def test_a_server_a_mentor_listed_is_an_unlinked_record_whose_identity_the_first_channel_binds():
    table = PeerTable(OWN, 3)
    for server_id in (0x10, 0x20, 0, OWN, 0x30, 0x40):  # 0 and our own ID never; then the list is full
        table.listed(server_id, 5.0)
    assert sorted(table.records) == [0x10, 0x20, 0x30] and table.records[0x10].identity is None
    assert table.active() == [] and table.records[0x10].last_heard == 5.0
    first = link("reg-a")
    table.bind(first, 0x10, 6.0)
    assert table.records[0x10].identity == "reg-a" and table.active() == [first]
    table.unlink(first)
    with pytest.raises(BindRefused, match="held by reg-a"):  # bound from then on, as any peer
        table.bind(link("reg-b"), 0x10, 7.0)
    table.listed(0x10, 8.0)  # listed again: nothing changes
    assert table.records[0x10].identity == "reg-a" and table.records[0x10].last_heard == 6.0
