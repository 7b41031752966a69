"""Which servers to dial: configured targets, rate-limited hints, back-off."""

from __future__ import annotations

from rserpool.asap.hunt import Candidate
from rserpool.enrp.discovery import PeerTargets
from rserpool.security.ratelimit import RateLimit


def never(_sid: int) -> bool:
    return False


def test_configured_targets_are_dialled_and_backed_off():
    targets = PeerTargets(retry_min=1.0, retry_max=8.0)
    targets.set_configured([Candidate("127.0.0.1", 9902, "a.test")], 0.0)
    [target] = targets.due(0.0, never)
    assert targets.due(0.0, never) == []  # connecting
    for expected in (1.0, 2.0, 4.0, 8.0, 8.0):
        targets.failed(target, 10.0)
        assert target.next_attempt == 10.0 + expected
        assert targets.due(10.0 + expected - 0.01, never) == []
        assert targets.due(10.0 + expected, never) == [target]
    targets.connected(target, "channel")
    targets.bound("channel", 0x42)
    assert target.backoff == 0.0 and target.server_id == 0x42
    targets.closed("channel", 0x42, 0x1, 50.0)
    assert target.next_attempt == 51.0
    # A server already linked through another channel is not dialled.
    assert targets.due(60.0, lambda sid: sid == 0x42) == []
    assert targets.next_deadline(lambda sid: sid == 0x42) is None


def test_a_target_that_is_this_registrar_is_never_dialled_again():
    targets = PeerTargets()
    targets.set_configured([Candidate("127.0.0.1", 9902, "a.test")], 0.0)
    [target] = targets.due(0.0, never)
    targets.connected(target, "channel")
    targets.closed("channel", 0x1, 0x1, 1.0)
    assert target.state == "self" and targets.due(1e6, never) == []


def test_own_addresses_and_configuration_changes():
    targets = PeerTargets()
    targets.own = {("127.0.0.1", 9902)}
    targets.set_configured([Candidate("127.0.0.1", 9902, "me.test"), Candidate("127.0.0.1", 9903, "b.test")], 0.0)
    assert list(targets.targets) == [("127.0.0.1", 9903)]
    targets.set_configured([], 1.0)
    assert targets.targets == {}
    assert not targets.hint(7, "127.0.0.1", 9902, 1.0)


def test_hints_are_rate_limited_bounded_and_expire():
    targets = PeerTargets(hint_rate=RateLimit(rate=1.0, burst=2.0), max_hints=3, hint_lifetime=10.0)
    accepted = [targets.hint(i, "127.0.0.1", 10_000 + i, 0.0) for i in range(50)]
    assert accepted.count(True) == 2 and targets.hints_refused == 48
    assert targets.hint(0, "127.0.0.1", 10_000, 5.0)  # a known hint is refreshed, not counted
    assert targets.hint(9, "127.0.0.1", 20_000, 5.0)
    assert not targets.hint(10, "127.0.0.1", 20_001, 9.0)  # max_hints
    dialled = targets.due(9.0, never)
    assert len(dialled) == 3  # each dialled once ...
    assert targets.due(9.0, never) == []  # ... and not again while connecting
    targets.connected(dialled[0], "channel")
    for target in dialled[1:]:
        targets.failed(target, 9.0)  # a failed hint is forgotten at once
    assert list(targets.targets.values()) == dialled[:1]
    targets.closed("channel", None, 0x1, 10.0)
    assert targets.targets == {}
    assert not targets.hint(1, "not-an-ip", 1, 100.0)
