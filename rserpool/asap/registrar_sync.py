"""The registrar's ASAP side with ENRP peers: serving only a handlespace in
sync with them (docs/takeover.md), sans-IO.

``RegistrarCore`` takes these methods in; the ENRP shell calls them:

- ``hold_resolutions`` while the handlespace is being synchronized (a
  registrar joining its peers, or rejoining after a restart in place):
  handle resolutions wait, unanswered, in a bounded queue (beyond
  ``max_held`` they are refused with cause 0x6, and the PU tries another
  registrar); ``release_resolutions`` answers them from the synced
  handlespace.  No answer ever comes from a stale or half-loaded one.
- ``restart_in_place(server_id)``: the registrar rejoins under a new server
  ID (its ENRP core dropped the handlespace): every channel that registered
  PEs is closed, so that they re-register through their server hunt.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import Any

__all__ = ["SyncHooks"]


class SyncHooks:
    """Mixed into ``rserpool.asap.registrar.RegistrarCore``."""

    #: Resolutions waiting for the sync (None: not holding).
    _held: deque | None = None
    max_held = 1024

    def hold_resolutions(self) -> None:
        if self._held is None:
            self._held = deque()

    @property
    def holding(self) -> bool:
        return self._held is not None

    def release_resolutions(self, now: float) -> list[Any]:
        """The handlespace is in sync: answer the requests that waited."""
        held, self._held = self._held, None
        out: list[Any] = []
        for session, msg in held or ():
            if not session.closed:
                self._complete_resolution(session, msg, out)  # type: ignore[attr-defined]
        return out

    def _hold(self, session: Any, msg: Any) -> bool:
        """Queue a resolution while holding; False when the queue is full."""
        held = self._held
        if held is None or len(held) >= self.max_held:
            return False
        held.append((session, msg))
        return True

    def restart_in_place(self, server_id: int) -> list[Any]:
        """Rejoin as ``server_id``: close the PEs' channels, hold resolutions."""
        self.settings = replace(self.settings, server_id=server_id)  # type: ignore[has-type]
        self._last_answer = (None, None, None, None, None)
        self._awaiting_ack.clear()  # type: ignore[attr-defined]
        self._channel_of.clear()  # type: ignore[attr-defined]
        out: list[Any] = []
        for session in list(self.sessions):  # type: ignore[attr-defined]
            if session.pes:
                session.pes.clear()
                out.append(self._close_output(session, "the registrar restarts in place"))  # type: ignore
        self.hold_resolutions()
        return out
