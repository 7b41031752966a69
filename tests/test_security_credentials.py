"""rserpool.security.credentials: checkers map good, bad, unknown and outage correctly."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from rserpool.errors import BackendUnavailable
from rserpool.interfaces import (
    ICertificateMapping,
    IChapCredentials,
    IChapSecretStore,
    IChapVerifier,
    Identity,
    IGroupSource,
    ISrpVerifierStore,
)
from rserpool.security import chap, pki, srp
from rserpool.security.certidentity import IdentityPolicy, fingerprint_sha256
from rserpool.security.credentials import (
    Authenticator,
    CertificateChecker,
    CertificateCredentials,
    ChapChecker,
    ChapCredentials,
    PskChecker,
    PskCredentials,
    SrpChecker,
    SrpCredentials,
)

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
CB = bytes(range(32))
CB2 = bytes(range(1, 33))


def result(d: defer.Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def failure(d: defer.Deferred[Any], *types: type) -> Failure:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out and isinstance(out[0], Failure), f"expected a failure, got {out!r}"
    assert out[0].check(*types), out[0]
    return out[0]


@implementer(ISrpVerifierStore, IChapSecretStore, IGroupSource, ICertificateMapping)
class MemoryStore:
    def __init__(self) -> None:
        self.srp: dict[str, tuple[bytes, bytes]] = {}
        self.chap: dict[str, bytes] = {}
        self.group_map: dict[str, frozenset[str]] = {}
        self.certs: dict[str, Identity] = {}
        self.down: Exception | None = None

    def _answer(self, value: Any) -> defer.Deferred[Any]:
        return defer.fail(self.down) if self.down is not None else defer.succeed(value)

    def srp_verifier(self, identity: str) -> defer.Deferred[Any]:
        return self._answer(self.srp.get(identity))

    def chap_secret(self, identity: str) -> defer.Deferred[Any]:
        return self._answer(self.chap.get(identity))

    def groups(self, identity: str) -> defer.Deferred[Any]:
        return self._answer(self.group_map.get(identity, frozenset()))

    def identity_for(self, certificate: Any) -> defer.Deferred[Any]:
        return self._answer(self.certs.get(fingerprint_sha256(certificate)))


@pytest.fixture
def store() -> MemoryStore:
    s = MemoryStore()
    s.chap["pe1"] = b"chap secret"
    s.srp["pe2"] = srp.make_verifier("pe2", "correct horse")
    s.group_map["pe1"] = frozenset({"echo-servers"})
    return s


def chap_creds(identity: str, secret: bytes, identifier: int = 7, challenge: bytes = b"c" * 16) -> ChapCredentials:
    return ChapCredentials(identity, identifier, challenge, chap.chap_response(identifier, secret, challenge))


# ------------------------------------------------------------------ CHAP

def test_chap_good_with_groups(store: MemoryStore) -> None:
    checker = ChapChecker(store, store)
    ident = result(checker.check(chap_creds("pe1", b"chap secret")))
    assert ident == Identity("pe1", "CHAP-MD5", frozenset({"echo-servers"}))
    assert result(checker.requestAvatarId(chap_creds("pe1", b"chap secret"))) == "pe1"


def test_chap_wrong_and_unknown_look_the_same(store: MemoryStore) -> None:
    checker = ChapChecker(store)
    wrong = failure(checker.check(chap_creds("pe1", b"guess")), UnauthorizedLogin)
    unknown = failure(checker.check(chap_creds("nobody", b"guess")), UnauthorizedLogin)
    assert str(wrong.value) == str(unknown.value) == "bad credentials"


def test_chap_malformed_is_refused(store: MemoryStore) -> None:
    checker = ChapChecker(store)
    failure(checker.check(ChapCredentials("pe1", 7, b"c" * 16, b"short")), UnauthorizedLogin)
    failure(checker.check(ChapCredentials("pe\x001", 7, b"c" * 16, b"r" * 16)), UnauthorizedLogin)
    failure(checker.check(ChapCredentials("pe1", 300, b"c" * 16, b"r" * 16)), UnauthorizedLogin)


def test_chap_outage_is_not_a_refusal(store: MemoryStore) -> None:
    checker = ChapChecker(store, store)
    store.down = BackendUnavailable("store down")
    failure(checker.check(chap_creds("pe1", b"chap secret")), BackendUnavailable)
    store.down = RuntimeError("bug in the backend")
    f = failure(checker.check(chap_creds("pe1", b"chap secret")), BackendUnavailable)
    assert not f.check(UnauthorizedLogin)


def test_chap_checks_the_credentials_the_exchange_makes(store: MemoryStore) -> None:
    server = chap.ChapServer("pe1", CB, now=0.0)
    client_response = chap.chap_response(server.identifier, b"chap secret", server.challenge)
    credentials = server.response_received(client_response, now=1.0)
    assert IChapCredentials.providedBy(credentials)  # the exchange's value is a cred credentials
    checker = ChapChecker(store)
    assert result(checker.requestAvatarId(credentials)) == "pe1"
    bad = ChapCredentials("pe1", credentials.identifier, credentials.challenge, b"x" * 16)
    failure(checker.requestAvatarId(bad), UnauthorizedLogin)
    assert "x" * 4 not in repr(bad)  # never the response
    store.down = BackendUnavailable("down")
    failure(checker.check(credentials), BackendUnavailable)


@implementer(IChapVerifier)
class FakeRadius:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.asked: list[tuple[Any, ...]] = []

    def verify_chap(self, identity: str, identifier: int, challenge: bytes, response: bytes) -> Any:
        self.asked.append((identity, identifier, challenge, response))
        if isinstance(self.answer, Exception):
            return defer.fail(self.answer)
        return defer.succeed(self.answer)


def test_chap_through_a_verifier() -> None:
    accept = FakeRadius(Identity.create("pe1", "radius", ["pool-a"], {"Class": "x"}))
    ident = result(ChapChecker(accept).check(chap_creds("pe1", b"s")))
    assert ident.mechanism == "CHAP-MD5" and ident.groups == {"pool-a"} and ident.attributes["Class"] == ("x",)
    assert accept.asked[0][0] == "pe1" and accept.asked[0][1] == 7
    failure(ChapChecker(FakeRadius(None)).check(chap_creds("pe1", b"s")), UnauthorizedLogin)
    other = FakeRadius(Identity("someone-else"))
    failure(ChapChecker(other).check(chap_creds("pe1", b"s")), UnauthorizedLogin)
    failure(ChapChecker(FakeRadius(BackendUnavailable("timeout"))).check(chap_creds("pe1", b"s")),
            BackendUnavailable)


def test_chap_checker_needs_a_backend() -> None:
    with pytest.raises(TypeError):
        ChapChecker(object())  # type: ignore[arg-type]


# ------------------------------------------------------------------- SRP

def srp_run(checker: SrpChecker, identity: str, password: str, server_cb: bytes = CB,
            client_cb: bytes = CB) -> tuple[SrpCredentials, defer.Deferred[Any]]:
    challenge = result(checker.challenge(identity, server_cb))
    client = srp.SrpClientRun(srp.DEFAULT_GROUP, identity.encode(), password.encode(), client_cb)
    client_public, client_proof = client.process_challenge(challenge.salt, challenge.server_public)
    creds = SrpCredentials(challenge, client_public, client_proof)
    return creds, checker.check(creds)


def test_srp_good(store: MemoryStore) -> None:
    checker = SrpChecker(store, b"k" * 32)
    creds, d = srp_run(checker, "pe2", "correct horse")
    assert result(d) == Identity("pe2", "SRP-6a-SHA256-2048")
    assert creds.server_proof is not None and len(creds.server_proof) == 32


def test_srp_wrong_unknown_and_replay(store: MemoryStore) -> None:
    checker = SrpChecker(store, b"k" * 32)
    _, wrong = srp_run(checker, "pe2", "wrong")
    failure(wrong, UnauthorizedLogin)
    _, unknown = srp_run(checker, "ghost", "anything")
    failure(unknown, UnauthorizedLogin)
    creds, good = srp_run(checker, "pe2", "correct horse")
    result(good)
    failure(checker.check(creds), UnauthorizedLogin)  # the session is single-use


def test_srp_relayed_to_another_channel_fails(store: MemoryStore) -> None:
    _, d = srp_run(SrpChecker(store, b"k" * 32), "pe2", "correct horse", server_cb=CB, client_cb=CB2)
    failure(d, UnauthorizedLogin)


def test_srp_unknown_identity_gets_a_stable_salt(store: MemoryStore) -> None:
    checker = SrpChecker(store, b"k" * 32)
    first = result(checker.challenge("ghost", CB))
    second = result(checker.challenge("ghost", CB))
    assert first.salt == second.salt and not first.known
    assert result(checker.challenge("pe2", CB)).known


def test_srp_outage(store: MemoryStore) -> None:
    checker = SrpChecker(store, b"k" * 32)
    store.down = BackendUnavailable("ldap down")
    failure(checker.challenge("pe2", CB), BackendUnavailable)
    store.down = KeyError("oops")
    failure(checker.challenge("pe2", CB), BackendUnavailable)
    failure(checker.challenge("bad\x00name", CB), UnauthorizedLogin)


def test_srp_needs_a_secret(store: MemoryStore) -> None:
    with pytest.raises(ValueError):
        SrpChecker(store, b"short")


# ----------------------------------------------------------- certificates

@pytest.fixture(scope="module")
def ca() -> pki.IssuedCertificate:
    return pki.create_ca("credentials test CA", NOW)


def test_certificate_by_its_own_names(ca: pki.IssuedCertificate, store: MemoryStore) -> None:
    cert = pki.create_client_certificate(ca, "pe1", NOW).certificate
    ident = result(CertificateChecker(None, store).check(CertificateCredentials(cert)))
    assert ident.name == "pe1" and ident.mechanism == "certificate"
    assert ident.groups == {"echo-servers"}
    assert ident.attributes["fingerprint_sha256"] == (fingerprint_sha256(cert),)


def test_certificate_mapping_first(ca: pki.IssuedCertificate, store: MemoryStore) -> None:
    cert = pki.create_client_certificate(ca, "pe1", NOW).certificate
    store.certs[fingerprint_sha256(cert)] = Identity.create("mapped", "file", ["g"])
    ident = result(CertificateChecker(store).check(CertificateCredentials(cert)))
    assert (ident.name, ident.mechanism, ident.groups) == ("mapped", "certificate", {"g"})


def test_certificate_refusals(ca: pki.IssuedCertificate, store: MemoryStore) -> None:
    cert = pki.create_client_certificate(ca, "pe1", NOW).certificate
    strict = CertificateChecker(store, use_certificate_names=False)
    failure(strict.check(CertificateCredentials(cert)), UnauthorizedLogin)
    only_uri = IdentityPolicy.create(["uri"], uri_prefix="urn:example:")
    failure(CertificateChecker().check(CertificateCredentials(cert, only_uri)), UnauthorizedLogin)
    store.down = BackendUnavailable("down")
    failure(CertificateChecker(store).check(CertificateCredentials(cert)), BackendUnavailable)


# ------------------------------------------------------------------- PSK

def test_psk(store: MemoryStore) -> None:
    assert result(PskChecker(store).check(PskCredentials("pe1"))).groups == {"echo-servers"}
    failure(PskChecker().check(PskCredentials("")), UnauthorizedLogin)
    failure(PskChecker().check(PskCredentials("a\x7fb")), UnauthorizedLogin)
    store.down = BackendUnavailable("down")
    failure(PskChecker(store).check(PskCredentials("pe1")), BackendUnavailable)


# ----------------------------------------------------------------- facade

def test_authenticator_dispatch(store: MemoryStore) -> None:
    auth = Authenticator([ChapChecker(store, store), PskChecker()])
    assert result(auth.authenticate(PskCredentials("pe9"))).mechanism == "tls-psk"
    assert result(auth.authenticate(chap_creds("pe1", b"chap secret"))).groups == {"echo-servers"}
    failure(auth.authenticate(chap_creds("pe1", b"nope")), UnauthorizedLogin)
    failure(auth.authenticate(object()), UnhandledCredentials)
    with pytest.raises(TypeError):
        Authenticator([object()])  # type: ignore[list-item]


@implementer(ICredentialsChecker)
class _NameOnly:
    """A site authenticator that provides nothing but ICredentialsChecker."""

    credentialInterfaces = (IUsernamePassword,)

    def requestAvatarId(self, credentials):  # noqa: N802 (twisted.cred)
        if credentials.checkPassword(b"right"):
            return defer.succeed(credentials.username)
        return defer.fail(UnauthorizedLogin())


def test_a_plain_icredentialschecker_names_the_identity() -> None:
    auth = Authenticator([_NameOnly()])
    identity = result(auth.authenticate(UsernamePassword(b"site-pe", b"right"), "site"))
    assert (identity.name, identity.mechanism, identity.groups) == ("site-pe", "site", frozenset())
    failure(auth.authenticate(UsernamePassword(b"site-pe", b"wrong")), UnauthorizedLogin)
    failure(auth.authenticate(UsernamePassword(b"bad\x00name", b"right")), UnauthorizedLogin)


def test_the_first_checker_for_an_interface_wins(store: MemoryStore) -> None:
    first, second = PskChecker(), PskChecker(store)
    auth = Authenticator([first, second])
    assert auth.checker_for(PskCredentials("pe1")) is first
    assert auth.srp_checker is None and not auth.handles(IChapCredentials)
    auth = Authenticator([SrpChecker(store, b"s" * 16)])
    assert auth.srp_checker is not None


def test_certificate_credentials_from_a_tls_connection(ca: pki.IssuedCertificate) -> None:
    from OpenSSL import crypto

    cert = pki.create_client_certificate(ca, "pe1", NOW).certificate
    creds = CertificateCredentials.from_x509(crypto.X509.from_cryptography(cert))
    assert creds.certificate == cert
    assert creds.fingerprint == fingerprint_sha256(cert)
    # OpenSSL's digest of the pyOpenSSL certificate is the DER's SHA-256.
    fresh = CertificateCredentials.from_x509(crypto.X509.from_cryptography(cert))
    assert fresh.sha256 == CertificateCredentials(cert).sha256 == bytes.fromhex(fingerprint_sha256(cert))
    with pytest.raises(ValueError):
        CertificateCredentials(None)


def test_a_checker_that_raises_is_an_outage_not_a_refusal_or_a_crash(ca: pki.IssuedCertificate) -> None:
    checker = CertificateChecker()

    def broken(credentials: Any) -> Any:
        raise RuntimeError("bug in a site plugin")

    checker._check = broken  # type: ignore[method-assign]
    cert = pki.create_client_certificate(ca, "pe1", NOW).certificate
    failures: list = []
    checker.check(CertificateCredentials(cert)).addErrback(failures.append)
    assert failures and failures[0].check(BackendUnavailable)
    assert "bug in a site plugin" in failures[0].getErrorMessage()


def test_a_refused_identity_is_shown_plain_unless_it_could_forge_a_line():
    from rserpool.security.credentials import _shown

    assert _shown("pe1") == "pe1"
    assert _shown("CN=pe1,O=example") == "CN=pe1,O=example"
    assert _shown("pe1\nrefused nothing") == "'pe1\\nrefused nothing'"
    assert _shown(b"pe1") == "b'pe1'"  # not text: said so
    assert _shown("") == "''"
