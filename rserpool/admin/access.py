"""Who may read the admin endpoint: the admin door of the registrar's security gate.

Every request is decided on its own, before anything else is looked at
(the path included):

1. A client certificate verified by TLS (the registrar's CAs and CRLs)
   names an identity exactly as on the ASAP door (the certificate's names,
   OCSP when the registrar checks it, the configured certificate mapping).
   The TLS connection is a channel of the gate's ``admin`` door
   (``rserpool.gate``, docs/gate.md): the gate opens it for that identity
   (or closes it: no identity), rate-limits requests per identity, and puts
   the action ``admin`` (pool handle empty) to the registrar's authorizer
   plugin, remembering the answer for the connection.  A rules file grants
   it with ``admin-name  admin  *``.  Default deny: no rule, no access.  A
   backend that cannot answer refuses (fail closed) and is counted as an
   outage.
2. Otherwise, when a bearer token file is configured, an
   ``Authorization: Bearer <token>`` header equal to it (compared in
   constant time) grants read access to ``token_scope``: ``metrics`` (only
   ``/metrics``, for Prometheus; the default) or ``all``.  The token names
   nobody, so it is checked here rather than by the gate.
3. Anything else is refused: 401 without credentials, 403 with credentials
   that do not grant this request, 429 when the gate's rate limit says so.

The token file must belong to root (or to the user the registrar runs as),
must not be a symbolic link, and must not be readable or writable by
others or writable by its group: the registrar refuses to start otherwise.
"""

from __future__ import annotations

import hmac
import os
import stat
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from twisted.internet import defer
from twisted.logger import Logger, LogLevel

from rserpool.gate import ACTION_ADMIN, DOOR_ADMIN, Gate, GatePolicy
from rserpool.identity import MECH_CERTIFICATE, Identity
from rserpool.security.certidentity import CertIdentityError
from rserpool.wire.codes import CAUSE_LACK_OF_RESOURCES, CAUSE_SECURITY
from rserpool.security.tls import peer_certificate

__all__ = ["ACTION_ADMIN", "AdminAccess", "Grant", "TokenError", "admin_gate", "certificate_identity_of",
           "load_token"]

_log = Logger()

SCOPE_ALL = "all"
SCOPE_METRICS = "metrics"
SCOPES = (SCOPE_METRICS, SCOPE_ALL)
MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 4096


class TokenError(ValueError):
    """The bearer token file is unsafe or unusable."""


def load_token(path: str) -> bytes:
    """The token in ``path`` (its first line, stripped), after checking the file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise TokenError(f"{path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TokenError(f"{path}: not a regular file")
        if info.st_uid not in (0, os.geteuid()):
            raise TokenError(f"{path}: must belong to root (or to the registrar's user), not uid {info.st_uid}")
        if info.st_mode & (stat.S_IRWXO | stat.S_IWGRP):
            raise TokenError(f"{path}: mode {stat.S_IMODE(info.st_mode):04o} lets others read or change it "
                             "(use 0600 or 0640)")
        data = os.read(fd, MAX_TOKEN_LENGTH + 2)
    finally:
        os.close(fd)
    lines = data.splitlines()
    token = lines[0].strip() if lines else b""
    if len(data) > MAX_TOKEN_LENGTH + 1 or len(token) > MAX_TOKEN_LENGTH:
        raise TokenError(f"{path}: the token is longer than {MAX_TOKEN_LENGTH} bytes")
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokenError(f"{path}: the token must be at least {MIN_TOKEN_LENGTH} characters")
    if any(c < 0x21 or c > 0x7E for c in token):
        raise TokenError(f"{path}: the token must be printable ASCII without spaces")
    return token


@dataclass(frozen=True, slots=True)
class Grant:
    """The outcome of one admission: ``status`` 200 when allowed, else 401 or 403."""

    allowed: bool
    status: int
    who: str  # an identity name, "bearer token" or "anonymous"; never a secret
    scope: str = SCOPE_ALL
    reason: str = ""

    def covers(self, path: str) -> bool:
        return self.allowed and (self.scope == SCOPE_ALL or path == "/metrics")


class AdminAccess:
    """Admission for the admin door (see the module docstring), through the
    registrar's security gate (``rserpool.gate``, door ``admin``).

    Each TLS connection is one gate channel: at its first request the
    client certificate's holder is named by ``identity_of(cert, transport)
    -> str | None`` (maybe a Deferred; the registrar's own derivation, with
    OCSP when it checks it), with ``groups_of(identity)`` (maybe a
    Deferred), and reported to the gate, which opens the channel or closes
    it (no identity).  Every request is then put to the gate for the action
    ``admin``; when it asks, ``authorizer.authorize(identity, groups,
    "admin", b"")`` answers (True allows; anything else refuses; an
    exception is an outage: refused, reported to ``on_outage``).  The
    bearer token is checked here, outside the gate (it names nobody).
    """

    def __init__(self, *, authorizer: Any, identity_of: Callable[[Any, Any], Any], gate: Gate,
                 clock: Any, groups_of: Callable[[str], Iterable[str] | defer.Deferred] | None = None,
                 token: bytes | None = None, token_scope: str = SCOPE_METRICS,
                 on_outage: Callable[[], None] | None = None) -> None:
        if token_scope not in SCOPES:
            raise ValueError(f"token scope must be one of {', '.join(SCOPES)}")
        self.authorizer = authorizer
        self.identity_of = identity_of
        self.gate = gate
        self.clock = clock
        self.groups_of = groups_of or (lambda identity: ())
        self._token = token
        self.token_scope = token_scope
        self._on_outage = on_outage or (lambda: None)

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def admit(self, channel: Any, transport: Any, address: str, authorization: bytes | None) -> defer.Deferred:
        """A Deferred firing with the :class:`Grant` for a request that came
        on ``channel`` (which keeps its gate admission in ``admission``) over
        ``transport`` from ``address`` with this ``Authorization`` header."""
        try:
            cert = peer_certificate(transport)
        except Exception:  # not TLS, or the handshake is not done: no certificate
            cert = None
        if cert is None:
            return defer.succeed(self._by_token(authorization, None))
        admission = getattr(channel, "admission", None)
        if admission is None:
            admission = self.gate.open_channel(DOOR_ADMIN, address, True, self.clock.seconds(), channel=channel)
            if admission is None:  # the gate's connection limits (logged there)
                return defer.succeed(Grant(False, 503, "anonymous", reason="too many connections"))
            channel.admission = admission
            d = defer.maybeDeferred(self.identity_of, cert, transport)
            d.addCallback(self._with_groups)
            d.addCallbacks(self._identified, self._identity_failed, callbackArgs=(admission,),
                           errbackArgs=(admission,))
        else:
            d = defer.succeed(None)
        d.addCallback(lambda _: self._ask_gate(admission))
        d.addCallback(self._or_token, authorization)
        return d

    def channel_closed(self, channel: Any) -> None:
        admission = getattr(channel, "admission", None)
        if admission is not None:
            self.gate.channel_closed(admission)

    def _with_groups(self, found: Identity | str | None) -> Any:
        if found is None or isinstance(found, Identity):
            return found  # an Identity: the registrar's checkers named it, with its groups
        d = defer.maybeDeferred(self.groups_of, found)
        return d.addCallback(lambda groups: Identity.create(found, MECH_CERTIFICATE, groups or ()))

    def _identified(self, identity: Identity | None, admission: Any) -> None:
        self.gate.identified(admission, identity, self.clock.seconds())

    def _identity_failed(self, failure: Any, admission: Any) -> None:
        if failure.check(CertIdentityError):
            self.gate.identified(admission, None, self.clock.seconds())
            return
        self._on_outage()
        _log.error("admin access: the certificate check failed: {error}; refusing",
                   error=failure.getErrorMessage())
        self.gate.identification_refused(admission, "certificate check failed", self.clock.seconds())

    def _ask_gate(self, admission: Any) -> Any:
        decision = self.gate.admit(admission, ACTION_ADMIN, b"", self.clock.seconds())
        if decision is None:
            return Grant(True, 200, admission.identity)
        if isinstance(decision, int):
            return self._refused(admission, decision)
        ask = decision
        d = defer.maybeDeferred(self.authorizer.authorize, ask.identity, ask.groups, ask.action, ask.pool_handle)
        d.addCallbacks(self._answered, self._authorizer_failed, callbackArgs=(ask,), errbackArgs=(ask,))
        return d

    def _answered(self, allowed: Any, ask: Any) -> Grant:
        cause = self.gate.authorization_answered(ask, allowed is True, self.clock.seconds())
        return Grant(True, 200, ask.admission.identity) if cause is None else self._refused(ask.admission, cause)

    def _authorizer_failed(self, failure: Any, ask: Any) -> Grant:
        self._on_outage()
        cause = self.gate.authorization_answered(ask, None, self.clock.seconds(), failure.getErrorMessage())
        return self._refused(ask.admission, cause if cause is not None else CAUSE_SECURITY)

    @staticmethod
    def _refused(admission: Any, cause: int) -> Grant:
        who = admission.identity or "anonymous"
        if cause == CAUSE_LACK_OF_RESOURCES:
            return Grant(False, 429, who, reason="rate limited")
        return Grant(False, 403, who, reason=f"refused by the gate (cause 0x{cause & 0xffff:x})")

    def _or_token(self, grant: Grant, authorization: bytes | None) -> Grant:
        if grant.allowed:
            return grant
        by_token = self._by_token(authorization, grant)
        return by_token if by_token.allowed else grant

    def _by_token(self, authorization: bytes | None, refused: Grant | None) -> Grant:
        token = self._token
        if authorization is not None:
            scheme, _, value = authorization.strip().partition(b" ")
            if token is not None and scheme.lower() == b"bearer" and hmac.compare_digest(value.strip(), token):
                return Grant(True, 200, "bearer token", self.token_scope)
            return refused or Grant(False, 403, "anonymous", reason="credentials not accepted")
        return refused or Grant(False, 401, "anonymous", reason="no client certificate or token")


def certificate_identity_of(registrar: Any) -> Callable[[Any, Any], Any]:
    """``identity_of`` for :class:`AdminAccess` that names a certificate's
    holder exactly as ``registrar`` (a ``RegistrarService``) does on the
    ASAP door (``RegistrarService.certificate_identity``): the OCSP check when
    the registrar's is on (a revoked certificate names nobody), then the
    registrar's certificate authenticator (its mapping, its groups).  (CRLs
    are checked in the handshake.)"""

    def identity_of(cert: Any, transport: Any = None) -> Any:
        return registrar.certificate_identity(cert, transport)

    return identity_of


def _gate_log(level: str, fmt: str, **fields: Any) -> None:
    _log.emit(LogLevel.levelWithName(level), fmt, **fields)


def admin_gate(registrar: Any) -> Gate:
    """The registrar's gate when it has one (``registrar.gate``), else a gate
    of the admin door's own with the default (secure) policy."""
    gate = getattr(registrar, "gate", None)
    return gate if isinstance(gate, Gate) else Gate(GatePolicy(), log=_gate_log)
