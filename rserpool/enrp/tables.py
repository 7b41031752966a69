"""Handle-table transfers (RFC 5353 3.2.3 and 3.6.3), both directions.

- ``Serving``: a handle-table download this registrar serves: the keys of
  the PEs to send (all of them, pool by pool and within a pool home by home,
  or only its own for the W flag), taken when the download starts, and how
  far it got.  ``next_page`` builds one ENRP_HANDLE_TABLE_RESPONSE bounded in
  PEs and bytes, sets the M flag while keys remain, and reads each PE as it
  is *now* (one that left since is skipped): a later page never undoes an
  update sent before it on the same channel.
- ``Fetch``: a transfer this registrar asked for: the W flag, whether it is
  the join download from a mentor, the "marked" PEs of a re-synchronization
  (RFC 5353 3.6.3: the peer's PEs before it started; those the peer does not
  send again are removed at the end), counters bounding the whole transfer,
  and the page received but not applied yet (``pending``: the next page is
  asked for first, docs/enrp.md).  ``apply_page`` applies a page's entries
  through the ownership rules and limits of ``rserpool.enrp.updates``: runs
  of new PEs of one home at once (``UpdateApplier.add_batch``), the others,
  and any run that shortcut declines, one by one.

Pure: no Twisted, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Callable

from rserpool.enrp.updates import Contested, Refused, UpdateApplier
from rserpool.handlespace import Handlespace, PoolElementEntry
from rserpool.wire import EnrpHandleTableResponse, PoolElement, PoolEntry
from rserpool.wire import codes
from rserpool.wire.enrp import encode_identity
from rserpool.wire.messages import frame_message
from rserpool.wire.params import encode_pool_handle
from rserpool.fastinit import fast_constructor

__all__ = ["Serving", "Fetch", "apply_page", "encoded_pe", "next_page"]

_make_entry = fast_constructor(PoolEntry)
_make_response = EnrpHandleTableResponse._make
_IDS = 8  # sending and receiving server IDs
_home = attrgetter("home_server_id")
_MAX_KEPT_IDENTITIES = 4096  # encoded PE Identity parameters kept per download
_LACK_OF_RESOURCES = codes.CAUSE_LACK_OF_RESOURCES


@dataclass
class Serving:
    own_children_only: bool
    keys: list  # [(pool_handle, pe_id)], pool by pool
    deadline: float
    position: int = 0
    identities: dict = field(default_factory=dict)  # identity -> its PE Identity parameter

    @classmethod
    def start(cls, handlespace: Handlespace, own_id: int, own_children_only: bool,
              deadline: float) -> "Serving":
        if own_children_only:
            keys = sorted((e.pool_handle, e.pe_id) for e in handlespace.pes_owned_by(own_id))
        else:
            # Within a pool home by home (a stable sort): the receiver takes
            # each run of one home's new PEs at once.
            keys = []
            for pool_handle in handlespace.pool_handles():
                members = handlespace.pool_members(pool_handle)
                home = members[0].home_server_id
                for entry in members:
                    if entry.home_server_id != home:
                        members.sort(key=_home)
                        break
                keys.extend([(pool_handle, e.pe_id) for e in members])
        return cls(own_children_only, keys, deadline)

    @property
    def done(self) -> bool:
        return self.position >= len(self.keys)


@dataclass
class Fetch:
    own_children_only: bool
    mentor: bool  # the join download (W=0) from a mentor
    deadline: float
    marked: set = field(default_factory=set)  # keys to remove unless sent again
    received: int = 0
    pages: int = 0
    pending: Any = None  # a page received, its successor asked for, not applied yet
    ended: bool = False  # a limit ended the transfer while a request was out


def encoded_pe(entry: PoolElementEntry) -> bytes | None:
    """The entry's Pool Element parameter bytes (kept in ``payload_cache`` as
    the ASAP core does), or None if its payload is not a PoolElement."""
    payload = entry.payload
    cached = entry.payload_cache
    if cached is not None and cached[0] is payload:
        return cached[1]
    if type(payload) is not PoolElement:
        return None
    data = payload.encode()
    entry.payload_cache = (payload, data)
    return data


def next_page(handlespace: Handlespace, serving: Serving, own_id: int, receiver_id: int,
              max_pes: int, max_bytes: int) -> tuple[Any, bytes]:
    """The next ENRP_HANDLE_TABLE_RESPONSE of ``serving`` and its bytes.

    At most ``max_pes`` PEs and ``max_bytes`` bytes (the first PE always
    fits: one PE parameter is far below 64 KiB).  M is set while keys
    remain.  An empty final page (every remaining PE left meanwhile) is a
    valid response without entries.
    """
    keys = serving.keys
    position = serving.position
    known_identities = serving.identities
    get = handlespace.get
    size = 4 + _IDS
    parts: list[bytes] = []
    entries: list = []
    handle: bytes | None = None
    pes: list = []
    identities: list = []
    count = 0
    while position < len(keys) and count < max_pes:
        key = keys[position]
        entry = get(key[0], key[1])
        if entry is None or (serving.own_children_only and entry.home_server_id != own_id):
            position += 1
            continue
        cached = entry.payload_cache
        data = cached[1] if cached is not None and cached[0] is entry.payload else encoded_pe(entry)
        if data is None:
            position += 1
            continue
        identity = entry.identity
        if identity is None:
            id_bytes = b""
        else:
            id_bytes = known_identities.get(identity)
            if id_bytes is None:
                if len(known_identities) >= _MAX_KEPT_IDENTITIES:
                    known_identities.clear()
                id_bytes = known_identities[identity] = encode_identity(identity)
        handle_bytes = encode_pool_handle(entry.pool_handle) if entry.pool_handle != handle else b""
        cost = len(data) + len(id_bytes) + len(handle_bytes)
        if count and size + cost > max_bytes:
            break
        position += 1
        count += 1
        size += cost
        if handle_bytes:
            if pes:
                entries.append(_entry(handle, pes, identities))
            handle, pes, identities = entry.pool_handle, [], []
            parts.append(handle_bytes)
        pes.append(entry.payload)
        identities.append(identity)
        parts.append(data)
        if id_bytes:
            parts.append(id_bytes)
    if pes:
        entries.append(_entry(handle, pes, identities))
    serving.position = position
    more = position < len(keys)
    flags = codes.FLAG_MORE_TO_SEND if more else 0
    data = frame_message(codes.ENRP_HANDLE_TABLE_RESPONSE, flags,
                         own_id.to_bytes(4, "big") + receiver_id.to_bytes(4, "big"), parts)
    message = _make_response(own_id, receiver_id, tuple(entries), more, False)
    return message, data


def _entry(handle: bytes | None, pes: list, identities: list) -> PoolEntry:
    ids = tuple(identities) if any(i is not None for i in identities) else ()
    return _make_entry(handle, tuple(pes), ids)


def apply_page(applier: UpdateApplier, fetch: Fetch, message: EnrpHandleTableResponse, homes: set[int] | None,
               now: float, refused: Callable[[Refused], None]) -> bool:
    """Apply the entries of ``message``, a page of ``fetch`` (``homes``: for
    the join download, the homes the mentor's word is taken for, else None);
    ``refused`` hears each refusal.  False when a limit ended the transfer
    there (the entries before it stay, nothing is swept)."""
    sender = message.sender_id
    marked = fetch.marked
    add_batch = applier.add_batch
    for entry in message.entries:
        handle = entry.pool_handle
        pes = entry.pool_elements
        identities = entry.identities
        count = len(pes)
        start = 0
        while start < count:
            home = pes[start].home_server_id
            end = start + 1
            while end < count and pes[end].home_server_id == home:
                end += 1
            if end - start > 1 and add_batch(sender, handle, pes[start:end], identities[start:end], now,
                                             homes) is not None:
                if marked:
                    marked.difference_update([(handle, pe.pe_id) for pe in pes[start:end]])
                start = end
                continue
            for index in range(start, end):
                pe = pes[index]
                identity = identities[index] if identities else None
                try:
                    if homes is not None:
                        applier.add_from_mentor(sender, homes, handle, pe, identity, now)
                    else:
                        applier.add(sender, handle, pe, identity, now, keep_unchanged=True)
                except Contested:
                    applier.defer(sender, handle, pe, identity, now)  # its home still holds it
                except Refused as exc:
                    refused(exc)
                    if exc.cause == _LACK_OF_RESOURCES:
                        return False
                    continue
                marked.discard((handle, pe.pe_id))
            start = end
    return True
