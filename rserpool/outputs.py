"""Outputs every sans-IO protocol core shares with its shell.

A core (the registrar, a PE, a PU, an authentication exchange) never writes
to a socket: it returns what to send, and the shell writes it; and what it
dropped, for the shell's log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Close", "Ignored", "Send"]


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``message`` on ``channel``: the core's handle for the channel
    (the registrar's ``AsapChannelState``, a PE's channel), or None for the one
    channel a core talks on (a PU's home registrar, an exchange's TLS
    channel).  ``data``, when set, is ``message.encode()`` already made (the
    shell may write it as it is)."""

    channel: Any
    message: Any
    data: bytes | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Close:
    """Drop ``channel`` (the core's handle for it, as in :class:`Send`):
    ``reason`` says why, for the log."""

    channel: Any
    reason: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """Input a core dropped, and why (for the shell's log): ``what`` is the
    message (or a description of the input, e.g. ``"selected PE"``),
    ``reason`` says why it was not acted on."""

    what: Any
    reason: str

    @property
    def what_text(self) -> str:
        """``what`` in a log line: a message's name, else its text."""
        return str(getattr(self.what, "name", self.what))
