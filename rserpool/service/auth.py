"""SRP-6a / CHAP authentication over ASAP channels: the Twisted shell around
``rserpool.asap.auth`` (registrar side and PE side).

- :func:`channel_binding` checks the TLS version (TLS 1.3, or TLS 1.2 with
  the extended master secret) and exports 32 bytes with the label
  ``EXPORTER-rserpool-auth``; anything else raises
  :class:`ChannelBindingError` and the registrar refuses with cause 0xa.
- :class:`RegistrarAuthenticator` runs a :class:`~rserpool.asap.auth.ServerAuth`
  per channel for ``RegistrarService`` (``authenticator=``): it fetches SRP
  verifiers from a store, checks CHAP locally or through a verifier such as
  :class:`~rserpool.backends.radius_authz.RadiusChapVerifier` (an outage is
  an ``AuthFailure`` with cause 0xa and an ERROR log line: fail closed),
  keeps the exchange's timer, and on success sets ``session.identity`` and
  ``session.mechanism``.
- :class:`PeAuthenticator` authenticates a PE on a fresh channel before it
  registers (``PoolElementService(authenticator=...)``).

docs/asap-auth-extension.md describes the protocol.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from rserpool.asap.auth import (
    AUTH_MESSAGES, AuthFailed, Authenticated, AuthenticationFailed, AuthSucceeded, ClientAuth,
    LookupSrp, SendMessage, ServerAuth, channel_refusal,
)
from rserpool.security import _internals
from rserpool.security import exchange as ex
from rserpool.security.chap import ChapVerdict, VerifyChap, verify_locally
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

_AUTH_TYPES = frozenset(AUTH_MESSAGES)


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
    __slots__ = ("auth", "timer")

    def __init__(self, auth: ServerAuth) -> None:
        self.auth = auth
        self.timer: IDelayedCall | None = None


class RegistrarAuthenticator:
    """The registrar's SRP/CHAP authentication of PE channels.

    ``srp_store``: ``srp_verifier(identity) -> Deferred[(salt, verifier) | None]``
    (``ISrpVerifierStore``) or a synchronous ``lookup_srp(identity)``.
    CHAP: ``chap_verifier`` with ``verify(VerifyChap) -> Deferred[ChapVerdict]``
    (RADIUS) takes precedence over ``chap_store`` (``chap_secret(identity)``
    Deferred or ``lookup_chap_secret(identity)``).  A mechanism without a
    backend is not offered.  ``server_secret`` (at least 16 bytes, stable
    across restarts) derives the fake SRP salts of unknown identities.
    """

    def __init__(
        self,
        clock: IReactorTime,
        server_secret: bytes,
        *,
        srp_store: Any = None,
        chap_store: Any = None,
        chap_verifier: Any = None,
        mechanisms: tuple[str, ...] = ex.DEFAULT_MECHANISMS,
        limiter: ex.AttemptLimiter | None = None,
        address_limiter: ex.AttemptLimiter | None = None,
        max_attempts: int = ex.DEFAULT_MAX_ATTEMPTS,
        step_lifetime: float = ex.DEFAULT_STEP_LIFETIME,
        exchange_lifetime: float = ex.DEFAULT_EXCHANGE_LIFETIME,
    ) -> None:
        offered = tuple(m for m in mechanisms
                        if (m == ex.MECH_CHAP_MD5 and (chap_store or chap_verifier) is not None)
                        or (m != ex.MECH_CHAP_MD5 and srp_store is not None))
        if not offered:
            raise ValueError("no mechanism has a backend (give srp_store, chap_store or chap_verifier)")
        if len(server_secret) < 16:
            raise ValueError("server_secret must be at least 16 bytes")
        self.clock = clock
        self.mechanisms = offered
        self._secret = bytes(server_secret)
        self._srp_store = srp_store
        self._chap_store = chap_store
        self._chap_verifier = chap_verifier
        self.limiter = limiter if limiter is not None else ex.AttemptLimiter()
        self.address_limiter = (address_limiter if address_limiter is not None
                                else ex.AttemptLimiter(capacity=20, refill_interval=6.0))
        self._options = dict(max_attempts=max_attempts, step_lifetime=step_lifetime,
                             exchange_lifetime=exchange_lifetime)
        self._channels: dict[Any, _ChannelState] = {}
        self.stats = {"succeeded": 0, "failed": 0, "unavailable": 0}
        # By mechanism, for operators; the registrar service shares its own.
        self.events = EventCounts()

    @staticmethod
    def handles(message: Any) -> bool:
        return type(message) in _AUTH_TYPES

    # -- from the registrar service
    def message_received(self, channel: Any, message: Any, now: float) -> None:
        session = channel.session
        if session is None:
            return
        state = self._channels.get(channel)
        if state is None:
            try:
                cb = channel_binding(channel.transport)
            except ChannelBindingError as exc:
                self._carry_out(channel, None, channel_refusal(str(exc)))
                return
            certificate_identity = session.identity
            state = _ChannelState(ServerAuth(
                cb, self._secret, now, address=session.address,
                certificate_identity=certificate_identity, mechanisms=self.mechanisms,
                limiter=self.limiter, address_limiter=self.address_limiter, **self._options))
            self._channels[channel] = state
        self._carry_out(channel, state, state.auth.receive(message, now))

    def channel_closed(self, channel: Any) -> None:
        state = self._channels.pop(channel, None)
        if state is not None and state.timer is not None and state.timer.active():
            state.timer.cancel()

    # -- carrying out
    def _carry_out(self, channel: Any, state: _ChannelState | None, events: tuple) -> None:
        close = False
        for event in events:
            kind = type(event)
            if kind is SendMessage:
                channel.send(event.message)
            elif kind is LookupSrp:
                self._lookup_srp(channel, state, event.identity)
            elif kind is VerifyChap:
                self._verify_chap(channel, state, event)
            elif kind is AuthSucceeded:
                self._succeeded(channel, event)
            elif kind is AuthFailed:
                close = self._failed(channel, event) or close
        if state is not None:
            self._arm(channel, state)
        if close:
            self.channel_closed(channel)
            channel.close()

    def _succeeded(self, channel: Any, event: AuthSucceeded) -> None:
        session = channel.session
        self.stats["succeeded"] += 1
        self.events.authenticated(event.mechanism, True)
        session.identity = event.identity
        session.mechanism = event.mechanism
        _log.info("PE at {address} authenticated as {identity} by {mechanism}",
                  address=session.address, identity=event.identity, mechanism=event.mechanism)

    def _failed(self, channel: Any, event: AuthFailed) -> bool:
        session = channel.session
        self.stats["failed"] += 1
        self.events.authenticated(event.mechanism or "unknown", False)
        if session is not None and getattr(session, "mechanism", None) is not None:
            # A protocol violation after success: the channel loses the identity.
            session.identity = None
            session.mechanism = None
        _log.warn("authentication from {address} failed ({identity}, {mechanism}): {reason}"
                  "{final}", address=getattr(session, "address", "?"), identity=event.identity,
                  mechanism=event.mechanism, reason=event.reason_for_log,
                  final="; closing the channel" if event.final else "")
        return event.final

    def _arm(self, channel: Any, state: _ChannelState) -> None:
        deadline = state.auth.deadline
        if state.timer is not None and state.timer.active():
            state.timer.cancel()
        state.timer = None
        if deadline is None or channel.closed:
            return
        delay = max(0.0, deadline - self.clock.seconds())
        state.timer = self.clock.callLater(delay, self._expired, channel)

    def _expired(self, channel: Any) -> None:
        state = self._channels.get(channel)
        if state is None:
            return
        state.timer = None
        self._carry_out(channel, state, state.auth.timer_expired(self.clock.seconds()))

    def _current(self, channel: Any, state: _ChannelState) -> bool:
        return self._channels.get(channel) is state and not channel.closed

    def _lookup_srp(self, channel: Any, state: _ChannelState, identity: str) -> None:
        store = self._srp_store
        if hasattr(store, "srp_verifier"):
            d = defer.maybeDeferred(store.srp_verifier, identity)
        else:
            d = defer.maybeDeferred(store.lookup_srp, identity)

        def found(entry: Any) -> None:
            if self._current(channel, state):
                self._carry_out(channel, state, state.auth.srp_entry(entry, self.clock.seconds()))

        def failed(failure: Failure) -> None:
            self.stats["unavailable"] += 1
            self.events.outage("authenticator")
            _log.error("SRP verifier store unavailable for {identity}: {error}; refusing "
                       "(fail closed)", identity=identity, error=failure.getErrorMessage())
            if self._current(channel, state):
                self._carry_out(channel, state, state.auth.store_unavailable(
                    failure.getErrorMessage(), self.clock.seconds()))

        d.addCallbacks(found, failed)

    def _verify_chap(self, channel: Any, state: _ChannelState, request: VerifyChap) -> None:
        verifier, store = self._chap_verifier, self._chap_store
        if verifier is not None and hasattr(verifier, "verify"):
            d = defer.maybeDeferred(verifier.verify, request)
        elif verifier is not None:  # IChapVerifier: Identity or None
            d = defer.maybeDeferred(verifier.verify_chap, request.identity, request.identifier,
                                    request.challenge, request.response)
            d.addCallback(lambda found: ChapVerdict(found is not None,
                                                    "" if found is not None else "refused"))
        else:
            lookup = store.chap_secret if hasattr(store, "chap_secret") else store.lookup_chap_secret
            d = defer.maybeDeferred(lookup, request.identity)
            d.addCallback(lambda secret: verify_locally(secret, request))

        def decided(verdict: ChapVerdict) -> None:
            if self._current(channel, state):
                self._carry_out(channel, state, state.auth.chap_verified(verdict, self.clock.seconds()))

        def failed(failure: Failure) -> None:
            self.stats["unavailable"] += 1
            self.events.outage("authenticator")
            _log.error("CHAP verification backend unavailable for {identity}: {error}; "
                       "refusing with cause 0xa (fail closed)", identity=request.identity,
                       error=failure.getErrorMessage())
            if self._current(channel, state):
                self._carry_out(channel, state, state.auth.chap_unavailable(
                    failure.getErrorMessage(), self.clock.seconds()))

        d.addCallbacks(decided, failed)


# -- PE side ----------------------------------------------------------------------------------


class AuthenticationError(Exception):
    """The PE could not authenticate to a registrar.

    ``event`` is the :class:`~rserpool.asap.auth.AuthenticationFailed`;
    ``transient``: another try (or another registrar) may succeed (timeout,
    channel lost, backend unavailable, rate limited); ``unsupported``: the
    registrar knows only the RFCs.
    """

    _TRANSIENT_CODES = (ex.FAIL_TIMEOUT, ex.FAIL_UNAVAILABLE, ex.FAIL_RATE_LIMITED)

    def __init__(self, event: AuthenticationFailed, transient: bool | None = None) -> None:
        super().__init__(event.reason)
        self.event = event
        self.unsupported = event.unsupported
        self.transient = (event.code in self._TRANSIENT_CODES if transient is None else transient)


class _AuthHandler:
    """The channel's handler while the PE authenticates."""

    def __init__(self, authenticator: "PeAuthenticator", channel: Any, client: ClientAuth) -> None:
        self.authenticator = authenticator
        self.channel = channel
        self.client = client
        self.previous = channel.handler
        self.result: defer.Deferred[Authenticated] = defer.Deferred()
        self.timer: IDelayedCall | None = None

    def start(self) -> None:
        clock = self.authenticator.clock
        self.channel.send(self.client.start().message)
        deadline = self.client.deadline
        if deadline is not None:
            self.timer = clock.callLater(max(0.0, deadline - clock.seconds()), self._expired)

    def _expired(self) -> None:
        self.timer = None
        self._events(self.client.timer_expired(self.authenticator.clock.seconds()))

    def _events(self, events: tuple) -> None:
        for event in events:
            if type(event) is SendMessage:
                self.channel.send(event.message)
            elif type(event) is Authenticated:
                self._finish()
                self.channel.handler = self.previous
                self.result.callback(event)
            elif type(event) is AuthenticationFailed:
                self._fail(AuthenticationError(event))

    def _finish(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _fail(self, error: AuthenticationError) -> None:
        self._finish()
        if not self.result.called:
            self.result.errback(Failure(error))
        self.channel.abort()

    # ChannelHandler
    def channel_ready(self, channel: Any) -> None:
        pass

    def message_received(self, channel: Any, message: Any, now: float) -> None:
        if not self.result.called:
            self._events(self.client.receive(message, now))

    def wire_error(self, channel: Any, ppid: int, error: Any, now: float) -> None:
        if not self.result.called:
            self._fail(AuthenticationError(AuthenticationFailed(
                f"undecodable message during authentication: {error}")))

    def data_received(self, channel: Any, ppid: int, payload: bytes, now: float) -> None:
        if not self.result.called:
            self._fail(AuthenticationError(AuthenticationFailed(
                f"data with PPID {ppid} during authentication")))

    def channel_closed(self, channel: Any, reason: Failure) -> None:
        self._finish()
        if not self.result.called:
            self.result.errback(Failure(AuthenticationError(AuthenticationFailed(
                f"channel closed during authentication: {reason.getErrorMessage()}"),
                transient=True)))
        if channel.handler is self:
            channel.handler = self.previous
            closed = getattr(self.previous, "channel_closed", None)
            if closed is not None:
                closed(channel, reason)  # the owner learns of it too


class PeAuthenticator:
    """Authenticates a PE on each new registrar channel (SRP or CHAP).

    ``secret`` is the SRP password or the CHAP secret (:func:`read_secret`
    reads one from a file); ``preferences`` the mechanisms in the PE's order.
    """

    def __init__(self, clock: IReactorTime, identity: str, secret: str | bytes, *,
                 preferences: tuple[str, ...] = ex.DEFAULT_MECHANISMS,
                 timeout: float = 30.0) -> None:
        if ex.normalize_identity(identity) is None:
            raise ValueError("bad identity")
        self.clock = clock
        self.identity = identity
        self._secret = secret
        self.preferences = tuple(preferences)
        self.timeout = timeout

    @classmethod
    def from_file(cls, clock: IReactorTime, identity: str, path: str,
                  **kwargs: Any) -> "PeAuthenticator":
        return cls(clock, identity, read_secret(path), **kwargs)

    def authenticate(self, channel: Any) -> defer.Deferred[Authenticated]:
        """Run the exchange on ``channel`` (ready, TLS).  Fires with
        :class:`Authenticated`; fails with :class:`AuthenticationError` (the
        channel is then aborted).  The channel's handler is restored on
        success."""
        try:
            cb = channel_binding(channel.transport)
            client = ClientAuth(self.identity, self._secret, cb, self.clock.seconds(),
                                preferences=self.preferences, timeout=self.timeout)
        except (ChannelBindingError, ValueError) as exc:
            channel.abort()
            return defer.fail(AuthenticationError(AuthenticationFailed(
                f"cannot authenticate on this channel: {exc}")))
        handler = _AuthHandler(self, channel, client)
        channel.handler = handler
        handler.start()
        return handler.result
