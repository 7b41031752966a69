"""Which servers to dial, and when (RFC 5353 3.2.2; RFC 5355 2.12), sans-IO.

Discovery is a hint only.  ``PeerTargets`` keeps the addresses worth
dialling: the configured ones (static list, DNS names and SRV records,
resolved by the shell) and *hints* from ENRP_LIST_RESPONSEs and UDP
ENRP_PRESENCE datagrams.  A dialled server becomes a peer only after TLS
and admission, so a forged hint costs at most a refused connection attempt:

- a configured target is dialled at most once per back-off interval
  (doubling from ``retry_min`` to ``retry_max``);
- a hint is dialled once: if that fails it is forgotten, and only a new
  hint brings it back; new hints are rate limited (``hint_rate``), bounded
  in number (``max_hints``) and forgotten ``hint_lifetime`` seconds after
  the last time they were heard of;
- a target whose server is already linked (through a channel in either
  direction) is not dialled; one that turned out to be this registrar
  itself is never dialled again.

Pure: no Twisted, no clock (time is passed in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from rserpool.asap.hunt import Candidate, Origin
from rserpool.security.ratelimit import RateLimit, RateLimiter

__all__ = ["Target", "PeerTargets"]


@dataclass(eq=False)
class Target:
    candidate: Candidate
    hint: bool
    expires: float | None = None
    state: str = "idle"  # idle | connecting | connected | self
    next_attempt: float = 0.0
    backoff: float = 0.0
    server_id: int | None = None
    channel: Any = None
    attempts: int = 0

    @property
    def key(self) -> tuple[str, int]:
        return self.candidate.key


class PeerTargets:
    def __init__(self, *, retry_min: float = 1.0, retry_max: float = 60.0,
                 hint_rate: RateLimit = RateLimit(rate=0.5, burst=4.0), max_hints: int = 32,
                 hint_lifetime: float = 600.0) -> None:
        if not 0 < retry_min <= retry_max:
            raise ValueError("need 0 < retry_min <= retry_max")
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.max_hints = max_hints
        self.hint_lifetime = hint_lifetime
        self._hint_rate = RateLimiter(hint_rate, max_keys=1)
        self.targets: dict[tuple[str, int], Target] = {}
        self.own: set[tuple[str, int]] = set()
        self.hints_refused = 0

    # -- what to dial ------------------------------------------------------------------

    def set_configured(self, candidates: Iterable[Candidate], now: float) -> None:
        """The configured targets of this round (their state is kept)."""
        wanted = {c.key: c for c in candidates if c.key not in self.own}
        for key, target in list(self.targets.items()):
            if not target.hint and key not in wanted and target.state != "connected":
                del self.targets[key]
        for key, candidate in wanted.items():
            target = self.targets.get(key)
            if target is None:
                self.targets[key] = Target(candidate, False, next_attempt=now)
            else:
                target.hint = False
                target.expires = None
                target.candidate = candidate

    def hint(self, server_id: int, host: str, port: int, now: float) -> bool:
        """A server heard of (LIST_RESPONSE, UDP PRESENCE); False if dropped."""
        key = (host, port)
        if key in self.own:
            return False
        target = self.targets.get(key)
        if target is not None:
            if target.hint:
                target.expires = now + self.hint_lifetime
            if target.server_id is None:
                target.server_id = server_id
            return True
        self._expire(now)
        hints = sum(1 for t in self.targets.values() if t.hint)
        if hints >= self.max_hints or not self._hint_rate.allow(0, now):
            self.hints_refused += 1
            return False
        try:
            candidate = Candidate(host, port, host, Origin.ANNOUNCE, "ENRP hint", server_id)
        except ValueError:
            self.hints_refused += 1
            return False
        self.targets[key] = Target(candidate, True, now + self.hint_lifetime, next_attempt=now,
                                   server_id=server_id)
        return True

    def due(self, now: float, linked: Callable[[int], bool]) -> list[Target]:
        """Targets to dial now; they become ``connecting``."""
        self._expire(now)
        out = []
        for target in self.targets.values():
            if target.state != "idle" or target.next_attempt > now:
                continue
            if target.server_id is not None and linked(target.server_id):
                continue
            target.state = "connecting"
            target.attempts += 1
            out.append(target)
        return out

    def next_deadline(self, linked: Callable[[int], bool]) -> float | None:
        times = [t.next_attempt for t in self.targets.values() if t.state == "idle"
                 and not (t.server_id is not None and linked(t.server_id))]
        times += [t.expires for t in self.targets.values() if t.hint and t.expires is not None]
        return min(times) if times else None

    # -- what happened -------------------------------------------------------------------

    def connected(self, target: Target, channel: Any) -> None:
        target.state = "connected"
        target.channel = channel

    def failed(self, target: Target, now: float) -> None:
        if target.hint:
            self.targets.pop(target.key, None)  # a hint gets one attempt
            return
        target.state = "idle"
        target.channel = None
        target.backoff = min(self.retry_max, max(self.retry_min, target.backoff * 2))
        target.next_attempt = now + target.backoff

    def bound(self, channel: Any, server_id: int) -> None:
        for target in self.targets.values():
            if target.channel is channel:
                target.server_id = server_id
                target.backoff = 0.0

    def closed(self, channel: Any, claimed: int | None, own_id: int, now: float) -> None:
        """A dialled channel is gone (``claimed``: the server ID it named)."""
        for target in self.targets.values():
            if target.channel is channel:
                if claimed is not None:
                    target.server_id = claimed
                if claimed == own_id:
                    target.state = "self"  # ourselves under another address: never again
                    target.channel = None
                    return
                self.failed(target, now)
                return

    def _expire(self, now: float) -> None:
        for key, target in list(self.targets.items()):
            if target.hint and target.state == "idle" and target.expires is not None and target.expires <= now:
                del self.targets[key]
