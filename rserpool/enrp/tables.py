"""Handle-table transfers (RFC 5353 3.2.3 and 3.6.3), both directions.

- ``Serving``: a handle-table download this registrar serves: the keys of
  the PEs to send (all of them, or only its own for the W flag), taken when
  the download starts, and how far it got.  ``next_page`` builds one
  ENRP_HANDLE_TABLE_RESPONSE bounded in PEs and bytes, sets the M flag while
  keys remain, and reads each PE as it is *now* (one that left since is
  skipped): a later page never undoes an update sent before it on the same
  channel.
- ``Fetch``: a transfer this registrar asked for: the W flag, whether it is
  the join download from a mentor, the "marked" PEs of a re-synchronization
  (RFC 5353 3.6.3: the peer's PEs before it started; those the peer does not
  send again are removed at the end) and counters bounding the whole
  transfer.

Pure: no Twisted, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rserpool.handlespace import Handlespace, PoolElementEntry
from rserpool.wire import EnrpHandleTableResponse, PoolElement, PoolEntry
from rserpool.wire import codes
from rserpool.wire.enrp import encode_identity
from rserpool.wire.messages import frame_message
from rserpool.wire.params import encode_pool_handle
from rserpool.fastinit import fast_constructor

__all__ = ["Serving", "Fetch", "encoded_pe", "next_page"]

_make_entry = fast_constructor(PoolEntry)
_make_response = EnrpHandleTableResponse._make
_IDS = 8  # sending and receiving server IDs


@dataclass
class Serving:
    own_children_only: bool
    keys: list  # [(pool_handle, pe_id)], pool by pool
    deadline: float
    position: int = 0

    @classmethod
    def start(cls, handlespace: Handlespace, own_id: int, own_children_only: bool,
              deadline: float) -> "Serving":
        if own_children_only:
            keys = sorted((e.pool_handle, e.pe_id) for e in handlespace.pes_owned_by(own_id))
        else:
            keys = [(e.pool_handle, e.pe_id) for e in handlespace.entries()]
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
    size = 4 + _IDS
    parts: list[bytes] = []
    entries: list = []
    handle: bytes | None = None
    pes: list = []
    identities: list = []
    count = 0
    while position < len(keys) and count < max_pes:
        key = keys[position]
        entry = handlespace.get(key[0], key[1])
        if entry is None or (serving.own_children_only and entry.home_server_id != own_id):
            position += 1
            continue
        data = encoded_pe(entry)
        if data is None:
            position += 1
            continue
        identity = entry.identity
        id_bytes = encode_identity(identity) if identity is not None else b""
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
