"""rserpool.service.pe_log: routine PE changes counted and summed up, on a
task.Clock (through the registrar: tests/test_service_registrar.py)."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent

from rserpool.service.pe_log import PeChangeLog


def make() -> tuple[PeChangeLog, Clock, list[tuple[str, str]]]:
    lines: list[tuple[str, str]] = []
    log = Logger(observer=lambda event: lines.append((event["log_level"].name, formatEvent(event))))
    clock = Clock()
    return PeChangeLog(clock, lambda: 7, log, interval=60.0), clock, lines


PE = SimpleNamespace(pe_id=0x12, pool_handle=b"echo", identity="pe1")


def test_routine_changes_are_counted_and_summed_up_once_per_interval() -> None:
    pe_log, clock, lines = make()
    pe_log.start()
    for _ in range(3):
        pe_log.added(PE)
    pe_log.removed(PE, "deregistered")
    pe_log.removed(PE, "ASAP channel lost")
    assert lines == []
    clock.advance(60.0)
    assert lines == [("info", "PEs in the last 60 s: 3 registered, 2 left (1 deregistered, 1 ASAP channel "
                              "lost); 7 in the handlespace")]
    clock.advance(60.0)  # nothing new: no line
    pe_log.added(PE)
    clock.advance(60.0)
    assert lines[-1] == ("info", "PEs in the last 60 s: 1 registered, 0 left (none); 7 in the handlespace")
    pe_log.stop()
    assert clock.getDelayedCalls() == []


def test_other_removals_are_always_logged_and_every_change_when_asked() -> None:
    pe_log, clock, lines = make()
    pe_log.removed(PE, "no ENDPOINT_KEEP_ALIVE_ACK")
    pe_log.removed(PE, "revoked: CRL reloaded")
    assert [level for level, _ in lines] == ["info", "info"]
    assert lines[0][1] == "PE 00000012 left pool echo: no ENDPOINT_KEEP_ALIVE_ACK"
    pe_log.every_change = True
    pe_log.added(PE)
    pe_log.removed(PE, "deregistered")
    assert lines[2:] == [("debug", "PE 00000012 registered in pool echo by pe1"),
                         ("debug", "PE 00000012 left pool echo: deregistered")]
    assert pe_log.counts == dict.fromkeys(pe_log.counts, 0)
