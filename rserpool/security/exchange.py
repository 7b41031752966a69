"""SRP-6a and CHAP inside TLS over the ASAP extension messages, sans-IO.

One system: the exchange state machines negotiate and produce twisted.cred
**credentials**, the registrar's checkers verify them, and the security
gate (:mod:`rserpool.gate`) decides who may try and what a result means for
the channel.  No Twisted, no sockets, no clock (``now`` is passed in); the
messages are the wire's (:mod:`rserpool.wire.auth`).  docs/auth-exchanges.md
describes the exchange and docs/asap-auth-extension.md the messages::

    registrar (ServerExchange)              PE (ClientExchange)
                                   <-----   ASAP_AUTH_REQUEST
    ASAP_AUTH_OFFER(mechanisms)    ----->
                                   <-----   ASAP_AUTH_HELLO(mechanism, identity)
        Admit(identity, mechanism)          (the gate: may this channel try?)
    SRP:  StartSrp(identity)                (the SRP checker issues a challenge)
    ASAP_AUTH_SRP_CHALLENGE(s, B)  ----->
                                   <-----   ASAP_AUTH_SRP_PROOF(A, M1)
          Verify(SrpCredentials)            (the SRP checker's requestAvatarId)
    CHAP: ASAP_AUTH_CHAP_CHALLENGE ----->
                                   <-----   ASAP_AUTH_CHAP_RESPONSE
          Verify(ChapCredentials)           (the CHAP checker's requestAvatarId)
    ASAP_AUTH_SUCCESS(mechanism, M2 | "") or ASAP_AUTH_FAILURE(code, may_retry)

:class:`ServerExchange` (the registrar's side of one channel) returns events
for the shell: :class:`~rserpool.outputs.Send`, :class:`Admit`,
:class:`StartSrp`, :class:`Verify`, and the results :class:`AuthSucceeded`,
:class:`AuthFailed` (``final``: the channel closes) and
:class:`AuthUnavailable` (a backend could not answer; final).
:class:`ClientExchange` (the PE's side) ends with :class:`Authenticated` or
:class:`AuthenticationFailed`.

An unknown identity is indistinguishable from a wrong secret: the SRP
checker answers it with a salt and verifier derived from a server secret
and the proof fails; CHAP issues the challenge and the response fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from rserpool.identity import MECH_CHAP, MECH_SRP, Identity, normalize_identity
from rserpool.outputs import Send
from rserpool.security import chap as _chap
from rserpool.security import srp as _srp
from rserpool.wire import AsapError, codes
from rserpool.wire.auth import (
    AsapAuthChapChallenge, AsapAuthChapResponse, AsapAuthFailure, AsapAuthHello, AsapAuthOffer,
    AsapAuthRequest, AsapAuthSrpChallenge, AsapAuthSrpProof, AsapAuthSuccess,
)

__all__ = [
    "AUTH_MESSAGES",
    "Admit",
    "AuthFailed",
    "AuthSucceeded",
    "AuthUnavailable",
    "Authenticated",
    "AuthenticationFailed",
    "CHANNEL_BINDING_LEN",
    "ClientExchange",
    "DEFAULT_MECHANISMS",
    "EXPORTER_LABEL",
    "FAIL_AUTHENTICATION",
    "FAIL_CHANNEL_BINDING",
    "FAIL_PROTOCOL",
    "FAIL_RATE_LIMITED",
    "FAIL_TIMEOUT",
    "FAIL_UNAVAILABLE",
    "FAIL_UNSUPPORTED_MECHANISM",
    "MECH_CHAP_MD5",
    "MECH_SRP_SHA256_2048",
    "ServerExchange",
    "StartSrp",
    "Verify",
    "channel_refusal",
]

#: TLS exporter label for the channel binding; the shell exports
#: ``CHANNEL_BINDING_LEN`` (32) bytes with no context.
EXPORTER_LABEL = b"EXPORTER-rserpool-auth"
CHANNEL_BINDING_LEN = 32

MECH_SRP_SHA256_2048 = MECH_SRP  # "SRP-6a-SHA256-2048", the RFC 5054 2048-bit group
MECH_CHAP_MD5 = MECH_CHAP  # "CHAP-MD5"
DEFAULT_MECHANISMS: tuple[str, ...] = (MECH_SRP_SHA256_2048, MECH_CHAP_MD5)

# Failure codes (ASAP_AUTH_FAILURE).
FAIL_AUTHENTICATION = 1  # wrong secret, unknown identity, bad proof, replay
FAIL_UNSUPPORTED_MECHANISM = 2
FAIL_PROTOCOL = 3  # unexpected or malformed message (always final)
FAIL_RATE_LIMITED = 4
FAIL_TIMEOUT = 5
FAIL_UNAVAILABLE = 6  # the verification backend could not answer: try later (final)
FAIL_CHANNEL_BINDING = 7  # the TLS channel cannot be bound (final)

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_STEP_LIFETIME = 30.0
DEFAULT_EXCHANGE_LIFETIME = 120.0

AUTH_MESSAGES: tuple[type, ...] = (
    AsapAuthRequest, AsapAuthOffer, AsapAuthHello, AsapAuthSrpChallenge, AsapAuthSrpProof,
    AsapAuthChapChallenge, AsapAuthChapResponse, AsapAuthSuccess, AsapAuthFailure,
)


# -- server events ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admit:
    """Ask the gate whether the channel may try to prove ``identity`` now;
    answer with :meth:`ServerExchange.attempt_admitted` or ``attempt_refused``."""

    identity: str
    mechanism: str


@dataclass(frozen=True, slots=True)
class StartSrp:
    """Ask the SRP checker for a challenge for ``identity`` (bound to the
    channel); answer with :meth:`ServerExchange.challenge_issued`."""

    identity: str
    channel_binding: bytes


@dataclass(frozen=True, slots=True)
class Verify:
    """Give ``credentials`` (``ChapCredentials`` or ``SrpCredentials``) to the
    checker; answer with ``verified``, ``rejected`` or ``unavailable``.
    ``mechanism`` names the proof, for a checker that names only the
    identity (a plain ``ICredentialsChecker``)."""

    credentials: Any
    mechanism: str


@dataclass(frozen=True, slots=True)
class AuthSucceeded:
    """The peer proved ``identity`` (name, mechanism, groups)."""

    identity: Identity


@dataclass(frozen=True, slots=True)
class AuthFailed:
    """An attempt failed.  ``reason_for_log`` never reaches the peer;
    ``final``: no attempt is left and the channel closes."""

    reason_for_log: str
    identity: str | None = None
    mechanism: str | None = None
    final: bool = False


@dataclass(frozen=True, slots=True)
class AuthUnavailable:
    """A backend (store, directory, RADIUS) could not answer: not the peer's
    failure.  Final."""

    reason_for_log: str
    identity: str | None = None
    mechanism: str | None = None


ServerEvent = Union[Send, Admit, StartSrp, Verify, AuthSucceeded, AuthFailed, AuthUnavailable]


def _send(message: Any) -> Send:
    return Send(None, message)


def channel_refusal(reason: str) -> tuple[ServerEvent, ...]:
    """What a registrar answers on a channel that cannot be bound (TLS too
    old, no extended master secret, no TLS): a final failure, cause 0xa."""
    return (_send(AsapAuthFailure(FAIL_CHANNEL_BINDING, False)),
            AuthFailed(f"channel binding unavailable: {reason}", final=True))


# -- server --------------------------------------------------------------------------------------

_IDLE = "idle"
_AWAIT_HELLO = "await-hello"
_ADMITTING = "admitting"
_CHALLENGING = "challenging"  # the SRP checker is making the challenge
_AWAIT_PROOF = "await-proof"  # SRP
_AWAIT_RESPONSE = "await-response"  # CHAP
_VERIFYING = "verifying"
_SUCCEEDED = "succeeded"
_CLOSED = "closed"
_WAITING = (_ADMITTING, _CHALLENGING, _VERIFYING)


class ServerExchange:
    """The registrar's side of one TLS channel's authentication.

    ``mechanisms`` are the ones a checker is configured for, offered in that
    order.  At most ``max_attempts`` ASAP_AUTH_HELLOs per channel; each
    challenge lives ``step_lifetime`` seconds and the whole exchange
    ``exchange_lifetime``; call :meth:`timer_expired` at :attr:`deadline`.
    """

    def __init__(
        self,
        channel_binding: bytes,
        now: float,
        *,
        mechanisms: tuple[str, ...] = DEFAULT_MECHANISMS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        step_lifetime: float = DEFAULT_STEP_LIFETIME,
        exchange_lifetime: float = DEFAULT_EXCHANGE_LIFETIME,
    ) -> None:
        if len(channel_binding) != CHANNEL_BINDING_LEN:
            raise ValueError(f"channel binding must be {CHANNEL_BINDING_LEN} bytes")
        unknown = [m for m in mechanisms if m not in DEFAULT_MECHANISMS]
        if unknown or not mechanisms:
            raise ValueError(f"bad mechanism list {mechanisms!r}")
        self._cb = bytes(channel_binding)
        self._mechanisms = tuple(mechanisms)
        self._max_attempts = max_attempts
        self._step_lifetime = step_lifetime
        self._deadline = now + exchange_lifetime
        self._step_deadline: float | None = None
        self._state = _IDLE
        self._attempts = 0
        self._identity: str | None = None
        self._mechanism: str | None = None
        self._challenge: Any = None  # the SRP checker's SrpChallenge
        self._chap: _chap.ChapServer | None = None
        self._credentials: Any = None
        self.identity: Identity | None = None  # after success

    @property
    def state(self) -> str:
        return self._state

    @property
    def waiting(self) -> bool:
        """A step of the exchange awaits the shell (the gate, the SRP
        checker's challenge, the checker's verdict): the channel's other
        input waits behind it, in order."""
        return self._state in _WAITING

    @property
    def deadline(self) -> float | None:
        """When the shell should call :meth:`timer_expired` (None: done)."""
        if self._state in (_SUCCEEDED, _CLOSED, _IDLE):
            return None
        if self._step_deadline is not None:
            return min(self._deadline, self._step_deadline)
        return self._deadline

    # -- messages from the peer
    def receive(self, message: Any, now: float) -> tuple[ServerEvent, ...]:
        kind = type(message)
        state = self._state
        if state == _CLOSED:
            return ()  # the shell is closing the channel
        if state == _SUCCEEDED:
            return self._close(f"{message.name} after successful authentication", FAIL_PROTOCOL)
        if kind is AsapAuthRequest:
            if state != _IDLE:
                return self._close("second ASAP_AUTH_REQUEST", FAIL_PROTOCOL)
            self._state = _AWAIT_HELLO
            return (_send(AsapAuthOffer(self._mechanisms)),)
        if state == _IDLE:
            return self._close(f"{message.name} before ASAP_AUTH_REQUEST", FAIL_PROTOCOL)
        if state in _WAITING:
            return self._close(f"{message.name} while {state}", FAIL_PROTOCOL)
        if now > self._deadline:
            return self._close("exchange lifetime exceeded", FAIL_TIMEOUT)
        if kind is AsapAuthHello and state == _AWAIT_HELLO:
            return self._hello(message)
        if kind is AsapAuthSrpProof and state == _AWAIT_PROOF:
            return self._srp_proof(message, now)
        if kind is AsapAuthChapResponse and state == _AWAIT_RESPONSE:
            return self._chap_response(message, now)
        return self._close(f"unexpected {message.name} in state {state}", FAIL_PROTOCOL)

    def _hello(self, hello: AsapAuthHello) -> tuple[ServerEvent, ...]:
        self._attempts += 1
        self._identity = self._mechanism = None
        if hello.mechanism not in self._mechanisms:
            return self._fail("unsupported mechanism", FAIL_UNSUPPORTED_MECHANISM)
        identity = normalize_identity(hello.identity)
        if identity is None:
            return self._close("malformed identity", FAIL_PROTOCOL)
        self._identity = identity
        self._mechanism = hello.mechanism
        self._state = _ADMITTING
        return (Admit(identity, hello.mechanism),)

    # -- answers from the shell
    def attempt_admitted(self, now: float) -> tuple[ServerEvent, ...]:
        """The gate lets this attempt go ahead."""
        if self._state != _ADMITTING:
            return ()
        identity = self._identity
        assert identity is not None
        self._step_deadline = now + self._step_lifetime
        if self._mechanism == MECH_CHAP_MD5:
            self._chap = _chap.ChapServer(identity, self._cb, now, lifetime=self._step_lifetime)
            self._state = _AWAIT_RESPONSE
            return (_send(AsapAuthChapChallenge(self._chap.identifier, self._chap.nonce)),)
        self._state = _CHALLENGING
        return (StartSrp(identity, self._cb),)

    def attempt_refused(self, code: int, final: bool, reason: str, now: float) -> tuple[ServerEvent, ...]:
        """The gate refuses this attempt (``code``: the FAIL_* to send)."""
        if self._state != _ADMITTING:
            return ()
        if final:
            return self._close(reason, code)
        return self._fail(reason, code)

    def challenge_issued(self, challenge: Any, now: float) -> tuple[ServerEvent, ...]:
        """The SRP checker's challenge (``salt``, ``server_public``)."""
        if self._state != _CHALLENGING:
            return ()
        self._challenge = challenge
        self._state = _AWAIT_PROOF
        return (_send(AsapAuthSrpChallenge(challenge.salt, challenge.server_public)),)

    def verified(self, identity: Identity, now: float) -> tuple[ServerEvent, ...]:
        """The checker accepted the credentials and names ``identity``."""
        if self._state != _VERIFYING:
            return ()
        credentials, self._credentials = self._credentials, None
        if self._chap is not None:
            self._chap.verification_result(True)
            self._chap = None
        if identity.name != self._identity:  # a checker must answer for the claimed name
            return self._fail(f"the checker answered for {identity.name!r}", FAIL_AUTHENTICATION)
        server_proof = credentials.server_proof or b"" if type(credentials) is _srp.SrpCredentials else b""
        self._state = _SUCCEEDED
        self._step_deadline = None
        self.identity = identity
        return (_send(AsapAuthSuccess(self._mechanism, server_proof)), AuthSucceeded(identity))

    def rejected(self, reason: str, now: float) -> tuple[ServerEvent, ...]:
        """The checker refused the credentials (or the identity for SRP)."""
        if self._state not in (_VERIFYING, _CHALLENGING):
            return ()
        if self._chap is not None:
            self._chap.verification_result(False)
        return self._fail(reason or "refused", FAIL_AUTHENTICATION)

    def unavailable(self, reason: str, now: float) -> tuple[ServerEvent, ...]:
        """The checker's backend could not answer (fail closed)."""
        if self._state not in (_VERIFYING, _CHALLENGING):
            return ()
        return self._unavailable(reason)

    def timer_expired(self, now: float) -> tuple[ServerEvent, ...]:
        deadline = self.deadline
        if deadline is None or now < deadline:
            return ()
        if self._state in (_VERIFYING, _CHALLENGING):
            return self._unavailable("verification timed out")
        if now >= self._deadline:
            return self._close("exchange lifetime exceeded", FAIL_TIMEOUT)
        return self._fail("challenge expired", FAIL_TIMEOUT)

    # -- steps
    def _srp_proof(self, proof: AsapAuthSrpProof, now: float) -> tuple[ServerEvent, ...]:
        challenge, self._challenge = self._challenge, None
        if self._step_deadline is not None and now > self._step_deadline:
            return self._fail("challenge expired", FAIL_TIMEOUT)
        self._credentials = _srp.SrpCredentials(challenge, proof.client_public, proof.client_proof)
        self._state = _VERIFYING
        return (Verify(self._credentials, MECH_SRP_SHA256_2048),)

    def _chap_response(self, response: AsapAuthChapResponse, now: float) -> tuple[ServerEvent, ...]:
        server = self._chap
        assert server is not None
        if response.identifier != server.identifier:
            self._chap = None
            return self._fail("CHAP identifier mismatch", FAIL_AUTHENTICATION)
        try:
            credentials = server.response_received(response.response, now)
        except _chap.ChapError as exc:
            self._chap = None
            code = FAIL_TIMEOUT if "expired" in str(exc) else FAIL_AUTHENTICATION
            return self._fail(f"CHAP: {exc}", code)
        self._credentials = credentials
        self._state = _VERIFYING
        return (Verify(credentials, MECH_CHAP_MD5),)

    # -- outcomes
    def _forget(self) -> None:
        self._challenge = self._chap = self._credentials = None
        self._step_deadline = None

    def _fail(self, reason: str, code: int) -> tuple[ServerEvent, ...]:
        if self._attempts >= self._max_attempts:
            return self._close(reason, code)
        self._forget()
        self._state = _AWAIT_HELLO
        return (_send(AsapAuthFailure(code, True)),
                AuthFailed(reason, self._identity, self._mechanism, final=False))

    def _close(self, reason: str, code: int) -> tuple[ServerEvent, ...]:
        self._forget()
        self._state = _CLOSED
        self.identity = None
        return (_send(AsapAuthFailure(code, False)),
                AuthFailed(reason, self._identity, self._mechanism, final=True))

    def _unavailable(self, reason: str) -> tuple[ServerEvent, ...]:
        self._forget()
        self._state = _CLOSED
        return (_send(AsapAuthFailure(FAIL_UNAVAILABLE, False)),
                AuthUnavailable(reason, self._identity, self._mechanism))


# -- client ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The registrar accepted us (and, for SRP, proved the verifier with M2)."""

    mechanism: str


@dataclass(frozen=True, slots=True)
class AuthenticationFailed:
    """``code``: the registrar's failure code (0: decided here);
    ``unsupported``: the registrar does not know the extension."""

    reason: str
    code: int = 0
    may_retry: bool = False
    unsupported: bool = False


ClientEvent = Union[Send, Authenticated, AuthenticationFailed]

_FAILURE_TEXT = {
    FAIL_AUTHENTICATION: "authentication refused (wrong secret or unknown identity)",
    FAIL_UNSUPPORTED_MECHANISM: "mechanism not supported by the registrar",
    FAIL_PROTOCOL: "protocol error",
    FAIL_RATE_LIMITED: "too many failed attempts",
    FAIL_TIMEOUT: "authentication timed out at the registrar",
    FAIL_UNAVAILABLE: "the registrar's verification backend is unavailable",
    FAIL_CHANNEL_BINDING: "the TLS channel cannot be bound (TLS 1.3 or TLS 1.2 with "
                          "extended master secret required)",
}

_C_START = "start"
_C_AWAIT_OFFER = "await-offer"
_C_AWAIT_CHALLENGE = "await-challenge"
_C_AWAIT_RESULT = "await-result"
_C_DONE = "done"


class ClientExchange:
    """The PE's authentication on one channel to a registrar.

    :meth:`start` gives the ASAP_AUTH_REQUEST; feed every message from the
    registrar to :meth:`receive` until :class:`Authenticated` or
    :class:`AuthenticationFailed` comes back; call :meth:`timer_expired` at
    :attr:`deadline`.  ``secret`` is the SRP password or the CHAP secret;
    ``preferences`` the mechanisms in the PE's order.  For SRP the
    registrar's M2 is checked, so a registrar that does not hold the
    verifier is detected even if it says "success".  The PE never retries
    with the same secret after a refusal (it cannot get better);
    ``max_retries`` allows retries the registrar marks possible for other
    reasons (a backend that timed out, a challenge that expired).
    """

    def __init__(
        self,
        identity: str,
        secret: str | bytes,
        channel_binding: bytes,
        now: float,
        *,
        preferences: tuple[str, ...] = DEFAULT_MECHANISMS,
        timeout: float = 30.0,
        max_retries: int = 0,
    ) -> None:
        if len(channel_binding) != CHANNEL_BINDING_LEN:
            raise ValueError(f"channel binding must be {CHANNEL_BINDING_LEN} bytes")
        normalized = normalize_identity(identity)
        if normalized is None:
            raise ValueError("bad identity")
        unknown = [m for m in preferences if m not in DEFAULT_MECHANISMS]
        if unknown or not preferences:
            raise ValueError(f"bad mechanism preferences {preferences!r}")
        self._identity = normalized
        self._secret = _srp.normalize_text(secret, _srp.MAX_PASSWORD_LEN, "secret")
        self._cb = bytes(channel_binding)
        self._preferences = tuple(preferences)
        self._offer: tuple[str, ...] | None = None
        self._mechanism: str | None = None
        self._srp: _srp.SrpClientRun | None = None
        self._deadline: float | None = now + timeout
        self._retries_left = max_retries
        self._pipelined = False  # the hello went with the request (start_pipelined)
        self._state = _C_START

    @property
    def state(self) -> str:
        return self._state

    @property
    def deadline(self) -> float | None:
        return None if self._state == _C_DONE else self._deadline

    @property
    def done(self) -> bool:
        return self._state == _C_DONE

    @property
    def proved(self) -> bool:
        """The PE's last message of the exchange (SRP proof, CHAP response)
        is out and the registrar's verdict is awaited."""
        return self._state == _C_AWAIT_RESULT

    def start(self) -> Send:
        """The ASAP_AUTH_REQUEST alone: the hello follows the registrar's offer."""
        if self._state != _C_START:
            raise RuntimeError("authentication already started")
        self._state = _C_AWAIT_OFFER
        return _send(AsapAuthRequest())

    def start_pipelined(self) -> tuple[Send, Send]:
        """The ASAP_AUTH_REQUEST and, without waiting for the offer, the
        ASAP_AUTH_HELLO of the first preference: one round trip less.  The
        registrar answers both in order (the offer, then the challenge).
        When the offer turns out not to hold that mechanism, the registrar
        refuses the hello as unsupported (may retry) and the hello of the
        first preference it does offer follows; that costs one of the
        channel's attempts, not a retry of ``max_retries``."""
        if self._state != _C_START:
            raise RuntimeError("authentication already started")
        self._state = _C_AWAIT_OFFER
        request = _send(AsapAuthRequest())
        (hello,) = self._hello_for(self._preferences[0])
        self._pipelined = True
        return request, hello  # type: ignore[return-value]

    def receive(self, message: Any, now: float) -> tuple[ClientEvent, ...]:
        state = self._state
        if state == _C_DONE:
            return ()
        if state == _C_START:
            return self._failed("message before the request")
        kind = type(message)
        if kind is AsapError:
            return self._error(message)
        if kind is AsapAuthOffer and state == _C_AWAIT_OFFER:
            self._offer = tuple(message.mechanisms)
            return self._hello()
        if kind is AsapAuthOffer and self._pipelined and self._offer is None and state == _C_AWAIT_CHALLENGE:
            # The offer to a pipelined hello: it is answered already; if the
            # mechanism is not offered, the refusal of the hello comes next.
            self._offer = tuple(message.mechanisms)
            return ()
        if kind is AsapAuthSrpChallenge and state == _C_AWAIT_CHALLENGE and self._srp is not None:
            try:
                a_pub, m1 = self._srp.process_challenge(message.salt, message.server_public)
            except (_srp.SrpError, TypeError) as exc:
                return self._failed(f"bad SRP challenge: {exc}")
            self._state = _C_AWAIT_RESULT
            return (_send(AsapAuthSrpProof(a_pub, m1)),)
        if kind is AsapAuthChapChallenge and state == _C_AWAIT_CHALLENGE and self._mechanism == MECH_CHAP_MD5:
            try:
                response = _chap.ChapClient(self._secret, self._cb).respond(message.identifier, message.nonce)
            except _chap.ChapError as exc:
                return self._failed(f"bad CHAP challenge: {exc}")
            self._state = _C_AWAIT_RESULT
            return (_send(AsapAuthChapResponse(message.identifier, response)),)
        if kind is AsapAuthSuccess and state == _C_AWAIT_RESULT:
            return self._success(message)
        if kind is AsapAuthFailure:
            return self._refused(message)
        return self._failed(f"unexpected {message.name} in state {state}")

    def timer_expired(self, now: float) -> tuple[ClientEvent, ...]:
        if self._state == _C_DONE or self._deadline is None or now < self._deadline:
            return ()
        return self._failed("the registrar did not complete the authentication in time")

    def _hello(self) -> tuple[ClientEvent, ...]:
        assert self._offer is not None
        choice = next((m for m in self._preferences if m in self._offer), None)
        if choice is None:
            return self._failed("no common mechanism")
        return self._hello_for(choice)

    def _hello_for(self, choice: str) -> tuple[ClientEvent, ...]:
        self._mechanism = choice
        self._srp = None
        if choice != MECH_CHAP_MD5:
            self._srp = _srp.SrpClientRun(_srp.GROUPS[choice], self._identity, self._secret, self._cb)
        self._state = _C_AWAIT_CHALLENGE
        return (_send(AsapAuthHello(choice, self._identity)),)

    def _success(self, message: AsapAuthSuccess) -> tuple[ClientEvent, ...]:
        mechanism = self._mechanism
        if message.mechanism != mechanism:
            return self._failed("registrar confirmed another mechanism")
        if self._srp is not None:
            session, self._srp = self._srp, None
            try:
                session.verify_server(message.server_proof)
            except _srp.SrpError:
                return self._failed("registrar proof mismatch")
        elif message.server_proof:
            return self._failed("unexpected registrar proof for CHAP")
        assert mechanism is not None
        self._state = _C_DONE
        return (Authenticated(mechanism),)

    def _refused(self, message: AsapAuthFailure) -> tuple[ClientEvent, ...]:
        self._srp = None
        if (message.code == FAIL_UNSUPPORTED_MECHANISM and message.may_retry and self._pipelined
                and self._offer is not None and self._mechanism not in self._offer
                and self._state == _C_AWAIT_CHALLENGE):
            # The pipelined hello guessed a mechanism the registrar does not offer.
            self._pipelined = False
            return self._hello()
        if (message.may_retry and message.code not in (FAIL_AUTHENTICATION, 0) and self._retries_left > 0
                and self._offer is not None and self._state in (_C_AWAIT_CHALLENGE, _C_AWAIT_RESULT)):
            self._retries_left -= 1
            return self._hello()
        self._state = _C_DONE
        reason = _FAILURE_TEXT.get(message.code, f"refused with code {message.code}")
        return (AuthenticationFailed(reason, message.code, message.may_retry),)

    def _error(self, message: AsapError) -> tuple[ClientEvent, ...]:
        for cause in message.error.causes:
            if (cause.code == codes.CAUSE_UNRECOGNIZED_MESSAGE and cause.info[:1]
                    and cause.info[0] in {cls.TYPE for cls in AUTH_MESSAGES}):
                self._state = _C_DONE
                return (AuthenticationFailed(
                    "the registrar does not support the authentication extension "
                    "(ASAP_ERROR Unrecognized Message)", 0, False, unsupported=True),)
        return self._failed(f"ASAP_ERROR during authentication: {message.error}")

    def _failed(self, reason: str) -> tuple[ClientEvent, ...]:
        self._srp = None
        self._state = _C_DONE
        return (AuthenticationFailed(reason),)
