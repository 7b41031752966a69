"""rserpool.stats: the operator's counters and views, from a real RegistrarCore."""

from __future__ import annotations

import json

import pytest

from rserpool import stats
from rserpool.wire import (
    AsapDeregistration, AsapEndpointUnreachable, AsapHandleResolution, AsapRegistration, LeastUsedPolicy,
)
from rserpool.wire.codes import CAUSE_INVALID_VALUES, CAUSE_LACK_OF_RESOURCES, CAUSE_SECURITY
from rserpool.wire.params import pool_handle_text
from rserpool.testing import identified_channel
from tests.asaphelpers import make_pe
from tests.test_asap_registrar import authorize_all, make_core, register


@pytest.fixture
def core():
    return make_core()


def test_counters_start_at_zero_and_name_every_core_counter(core):
    values = stats.counters(core, stats.EventCounts())
    for name in stats.CORE_COUNTERS:
        assert values[name] == 0
    assert values["refused_by_cause"] == {}
    assert values["authentication"] == [] and values["backend_outages"] == {}
    assert values["tls_handshake_failures"] == 0


def test_registrations_deregistrations_and_resolutions_are_counted(core):
    channel = identified_channel(core, "127.0.0.1", "pe1")
    register(core, channel, 1)
    register(core, channel, 1)
    core.message_received(channel, AsapHandleResolution(b"echo"), 1.0)
    authorize_all(core, channel, core.message_received(channel, AsapDeregistration(b"echo", 1), 2.0), 2.0)
    values = stats.counters(core)
    assert (values["registrations"], values["reregistrations"], values["resolutions"],
            values["deregistrations"]) == (1, 1, 1, 1)
    assert values["refused"] == 0


def test_refusals_are_counted_by_cause_and_the_last_ones_kept(core):
    anonymous = identified_channel(core, "127.0.0.9", None)
    core.message_received(anonymous, AsapRegistration(b"echo", make_pe(7, address="127.0.0.9")), 5.0)
    pe = identified_channel(core, "127.0.0.1", "pe1")
    # Not its own address: cause 0x3.
    core.message_received(pe, AsapRegistration(b"echo", make_pe(8, address="127.0.0.2")), 6.0)
    # The authorizer says no: cause 0xa, counted as unauthorized too.
    out = core.message_received(pe, AsapRegistration(b"secret", make_pe(9)), 7.0)
    authorize_all(core, pe, out, 7.0, allowed=False)
    values = stats.counters(core)
    assert values["refused"] == 3
    assert values["refused_by_cause"] == {f"0x{CAUSE_INVALID_VALUES:x}": 1, f"0x{CAUSE_SECURITY:x}": 2}
    assert values["unauthorized"] == 1
    recent = stats.recent_refusals(core)
    assert [r["pe_id"] for r in recent] == ["00000009", "00000008", "00000007"]  # newest first
    assert recent[0] == {"time": 7.0, "address": "127.0.0.1", "identity": "pe1", "request": "registration",
                         "pool": "secret", "pe_id": "00000009", "cause": "0xa",
                         "cause_name": "Rejected Due to Security Considerations"}
    assert recent[2]["identity"] is None and recent[2]["address"] == "127.0.0.9"


def test_an_authorizer_outage_is_counted_apart_from_a_refusal(core):
    pe = identified_channel(core, "127.0.0.1", "pe1")
    out = core.message_received(pe, AsapRegistration(b"echo", make_pe(1)), 0.0)
    core.authorization_done(out[0], None, 0.0)
    values = stats.counters(core)
    assert values["authorization_outages"] == 1 and values["unauthorized"] == 0
    assert values["refused_by_cause"] == {"0xa": 1}


def test_the_refusal_log_is_bounded(core):
    anonymous = identified_channel(core, "127.0.0.9", None)
    for pe_id in range(1, 200):
        core.message_received(anonymous, AsapRegistration(b"echo", make_pe(pe_id, address="127.0.0.9")), 0.0)
    assert len(core.recent_refusals) == 64
    assert len(stats.recent_refusals(core, limit=10)) == 10
    assert stats.counters(core)["refused"] == 199


def test_unreachability_reports_and_keepalive_timeouts_are_counted():
    core = make_core(unreachable_rate=stats_rate(1.0, 1.0))
    pe = identified_channel(core, "127.0.0.1", "pe1")
    register(core, pe, 1)
    pu = identified_channel(core, "127.0.0.5", None)
    core.message_received(pu, AsapEndpointUnreachable(b"echo", 1), 1.0)
    core.message_received(pu, AsapEndpointUnreachable(b"echo", 1), 1.0)  # over the rate: refused
    values = stats.counters(core)
    assert values["unreachable_reports"] == 2
    assert values["refused_by_cause"] == {f"0x{CAUSE_LACK_OF_RESOURCES:x}": 1}
    # The probe keep-alive went out at 1.0; nobody answers it.
    core.on_timer(1.0 + core.settings.keepalive_timeout + 0.1)
    assert stats.counters(core)["keepalive_timeouts"] == 1
    assert core.handlespace.get(b"echo", 1) is None


def stats_rate(rate, burst):
    from rserpool.security.ratelimit import RateLimit

    return RateLimit(rate=rate, burst=burst)


def test_event_counts_by_mechanism():
    events = stats.EventCounts()
    events.authenticated("certificate", True)
    events.authenticated("certificate", True)
    events.authenticated("CHAP-MD5", False)
    events.outage("authorizer")
    events.tls_handshake_failures += 1
    values = stats.counters(make_core(), events)
    assert values["authentication"] == [
        {"mechanism": "CHAP-MD5", "outcome": "failure", "count": 1},
        {"mechanism": "certificate", "outcome": "success", "count": 2}]
    assert values["backend_outages"] == {"authorizer": 1}
    assert values["tls_handshake_failures"] == 1


def test_views_of_pools_and_pes(core):
    pe = identified_channel(core, "127.0.0.1", "pe1")
    register(core, pe, 0x1234, now=10.0, life=30)
    register(core, pe, 0x99, now=10.0, handle=b"lu", policy=LeastUsedPolicy(0x7FFFFFFF))
    register(core, pe, 0x5, now=10.0, handle=b"\xff\x00")
    pools = stats.pool_views(core.handlespace)
    assert [p["handle"] for p in pools] == ["echo", "lu", "hex:ff00"]
    assert pools[0]["policy"] == "RoundRobin" and pools[0]["pool_elements"] == 1
    page = stats.pe_page(core.handlespace, b"echo", now=15.0)
    (view,) = page["pool_elements"]
    assert view == {"pe_id": "00001234", "home_server_id": f"{core.settings.server_id:08x}", "identity": "pe1",
                    "transports": ["tcp:127.0.0.1:7"], "policy": "RoundRobin", "registration_life": 30,
                    "expires_at": 40.0, "expires_in": 25.0}
    (lu,) = stats.pe_page(core.handlespace, b"lu", now=15.0)["pool_elements"]
    assert lu["policy"] == "LeastUsed" and lu["load_percent"] == 50.0
    assert stats.pe_page(core.handlespace, b"nope", now=0.0) is None
    view = stats.registrar_view(core, now=20.0, started=5.0, channels=1, events=stats.EventCounts(),
                                listening=["127.0.0.1:3864"])
    assert view["server_id"] == f"{core.settings.server_id:08x}" and view["uptime"] == 15.0
    assert view["pools"] == 3 and view["pool_elements"] == 3 and view["owned_pool_elements"] == 3
    json.dumps(view)  # JSON-ready


def test_pages_cover_a_pool_once(core):
    pe = identified_channel(core, "127.0.0.1", "pe1")
    for pe_id in range(1, 26):
        register(core, pe, pe_id)
    seen, offset = [], 0
    while offset is not None:
        page = stats.pe_page(core.handlespace, b"echo", 0.0, offset=offset, limit=10)
        seen += [view["pe_id"] for view in page["pool_elements"]]
        offset = page["next"]
    assert seen == [f"{n:08x}" for n in range(1, 26)]
    assert len(stats.pe_page(core.handlespace, b"echo", 0.0, limit=10**9)["pool_elements"]) == 25
    assert stats.pe_page(core.handlespace, b"echo", 0.0, offset=-5, limit=0)["offset"] == 0


@pytest.mark.parametrize("handle", [b"echo", b"hex:x", b"\x00\x01", "\u00e9cho".encode(), b"a b"])
def test_handle_text_round_trips(handle):
    assert stats.parse_handle(pool_handle_text(handle)) == handle
