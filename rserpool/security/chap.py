"""CHAP (RFC 1994) inside a server-authenticated TLS session, bound to it.

Pure: no Twisted, no sockets, no clock (``now`` is passed in).

RFC 1994: ``response = MD5(identifier || secret || challenge)``.  Here the
server sends a fresh random ``nonce``; the CHAP challenge both sides use is

    challenge = HMAC-SHA256(key=cb, msg=b"rserpool CHAP challenge" || nonce)[:16]

where ``cb`` is the 32-byte TLS exporter value of the session (label
``rserpool.security.exchange.EXPORTER_LABEL``).  The result is an ordinary 16-byte
CHAP challenge, so a RADIUS server verifies ``CHAP-Password = ident ||
response`` against ``CHAP-Challenge = challenge`` as usual, while a response
recorded in (or relayed from) another TLS session answers a different
challenge and fails.

The verification itself is delegated: :meth:`ChapServer.response_received`
returns the :class:`ChapCredentials` (twisted.cred credentials, see
:mod:`rserpool.security.credentials`) that a checker verifies, locally (with
:func:`verify_locally`) or through RADIUS; the answer goes back in with
:meth:`ChapServer.verification_result`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = [
    "CHALLENGE_LEN",
    "CHANNEL_BINDING_LEN",
    "ChapClient",
    "ChapCredentials",
    "ChapError",
    "ChapServer",
    "ChapVerdict",
    "DEFAULT_LIFETIME",
    "NONCE_LEN",
    "RESPONSE_LEN",
    "chap_response",
    "effective_challenge",
    "verify_locally",
]

CHANNEL_BINDING_LEN = 32
NONCE_LEN = 32
CHALLENGE_LEN = 16
RESPONSE_LEN = 16
#: Seconds a challenge stays valid.
DEFAULT_LIFETIME = 30.0
MAX_SECRET_LEN = 1024
_CHALLENGE_LABEL = b"rserpool CHAP challenge"


class ChapError(ValueError):
    """CHAP misuse or a malformed value."""


def chap_response(identifier: int, secret: bytes, challenge: bytes) -> bytes:
    """RFC 1994 section 4.1: MD5(Identifier || secret || Challenge)."""
    if not 0 <= identifier <= 255:
        raise ChapError("CHAP identifier must be one byte")
    return hashlib.md5(bytes((identifier,)) + secret + challenge).digest()


def effective_challenge(channel_binding: bytes, nonce: bytes) -> bytes:
    """The 16-byte CHAP challenge bound to this TLS channel."""
    if len(channel_binding) != CHANNEL_BINDING_LEN:
        raise ChapError(f"channel binding must be {CHANNEL_BINDING_LEN} bytes")
    if len(nonce) != NONCE_LEN:
        raise ChapError(f"nonce must be {NONCE_LEN} bytes")
    mac = hmac.new(channel_binding, _CHALLENGE_LABEL + nonce, hashlib.sha256)
    return mac.digest()[:CHALLENGE_LEN]


@dataclass(frozen=True, slots=True)
class ChapCredentials:
    """A CHAP response to check (locally or by RADIUS): the credentials a
    ``ChapChecker`` verifies (``IChapCredentials``).

    ``challenge`` is the effective challenge (RADIUS CHAP-Challenge);
    ``identifier`` and ``response`` form CHAP-Password (ident || response).
    """

    identity: str
    identifier: int
    challenge: bytes
    response: bytes

    def __repr__(self) -> str:  # never the response
        return f"ChapCredentials({self.identity!r})"


@dataclass(frozen=True, slots=True)
class ChapVerdict:
    """The answer to a :class:`ChapCredentials`; ``reason`` is for the log only."""

    ok: bool
    reason: str = ""


_DUMMY_SECRET = b"\x00" * 16


def verify_locally(secret: bytes | None, request: ChapCredentials) -> ChapVerdict:
    """Check a :class:`ChapCredentials` against a locally stored secret.

    ``secret`` None (unknown identity) costs the same MD5 and compare as a
    wrong secret and gives the same ``ok=False``; only ``reason`` differs.
    """
    expected = chap_response(
        request.identifier,
        _DUMMY_SECRET if secret is None else secret,
        request.challenge,
    )
    match = hmac.compare_digest(expected, request.response)
    if secret is None:
        return ChapVerdict(False, "unknown identity")
    if not match:
        return ChapVerdict(False, "wrong CHAP response")
    return ChapVerdict(True, "")


class ChapServer:
    """One CHAP challenge: issued once, answered once, within its lifetime."""

    __slots__ = (
        "identity", "identifier", "nonce", "challenge", "_expires", "_state",
    )

    def __init__(
        self,
        identity: str,
        channel_binding: bytes,
        now: float,
        *,
        lifetime: float = DEFAULT_LIFETIME,
        nonce: bytes | None = None,
        identifier: int | None = None,
    ) -> None:
        self.identity = identity
        self.nonce = secrets.token_bytes(NONCE_LEN) if nonce is None else nonce
        self.identifier = secrets.randbelow(256) if identifier is None else identifier
        if not 0 <= self.identifier <= 255:
            raise ChapError("CHAP identifier must be one byte")
        self.challenge = effective_challenge(channel_binding, self.nonce)
        self._expires = now + lifetime
        self._state = "issued"

    @property
    def state(self) -> str:
        """``issued``, ``verifying``, ``succeeded`` or ``failed``."""
        return self._state

    def response_received(self, response: bytes, now: float) -> ChapCredentials:
        """Consume the challenge; return the check to perform.

        Raises ChapError if the challenge was already used (replay), has
        expired, or the response is malformed; the challenge is consumed in
        every case.
        """
        if self._state != "issued":
            raise ChapError("challenge already used")
        self._state = "failed"
        if now > self._expires:
            raise ChapError("challenge expired")
        if len(response) != RESPONSE_LEN:
            raise ChapError(f"CHAP response must be {RESPONSE_LEN} bytes")
        self._state = "verifying"
        return ChapCredentials(self.identity, self.identifier, self.challenge, bytes(response))

    def verification_result(self, ok: bool) -> bool:
        """Record the verdict of the delegated check; return it."""
        if self._state != "verifying":
            raise ChapError("no verification pending")
        self._state = "succeeded" if ok else "failed"
        return ok


class ChapClient:
    """The client's side: answer the server's (identifier, nonce) once."""

    __slots__ = ("_secret", "_channel_binding", "_used")

    def __init__(self, secret: bytes, channel_binding: bytes) -> None:
        if len(secret) > MAX_SECRET_LEN:
            raise ChapError("CHAP secret too long")
        if len(channel_binding) != CHANNEL_BINDING_LEN:
            raise ChapError(f"channel binding must be {CHANNEL_BINDING_LEN} bytes")
        self._secret = secret
        self._channel_binding = channel_binding
        self._used = False

    def respond(self, identifier: int, nonce: bytes) -> bytes:
        if self._used:
            raise ChapError("CHAP client already answered")
        self._used = True
        challenge = effective_challenge(self._channel_binding, nonce)
        response = chap_response(identifier, self._secret, challenge)
        self._secret = b""
        return response
