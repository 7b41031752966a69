"""The ownership rules and per-peer limits between peers and the handlespace."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from rserpool.asap.registrar import policy_settings
from rserpool.enrp.settings import PeerLimits
from rserpool.enrp.updates import Refused, UpdateApplier
from rserpool.handlespace import Handlespace
from rserpool.security.ratelimit import RateLimit
from rserpool.wire import LeastUsedPolicy, PoolElement, RoundRobinPolicy, TcpTransport
from rserpool.wire import codes

OWN, P, Q = 1, 2, 3


def pe(pe_id: int, home: int, policy=None) -> PoolElement:
    return PoolElement(pe_id, home, 30, TcpTransport(7, IPv4Address("127.0.0.1")), policy or LeastUsedPolicy(0))


def applier(**limits) -> UpdateApplier:
    return UpdateApplier(Handlespace(), OWN, PeerLimits(**limits))


def test_add_stores_the_pe_without_a_deadline_and_with_its_identity():
    a = applier()
    entry = a.add(P, b"echo", pe(5, P), "pe5", 0.0)
    assert entry.home_server_id == P and entry.identity == "pe5" and entry.expires_at is None
    assert a.handlespace.next_deadline() is None
    assert entry.payload == pe(5, P)


@pytest.mark.parametrize("setup, pe_home, reason", [
    ((), Q, "names home 00000003"),
    (((OWN,),), P, "homed at this registrar"),
    (((Q,),), P, "homed at 00000003"),
])
def test_add_refuses_pes_of_others(setup, pe_home, reason):
    a = applier()
    for (home,) in setup:
        a.handlespace.register(0.0, pool_handle=b"echo", pe_id=5, settings=policy_settings(LeastUsedPolicy(0)),
                               transport_type=5, transport_use=0, registration_life=30, home_server_id=home)
    before = [(e.pe_id, e.home_server_id) for e in a.handlespace.entries()]
    with pytest.raises(Refused, match=reason) as info:
        a.add(P, b"echo", pe(5, pe_home), None, 0.0)
    assert info.value.cause == codes.CAUSE_SECURITY
    assert [(e.pe_id, e.home_server_id) for e in a.handlespace.entries()] == before


def test_delete_only_what_the_sender_owns():
    a = applier()
    a.add(P, b"echo", pe(5, P), None, 0.0)
    with pytest.raises(Refused):
        a.delete(Q, b"echo", 5)
    assert a.delete(Q, b"echo", 6) is None  # unknown: nothing to do
    assert a.delete(P, b"echo", 5).pe_id == 5 and len(a.handlespace) == 0


def test_identity_binding_holds():
    a = applier()
    a.add(P, b"echo", pe(5, P), "pe5", 0.0)
    with pytest.raises(Refused) as info:
        a.add(P, b"echo", pe(5, P), "mallory", 0.0)
    assert info.value.cause == codes.CAUSE_SECURITY
    assert a.add(P, b"echo", pe(5, P), None, 0.0).identity == "pe5"  # no identity keeps it


def test_handlespace_consistency_rules_apply():
    a = applier()
    a.add(P, b"echo", pe(5, P), None, 0.0)
    with pytest.raises(Refused) as info:
        a.add(P, b"echo", pe(6, P, RoundRobinPolicy()), None, 0.0)
    assert info.value.cause == codes.CAUSE_INCONSISTENT_POLICY


def test_limits():
    a = applier(max_pes=2, max_pools=1)
    a.add(P, b"echo", pe(1, P), None, 0.0)
    with pytest.raises(Refused, match="pools"):
        a.add(P, b"other", pe(2, P), None, 0.0)
    a.add(P, b"echo", pe(2, P), None, 0.0)
    a.add(P, b"echo", pe(2, P), None, 0.0)  # a replacement is not a new PE
    with pytest.raises(Refused, match="more than 2 PEs") as info:
        a.add(P, b"echo", pe(3, P), None, 0.0)
    assert info.value.cause == codes.CAUSE_LACK_OF_RESOURCES
    a.add(Q, b"echo", pe(3, Q), None, 0.0)  # limits are per peer


def test_rate():
    a = applier(update_rate=RateLimit(rate=1.0, burst=2.0))
    assert [a.rate_allows(P, 0.0) for _ in range(3)] == [True, True, False]
    assert a.rate_allows(Q, 0.0) and a.rate_allows(P, 1.0)


def test_mentor_entries_are_provisional_until_their_home_speaks():
    a = applier()
    assert a.add_from_mentor(P, {P, Q}, b"echo", pe(1, P), None, 0.0).home_server_id == P
    assert (b"echo", 1) not in a.provisional
    assert a.add_from_mentor(P, {P, Q}, b"echo", pe(2, Q), None, 0.0) is not None
    assert (b"echo", 2) in a.provisional
    assert a.add_from_mentor(P, {P, Q}, b"echo", pe(3, 0x99), None, 0.0) is None  # unknown home
    assert a.add_from_mentor(P, {P, Q, OWN}, b"echo", pe(4, OWN), None, 0.0) is None  # ours
    assert a.add_from_mentor(P, {P, Q}, b"echo", pe(2, Q), None, 0.0) is None  # a copy exists
    # The real home's word replaces a provisional copy, even from another peer
    # when the mentor lied about the home.
    a.add(P, b"echo", pe(2, P), None, 0.0)
    assert a.handlespace.get(b"echo", 2).home_server_id == P and not a.provisional


def test_sweep_removes_only_marked_pes_still_homed_at_the_sender():
    a = applier()
    removed = []
    a.on_removed = lambda entry, why: removed.append(entry.pe_id)
    for i in (1, 2, 3):
        a.add(P, b"echo", pe(i, P), None, 0.0)
    a.add(Q, b"echo", pe(4, Q), None, 0.0)
    assert a.sweep(P, {(b"echo", 1), (b"echo", 4), (b"echo", 9)}) == 1
    assert removed == [1] and len(a.handlespace) == 3


# -- the shortcuts for table pages ---------------------------------------------------------


def state(a: UpdateApplier) -> list:
    hs = a.handlespace
    return ([(e.pool_handle, e.pe_id, e.home_server_id, e.identity, e.payload, e.expires_at) for e in hs.entries()]
            + [sorted(a.provisional), {o: hs.checksum(o) for o in hs.owners()}])


def test_add_batch_does_what_add_does_for_each():
    batch, single = applier(), applier()
    pes = [pe(i, P, LeastUsedPolicy(i)) for i in range(1, 6)]
    identities = ["pe1", None, "PE3", None, "pe5"]
    entries = batch.add_batch(P, b"echo", pes, identities, 0.0)
    for one, identity in zip(pes, identities):
        single.add(P, b"echo", one, identity, 0.0)
    assert [e.pe_id for e in entries] == [1, 2, 3, 4, 5] and state(batch) == state(single)
    assert batch.handlespace.next_deadline() is None and batch.stats["applied"] == 5


def test_add_batch_of_a_mentor_takes_third_homes_as_provisional_copies():
    a = applier()
    entries = a.add_batch(P, b"echo", [pe(1, Q), pe(2, Q)], (), 0.0, mentor_homes={P, Q})
    assert [e.home_server_id for e in entries] == [Q, Q] and a.provisional == {(b"echo", 1), (b"echo", 2)}
    assert a.add_batch(P, b"echo", [pe(3, P), pe(4, P)], (), 0.0, mentor_homes={P, Q}) is not None
    assert a.provisional == {(b"echo", 1), (b"echo", 2)}


@pytest.mark.parametrize("pes, homes, limits", [
    ([pe(1, Q), pe(2, Q)], None, {}),  # not the sender's: add refuses them
    ([pe(1, 0x99), pe(2, 0x99)], {P, Q}, {}),  # a home the mentor did not list: skipped one by one
    ([pe(1, OWN), pe(2, OWN)], {P, Q, OWN}, {}),  # ours
    ([pe(1, P), pe(2, Q)], None, {}),  # two homes
    ([pe(6, P), pe(7, P)], None, {"held": 7}),  # 7 is held already
    ([pe(1, P), pe(2, P), pe(3, P)], None, {"max_pes": 3}),  # one more than the peer may own
    ([pe(1, P), pe(2, P)], None, {"max_pools": 1}),  # a second pool of the peer
    ([pe(1, P), pe(2, P, RoundRobinPolicy())], None, {}),  # the handlespace refuses the second
])
def test_add_batch_declines_what_needs_one_by_one_and_changes_nothing(pes, homes, limits):
    held = limits.pop("held", None)
    a = applier(**limits)
    a.add(P, b"other", pe(5, P), None, 0.0)
    if held is not None:
        a.add(P, b"echo", pe(held, P), None, 0.0)
    before = state(a)
    assert a.add_batch(P, b"echo", pes, (), 0.0, mentor_homes=homes) is None
    assert state(a) == before


def test_a_table_entry_equal_to_the_copy_changes_nothing():
    a = applier()
    first = a.add(P, b"echo", pe(5, P), "pe5", 0.0)
    a.handlespace.report_unreachable(b"echo", 5, "pu", 0.0)
    again = a.add(P, b"echo", pe(5, P), "pe5", 1.0, keep_unchanged=True)
    assert again is first and first.payload == pe(5, P) and first.unreachable is not None
    assert a.stats["applied"] == 1
    changed = a.add(P, b"echo", pe(5, P, LeastUsedPolicy(9)), None, 2.0, keep_unchanged=True)  # a change
    assert changed.payload.policy == LeastUsedPolicy(9) and changed.unreachable is None
    a.handlespace.report_unreachable(b"echo", 5, "pu", 0.0)
    a.add(P, b"echo", pe(5, P, LeastUsedPolicy(9)), None, 3.0)  # an update is applied as it is
    assert a.handlespace.get(b"echo", 5).unreachable is None and a.stats["applied"] == 3
    a.add_from_mentor(Q, {P, Q}, b"echo", pe(6, P), None, 0.0)
    assert (b"echo", 6) in a.provisional
    a.add(P, b"echo", pe(6, P), None, 0.0, keep_unchanged=True)  # the home confirms a provisional copy
    assert (b"echo", 6) not in a.provisional


# -- re-homing: contested claims and adopted PEs (docs/takeover.md) -----------------------------


def test_a_claim_on_a_pe_its_live_home_holds_is_contested_kept_and_applied_when_the_home_lets_go():
    from rserpool.enrp.updates import Contested

    a = applier()
    a.add(P, b"echo", pe(5, P), "pe5", 0.0)
    with pytest.raises(Contested) as info:
        a.add(Q, b"echo", pe(5, Q), "pe5", 1.0)
    assert info.value.home == P and a.handlespace.get(b"echo", 5).home_server_id == P
    assert a.defer(Q, b"echo", pe(5, Q), "pe5", 1.0)
    a.delete(P, b"echo", 5, 2.0)  # its home lets go: the claim applies at once
    assert a.handlespace.get(b"echo", 5).home_server_id == Q and not a.claims
    assert a.stats["claims_applied"] == 1


def test_a_claim_on_a_pe_whose_home_has_no_live_channel_applies_at_once():
    a = applier()
    a.add(P, b"echo", pe(5, P), "pe5", 0.0)
    a.holds = lambda server_id: server_id != P  # P's channel is gone
    a.add(Q, b"echo", pe(5, Q), "pe5", 1.0)
    assert a.handlespace.get(b"echo", 5).home_server_id == Q


def test_waiting_claims_settle_when_their_home_goes_and_the_claimant_can_withdraw():
    a = applier()
    for pe_id in (5, 6):
        a.add(P, b"echo", pe(pe_id, P), f"pe{pe_id}", 0.0)
        a.defer(Q, b"echo", pe(pe_id, Q), f"pe{pe_id}", 1.0)
    assert a.withdraw(Q, b"echo", 6) and not a.withdraw(Q, b"echo", 6) and not a.withdraw(P, b"echo", 5)
    a.holds = lambda server_id: server_id != P
    assert a.settle_home(P, 2.0) == 1
    assert a.handlespace.get(b"echo", 5).home_server_id == Q and a.handlespace.get(b"echo", 6).home_server_id == P


def test_claims_keep_the_identity_binding_and_old_or_orphaned_claims_go():
    a = applier()
    a.add(P, b"echo", pe(5, P), "pe5", 0.0)
    a.defer(Q, b"echo", pe(5, Q), "mallory", 1.0)
    a.holds = lambda server_id: False
    assert a.settle((b"echo", 5), 2.0) is None  # refused for good (another identity): dropped
    assert not a.claims and a.handlespace.get(b"echo", 5).identity == "pe5"
    a.defer(Q, b"echo", pe(5, Q), "pe5", 1.0)
    assert a.drop_claims(older_than=1.5) == 1
    a.defer(Q, b"echo", pe(5, Q), "pe5", 3.0)
    assert a.drop_claims(sender=Q) == 1 and not a.claims


def test_claims_are_bounded():
    a = UpdateApplier(Handlespace(), OWN, PeerLimits(), max_claims=1)
    assert a.defer(Q, b"echo", pe(5, Q), None, 0.0)
    assert a.defer(Q, b"echo", pe(5, Q), None, 1.0)  # the latest replaces it
    assert not a.defer(Q, b"echo", pe(6, Q), None, 1.0)


def test_own_registrations_are_contested_but_adopted_pes_yield_to_a_claim():
    from rserpool.enrp.updates import Contested

    a = applier()
    a.handlespace.register(0.0, pool_handle=b"echo", pe_id=5, settings=policy_settings(LeastUsedPolicy(0)),
                           transport_type=5, transport_use=0, registration_life=30, home_server_id=OWN,
                           identity="pe5", payload=pe(5, OWN))
    with pytest.raises(Contested):
        a.add(P, b"echo", pe(5, P), "pe5", 1.0)  # registered here: the claim waits
    entry = a.handlespace.get(b"echo", 5)
    a.adopted[(b"echo", 5)] = (Q, OWN)  # taken over from Q, not re-registered since
    a.add(P, b"echo", pe(5, P), "pe5", 1.0)
    assert entry.home_server_id == P and not a.adopted and a.stats["yielded"] == 1
    assert entry.expires_at is None  # a learned copy again


def test_a_pe_adopted_by_a_peer_yields_to_a_claim_and_its_winners_update_confirms_it():
    a = applier()
    a.add(P, b"echo", pe(5, P), "pe5", 0.0)
    a.add(P, b"echo", pe(6, P), "pe6", 0.0)
    for pe_id in (5, 6):
        a.rehome(a.handlespace.get(b"echo", pe_id), Q)  # Q took P over
        a.adopted[(b"echo", pe_id)] = (P, Q)
    assert a.handlespace.get(b"echo", 5).payload.home_server_id == Q
    a.add(OWN + 10, b"echo", pe(5, OWN + 10), "pe5", 1.0)  # re-registered at another peer: applies now
    assert a.handlespace.get(b"echo", 5).home_server_id == OWN + 10
    a.add(Q, b"echo", pe(6, Q), "pe6", 1.0)
    a.confirmed(b"echo", 6, Q)  # Q's own update: it re-registered there
    assert (b"echo", 6) not in a.adopted
