"""The registrar's hooks for ENRP (rserpool.asap.registrar_sync): resolutions
held while the handlespace syncs, and the restart in place."""

from __future__ import annotations

import random

from rserpool.asap.registrar import Close, PoolElementAdded, RegistrarCore, RegistrarSettings, Send
from rserpool.gate import AskAuthorizer, Gate
from rserpool.handlespace import Handlespace
from rserpool.testing import identified_session
from rserpool.wire import AsapHandleResolution, AsapHandleResolutionResponse, AsapRegistration
from rserpool.wire.codes import CAUSE_LACK_OF_RESOURCES, CAUSE_UNKNOWN_POOL_HANDLE
from tests.asaphelpers import make_pe


def make_core() -> RegistrarCore:
    return RegistrarCore(RegistrarSettings(server_id=0x5EED), Handlespace(rng=random.Random(1)), Gate(),
                         rng=random.Random(2))


def answers(outputs) -> list:
    return [o.message for o in outputs if type(o) is Send and type(o.message) is AsapHandleResolutionResponse]


def register(core, session, pe_id):
    out = core.message_received(session, AsapRegistration(b"echo", make_pe(pe_id)), 0.0)
    for o in list(out):
        if type(o) is AskAuthorizer:
            out += core.authorization_done(o, True, 0.0)
    return out


def test_held_resolutions_are_answered_from_the_synced_handlespace():
    core = make_core()
    pu = identified_session(core, "127.0.0.1", None)
    core.hold_resolutions()
    assert core.holding
    assert answers(core.message_received(pu, AsapHandleResolution(b"echo"), 0.0)) == []  # not "unknown pool"
    pe = identified_session(core, "127.0.0.1", "pe1")
    assert any(type(o) is PoolElementAdded for o in register(core, pe, 7))  # registrations go on
    [answer] = answers(core.release_resolutions(1.0))
    assert [p.pe_id for p in answer.pool_elements] == [7] and not core.holding
    assert answers(core.release_resolutions(1.0)) == []


def test_a_full_hold_queue_refuses_with_lack_of_resources_and_closed_sessions_get_nothing():
    core = make_core()
    core.max_held = 2
    core.hold_resolutions()
    first, second = identified_session(core, "127.0.0.1", None), identified_session(core, "127.0.0.2", None)
    core.message_received(first, AsapHandleResolution(b"echo"), 0.0)
    core.message_received(second, AsapHandleResolution(b"echo"), 0.0)
    [refused] = answers(core.message_received(second, AsapHandleResolution(b"echo"), 0.0))
    assert refused.error.causes[0].code == CAUSE_LACK_OF_RESOURCES
    core.close_session(first, 0.0)
    released = core.release_resolutions(0.0)
    assert [o.channel for o in released] == [second]
    assert answers(released)[0].error.causes[0].code == CAUSE_UNKNOWN_POOL_HANDLE


def test_restart_in_place_takes_the_new_id_closes_pe_channels_and_holds():
    core = make_core()
    pe = identified_session(core, "127.0.0.1", "pe1")
    pu = identified_session(core, "127.0.0.2", None)
    register(core, pe, 7)
    core.handlespace.deregister(b"echo", 7)  # the ENRP core dropped the handlespace
    out = core.restart_in_place(0xBEEF)
    assert out == [Close(pe, "the registrar restarts in place")]  # the PU's channel stays
    assert core.settings.server_id == 0xBEEF and core.holding and not pe.pes
    assert core.close_session(pe, 0.0) == []  # nothing left to remove
    assert answers(core.message_received(pu, AsapHandleResolution(b"echo"), 0.0)) == []
