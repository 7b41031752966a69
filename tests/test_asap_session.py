"""What both ends of the PU-PE session layer share: the data PPID rule and
sealed cookies."""

from __future__ import annotations

import pytest

from rserpool.asap.session import DEFAULT_DATA_PPID, CookieError, CookieSealer, check_data_ppid

POOL = b"echo"


def test_data_ppid_rule():
    assert check_data_ppid(DEFAULT_DATA_PPID) == 0
    assert check_data_ppid(0xFFFFFFFF) == 0xFFFFFFFF
    for bad in (11, 12, -1, 2**32, "0"):
        with pytest.raises(ValueError):
            check_data_ppid(bad)


def test_cookie_sealer_round_trip_and_forgery():
    sealer = CookieSealer(b"k" * 32, context=POOL, max_age=60.0)
    cookie = sealer.seal(b"count=3", 100.0)
    assert sealer.open(cookie, 120.0) == b"count=3"
    tampered = bytearray(cookie)
    tampered[10] ^= 1
    for bad in (bytes(tampered), cookie[:20], b""):
        with pytest.raises(CookieError):
            sealer.open(bad, 120.0)
    with pytest.raises(CookieError):
        CookieSealer(b"x" * 32, context=POOL).open(cookie, 120.0)  # other key
    with pytest.raises(CookieError):
        CookieSealer(b"k" * 32, context=b"other").open(cookie, 120.0)  # other pool
    with pytest.raises(CookieError):
        sealer.open(cookie, 161.0)  # too old
    with pytest.raises(ValueError):
        CookieSealer(b"short")
