"""Unit tests for rserpool.security.ocsp_client with a fake Agent and Clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.x509 import ocsp as x509_ocsp
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers

from rserpool.security.ocsp import FailurePolicy, OcspCache, OcspFailure, OcspStatus
from rserpool.security.ocsp_client import OcspChecker
from tests.test_security_ocsp import NOW, Pki, build_pki, make_response


@pytest.fixture(scope="module")
def pki() -> Pki:
    return build_pki()


class FakeBodyTransport:
    def __init__(self) -> None:
        self.stopped = False

    def stopProducing(self) -> None:
        self.stopped = True


class FakeResponse:
    def __init__(self, body: bytes, code: int = 200, content_type: bytes = b"application/ocsp-response",
                 length: int | None = None, chunk: int = 1000) -> None:
        self.code = code
        self.headers = Headers({b"Content-Type": [content_type]})
        self.length = len(body) if length is None else length
        self.body = body
        self.chunk = chunk
        self.transport = FakeBodyTransport()

    def deliverBody(self, protocol) -> None:
        protocol.makeConnection(self.transport)
        for start in range(0, len(self.body), self.chunk):
            if self.transport.stopped:
                return
            protocol.dataReceived(self.body[start : start + self.chunk])
        if not self.transport.stopped:
            protocol.connectionLost(Failure(ResponseDone()))


class FakeConsumer:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


class FakeAgent:
    """Records requests; ``answer(request_der)`` returns a Deferred[response]."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.requests: list[tuple[bytes, bytes, Headers, bytes]] = []

    def request(self, method: bytes, uri: bytes, headers: Headers, body) -> Deferred:
        consumer = FakeConsumer()
        body.startProducing(consumer)
        assert len(consumer.data) == body.length
        self.requests.append((method, uri, headers, consumer.data))
        return self.answer(consumer.data)


def responder(pki: Pki, clock: Clock, status=x509_ocsp.OCSPCertStatus.GOOD, echo_nonce: bytes | None = None):
    """A fake responder that answers for the requested certificate."""

    def answer(request_der: bytes) -> Deferred:
        request = x509_ocsp.load_der_ocsp_request(request_der)
        cert = pki.client if request.serial_number == pki.client.serial_number else pki.other
        try:
            nonce = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            nonce = None
        now = datetime.fromtimestamp(clock.seconds(), tz=timezone.utc)
        der = make_response(
            pki, cert=cert, status=status, nonce=echo_nonce if echo_nonce is not None else nonce,
            this_update=now - timedelta(minutes=1), next_update=now + timedelta(hours=1),
        )
        return succeed(FakeResponse(der))

    return answer


def new_clock() -> Clock:
    clock = Clock()
    clock.advance(NOW.timestamp())
    return clock


def checker(clock: Clock, agent, **kwargs) -> OcspChecker:
    kwargs.setdefault("nonce_source", lambda n: b"\x42" * n)
    return OcspChecker(clock, agent=agent, **kwargs)


def result_of(d: Deferred):
    results: list = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def test_good_request_shape_and_cache(pki: Pki) -> None:
    clock = new_clock()
    agent = FakeAgent(responder(pki, clock))
    ocsp = checker(clock, agent)
    decision = result_of(ocsp.check(pki.client, pki.ca))
    assert decision.allowed and decision.status is OcspStatus.GOOD and not decision.from_cache
    method, uri, headers, body = agent.requests[0]
    assert method == b"POST"
    assert uri == b"http://127.0.0.1:8888/"
    assert headers.getRawHeaders(b"content-type") == [b"application/ocsp-request"]
    request = x509_ocsp.load_der_ocsp_request(body)
    assert request.serial_number == pki.client.serial_number
    assert request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"\x42" * 16
    # Cached until nextUpdate, then asked again.
    clock.advance(59 * 60)
    assert result_of(ocsp.check(pki.client, pki.ca)).from_cache
    assert len(agent.requests) == 1
    clock.advance(61)
    decision = result_of(ocsp.check(pki.client, pki.ca))
    assert len(agent.requests) == 2
    assert decision.allowed and not decision.from_cache


def test_revoked_refused_even_soft(pki: Pki) -> None:
    clock = new_clock()
    agent = FakeAgent(responder(pki, clock, status=x509_ocsp.OCSPCertStatus.REVOKED))
    decision = result_of(checker(clock, agent, policy=FailurePolicy.SOFT_FAIL).check(pki.client, pki.ca))
    assert not decision.allowed and decision.status is OcspStatus.REVOKED
    assert decision.result is not None and decision.result.revocation_reason is x509.ReasonFlags.key_compromise


def test_nonce_mismatch_is_a_failure(pki: Pki) -> None:
    clock = new_clock()
    agent = FakeAgent(responder(pki, clock, echo_nonce=b"\x99" * 16))
    decision = result_of(checker(clock, agent).check(pki.client, pki.ca))
    assert not decision.allowed and decision.failure is OcspFailure.NONCE_MISMATCH
    assert len(checker(clock, agent).cache) == 0


def test_override_url(pki: Pki) -> None:
    clock = new_clock()
    agent = FakeAgent(responder(pki, clock))
    ocsp = checker(clock, agent, responder_override="http://127.0.0.5:9/ocsp")
    assert result_of(ocsp.check(pki.client, pki.ca)).allowed
    assert agent.requests[0][1] == b"http://127.0.0.5:9/ocsp"


@pytest.mark.parametrize("policy,allowed", [(FailurePolicy.SOFT_FAIL, True), (FailurePolicy.HARD_FAIL, False)])
def test_timeout(pki: Pki, policy: FailurePolicy, allowed: bool) -> None:
    clock = new_clock()
    cancelled: list[bool] = []
    agent = FakeAgent(lambda _: Deferred(lambda d: cancelled.append(True)))
    d = checker(clock, agent, timeout=5, policy=policy).check(pki.client, pki.ca)
    clock.advance(4.9)
    assert not d.called
    clock.advance(0.2)
    decision = result_of(d)
    assert cancelled == [True]
    assert decision.failure is OcspFailure.TIMEOUT
    assert decision.allowed is allowed and decision.soft_failed is allowed


def test_caller_cancel_propagates(pki: Pki) -> None:
    clock = new_clock()
    agent = FakeAgent(lambda _: Deferred())
    d = checker(clock, agent).check(pki.client, pki.ca)
    d.cancel()
    with pytest.raises(CancelledError):
        result_of(d)
    assert not clock.getDelayedCalls()


@pytest.mark.parametrize("policy,allowed", [(FailurePolicy.SOFT_FAIL, True), (FailurePolicy.HARD_FAIL, False)])
def test_unreachable(pki: Pki, policy: FailurePolicy, allowed: bool) -> None:
    clock = new_clock()
    agent = FakeAgent(lambda _: fail(ConnectionRefusedError()))
    decision = result_of(checker(clock, agent, policy=policy).check(pki.client, pki.ca))
    assert decision.failure is OcspFailure.UNREACHABLE and decision.allowed is allowed
    assert not clock.getDelayedCalls()


def test_http_error_and_content_type(pki: Pki) -> None:
    clock = new_clock()
    for response, failure in [
        (FakeResponse(b"oops", code=500), OcspFailure.HTTP_ERROR),
        (FakeResponse(b"<html>", content_type=b"text/html"), OcspFailure.HTTP_ERROR),
        (FakeResponse(b"\x30\x03\x0a\x01\x00"), OcspFailure.MALFORMED),
    ]:
        agent = FakeAgent(lambda _, r=response: succeed(r))
        decision = result_of(checker(clock, agent).check(pki.client, pki.ca))
        assert decision.failure is failure and not decision.allowed


def test_size_limit(pki: Pki) -> None:
    clock = new_clock()
    declared = FakeResponse(b"x" * 100, length=10**6)
    agent = FakeAgent(lambda _: succeed(declared))
    decision = result_of(checker(clock, agent).check(pki.client, pki.ca))
    assert decision.failure is OcspFailure.TOO_LARGE and declared.transport.stopped
    # No Content-Length: the body reader stops at the limit.
    streamed = FakeResponse(b"x" * 5000, length=-1, chunk=1000)
    agent = FakeAgent(lambda _: succeed(streamed))
    decision = result_of(checker(clock, agent, max_response_size=2048).check(pki.client, pki.ca))
    assert decision.failure is OcspFailure.TOO_LARGE and streamed.transport.stopped


def test_bad_urls_send_nothing(pki: Pki) -> None:
    clock = new_clock()
    agent = FakeAgent(responder(pki, clock))
    with pytest.raises(Exception):
        checker(clock, agent, responder_override="https://127.0.0.1/")
    remote = checker(clock, agent, responder_override="http://192.0.2.1/", allow_remote=True)
    remote.responder_override = "http://192.0.2.1/"
    remote.allow_remote = False
    decision = result_of(remote.check(pki.client, pki.ca))
    assert decision.failure is OcspFailure.BAD_URL
    decision = result_of(checker(clock, agent).check(pki.ca, pki.ca))  # CA cert has no AIA
    assert decision.failure is OcspFailure.NO_RESPONDER
    assert agent.requests == []


def test_shared_cache_between_checkers(pki: Pki) -> None:
    clock = new_clock()
    cache = OcspCache(max_entries=8)
    agent = FakeAgent(responder(pki, clock))
    assert result_of(checker(clock, agent, cache=cache).check(pki.client, pki.ca)).allowed
    assert result_of(checker(clock, agent, cache=cache).check(pki.client, pki.ca)).from_cache
    assert len(agent.requests) == 1
