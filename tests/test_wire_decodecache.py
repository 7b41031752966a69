"""``DecodeCache``: what ``decode_message`` returns or raises, with the
messages that decode kept by their exact bytes, within its bounds."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from rserpool.wire import (
    PPID_ASAP, PPID_ENRP, AsapHandleResolution, DecodeCache, Limits, WireError, decode_message,
)
from rserpool.wire.samples import all_samples
from tests.test_wire_fuzz import mutate

SAMPLES = [(ppid, message.encode()) for ppid, message in all_samples()]


def _outcome(decode, data: bytes, ppid: int):
    try:
        return ("ok", decode(data, ppid))
    except WireError as error:
        return ("error", error.cause, error.detail, error.offending)


@pytest.mark.parametrize("ppid,data", SAMPLES)
def test_every_sample_decodes_as_decode_message_and_is_kept(ppid, data):
    cache = DecodeCache(max_message_size=1 << 16)
    first = cache.decode(data, ppid)
    assert first == decode_message(data, ppid)
    assert (cache.hits, cache.misses, len(cache)) == (0, 1, 1)
    # The same bytes (another bytes object) give the kept message.
    assert cache.decode(bytes(bytearray(data)), ppid) is first
    assert (cache.hits, cache.misses) == (1, 1)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(SAMPLES) - 1), st.integers(0, 2**32 - 1), st.sampled_from([PPID_ASAP, PPID_ENRP]))
def test_mutated_bytes_give_what_decode_message_gives_every_time(index, seed, ppid):
    data = mutate(random.Random(seed), SAMPLES[index][1])
    cache = DecodeCache(max_message_size=1 << 16)
    expected = _outcome(decode_message, data, ppid)
    assert _outcome(cache.decode, data, ppid) == expected
    assert _outcome(cache.decode, data, ppid) == expected  # a hit (or the same error again)
    # Only messages that decode are kept.
    assert len(cache) == (1 if expected[0] == "ok" else 0)


def test_errors_are_not_kept():
    cache = DecodeCache()
    bad = b"\x03\x00\x00\x02"  # a length shorter than the header
    for _ in range(3):
        with pytest.raises(WireError):
            cache.decode(bad, PPID_ASAP)
    assert (len(cache), cache.hits, cache.misses) == (0, 0, 3)


def test_the_ppid_is_part_of_the_key():
    data = AsapHandleResolution(b"pool").encode()
    cache = DecodeCache()
    assert cache.decode(data, PPID_ASAP) == AsapHandleResolution(b"pool")
    # The same bytes are not an ENRP message: decoded (and refused) as such.
    assert _outcome(cache.decode, data, PPID_ENRP) == _outcome(decode_message, data, PPID_ENRP)
    assert _outcome(cache.decode, data, 99) == _outcome(decode_message, data, 99)


def test_large_messages_are_decoded_but_not_kept():
    cache = DecodeCache(max_message_size=16)
    small = AsapHandleResolution(b"p").encode()
    large = AsapHandleResolution(b"p" * 64).encode()
    assert len(small) <= 16 < len(large)
    cache.decode(small, PPID_ASAP)
    assert cache.decode(large, PPID_ASAP) == AsapHandleResolution(b"p" * 64)
    assert len(cache) == 1


def test_the_number_of_kept_messages_is_bounded():
    cache = DecodeCache(max_entries=8)
    for index in range(100):
        cache.decode(AsapHandleResolution(b"pool-%d" % index).encode(), PPID_ASAP)
        assert len(cache) <= 8
    assert cache.misses == 100


def test_the_bound_counts_asap_and_enrp_together():
    enrp = [(ppid, data) for ppid, data in SAMPLES if ppid == PPID_ENRP][:4]
    asap = [(ppid, data) for ppid, data in SAMPLES if ppid == PPID_ASAP][:4]
    assert len(enrp) == len(asap) == 4
    cache = DecodeCache(max_entries=5, max_message_size=1 << 16)
    for ppid, data in enrp + asap:
        cache.decode(data, ppid)
        assert len(cache) <= 5


def test_the_cache_applies_its_limits():
    data = AsapHandleResolution(b"x" * 40).encode()
    cache = DecodeCache(Limits(max_message_size=32))
    for _ in range(2):
        with pytest.raises(WireError) as caught:
            cache.decode(data, PPID_ASAP)
        assert caught.value.cause == 0x6
    assert len(cache) == 0


def test_non_bytes_input_is_decoded_not_kept():
    data = AsapHandleResolution(b"pool").encode()
    cache = DecodeCache()
    assert cache.decode(memoryview(data), PPID_ASAP) == AsapHandleResolution(b"pool")
    assert cache.decode(bytearray(data), PPID_ASAP) == AsapHandleResolution(b"pool")
    assert len(cache) == 0


def test_bounds_are_checked():
    with pytest.raises(ValueError):
        DecodeCache(max_entries=0)
    with pytest.raises(ValueError):
        DecodeCache(max_message_size=3)
