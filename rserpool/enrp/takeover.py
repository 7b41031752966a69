"""Taking over a dead peer (RFC 5353 3.5), sans-IO; the core's helper.

``Takeover`` runs the arbitration and its outcome for ``EnrpCore`` (which
owns it and calls in with ``now``; every method appends the core's outputs
to ``out``):

- ``peer_dead(target)``: a peer missed MAX-TIME-LAST-HEARD and then
  MAX-TIME-NO-RESPONSE (or its channel is gone that long).  This registrar
  sends ENRP_INIT_TAKEOVER to every live peer and waits for their
  ENRP_INIT_TAKEOVER_ACKs (3.5.1).
- ``on_init``: another initiator.  The target answers with PRESENCE to all
  its peers (3.5.1 step 1, in the core); a registrar running its own
  attempt on the same target aborts it and acknowledges when its ID is the
  smaller one, and ignores the message otherwise (step 2); any other peer
  stops monitoring the target and acknowledges (step 3).
- The attempt ends when every peer asked has acknowledged, or when a peer
  asked is gone (a dead peer never answers: it is no longer waited for), or
  at ``takeover_ack_timeout``: then the initiator goes on with the peers that
  answered (rsplib gives the takeover up instead, leaving the PEs homed at a
  dead server).  Hearing from the target (any message on a live channel)
  aborts it (3.5.1, last paragraph).
- The winner sends ENRP_TAKEOVER_SERVER to every live peer, forgets the
  target and becomes the home of its PEs (3.5.2): they are *adopted*
  (``UpdateApplier.adopted``), each with an expiry at its registration life
  (at most ``max_adopted_life``).  Over the TCP mapping the winner cannot
  send them the keep-alive with the H bit; a live PE comes back by itself
  (its channel to the dead registrar closed, it re-registers through its
  server hunt) and the registrar it reaches becomes its home
  (docs/takeover.md); one that does not come back expires and its DEL_PE
  removes it everywhere.
- ``on_server``: a peer's ENRP_TAKEOVER_SERVER: the target leaves the peer
  list and its PEs are homed at the winner (3.5.2).  Should this registrar
  have won the same takeover (an ACK timed out on both sides), the larger
  server ID keeps the PEs, as in the arbitration.
- ``link_gone(peer)``: a channel closed: the peer is no longer waited for,
  the PEs it was home of may be claimed by others (contested claims are
  settled), and its own claims go.

Every registrar remembers which PEs a takeover re-homed (``adopted``: at the
winner and at the peers its ENRP_TAKEOVER_SERVER reached): such a PE is held
by nobody until it re-registers, so a peer's ADD_PE for it (the registrar
the PE re-registered at) is applied at once, everywhere, with no gap in
its resolvability.

Table pages still waiting to be applied (pipelined downloads,
``rserpool.enrp.transfers``) are applied before any of these steps drops a
peer or re-homes PEs: they came before, and a takeover treats their PEs as
it would have had they been applied on arrival.

The core answers INIT_TAKEOVER for itself and restarts after a pause
(``EnrpCore._restart``); this module keeps only takeover state.

Pure: no Twisted, no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from rserpool.enrp.settings import Send, TakenOver, TakeoverAborted, TakeoverStarted, TookOver
from rserpool.enrp.tables import encoded_pe
from rserpool.wire import EnrpInitTakeover, EnrpInitTakeoverAck, EnrpTakeoverServer
from rserpool.wire import codes

__all__ = ["Attempt", "Takeover"]

#: Targets remembered after their takeover (bounded).
MAX_HISTORY = 256


@dataclass
class Attempt:
    """One takeover this registrar started: who must still acknowledge."""

    target: int
    started: float
    deadline: float
    waiting: set = field(default_factory=set)
    acked: set = field(default_factory=set)
    asked: tuple = ()


class Takeover:
    """Takeover state of one ``EnrpCore`` (attempts, outcomes)."""

    def __init__(self, core: Any) -> None:
        self.core = core
        self.attempts: dict[int, Attempt] = {}
        #: target -> (winner, when), the latest MAX_HISTORY takeovers.
        self.history: OrderedDict[int, tuple[int, float]] = OrderedDict()
        self.stats = {"started": 0, "won": 0, "aborted": 0, "acked": 0, "timed_out": 0, "ceded": 0}

    def reset(self) -> None:
        self.attempts.clear()
        self.history.clear()

    # -- starting -----------------------------------------------------------------------

    def peer_dead(self, target: int, now: float, out: list) -> None:
        core = self.core
        if not core.initialized or target in self.attempts or target in self.history:
            return
        links = [link for link in core.peers.active() if link.server_id != target]
        attempt = Attempt(target, now, now + core.settings.takeover_ack_timeout)
        attempt.waiting = {link.server_id for link in links}
        attempt.asked = tuple(sorted(attempt.waiting))
        self.attempts[target] = attempt
        self.stats["started"] += 1
        sid = core.server_id
        for link in links:
            out.append(Send(link, EnrpInitTakeover(sid, link.server_id, target)))
        out.append(TakeoverStarted(target, attempt.asked))
        core._log("starting the takeover of {target:08x}: ENRP_INIT_TAKEOVER to {n} peers",
                  target=target, n=len(links))
        if not attempt.waiting:
            self._win(attempt, now, out)

    # -- messages ------------------------------------------------------------------------

    def on_init(self, link: Any, msg: EnrpInitTakeover, now: float, out: list) -> None:
        core = self.core
        target, initiator = msg.target_id, msg.sender_id
        if target == initiator:
            return  # nonsense: a server does not take itself over
        own = self.attempts.get(target)
        if own is not None:
            if core.server_id > initiator:
                core._log("ignoring the takeover of {target:08x} by {peer}: ours goes on (larger ID)",
                          target=target, peer=link.describe())
                return  # 3.5.1 step 2B
            del self.attempts[target]
            self.stats["aborted"] += 1
            out.append(TakeoverAborted(target, f"{initiator:08x} has the larger server ID"))
        core.apply_waiting_pages(now, out)  # pages that came before: applied before the target goes
        self._stop_monitoring(target, initiator, now, out)
        self.stats["acked"] += 1
        out.append(Send(link, EnrpInitTakeoverAck(core.server_id, initiator, target)))

    def _stop_monitoring(self, target: int, initiator: int, now: float, out: list) -> None:
        """3.5.1 steps 2A and 3: the target is "not active" here.  Its
        channel, if it still has one, is closed (it will rejoin if it lives)."""
        core = self.core
        link = core.peers.link_of(target)
        if link is not None and not link.closed:
            core._log("closing the channel of {peer}: {initiator:08x} is taking it over",
                      peer=link.describe(), initiator=initiator)
            core._close(link, f"taken over by {initiator:08x}", now, out)
        core.peers.drop(target)

    def on_ack(self, link: Any, msg: EnrpInitTakeoverAck, now: float, out: list) -> None:
        attempt = self.attempts.get(msg.target_id)
        if attempt is None or msg.sender_id not in attempt.waiting:
            return
        attempt.waiting.discard(msg.sender_id)
        attempt.acked.add(msg.sender_id)
        if not attempt.waiting:
            self._win(attempt, now, out)

    def on_server(self, link: Any, msg: EnrpTakeoverServer, now: float, out: list) -> None:
        core = self.core
        target, winner = msg.target_id, msg.sender_id
        if target == core.server_id:
            # A peer took this registrar over: it was away (a pause the
            # core did not notice).  Rejoin under a new ID rather than fight.
            core._restart(now, 0.0, out, why=f"{winner:08x} took this registrar over")
            return
        core.apply_waiting_pages(now, out)  # pages that came before: applied before the re-homing
        attempt = self.attempts.pop(target, None)
        if attempt is not None:
            out.append(TakeoverAborted(target, f"{winner:08x} took it over first"))
            self.stats["aborted"] += 1
        applier = core.applier
        previous = self.history.get(target)
        if previous is not None and previous[0] == core.server_id:
            if winner < core.server_id:
                return  # both won (ACK timeouts): the larger ID keeps the PEs
            ceded = self._cede(target, winner)
            core._log("ceding {n} PEs taken over from {target:08x} to {winner:08x} (larger ID)",
                      n=ceded, target=target, winner=winner)
        self._stop_monitoring(target, winner, now, out)
        applier.settle_home(target, now)  # claims on the dead server's PEs first
        moved = core.handlespace.pes_owned_by(target)
        for entry in moved:
            applier.rehome(entry, winner)
            applier.adopted[(entry.pool_handle, entry.pe_id)] = (target, winner)
        self._remember(target, winner, now)
        core._log("{winner:08x} took {target:08x} over: {n} PEs now homed there",
                  winner=winner, target=target, n=len(moved))
        out.append(TakenOver(target, winner, len(moved)))

    # -- outcome ------------------------------------------------------------------------------

    def _win(self, attempt: Attempt, now: float, out: list) -> None:
        core = self.core
        core.apply_waiting_pages(now, out)  # pages that came before: applied before the adoption
        target = attempt.target
        self.attempts.pop(target, None)
        sid = core.server_id
        for link in core.peers.active():
            if link.server_id != target:
                out.append(Send(link, EnrpTakeoverServer(sid, link.server_id, target)))
        core.peers.drop(target)
        applier = core.applier
        applier.settle_home(target, now)  # PEs that re-registered elsewhere meanwhile
        adopted = core.handlespace.pes_owned_by(target)
        limit = core.settings.max_adopted_life
        for entry in adopted:
            applier.rehome(entry, sid)
            applier.adopted[(entry.pool_handle, entry.pe_id)] = (target, sid)
            life = entry.registration_life
            core.handlespace.schedule_expiry(entry, now + (limit if life < 0 or life > limit else life))
        self._remember(target, sid, now)
        self.stats["won"] += 1
        missing = tuple(sorted(attempt.waiting))
        if missing:
            self.stats["timed_out"] += 1
        core._log("took {target:08x} over: home of its {n} PEs now{late}", target=target, n=len(adopted),
                  late="" if not missing else " (no ACK from " + ", ".join(f"{m:08x}" for m in missing) + ")")
        out.append(TookOver(target, len(adopted), missing))

    def _cede(self, target: int, winner: int) -> int:
        """Give the PEs adopted from ``target`` to ``winner`` (learned copies again)."""
        applier = self.core.applier
        own = self.core.server_id
        keys = [key for key, (origin, adopter) in applier.adopted.items() if origin == target and adopter == own]
        for key in keys:
            entry = self.core.handlespace.get(*key)
            applier.adopted[key] = (target, winner)
            if entry is not None:
                applier.rehome(entry, winner)
                self.core.handlespace.cancel_expiry(entry)
        self.stats["ceded"] += len(keys)
        return len(keys)

    def _remember(self, target: int, winner: int, now: float) -> None:
        self.history[target] = (winner, now)
        self.history.move_to_end(target)
        while len(self.history) > MAX_HISTORY:
            self.history.popitem(last=False)

    # -- the core's events -----------------------------------------------------------------------

    def bound(self, server_id: int) -> None:
        """``server_id`` has a live channel again: a takeover of it long ago
        no longer says anything about it."""
        self.history.pop(server_id, None)

    def heard(self, server_id: int, now: float, out: list) -> None:
        """A message from ``server_id`` on a live channel: not dead after all."""
        if server_id in self.attempts:
            del self.attempts[server_id]
            self.stats["aborted"] += 1
            self.core._log("aborting the takeover of {target:08x}: it is alive", target=server_id)
            out.append(TakeoverAborted(server_id, "the target is alive"))

    def link_gone(self, server_id: int, now: float, out: list) -> None:
        applier = self.core.applier
        applier.drop_claims(sender=server_id)
        applier.settle_home(server_id, now)
        for attempt in list(self.attempts.values()):
            if server_id in attempt.waiting:
                attempt.waiting.discard(server_id)  # a dead peer does not answer
                if not attempt.waiting:
                    self._win(attempt, now, out)

    def sweep_adopted(self, sender: int, marked: set, out: list) -> int:
        """After ``sender``'s whole table (W=1): PEs adopted here from it
        that it did not list went while it was cut off (it lives, it was
        taken over by mistake or across a partition): removed, and the
        peers told (this registrar is their home)."""
        core = self.core
        adopted = core.applier.adopted
        own = core.server_id
        doomed = [key for key in marked if adopted.get(key) == (sender, own)]
        for key in doomed:
            entry = core.handlespace.get(*key)
            del adopted[key]
            if entry is not None and entry.home_server_id == own:
                core.handlespace.deregister(*key)
                out.extend(core._fan_out(codes.UPDATE_DEL_PE, entry, encoded_pe(entry)))
        return len(doomed)

    # -- timers ------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        deadlines = [attempt.deadline for attempt in self.attempts.values()]
        return min(deadlines) if deadlines else None

    def on_timer(self, now: float, out: list) -> None:
        for attempt in list(self.attempts.values()):
            if now >= attempt.deadline:
                self._win(attempt, now, out)
