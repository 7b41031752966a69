"""The peer list (RFC 5353 3.4): authenticated ENRP channels and the server
IDs bound to them.

A ``PeerLink`` exists only for a channel the shell has authenticated (TLS,
mutual) and authorized (``peer``): nothing about a peer is stored before.
Its server ID is bound by the first ENRP message it sends and stays bound to
the certificate identity for the life of the channel (``PeerTable.bind``):
a link that changes its ID, or claims an ID another identity holds, is
refused.  ``PeerRecord`` is what survives a link: the identity, when the peer
was last heard and its Server Information, so that a peer whose channel
broke can still be declared dead (RFC 5353 3.4.3) and listed for joiners.
A server a mentor's ENRP_LIST_RESPONSE names joins the list unlinked and
without an identity (``listed``, RFC 5353 3.2.2): the first channel that
names it binds its identity, and one never linked is declared dead like a
peer whose channel broke (so the PEs the mentor listed for it are taken
over, not kept for ever).

Pure: no Twisted, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["PeerLink", "PeerRecord", "PeerTable", "BindRefused"]


class BindRefused(Exception):
    """The first message of a link claims a server ID it may not have."""

    def __init__(self, reason: str, duplicate: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.duplicate = duplicate  # a second channel of a peer already linked


@dataclass(eq=False)
class PeerLink:
    """One authenticated, authorized ENRP channel (``channel`` is the
    shell's handle).  ``server_id`` is None until the first message."""

    channel: Any
    identity: str
    address: str
    initiator: bool
    opened_at: float
    server_id: int | None = None
    claimed: int | None = None  # the server ID its first message named
    closed: bool = False
    last_heard: float = 0.0
    probe_deadline: float | None = None
    # Table transfers: the one we asked for on this link and the one we serve.
    fetch: Any = None
    serving: Any = None
    # LIST_REQUEST sent to this link as a mentor: its deadline.
    list_deadline: float | None = None
    # A re-synchronization the peer refused while it was starting (R): when to ask again.
    resync_at: float | None = None

    @property
    def bound(self) -> bool:
        return self.server_id is not None and not self.closed

    def describe(self) -> str:
        sid = "?" if self.server_id is None else f"{self.server_id:08x}"
        return f"{self.identity}@{self.address} (server {sid})"


@dataclass
class PeerRecord:
    server_id: int
    identity: str | None  # None: listed by a mentor, never linked yet
    last_heard: float
    info: Any = None  # the peer's ServerInformation, from its PRESENCE
    link: PeerLink | None = None
    dead_reported: bool = False


@dataclass
class PeerTable:
    """Links and records, bounded by ``max_peers``."""

    own_id: int
    max_peers: int
    links: set = field(default_factory=set)  # every admitted PeerLink
    records: dict = field(default_factory=dict)  # server_id -> PeerRecord

    def add_link(self, link: PeerLink) -> None:
        self.links.add(link)

    def active(self) -> list[PeerLink]:
        """Bound links, in server-ID order (a deterministic fan-out)."""
        records = self.records
        return [link for link in [records[sid].link for sid in sorted(records)]
                if link is not None and not link.closed]

    def link_of(self, server_id: int) -> PeerLink | None:
        record = self.records.get(server_id)
        return None if record is None else record.link

    def bind(self, link: PeerLink, server_id: int, now: float) -> PeerLink | None:
        """Bind ``link`` to ``server_id``; returns a link to close (the loser
        of two channels between the same pair of servers) or None.  Raises
        ``BindRefused`` when the claim is not acceptable."""
        if server_id == 0:
            raise BindRefused("server ID 0 (reserved)")
        if server_id == self.own_id:
            raise BindRefused("claims this registrar's own server ID")
        record = self.records.get(server_id)
        if record is not None and record.identity is not None and record.identity != link.identity:
            raise BindRefused(f"claims server ID {server_id:08x}, held by {record.identity}")
        loser = None
        if record is not None and record.link is not None and not record.link.closed:
            other = record.link
            # Two channels between the same two servers: keep the one opened
            # by the server with the smaller ID, which both sides agree on.
            we_keep_initiated = self.own_id < server_id
            keep_new = link.initiator == we_keep_initiated
            if other.initiator == link.initiator:
                keep_new = True  # the same direction twice: the peer reconnected
            if not keep_new:
                raise BindRefused(f"second channel of {server_id:08x}", duplicate=True)
            loser = other
        if record is None:
            if len(self.records) >= self.max_peers:
                raise BindRefused(f"peer list full ({self.max_peers})")
            record = self.records[server_id] = PeerRecord(server_id, link.identity, now)
        record.identity = link.identity
        record.link = link
        record.last_heard = now
        record.dead_reported = False
        link.server_id = server_id
        link.last_heard = now
        return loser

    def listed(self, server_id: int, now: float) -> None:
        """A mentor listed ``server_id``: a peer not linked yet (if room)."""
        if server_id not in (0, self.own_id) and server_id not in self.records \
                and len(self.records) < self.max_peers:
            self.records[server_id] = PeerRecord(server_id, None, now)

    def unlink(self, link: PeerLink) -> PeerRecord | None:
        """Forget ``link`` (its channel is gone); its record stays."""
        link.closed = True
        self.links.discard(link)
        if link.server_id is None:
            return None
        record = self.records.get(link.server_id)
        if record is not None and record.link is link:
            record.link = None
            return record
        return None

    def heard(self, link: PeerLink, now: float) -> None:
        link.last_heard = now
        link.probe_deadline = None
        record = self.records.get(link.server_id) if link.server_id is not None else None
        if record is not None:
            record.last_heard = now

    def drop(self, server_id: int) -> PeerRecord | None:
        return self.records.pop(server_id, None)

    def known_ids(self) -> set[int]:
        return set(self.records)
