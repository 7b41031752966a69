"""SRP-6a / CHAP authentication over ASAP channels: the Twisted shell around
:mod:`rserpool.security.exchange` (registrar side and PE side).

- :func:`channel_binding` checks the TLS version (TLS 1.3, or TLS 1.2 with
  the extended master secret) and exports 32 bytes with the label
  ``EXPORTER-rserpool-auth``; anything else raises
  :class:`ChannelBindingError` and the registrar refuses with cause 0xa.
- :class:`RegistrarAuthenticator` runs a
  :class:`~rserpool.security.exchange.ServerExchange` per channel for
  ``RegistrarService``: it asks the security gate before every attempt
  (which may refuse it or, for an identity that failed recently, delay it),
  gives the credentials the exchange produces to the configured twisted.cred
  checkers (an ``SrpChecker`` issues SRP's challenge first), reports every
  result to the gate and carries out what the gate decides.  A backend
  outage fails closed and is logged as such.
- :class:`PeAuthenticator` authenticates a PE on a fresh channel before it
  registers (``PoolElementService(authenticator=...)``).

docs/asap-auth-extension.md describes the protocol.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rserpool.errors import BackendUnavailable
from rserpool.gate import (
    REFUSED_AFTER_SUCCESS, REFUSED_CLOSING, REFUSED_IDENTITY_MISMATCH, REFUSED_RATE_ADDRESS,
    REFUSED_RATE_IDENTITY, AttemptDelayed, CloseChannel, Gate,
)
from rserpool.identity import normalize_identity
from rserpool.interfaces import IChannelHandler, IChapCredentials
from rserpool.outputs import Send
from rserpool.security import _internals
from rserpool.security import exchange as ex
from rserpool.security.credentials import Authenticator
from rserpool.security.tls import NotTLSError, export_keying_material, tls_connection
from rserpool.stats import EventCounts

__all__ = [
    "AuthenticationError",
    "ChannelBindingError",
    "PeAuthenticator",
    "RegistrarAuthenticator",
    "channel_binding",
    "read_secret",
]

_log = Logger()

_AUTH_TYPES = frozenset(ex.AUTH_MESSAGES)

#: The failure code the peer gets when the gate refuses an attempt.
_ATTEMPT_CODES = {
    REFUSED_RATE_ADDRESS: ex.FAIL_RATE_LIMITED,
    REFUSED_RATE_IDENTITY: ex.FAIL_RATE_LIMITED,
    REFUSED_IDENTITY_MISMATCH: ex.FAIL_AUTHENTICATION,
    REFUSED_AFTER_SUCCESS: ex.FAIL_PROTOCOL,
    REFUSED_CLOSING: ex.FAIL_PROTOCOL,
}


class ChannelBindingError(Exception):
    """The TLS connection cannot serve as a channel binding."""


def channel_binding(transport: Any) -> bytes:
    """The 32-byte TLS exporter value of this connection for the exchange.

    Requires TLS 1.3, or TLS 1.2 with the extended master secret (RFC 7627);
    raises :class:`ChannelBindingError` otherwise (or when not TLS at all).
    """
    try:
        connection = tls_connection(transport)
    except NotTLSError as exc:
        raise ChannelBindingError(f"not a TLS channel: {exc}") from None
    version = connection.get_protocol_version_name()
    if version == "TLSv1.2":
        used = _internals.extended_master_secret(connection)
        if used is None:  # the capability is missing (logged once): cannot tell, so no
            raise ChannelBindingError("TLSv1.2: whether the extended master secret was used cannot be "
                                      f"told ({_internals.EXTENDED_MASTER.reason})")
        if not used:
            raise ChannelBindingError("TLSv1.2 without the extended master secret")
    elif version != "TLSv1.3":
        raise ChannelBindingError(f"{version} cannot be bound")
    try:
        return export_keying_material(transport, ex.EXPORTER_LABEL, ex.CHANNEL_BINDING_LEN)
    except NotTLSError as exc:
        raise ChannelBindingError(str(exc)) from None


def read_secret(path: str) -> bytes:
    """A password or CHAP secret from a file (trailing newline removed).

    The file must be a regular file not readable by group or others.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} is not a regular file")
    if st.st_mode & 0o077:
        raise ValueError(f"{path} is readable by group or others (chmod 600)")
    with open(path, "rb") as f:
        secret = f.read(4096).rstrip(b"\r\n")
    if not secret:
        raise ValueError(f"{path} is empty")
    return secret


# -- registrar side ------------------------------------------------------------------------


class _ChannelState:
    __slots__ = ("exchange", "admission", "timer", "delayed", "held")

    def __init__(self, exchange: ex.ServerExchange | None, admission: Any) -> None:
        self.exchange = exchange
        self.admission = admission
        self.timer: IDelayedCall | None = None
        self.delayed: IDelayedCall | None = None  # an attempt the gate slowed down
        self.held: list[Any] | None = None  # input behind a waiting step, in order


class RegistrarAuthenticator:
    """The registrar's SRP/CHAP authentication of its ASAP channels.

    ``checkers`` dispatches credentials to the configured authenticator
    plugins; SRP is offered when one of them provides ``ISrpChecker``, CHAP
    when one handles ``IChapCredentials``.  Every identity change goes
    through ``gate``.
    """

    def __init__(
        self,
        clock: IReactorTime,
        gate: Gate,
        checkers: Authenticator,
        *,
        max_attempts: int = ex.DEFAULT_MAX_ATTEMPTS,
        step_lifetime: float = ex.DEFAULT_STEP_LIFETIME,
        exchange_lifetime: float = ex.DEFAULT_EXCHANGE_LIFETIME,
        max_held: int | None = None,
    ) -> None:
        mechanisms = []
        if checkers.srp_checker is not None:
            mechanisms.append(ex.MECH_SRP_SHA256_2048)
        if checkers.handles(IChapCredentials):
            mechanisms.append(ex.MECH_CHAP_MD5)
        if not mechanisms:
            raise ValueError("no SRP or CHAP checker is configured")
        self.clock = clock
        self.gate = gate
        self.checkers = checkers
        self.mechanisms = tuple(mechanisms)
        self._options = dict(max_attempts=max_attempts, step_lifetime=step_lifetime,
                             exchange_lifetime=exchange_lifetime)
        self._channels: dict[Any, _ChannelState] = {}
        self.stats = {"succeeded": 0, "failed": 0, "unavailable": 0}
        # Counters for operators (rserpool.stats); the registrar shares its own.
        self.events = EventCounts()
        #: Where the input held behind a waiting step goes once the step is
        #: decided, in order: ``deliver(channel, message, now)`` (the
        #: registrar service's ``message_received``).
        self.deliver: Any = None
        #: At most this many messages wait behind one channel's step (the
        #: gate's bound for input held while a channel is identified).
        self.max_held = gate.policy.max_held_per_channel if max_held is None else max_held

    @staticmethod
    def handles(message: Any) -> bool:
        return type(message) in _AUTH_TYPES

    # -- from the registrar service
    def message_received(self, channel: Any, message: Any, now: float) -> None:
        asap = channel.state
        if asap is None:
            return
        state = self._channels.get(channel)
        if state is None:
            try:
                cb = channel_binding(channel.transport)
            except ChannelBindingError as exc:
                self._carry_out(channel, _ChannelState(None, asap.admission), ex.channel_refusal(str(exc)))
                return
            state = _ChannelState(ex.ServerExchange(cb, now, mechanisms=self.mechanisms, **self._options),
                                  asap.admission)
            self._channels[channel] = state
        self._carry_out(channel, state, state.exchange.receive(message, now))

    def waiting(self, channel: Any) -> bool:
        """The channel's exchange awaits a decision here (the gate, a
        checker): its other input must wait (:meth:`hold`)."""
        state = self._channels.get(channel)
        return state is not None and state.exchange is not None and state.exchange.waiting

    def hold(self, channel: Any, message: Any) -> bool:
        """Keep ``message`` until the waiting step is decided (a PE sends its
        registration right behind its proof): it is then handed to
        ``deliver`` under the identity the exchange established, or none.
        False when ``max_held`` are waiting already: the caller closes the
        channel."""
        state = self._channels[channel]
        held = state.held
        if held is None:
            held = state.held = []
        if len(held) >= self.max_held:
            return False
        held.append(message)
        return True

    def _release(self, channel: Any, state: _ChannelState) -> None:
        held, state.held = state.held, None
        now = self.clock.seconds()
        for message in held or ():
            if not self._current(channel, state):
                return  # the outcome closed the channel: the rest is dropped
            self.deliver(channel, message, now)

    def channel_closed(self, channel: Any) -> None:
        state = self._channels.pop(channel, None)
        if state is None:
            return
        for call in (state.timer, state.delayed):
            if call is not None and call.active():
                call.cancel()

    # -- carrying out
    def _carry_out(self, channel: Any, state: _ChannelState, events: tuple) -> None:
        gate, adm = self.gate, state.admission
        for event in events:
            kind = type(event)
            if kind is Send:
                channel.send(event.message)
            elif kind is ex.Admit:
                now = self.clock.seconds()
                refused = gate.authentication_attempt(adm, event.identity, event.mechanism, now)
                if refused is None:
                    self._carry_out(channel, state, state.exchange.attempt_admitted(now))
                elif type(refused) is AttemptDelayed:
                    # The identity failed recently: go ahead, later (never refused for it).
                    state.delayed = self.clock.callLater(refused.delay, self._admit_later, channel, state)
                else:
                    self._carry_out(channel, state, state.exchange.attempt_refused(
                        _ATTEMPT_CODES[refused.kind], refused.final, refused.kind, now))
            elif kind is ex.StartSrp:
                self._start_srp(channel, state, event)
            elif kind is ex.Verify:
                self._verify(channel, state, event)
            elif kind is ex.AuthSucceeded:
                self.stats["succeeded"] += 1
                self.events.authenticated(event.identity.mechanism, True)
                self._decided(channel, gate.authenticated(adm, event.identity, self.clock.seconds()))
            elif kind is ex.AuthFailed:
                self.stats["failed"] += 1
                self.events.authenticated(event.mechanism or "unknown", False)
                self._decided(channel, gate.authentication_failed(
                    adm, event.identity, event.mechanism, event.reason_for_log, event.final,
                    self.clock.seconds()))
            elif kind is ex.AuthUnavailable:
                self.stats["unavailable"] += 1
                self.events.outage("authenticator")
                self._decided(channel, gate.authentication_unavailable(
                    adm, event.identity, event.mechanism, event.reason_for_log, self.clock.seconds()))
        if state.exchange is not None:
            self._arm(channel, state)
            if state.held and not state.exchange.waiting and self._current(channel, state):
                self._release(channel, state)

    def _decided(self, channel: Any, decisions: list) -> None:
        for decision in decisions:
            if type(decision) is CloseChannel:
                self.channel_closed(channel)
                channel.close()

    def _arm(self, channel: Any, state: _ChannelState) -> None:
        """One timer per exchange, never later than its deadline.  A timer
        that fires early finds nothing due and is armed again (``_expired``),
        so the steps of a quick exchange, each of which moves the deadline a
        little later, cost no timer operation at all."""
        deadline = state.exchange.deadline
        timer = state.timer
        if timer is not None and not timer.active():
            timer = state.timer = None
        if deadline is None or channel.closed or self._channels.get(channel) is not state:
            if timer is not None:
                timer.cancel()
                state.timer = None
            return
        if timer is not None and timer.getTime() <= deadline:
            return
        now = self.clock.seconds()
        # The first wake-up no later than a step's lifetime from now: the
        # step deadlines that follow are later than it.
        delay = max(0.0, min(deadline - now, self._options["step_lifetime"]))
        if timer is not None:
            timer.reset(delay)
        else:
            state.timer = self.clock.callLater(delay, self._expired, channel)

    def _admit_later(self, channel: Any, state: _ChannelState) -> None:
        state.delayed = None
        if self._current(channel, state):
            self._carry_out(channel, state, state.exchange.attempt_admitted(self.clock.seconds()))

    def _expired(self, channel: Any) -> None:
        state = self._channels.get(channel)
        if state is None:
            return
        state.timer = None
        self._carry_out(channel, state, state.exchange.timer_expired(self.clock.seconds()))

    def _current(self, channel: Any, state: _ChannelState) -> bool:
        return self._channels.get(channel) is state and not channel.closed

    def _start_srp(self, channel: Any, state: _ChannelState, event: ex.StartSrp) -> None:
        checker = self.checkers.srp_checker
        d = defer.maybeDeferred(checker.challenge, event.identity, event.channel_binding)
        d.addCallbacks(self._answer, self._failure, callbackArgs=(channel, state, "challenge"),
                       errbackArgs=(channel, state, event.identity))

    def _verify(self, channel: Any, state: _ChannelState, event: ex.Verify) -> None:
        d = self.checkers.authenticate(event.credentials, event.mechanism)
        d.addCallbacks(self._answer, self._failure, callbackArgs=(channel, state, "identity"),
                       errbackArgs=(channel, state, event.credentials.identity))

    def _answer(self, value: Any, channel: Any, state: _ChannelState, what: str) -> None:
        if not self._current(channel, state):
            return
        now = self.clock.seconds()
        if what == "challenge":
            self._carry_out(channel, state, state.exchange.challenge_issued(value, now))
        else:
            self._carry_out(channel, state, state.exchange.verified(value, now))

    def _failure(self, failure: Failure, channel: Any, state: _ChannelState, identity: str) -> None:
        if not self._current(channel, state):
            return
        now = self.clock.seconds()
        if failure.check(UnauthorizedLogin):
            self._carry_out(channel, state, state.exchange.rejected("refused by the checker", now))
            return
        if not failure.check(BackendUnavailable):
            _log.failure("SRP/CHAP checker failed for {identity}; refusing (fail closed)", failure,
                         identity=identity)
        self._carry_out(channel, state, state.exchange.unavailable(failure.getErrorMessage(), now))


# -- PE side ----------------------------------------------------------------------------------


class AuthenticationError(Exception):
    """The PE could not authenticate to a registrar.

    ``event`` is the :class:`~rserpool.security.exchange.AuthenticationFailed`;
    ``transient``: another try (or another registrar) may succeed (timeout,
    channel lost, backend unavailable, rate limited); ``unsupported``: the
    registrar knows only the RFCs.
    """

    _TRANSIENT_CODES = (ex.FAIL_TIMEOUT, ex.FAIL_UNAVAILABLE, ex.FAIL_RATE_LIMITED)

    def __init__(self, event: ex.AuthenticationFailed, transient: bool | None = None) -> None:
        super().__init__(event.reason)
        self.event = event
        self.unsupported = event.unsupported
        self.transient = (event.code in self._TRANSIENT_CODES if transient is None else transient)


@implementer(IChannelHandler)
class _AuthHandler:
    """The channel's handler while the PE authenticates."""

    def __init__(self, authenticator: "PeAuthenticator", channel: Any, client: ex.ClientExchange) -> None:
        self.authenticator = authenticator
        self.channel = channel
        self.client = client
        self.previous = channel.handler
        self.result: defer.Deferred[ex.Authenticated] = defer.Deferred()
        self.timer: IDelayedCall | None = None
        self.then: Any = None  # called once, right behind the PE's proof

    def start(self) -> None:
        clock = self.authenticator.clock
        if self.authenticator.pipelined:
            for event in self.client.start_pipelined():
                self.channel.send(event.message)
        else:
            self.channel.send(self.client.start().message)
        deadline = self.client.deadline
        if deadline is not None:
            self.timer = clock.callLater(max(0.0, deadline - clock.seconds()), self._expired)

    def _expired(self) -> None:
        self.timer = None
        self._events(self.client.timer_expired(self.authenticator.clock.seconds()))

    def _events(self, events: tuple) -> None:
        for event in events:
            if type(event) is Send:
                self.channel.send(event.message)
            elif type(event) is ex.Authenticated:
                self._finish()
                self.channel.handler = self.previous
                self.result.callback(event)
            elif type(event) is ex.AuthenticationFailed:
                self._fail(AuthenticationError(event))
        if self.then is not None and self.client.proved and not self.channel.closed:
            then, self.then = self.then, None
            then()

    def _finish(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _fail(self, error: AuthenticationError) -> None:
        self._finish()
        if not self.result.called:
            self.result.errback(Failure(error))
        self.channel.abort()

    # IChannelHandler
    def channel_ready(self, channel: Any) -> None:
        pass

    def message_received(self, channel: Any, message: Any, now: float) -> None:
        if not self.result.called:
            self._events(self.client.receive(message, now))

    def wire_error(self, channel: Any, ppid: int, error: Any, now: float) -> None:
        if not self.result.called:
            self._fail(AuthenticationError(ex.AuthenticationFailed(
                f"undecodable message during authentication: {error}")))

    def data_received(self, channel: Any, ppid: int, payload: bytes, now: float) -> None:
        if not self.result.called:
            self._fail(AuthenticationError(ex.AuthenticationFailed(
                f"data with PPID {ppid} during authentication")))

    def channel_closed(self, channel: Any, reason: Failure) -> None:
        self._finish()
        if not self.result.called:
            self.result.errback(Failure(AuthenticationError(ex.AuthenticationFailed(
                f"channel closed during authentication: {reason.getErrorMessage()}"),
                transient=True)))
        if channel.handler is self:
            channel.handler = self.previous
            if self.previous is not None:
                self.previous.channel_closed(channel, reason)  # the owner learns of it too


class PeAuthenticator:
    """Authenticates a PE on each new registrar channel (SRP or CHAP).

    ``secret`` is the SRP password or the CHAP secret (:func:`read_secret`
    reads one from a file); ``preferences`` the mechanisms in the PE's order.
    ``pipelined`` (default): the hello of the first preference goes with the
    request, without waiting for the registrar's offer (one round trip less;
    see ``ClientExchange.start_pipelined``).
    """

    def __init__(self, clock: IReactorTime, identity: str, secret: str | bytes, *,
                 preferences: tuple[str, ...] = ex.DEFAULT_MECHANISMS,
                 timeout: float = 30.0, pipelined: bool = True) -> None:
        if normalize_identity(identity) is None:
            raise ValueError("bad identity")
        self.clock = clock
        self.identity = identity
        self._secret = secret
        self.preferences = tuple(preferences)
        self.timeout = timeout
        self.pipelined = pipelined

    @classmethod
    def from_file(cls, clock: IReactorTime, identity: str, path: str,
                  **kwargs: Any) -> "PeAuthenticator":
        return cls(clock, identity, read_secret(path), **kwargs)

    def authenticate(self, channel: Any, then: Any = None) -> defer.Deferred[ex.Authenticated]:
        """Run the exchange on ``channel`` (ready, TLS).  Fires with
        :class:`~rserpool.security.exchange.Authenticated`; fails with
        :class:`AuthenticationError` (the channel is then aborted).  The
        channel's handler is restored on success.

        ``then``, if given, is called once right after the PE's proof (or
        CHAP response) is written, before the verdict: what it sends goes in
        the same flight, and the registrar handles it after the verdict,
        under the identity just proved (or none: then the PE has given up
        the channel already).  The registrar is authenticated by its TLS
        certificate before any of this; the SRP M2 check still decides the
        Deferred's outcome."""
        try:
            cb = channel_binding(channel.transport)
            client = ex.ClientExchange(self.identity, self._secret, cb, self.clock.seconds(),
                                       preferences=self.preferences, timeout=self.timeout)
        except (ChannelBindingError, ValueError) as exc:
            channel.abort()
            return defer.fail(AuthenticationError(ex.AuthenticationFailed(
                f"cannot authenticate on this channel: {exc}")))
        handler = _AuthHandler(self, channel, client)
        handler.then = then
        channel.handler = handler
        handler.start()
        return handler.result
