"""The ENRP server core (RFC 5353), sans-IO.

``EnrpCore`` shares the registrar's handlespace with the ASAP core.  The
shell feeds it authenticated, authorized channels (``link_up``), their
messages (``message_received``), the registrar's own changes (``pe_added`` /
``pe_removed``) and the time, and carries out what comes back (the outputs
of ``rserpool.enrp.settings``).  It never reads a clock: every call takes
``now``; ``next_deadline()`` says when ``on_timer(now)`` must run.

What it does (docs/enrp.md has the whole story):

- peer list and server-ID binding (``rserpool.enrp.peers``); ENRP_PRESENCE
  with a reply-required one on every new channel, every PEER-HEARTBEAT-CYCLE
  (with jitter), and as the probe after MAX-TIME-LAST-HEARD; a peer silent
  for MAX-TIME-NO-RESPONSE more is dead (``PeerDead``) and taken over
  (3.5, ``rserpool.enrp.takeover``; docs/takeover.md);
- a registrar not run for more than MAX-TIME-LAST-HEARD (stopped, frozen)
  may have been taken over meanwhile: it restarts in place under a new
  server ID (``Restarted``) rather than fight the takeover or serve stale
  state;
- joining (3.2): a mentor among the first linked peers, LIST_REQUEST /
  LIST_RESPONSE (R while this registrar is itself starting), the W=0
  handle-table download paged by the M flag (``rserpool.enrp.transfers``:
  each next page asked for before the last one is applied); alone when no
  mentor answers within ``mentor_discovery_timeout``;
- handle updates (3.3): every change of a PE homed here goes to every peer;
  peers' updates pass the ownership rules and limits of
  ``rserpool.enrp.updates``;
- audit (3.6): each PRESENCE's checksum is compared with the local view of
  the sender's PEs; a mismatch, and every new channel once initialized,
  starts the W=1 re-synchronization (mark, replace, sweep), asked for again
  a little later when the peer refuses it while it is starting.

Refusals are answered with ENRP_ERROR and logged, at most once per peer
and heartbeat cycle (then counted), so a flood costs no flood of answers.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from rserpool.enrp.peers import BindRefused, PeerLink, PeerTable
from rserpool.enrp.restart import paused, restart_in_place
from rserpool.enrp.settings import (
    Announce, Close, Connect, EnrpSettings, Initialized, PeerDead, PeerDown, PeerUp, Send,
)
from rserpool.enrp.tables import encoded_pe
from rserpool.enrp.takeover import Takeover
from rserpool.enrp.transfers import TableTransfers
from rserpool.enrp.updates import Contested, Refused, UpdateApplier
from rserpool.fastinit import fast_constructor
from rserpool.handlespace import Handlespace, PoolElementEntry
from rserpool.wire import (
    EnrpError, EnrpHandleTableRequest, EnrpHandleTableResponse, EnrpHandleUpdate, EnrpInitTakeover,
    EnrpInitTakeoverAck, EnrpListRequest, EnrpListResponse, EnrpPresence, EnrpTakeoverServer,
    ErrorCause, OperationError, ServerInformation, WireError, error_reply,
)
from rserpool.wire import codes
from rserpool.wire.enrp import encode_identity
from rserpool.wire.messages import frame_message
from rserpool.wire.params import encode_pool_handle

__all__ = ["EnrpCore"]

_ADD = codes.UPDATE_ADD_PE
_DEL = codes.UPDATE_DEL_PE
_make_update = EnrpHandleUpdate._make
_make_send = fast_constructor(Send)


def _ids(sender: int, receiver: int) -> bytes:
    return sender.to_bytes(4, "big") + receiver.to_bytes(4, "big")


class EnrpCore(TableTransfers):
    """ENRP procedures over one handlespace (no I/O, no clock)."""

    def __init__(self, settings: EnrpSettings, handlespace: Handlespace,
                 rng: random.Random | None = None, log: Callable[..., None] | None = None) -> None:
        self.settings = settings
        self.handlespace = handlespace
        self.server_id = settings.server_id
        self.rng = rng or random.Random()
        self._log = log or (lambda fmt, **kwargs: None)
        self.peers = PeerTable(settings.server_id, settings.max_peers)
        self.applier = self._new_applier()
        self.takeover = Takeover(self)
        self._last_now: float | None = None
        #: This registrar's Server Information (its ENRP listener), set by the shell.
        self.server_info: ServerInformation | None = None
        self.initialized = False
        self.joining = False
        self.mentor: PeerLink | None = None
        self._join_deadline: float | None = None
        self._mentor_retry_at: float | None = None
        self._listed: set[int] = set()
        self._asked: dict[int, float] = {}  # mentor candidates: when each was asked
        self._presence_due: float | None = None
        # (pool handle, PE id) -> (payload, identity, its encoding): what peers were told.
        self._announced: dict[tuple[bytes, int], tuple[Any, str | None, bytes | None]] = {}
        self._encoded: dict[Any, bytes] = {}  # see _keep_encoded
        self._update_fixed = self._update_headers()
        self._refusals: dict[PeerLink, int] = {}
        self.stats = {"updates_sent": 0, "updates_received": 0, "resyncs": 0, "refused": 0,
                      "pages_sent": 0, "pages_received": 0, "pages_dropped": 0}

    # -- lifecycle --------------------------------------------------------------------

    def start(self, now: float, expect_peers: bool) -> list:
        """Begin: join when peers are configured (RFC 5353 3.2.2.1), else
        start alone at once."""
        out: list = []
        self._presence_due = now + self._cycle()
        if expect_peers:
            self.joining = True
            self._join_deadline = now + self.settings.mentor_discovery_timeout
        else:
            self._initialize(None, now, out)
        return out

    def _new_applier(self) -> UpdateApplier:
        applier = UpdateApplier(self.handlespace, self.server_id, self.settings.peer_limits)
        applier.on_removed = self._removed_by_peer
        applier.holds = self._holds
        return applier

    def _holds(self, server_id: int) -> bool:
        link = self.peers.link_of(server_id)
        return link is not None and not link.closed

    def _cycle(self) -> float:
        jitter = self.settings.jitter
        return self.settings.heartbeat_cycle * (1.0 - jitter + 2.0 * jitter * self.rng.random())

    # -- links ------------------------------------------------------------------------

    def link_up(self, channel: Any, identity: str, address: str, initiator: bool,
                now: float) -> tuple[PeerLink, list]:
        """An authenticated, authorized channel: announce ourselves with a
        reply-required PRESENCE (RFC 5353 3.4.1)."""
        link = PeerLink(channel, identity, address, initiator, now, last_heard=now)
        self.peers.add_link(link)
        return link, [Send(link, self._presence(0, reply_required=True))]

    def link_down(self, link: PeerLink, now: float, reason: str = "channel closed") -> list:
        out: list = []
        if link not in self.peers.links and link.closed:
            return out
        self._abandon(link, now)
        record = self.peers.unlink(link)
        self._refusals.pop(link, None)
        if record is not None:
            out.append(PeerDown(link, reason))
            self.takeover.link_gone(record.server_id, now, out)
        return out

    def _close(self, link: PeerLink, why: str, now: float, out: list) -> None:
        out.extend(self.link_down(link, now, why))
        out.append(Close(link, why))

    def _abandon(self, link: PeerLink, now: float, drop_page: bool = False) -> None:
        """``link`` goes: a page of it still waiting is applied (it came
        before; unless ``drop_page``: a restart in place drops everything),
        its transfers end, and a mentor is looked for again."""
        fetch = link.fetch
        if fetch is not None and fetch.pending is not None:
            if drop_page:
                self.stats["pages_dropped"] += 1
            else:  # the answers to its refusals have no channel left
                self._apply_pending(link, fetch, now, [])
        link.fetch = None
        link.serving = None
        link.list_deadline = None
        link.resync_at = None
        if self.mentor is link:
            self.mentor = None
            self._mentor_retry_at = now + self.settings.mentor_retry

    # -- input ------------------------------------------------------------------------

    def message_received(self, link: PeerLink, message: Any, now: float) -> list:
        out: list = []
        if self._paused(now, out) or link.closed:
            return out
        if message.PPID != codes.PPID_ENRP:
            # RFC 5354 4: this port does not process ASAP; the sender learns why.
            self._log("refusing {message} on the ENRP channel of {peer}", message=message.name,
                      peer=link.describe())
            cause = ErrorCause(codes.CAUSE_UNRECOGNIZED_MESSAGE, message.encode())
            out.append(Send(link, error_reply((cause,), codes.PPID_ASAP)))
            return out
        sender = message.sender_id
        if link.server_id is None:
            link.claimed = sender
            try:
                loser = self.peers.bind(link, sender, now)
            except BindRefused as exc:
                if not exc.duplicate:
                    self._log("refusing ENRP peer {peer}: {reason}", peer=link.describe(), reason=exc.reason)
                    self.stats["refused"] += 1
                self._abandon(link, now)
                self.peers.unlink(link)
                out.append(Close(link, exc.reason))
                return out
            out.append(PeerUp(link))
            self.takeover.bound(sender)
            if loser is not None:
                self._abandon(loser, now)
                loser.closed = True
                self.peers.links.discard(loser)
                out.append(Close(loser, f"second channel of {sender:08x}"))
            self._bound(link, now, out)
        elif sender != link.server_id:
            self._log("closing ENRP channel of {peer}: it changed its server ID to {sid:08x}",
                      peer=link.describe(), sid=sender)
            self.stats["refused"] += 1
            out.extend(self.link_down(link, now, "changed server ID"))
            out.append(Close(link, "changed its server ID"))
            return out
        if message.receiver_id not in (0, self.server_id):
            self._log("ignoring {message} from {peer} addressed to {rid:08x}", message=message.name,
                      peer=link.describe(), rid=message.receiver_id)
            return out
        self.peers.heard(link, now)
        fetch = link.fetch
        if fetch is not None and fetch.pending is not None:
            self._apply_pending(link, fetch, now, out)  # what came before this message goes first
        if sender in self.takeover.attempts:
            self.takeover.heard(sender, now, out)
        handler = self._handlers.get(type(message))
        if handler is not None:
            handler(self, link, message, now, out)
        if message.unrecognized and not link.closed:
            out.append(Send(link, message.error_reply(self.server_id, sender)))
        return out

    def wire_error(self, link: PeerLink, ppid: int, error: WireError) -> list:
        """A message that did not decode: report it (RFC 5354) or drop it."""
        if error.report is None or link.closed:
            return []
        if ppid != codes.PPID_ENRP:
            return [Send(link, error_reply(error, codes.PPID_ASAP))]
        return [Send(link, error_reply(error, codes.PPID_ENRP, self.server_id, link.server_id or 0))]

    def _bound(self, link: PeerLink, now: float, out: list) -> None:
        if self.joining and self.mentor is None:
            self._ask_mentor(link, now, out)
        elif self.initialized:
            self._start_fetch(link, True, now, out)  # updates may have been lost meanwhile

    # -- presence and audit (3.4, 3.6) ----------------------------------------------------

    def _presence(self, receiver: int, reply_required: bool = False) -> EnrpPresence:
        return EnrpPresence(self.server_id, receiver, self.handlespace.checksum(self.server_id),
                            self.server_info, reply_required)

    def _on_presence(self, link: PeerLink, msg: EnrpPresence, now: float, out: list) -> None:
        info = msg.server_info
        record = self.peers.records.get(link.server_id)
        if record is not None and info is not None and info.server_id == msg.sender_id:
            record.info = info
        if msg.reply_required:
            out.append(Send(link, self._presence(msg.sender_id)))
        if (self.initialized and link.fetch is None and msg.pe_checksum is not None
                and msg.pe_checksum != self.handlespace.checksum(msg.sender_id)):
            self._log("checksum of {peer} is {theirs:04x}, ours {ours:04x}: re-synchronizing",
                      peer=link.describe(), theirs=msg.pe_checksum,
                      ours=self.handlespace.checksum(msg.sender_id))
            self._start_fetch(link, True, now, out)

    # -- joining (3.2) --------------------------------------------------------------------

    def _ask_mentor(self, link: PeerLink, now: float, out: list) -> None:
        self.mentor = link
        self._asked[link.server_id] = now
        link.list_deadline = now + self.settings.max_time_no_response
        out.append(Send(link, EnrpListRequest(self.server_id, link.server_id)))

    def _on_list_request(self, link: PeerLink, msg: EnrpListRequest, now: float, out: list) -> None:
        if not self.initialized:
            out.append(Send(link, EnrpListResponse(self.server_id, msg.sender_id, reject=True)))
            return
        servers = [] if self.server_info is None else [self.server_info]
        for sid, record in sorted(self.peers.records.items()):
            if sid != msg.sender_id and record.info is not None and len(servers) <= self.settings.max_peers:
                servers.append(record.info)
        out.append(Send(link, EnrpListResponse(self.server_id, msg.sender_id, tuple(servers))))

    def _on_list_response(self, link: PeerLink, msg: EnrpListResponse, now: float, out: list) -> None:
        if self.mentor is not link or link.list_deadline is None:
            self._log("ignoring an unrequested ENRP_LIST_RESPONSE from {peer}", peer=link.describe())
            return
        link.list_deadline = None
        if msg.reject:
            self._mentor_refused(link, now, out)
            return
        self._listed = {link.server_id}
        for info in msg.servers[:self.settings.max_peers]:
            self._listed.add(info.server_id)
            if info.server_id == self.server_id or self.peers.link_of(info.server_id) is not None:
                continue
            self.peers.listed(info.server_id, now)  # declared dead if it never links (3.2.2, 3.4.3)
            addresses = info.transport.addresses
            if addresses:
                out.append(Connect(info.server_id, str(addresses[0]), info.transport.port))
        self._start_fetch(link, False, now, out, mentor=True)

    def _mentor_refused(self, link: PeerLink, now: float, out: list) -> None:
        """The mentor is starting too (R flag).  Of two starting servers the
        one with the larger ID starts alone, the other asks it again."""
        self.mentor = None
        if link.server_id is not None and link.server_id < self.server_id:
            self._log("mentor {peer} is starting too; starting alone (larger server ID)",
                      peer=link.describe())
            self._initialize(None, now, out)
        else:
            self._mentor_retry_at = now + self.settings.mentor_retry

    def _initialize(self, mentor: int | None, now: float, out: list) -> None:
        self.initialized = True
        self.joining = False
        self.mentor = None
        self._join_deadline = self._mentor_retry_at = None
        out.append(Initialized(mentor, len(self.handlespace)))
        for link in list(self.peers.active()):
            if link.server_id != mentor:
                self._start_fetch(link, True, now, out)

    # -- handle updates (3.3) ------------------------------------------------------------------

    def _on_update(self, link: PeerLink, msg: EnrpHandleUpdate, now: float, out: list) -> None:
        sender = msg.sender_id
        self.stats["updates_received"] += 1
        if not self.applier.rate_allows(sender, now):
            self._refuse(link, codes.CAUSE_LACK_OF_RESOURCES, "ENRP_HANDLE_UPDATE rate exceeded", out)
            return
        pe = msg.pool_element
        applier = self.applier
        try:
            if msg.action == _ADD:
                applier.add(sender, msg.pool_handle, pe, msg.identity, now)
                if applier.adopted:
                    applier.confirmed(msg.pool_handle, pe.pe_id, sender)
            else:
                applier.delete(sender, msg.pool_handle, pe.pe_id, now)
        except Contested as exc:
            # A PE its home still holds: not applied now; the claim waits for
            # the home to let go (docs/takeover.md).  No error: the sender may
            # well be right (the PE moved to it).
            if applier.defer(sender, msg.pool_handle, pe, msg.identity, now):
                self._refuse(link, exc.cause, exc.reason + " (claim kept until it lets go)", out, answer=False)
            else:
                self._refuse(link, codes.CAUSE_LACK_OF_RESOURCES, "too many contested claims", out)
            return
        except Refused as exc:
            if msg.action != _ADD and applier.withdraw(sender, msg.pool_handle, pe.pe_id):
                return  # it let go of a PE it had claimed: its claim goes
            self._refuse(link, exc.cause, exc.reason, out)
            return
        if link.fetch is not None:
            link.fetch.marked.discard((msg.pool_handle, pe.pe_id))

    def pe_added(self, entry: PoolElementEntry) -> list:
        """A registration or re-registration here: tell every peer if
        anything changed (RFC 5353 3.3.1)."""
        if entry.home_server_id != self.server_id:
            return []
        key = (entry.pool_handle, entry.pe_id)
        payload, identity = entry.payload, entry.identity
        previous = self._announced.get(key)
        if previous is not None and previous[0] is payload and previous[1] == identity:
            return []
        # Compared by the encoding, which the update needs anyway.
        data = encoded_pe(entry)
        self._announced[key] = (payload, identity, data)
        if previous is not None and previous[1] == identity and data is not None and data == previous[2]:
            return []
        applier = self.applier
        if applier.provisional or applier.adopted:
            applier.forget(entry)
        return self._fan_out(_ADD, entry, data)

    def pe_removed(self, entry: PoolElementEntry) -> list:
        """A PE homed here left (deregistration, expiry, keep-alive failure,
        unreachability): tell every peer (RFC 5353 3.3.2); a peer's claim
        waiting for it applies."""
        key = (entry.pool_handle, entry.pe_id)
        self.applier.forget(entry)
        if self._announced.pop(key, None) is None and entry.home_server_id != self.server_id:
            return []
        out = self._fan_out(_DEL, entry, encoded_pe(entry))
        if key in self.applier.claims and self.handlespace.get(*key) is None:
            self.applier.settle(key, self._last_now or 0.0)
        return out

    def _fan_out(self, action: int, entry: PoolElementEntry, pe_bytes: bytes | None) -> list:
        """One ENRP_HANDLE_UPDATE, encoded once, the same bytes to every peer."""
        links = self.peers.active()
        if not links or pe_bytes is None:
            return []
        handle = entry.pool_handle
        identity = entry.identity if action == _ADD else None
        encoded = self._encoded
        handle_bytes = encoded.get(handle)
        if handle_bytes is None:
            handle_bytes = self._keep_encoded(handle, encode_pool_handle(handle))
        if identity is None:
            parts = [handle_bytes, pe_bytes]
        else:
            identity_bytes = encoded.get(identity)
            if identity_bytes is None:
                identity_bytes = self._keep_encoded(identity, encode_identity(identity))
            parts = [handle_bytes, pe_bytes, identity_bytes]
        data = frame_message(codes.ENRP_HANDLE_UPDATE, 0, self._update_fixed[action], parts)
        message = _make_update(self.server_id, 0, action, handle, entry.payload, identity)
        self.stats["updates_sent"] += len(links)
        return [_make_send(link, message, data) for link in links]

    def _update_headers(self) -> dict[int, bytes]:
        """The fixed part of an ENRP_HANDLE_UPDATE per action (this server's
        ID in it: set again when it changes, ``rserpool.enrp.restart``)."""
        return {action: _ids(self.server_id, 0) + action.to_bytes(2, "big") + b"\0\0" for action in (_ADD, _DEL)}

    def _keep_encoded(self, key: Any, data: bytes) -> bytes:
        """Pool Handle and PE Identity parameters, by handle and identity (bounded)."""
        if len(self._encoded) >= 4096:
            self._encoded.clear()
        self._encoded[key] = data
        return data

    def _removed_by_peer(self, entry: PoolElementEntry, why: str) -> None:
        self._announced.pop((entry.pool_handle, entry.pe_id), None)

    # -- takeover (3.5): rserpool.enrp.takeover ---------------------------------------------------

    def _on_init_takeover(self, link: PeerLink, msg: EnrpInitTakeover, now: float, out: list) -> None:
        if msg.target_id == self.server_id:
            # 3.5.1 step 1: the target is alive; it says so to every peer.
            for peer in self.peers.active():
                out.append(Send(peer, self._presence(peer.server_id)))
            return
        self.takeover.on_init(link, msg, now, out)

    def _on_error(self, link: PeerLink, msg: EnrpError, now: float, out: list) -> None:
        self._log("ENRP_ERROR from {peer}: {causes}", peer=link.describe(),
                  causes=", ".join(str(c) for c in msg.error.causes))

    # -- refusals --------------------------------------------------------------------------------

    def _refuse(self, link: PeerLink, cause: int, reason: str, out: list, answer: bool = True) -> None:
        """Log and answer (unless not ``answer``) the first refusal per peer
        and heartbeat cycle; count the rest."""
        self.stats["refused"] += 1
        seen = self._refusals.get(link, 0)
        self._refusals[link] = seen + 1
        if seen:
            return
        self._log("refused from ENRP peer {peer}: {reason}", peer=link.describe(), reason=reason)
        if answer:
            out.append(Send(link, EnrpError(self.server_id, link.server_id or 0, OperationError.of(cause))))

    # -- timers ----------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        deadlines = [self._presence_due, self._join_deadline if self.mentor is None else None,
                     self._mentor_retry_at if self.mentor is None else None]
        settings = self.settings
        for link in self.peers.links:
            if link.server_id is None:
                continue
            deadlines.append(link.probe_deadline if link.probe_deadline is not None
                             else link.last_heard + settings.max_time_last_heard)
            if link.fetch is not None:
                deadlines.append(link.fetch.deadline)
            if link.serving is not None:
                deadlines.append(link.serving.deadline)
            if link.list_deadline is not None:
                deadlines.append(link.list_deadline)
            if link.resync_at is not None:
                deadlines.append(link.resync_at)
        for record in self.peers.records.values():
            if record.link is None:
                deadlines.append(record.last_heard + settings.max_time_last_heard + settings.max_time_no_response)
        deadlines.append(self.takeover.next_deadline())
        known = [d for d in deadlines if d is not None]
        return min(known) if known else None

    def on_timer(self, now: float) -> list:
        out: list = []
        if self._paused(now, out):
            return out
        settings = self.settings
        if self._presence_due is not None and now >= self._presence_due:
            self._presence_due = now + self._cycle()
            for link in self.peers.active():
                out.append(Send(link, self._presence(link.server_id)))
            out.append(Announce(self._presence(0)))
            for link, count in list(self._refusals.items()):
                if count > 1:
                    self._log("refused {n} more messages from ENRP peer {peer}", n=count - 1,
                              peer=link.describe())
            self._refusals.clear()
            self.applier.drop_claims(older_than=now - settings.claim_ttl)
        for link in list(self.peers.links):
            if link.server_id is None or link.closed:
                continue
            why = None
            if link.probe_deadline is not None and now >= link.probe_deadline:
                why = "no answer to the reply-required PRESENCE (MAX-TIME-NO-RESPONSE)"
            elif link.fetch is not None and now >= link.fetch.deadline:
                why = "no ENRP_HANDLE_TABLE_RESPONSE within MAX-TIME-NO-RESPONSE"
            elif link.list_deadline is not None and now >= link.list_deadline:
                why = "no ENRP_LIST_RESPONSE within MAX-TIME-NO-RESPONSE"
            if why is not None:
                self._log("closing ENRP channel of {peer}: {why}", peer=link.describe(), why=why)
                dead = link.probe_deadline is not None and now >= link.probe_deadline
                out.extend(self.link_down(link, now, why))
                out.append(Close(link, why))
                if dead:
                    self._declare_dead(link.server_id, now, out)
                continue
            if link.probe_deadline is None and now - link.last_heard >= settings.max_time_last_heard:
                link.probe_deadline = now + settings.max_time_no_response
                out.append(Send(link, self._presence(link.server_id, reply_required=True)))
            if link.serving is not None and now >= link.serving.deadline:
                link.serving = None
            if link.resync_at is not None and now >= link.resync_at:
                link.resync_at = None
                if self.initialized:
                    self._start_fetch(link, True, now, out)
        limit = settings.max_time_last_heard + settings.max_time_no_response
        for sid, record in list(self.peers.records.items()):
            if record.link is None and now - record.last_heard >= limit:
                self._declare_dead(sid, now, out)
        if self.joining and self.mentor is None:
            if self._join_deadline is not None and now >= self._join_deadline:
                self._log("no mentor answered within {t} s; starting alone", t=settings.mentor_discovery_timeout)
                self._initialize(None, now, out)
            elif self._mentor_retry_at is None or now >= self._mentor_retry_at:
                self._mentor_retry_at = None
                links = list(self.peers.active())
                if links:  # the one asked longest ago (never asked: first)
                    link = min(links, key=lambda l: self._asked.get(l.server_id, float("-inf")))
                    self._ask_mentor(link, now, out)
        self.takeover.on_timer(now, out)
        return out

    def _declare_dead(self, server_id: int, now: float, out: list) -> None:
        self.apply_waiting_pages(now, out)  # what came before goes first
        record = self.peers.drop(server_id)
        if record is None or record.dead_reported:
            return
        record.dead_reported = True
        owned = self.handlespace.owned_count(server_id)
        self._log("ENRP peer {sid:08x} ({identity}) is dead; {n} PEs are still homed at it",
                  sid=server_id, identity=record.identity, n=owned)
        out.append(PeerDead(server_id, record.identity, owned))
        self.takeover.peer_dead(server_id, now, out)

    # -- restarting in place (rserpool.enrp.restart) ------------------------------------------

    def _paused(self, now: float, out: list) -> bool:
        return paused(self, now, out)

    def _restart(self, now: float, gap: float, out: list, why: str | None = None) -> None:
        restart_in_place(self, now, gap, out, why)

    _handlers: dict = {
        EnrpPresence: _on_presence,
        EnrpListRequest: _on_list_request,
        EnrpListResponse: _on_list_response,
        EnrpHandleTableRequest: TableTransfers._on_table_request,
        EnrpHandleTableResponse: TableTransfers._on_table_response,
        EnrpHandleUpdate: _on_update,
        EnrpInitTakeover: _on_init_takeover,
        EnrpInitTakeoverAck: lambda self, *args: self.takeover.on_ack(*args),
        EnrpTakeoverServer: lambda self, *args: self.takeover.on_server(*args),
        EnrpError: _on_error,
    }
