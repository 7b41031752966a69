"""Who may read the admin endpoint: the admission decision for the admin door.

Every request is decided on its own, before anything else is looked at
(the path included):

1. A client certificate verified by TLS (the registrar's CAs and CRLs)
   names an identity exactly as on the ASAP door (the certificate's names,
   or the configured certificate mapping; OCSP when the registrar checks
   it).  That identity, with its groups, is put to the registrar's
   authorizer plugin for the action ``admin`` (pool handle empty; a rules
   file grants it with ``admin-name  admin  *``).  Default deny: no rule,
   no access.  A backend that cannot answer refuses (fail closed) and is
   counted as an outage.
2. Otherwise, when a bearer token file is configured, an
   ``Authorization: Bearer <token>`` header equal to it (compared in
   constant time) grants read access to ``token_scope``: ``metrics`` (only
   ``/metrics``, for Prometheus; the default) or ``all``.
3. Anything else is refused: 401 without credentials, 403 with credentials
   that do not grant this request.

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
from twisted.logger import Logger

from rserpool.security.certidentity import CertIdentityError
from rserpool.security.revocation import verified_chain
from rserpool.security.tls import peer_certificate

__all__ = ["ACTION_ADMIN", "AdminAccess", "Grant", "TokenError", "certificate_identity_of", "load_token"]

_log = Logger()

ACTION_ADMIN = "admin"
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
    """Admission for the admin door (see the module docstring).

    ``identity_of(cert, transport) -> Deferred[str | None]`` names a
    verified client certificate's holder (None: nobody; the registrar's own
    derivation, with OCSP when it checks it);
    ``groups_of(identity)`` its groups (maybe a Deferred);
    ``authorizer.authorize(identity, groups, "admin", b"")`` decides.
    """

    def __init__(self, *, authorizer: Any, identity_of: Callable[[Any], Any],
                 groups_of: Callable[[str], Iterable[str] | defer.Deferred] | None = None,
                 token: bytes | None = None, token_scope: str = SCOPE_METRICS,
                 on_outage: Callable[[], None] | None = None) -> None:
        if token_scope not in SCOPES:
            raise ValueError(f"token scope must be one of {', '.join(SCOPES)}")
        self.authorizer = authorizer
        self.identity_of = identity_of
        self.groups_of = groups_of or (lambda identity: ())
        self._token = token
        self.token_scope = token_scope
        self._on_outage = on_outage or (lambda: None)

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def admit(self, transport: Any, authorization: bytes | None) -> defer.Deferred:
        """A Deferred firing with the :class:`Grant` for a request that came
        over ``transport`` with this ``Authorization`` header (or None)."""
        try:
            cert = peer_certificate(transport)
        except Exception:  # not TLS, or the handshake is not done: no certificate
            cert = None
        if cert is None:
            return defer.succeed(self._by_token(authorization, None))
        d = defer.maybeDeferred(self.identity_of, cert, transport)
        d.addCallback(self._authorize_identity)
        d.addErrback(self._identity_failed)
        d.addCallback(self._or_token, authorization)
        return d

    def _authorize_identity(self, identity: str | None) -> Grant:
        if identity is None:
            return Grant(False, 403, "anonymous", reason="the certificate names no identity")
        d = defer.maybeDeferred(self.groups_of, identity)
        d.addCallback(lambda groups: self.authorizer.authorize(identity, frozenset(groups or ()),
                                                               ACTION_ADMIN, b""))
        d.addCallback(lambda allowed: Grant(True, 200, identity) if allowed is True
                      else Grant(False, 403, identity, reason="not authorized for admin"))
        d.addErrback(self._authorizer_failed, identity)
        return d

    def _authorizer_failed(self, failure: Any, identity: str) -> Grant:
        self._on_outage()
        _log.error("admin access: the authorizer could not decide for {identity}: {error}; refusing",
                   identity=identity, error=failure.getErrorMessage())
        return Grant(False, 403, identity, reason="authorization backend unavailable")

    def _identity_failed(self, failure: Any) -> Grant:
        if not failure.check(CertIdentityError):
            self._on_outage()
            _log.error("admin access: the certificate check failed: {error}; refusing",
                       error=failure.getErrorMessage())
        return Grant(False, 403, "anonymous", reason="the certificate yields no identity")

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
    ASAP door: the certificate's own names under its identity policy, the
    OCSP check when the registrar's revocation gate is on (a revoked
    certificate names nobody), then its certificate mapping when one is
    configured.  (CRLs are checked in the handshake.)"""

    def identity_of(cert: Any, transport: Any = None) -> Any:
        identity = registrar._certificate_identity(cert)
        gate = registrar.revocation
        gated = gate is not None and gate.enabled and transport is not None
        if registrar.certificate_mapping is None and not gated:
            return identity
        chain = verified_chain(transport) if gated else None
        d = registrar._check_certificate(cert, chain, identity)
        return d.addCallback(_checked)

    return identity_of


def _checked(result: tuple) -> str | None:
    allowed, reason, identity = result
    if not allowed:
        _log.warn("admin access: certificate of {identity} refused: {reason}", identity=identity, reason=reason)
        return None
    return identity
