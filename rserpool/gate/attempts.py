"""The gate's failed-authentication accounting (pure, ``now`` passed in).

Who may try to prove an identity, and how fast, without letting outsiders
lock the identity out (issue 12):

- **per (identity, source)**: an attempt takes a token, a success gives it
  back, so one source can make only a few failed guesses at one identity
  (then one per ``refill_interval``); other sources are not affected;
- **per source**: the same across every identity a source tries;
- **per identity**: no budget that could run out, only a *slowdown*: every
  failure, from anywhere, adds to the identity's score (forgotten one per
  ``forget_interval``); past ``free_failures`` an attempt waits a delay that
  doubles with the score, up to ``max_delay``, before any credential work.
  The right party is never refused because others failed, only delayed by
  at most ``max_delay``; failures spread over time (one a minute) are
  forgotten as fast as they come and delay nobody.

Sources are address keys (the gate's: an IPv6 address counts by its
prefix).  The tables are bounded (least recently used keys go first).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from rserpool.security.ratelimit import AttemptLimit, AttemptLimiter

__all__ = ["AttemptBudgets", "Slowdown", "REFUSED_RATE_ADDRESS", "REFUSED_RATE_IDENTITY"]

REFUSED_RATE_ADDRESS = "too many failed attempts from this address"
REFUSED_RATE_IDENTITY = "too many failed attempts for this identity from this address"


@dataclass(frozen=True, slots=True)
class Slowdown:
    """The per-identity slowdown: ``free_failures`` recent failures delay
    nothing; each further one doubles the delay from ``first_delay`` up to
    ``max_delay`` (seconds); one failure is forgotten per ``forget_interval``."""

    free_failures: int = 3
    first_delay: float = 0.25
    max_delay: float = 2.0
    forget_interval: float = 30.0
    max_keys: int = 100_000

    def __post_init__(self) -> None:
        if self.free_failures < 0 or self.max_keys < 1:
            raise ValueError("free_failures must be >= 0 and max_keys >= 1")
        if not 0 < self.first_delay <= self.max_delay or self.forget_interval <= 0:
            raise ValueError("need 0 < first_delay <= max_delay and forget_interval > 0")

    def delay_for(self, score: float) -> float:
        """The delay an attempt waits after ``score`` recent failures."""
        over = int(score) - self.free_failures - 1
        if over < 0:
            return 0.0
        return min(self.max_delay, self.first_delay * 2.0 ** min(over, 32))


class AttemptBudgets:
    """Failed-attempt budgets per (identity, source) and per source, and
    the per-identity slowdown (see the module docstring)."""

    __slots__ = ("per_identity_source", "per_source", "slowdown", "_scores", "slowed")

    def __init__(self, per_identity_source: AttemptLimit, per_source: AttemptLimit,
                 slowdown: Slowdown) -> None:
        self.per_identity_source = AttemptLimiter.from_limit(per_identity_source)
        self.per_source = AttemptLimiter.from_limit(per_source)
        self.slowdown = slowdown
        self._scores: OrderedDict[str, tuple[float, float]] = OrderedDict()  # identity -> (score, when)
        self.slowed = 0  # attempts delayed so far

    def take(self, claimed: str, source: str, now: float) -> str | None:
        """Take the attempt's tokens; the refusal reason when one is spent."""
        if not self.per_source.try_acquire(source, now):
            return REFUSED_RATE_ADDRESS
        if not self.per_identity_source.try_acquire((claimed, source), now):  # type: ignore[arg-type]
            self.per_source.refund(source, now)
            return REFUSED_RATE_IDENTITY
        return None

    def refund(self, claimed: str | None, source: str, now: float) -> None:
        """The attempt succeeded (or the backend could not answer): its tokens return."""
        self.per_source.refund(source, now)
        if claimed is not None:
            self.per_identity_source.refund((claimed, source), now)  # type: ignore[arg-type]

    def score(self, claimed: str, now: float) -> float:
        """Recent failures for ``claimed``, from every source."""
        entry = self._scores.get(claimed)
        if entry is None:
            return 0.0
        score, when = entry
        return max(0.0, score - max(0.0, now - when) / self.slowdown.forget_interval)

    def failed(self, claimed: str, now: float) -> None:
        """An attempt to prove ``claimed`` failed: its score grows."""
        scores = self._scores
        scores[claimed] = (self.score(claimed, now) + 1.0, now)
        scores.move_to_end(claimed)
        while len(scores) > self.slowdown.max_keys:
            scores.popitem(last=False)

    def delay(self, claimed: str, now: float) -> float:
        """How long an attempt for ``claimed`` waits before its credential work."""
        delay = self.slowdown.delay_for(self.score(claimed, now))
        if delay:
            self.slowed += 1
        return delay

    def tokens(self, claimed: str, source: str, now: float) -> float:
        return self.per_identity_source.tokens((claimed, source), now)  # type: ignore[arg-type]
