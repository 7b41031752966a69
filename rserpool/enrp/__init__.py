"""ENRP (RFC 5353) between registrars: the sans-IO core.

- ``EnrpCore`` (``core``): peer list, presence and audit deadlines, joining,
  handle-table paging, handle updates;
- ``EnrpSettings`` / ``PeerLimits`` and the outputs (``settings``);
- ``PeerLink`` / ``PeerTable`` (``peers``): server IDs bound to identities;
- ``UpdateApplier`` (``updates``): ownership rules and per-peer limits;
- ``Serving`` / ``Fetch`` (``tables``): handle-table pages; their exchange
  (``transfers``, a part of ``EnrpCore``);
- ``Takeover`` (``takeover``): taking over a dead peer, re-homing its PEs.

The Twisted shell is ``rserpool.service.enrp``; docs/enrp.md explains both.
"""

from rserpool.enrp.core import EnrpCore
from rserpool.enrp.peers import BindRefused, PeerLink, PeerRecord, PeerTable
from rserpool.enrp.settings import (
    Announce, ApplyPage, Close, Connect, EnrpSettings, Initialized, Output, PeerDead, PeerDown, PeerLimits,
    PeerUp, Restarted, Send, TakenOver, TakeoverAborted, TakeoverStarted, TookOver,
)
from rserpool.enrp.takeover import Takeover
from rserpool.enrp.updates import Contested, Refused, UpdateApplier

__all__ = [
    "EnrpCore", "EnrpSettings", "PeerLimits", "PeerLink", "PeerRecord", "PeerTable", "BindRefused",
    "UpdateApplier", "Refused", "Contested", "Takeover", "Announce", "ApplyPage", "Close", "Connect",
    "Initialized", "Output", "PeerDead", "PeerDown", "PeerUp", "Restarted", "Send", "TakenOver",
    "TakeoverAborted", "TakeoverStarted", "TookOver",
]
