"""The sans-IO PE side of the PU-PE session layer: the one cookie echo it
accepts, the messages it builds."""

from __future__ import annotations

import pytest

from rserpool.asap.pe_session import (
    BusinessCardReceived, CookieEchoReceived, PeSession, PeSessionSettings,
)
from rserpool.outputs import Ignored
from rserpool.wire import AsapBusinessCard, AsapCookie, AsapCookieEcho, decode_message
from rserpool.wire.codes import PPID_ASAP
from tests.asaphelpers import make_pe

POOL = b"echo"
A, B, C, D = (make_pe(i, 7000 + i) for i in (0xA, 0xB, 0xC, 0xD))


def kinds(events):
    return [type(e) for e in events]


def test_pe_accepts_one_cookie_echo_only():
    pe = PeSession()
    assert pe.control_received(AsapCookieEcho(b"first"), 0.0) == [CookieEchoReceived(b"first")]
    out = pe.control_received(AsapCookieEcho(b"second"), 0.1)
    assert kinds(out) == [Ignored]
    assert pe.echoed_cookie == b"first"


def test_pe_ignores_a_cookie_echo_after_data():
    pe = PeSession()
    pe.data_received(b"hello")
    out = pe.control_received(AsapCookieEcho(b"late"), 0.0)
    assert kinds(out) == [Ignored]
    assert pe.echoed_cookie is None


def test_pe_ignores_cookie_echo_after_another_control_message_and_oversized():
    pe = PeSession()
    assert pe.control_received(AsapBusinessCard(b"pu-pool", (D,)), 0.0) == [
        BusinessCardReceived(b"pu-pool", (D,))]
    assert kinds(pe.control_received(AsapCookieEcho(b"late"), 0.0)) == [Ignored]
    small = PeSession(PeSessionSettings(max_cookie_size=4))
    assert kinds(small.control_received(AsapCookieEcho(b"12345"), 0.0)) == [Ignored]
    assert kinds(small.control_received(AsapCookie(b"x"), 0.0)) == [Ignored]


def test_pe_builds_cookie_and_business_card_that_round_trip():
    pe = PeSession(PeSessionSettings(max_cookie_size=16, max_card_entries=2))
    cookie = pe.cookie(b"state")
    assert decode_message(cookie.encode(), PPID_ASAP) == AsapCookie(b"state")
    card = pe.business_card(POOL, (B, C))
    assert decode_message(card.encode(), PPID_ASAP).pool_elements == (B, C)
    with pytest.raises(ValueError):
        pe.cookie(b"x" * 17)
    with pytest.raises(ValueError):
        pe.business_card(POOL, (A, B, C))
