"""The admin endpoint over real loopback TLS: who gets in, and attacks (issue 15, item 7).

Each refusal test was checked against the code without its defence: see
the test's docstring for what it guards.
"""

from __future__ import annotations

import pytest
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from rserpool.admin import AdminSettings
from rserpool.security.ocsp import OcspStatus
from rserpool.wire import AsapDeregistration
from tests.adminhelpers import TOKEN, AdminHarness, admin_cert
from tests.tlshelpers import make_test_pki

pytestmark = pytest.mark.integration


class _Base(AdminHarness, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import tempfile
        from pathlib import Path

        cls._tmp = tempfile.TemporaryDirectory()
        cls.test_pki = make_test_pki(Path(cls._tmp.name))

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def setUp(self):
        return self.start_admin(self.test_pki)

    def tearDown(self):
        return self.stop_admin()


class ClientCertificateOnly(_Base):
    """No token configured: the handshake itself demands a client certificate."""

    @defer.inlineCallbacks
    def test_admin_certificate_reads_status_json_and_metrics(self):
        admin = admin_cert(self.pki)
        client = yield self.register_pe(0x42)
        answer = yield self.get("/api/v1/status", admin)
        self.assertEqual(answer.status, 200, answer.raw[:300])
        self.assertEqual(answer.headers["content-type"], "application/json")
        self.assertEqual(answer.headers["cache-control"], "no-store")
        status = answer.json()
        self.assertEqual(status["pool_elements"], 1)
        self.assertEqual(status["pool_list"][0]["handle"], "echo")
        page = yield self.get("/api/v1/pools/" + b"echo".hex(), admin)
        self.assertEqual([pe["pe_id"] for pe in page.json()["pool_elements"]], ["00000042"])
        self.assertEqual(page.json()["pool_elements"][0]["identity"], "pe1")
        metrics = yield self.get("/metrics", admin)
        self.assertEqual(metrics.status, 200)
        openmetrics = yield self.get("/metrics", admin, headers={
            "Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"})
        self.assertTrue(openmetrics.headers["content-type"].startswith("application/openmetrics-text"))
        self.assertTrue(openmetrics.body.endswith(b"# EOF\n"))
        self.assertIn(b'rserpool_pool_elements{policy="RoundRobin",pool="echo"} 1.0', metrics.body)
        html = yield self.get("/", admin)
        self.assertEqual(html.status, 200)
        self.assertIn(b'id="pe-6563686f-00000042"', html.body)
        self.assertIn("default-src 'none'", html.headers["content-security-policy"])
        yield client.request(AsapDeregistration(b"echo", 0x42))
        after = yield self.get("/api/v1/status", admin)
        self.assertEqual(after.json()["pool_elements"], 0)
        self.assertEqual(self.registrar.events.admin_requests.get("allowed"), 6)

    @defer.inlineCallbacks
    def test_no_client_certificate_fails_the_handshake(self):
        """Without ``require_client_cert`` (no token) this would reach HTTP."""
        answer = yield self.get("/api/v1/status")
        self.assertEqual(answer.status, 0)
        self.assertEqual(answer.body, b"")
        self.assertIsNotNone(answer.reason)

    @defer.inlineCallbacks
    def test_a_pe_certificate_is_refused(self):
        """pe1 may register in echo; that is no admin right (default deny)."""
        for path in ("/", "/api/v1/status", "/metrics", "/api/v1/pools", "/nonexistent"):
            answer = yield self.get(path, self.pki.pe1)
            self.assertEqual(answer.status, 403, path)
            self.assertEqual(answer.body, b"forbidden\n")
        self.assertEqual(self.registrar.events.admin_requests.get("refused"), 5)

    @defer.inlineCallbacks
    def test_a_certificate_without_the_admin_right_is_refused(self):
        answer = yield self.get("/api/v1/status", self.pki.pu1)
        self.assertEqual(answer.status, 403)

    @defer.inlineCallbacks
    def test_a_certificate_from_another_ca_fails_the_handshake(self):
        answer = yield self.get("/api/v1/status", self.pki.pe_rogue)
        self.assertEqual(answer.status, 0)

    @defer.inlineCallbacks
    def test_paths_outside_the_api_are_not_found_and_nothing_is_served_from_disk(self):
        admin = admin_cert(self.pki)
        for path in ("/../../etc/passwd", "/api/v1/../../etc/passwd", "//etc/passwd", "/api/v1/pools/..%2f..",
                     "/static/x.css", "/api/v2/status", "/api/v1/status/", "/metrics/x", "/%2e%2e/etc/passwd",
                     "/api/v1/pools/6563686f/x", "/pool/", "/favicon.ico", "/index.html"):
            answer = yield self.get(path, admin)
            self.assertIn(answer.status, (400, 404), (path, answer.raw[:200]))
            self.assertNotIn(b"root:", answer.body)
        bad = yield self.get("/api/v1/pools/zz", admin)
        self.assertEqual(bad.status, 400)
        unknown = yield self.get("/api/v1/pools/" + b"nope".hex(), admin)
        self.assertEqual(unknown.status, 404)
        query = yield self.get("/api/v1/pools/6563686f?limit=abc", admin)
        self.assertIn(query.status, (400, 404))

    @defer.inlineCallbacks
    def test_only_get_and_head(self):
        admin = admin_cert(self.pki)
        for method in ("DELETE", "PUT", "OPTIONS", "TRACE"):
            answer = yield self.get("/api/v1/status", admin, method=method)
            self.assertEqual(answer.status, 405, method)
        head = yield self.get("/api/v1/status", admin, method="HEAD")
        self.assertEqual(head.status, 200)
        self.assertEqual(head.body, b"")

    @defer.inlineCallbacks
    def test_a_request_body_is_refused_unread(self):
        """An oversized (any) body gets 413 and the connection closes."""
        admin = admin_cert(self.pki)
        answer = yield self.get("/api/v1/status", admin, method="POST",
                                headers={"Content-Length": str(50_000_000)}, extra=b"x" * 65536)
        self.assertEqual(answer.status, 413)
        chunked = yield self.get("/api/v1/status", admin, method="GET",
                                 headers={"Transfer-Encoding": "chunked"}, extra=b"5\r\nhello\r\n0\r\n\r\n")
        self.assertEqual(chunked.status, 413)

    @defer.inlineCallbacks
    def test_oversized_request_heads_are_refused(self):
        admin = admin_cert(self.pki)
        long_line = yield self.get("/" + "a" * 10_000, admin)
        self.assertEqual(long_line.status, 400)
        many = yield self.get("/api/v1/status", admin, headers={f"X-H{n}": "v" for n in range(100)})
        self.assertEqual(many.status, 400)
        big = yield self.get("/api/v1/status", admin, headers={f"X-H{n}": "v" * 1000 for n in range(12)})
        self.assertEqual(big.status, 400)

    @defer.inlineCallbacks
    def test_slow_clients_are_dropped_and_do_not_block_others(self):
        """Slowloris: a connection that dribbles its request head is aborted
        after ``request_timeout`` even though it keeps sending; meanwhile a
        normal client is served."""
        admin = admin_cert(self.pki)
        slow = []
        for _ in range(4):
            raw = yield self.open_raw(admin)
            raw.transport.write(b"GET /api/v1/status HTTP/1.1\r\n")
            slow.append(raw)

        def dribble():
            for raw in slow:
                if not raw.done.called:
                    raw.transport.write(b"X-Slow: 1\r\n")

        loop = task.LoopingCall(dribble)
        loop.start(0.2)
        try:
            started = reactor.seconds()
            served = yield self.get("/api/v1/status", admin)
            self.assertEqual(served.status, 200)
            answers = yield defer.gatherResults([raw.done.addTimeout(8, reactor) for raw in slow])
        finally:
            loop.stop()
        elapsed = reactor.seconds() - started
        self.assertTrue(all(a.status == 0 for a in answers), [a.raw[:80] for a in answers])
        self.assertLess(elapsed, self.settings.request_timeout + 3)
        self.assertGreaterEqual(elapsed, self.settings.request_timeout - 0.5)

    @defer.inlineCallbacks
    def test_a_connection_that_never_sends_is_dropped(self):
        raw = yield self.open_raw(admin_cert(self.pki))
        answer = yield raw.done.addTimeout(8, reactor)
        self.assertEqual(answer.status, 0)


class ConnectionLimits(_Base):
    settings = AdminSettings(request_timeout=5.0, idle_timeout=5.0, max_connections=8,
                             max_connections_per_address=3)

    @defer.inlineCallbacks
    def test_connections_beyond_the_per_address_limit_are_dropped(self):
        admin = admin_cert(self.pki)
        held = []
        for _ in range(3):
            raw = yield self.open_raw(admin)
            held.append(raw)
        extra = yield self.open_raw(admin, tls_on=False)
        answer = yield extra.done.addTimeout(5, reactor)
        self.assertEqual(answer.raw, b"")
        self.assertEqual(self.admin.site.per_address, {"127.0.0.1": 3})
        for raw in held:
            raw.transport.abortConnection()
        yield defer.gatherResults([raw.done for raw in held])
        served = yield self.get("/api/v1/status", admin)
        self.assertEqual(served.status, 200)


class WithBearerToken(_Base):
    """A token for Prometheus: /metrics only (token_scope = metrics)."""

    token = TOKEN

    @defer.inlineCallbacks
    def test_the_token_reads_metrics_only(self):
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        metrics = yield self.get("/metrics", headers=bearer)
        self.assertEqual(metrics.status, 200)
        self.assertIn(b"rserpool_handlespace_pool_elements", metrics.body)
        for path in ("/", "/api/v1/status", "/api/v1/pools"):
            answer = yield self.get(path, headers=bearer)
            self.assertEqual(answer.status, 403, path)

    @defer.inlineCallbacks
    def test_no_credentials_is_401_and_a_wrong_token_403(self):
        none = yield self.get("/metrics")
        self.assertEqual(none.status, 401)
        self.assertIn("Bearer", none.headers["www-authenticate"])
        for value in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer ", f"Basic {TOKEN}", TOKEN):
            wrong = yield self.get("/metrics", headers={"Authorization": value})
            self.assertEqual(wrong.status, 403, value)

    @defer.inlineCallbacks
    def test_a_pe_certificate_with_no_token_is_still_refused(self):
        answer = yield self.get("/metrics", self.pki.pe1)
        self.assertEqual(answer.status, 403)
        admin = yield self.get("/api/v1/status", admin_cert(self.pki))
        self.assertEqual(admin.status, 200)


class TokenForEverything(_Base):
    token = TOKEN
    token_scope = "all"

    @defer.inlineCallbacks
    def test_scope_all_reads_the_page(self):
        answer = yield self.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
        self.assertEqual(answer.status, 200)


class AuthorizerOutage(_Base):
    def setUp(self):
        from zope.interface import implementer

        from rserpool.interfaces import IPoolAuthorizer

        @implementer(IPoolAuthorizer)
        class Broken:
            def authorize(self, identity, groups, action, pool_handle):
                raise RuntimeError("directory down")

        return self.start_admin(self.test_pki, authorizer=Broken())

    @defer.inlineCallbacks
    def test_an_authorizer_outage_refuses_and_is_counted(self):
        answer = yield self.get("/api/v1/status", admin_cert(self.pki))
        self.assertEqual(answer.status, 403)
        self.assertEqual(self.registrar.events.backend_outages, {"admin-authorizer": 1})
        self.flushLoggedErrors()


class _Decision:
    def __init__(self, allowed, reason=""):
        self.allowed, self.reason = allowed, reason
        self.status = None if allowed else OcspStatus.REVOKED


class _RevocationGate:
    """Stands in for the registrar's OCSP gate: revokes the listed names."""

    enabled = True

    def __init__(self, revoked):
        self.revoked = revoked
        self.checked = []

    def check(self, cert, chain=()):
        name = cert.subject.rfc4514_string()
        self.checked.append((name, len(chain)))
        revoked = any(f"CN={who}" in name for who in self.revoked)
        return defer.succeed(_Decision(not revoked, "revoked (OCSP)" if revoked else ""))


class WithOcsp(_Base):
    """The registrar checks client certificates by OCSP: so does the admin door."""

    def setUp(self):
        d = super().setUp()
        d.addCallback(lambda _: setattr(self.registrar, "revocation", _RevocationGate({"admin"})))
        return d

    @defer.inlineCallbacks
    def test_a_revoked_admin_certificate_is_refused(self):
        answer = yield self.get("/api/v1/status", admin_cert(self.pki))
        self.assertEqual(answer.status, 403)
        (checked,) = self.registrar.revocation.checked
        self.assertIn("CN=admin", checked[0])
        self.assertGreaterEqual(checked[1], 1)  # the verified chain went with it
        self.registrar.revocation.revoked = set()
        answer = yield self.get("/api/v1/status", admin_cert(self.pki))
        self.assertEqual(answer.status, 200)
