"""The registrar core's vocabulary: its outputs, its settings and its
per-channel state (``rserpool.asap.registrar`` re-exports every name).

Pure values and state; the procedures are :class:`rserpool.asap.registrar.RegistrarCore`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from rserpool.gate import Admission, AskAuthorizer
from rserpool.handlespace import PoolElementEntry
from rserpool.outputs import Send

__all__ = [
    "AsapSession",
    "Close",
    "Output",
    "PauseInput",
    "PoolElementAdded",
    "PoolElementRemoved",
    "RegistrarSettings",
]


# -- outputs -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Close:
    session: "AsapSession"
    reason: str


@dataclass(frozen=True, slots=True)
class PauseInput:
    """Read nothing more from the session's channel before ``until`` (the
    gate rate limited it)."""

    session: "AsapSession"
    until: float


@dataclass(frozen=True, slots=True)
class PoolElementAdded:
    entry: PoolElementEntry
    created: bool


@dataclass(frozen=True, slots=True)
class PoolElementRemoved:
    entry: PoolElementEntry
    reason: str


Output = Union[Send, AskAuthorizer, Close, PauseInput, PoolElementAdded, PoolElementRemoved]


# -- configuration and per-channel state -------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegistrarSettings:
    """The registrar's protocol settings (what it admits, and what an
    unreachability report does, is the gate's ``GatePolicy``)."""

    server_id: int
    keepalive_interval: float = 5.0
    keepalive_timeout: float = 5.0
    max_resolution_items: int = 3  # 0: all PEs of the pool

    def __post_init__(self) -> None:
        if type(self.server_id) is not int or not 1 <= self.server_id <= 0xFFFFFFFF:
            raise ValueError("the server ID is a non-zero 32-bit number")


class AsapSession:
    """One ASAP channel: what it registered and what it waits for.

    ``channel`` is the shell's handle (the Twisted protocol); ``admission``
    is the gate's view of the channel (its identity, address, TLS, state).
    """

    __slots__ = ("channel", "admission", "pes", "pending", "closed")

    def __init__(self, channel: Any, admission: Admission) -> None:
        self.channel = channel
        self.admission = admission
        self.pes: set[tuple[bytes, int]] = set()
        # token -> (AskAuthorizer, message) waiting for the authorizer
        self.pending: dict[int, tuple[AskAuthorizer, Any]] = {}
        self.closed = False

    def __repr__(self) -> str:
        return f"<AsapSession {self.admission!r}>"

    @property
    def identity(self) -> str | None:
        """The channel's authenticated identity (the gate's)."""
        return self.admission.identity

    @property
    def address(self) -> str:
        return self.admission.address

    @property
    def secure(self) -> bool:
        return self.admission.tls
