"""Revocation news for channels that are already open (issue 12).

CRLs are enforced in every TLS handshake and OCSP right after it
(:mod:`rserpool.security.revocation`), but a channel that opened before its
certificate was revoked would keep registering.  :class:`LiveCertificates`
asks ``live()`` for the verified client certificates of the registrar's
live channels (read from their TLS connections only when news arrives: no
cost per session) and reports the revoked ones, by SHA-256 fingerprint, to
``revoke(fingerprint, reason)`` (``RegistrarService.revoke``): the security
gate then closes their channels and their PEs are removed at once, by the
normal removal path (the ENRP peers hear of it as of any removal).

Revocation news comes from

- a **CRL reload** (:meth:`crls_reloaded`, a ``CrlMonitor`` reload
  listener): every live certificate is checked against the new CRLs;
- an **OCSP answer "revoked"** for a certificate, whatever asked
  (:meth:`ocsp_decided`: a new connection's check, or the re-check below);
- the **periodic OCSP re-check** of the live certificates, every
  ``recheck_interval`` seconds, one query per distinct certificate at most
  ``concurrency`` at a time; the checker's cache answers until the response's
  nextUpdate, so a certificate is asked about again only then.  Only a
  verified "revoked" closes a live channel: a responder that cannot answer
  never does, whatever the failure policy for new channels.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Sequence

from cryptography import x509
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from rserpool.security.ocsp import OcspDecision, OcspStatus
from rserpool.security.revocation import RevocationGate, find_issuer, revoked_by

__all__ = ["Live", "LiveCertificates"]

_log = Logger()

#: A live channel's client certificate: (SHA-256 fingerprint, certificate,
#: the chain TLS verified, leaf first).
Live = tuple[str, x509.Certificate, Sequence[x509.Certificate]]


class LiveCertificates:
    """The verified client certificates of live channels (see the module docstring)."""

    def __init__(self, clock: IReactorTime, live: Callable[[], Iterable[Live]],
                 revoke: Callable[[str, str], None], *, revocation: RevocationGate | None = None,
                 recheck_interval: float = 60.0, trust_roots: Sequence[x509.Certificate] = (),
                 concurrency: int = 8) -> None:
        if recheck_interval < 0 or concurrency < 1:
            raise ValueError("recheck_interval must be >= 0 (0: no re-check) and concurrency >= 1")
        self.clock = clock
        self.live = live
        self.revoke = revoke
        self.revocation = revocation
        self.recheck_interval = recheck_interval
        self.trust_roots = tuple(trust_roots)
        self._semaphore = defer.DeferredSemaphore(concurrency)
        self._call: IDelayedCall | None = None
        self._rechecking: defer.Deferred[Any] | None = None
        self.stats = {"revoked_by_crl": 0, "revoked_by_ocsp": 0, "rechecks": 0}

    # -- revocation news ---------------------------------------------------------------------------

    def crls_reloaded(self, crls: Sequence[x509.CertificateRevocationList]) -> None:
        """New CRLs are in force: the live certificates they revoke go."""
        now = datetime.fromtimestamp(self.clock.seconds(), tz=timezone.utc)
        revoked: dict[str, str] = {}
        for fingerprint, certificate, chain in list(self.live()):
            if fingerprint in revoked:
                continue
            issuer = self._issuer(certificate, chain)
            if issuer is not None and revoked_by(crls, certificate, issuer, now):
                revoked[fingerprint] = certificate.subject.rfc4514_string()
        for fingerprint, subject in revoked.items():
            self.stats["revoked_by_crl"] += 1
            _log.warn("the reloaded CRL revokes {subject}: closing its channels", subject=subject)
            self.revoke(fingerprint, "certificate revoked (CRL reloaded)")

    def ocsp_decided(self, fingerprint: str, decision: OcspDecision) -> None:
        """An OCSP decision about the certificate with ``fingerprint``: a
        verified "revoked" reaches every live channel it authenticated."""
        if decision.status is OcspStatus.REVOKED and any(f == fingerprint for f, _, _ in self.live()):
            self.stats["revoked_by_ocsp"] += 1
            self.revoke(fingerprint, f"certificate revoked (OCSP: {decision.reason})")

    def _issuer(self, certificate: x509.Certificate,
                chain: Sequence[x509.Certificate]) -> x509.Certificate | None:
        if len(chain) > 1 and chain[1].subject == certificate.issuer:
            return chain[1]  # the link OpenSSL verified
        return find_issuer(certificate, list(chain[1:]) + list(self.trust_roots))

    # -- the periodic OCSP re-check ----------------------------------------------------------------

    def start(self) -> None:
        if self.revocation is not None and self.revocation.enabled and self.recheck_interval > 0:
            self._schedule()

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._rechecking is not None:
            self._rechecking.cancel()

    def _schedule(self) -> None:
        self._call = self.clock.callLater(self.recheck_interval, self._tick)

    def _tick(self) -> None:
        self._call = None
        if self._rechecking is None:  # else the previous round still waits for responders
            self._rechecking = d = self.recheck()
            d.addBoth(self._done)
        self._schedule()

    def _done(self, result: Any) -> None:
        self._rechecking = None

    def recheck(self) -> defer.Deferred[Any]:
        """Ask OCSP about every distinct live certificate once (fires when done)."""
        gate = self.revocation
        if gate is None or not gate.enabled:
            return defer.succeed(None)
        self.stats["rechecks"] += 1
        distinct: dict[str, tuple[x509.Certificate, Sequence[x509.Certificate]]] = {}
        for fingerprint, certificate, chain in self.live():
            distinct.setdefault(fingerprint, (certificate, chain))
        checks = []
        for fingerprint, (certificate, chain) in distinct.items():
            d = self._semaphore.run(gate.check, certificate, chain)
            d.addCallback(lambda decision, fp=fingerprint: self.ocsp_decided(fp, decision))
            d.addErrback(self._failed)
            checks.append(d)
        return defer.DeferredList(checks, consumeErrors=True)

    @staticmethod
    def _failed(failure: Any) -> None:
        if not failure.check(defer.CancelledError):
            _log.failure("OCSP re-check of a live certificate failed", failure)
