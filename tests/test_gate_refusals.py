"""The gate's refusal log (rserpool.gate.refusals): one line per refusal
naming what, the peer's address and identity, the reason and the cause;
rate limited per address and in all, the lines left out counted and said
by the next one; pool handles written one way."""

from __future__ import annotations

from dataclasses import replace

from rserpool.gate import DOOR_ASAP, Gate, GatePolicy, pool_handle_text
from rserpool.gate.refusals import REFUSAL_FORMAT, RefusalLog, cause_text
from rserpool.security.ratelimit import RateLimit


def opened(gate: Gate, address: str = "127.0.0.1", port: int | None = None):
    adm = gate.open_channel(DOOR_ASAP, address, True, 0.0, port=port)
    gate.identified(adm, None, 0.0)
    return adm


def test_causes_in_words():
    assert cause_text(0xA) == "cause 0xa"
    assert cause_text(0xA, dropped=True) == "cause 0xa, no reply"
    assert cause_text(-1) == "channel closed"


def test_one_line_with_what_address_identity_reason_and_cause():
    written = []
    log = RefusalLog(lambda level, fmt, **fields: written.append((level, fmt, fields)),
                     RateLimit(rate=1.0, burst=5.0), RateLimit(rate=10.0, burst=10.0))
    log.refused(0.0, "register in pool echo", "127.0.0.1", "anonymous", "no authenticated identity", 0xA,
                shown="127.0.0.1:40412")
    ((level, fmt, fields),) = written
    assert (level, fmt) == ("info", REFUSAL_FORMAT)
    assert fmt.format(**fields) == ("refused register in pool echo from 127.0.0.1:40412 (anonymous): "
                                    "no authenticated identity; cause 0xa")


def test_the_per_address_limit_counts_the_host_whatever_the_port():
    written = []
    log = RefusalLog(lambda level, fmt, **fields: written.append(fmt.format(**fields)),
                     RateLimit(rate=1.0, burst=2.0), RateLimit(rate=100.0, burst=100.0))
    for port in range(1000, 1010):  # a new connection (port) per attempt
        log.refused(0.0, "register", "192.0.2.7", "anonymous", "no authenticated identity", 0xA,
                    shown=f"192.0.2.7:{port}")
    log.refused(0.0, "register", "192.0.2.8", "anonymous", "no authenticated identity", 0xA)
    assert [line.split(" (")[0] for line in written] == [
        "refused register from 192.0.2.7:1000", "refused register from 192.0.2.7:1001",
        "refused register from 192.0.2.8"]
    assert written[-1].endswith("; cause 0xa (8 more refusals not logged)")  # said by the next line
    assert log.suppressed == 0 and log.written == 3


def test_the_gate_shows_the_port_the_shell_gives_it():
    lines = []
    gate = Gate(log=lambda level, fmt, **fields: lines.append(fmt.format(**fields)))
    for adm in (opened(gate, "127.0.0.1", 40412), opened(gate, "::1", 40413), opened(gate, "127.0.0.2")):
        gate.admit_change(adm, "register", b"echo", None, 0.0)
    assert [line.split(" (")[0] for line in lines] == [
        "refused register in pool echo from 127.0.0.1:40412", "refused register in pool echo from [::1]:40413",
        "refused register in pool echo from 127.0.0.2"]


def test_refusals_over_the_log_rate_are_counted_and_reported_with_the_next_line():
    lines = []
    policy = replace(GatePolicy(), refusal_log_per_address=RateLimit(rate=1.0, burst=2.0),
                     refusal_log_total=RateLimit(rate=100.0, burst=100.0))
    gate = Gate(policy, log=lambda level, fmt, **fields: lines.append(fmt.format(**fields)))
    anonymous = opened(gate)
    for _ in range(50):  # a flood from one address
        assert gate.admit_change(anonymous, "register", b"echo", None, 0.0) == 0xA
    assert len(lines) == 2 and gate.refused[0xA] == 50
    assert gate.refusals.suppressed == 48
    gate.admit_change(anonymous, "register", b"echo", None, 1.5)  # a token back
    assert lines[-1].endswith("; cause 0xa (48 more refusals not logged)")
    assert gate.refusals.suppressed == 0


def test_pool_handles_are_written_one_way():
    assert pool_handle_text(b"echo") == "echo"
    assert pool_handle_text(b"\xff\x00") == "hex:ff00"
    assert pool_handle_text(b"a\nb") == "hex:610a62"
    assert pool_handle_text("gr\u00fc\u00df".encode()) == "gr\u00fc\u00df"
    # A handle that looks like the hex notation is written in it: no two handles share a text.
    assert pool_handle_text(b"hex:41") == "hex:6865783a3431"
    assert pool_handle_text(b"") == "hex:"
