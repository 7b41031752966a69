"""twisted.cred credentials and checkers for pool elements, users and peers.

Four ways to prove who you are (threats draft section 3.1, RFC 5355):

=========================  ==========================  =========================
credentials                checker                     asks
=========================  ==========================  =========================
:class:`CertificateCredentials`  :class:`CertificateChecker`  an :class:`ICertificateMapping`, then the certificate's own names
:class:`PskCredentials`    :class:`PskChecker`         nothing (TLS verified the key)
:class:`SrpCredentials`    :class:`SrpChecker`         an :class:`ISrpVerifierStore`
:class:`ChapCredentials`   :class:`ChapChecker`        an :class:`IChapVerifier` or :class:`IChapSecretStore`
=========================  ==========================  =========================

Every checker implements :class:`twisted.cred.checkers.ICredentialsChecker`
(``requestAvatarId`` fires with the identity *name*) and adds
``check(credentials)``, which fires with the whole
:class:`~rserpool.interfaces.Identity` (mechanism, groups from an optional
:class:`IGroupSource`, attributes).  Results:

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
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, implementer

from rserpool.errors import BackendUnavailable
from rserpool.identity import normalize_identity
from rserpool.interfaces import (
    ICertificateMapping,
    IChapSecretStore,
    IChapVerifier,
    Identity,
    IGroupSource,
    ISrpVerifierStore,
)
from rserpool.security import chap as _chap
from rserpool.security import srp as _srp
from rserpool.security.certidentity import (
    DEFAULT_POLICY,
    CertIdentityError,
    IdentityPolicy,
    identity_from_certificate,
)

__all__ = [
    "Authenticator",
    "CertificateChecker",
    "CertificateCredentials",
    "ChapChecker",
    "ChapCredentials",
    "ICertificateCredentials",
    "IChapCredentials",
    "IPskCredentials",
    "ISrpCredentials",
    "MECH_CERTIFICATE",
    "MECH_CHAP",
    "MECH_PSK",
    "PskChecker",
    "PskCredentials",
    "SrpChallenge",
    "SrpChecker",
    "SrpCredentials",
]

_log = Logger()

MECH_CERTIFICATE = "certificate"
MECH_PSK = "psk"
MECH_CHAP = "CHAP-MD5"
_REFUSED = "bad credentials"  # the only text a refusal carries


# ------------------------------------------------------------ credentials


class ICertificateCredentials(ICredentials):
    """A client certificate the TLS layer has verified (chain, validity,
    revocation)."""

    certificate = Attribute("the verified cryptography.x509.Certificate")
    policy = Attribute("IdentityPolicy naming the holder when no mapping does")


class IPskCredentials(ICredentials):
    """A TLS-PSK identity whose key the TLS handshake has proven."""

    identity = Attribute("the PSK identity (str)")


class ISrpCredentials(ICredentials):
    """The client's answer in an SRP-6a run started by :meth:`SrpChecker.challenge`."""

    identity = Attribute("the claimed identity (str)")

    def verify():  # type: ignore[misc]
        """Check the proof; return the server proof M2 or raise SrpError."""


class IChapCredentials(ICredentials):
    """A CHAP response (RFC 1994) to a channel-bound challenge."""

    identity = Attribute("the claimed identity (str)")
    identifier = Attribute("CHAP identifier, 0-255")
    challenge = Attribute("the effective 16-byte challenge")
    response = Attribute("the 16-byte response")


@implementer(ICertificateCredentials)
class CertificateCredentials:
    def __init__(self, certificate: x509.Certificate, policy: IdentityPolicy = DEFAULT_POLICY) -> None:
        self.certificate = certificate
        self.policy = policy


@implementer(IPskCredentials)
class PskCredentials:
    def __init__(self, identity: str) -> None:
        self.identity = identity


@implementer(IChapCredentials)
class ChapCredentials:
    def __init__(self, identity: str, identifier: int, challenge: bytes, response: bytes) -> None:
        self.identity = identity
        self.identifier = identifier
        self.challenge = challenge
        self.response = response

    @classmethod
    def from_request(cls, request: _chap.VerifyChap) -> ChapCredentials:
        """From the ``VerifyChap`` event of ``ChapServer`` / ``ServerExchange``."""
        return cls(request.identity, request.identifier, request.challenge, request.response)

    def __repr__(self) -> str:  # never the response
        return f"ChapCredentials({self.identity!r})"


class SrpChallenge:
    """One pending SRP run: what to send (``salt``, ``server_public``) and the
    single-use server session.  Made by :meth:`SrpChecker.challenge`."""

    __slots__ = ("identity", "session", "known")

    def __init__(self, identity: str, session: _srp.SrpServerSession, known: bool) -> None:
        self.identity = identity
        self.session = session
        self.known = known

    @property
    def salt(self) -> bytes:
        return self.session.salt

    @property
    def server_public(self) -> bytes:
        return self.session.server_public

    def __repr__(self) -> str:
        return f"SrpChallenge({self.identity!r})"


@implementer(ISrpCredentials)
class SrpCredentials:
    """The client's ``A`` and ``M1`` for a :class:`SrpChallenge`.  After a
    successful check ``server_proof`` holds M2 for the client."""

    def __init__(self, challenge: SrpChallenge, client_public: bytes, client_proof: bytes) -> None:
        self.challenge = challenge
        self.identity = challenge.identity
        self.client_public = client_public
        self.client_proof = client_proof
        self.server_proof: bytes | None = None

    def verify(self) -> bytes:
        m2 = self.challenge.session.verify_client(self.client_public, self.client_proof)
        if not self.challenge.known:  # a fake verifier cannot verify short of a collision
            raise _srp.SrpError("unknown identity")
        self.server_proof = m2
        return m2

    def __repr__(self) -> str:
        return f"SrpCredentials({self.identity!r})"


# ------------------------------------------------------------- checkers


def _as_outage(failure: Failure, what: str) -> Failure:
    """Keep refusals and outages; anything else from a backend is an outage."""
    if failure.check(UnauthorizedLogin, BackendUnavailable):
        return failure
    _log.failure("{what} failed unexpectedly; treating it as unavailable", failure, what=what)
    error = BackendUnavailable(f"{what} failed: {failure.getErrorMessage()}")
    error.__cause__ = failure.value
    return Failure(error)


def _refuse(identity: object, mechanism: str, reason: str) -> Failure:
    _log.info("authentication refused for {identity!r} ({mechanism}): {reason}",
              identity=identity, mechanism=mechanism, reason=reason)
    return Failure(UnauthorizedLogin(_REFUSED))


def _call(method: Any, *args: Any) -> defer.Deferred[Any]:
    return defer.maybeDeferred(method, *args)


def _valid_name(name: object) -> str | None:
    return normalize_identity(name)


class _Checker:
    """Shared plumbing: groups, ``check`` -> ``requestAvatarId``."""

    credentialInterfaces: tuple[type, ...] = ()

    def __init__(self, groups: IGroupSource | None = None) -> None:
        if groups is not None and not IGroupSource.providedBy(groups):
            raise TypeError(f"{groups!r} does not provide IGroupSource")
        self.group_source = groups

    def check(self, credentials: Any) -> defer.Deferred[Identity]:
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


@implementer(ICredentialsChecker)
class CertificateChecker(_Checker):
    """Identity of a verified client certificate (scenario A).

    ``mapping`` (a file store, LDAP) is asked first; when it does not know
    the certificate and ``use_certificate_names`` is true, the name comes
    from the certificate itself under the credentials' ``IdentityPolicy``
    (URI/DNS/email SAN, CN).
    """

    credentialInterfaces = (ICertificateCredentials,)

    def __init__(self, mapping: ICertificateMapping | None = None, groups: IGroupSource | None = None,
                 *, use_certificate_names: bool = True) -> None:
        super().__init__(groups)
        if mapping is not None and not ICertificateMapping.providedBy(mapping):
            raise TypeError(f"{mapping!r} does not provide ICertificateMapping")
        self.mapping = mapping
        self.use_certificate_names = use_certificate_names

    def _check(self, credentials: ICertificateCredentials) -> Any:
        cert = credentials.certificate
        if self.mapping is None:
            return self._from_names(None, credentials)
        d = _call(self.mapping.identity_for, cert)
        return d.addCallback(self._from_names, credentials)

    def _from_names(self, mapped: Identity | None, credentials: ICertificateCredentials) -> Any:
        if mapped is not None:
            return mapped.with_mechanism(MECH_CERTIFICATE)
        subject = credentials.certificate.subject.rfc4514_string()
        if not self.use_certificate_names:
            return _refuse(subject, MECH_CERTIFICATE, "certificate not in the mapping")
        try:
            found = identity_from_certificate(credentials.certificate, credentials.policy)
        except CertIdentityError as exc:
            return _refuse(subject, MECH_CERTIFICATE, str(exc))
        return Identity.create(found.name, MECH_CERTIFICATE, (), {
            "fingerprint_sha256": found.fingerprint_sha256,
            "subject": found.subject,
            "issuer": found.issuer,
            "source": found.source.value,
        })


@implementer(ICredentialsChecker)
class PskChecker(_Checker):
    """TLS-PSK: the handshake proved the key, so only the identity's form is
    checked (and its groups looked up)."""

    credentialInterfaces = (IPskCredentials,)

    def _check(self, credentials: IPskCredentials) -> Any:
        name = _valid_name(credentials.identity)
        if name is None:
            return _refuse(credentials.identity, MECH_PSK, "malformed PSK identity")
        return Identity.create(name, MECH_PSK)


@implementer(ICredentialsChecker)
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
        name = _valid_name(credentials.identity)
        if name is None:
            return _refuse(credentials.identity, MECH_CHAP, "malformed identity")
        request = _chap.VerifyChap(name, credentials.identifier, bytes(credentials.challenge),
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

    def _compare(self, secret: bytes | None, request: _chap.VerifyChap) -> Any:
        verdict = _chap.verify_locally(secret, request)
        if not verdict.ok:
            return _refuse(request.identity, MECH_CHAP, verdict.reason)
        return Identity.create(request.identity, MECH_CHAP)

    def verify(self, request: _chap.VerifyChap) -> defer.Deferred[_chap.ChapVerdict]:
        """Answer a ``VerifyChap`` event for ``ServerExchange.chap_verified``:
        a refusal is ``ChapVerdict(False)``; an outage fails the Deferred
        with BackendUnavailable (call ``chap_unavailable``)."""
        d = self.check(ChapCredentials.from_request(request))

        def refused(failure: Failure) -> _chap.ChapVerdict:
            failure.trap(UnauthorizedLogin)
            return _chap.ChapVerdict(False, "refused")

        return d.addCallbacks(lambda _identity: _chap.ChapVerdict(True, ""), refused)


@implementer(ICredentialsChecker)
class SrpChecker(_Checker):
    """SRP-6a against an :class:`ISrpVerifierStore`, in two steps::

        challenge = yield checker.challenge(identity, channel_binding)
        # send challenge.salt, challenge.server_public; receive A, M1
        creds = SrpCredentials(challenge, client_public, client_proof)
        identity = yield checker.check(creds)     # creds.server_proof is M2

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
        name = _valid_name(identity)
        if name is None:
            return defer.fail(_refuse(identity, self.group.name, "malformed identity"))
        d = _call(self.store.srp_verifier, name)
        d.addCallback(self._start, name, bytes(channel_binding))
        return d.addErrback(_as_outage, "SRP verifier store")

    def _start(self, entry: tuple[bytes, bytes] | None, name: str, binding: bytes) -> SrpChallenge:
        fake_salt, fake_verifier = self._fake(name)
        known = False
        salt, verifier = fake_salt, fake_verifier
        if entry is not None:
            salt_in, verifier_bytes = entry
            value = int.from_bytes(verifier_bytes, "big")
            if _srp.MIN_SALT_LEN <= len(salt_in) <= _srp.MAX_SALT_LEN and 0 < value < self.group.n:
                salt, verifier, known = bytes(salt_in), value, True
            else:
                _log.warn("unusable SRP verifier stored for {identity!r}; treated as unknown", identity=name)
        session = _srp.SrpServerSession(self.group, name.encode("utf-8"), salt, verifier, binding)
        return SrpChallenge(name, session, known)

    def _fake(self, name: str) -> tuple[bytes, int]:
        ident = name.encode("utf-8")
        salt = hmac.new(self._secret, b"rserpool checker fake salt\x00" + ident,
                        hashlib.sha256).digest()[:_srp.DEFAULT_SALT_LEN]
        stream = b"".join(
            hmac.new(self._secret, b"rserpool checker fake verifier\x00" + bytes((i,)) + ident,
                     hashlib.sha256).digest()
            for i in range(self.group.n_len // 32 + 1))
        return salt, int.from_bytes(stream, "big") % (self.group.n - 1) + 1

    def _check(self, credentials: ISrpCredentials) -> Any:
        try:
            credentials.verify()
        except _srp.SrpError as exc:
            return _refuse(credentials.identity, self.group.name, str(exc))
        return Identity.create(credentials.identity, self.group.name)


# ---------------------------------------------------------------- facade


class Authenticator:
    """Dispatch credentials to the checker registered for their interface."""

    def __init__(self, checkers: Iterable[ICredentialsChecker]) -> None:
        self.checkers: dict[type, ICredentialsChecker] = {}
        for checker in checkers:
            if not ICredentialsChecker.providedBy(checker):
                raise TypeError(f"{checker!r} does not provide ICredentialsChecker")
            for interface in checker.credentialInterfaces:
                self.checkers[interface] = checker

    def checker_for(self, credentials: Any) -> ICredentialsChecker | None:
        for interface, checker in self.checkers.items():
            if interface.providedBy(credentials):
                return checker
        return None

    def authenticate(self, credentials: Any) -> defer.Deferred[Identity]:
        """Fires with the :class:`Identity` (``check`` when the checker has it,
        else a bare identity from ``requestAvatarId``); fails with
        UnauthorizedLogin, BackendUnavailable or UnhandledCredentials."""
        checker = self.checker_for(credentials)
        if checker is None:
            return defer.fail(UnhandledCredentials(f"no checker for {type(credentials).__name__}"))
        check = getattr(checker, "check", None)
        if check is not None:
            return check(credentials)
        d = defer.maybeDeferred(checker.requestAvatarId, credentials)
        return d.addCallback(lambda name: Identity.create(str(name)))
