"""Restarting in place (docs/takeover.md, "a registrar that was away").

A registrar whose core was not run for longer than MAX-TIME-LAST-HEARD
(SIGSTOP then SIGCONT, a frozen virtual machine, a clock jump) cannot know
what its peers did meanwhile: they probed it, found it dead and may have
taken it over, and its PEs may have re-registered elsewhere or died.
Whatever it holds may be stale, and announcing it would fight the takeover.
So it behaves as if it had crashed and started again, without leaving the
process: it drops every ENRP channel, peer and PE, takes a new random
server ID (the old one is its peers' to take over), holds resolutions
(``Restarted``; the shell also closes its PEs' channels, so they
re-register through their server hunt) and joins again through a mentor.

Its presence timer fires at least every ``heartbeat_cycle * (1 + jitter)``,
which ``EnrpSettings`` keeps below MAX-TIME-LAST-HEARD, so only a real pause
makes the gap.  A peer's ENRP_TAKEOVER_SERVER naming this registrar as the
target has the same effect (``rserpool.enrp.takeover``).

Pure: no Twisted, no clock.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rserpool.enrp.peers import PeerTable
from rserpool.enrp.settings import Close, Restarted

__all__ = ["paused", "restart_in_place"]


def paused(core: Any, now: float, out: list) -> bool:
    """Whether ``core`` was not run for longer than MAX-TIME-LAST-HEARD
    (then it restarts in place)."""
    last, core._last_now = core._last_now, now
    if last is None or now - last <= core.settings.max_time_last_heard:
        return False
    restart_in_place(core, now, now - last, out)
    return True


def restart_in_place(core: Any, now: float, gap: float, out: list, why: str | None = None) -> None:
    """Drop every link, peer and PE and join again under a new random ID."""
    old = core.server_id
    new = old
    while new in (0, old):
        new = core.rng.getrandbits(32)
    core._log("restarting in place as {new:08x} (was {old:08x}): {why}", new=new, old=old,
              why=why or f"not run for {gap:.1f} s, more than MAX-TIME-LAST-HEARD")
    for link in list(core.peers.links):
        core._abandon(link, now, drop_page=True)
        link.closed = True
        out.append(Close(link, "restarting in place"))
    handlespace = core.handlespace
    for entry in list(handlespace.entries()):
        handlespace.deregister(entry.pool_handle, entry.pe_id)
    core.server_id = new
    core.settings = dataclasses.replace(core.settings, server_id=new)
    core._update_fixed = core._update_headers()
    core.peers = PeerTable(new, core.settings.max_peers)
    core.applier = core._new_applier()
    core.takeover.reset()
    core._announced.clear()
    core._refusals.clear()
    core._listed.clear()
    core._asked.clear()
    if core.server_info is not None:
        core.server_info = dataclasses.replace(core.server_info, server_id=new)
    core.initialized = False
    core.joining = True
    core.mentor = None
    core._mentor_retry_at = None
    core._join_deadline = now + core.settings.mentor_discovery_timeout
    core._presence_due = now + core._cycle()
    out.append(Restarted(old, new, gap))
