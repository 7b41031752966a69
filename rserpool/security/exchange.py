"""Mechanism negotiation and the SRP / CHAP exchange state machines (sans-IO).

Pure: no Twisted, no sockets, no clock (``now`` is passed in), no wire
encoding.  The shell feeds decoded messages in and gets back a tuple of
events: :class:`Send` (a message for the peer), :class:`VerifyChap` (a CHAP
check to run locally or by RADIUS), :class:`AuthSucceeded` and
:class:`AuthFailed` (the typed results; ``final`` says the shell must close
the TLS connection).  The flow (``docs/auth-exchanges.md``)::

    server                                  client
    MechanismOffer(mechanisms)     ----->
                                   <-----   ClientHello(mechanism, identity)
    SrpChallenge(salt, B)          ----->                        (SRP)
                                   <-----   SrpProof(A, M1)
    AuthSuccess(mechanism, M2) | AuthFailure(code, may_retry)
    ChapChallenge(identifier, nonce) --->                        (CHAP)
                                   <-----   ChapResponse(identifier, response)
    AuthSuccess(mechanism, b"")  | AuthFailure(code, may_retry)

An unknown identity is indistinguishable from a wrong secret: SRP answers it
with a salt and verifier derived from ``server_secret`` (so repeated probes
see the same salt) and fails at the proof; CHAP issues the challenge and
fails at the response.  Only ``AuthFailed.reason_for_log`` tells them apart.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from rserpool.identity import normalize_identity
from rserpool.security import chap as _chap
from rserpool.security import srp as _srp

__all__ = [
    "AttemptLimiter",
    "AuthFailed",
    "AuthFailure",
    "AuthSucceeded",
    "AuthSuccess",
    "ChapChallenge",
    "ChapResponse",
    "ClientAuthenticated",
    "ClientExchange",
    "ClientFailed",
    "ClientHello",
    "CredentialStore",
    "DEFAULT_MECHANISMS",
    "EXPORTER_LABEL",
    "FAIL_AUTHENTICATION",
    "FAIL_PROTOCOL",
    "FAIL_RATE_LIMITED",
    "FAIL_TIMEOUT",
    "FAIL_UNAVAILABLE",
    "FAIL_UNSUPPORTED_MECHANISM",
    "MECH_CHAP_MD5",
    "MECH_SRP_SHA256_2048",
    "MechanismOffer",
    "Send",
    "ServerExchange",
    "SrpChallenge",
    "SrpProof",
    "VerifyChap",
    "normalize_identity",
    "resolve_chap_locally",
]

#: TLS exporter label for the channel binding; the shell exports
#: ``CHANNEL_BINDING_LEN`` (32) bytes with no context.
EXPORTER_LABEL = b"EXPORTER-rserpool-auth"
CHANNEL_BINDING_LEN = 32

MECH_SRP_SHA256_2048 = _srp.GROUP_2048_SHA256.name  # "SRP-6a-SHA256-2048"
MECH_CHAP_MD5 = "CHAP-MD5"
DEFAULT_MECHANISMS: tuple[str, ...] = (MECH_SRP_SHA256_2048, MECH_CHAP_MD5)
MAX_MECHANISMS = 8
MAX_MECHANISM_NAME_LEN = 32
MAX_IDENTITY_LEN = 255

# Peer-facing failure codes (AuthFailure.code).
FAIL_AUTHENTICATION = 1  # wrong secret, unknown identity, bad proof, replay
FAIL_UNSUPPORTED_MECHANISM = 2
FAIL_PROTOCOL = 3  # unexpected or malformed message
FAIL_RATE_LIMITED = 4
FAIL_TIMEOUT = 5
FAIL_UNAVAILABLE = 6  # the verification backend is down: try later

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_STEP_LIFETIME = 30.0
DEFAULT_EXCHANGE_LIFETIME = 120.0


# --------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class MechanismOffer:
    """Server -> client: the mechanisms the server accepts, best first."""

    mechanisms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClientHello:
    """Client -> server: the chosen mechanism and the identity (UTF-8)."""

    mechanism: str
    identity: str


@dataclass(frozen=True, slots=True)
class SrpChallenge:
    """Server -> client: salt s (8..64 bytes) and PAD(B) (len(N) bytes)."""

    salt: bytes
    server_public: bytes


@dataclass(frozen=True, slots=True)
class SrpProof:
    """Client -> server: PAD(A) (len(N) bytes) and M1 (hash length)."""

    client_public: bytes
    client_proof: bytes


@dataclass(frozen=True, slots=True)
class ChapChallenge:
    """Server -> client: CHAP identifier (1 byte) and nonce (32 bytes)."""

    identifier: int
    nonce: bytes


@dataclass(frozen=True, slots=True)
class ChapResponse:
    """Client -> server: the identifier echoed and the 16-byte MD5 response."""

    identifier: int
    response: bytes


@dataclass(frozen=True, slots=True)
class AuthSuccess:
    """Server -> client: success; M2 for SRP, empty for CHAP."""

    mechanism: str
    server_proof: bytes


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """Server -> client: failure code (FAIL_*) and whether a retry is allowed."""

    code: int
    may_retry: bool


Message = (
    MechanismOffer | ClientHello | SrpChallenge | SrpProof | ChapChallenge
    | ChapResponse | AuthSuccess | AuthFailure
)

# ----------------------------------------------------------------- events

VerifyChap = _chap.VerifyChap


@dataclass(frozen=True, slots=True)
class Send:
    """Encode and send ``message`` to the peer."""

    message: Message


@dataclass(frozen=True, slots=True)
class AuthSucceeded:
    """Server result: the peer proved ``identity`` with ``mechanism``."""

    identity: str
    mechanism: str


@dataclass(frozen=True, slots=True)
class AuthFailed:
    """Server result.  ``reason_for_log`` never reaches the peer; ``final``:
    no attempt is left, close the TLS connection."""

    reason_for_log: str
    identity: str | None = None
    mechanism: str | None = None
    final: bool = False


@dataclass(frozen=True, slots=True)
class ClientAuthenticated:
    """Client result: the server accepted us (and, for SRP, proved the
    verifier with M2)."""

    mechanism: str


@dataclass(frozen=True, slots=True)
class ClientFailed:
    """Client result; ``code`` is a FAIL_* code or 0 for a local failure."""

    reason: str
    code: int = 0
    may_retry: bool = False


ServerEvent = Send | VerifyChap | AuthSucceeded | AuthFailed
ClientEvent = Send | ClientAuthenticated | ClientFailed


# ------------------------------------------------------------------ store


class CredentialStore(Protocol):
    """The narrow store the server side asks (a sync lookup)."""

    def lookup_srp(self, identity: str) -> tuple[bytes, bytes] | None:
        """(salt, PAD(verifier)) for the production group, or None."""

    def lookup_chap_secret(self, identity: str) -> bytes | None:
        """The CHAP secret (cleartext, as RFC 1994 needs), or None."""


def resolve_chap_locally(store: CredentialStore, request: VerifyChap) -> _chap.ChapVerdict:
    """Answer a :class:`VerifyChap` from a local store."""
    return _chap.verify_locally(store.lookup_chap_secret(request.identity), request)


# ---------------------------------------------------------------- limiter


class AttemptLimiter:
    """Token bucket per key (identity, or source address), ``now`` passed in.

    Each key holds up to ``capacity`` tokens and regains one every
    ``refill_interval`` seconds.  An attempt takes a token
    (:meth:`try_acquire`); a success gives it back (:meth:`refund`), so only
    failures use up the budget.  At most ``max_keys`` keys are kept; the
    least recently used (hence most refilled) bucket is dropped first.
    """

    __slots__ = ("capacity", "refill_interval", "max_keys", "_buckets")

    def __init__(
        self, capacity: int = 5, refill_interval: float = 60.0, max_keys: int = 100_000
    ) -> None:
        if capacity < 1 or refill_interval <= 0 or max_keys < 1:
            raise ValueError("capacity, refill_interval and max_keys must be positive")
        self.capacity = capacity
        self.refill_interval = refill_interval
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def tokens(self, key: str, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return float(self.capacity)
        tokens, updated = entry
        elapsed = max(0.0, now - updated)
        return min(float(self.capacity), tokens + elapsed / self.refill_interval)

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def try_acquire(self, key: str, now: float) -> bool:
        tokens = self.tokens(key, now)
        if tokens < 1.0:
            self._store(key, tokens, now)
            return False
        self._store(key, tokens - 1.0, now)
        return True

    def refund(self, key: str, now: float) -> None:
        tokens = min(float(self.capacity), self.tokens(key, now) + 1.0)
        self._store(key, tokens, now)


# ----------------------------------------------------------------- server

_AWAIT_HELLO = "await-hello"
_SRP_AWAIT_PROOF = "srp-await-proof"
_CHAP_AWAIT_RESPONSE = "chap-await-response"
_CHAP_VERIFYING = "chap-verifying"
_SUCCEEDED = "succeeded"
_CLOSED = "closed"


class ServerExchange:
    """The server side of one TLS channel's authentication.

    Call :meth:`start` once, then :meth:`receive` for each decoded client
    message, :meth:`chap_verified` / :meth:`chap_unavailable` with the
    answer to a :class:`VerifyChap`, and :meth:`timer_expired` when
    :attr:`deadline` passes.  Every attempt starts with a fresh SRP or CHAP
    state; at most ``max_attempts`` per exchange, and each takes a token from
    ``limiter`` (keyed by identity) when one is given.
    """

    def __init__(
        self,
        store: CredentialStore,
        channel_binding: bytes,
        server_secret: bytes,
        now: float,
        *,
        mechanisms: tuple[str, ...] = DEFAULT_MECHANISMS,
        limiter: AttemptLimiter | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        step_lifetime: float = DEFAULT_STEP_LIFETIME,
        exchange_lifetime: float = DEFAULT_EXCHANGE_LIFETIME,
    ) -> None:
        if len(channel_binding) != CHANNEL_BINDING_LEN:
            raise ValueError(f"channel binding must be {CHANNEL_BINDING_LEN} bytes")
        if len(server_secret) < 16:
            raise ValueError("server_secret must be at least 16 bytes")
        unknown = [m for m in mechanisms if m != MECH_CHAP_MD5 and m not in _srp.GROUPS]
        if unknown or not mechanisms or len(mechanisms) > MAX_MECHANISMS:
            raise ValueError(f"bad mechanism list {mechanisms!r}")
        self._store = store
        self._cb = bytes(channel_binding)
        self._secret = bytes(server_secret)
        self._mechanisms = tuple(mechanisms)
        self._limiter = limiter
        self._max_attempts = max_attempts
        self._step_lifetime = step_lifetime
        self._deadline = now + exchange_lifetime
        self._step_deadline: float | None = None
        self._state = _AWAIT_HELLO
        self._started = False
        self._attempts = 0
        self._identity: str | None = None
        self._mechanism: str | None = None
        self._unknown = False
        self._srp: _srp.SrpServerSession | None = None
        self._chap: _chap.ChapServer | None = None

    # -- introspection
    @property
    def state(self) -> str:
        return self._state

    @property
    def deadline(self) -> float | None:
        """When the shell should call :meth:`timer_expired` (None: done)."""
        if self._state in (_SUCCEEDED, _CLOSED):
            return None
        if self._step_deadline is not None:
            return min(self._deadline, self._step_deadline)
        return self._deadline

    @property
    def authenticated_identity(self) -> str | None:
        return self._identity if self._state == _SUCCEEDED else None

    # -- inputs
    def start(self) -> Send:
        if self._started:
            raise RuntimeError("exchange already started")
        self._started = True
        return Send(MechanismOffer(self._mechanisms))

    def receive(self, message: object, now: float) -> tuple[ServerEvent, ...]:
        if self._state == _CLOSED:
            return (AuthFailed("message after the exchange was closed", final=True),)
        if self._state == _SUCCEEDED:
            return self._close("message after successful authentication", FAIL_PROTOCOL)
        if now > self._deadline:
            return self._close("exchange lifetime exceeded", FAIL_TIMEOUT)
        if isinstance(message, ClientHello) and self._state == _AWAIT_HELLO:
            return self._hello(message, now)
        if isinstance(message, SrpProof) and self._state == _SRP_AWAIT_PROOF:
            return self._srp_proof(message, now)
        if isinstance(message, ChapResponse) and self._state == _CHAP_AWAIT_RESPONSE:
            return self._chap_response(message, now)
        return self._close(
            f"unexpected {type(message).__name__} in state {self._state}", FAIL_PROTOCOL
        )

    def chap_verified(self, verdict: _chap.ChapVerdict, now: float) -> tuple[ServerEvent, ...]:
        """The answer to the pending :class:`VerifyChap`.

        A late answer, after the exchange was closed (timeout, protocol
        error), is ignored and returns no event.
        """
        if self._state == _CLOSED:
            return ()
        if self._state != _CHAP_VERIFYING or self._chap is None:
            raise RuntimeError("no CHAP verification pending")
        self._chap.verification_result(verdict.ok)
        self._chap = None
        if verdict.ok:
            return self._succeed(b"", now)
        return self._fail(verdict.reason or "wrong CHAP response", FAIL_AUTHENTICATION)

    def chap_unavailable(self, reason: str, now: float) -> tuple[ServerEvent, ...]:
        """The verification backend failed (not a credential failure)."""
        if self._state == _CLOSED:
            return ()
        if self._state != _CHAP_VERIFYING or self._chap is None:
            raise RuntimeError("no CHAP verification pending")
        self._chap = None
        if self._limiter is not None and self._identity is not None:
            self._limiter.refund(self._identity, now)
        return self._close(f"verification backend unavailable: {reason}", FAIL_UNAVAILABLE)

    def timer_expired(self, now: float) -> tuple[ServerEvent, ...]:
        deadline = self.deadline
        if deadline is None or now < deadline:
            return ()
        if self._state == _CHAP_VERIFYING:
            return self._close("CHAP verification timed out", FAIL_UNAVAILABLE)
        if now >= self._deadline:
            return self._close("exchange lifetime exceeded", FAIL_TIMEOUT)
        return self._fail("challenge expired", FAIL_TIMEOUT)

    # -- steps
    def _hello(self, hello: ClientHello, now: float) -> tuple[ServerEvent, ...]:
        self._attempts += 1
        self._unknown = False
        self._identity = None
        self._mechanism = None
        if not isinstance(hello.mechanism, str) or hello.mechanism not in self._mechanisms:
            return self._fail("unsupported mechanism", FAIL_UNSUPPORTED_MECHANISM)
        identity = normalize_identity(hello.identity)
        if identity is None:
            return self._close("malformed identity", FAIL_PROTOCOL)
        self._identity = identity
        self._mechanism = hello.mechanism
        if self._limiter is not None and not self._limiter.try_acquire(identity, now):
            return self._fail("rate limited", FAIL_RATE_LIMITED)
        self._step_deadline = now + self._step_lifetime
        if hello.mechanism == MECH_CHAP_MD5:
            self._chap = _chap.ChapServer(identity, self._cb, now, lifetime=self._step_lifetime)
            self._state = _CHAP_AWAIT_RESPONSE
            return (Send(ChapChallenge(self._chap.identifier, self._chap.nonce)),)
        group = _srp.GROUPS[hello.mechanism]
        salt, verifier = self._srp_credentials(group, identity)
        ident_bytes = identity.encode("utf-8")
        self._srp = _srp.SrpServerSession(group, ident_bytes, salt, verifier, self._cb)
        self._state = _SRP_AWAIT_PROOF
        return (Send(SrpChallenge(self._srp.salt, self._srp.server_public)),)

    def _srp_credentials(self, group: _srp.SrpGroup, identity: str) -> tuple[bytes, int]:
        # The fake credentials are derived for every identity, known or not,
        # so that both paths cost the same.
        fake = self._fake_credentials(group, identity)
        entry = self._store.lookup_srp(identity)
        if entry is not None:
            salt, verifier_bytes = entry
            verifier = int.from_bytes(verifier_bytes, "big")
            if (
                _srp.MIN_SALT_LEN <= len(salt) <= _srp.MAX_SALT_LEN
                and len(verifier_bytes) <= group.n_len
                and 0 < verifier < group.n
            ):
                return bytes(salt), verifier
        self._unknown = True  # no entry, or an unusable one: behave as unknown
        return fake

    def _fake_credentials(self, group: _srp.SrpGroup, identity: str) -> tuple[bytes, int]:
        """Deterministic salt and verifier for an unknown identity.

        No exponentiation is needed: v only ever appears masked inside
        B = k*v + g^b, so any value in [1, N) looks the same to the peer.
        """
        ident = identity.encode("utf-8")
        salt = hmac.new(
            self._secret, b"rserpool srp fake salt\x00" + ident, hashlib.sha256
        ).digest()[: _srp.DEFAULT_SALT_LEN]
        stream = b""
        counter = 0
        while len(stream) < group.n_len + 16:
            counter += 1
            stream += hmac.new(
                self._secret,
                b"rserpool srp fake verifier\x00" + counter.to_bytes(4, "big") + ident,
                hashlib.sha256,
            ).digest()
        verifier = int.from_bytes(stream, "big") % (group.n - 1) + 1
        return salt, verifier

    def _srp_proof(self, proof: SrpProof, now: float) -> tuple[ServerEvent, ...]:
        session, self._srp = self._srp, None
        assert session is not None
        if self._step_deadline is not None and now > self._step_deadline:
            return self._fail("challenge expired", FAIL_TIMEOUT)
        if not isinstance(proof.client_public, bytes) or not isinstance(
            proof.client_proof, bytes
        ):
            return self._close("malformed SRP proof", FAIL_PROTOCOL)
        try:
            m2 = session.verify_client(proof.client_public, proof.client_proof)
        except _srp.SrpError as exc:
            reason = "unknown identity" if self._unknown else f"SRP: {exc}"
            return self._fail(reason, FAIL_AUTHENTICATION)
        if self._unknown:  # cannot happen short of a hash collision
            return self._fail("unknown identity", FAIL_AUTHENTICATION)
        return self._succeed(m2, now)

    def _chap_response(self, response: ChapResponse, now: float) -> tuple[ServerEvent, ...]:
        server = self._chap
        assert server is not None
        if response.identifier != server.identifier:
            self._chap = None
            return self._fail("CHAP identifier mismatch", FAIL_AUTHENTICATION)
        try:
            request = server.response_received(response.response, now)
        except _chap.ChapError as exc:
            self._chap = None
            code = FAIL_TIMEOUT if "expired" in str(exc) else FAIL_AUTHENTICATION
            return self._fail(f"CHAP: {exc}", code)
        self._state = _CHAP_VERIFYING
        return (request,)

    # -- outcomes
    def _succeed(self, server_proof: bytes, now: float) -> tuple[ServerEvent, ...]:
        assert self._identity is not None and self._mechanism is not None
        self._state = _SUCCEEDED
        self._step_deadline = None
        if self._limiter is not None:
            self._limiter.refund(self._identity, now)
        return (
            Send(AuthSuccess(self._mechanism, server_proof)),
            AuthSucceeded(self._identity, self._mechanism),
        )

    def _fail(self, reason: str, code: int) -> tuple[ServerEvent, ...]:
        self._srp = None
        self._chap = None
        self._step_deadline = None
        if self._attempts >= self._max_attempts:
            return self._close(reason, code)
        self._state = _AWAIT_HELLO
        return (
            Send(AuthFailure(code, may_retry=True)),
            AuthFailed(reason, self._identity, self._mechanism, final=False),
        )

    def _close(self, reason: str, code: int) -> tuple[ServerEvent, ...]:
        self._srp = None
        self._chap = None
        self._step_deadline = None
        self._state = _CLOSED
        return (
            Send(AuthFailure(code, may_retry=False)),
            AuthFailed(reason, self._identity, self._mechanism, final=True),
        )


# ----------------------------------------------------------------- client

_C_AWAIT_OFFER = "await-offer"
_C_AWAIT_CHALLENGE = "await-challenge"
_C_AWAIT_RESULT = "await-result"
_C_DONE = "done"


class ClientExchange:
    """The client (PE) side: pick a mechanism, answer, check the result.

    ``secret`` is the password for SRP and the CHAP secret for CHAP.  For
    SRP the server's M2 is checked, so a server that does not hold the
    verifier is detected even if it says "success".
    """

    def __init__(
        self,
        identity: str,
        secret: str | bytes,
        channel_binding: bytes,
        *,
        preferences: tuple[str, ...] = DEFAULT_MECHANISMS,
    ) -> None:
        if len(channel_binding) != CHANNEL_BINDING_LEN:
            raise ValueError(f"channel binding must be {CHANNEL_BINDING_LEN} bytes")
        normalized = normalize_identity(identity)
        if normalized is None:
            raise ValueError("bad identity")
        self._identity = normalized
        self._secret = _srp.normalize_text(secret, _srp.MAX_PASSWORD_LEN, "secret")
        unknown = [m for m in preferences if m != MECH_CHAP_MD5 and m not in _srp.GROUPS]
        if unknown or not preferences:
            raise ValueError(f"bad mechanism preferences {preferences!r}")
        self._cb = bytes(channel_binding)
        self._preferences = tuple(preferences)
        self._offer: tuple[str, ...] | None = None
        self._mechanism: str | None = None
        self._srp: _srp.SrpClientSession | None = None
        self._state = _C_AWAIT_OFFER

    @property
    def state(self) -> str:
        return self._state

    def receive(self, message: object) -> tuple[ClientEvent, ...]:
        if isinstance(message, MechanismOffer) and self._state == _C_AWAIT_OFFER:
            offered = tuple(message.mechanisms)[:MAX_MECHANISMS]
            self._offer = offered
            return self._hello()
        if isinstance(message, SrpChallenge) and self._state == _C_AWAIT_CHALLENGE:
            if self._srp is None:
                return self._failed("SRP challenge for a CHAP exchange")
            try:
                a_pub, m1 = self._srp.process_challenge(message.salt, message.server_public)
            except (_srp.SrpError, TypeError) as exc:
                return self._failed(f"bad SRP challenge: {exc}")
            self._state = _C_AWAIT_RESULT
            return (Send(SrpProof(a_pub, m1)),)
        if isinstance(message, ChapChallenge) and self._state == _C_AWAIT_CHALLENGE:
            if self._mechanism != MECH_CHAP_MD5:
                return self._failed("CHAP challenge for an SRP exchange")
            try:
                response = _chap.ChapClient(self._secret, self._cb).respond(
                    message.identifier, message.nonce
                )
            except _chap.ChapError as exc:
                return self._failed(f"bad CHAP challenge: {exc}")
            self._state = _C_AWAIT_RESULT
            return (Send(ChapResponse(message.identifier, response)),)
        if isinstance(message, AuthSuccess) and self._state == _C_AWAIT_RESULT:
            return self._success(message)
        if isinstance(message, AuthFailure) and self._state in (
            _C_AWAIT_CHALLENGE, _C_AWAIT_RESULT,
        ):
            self._srp = None
            self._state = _C_DONE
            return (ClientFailed("server refused", message.code, message.may_retry),)
        return self._failed(f"unexpected {type(message).__name__} in state {self._state}")

    def retry(self) -> tuple[ClientEvent, ...]:
        """Start a new attempt after a failure the server allows to retry."""
        if self._state != _C_DONE or self._offer is None:
            raise RuntimeError("nothing to retry")
        return self._hello()

    def _hello(self) -> tuple[ClientEvent, ...]:
        assert self._offer is not None
        choice = next((m for m in self._preferences if m in self._offer), None)
        if choice is None:
            return self._failed("no common mechanism")
        self._mechanism = choice
        if choice == MECH_CHAP_MD5:
            self._srp = None
        else:
            group = _srp.GROUPS[choice]
            self._srp = _srp.SrpClientSession(group, self._identity, self._secret, self._cb)
        self._state = _C_AWAIT_CHALLENGE
        return (Send(ClientHello(choice, self._identity)),)

    def _success(self, message: AuthSuccess) -> tuple[ClientEvent, ...]:
        mechanism = self._mechanism
        self._state = _C_DONE
        if message.mechanism != mechanism:
            return self._failed("server confirmed another mechanism")
        if self._srp is not None:
            session, self._srp = self._srp, None
            try:
                session.verify_server(message.server_proof)
            except _srp.SrpError:
                return self._failed("server proof mismatch")
        elif message.server_proof:
            return self._failed("unexpected server proof for CHAP")
        assert mechanism is not None
        return (ClientAuthenticated(mechanism),)

    def _failed(self, reason: str) -> tuple[ClientEvent, ...]:
        self._srp = None
        self._state = _C_DONE
        return (ClientFailed(reason),)
