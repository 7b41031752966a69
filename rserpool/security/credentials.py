"""twisted.cred credentials and checkers: how the registrar learns who a peer is.

Four ways to prove who you are (threats draft section 3.1, RFC 5355), each a
credentials class made where the proof happens and a checker that verifies
it (the contracts are in :mod:`rserpool.interfaces`):

==========================================  =========================  ============================
credentials (made by)                       checker                    asks
==========================================  =========================  ============================
:class:`CertificateCredentials` (TLS)       :class:`CertificateChecker`  an ``ICertificateMapping``, then the certificate's own names
:class:`PskCredentials` (TLS-PSK)           :class:`PskChecker`        nothing (TLS verified the key)
``SrpCredentials`` (``security.srp``,       :class:`SrpChecker`        an ``ISrpVerifierStore``
the SRP exchange)
``ChapCredentials`` (``security.chap``,     :class:`ChapChecker`       an ``IChapVerifier`` or ``IChapSecretStore``
the CHAP exchange)
==========================================  =========================  ============================

Every checker provides :class:`~twisted.cred.checkers.ICredentialsChecker`
(``requestAvatarId`` fires with the identity *name*) and
:class:`~rserpool.interfaces.IIdentityChecker` (``check(credentials)``
fires with the whole :class:`~rserpool.identity.Identity`: mechanism,
groups from an optional ``IGroupSource``, attributes).  SRP's exchange
has two steps: :class:`SrpChecker` also provides
:class:`~rserpool.interfaces.ISrpChecker`, whose ``challenge`` issues the
salt and B, and the final proof comes back as ``SrpCredentials`` to
``requestAvatarId``/``check`` (docs/auth-exchanges.md).  Results:

- bad credentials, an unknown identity (indistinguishable from a wrong
  secret), a certificate without a usable name:
  :class:`twisted.cred.error.UnauthorizedLogin`;
- a backend that cannot answer, or fails in any unexpected way:
  :class:`rserpool.errors.BackendUnavailable` (fail closed, logged as an
  outage, never counted as the peer's wrong secret).

:class:`Authenticator` is the facade the registrar calls: it picks the
checker for the credentials' interface.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import crypto
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import classImplements, implementer

from rserpool.errors import BackendUnavailable
from rserpool.identity import MECH_CERTIFICATE, MECH_CHAP, MECH_PSK, Identity, normalize_identity
from rserpool.interfaces import (
    ICertificateCredentials,
    ICertificateMapping,
    IChapCredentials,
    IChapSecretStore,
    IChapVerifier,
    IGroupSource,
    IIdentityChecker,
    IPskCredentials,
    ISrpChecker,
    ISrpCredentials,
    ISrpVerifierStore,
)
from rserpool.security import _internals
from rserpool.security import chap as _chap
from rserpool.security import srp as _srp
from rserpool.security.certidentity import (
    DEFAULT_POLICY,
    CertIdentityError,
    IdentityPolicy,
    identity_from_certificate,
)
from rserpool.security.chap import ChapCredentials
from rserpool.security.srp import SrpChallenge, SrpCredentials

__all__ = [
    "Authenticator",
    "CertificateChecker",
    "CertificateCredentials",
    "ChapChecker",
    "PskChecker",
    "PskCredentials",
    "SrpChecker",
]

_log = Logger()

_REFUSED = "bad credentials"  # the only text a refusal carries
#: Client certificates whose identity a CertificateChecker remembers (oldest dropped first).
_CERTIFICATE_NAMES_CACHED = 4096

# The exchanges (pure modules) make these; they are twisted.cred credentials.
classImplements(ChapCredentials, IChapCredentials)
classImplements(SrpCredentials, ISrpCredentials)


# ------------------------------------------------------------ credentials


@implementer(ICertificateCredentials)
class CertificateCredentials:
    """A client certificate TLS has verified (chain, validity, CRLs).

    Made from a ``cryptography`` certificate, or with :meth:`from_x509` from
    the pyOpenSSL one a TLS connection gives (then ``certificate`` is
    converted only when a checker needs it)."""

    __slots__ = ("_certificate", "_x509", "_der", "_sha256", "policy")

    def __init__(self, certificate: x509.Certificate | None, policy: IdentityPolicy = DEFAULT_POLICY, *,
                 x509_certificate: crypto.X509 | None = None) -> None:
        if certificate is None and x509_certificate is None:
            raise ValueError("a certificate is needed")
        self._certificate = certificate
        self._x509 = x509_certificate
        self._der: bytes | None = None
        self._sha256: bytes | None = None
        self.policy = policy

    @classmethod
    def from_x509(cls, certificate: crypto.X509, policy: IdentityPolicy = DEFAULT_POLICY) -> "CertificateCredentials":
        return cls(None, policy, x509_certificate=certificate)

    @property
    def certificate(self) -> x509.Certificate:
        if self._certificate is None:
            assert self._x509 is not None
            self._certificate = self._x509.to_cryptography()
        return self._certificate

    @property
    def der(self) -> bytes:
        if self._der is None:
            if self._x509 is not None:
                self._der = crypto.dump_certificate(crypto.FILETYPE_ASN1, self._x509)
            else:
                self._der = self.certificate.public_bytes(Encoding.DER)
        return self._der

    @property
    def sha256(self) -> bytes:
        """SHA-256 of the DER certificate (from OpenSSL for a pyOpenSSL
        certificate, without copying the DER into Python)."""
        if self._sha256 is None:
            if self._x509 is not None and self._der is None:
                self._sha256 = _internals.certificate_sha256(self._x509)
            else:
                self._sha256 = hashlib.sha256(self.der).digest()
        return self._sha256

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER certificate, lower-case hex."""
        return self.sha256.hex()


@implementer(IPskCredentials)
class PskCredentials:
    """A TLS-PSK identity whose key the handshake proved."""

    __slots__ = ("identity",)

    def __init__(self, identity: str) -> None:
        self.identity = identity


# ------------------------------------------------------------- checkers


def _as_outage(failure: Failure, what: str) -> Failure:
    """Keep refusals and outages; anything else from a backend is an outage."""
    if failure.check(UnauthorizedLogin, BackendUnavailable):
        return failure
    _log.failure("{what} failed unexpectedly; treating it as unavailable", failure, what=what)
    error = BackendUnavailable(f"{what} failed: {failure.getErrorMessage()}")
    error.__cause__ = failure.value
    return Failure(error)


def _shown(identity: object) -> str:
    """An identity as a log line shows it: as is when it is printable text,
    else quoted and escaped (a malformed name must not forge a line)."""
    if isinstance(identity, str) and identity.isprintable() and identity.strip() == identity and identity:
        return identity
    return ascii(identity)


def _refuse(identity: object, mechanism: str, reason: str) -> Failure:
    _log.info("authentication refused for {identity} ({mechanism}): {reason}",
              identity=_shown(identity), mechanism=mechanism, reason=reason)
    return Failure(UnauthorizedLogin(_REFUSED))


def _call(method: Any, *args: Any) -> defer.Deferred[Any]:
    return defer.maybeDeferred(method, *args)


class _Checker:
    """Shared plumbing: groups, ``check`` -> ``requestAvatarId``."""

    credentialInterfaces: tuple[type, ...] = ()

    def __init__(self, groups: IGroupSource | None = None) -> None:
        if groups is not None and not IGroupSource.providedBy(groups):
            raise TypeError(f"{groups!r} does not provide IGroupSource")
        self.group_source = groups

    def check(self, credentials: Any) -> defer.Deferred[Identity]:
        if self.group_source is None:
            # The common case, without Deferred plumbing when the answer is
            # there at once (an exception still becomes an outage).
            try:
                result = self._check(credentials)
            except Exception:
                return defer.fail().addErrback(_as_outage, type(self).__name__)
            if type(result) is Identity:
                return defer.succeed(result)
            if not isinstance(result, defer.Deferred):
                result = defer.fail(result) if isinstance(result, Failure) else defer.succeed(result)
            return result.addErrback(_as_outage, type(self).__name__)
        d = defer.maybeDeferred(self._check, credentials)
        d.addCallback(self._add_groups)
        return d.addErrback(_as_outage, type(self).__name__)

    def _check(self, credentials: Any) -> defer.Deferred[Identity] | Identity:
        raise NotImplementedError

    def _add_groups(self, identity: Identity) -> defer.Deferred[Identity] | Identity:
        if self.group_source is None:
            return identity
        d = _call(self.group_source.groups, identity.name)
        return d.addCallback(lambda groups: identity.with_groups(groups or ()))

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[str]:  # noqa: N802 (twisted.cred)
        return self.check(credentials).addCallback(lambda identity: identity.name)


@implementer(ICredentialsChecker, IIdentityChecker)
class CertificateChecker(_Checker):
    """Identity of a verified client certificate (scenario A).

    ``mapping`` (a file store, LDAP) is asked first; when it does not know
    the certificate and ``use_certificate_names`` is true, the name comes
    from the certificate itself under the credentials' ``IdentityPolicy``
    (URI/DNS/email SAN, CN), remembered by the certificate's DER bytes.
    """

    credentialInterfaces = (ICertificateCredentials,)

    def __init__(self, mapping: ICertificateMapping | None = None, groups: IGroupSource | None = None,
                 *, use_certificate_names: bool = True) -> None:
        super().__init__(groups)
        if mapping is not None and not ICertificateMapping.providedBy(mapping):
            raise TypeError(f"{mapping!r} does not provide ICertificateMapping")
        self.mapping = mapping
        self.use_certificate_names = use_certificate_names
        # SHA-256 of the DER -> (policy, Identity): a pure function of the
        # two, so a bounded cache skips re-deriving it for every new channel
        # of the same PE.
        self.names: dict[bytes, tuple[IdentityPolicy, Identity]] = {}

    def _check(self, credentials: ICertificateCredentials) -> Any:
        if self.mapping is None:
            return self._from_names(None, credentials)
        d = _call(self.mapping.identity_for, credentials.certificate)
        return d.addCallback(self._from_names, credentials)

    def _from_names(self, mapped: Identity | None, credentials: ICertificateCredentials) -> Any:
        if mapped is not None:
            return Identity(mapped.name, MECH_CERTIFICATE, mapped.groups, {
                **mapped.attributes, "fingerprint_sha256": (credentials.fingerprint,)})
        if not self.use_certificate_names:
            return _refuse(credentials.certificate.subject.rfc4514_string(), MECH_CERTIFICATE,
                           "certificate not in the mapping")
        key = credentials.sha256 if isinstance(credentials, CertificateCredentials) else \
            hashlib.sha256(credentials.der).digest()
        known = self.names.get(key)
        if known is not None and known[0] is credentials.policy:
            return known[1]
        try:
            found = identity_from_certificate(credentials.certificate, credentials.policy)
        except CertIdentityError as exc:
            return _refuse(credentials.certificate.subject.rfc4514_string(), MECH_CERTIFICATE, str(exc))
        identity = Identity.create(found.name, MECH_CERTIFICATE, (), {
            "fingerprint_sha256": found.fingerprint_sha256,
            "subject": found.subject,
            "issuer": found.issuer,
            "serial": str(credentials.certificate.serial_number),
            "source": found.source.value,
        })
        if len(self.names) >= _CERTIFICATE_NAMES_CACHED:
            del self.names[next(iter(self.names))]
        self.names[key] = (credentials.policy, identity)
        return identity


@implementer(ICredentialsChecker, IIdentityChecker)
class PskChecker(_Checker):
    """TLS-PSK: the handshake proved the key, so only the identity's form is
    checked (and its groups looked up)."""

    credentialInterfaces = (IPskCredentials,)

    def _check(self, credentials: IPskCredentials) -> Any:
        name = normalize_identity(credentials.identity)
        if name is None:
            return _refuse(credentials.identity, MECH_PSK, "malformed PSK identity")
        return Identity.create(name, MECH_PSK)


@implementer(ICredentialsChecker, IIdentityChecker)
class ChapChecker(_Checker):
    """CHAP responses, checked by an :class:`IChapVerifier` (RADIUS) or
    against an :class:`IChapSecretStore` in constant time.  An unknown
    identity and a wrong response give the same refusal.

    Challenges are made single-use by :class:`rserpool.security.chap.ChapServer`;
    this checker only judges one response.
    """

    credentialInterfaces = (IChapCredentials,)

    def __init__(self, backend: IChapVerifier | IChapSecretStore, groups: IGroupSource | None = None) -> None:
        super().__init__(groups)
        if not (IChapVerifier.providedBy(backend) or IChapSecretStore.providedBy(backend)):
            raise TypeError(f"{backend!r} provides neither IChapVerifier nor IChapSecretStore")
        self.backend = backend

    def _check(self, credentials: IChapCredentials) -> Any:
        name = normalize_identity(credentials.identity)
        if name is None:
            return _refuse(credentials.identity, MECH_CHAP, "malformed identity")
        request = ChapCredentials(name, credentials.identifier, bytes(credentials.challenge),
                                  bytes(credentials.response))
        if not 0 <= request.identifier <= 255 or len(request.response) != _chap.RESPONSE_LEN:
            return _refuse(name, MECH_CHAP, "malformed response")
        if IChapVerifier.providedBy(self.backend):
            d = _call(self.backend.verify_chap, name, request.identifier, request.challenge,
                      request.response)
            return d.addCallback(self._verified, name)
        d = _call(self.backend.chap_secret, name)
        return d.addCallback(self._compare, request)

    def _verified(self, identity: Identity | None, name: str) -> Any:
        if identity is None:
            return _refuse(name, MECH_CHAP, "rejected by the verifier")
        if identity.name != name:
            return _refuse(name, MECH_CHAP, f"verifier answered for {identity.name!r}")
        return identity.with_mechanism(MECH_CHAP)

    def _compare(self, secret: bytes | None, request: ChapCredentials) -> Any:
        verdict = _chap.verify_locally(secret, request)
        if not verdict.ok:
            return _refuse(request.identity, MECH_CHAP, verdict.reason)
        return Identity.create(request.identity, MECH_CHAP)


@implementer(ICredentialsChecker, IIdentityChecker, ISrpChecker)
class SrpChecker(_Checker):
    """SRP-6a against an :class:`ISrpVerifierStore`, in two steps::

        challenge = yield checker.challenge(identity, channel_binding)
        # send challenge.salt, challenge.server_public; receive A, M1
        identity = yield checker.check(SrpCredentials(challenge, A, M1))
        # the credentials' server_proof is M2

    An unknown identity gets a deterministic fake salt and verifier derived
    from ``server_secret`` (the same on every attempt), so it cannot be told
    apart from a wrong password.
    """

    credentialInterfaces = (ISrpCredentials,)

    def __init__(self, store: ISrpVerifierStore, server_secret: bytes,
                 groups: IGroupSource | None = None, group: _srp.SrpGroup = _srp.DEFAULT_GROUP) -> None:
        super().__init__(groups)
        if not ISrpVerifierStore.providedBy(store):
            raise TypeError(f"{store!r} does not provide ISrpVerifierStore")
        if len(server_secret) < 16:
            raise ValueError("server_secret must be at least 16 bytes")
        self.store = store
        self.group = group
        self._secret = bytes(server_secret)

    def challenge(self, identity: str, channel_binding: bytes) -> defer.Deferred[SrpChallenge]:
        """Look the verifier up and start a single-use server session.
        Fails with UnauthorizedLogin for a malformed identity and with
        BackendUnavailable when the store cannot answer."""
        name = normalize_identity(identity)
        if name is None:
            return defer.fail(_refuse(identity, self.group.name, "malformed identity"))
        d = _call(self.store.srp_verifier, name)
        d.addCallback(self._start, name, bytes(channel_binding))
        return d.addErrback(_as_outage, "SRP verifier store")

    def _start(self, entry: tuple[bytes, bytes] | None, name: str, binding: bytes) -> SrpChallenge:
        # The fake credentials are derived for every identity, known or not,
        # so that both paths cost the same.
        salt, verifier = self._fake(name)
        known = False
        if entry is not None:
            salt_in, verifier_bytes = entry
            value = int.from_bytes(verifier_bytes, "big")
            if (_srp.MIN_SALT_LEN <= len(salt_in) <= _srp.MAX_SALT_LEN and len(verifier_bytes) <= self.group.n_len
                    and 0 < value < self.group.n):
                salt, verifier, known = bytes(salt_in), value, True
            else:
                _log.warn("unusable SRP verifier stored for {identity}; treated as unknown", identity=_shown(name))
        run = _srp.SrpServerRun(self.group, name.encode("utf-8"), salt, verifier, binding)
        return SrpChallenge(name, run, known)

    def _fake(self, name: str) -> tuple[bytes, int]:
        """Salt and verifier of an unknown identity.  No exponentiation is
        needed: v only ever appears masked in B = k*v + g^b, so any value in
        [1, N) looks the same to the peer."""
        # One keyed PRF call per identity, expanded by SHAKE-256 into the salt
        # and 16 bytes more than the verifier needs (the reduction's bias is
        # then below 2^-128).
        key = hmac.new(self._secret, b"rserpool srp fake\x00" + name.encode("utf-8"), hashlib.sha256).digest()
        salt_len = _srp.DEFAULT_SALT_LEN
        stream = hashlib.shake_256(key).digest(salt_len + self.group.n_len + 16)
        return stream[:salt_len], int.from_bytes(stream[salt_len:], "big") % (self.group.n - 1) + 1

    def _check(self, credentials: ISrpCredentials) -> Any:
        try:
            credentials.verify()
        except _srp.SrpError as exc:
            return _refuse(credentials.identity, self.group.name, str(exc))
        return Identity.create(credentials.identity, self.group.name)


# ---------------------------------------------------------------- facade


class Authenticator:
    """Dispatch credentials to the checker registered for their interface
    (the registrar's configured ``authenticator`` plugins, in order: the
    first checker for an interface wins)."""

    def __init__(self, checkers: Iterable[ICredentialsChecker]) -> None:
        self.checkers: dict[Any, ICredentialsChecker] = {}
        for checker in checkers:
            if not ICredentialsChecker.providedBy(checker):
                raise TypeError(f"{checker!r} does not provide ICredentialsChecker")
            for interface in checker.credentialInterfaces:
                self.checkers.setdefault(interface, checker)

    def checker_for(self, credentials: Any) -> ICredentialsChecker | None:
        for interface, checker in self.checkers.items():
            if interface.providedBy(credentials):
                return checker
        return None

    def handles(self, interface: Any) -> bool:
        return interface in self.checkers

    @property
    def srp_checker(self) -> ISrpChecker | None:
        """The checker of SRP credentials, when it can issue challenges."""
        checker = self.checkers.get(ISrpCredentials)
        return checker if checker is not None and ISrpChecker.providedBy(checker) else None

    def authenticate(self, credentials: Any, mechanism: str = "") -> defer.Deferred[Identity]:
        """Fires with the :class:`Identity` (``check`` of an
        ``IIdentityChecker``, else an identity named by ``requestAvatarId``,
        with ``mechanism``); fails with UnauthorizedLogin, BackendUnavailable
        or UnhandledCredentials."""
        checker = self.checker_for(credentials)
        if checker is None:
            return defer.fail(UnhandledCredentials(f"no checker for {type(credentials).__name__}"))
        if IIdentityChecker.providedBy(checker):
            return checker.check(credentials)
        d = defer.maybeDeferred(checker.requestAvatarId, credentials)
        d.addCallback(self._named, mechanism)
        return d.addErrback(_as_outage, repr(checker))

    @staticmethod
    def _named(avatar_id: Any, mechanism: str) -> Identity:
        name = avatar_id.decode("utf-8", "replace") if isinstance(avatar_id, bytes) else avatar_id
        normalized = normalize_identity(name)
        if normalized is None:
            raise UnauthorizedLogin(_REFUSED)
        return Identity.create(normalized, mechanism)
