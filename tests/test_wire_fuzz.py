"""Random and mutated bytes only ever give WireError or a valid message."""

import random

import pytest

from rserpool.wire import PPID_ASAP, PPID_ENRP, Limits, WireError, decode_message
from rserpool.wire.samples import all_samples

SEEDS = [b for _, m in all_samples() for b in [m.encode()]]
PPIDS = [p for p, _ in all_samples()]


def check(data: bytes, ppid: int, limits: Limits | None = None) -> str:
    try:
        msg = decode_message(data, ppid) if limits is None else decode_message(data, ppid, limits)
    except WireError as err:
        assert err.cause is None or 0 <= err.cause <= 0xFFFF
        assert isinstance(err.detail, str) and isinstance(err.offending, bytes)
        report = err.report
        if report is not None:
            from rserpool.wire import error_reply
            error_reply(err, ppid, 1, 2).encode()
        return "error"
    # A message that decodes is valid: it re-encodes and decodes to itself.
    again = msg.encode()
    assert decode_message(again, ppid) == msg
    str(msg)
    return "ok"


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    kind = rng.randrange(6)
    if kind == 0 and b:  # bit flips
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncation
        del b[rng.randrange(len(b) + 1):]
    elif kind == 2 and len(b) >= 4:  # change a 16-bit length-like field at a 4-byte boundary
        i = rng.randrange(0, len(b) - 3, 4) + 2
        b[i:i + 2] = rng.choice([0, 1, 3, 4, 5, 8, 0xFFFF, rng.randrange(65536)]).to_bytes(2, "big")
    elif kind == 3:  # insert a random TLV at a 4-byte boundary, fix the header length
        pos = rng.randrange(4, len(b) + 1, 4) if len(b) >= 4 else len(b)
        value = bytes(rng.randrange(256) for _ in range(rng.randrange(12)))
        ptype = rng.choice([rng.randrange(65536), rng.randrange(1, 17), 0x8000 | rng.randrange(16)])
        tlv = ptype.to_bytes(2, "big") + (4 + len(value)).to_bytes(2, "big") + value
        tlv += b"\0" * (-len(tlv) % 4)
        b[pos:pos] = tlv
        if len(b) >= 4:
            b[2:4] = min(len(b), 0xFFFF).to_bytes(2, "big")
    elif kind == 4 and b:  # random byte overwrite
        i = rng.randrange(len(b))
        b[i] = rng.randrange(256)
    else:  # splice two samples
        other = rng.choice(SEEDS)
        cut = rng.randrange(len(b) + 1)
        b = b[:cut] + other[rng.randrange(len(other) + 1):]
    return bytes(b)


def test_random_bytes():
    rng = random.Random(1)
    for _ in range(2000):
        n = rng.choice([0, 1, 3, 4, 8, 12, 16, 31, 64, 200])
        data = bytes(rng.randrange(256) for _ in range(n))
        if n >= 4 and rng.random() < 0.7:  # make the header plausible
            data = bytes([rng.randrange(1, 15), 0]) + n.to_bytes(2, "big") + data[4:]
        check(data, rng.choice([PPID_ASAP, PPID_ENRP]))


@pytest.mark.parametrize("seed", range(4))
def test_mutated_samples(seed):
    rng = random.Random(seed)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(1500):
        i = rng.randrange(len(SEEDS))
        data = SEEDS[i]
        for _ in range(rng.randint(1, 3)):
            data = mutate(rng, data)
        outcomes[check(data, PPIDS[i])] += 1
    assert outcomes["error"] > 0 and outcomes["ok"] > 0


def test_mutated_samples_with_tight_limits():
    rng = random.Random(99)
    limits = Limits(max_parameters=5, max_depth=2, max_addresses=1, max_pool_handle=4)
    for _ in range(1000):
        i = rng.randrange(len(SEEDS))
        check(mutate(rng, SEEDS[i]), PPIDS[i], limits)
