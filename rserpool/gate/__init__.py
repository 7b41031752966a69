"""The registrar's security gate: every admission decision, for every door.

The decisions are made in :mod:`rserpool.gate.gate` (the :class:`Gate`);
:mod:`rserpool.gate.facts` names the doors, actions, configuration and
outputs; :mod:`rserpool.gate.refusals` writes the refusal log.
``docs/gate.md`` is the decision table.
"""

from rserpool.gate.facts import (
    ACTION_ADMIN,
    ACTION_DEREGISTER,
    ACTION_OPAQUE,
    ACTION_PEER,
    ACTION_REGISTER,
    ACTION_RESOLVE,
    ACTION_UNREACHABLE,
    ACTIONS,
    DOOR_ACTIONS,
    DOOR_ADMIN,
    DOOR_ASAP,
    DOOR_PEER,
    DOORS,
    REFUSED_AFTER_SUCCESS,
    REFUSED_CLOSING,
    REFUSED_IDENTITY_MISMATCH,
    REFUSED_RATE_ADDRESS,
    REFUSED_RATE_IDENTITY,
    REPORT_COUNTED,
    REPORT_PROBE,
    REPORT_REMOVE,
    AskAuthorizer,
    AttemptDelayed,
    AttemptRefused,
    CloseChannel,
    GatePolicy,
    Opened,
    Output,
    NeedRoom,
    RemovePoolElements,
    Slowdown,
)
from rserpool.gate.facts import ROOM_ADDRESS, ROOM_TOTAL
from rserpool.gate.facts import CLOSING, IDENTIFYING, OPEN, Admission
from rserpool.gate.gate import CHANNEL_CLOSED, Gate
from rserpool.gate.refusals import REFUSAL_FORMAT, pool_handle_text

__all__ = [
    "ACTIONS",
    "ACTION_ADMIN",
    "ACTION_DEREGISTER",
    "ACTION_OPAQUE",
    "ACTION_PEER",
    "ACTION_REGISTER",
    "ACTION_RESOLVE",
    "ACTION_UNREACHABLE",
    "Admission",
    "AskAuthorizer",
    "AttemptDelayed",
    "AttemptRefused",
    "CHANNEL_CLOSED",
    "CLOSING",
    "CloseChannel",
    "DOORS",
    "DOOR_ACTIONS",
    "DOOR_ADMIN",
    "DOOR_ASAP",
    "DOOR_PEER",
    "Gate",
    "GatePolicy",
    "IDENTIFYING",
    "OPEN",
    "Opened",
    "Output",
    "REFUSAL_FORMAT",
    "REFUSED_AFTER_SUCCESS",
    "REFUSED_CLOSING",
    "REFUSED_IDENTITY_MISMATCH",
    "REFUSED_RATE_ADDRESS",
    "REFUSED_RATE_IDENTITY",
    "REPORT_COUNTED",
    "REPORT_PROBE",
    "REPORT_REMOVE",
    "NeedRoom",
    "ROOM_ADDRESS",
    "ROOM_TOTAL",
    "RemovePoolElements",
    "Slowdown",
    "pool_handle_text",
]
