"""Making room when the connection limits are reached: which channel goes.

The gate (:mod:`rserpool.gate`) counts connections in total and per
address key (:func:`rserpool.addresses.address_key`: an IPv6 ``/64`` is one
address) and refuses a newcomer once a limit is reached.  Before asking it,
the registrar's shell lets :class:`IdleEviction` pick a channel that may give
its slot up: the caller says which channels may go and from when (on the
registrar: anonymous channels that registered nothing, some seconds after
their last message); the one idle longest goes, from the newcomer's own
address key when the per-address limit is the one reached.

Channels are opaque here apart from the attribute this module sets
(``slot_key``) and the ``last_message_at`` it reads to order candidates.
No Twisted, no clock: the time is passed in.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from rserpool.addresses import DEFAULT_IPV6_PREFIX, address_key

__all__ = ["IdleEviction"]

#: ``evictable(channel, now)``: None for a channel that must stay, else the
#: time from which it may be dropped.
Evictable = Callable[[Any, float], "float | None"]


class IdleEviction:
    """Channels by address key, and the choice of the one to drop."""

    def __init__(self, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> None:
        if not 0 <= ipv6_prefix <= 128:
            raise ValueError("ipv6_prefix must be 0-128")
        self.ipv6_prefix = ipv6_prefix
        self.by_key: dict[str, set[Any]] = {}
        self.evictions = 0
        # No channel can become evictable before this time (saves rescanning
        # every channel for each newcomer while the listener is full).
        self._scan_after = float("-inf")

    def key_of(self, host: str) -> str:
        return address_key(host, self.ipv6_prefix)

    def add(self, host: str, channel: Any) -> None:
        key = channel.slot_key = self.key_of(host)
        self.by_key.setdefault(key, set()).add(channel)

    def remove(self, channel: Any) -> None:
        """Forget ``channel`` (again: nothing happens)."""
        key = getattr(channel, "slot_key", None)
        if key is None:
            return
        channel.slot_key = None
        channels = self.by_key.get(key)
        if channels is not None:
            channels.discard(channel)
            if not channels:
                del self.by_key[key]
        self._scan_after = float("-inf")

    def pick(self, host: str | None, now: float, evictable: Evictable) -> Any:
        """The channel to drop for a newcomer: from ``host``'s address key,
        or (``host`` None) from any; None when none may go yet.  The chosen
        channel is forgotten here and counted in ``evictions``."""
        if host is None:
            if now < self._scan_after:
                return None
            candidates: Iterable[Any] = (c for channels in self.by_key.values() for c in channels)
        else:
            candidates = self.by_key.get(self.key_of(host), ())
        victim, soonest = self._oldest(candidates, now, evictable)
        if victim is None:
            if host is None:
                # Look again once one may have become evictable, and at least
                # once a second (sessions change: a PE may deregister its last PE).
                self._scan_after = min(soonest, now + 1.0)
            return None
        self.remove(victim)
        self.evictions += 1
        return victim

    @staticmethod
    def _oldest(channels: Iterable[Any], now: float, evictable: Evictable) -> tuple[Any, float]:
        """(the evictable channel idle longest, or None; the earliest time
        one of the others may become evictable)."""
        best, best_at = None, 0.0
        soonest = float("inf")
        for channel in channels:
            since = evictable(channel, now)
            if since is None:
                continue
            if since > now:
                soonest = min(soonest, since)
                continue
            at = channel.last_message_at
            if best is None or at < best_at:
                best, best_at = channel, at
        return best, soonest
