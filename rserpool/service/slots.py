"""Connection slots of a listener: who gets one, and who gives one up.

:class:`ConnectionSlots` counts the open connections in total and per
address key (:func:`rserpool.addresses.address_key`: IPv6 by ``/64``), both
from the moment a connection is accepted (before its TLS handshake).  When
a limit is reached, a newcomer is admitted only if an *evictable* channel
can make room: the caller says which channels may go (on the registrar:
anonymous channels that registered nothing and have sent no message for a
while); the one idle longest is evicted, from the same address key when the
per-address limit is the one reached.  Otherwise the newcomer is refused.

Channels are opaque to this module apart from the attributes it sets
(``slot_key``) and the ``last_message_at`` it reads to order candidates.
No Twisted, no clock: the time is passed in.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from rserpool.addresses import DEFAULT_IPV6_PREFIX, address_key

__all__ = ["Admission", "ConnectionSlots"]


class Admission:
    """``key`` is None when the newcomer is refused (``reason`` says why);
    ``evicted`` is the channel that must be dropped to make room, if any."""

    __slots__ = ("key", "evicted", "reason")

    def __init__(self, key: str | None, evicted: Any = None, reason: str = "") -> None:
        self.key = key
        self.evicted = evicted
        self.reason = reason


class ConnectionSlots:
    """At most ``max_total`` channels, at most ``max_per_address`` per key."""

    def __init__(self, max_total: int, max_per_address: int, *,
                 ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> None:
        if max_total < 1 or max_per_address < 1:
            raise ValueError("connection limits must be positive")
        if not 0 <= ipv6_prefix <= 128:
            raise ValueError("ipv6_prefix must be 0-128")
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.ipv6_prefix = ipv6_prefix
        self.by_key: dict[str, set[Any]] = {}
        self.total = 0
        self.evictions = 0
        # No channel can become evictable before this time (saves rescanning
        # every channel for each refused newcomer while the listener is full).
        self._scan_after = float("-inf")

    def key_of(self, host: str) -> str:
        return address_key(host, self.ipv6_prefix)

    def counts(self) -> dict[str, int]:
        """Open channels per address key."""
        return {key: len(channels) for key, channels in self.by_key.items()}

    def admit(self, host: str, now: float,
              evictable: Callable[[Any, float], float | None]) -> Admission:
        """May a connection from ``host`` have a slot?

        ``evictable(channel, now)`` returns None for a channel that must stay,
        else the time from which it may be evicted (the newcomer may take
        its slot once ``now`` reaches it).  The evicted channel, if any, has
        already lost its slot when this returns.
        """
        key = self.key_of(host)
        same = self.by_key.get(key)
        if same is not None and len(same) >= self.max_per_address:
            victim = self._oldest(same, now, evictable)[0]
            if victim is None:
                return Admission(None, reason="too many connections from this address")
            self.remove(victim)
            self.evictions += 1
            return Admission(key, victim)
        if self.total >= self.max_total:
            if now < self._scan_after:
                return Admission(None, reason="connection limit reached")
            victim, next_time = self._oldest(
                (channel for channels in self.by_key.values() for channel in channels), now, evictable)
            if victim is None:
                # Rescan once one may have become evictable, at least once a
                # second (sessions change: a PE may deregister its last PE).
                self._scan_after = min(next_time, now + 1.0)
                return Admission(None, reason="connection limit reached")
            self.remove(victim)
            self.evictions += 1
            return Admission(key, victim)
        return Admission(key)

    @staticmethod
    def _oldest(channels: Iterable[Any], now: float,
                evictable: Callable[[Any, float], float | None]) -> tuple[Any, float]:
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

    def add(self, key: str, channel: Any) -> None:
        channel.slot_key = key
        self.by_key.setdefault(key, set()).add(channel)
        self.total += 1

    def remove(self, channel: Any) -> None:
        """Give up ``channel``'s slot (again: nothing happens)."""
        key = getattr(channel, "slot_key", None)
        if key is None:
            return
        channel.slot_key = None
        channels = self.by_key.get(key)
        if channels is None or channel not in channels:
            return
        channels.discard(channel)
        if not channels:
            del self.by_key[key]
        self.total -= 1
        self._scan_after = float("-inf")  # a freed slot or a changed set: look again
