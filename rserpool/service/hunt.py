"""ENRP server hunt for pool elements and pool users (RFC 5352 section 3.6),
the Twisted shell around ``rserpool.asap.hunt``.

The candidates of each round come from an ``ICandidateSource``, usually
``rserpool.service.candidates.RegistrarCandidates`` (static list, DNS, SRV,
announces).

- ``ServerHunt.find()`` returns a cancellable ``Deferred`` firing with the
  first ``Channel`` whose TLS handshake completed (server authenticated):
  at most three attempts at once (SH1), T5-Serverhunt back-off between
  rounds (SH5), losers cancelled and closed.
- ``ServerHunt.exhausted_observers`` hear each round in which every
  candidate failed, with the reasons (a tool can stop there instead of
  waiting for the next round).

See docs/server-hunt.md.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from rserpool.asap.hunt import MAX_PARALLEL, Backoff, Candidate, HuntRound, order_for_round
from rserpool.service.candidates import describe_failure
from rserpool.interfaces import ICandidateSource, IChannelHandler, IWatchedCandidateSource
from rserpool.service.channel import Channel, ChannelSettings, tls_client_endpoint
from rserpool.wire import WireError

__all__ = ["ServerHunt", "make_channel_factory"]

_log = Logger()


def make_channel_factory(
    handler_factory: Callable[[Candidate], IChannelHandler],
    clock: IReactorTime,
    settings: ChannelSettings | None = None,
) -> Callable[[Candidate], Channel]:
    """A ``channel_factory`` for ``ServerHunt``: a TLS, initiating ``Channel``
    per attempt with the handler ``handler_factory(candidate)`` returns."""
    settings = settings or ChannelSettings()

    def factory(candidate: Candidate) -> Channel:
        return Channel(handler_factory(candidate), clock, settings, tls=True, initiator=True)

    return factory


class _Attempt:
    __slots__ = ("candidate", "channel", "handler", "connecting", "timer", "cancelled")

    def __init__(self, candidate: Candidate, channel: Channel) -> None:
        self.candidate = candidate
        self.channel = channel
        self.handler = channel.handler  # the user's, restored for the winner
        self.connecting: defer.Deferred[Any] | None = None
        self.timer: IDelayedCall | None = None
        self.cancelled = False


class _Watcher:
    """The channel's handler while its attempt is undecided."""

    def __init__(self, hunt: ServerHunt, attempt: _Attempt) -> None:
        self.hunt = hunt
        self.attempt = attempt

    def channel_ready(self, channel: Channel) -> None:
        self.hunt._ready(self.attempt)

    def channel_closed(self, channel: Channel, reason: Failure) -> None:
        self.hunt._closed(self.attempt, reason)

    def message_received(self, channel: Channel, message: Any, now: float) -> None:
        pass  # not yet (or never) the home server

    def wire_error(self, channel: Channel, ppid: int, error: WireError, now: float) -> None:
        pass

    def data_received(self, channel: Channel, ppid: int, payload: bytes, now: float) -> None:
        pass


class ServerHunt:
    """Find a home registrar (RFC 5352 section 3.6).

    ``source.candidates()`` gives each round's ordered candidates.
    ``tls_options_factory(tls_name)`` returns a client connection creator
    (e.g. ``lambda name: tls.client_options(name, roots, client_cert=...)``).
    ``channel_factory(candidate)`` returns a fresh ``Channel`` (see
    ``make_channel_factory``); its handler hears ``channel_ready`` only if
    that channel wins, and nothing at all otherwise.  ``endpoint_factory``
    replaces the default endpoint (``TCP4ClientEndpoint``/``TCP6ClientEndpoint``
    wrapped by ``tls_client_endpoint``), e.g. in tests.
    """

    def __init__(
        self,
        reactor: Any,
        source: ICandidateSource,
        tls_options_factory: Callable[[str], Any],
        channel_factory: Callable[[Candidate], Channel],
        *,
        max_parallel: int = MAX_PARALLEL,
        t5_initial: float = 10.0,
        t5_max: float = 60.0,
        attempt_timeout: float | None = 7.5,
        endpoint_factory: Callable[[Candidate], IStreamClientEndpoint] | None = None,
    ) -> None:
        if not 1 <= max_parallel <= MAX_PARALLEL:
            raise ValueError(f"max_parallel must be 1..{MAX_PARALLEL} (RFC 5352 SH1)")
        self.reactor = reactor
        self.source = source
        self.tls_options_factory = tls_options_factory
        self.channel_factory = channel_factory
        self.max_parallel = max_parallel
        self.backoff = Backoff(t5_initial, t5_max)
        self.attempt_timeout = attempt_timeout
        self.endpoint_factory = endpoint_factory or self._default_endpoint
        self.rounds = 0
        self.round: HuntRound | None = None
        self.home: Candidate | None = None  # the last hunt's winner
        self._result: defer.Deferred[Channel] | None = None
        self._attempts: dict[tuple[str, int], _Attempt] = {}
        self._t5: IDelayedCall | None = None
        self._avoid: set[tuple[str, int]] = set()
        self._stalled: set[tuple[str, int]] = set()
        self._round_token = 0
        self._warned = False
        # Called with the round's [(candidate, why)] when every candidate of
        # a round has failed (a command-line tool gives up there).
        self.exhausted_observers: list[Callable[[list[tuple[Candidate, str]]], None]] = []

    @property
    def hunting(self) -> bool:
        return self._result is not None

    @property
    def in_flight(self) -> int:
        return len(self._attempts)

    def find(self, avoid: Iterable[Candidate | tuple[str, int]] = ()) -> defer.Deferred[Channel]:
        """Hunt until a registrar is found (forever, or until the Deferred is
        cancelled).  ``avoid``: addresses (e.g. the home server that just
        failed) to try only after all others."""
        if self._result is not None:
            raise RuntimeError("a server hunt is already running")
        self._result = defer.Deferred(self._cancel)
        self._avoid = {c.key if isinstance(c, Candidate) else tuple(c) for c in avoid}
        self._stalled = set()
        self.backoff.reset()
        self.rounds = 0
        if IWatchedCandidateSource.providedBy(self.source):
            self.source.add_listener(self._announced)
        result = self._result
        self._start_round()
        return result

    # -- rounds -------------------------------------------------------------------

    def _start_round(self) -> None:
        self.rounds += 1
        self._round_token += 1
        token = self._round_token
        self.round = None
        self._t5 = self.reactor.callLater(self.backoff.current, self._t5_expired)
        try:
            gathering = self.source.candidates()
        except Exception:
            gathering = defer.fail()
        gathering.addCallbacks(self._gathered, self._gather_failed,
                               callbackArgs=(token,), errbackArgs=(token,))

    def _gather_failed(self, failure: Failure, token: int) -> None:
        _log.failure("collecting registrar candidates failed", failure)
        self._gathered([], token)

    def _gathered(self, candidates: list[Candidate], token: int) -> None:
        if token != self._round_token or self._result is None:
            return  # that round is over already
        ordered = order_for_round(candidates, self._avoid | self._stalled)
        self.round = HuntRound(ordered, self.max_parallel)
        self._warned = False
        _log.info("server hunt round {n}: {count} candidate(s), T5 {t5:g} s",
                  n=self.rounds, count=len(ordered), t5=self.backoff.current)
        self._fill()

    def _announced(self, candidates: list[Candidate]) -> None:
        if self.round is not None and self._result is not None and self.round.add(candidates):
            self._warned = False
            self._fill()

    def _fill(self) -> None:
        hunt_round = self.round
        if hunt_round is None or self._result is None:
            return
        for candidate in hunt_round.to_start():
            self._start_attempt(candidate)
            if self._result is None or self.round is not hunt_round:
                return  # won (or cancelled) synchronously
        if hunt_round.exhausted and not self._warned:
            self._warned = True
            delay = self._t5.getTime() - self.reactor.seconds() if self._t5 else 0.0
            _log.warn("server hunt round {n}: no registrar reachable ({failed} failed); "
                      "next round in {delay:.1f} s",
                      n=self.rounds, failed=len(hunt_round.failures), delay=max(delay, 0.0))
            failures = list(hunt_round.failures)
            for observer in list(self.exhausted_observers):
                observer(failures)

    def _t5_expired(self) -> None:
        self._t5 = None
        stalled = self.round.stop() if self.round is not None else []
        self._stalled = {c.key for c in stalled}
        for candidate in stalled:
            self._cancel_attempt(candidate.key, "T5-Serverhunt expired")
        self.backoff.expired()
        self._start_round()

    # -- attempts ----------------------------------------------------------------------

    def _default_endpoint(self, candidate: Candidate) -> IStreamClientEndpoint:
        timeout = self.attempt_timeout or 30
        cls = endpoints.TCP6ClientEndpoint if candidate.family == 6 else endpoints.TCP4ClientEndpoint
        tcp = cls(self.reactor, candidate.host, candidate.port, timeout=timeout)
        return tls_client_endpoint(self.tls_options_factory(candidate.tls_name), tcp, self.reactor)

    def _start_attempt(self, candidate: Candidate) -> None:
        try:
            endpoint = self.endpoint_factory(candidate)
            channel = self.channel_factory(candidate)
        except Exception as exc:
            _log.failure("cannot try {candidate}", candidate=candidate.describe())
            self._failed(candidate, f"set-up error: {exc}")
            return
        attempt = _Attempt(candidate, channel)
        channel.handler = _Watcher(self, attempt)
        self._attempts[candidate.key] = attempt
        _log.debug("trying registrar {candidate}", candidate=candidate.describe())
        if self.attempt_timeout is not None:
            attempt.timer = self.reactor.callLater(self.attempt_timeout, self._timed_out, attempt)
        connecting = endpoints.connectProtocol(endpoint, channel)
        if attempt.cancelled or self._attempts.get(candidate.key) is not attempt:
            return
        attempt.connecting = connecting
        connecting.addCallbacks(self._connected, self._connect_failed,
                                callbackArgs=(attempt,), errbackArgs=(attempt,))

    def _connected(self, _protocol: Any, attempt: _Attempt) -> None:
        attempt.connecting = None  # now waiting for the TLS handshake

    def _connect_failed(self, failure: Failure, attempt: _Attempt) -> None:
        attempt.connecting = None
        if not attempt.cancelled:
            self._attempt_over(attempt, describe_failure(failure))

    def _timed_out(self, attempt: _Attempt) -> None:
        attempt.timer = None
        if self._attempts.get(attempt.candidate.key) is attempt:
            self._cancel_attempt(attempt.candidate.key, "timed out")
            self._failed(attempt.candidate, f"no authenticated connection within "
                                            f"{self.attempt_timeout:g} s")

    def _ready(self, attempt: _Attempt) -> None:
        key = attempt.candidate.key
        if (attempt.cancelled or self._result is None or self.round is None
                or self._attempts.get(key) is not attempt):
            attempt.channel.abort()
            return
        others = self.round.succeeded(attempt.candidate)
        del self._attempts[key]
        if attempt.timer is not None and attempt.timer.active():
            attempt.timer.cancel()
        for other in others:
            self._cancel_attempt(other.key, "another registrar answered first")
        result = self._finish()
        channel = attempt.channel
        channel.handler = attempt.handler
        self.home = attempt.candidate
        _log.info("home registrar: {candidate} (round {n})",
                  candidate=attempt.candidate.describe(), n=self.rounds)
        attempt.handler.channel_ready(channel)
        result.callback(channel)

    def _closed(self, attempt: _Attempt, reason: Failure) -> None:
        if attempt.timer is not None and attempt.timer.active():
            attempt.timer.cancel()
        if not attempt.cancelled:
            self._attempt_over(attempt, describe_failure(reason))

    def _attempt_over(self, attempt: _Attempt, why: str) -> None:
        if self._attempts.get(attempt.candidate.key) is attempt:
            del self._attempts[attempt.candidate.key]
            if attempt.timer is not None and attempt.timer.active():
                attempt.timer.cancel()
            self._failed(attempt.candidate, why)

    def _failed(self, candidate: Candidate, why: str) -> None:
        _log.warn("registrar {candidate} failed: {why}", candidate=candidate.describe(), why=why)
        if self.round is not None and self._result is not None:
            self.round.failed(candidate, why)
            self._fill()

    def _cancel_attempt(self, key: tuple[str, int], why: str) -> None:
        attempt = self._attempts.pop(key, None)
        if attempt is None:
            return
        attempt.cancelled = True
        _log.debug("dropping attempt {candidate}: {why}",
                   candidate=attempt.candidate.describe(), why=why)
        if attempt.timer is not None and attempt.timer.active():
            attempt.timer.cancel()
        attempt.timer = None
        if attempt.connecting is not None:
            connecting, attempt.connecting = attempt.connecting, None
            connecting.cancel()
        attempt.channel.abort()

    # -- end ----------------------------------------------------------------------------

    def _finish(self) -> defer.Deferred[Channel]:
        result = self._result
        assert result is not None
        self._result = None
        self._round_token += 1
        if self._t5 is not None and self._t5.active():
            self._t5.cancel()
        self._t5 = None
        for key in list(self._attempts):
            self._cancel_attempt(key, "hunt over")
        self.round = None
        if IWatchedCandidateSource.providedBy(self.source):
            self.source.remove_listener(self._announced)
        return result

    def _cancel(self, _result: defer.Deferred[Channel]) -> None:
        if self._result is not None:
            _log.info("server hunt cancelled after {n} round(s)", n=self.rounds)
            self._finish()
