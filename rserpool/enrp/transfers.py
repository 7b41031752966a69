"""Handle-table transfers of the ENRP core (RFC 5353 3.2.3, 3.6.3): the
part of ``EnrpCore`` (a mixin of it) that serves ENRP_HANDLE_TABLE_REQUESTs
page by page and fetches a peer's table, the join download from a mentor
(W=0) or a re-synchronization with a peer (W=1).

A fetch asks for each next page as soon as a page with the M flag arrives
and before that page is applied (``ApplyPage``, ``apply_page``), so that
the peer builds the next page while this registrar applies the last one; a
page still waiting when the next message of its link arrives is applied
first, and so is one whose link goes (it came before the channel closed).  A
re-synchronization the peer refuses while it is starting (R) is asked for
again after ``mentor_retry``.  The pages themselves: ``rserpool.enrp.tables``.

A page waiting to be applied is what its peer said before anything that
arrives later, so every waiting page is applied before a takeover changes
who is a peer or the home of which PEs (``apply_waiting_pages``, from
``rserpool.enrp.takeover`` and when a peer is declared dead): a pipelined
download ends exactly as one applied page by page on arrival would.  A W=1
re-synchronization also marks the PEs this registrar adopted from the peer
(it was taken over, yet lives) and ends with ``Takeover.sweep_adopted``.

Pure: no Twisted, no clock.
"""

from __future__ import annotations

from typing import Any

from rserpool.enrp.peers import PeerLink
from rserpool.enrp.settings import ApplyPage, Send
from rserpool.enrp.tables import Fetch, Serving, apply_page, next_page
from rserpool.wire import EnrpHandleTableRequest, EnrpHandleTableResponse
from rserpool.wire import codes

__all__ = ["TableTransfers"]


def _server_id(link: PeerLink) -> int:
    return link.server_id or 0


class TableTransfers:
    """The table transfers of ``EnrpCore``, which provides ``settings``,
    ``handlespace``, ``server_id``, ``peers``, ``applier``, ``takeover``,
    ``stats``, ``initialized``, ``_listed``, ``_log``, ``_refuse``,
    ``_mentor_refused``, ``_initialize`` and ``_paused``."""

    settings: Any
    handlespace: Any
    server_id: int
    peers: Any
    applier: Any
    takeover: Any
    stats: dict
    initialized: bool
    _listed: set

    def _start_fetch(self, link: PeerLink, own_children_only: bool, now: float, out: list,
                     mentor: bool = False) -> None:
        if link.fetch is not None or link.server_id is None:
            return
        link.resync_at = None
        marked = set()
        if own_children_only:
            marked = {(e.pool_handle, e.pe_id) for e in self.handlespace.pes_owned_by(link.server_id)}
            # PEs adopted from it (it was taken over, yet lives): those it no
            # longer lists went while it was cut off (docs/takeover.md).
            own = self.server_id
            marked.update(key for key, (origin, adopter) in self.applier.adopted.items()
                          if origin == link.server_id and adopter == own)
            self.stats["resyncs"] += 1
        link.fetch = Fetch(own_children_only, mentor, now + self.settings.max_time_no_response, marked)
        out.append(Send(link, EnrpHandleTableRequest(self.server_id, link.server_id, own_children_only)))

    def _on_table_request(self, link: PeerLink, msg: EnrpHandleTableRequest, now: float, out: list) -> None:
        serving = link.serving
        if serving is None or serving.own_children_only != msg.own_children_only:
            busy = sum(1 for other in self.peers.links if other.serving is not None and other is not link)
            if not self.initialized or busy >= self.settings.max_serving_downloads:
                link.serving = None
                out.append(Send(link, EnrpHandleTableResponse(self.server_id, msg.sender_id, reject=True)))
                return
            serving = link.serving = Serving.start(self.handlespace, self.server_id, msg.own_children_only, now)
        message, data = next_page(self.handlespace, serving, self.server_id, msg.sender_id,
                                  self.settings.page_pes, self.settings.page_bytes)
        self.stats["pages_sent"] += 1
        link.serving = None if serving.done else serving
        if not serving.done:
            serving.deadline = now + 3 * self.settings.max_time_no_response
        out.append(Send(link, message, data))

    def _on_table_response(self, link: PeerLink, msg: EnrpHandleTableResponse, now: float, out: list) -> None:
        fetch = link.fetch
        if fetch is None:
            self._refuse(link, codes.CAUSE_SECURITY, "an unrequested ENRP_HANDLE_TABLE_RESPONSE", out)
            return
        if fetch.ended:  # the answer to the request that was out when a limit ended the transfer
            link.fetch = None
            return
        self.stats["pages_received"] += 1
        if msg.reject:
            link.fetch = None
            if fetch.mentor:
                self._mentor_refused(link, now, out)
            elif fetch.own_children_only:
                # The peer is starting: its PEs are asked for again a little later
                # (updates lost meanwhile would otherwise stay lost: the PE checksum
                # does not cover their attributes).
                link.resync_at = now + self.settings.mentor_retry
            return
        limits = self.settings.peer_limits
        count = sum(len(entry.pool_elements) for entry in msg.entries)
        fetch.received += count
        fetch.pages += 1
        total = self.handlespace.limits.max_pes if fetch.mentor else limits.max_pes
        if count > limits.max_response_pes or fetch.received > total:
            link.fetch = None
            what = (f"{count} PEs in one response (at most {limits.max_response_pes})"
                    if count > limits.max_response_pes else f"a table of more than {total} PEs")
            self._refuse(link, codes.CAUSE_LACK_OF_RESOURCES, what, out)
            if fetch.mentor:
                self._mentor_refused(link, now, out)
            return
        if msg.more:
            # RFC 5353 3.2.3 step 3: M asks for the next page.  It is asked
            # for before this one is applied (which the peer cannot tell),
            # so that the peer builds it meanwhile: the shell applies this
            # one on a later turn, once the request left (``ApplyPage``).
            fetch.deadline = now + self.settings.max_time_no_response
            out.append(Send(link, EnrpHandleTableRequest(self.server_id, msg.sender_id, fetch.own_children_only)))
            fetch.pending = msg
            out.append(ApplyPage(link))
            return
        if not self._apply(link, fetch, msg, now, out):
            link.fetch = None  # a limit: this transfer ends here, nothing is swept
            return
        link.fetch = None
        if fetch.own_children_only:
            swept = self.applier.sweep(msg.sender_id, fetch.marked, now)
            swept += self.takeover.sweep_adopted(msg.sender_id, fetch.marked, out)
            if swept:
                self._log("re-synchronized with {peer}: removed {n} PEs it no longer has",
                          peer=link.describe(), n=swept)
        if fetch.mentor:
            self._log("joined through mentor {peer}: {n} PEs", peer=link.describe(), n=len(self.handlespace))
            self._initialize(msg.sender_id, now, out)

    def apply_page(self, link: PeerLink, now: float) -> list:
        """Apply the page an ``ApplyPage`` output held back (the shell calls
        this on a later turn); nothing if it was applied meanwhile (the next
        message of its link came first, or its link went) or this registrar
        restarted in place (it was not run meanwhile: everything went)."""
        out: list = []
        if self._paused(now, out):  # type: ignore[attr-defined]
            return out  # restarted in place: every transfer went
        fetch = link.fetch
        if fetch is not None and fetch.pending is not None and not link.closed:
            self._apply_pending(link, fetch, now, out)
        return out

    def apply_waiting_pages(self, now: float, out: list) -> None:
        """Apply every page still waiting, whichever its link (before a
        takeover re-homes PEs or drops a peer: what came first goes first)."""
        for link in sorted(self.peers.links, key=_server_id):
            fetch = link.fetch
            if fetch is not None and fetch.pending is not None and not link.closed:
                self._apply_pending(link, fetch, now, out)

    def _apply_pending(self, link: PeerLink, fetch: Fetch, now: float, out: list) -> None:
        message, fetch.pending = fetch.pending, None
        if not self._apply(link, fetch, message, now, out):
            fetch.ended = True  # a limit: the answer to the request already out is dropped

    def _apply(self, link: PeerLink, fetch: Fetch, msg: EnrpHandleTableResponse, now: float, out: list) -> bool:
        homes = self._listed | self.peers.known_ids() if fetch.mentor else None
        return apply_page(self.applier, fetch, msg, homes, now,
                          lambda exc: self._refuse(link, exc.cause, exc.reason, out))
