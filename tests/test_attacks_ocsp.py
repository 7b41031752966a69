"""Attacks on the registrar's OCSP check, over real loopback TLS (issue 12
item 2: "OCSP: forged, stale, mismatched, unauthorized responders, hanging
responders").

A scripted responder on loopback (twisted.web) answers the registrar's OCSP
queries with what an attacker who controls the responder, or the path to
it, can send: a GOOD answer signed by another CA, a GOOD answer with a
broken signature, an old GOOD answer, a GOOD answer for another
certificate, a GOOD answer signed by a certificate of the right CA that may
not sign OCSP answers; or nothing at all (a responder that accepts the
query and never answers).  Under ``ocsp = hard`` each PE channel is closed
before its registration is processed: no answer, no state, the authorizer
never asked.  A genuine GOOD answer from the delegated responder passes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp as x509_ocsp
from twisted.internet import defer, endpoints, protocol, reactor
from twisted.web import resource, server

from rserpool.security.ocsp import FailurePolicy, OcspFailure
from rserpool.security.ocsp_client import OcspChecker
from rserpool.security.revocation import RevocationGate
from tests.test_service_revocation import _RegistrarTest

pytestmark = pytest.mark.integration

DAY = dt.timedelta(days=1)


class _Scripted(resource.Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.answer = b""
        self.queries = 0

    def render_POST(self, request: Any) -> bytes:  # noqa: N802 (twisted.web)
        self.queries += 1
        request.setHeader(b"content-type", b"application/ocsp-response")
        return self.answer


class _Silent(protocol.Protocol):
    """Reads the query and never answers."""

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted)
        self.factory.queries += 1


def response(cert: x509.Certificate, issuer: x509.Certificate, signer: x509.Certificate, key: Any, *,
             now: dt.datetime, this_update: dt.timedelta = -dt.timedelta(minutes=1),
             next_update: dt.timedelta = dt.timedelta(hours=1), include: list | None = None) -> bytes:
    builder = (x509_ocsp.OCSPResponseBuilder()
               .add_response(cert, issuer, hashes.SHA1(), x509_ocsp.OCSPCertStatus.GOOD,
                             now + this_update, now + next_update, None, None)
               .responder_id(x509_ocsp.OCSPResponderEncoding.HASH, signer))
    if include:
        builder = builder.certificates(include)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


class OcspAttacks(_RegistrarTest):
    timeout = 60

    @defer.inlineCallbacks
    def responder(self):
        self.scripted = _Scripted()
        port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            server.Site(self.scripted))
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}/"

    def gate(self, url: str, timeout: float = 5.0) -> RevocationGate:
        checker = OcspChecker(reactor, timeout=timeout, policy=FailurePolicy.HARD_FAIL,
                              responder_override=url)
        gate = RevocationGate(checker, [self.pki.ca.issued.certificate])
        gate.decisions = []
        check = gate.check

        def recording(cert: Any, chain: Any = ()) -> defer.Deferred:
            return check(cert, chain).addCallback(lambda d: (gate.decisions.append(d), d)[1])

        gate.check = recording
        return gate

    @defer.inlineCallbacks
    def assert_refused(self, registrar: Any, pe_id: int):
        client, reply = yield self.eager(registrar, self.pki.pe1, pe_id)
        self.assertIsNone(reply)  # closed before its registration was processed
        self.assertTrue(client.closed.called)
        self.assert_untouched(registrar)

    @defer.inlineCallbacks
    def test_forged_stale_mismatched_and_unauthorized_answers_are_refused(self):
        url = yield self.responder()
        pki = self.pki
        now = dt.datetime.now(dt.timezone.utc)
        pe1, ca = pki.pe1.issued.certificate, pki.ca.issued
        good = response(pe1, ca.certificate, pki.ocsp.issued.certificate, pki.ocsp.issued.private_key,
                        now=now, include=[pki.ocsp.issued.certificate])
        # GOOD signed by the CA itself, one bit of the signature (the last field) flipped
        broken = bytearray(response(pe1, ca.certificate, ca.certificate, ca.private_key, now=now))
        broken[-5] ^= 0x01
        attacks = {
            # signed by another CA (who names itself the responder)
            OcspFailure.UNKNOWN_RESPONDER: response(pe1, ca.certificate, pki.rogue_ca.issued.certificate,
                               pki.rogue_ca.issued.private_key, now=now),
            OcspFailure.BAD_SIGNATURE: bytes(broken),
            # an answer that was true a week ago
            OcspFailure.STALE: response(pe1, ca.certificate, ca.certificate, ca.private_key, now=now,
                              this_update=-8 * DAY, next_update=-7 * DAY),
            # GOOD, genuinely signed, but for pe2's certificate
            OcspFailure.CERT_ID_MISMATCH: response(pki.pe2.issued.certificate, ca.certificate, ca.certificate,
                                   ca.private_key, now=now),
            # signed by a certificate of the right CA without OCSPSigning
            OcspFailure.UNAUTHORIZED_RESPONDER: response(pe1, ca.certificate, pki.pe2.issued.certificate,
                                     pki.pe2.issued.private_key, now=now,
                                     include=[pki.pe2.issued.certificate]),
        }
        for n, (failure, der) in enumerate(attacks.items()):
            self.scripted.answer = der
            gate = self.gate(url)  # a fresh gate: nothing cached
            registrar = yield self.start(revocation=gate)
            yield self.assert_refused(registrar, 0x40 + n)
            self.assertEqual((gate.stats["checked"], gate.stats["refused"]), (1, 1), failure)
            self.assertEqual([d.failure for d in gate.decisions], [failure])
            yield registrar.stopService()
            self.registrars.remove(registrar)
        self.assertEqual(self.scripted.queries, len(attacks))
        # The genuine answer from the delegated responder passes.
        self.scripted.answer = good
        registrar = yield self.start(revocation=self.gate(url))
        yield self.assert_registers(registrar, pki.pe1, 0x4F)

    @defer.inlineCallbacks
    def test_a_responder_that_never_answers_is_refused_in_time(self):
        factory = protocol.Factory.forProtocol(_Silent)
        factory.queries = 0
        port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        gate = self.gate(f"http://127.0.0.1:{port.getHost().port}/", timeout=1.0)
        registrar = yield self.start(revocation=gate)
        started = reactor.seconds()
        yield self.assert_refused(registrar, 0x50)
        self.assertLess(reactor.seconds() - started, 3.0)
        self.assertEqual(factory.queries, 1)
        self.assertEqual(gate.stats["refused"], 1)
        self.assertEqual([d.failure for d in gate.decisions], [OcspFailure.TIMEOUT])
