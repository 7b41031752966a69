"""OCSP over HTTP with Twisted: the shell around ``rserpool.security.ocsp``.

``OcspChecker.check(cert, issuer)`` answers a cached verified result or
POSTs an ``application/ocsp-request`` to the responder (the certificate's
AIA URL or a configured override), reads at most ``max_response_size``
bytes within ``timeout`` seconds of the injected reactor's clock, verifies
the answer with the pure core and turns it into an ``OcspDecision`` under
the configured soft-fail or hard-fail policy.  The Deferred never fails
with a network or verification error: those become decisions.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any, Callable

from cryptography import x509
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

from rserpool.security.ocsp import (
    MAX_RESPONSE_SIZE,
    OCSP_REQUEST_CONTENT_TYPE,
    OCSP_RESPONSE_CONTENT_TYPE,
    FailurePolicy,
    OcspCache,
    OcspDecision,
    OcspError,
    OcspFailure,
    OcspOptions,
    OcspResult,
    build_request,
    cert_key,
    check_responder_url,
    decide,
    responder_url,
    verify_response,
)

__all__ = ["OcspChecker"]

NONCE_LENGTH = 16


@implementer(IBodyProducer)
class _BytesProducer:
    """Writes a small request body at once (no cooperator, no reactor)."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _Discard(Protocol):
    """Stops a response body that will not be read."""

    def connectionMade(self) -> None:
        self.transport.stopProducing()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        pass


class _LimitedBody(Protocol):
    """Collects a response body of at most ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False
        self.finished: Deferred[bytes] = Deferred(self._cancel)

    def _stop(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()

    def _cancel(self, _: Deferred[bytes]) -> None:
        self._done = True
        self._stop()

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._done = True
            self._stop()
            self.finished.errback(OcspError(OcspFailure.TOO_LARGE, f"response body over {self._limit} bytes"))
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._done:
            return
        self._done = True
        if reason is None or reason.check(ResponseDone, PotentialDataLoss):
            # PotentialDataLoss: no Content-Length; a truncated body fails DER
            # parsing or the signature check.
            self.finished.callback(b"".join(self._chunks))
        else:
            self.finished.errback(reason)


class OcspChecker:
    """Checks peer certificates by OCSP; see the module docstring.

    ``reactor`` provides the clock (``seconds``, ``callLater``) and, unless
    ``agent`` is given, the TCP connections of a non-persistent ``Agent``.
    ``responder_override`` replaces every certificate's AIA URL.  Only
    ``http://`` URLs on loopback hosts are queried unless ``allow_remote``.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        agent: Any = None,
        timeout: float = 10.0,
        policy: FailurePolicy = FailurePolicy.HARD_FAIL,
        responder_override: str | None = None,
        cache: OcspCache | None = None,
        options: OcspOptions | None = None,
        allow_remote: bool = False,
        use_nonce: bool = True,
        max_response_size: int = MAX_RESPONSE_SIZE,
        nonce_source: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if not 0 < max_response_size <= MAX_RESPONSE_SIZE:
            raise ValueError(f"max_response_size must be 1 to {MAX_RESPONSE_SIZE}")
        if responder_override is not None:
            check_responder_url(responder_override, allow_remote)
        self.reactor = reactor
        if agent is None:
            agent = Agent(
                reactor, connectTimeout=timeout, pool=HTTPConnectionPool(reactor, persistent=False)
            )
        self.agent = agent
        self.timeout = timeout
        self.policy = policy
        self.responder_override = responder_override
        self.cache = cache if cache is not None else OcspCache()
        self.options = options if options is not None else OcspOptions()
        self.allow_remote = allow_remote
        self.use_nonce = use_nonce
        self.max_response_size = max_response_size
        self._nonce_source = nonce_source
        if policy is FailurePolicy.SOFT_FAIL:
            self.log.warn("OCSP soft-fail: certificates are accepted when the responder cannot answer")

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.reactor.seconds(), tz=timezone.utc)

    def check(self, cert: x509.Certificate, issuer: x509.Certificate) -> Deferred[OcspDecision]:
        """Decide on ``cert`` (issued by ``issuer``, chain already verified)."""
        key = cert_key(cert, issuer)
        cached = self.cache.get(key, self.now())
        if cached is not None:
            return succeed(self._logged(decide(cached, self.policy, from_cache=True), cert))

        def on_result(result: OcspResult) -> OcspDecision:
            self.cache.put(key, result, self.now())
            return self._logged(decide(result, self.policy), cert)

        def on_error(failure: Failure) -> OcspDecision | Failure:
            if failure.check(CancelledError):
                return failure  # the caller cancelled: not a decision
            error = failure.value
            if not isinstance(error, OcspError):
                error = OcspError(OcspFailure.UNREACHABLE, failure.getErrorMessage() or repr(error))
            return self._logged(decide(error, self.policy), cert)

        return self.query(cert, issuer).addCallbacks(on_result, on_error)

    def query(self, cert: x509.Certificate, issuer: x509.Certificate) -> Deferred[OcspResult]:
        """Fetch and verify a fresh response; fails with ``OcspError`` or a
        network error (no cache, no policy)."""
        try:
            url = responder_url(cert, self.responder_override)
            check_responder_url(url, self.allow_remote)
            try:
                uri = url.encode("ascii")
            except UnicodeEncodeError:
                raise OcspError(OcspFailure.BAD_URL, "non-ASCII responder URL") from None
            nonce = self._nonce_source(NONCE_LENGTH) if self.use_nonce else None
            body = build_request(cert, issuer, nonce)
        except OcspError:
            return fail()
        headers = Headers(
            {
                b"Content-Type": [OCSP_REQUEST_CONTENT_TYPE.encode()],
                b"Accept": [OCSP_RESPONSE_CONTENT_TYPE.encode()],
            }
        )
        d: Deferred[Any] = self.agent.request(b"POST", uri, headers, _BytesProducer(body))
        d.addCallback(self._read_body)
        d.addCallback(lambda der: verify_response(der, cert, issuer, self.now(), nonce, self.options))
        d.addTimeout(self.timeout, self.reactor, onTimeoutCancel=self._timed_out)
        return d

    def _timed_out(self, result: Any, timeout: float) -> Failure:
        return Failure(OcspError(OcspFailure.TIMEOUT, f"no answer within {timeout:g} s"))

    def _read_body(self, response: IResponse) -> Deferred[bytes]:
        content_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        length = response.length
        error: OcspError | None = None
        if response.code != 200:
            error = OcspError(OcspFailure.HTTP_ERROR, f"HTTP status {response.code}")
        elif content_type.split(b";")[0].strip().lower() != OCSP_RESPONSE_CONTENT_TYPE.encode():
            error = OcspError(OcspFailure.HTTP_ERROR, f"content type {content_type[:64]!r}")
        elif isinstance(length, int) and length > self.max_response_size:
            error = OcspError(OcspFailure.TOO_LARGE, f"Content-Length {length}")
        if error is not None:
            response.deliverBody(_Discard())
            raise error
        body = _LimitedBody(self.max_response_size)
        response.deliverBody(body)
        return body.finished

    def _logged(self, decision: OcspDecision, cert: x509.Certificate) -> OcspDecision:
        subject = cert.subject.rfc4514_string()
        serial = f"{cert.serial_number:x}"
        if decision.soft_failed:
            self.log.warn(
                "OCSP soft-fail: accepting {subject} (serial {serial}): {reason}",
                subject=subject, serial=serial, reason=decision.reason,
            )
        elif not decision.allowed:
            self.log.warn(
                "OCSP: refusing {subject} (serial {serial}): {reason}",
                subject=subject, serial=serial, reason=decision.reason,
            )
        else:
            self.log.debug("OCSP: {subject} (serial {serial}) good", subject=subject, serial=serial)
        return decision
