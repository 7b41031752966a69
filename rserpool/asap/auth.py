"""SRP-6a / CHAP authentication over the ASAP extension messages, sans-IO.

The glue between the wire messages (``rserpool.wire.auth``) and the
exchange state machines (``rserpool.security.exchange``), for one channel:

- :class:`ServerAuth` (registrar): answers ``ASAP_AUTH_REQUEST`` with the
  offer and drives a :class:`~rserpool.security.exchange.ServerExchange`.
  It returns events for the shell: :class:`SendMessage`, :class:`LookupSrp`
  (fetch the SRP verifier, answer with :meth:`ServerAuth.srp_entry` or
  :meth:`ServerAuth.store_unavailable`), ``VerifyChap`` (check locally or by
  RADIUS, answer with :meth:`ServerAuth.chap_verified` or
  :meth:`ServerAuth.chap_unavailable`), ``AuthSucceeded`` and ``AuthFailed``
  (``final``: send, then close the channel).
- :class:`ClientAuth` (PE): sends the request, answers with a
  :class:`~rserpool.security.exchange.ClientExchange`, and ends with
  :class:`Authenticated` or :class:`AuthenticationFailed` (``unsupported``
  when the registrar answered ASAP_ERROR Unrecognized Message, i.e. it knows
  only the RFCs).

No Twisted, no sockets, no clock: ``now`` is passed in.  The channel
binding (32 bytes of the TLS exporter ``EXPORTER-rserpool-auth``) is
computed by the shell, which also checks the TLS version.
docs/asap-auth-extension.md is the specification.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from rserpool.security import exchange as ex
from rserpool.security.chap import ChapVerdict, VerifyChap
from rserpool.wire import AsapError, codes
from rserpool.wire.auth import (
    AsapAuthChapChallenge, AsapAuthChapResponse, AsapAuthFailure, AsapAuthHello, AsapAuthOffer,
    AsapAuthRequest, AsapAuthSrpChallenge, AsapAuthSrpProof, AsapAuthSuccess,
)

__all__ = [
    "AUTH_MESSAGES",
    "AuthSucceeded",
    "AuthFailed",
    "Authenticated",
    "AuthenticationFailed",
    "ClientAuth",
    "FAIL_CHANNEL_BINDING",
    "LookupSrp",
    "SendMessage",
    "ServerAuth",
    "VerifyChap",
    "channel_refusal",
    "from_wire",
    "to_wire",
]

AuthSucceeded = ex.AuthSucceeded
AuthFailed = ex.AuthFailed

#: AuthFailure code of the extension (beyond the exchange's FAIL_1-6): the
#: TLS channel cannot be bound (not TLS 1.3, nor TLS 1.2 with the extended
#: master secret), so no exchange is run.
FAIL_CHANNEL_BINDING = 7

AUTH_MESSAGES: tuple[type, ...] = (
    AsapAuthRequest, AsapAuthOffer, AsapAuthHello, AsapAuthSrpChallenge, AsapAuthSrpProof,
    AsapAuthChapChallenge, AsapAuthChapResponse, AsapAuthSuccess, AsapAuthFailure,
)


# -- events ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Send this (wire) message on the channel."""

    message: Any


@dataclass(frozen=True, slots=True)
class LookupSrp:
    """Fetch the SRP (salt, verifier) of ``identity`` (normalised)."""

    identity: str


@dataclass(frozen=True, slots=True)
class Authenticated:
    """Client result: the registrar accepted us (and proved the verifier for SRP)."""

    mechanism: str


@dataclass(frozen=True, slots=True)
class AuthenticationFailed:
    """Client result.  ``code``: the registrar's failure code (0: local);
    ``unsupported``: the registrar does not know the extension."""

    reason: str
    code: int = 0
    may_retry: bool = False
    unsupported: bool = False


ServerEvent = Union[SendMessage, LookupSrp, VerifyChap, ex.AuthSucceeded, ex.AuthFailed]
ClientEvent = Union[SendMessage, Authenticated, AuthenticationFailed]


# -- conversions -------------------------------------------------------------------------


def to_wire(message: Any) -> Any:
    """The wire message for an exchange message."""
    kind = type(message)
    if kind is ex.MechanismOffer:
        return AsapAuthOffer(tuple(message.mechanisms))
    if kind is ex.ClientHello:
        return AsapAuthHello(message.mechanism, message.identity)
    if kind is ex.SrpChallenge:
        return AsapAuthSrpChallenge(message.salt, message.server_public)
    if kind is ex.SrpProof:
        return AsapAuthSrpProof(message.client_public, message.client_proof)
    if kind is ex.ChapChallenge:
        return AsapAuthChapChallenge(message.identifier, message.nonce)
    if kind is ex.ChapResponse:
        return AsapAuthChapResponse(message.identifier, message.response)
    if kind is ex.AuthSuccess:
        return AsapAuthSuccess(message.mechanism, message.server_proof)
    if kind is ex.AuthFailure:
        return AsapAuthFailure(message.code, message.may_retry)
    raise TypeError(f"not an exchange message: {message!r}")


def from_wire(message: Any) -> Any:
    """The exchange message for a wire message (None for the request)."""
    kind = type(message)
    if kind is AsapAuthOffer:
        return ex.MechanismOffer(message.mechanisms)
    if kind is AsapAuthHello:
        return ex.ClientHello(message.mechanism, message.identity)
    if kind is AsapAuthSrpChallenge:
        return ex.SrpChallenge(message.salt, message.server_public)
    if kind is AsapAuthSrpProof:
        return ex.SrpProof(message.client_public, message.client_proof)
    if kind is AsapAuthChapChallenge:
        return ex.ChapChallenge(message.identifier, message.nonce)
    if kind is AsapAuthChapResponse:
        return ex.ChapResponse(message.identifier, message.response)
    if kind is AsapAuthSuccess:
        return ex.AuthSuccess(message.mechanism, message.server_proof)
    if kind is AsapAuthFailure:
        return ex.AuthFailure(message.code, message.may_retry)
    if kind is AsapAuthRequest:
        return None
    raise TypeError(f"not an authentication message: {message!r}")


def channel_refusal(reason: str) -> tuple[ServerEvent, ...]:
    """What a registrar answers on a channel that cannot be bound (TLS too old,
    no extended master secret, no TLS): a final failure with cause 0xa."""
    return (SendMessage(AsapAuthFailure(FAIL_CHANNEL_BINDING, False)),
            ex.AuthFailed(f"channel binding unavailable: {reason}", final=True))


# -- server ---------------------------------------------------------------------------------


class _Prefetched:
    """The one-entry store a ServerExchange asks after a :class:`LookupSrp`."""

    __slots__ = ("identity", "entry")

    def __init__(self, identity: str | None = None, entry: tuple[bytes, bytes] | None = None):
        self.identity = identity
        self.entry = entry

    def lookup_srp(self, identity: str) -> tuple[bytes, bytes] | None:
        return self.entry if identity == self.identity else None

    def lookup_chap_secret(self, identity: str) -> bytes | None:
        return None  # CHAP is always checked through VerifyChap


_IDLE, _RUNNING, _LOOKING_UP, _DONE = "idle", "running", "looking-up", "done"


class ServerAuth:
    """The registrar's authentication of one channel.

    ``certificate_identity``: the identity a client certificate already gave
    the channel; an SRP/CHAP exchange must then name the same identity
    (certificates take precedence; a different name is refused, final).
    ``address_limiter``: an :class:`~rserpool.security.exchange.AttemptLimiter`
    keyed by the peer's address, bounding failed attempts per source
    address besides the exchange's per-identity ``limiter``.
    """

    def __init__(
        self,
        channel_binding: bytes,
        server_secret: bytes,
        now: float,
        *,
        address: str = "",
        certificate_identity: str | None = None,
        mechanisms: tuple[str, ...] = ex.DEFAULT_MECHANISMS,
        limiter: ex.AttemptLimiter | None = None,
        address_limiter: ex.AttemptLimiter | None = None,
        max_attempts: int = ex.DEFAULT_MAX_ATTEMPTS,
        step_lifetime: float = ex.DEFAULT_STEP_LIFETIME,
        exchange_lifetime: float = ex.DEFAULT_EXCHANGE_LIFETIME,
    ) -> None:
        self._store = _Prefetched()
        self._limiter = limiter
        self._address_limiter = address_limiter
        self._address = "addr:" + address
        self._certificate_identity = certificate_identity
        self._mechanisms = tuple(mechanisms)
        self._exchange = ex.ServerExchange(
            self._store, channel_binding, server_secret, now, mechanisms=self._mechanisms,
            limiter=limiter, max_attempts=max_attempts, step_lifetime=step_lifetime,
            exchange_lifetime=exchange_lifetime)
        self._state = _IDLE
        self._pending_hello: ex.ClientHello | None = None
        self.identity: str | None = None
        self.mechanism: str | None = None

    @property
    def state(self) -> str:
        return self._state

    @property
    def deadline(self) -> float | None:
        if self._state == _DONE and self.identity is None:
            return None
        return self._exchange.deadline

    @property
    def succeeded(self) -> bool:
        return self.identity is not None

    # -- inputs
    def receive(self, message: Any, now: float) -> tuple[ServerEvent, ...]:
        kind = type(message)
        if self._state == _DONE and self.identity is None:
            return ()  # closed: the shell is closing the channel
        if kind is AsapAuthRequest:
            if self._state != _IDLE:
                return self._finish(self._abort("second ASAP_AUTH_REQUEST", ex.FAIL_PROTOCOL))
            self._state = _RUNNING
            return (SendMessage(to_wire(self._exchange.start().message)),)
        if self._state == _IDLE:
            return self._finish(self._abort(f"{message.name} before ASAP_AUTH_REQUEST",
                                            ex.FAIL_PROTOCOL))
        if self._state == _LOOKING_UP:
            return self._finish(self._abort(f"{message.name} during the verifier lookup",
                                            ex.FAIL_PROTOCOL))
        if kind not in (AsapAuthHello, AsapAuthSrpProof, AsapAuthChapResponse):
            return self._finish(self._abort(f"unexpected {getattr(message, 'name', kind)}",
                                            ex.FAIL_PROTOCOL))
        converted = from_wire(message)
        if kind is AsapAuthHello:
            return self._hello(converted, now)
        return self._finish(self._exchange.receive(converted, now), now)

    def srp_entry(self, entry: tuple[bytes, bytes] | None, now: float) -> tuple[ServerEvent, ...]:
        """The answer to :class:`LookupSrp` (None: unknown identity)."""
        if self._state != _LOOKING_UP or self._pending_hello is None:
            return ()  # late answer after the channel's exchange ended
        hello, self._pending_hello = self._pending_hello, None
        self._store.entry = entry
        self._state = _RUNNING
        try:
            return self._finish(self._exchange.receive(hello, now), now)
        finally:
            self._store.entry = None

    def store_unavailable(self, reason: str, now: float) -> tuple[ServerEvent, ...]:
        """The verifier store failed (not a credential failure): fail closed."""
        if self._state != _LOOKING_UP:
            return ()
        self._pending_hello = None
        return self._finish(self._abort(f"verifier store unavailable: {reason}",
                                        ex.FAIL_UNAVAILABLE))

    def chap_verified(self, verdict: ChapVerdict, now: float) -> tuple[ServerEvent, ...]:
        if self._state != _RUNNING:
            return ()
        return self._finish(self._exchange.chap_verified(verdict, now), now)

    def chap_unavailable(self, reason: str, now: float) -> tuple[ServerEvent, ...]:
        if self._state != _RUNNING:
            return ()
        return self._finish(self._exchange.chap_unavailable(reason, now), now)

    def timer_expired(self, now: float) -> tuple[ServerEvent, ...]:
        if self._state == _LOOKING_UP:
            deadline = self._exchange.deadline
            if deadline is not None and now >= deadline:
                self._pending_hello = None
                return self._finish(self._abort("verifier lookup timed out", ex.FAIL_UNAVAILABLE))
            return ()
        if self._state != _RUNNING:
            return ()
        return self._finish(self._exchange.timer_expired(now), now)

    # -- steps
    def _hello(self, hello: ex.ClientHello, now: float) -> tuple[ServerEvent, ...]:
        if self.identity is not None:
            return self._finish(self._exchange.receive(hello, now), now)  # after success: closes
        if self._address_limiter is not None and not self._address_limiter.try_acquire(
                self._address, now):
            return self._finish(self._abort("too many failed attempts from this address",
                                            ex.FAIL_RATE_LIMITED))
        identity = ex.normalize_identity(hello.identity)
        if (identity is not None and self._certificate_identity is not None
                and identity != self._certificate_identity):
            return self._finish(self._abort(
                f"SRP/CHAP identity {identity!r} differs from the client certificate's "
                f"{self._certificate_identity!r}", ex.FAIL_AUTHENTICATION))
        if (identity is None or hello.mechanism not in self._mechanisms
                or hello.mechanism == ex.MECH_CHAP_MD5
                or (self._limiter is not None and self._limiter.tokens(identity, now) < 1.0)):
            # No verifier needed: the exchange refuses, rate-limits or runs CHAP.
            return self._finish(self._exchange.receive(hello, now), now)
        self._state = _LOOKING_UP
        self._pending_hello = hello
        self._store.identity = identity
        return (LookupSrp(identity),)

    def _abort(self, reason: str, code: int) -> tuple[ServerEvent, ...]:
        identity = self.identity
        self.identity = None
        return (SendMessage(AsapAuthFailure(code, False)),
                ex.AuthFailed(reason, identity, self.mechanism, final=True))

    def _finish(self, events: tuple[Any, ...], now: float = 0.0) -> tuple[ServerEvent, ...]:
        out: list[Any] = []
        for event in events:
            kind = type(event)
            if kind is ex.Send:
                out.append(SendMessage(to_wire(event.message)))
                continue
            if kind is ex.AuthSucceeded:
                self.identity = event.identity
                self.mechanism = event.mechanism
                self._state = _DONE
                if self._address_limiter is not None:
                    self._address_limiter.refund(self._address, now)
            elif kind is ex.AuthFailed and event.final:
                self.identity = None
                self._state = _DONE
            out.append(event)
        return tuple(out)



# -- client ---------------------------------------------------------------------------------


class ClientAuth:
    """The PE's authentication on one channel to a registrar.

    :meth:`start` gives the ``ASAP_AUTH_REQUEST``; feed every message from
    the registrar to :meth:`receive` until :class:`Authenticated` or
    :class:`AuthenticationFailed` comes back; call :meth:`timer_expired`
    at :attr:`deadline`.  ``secret`` is the SRP password or CHAP secret.
    The PE never retries with the same secret after a refusal (it cannot get
    better); ``max_retries`` allows retries the registrar marks possible for
    other reasons (a backend that timed out, a challenge that expired).
    """

    def __init__(
        self,
        identity: str,
        secret: str | bytes,
        channel_binding: bytes,
        now: float,
        *,
        preferences: tuple[str, ...] = ex.DEFAULT_MECHANISMS,
        timeout: float = 30.0,
        max_retries: int = 0,
    ) -> None:
        self._exchange = ex.ClientExchange(identity, secret, channel_binding,
                                           preferences=preferences)
        self._deadline: float | None = now + timeout
        self._retries_left = max_retries
        self._started = False
        self._done = False
        self._request: bytes = b""

    @property
    def deadline(self) -> float | None:
        return None if self._done else self._deadline

    @property
    def done(self) -> bool:
        return self._done

    def start(self) -> SendMessage:
        if self._started:
            raise RuntimeError("authentication already started")
        self._started = True
        request = AsapAuthRequest()
        self._request = request.encode()
        return SendMessage(request)

    def receive(self, message: Any, now: float) -> tuple[ClientEvent, ...]:
        if self._done:
            return ()
        if not self._started:
            return self._fail("message before the request")
        kind = type(message)
        if kind is AsapError:
            return self._error(message)
        if kind not in (AsapAuthOffer, AsapAuthSrpChallenge, AsapAuthChapChallenge,
                        AsapAuthSuccess, AsapAuthFailure):
            return self._fail(f"unexpected {getattr(message, 'name', kind)} during authentication")
        if kind is AsapAuthFailure and self._exchange.state == "await-offer":
            # Refused before any offer (e.g. the channel cannot be bound).
            self._done = True
            failed = ex.ClientFailed("refused", message.code, message.may_retry)
            return (AuthenticationFailed(_describe(failed), message.code, message.may_retry),)
        out: list[Any] = []
        for event in self._exchange.receive(from_wire(message)):
            etype = type(event)
            if etype is ex.Send:
                out.append(SendMessage(to_wire(event.message)))
            elif etype is ex.ClientAuthenticated:
                self._done = True
                out.append(Authenticated(event.mechanism))
            elif etype is ex.ClientFailed:
                if (event.may_retry and event.code not in (ex.FAIL_AUTHENTICATION, 0)
                        and self._retries_left > 0):
                    self._retries_left -= 1
                    out.extend(SendMessage(to_wire(e.message)) for e in self._exchange.retry()
                               if type(e) is ex.Send)
                    continue
                self._done = True
                out.append(AuthenticationFailed(_describe(event), event.code, event.may_retry))
        return tuple(out)

    def timer_expired(self, now: float) -> tuple[ClientEvent, ...]:
        if self._done or self._deadline is None or now < self._deadline:
            return ()
        return self._fail("the registrar did not complete the authentication in time")

    def _error(self, message: AsapError) -> tuple[ClientEvent, ...]:
        for cause in message.error.causes:
            if (cause.code == codes.CAUSE_UNRECOGNIZED_MESSAGE and cause.info[:1]
                    and cause.info[0] in {cls.TYPE for cls in AUTH_MESSAGES}):
                self._done = True
                return (AuthenticationFailed(
                    "the registrar does not support the authentication extension "
                    "(ASAP_ERROR Unrecognized Message)", 0, False, unsupported=True),)
        return self._fail(f"ASAP_ERROR during authentication: {message.error}")

    def _fail(self, reason: str) -> tuple[ClientEvent, ...]:
        self._done = True
        return (AuthenticationFailed(reason),)


_FAILURE_TEXT = {
    ex.FAIL_AUTHENTICATION: "authentication refused (wrong secret or unknown identity)",
    ex.FAIL_UNSUPPORTED_MECHANISM: "mechanism not supported by the registrar",
    ex.FAIL_PROTOCOL: "protocol error",
    ex.FAIL_RATE_LIMITED: "too many failed attempts",
    ex.FAIL_TIMEOUT: "authentication timed out at the registrar",
    ex.FAIL_UNAVAILABLE: "the registrar's verification backend is unavailable",
    FAIL_CHANNEL_BINDING: "the TLS channel cannot be bound (TLS 1.3 or TLS 1.2 with "
                          "extended master secret required)",
}


def _describe(event: ex.ClientFailed) -> str:
    if event.code:
        return _FAILURE_TEXT.get(event.code, f"refused with code {event.code}")
    return event.reason
