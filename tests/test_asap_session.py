"""What both ends of the PU-PE session layer share: the data PPID rule and
sealed cookies."""

from __future__ import annotations

import pytest

from rserpool.asap.session import (
    DEFAULT_DATA_PPID, CookieError, CookieSealer, OpenedCookie, SessionCookies, check_data_ppid,
)

POOL = b"echo"


def test_data_ppid_rule():
    assert check_data_ppid(DEFAULT_DATA_PPID) == 0
    assert check_data_ppid(0xFFFFFFFF) == 0xFFFFFFFF
    for bad in (11, 12, -1, 2**32, "0"):
        with pytest.raises(ValueError):
            check_data_ppid(bad)


SID = bytes(range(16))


def test_cookie_sealer_round_trip_and_forgery():
    sealer = CookieSealer(b"k" * 32, context=POOL, max_age=60.0)
    cookie = sealer.seal(b"count=3", 100.0, session_id=SID, seq=3)
    assert sealer.open(cookie, 120.0) == OpenedCookie(SID, 3, 100.0, b"count=3")
    for position in (10, 20, 30, len(cookie) - 40):  # the time, the session, the sequence, the state
        tampered = bytearray(cookie)
        tampered[position] ^= 1
        with pytest.raises(CookieError):
            sealer.open(bytes(tampered), 120.0)
    for bad in (cookie[:20], b""):
        with pytest.raises(CookieError):
            sealer.open(bad, 120.0)
    with pytest.raises(ValueError):
        sealer.seal(b"x", 1.0, session_id=b"short", seq=1)
    with pytest.raises(CookieError):
        CookieSealer(b"x" * 32, context=POOL).open(cookie, 120.0)  # other key
    with pytest.raises(CookieError):
        CookieSealer(b"k" * 32, context=b"other").open(cookie, 120.0)  # other pool
    with pytest.raises(CookieError):
        sealer.open(cookie, 161.0)  # too old
    with pytest.raises(ValueError):
        CookieSealer(b"short")


# -- freshness: a cookie is bound to one session and ordered within it --------------------


class Conn:
    """Stands for one PU connection at a PE (the application's session object)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def cookies(**kw) -> SessionCookies:
    counter = iter(range(1, 1000))
    return SessionCookies(b"k" * 32, context=POOL, max_age=600.0,
                          random_bytes=lambda n: next(counter).to_bytes(n, "big"), **kw)


def test_cookies_carry_the_session_and_a_growing_sequence_number():
    pe = cookies()
    first = Conn("first")
    session = pe.start(first)
    issued = [pe.issue(first, b"count=%d" % n, 10.0 + n) for n in (1, 2, 3)]
    opened = [pe.sealer.open(c, 20.0) for c in issued]
    assert {o.session_id for o in opened} == {session}
    assert [o.seq for o in opened] == [1, 2, 3]
    other = pe.start(Conn("other"))
    assert other != session  # every session its own id
    with pytest.raises(CookieError):
        pe.issue(Conn("nobody"), b"x", 1.0)  # no session live there


def test_an_older_cookie_cannot_roll_the_state_back():
    pe = cookies()
    first = Conn("first")
    pe.start(first)
    c1, c2, c3 = (pe.issue(first, b"count=%d" % n, 10.0) for n in (1, 2, 3))
    pe.end(first)  # the PU's connection broke
    again = Conn("again")
    for stale in (c1, c2):
        with pytest.raises(CookieError, match="older cookie"):
            pe.resume(stale, again, 20.0)
    assert pe.resume(c3, again, 20.0).state == b"count=3"  # the latest: resumed
    c4 = pe.issue(again, b"count=4", 21.0)
    pe.end(again)
    with pytest.raises(CookieError):
        pe.resume(c3, Conn("later"), 22.0)  # c4 exists now: c3 is stale too
    assert pe.sealer.open(c4, 22.0).seq == 4


def test_one_cookie_is_not_accepted_in_two_sessions():
    pe = cookies()
    first = Conn("first")
    pe.start(first)
    cookie = pe.issue(first, b"count=1", 10.0)
    pe.end(first)
    one, two = Conn("one"), Conn("two")
    assert pe.resume(cookie, one, 11.0).seq == 1
    with pytest.raises(CookieError, match="already live"):
        pe.resume(cookie, two, 11.0)  # the same cookie on a second connection
    # The first session's issuer may not be used to issue for the session
    # any more either: the session lives on "one" now.
    with pytest.raises(CookieError):
        pe.issue(first, b"count=2", 12.0)
    pe.end(one)
    assert pe.resume(cookie, two, 13.0).seq == 1  # once "one" is gone, it may resume


def test_genuineness_and_age_still_come_first():
    pe = cookies()
    first = Conn("first")
    pe.start(first)
    cookie = pe.issue(first, b"count=1", 10.0)
    pe.end(first)
    with pytest.raises(CookieError, match="expired"):
        pe.resume(cookie, Conn("late"), 700.0)
    with pytest.raises(CookieError, match="signature"):
        cookies().resume(cookie[:-1] + bytes([cookie[-1] ^ 1]), Conn("x"), 11.0)
    foreign = SessionCookies(b"z" * 32, context=POOL)
    with pytest.raises(CookieError):
        foreign.resume(cookie, Conn("y"), 11.0)


def test_what_a_pe_remembers_is_bounded():
    pe = cookies(max_sessions=3)
    conns = [Conn(f"c{n}") for n in range(5)]
    old = conns[0]
    pe.start(old)
    oldest = pe.issue(old, b"1", 1.0)
    newer = pe.issue(old, b"2", 1.0)
    pe.end(old)
    for conn in conns[1:]:
        pe.start(conn)
    assert len(pe) == 3
    # The forgotten session's older cookie is then only bounded by max_age.
    assert pe.resume(oldest, Conn("back"), 2.0).seq == 1
    assert pe.sealer.open(newer, 2.0).seq == 2
    with pytest.raises(ValueError):
        SessionCookies(b"k" * 32, max_sessions=0)

