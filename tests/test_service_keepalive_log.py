"""rserpool.service.keepalive_log: the PE's sparing log of the keep-alives
it does not answer (RFC 5355 2.14), on task.Clock."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import task
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from rserpool.service.keepalive_log import KeepAliveDropLog


class FakeChannel:
    def __init__(self, peer: str) -> None:
        self.peer = peer


@pytest.fixture
def lines() -> Any:
    events: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "rserpool.service.keepalive_log":
            assert event["log_level"] is LogLevel.warn
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def make(clock: task.Clock, counter: list[int]) -> KeepAliveDropLog:
    return KeepAliveDropLog(clock, 60.0, pe_id=lambda: 0x1234,
                            dropped_in_all=lambda: counter[0])


def drop(log: KeepAliveDropLog, channel: FakeChannel, counter: list[int], n: int = 1) -> None:
    for _ in range(n):
        counter[0] += 1
        log.dropped(channel, 5.0, 40.0)


def test_first_drop_then_one_summary_per_interval_then_silence(lines) -> None:
    clock, counter = task.Clock(), [0]
    log, channel = make(clock, counter), FakeChannel("r1")
    drop(log, channel, counter)
    assert len(lines) == 1
    text = formatEvent(lines[0])
    assert text.startswith("PE 00001234: registrar r1 sends keep-alives faster than 5/s (burst 40)")
    drop(log, channel, counter, 9)
    assert len(lines) == 1 and len(clock.getDelayedCalls()) == 1
    clock.advance(60)
    assert formatEvent(lines[1]) == ("PE 00001234: dropped 9 more keep-alive(s) from registrar r1 "
                                     "in the last 60 s (10 on this channel, 10 in all)")
    clock.advance(60)  # quiet: no line, no timer
    assert len(lines) == 2 and clock.getDelayedCalls() == []
    drop(log, channel, counter, 2)  # the same channel: a new series of summaries
    clock.advance(60)
    assert len(lines) == 3 and "dropped 2 more" in formatEvent(lines[2])
    assert "(12 on this channel, 12 in all)" in formatEvent(lines[2])


def test_channels_are_logged_apart(lines) -> None:
    clock, counter = task.Clock(), [0]
    log = make(clock, counter)
    a, b = FakeChannel("a"), FakeChannel("b")
    drop(log, a, counter, 3)
    drop(log, b, counter, 1)
    assert [formatEvent(e).split(":")[1].strip().split()[1] for e in lines] == ["a", "b"]
    clock.advance(60)
    assert len(lines) == 3 and "(3 on this channel, 4 in all)" in formatEvent(lines[2])


def test_close_logs_what_was_not_logged_and_cancels_the_timer(lines) -> None:
    clock, counter = task.Clock(), [0]
    log, channel = make(clock, counter), FakeChannel("r1")
    drop(log, channel, counter, 5)
    log.channel_closed(channel)
    assert len(lines) == 2
    assert formatEvent(lines[1]).endswith("before the channel closed (5 on this channel, 5 in all)")
    assert clock.getDelayedCalls() == [] and log.channels == {}
    log.channel_closed(channel)  # twice: nothing more
    quiet = FakeChannel("r2")
    drop(log, quiet, counter)
    log.close_all()
    assert len(lines) == 3 and log.channels == {} and clock.getDelayedCalls() == []


@pytest.mark.parametrize("bad", [0, -1.0])
def test_interval_must_be_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="keepalive_log_interval"):
        KeepAliveDropLog(task.Clock(), bad, pe_id=lambda: 1, dropped_in_all=lambda: 0)
