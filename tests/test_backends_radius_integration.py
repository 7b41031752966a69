"""rserpool.backends.radius against a real FreeRADIUS 3 on loopback.

The server runs the example configuration of ``etc/freeradius/`` (see
``tests/radius_fixture.py``).  Tests are ``twisted.trial`` test cases driven
by plain pytest (each returns a Deferred run on the global reactor); the
servers come from pytest fixtures.  Timeouts are short (0.2 s, one
retransmission), so the whole module takes a few seconds.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor
from twisted.trial import unittest

from rserpool.backends.radius import (
    BackendUnavailable,
    RadiusClient,
    RadiusServer,
)
from rserpool.backends.radius_authz import RadiusAuthorizer, RadiusChapVerifier
from rserpool.security.chap import ChapClient, ChapServer
from tests.aaahelpers import StallTicker
from tests.conftest import require_tool
from tests.radius_fixture import FreeRadius, free_udp_port

pytestmark = pytest.mark.integration

TIMEOUT = 0.2
RETRIES = 1
BOUND = (RETRIES + 1) * TIMEOUT  # per server


@pytest.fixture(scope="module")
def freeradius(tmp_path_factory: pytest.TempPathFactory):
    executable = require_tool("freeradius")
    server = FreeRadius(tmp_path_factory.mktemp("radius"), executable=executable)
    server.start()
    yield server
    server.stop()


def chap_request(identity: str, secret: bytes):
    """What the registrar hands to the verifier after a CHAP exchange."""
    channel_binding = secrets.token_bytes(32)
    server = ChapServer(identity, channel_binding, now=0.0)
    response = ChapClient(secret, channel_binding).respond(server.identifier, server.nonce)
    return server.response_received(response, now=0.0)


class RadiusAgainstFreeRadius(unittest.TestCase):
    timeout = 30

    @pytest.fixture(autouse=True)
    def _inject(self, freeradius: FreeRadius, tmp_path: Path) -> None:
        self.radius = freeradius
        self.tmp = tmp_path

    def make_client(self, servers: list[RadiusServer], **kwargs: Any) -> RadiusClient:
        client = RadiusClient(reactor, servers, timeout=TIMEOUT, retries=RETRIES,
                              bind_address="127.0.0.1", **kwargs)
        self.addCleanup(client.stop)
        return client

    def test_chap_accept_reject_unknown(self) -> defer.Deferred:
        client = self.make_client([self.radius.server])
        authorizer = RadiusAuthorizer(client, reactor, sources=["vsa"], authorize_only=False)
        verifier = RadiusChapVerifier(client, ["vsa"], authorizer)

        async def run() -> None:
            accepted = await verifier.verify_chap(*_fields(chap_request("pe1", b"pe1-secret")))
            self.assertEqual(accepted.name, "pe1")
            decision = authorizer.cached("pe1")
            self.assertEqual(decision.pools, ("echo", "discard"))
            self.assertEqual(decision.groups, frozenset({"pe"}))
            self.assertTrue(await authorizer.authorize("pe1", frozenset(), "register", b"echo"))
            self.assertFalse(await authorizer.authorize("pe1", frozenset(), "register", b"daytime"))
            # wrong password, unknown user and a certificate-only identity look the same
            for identity, secret in (("pe1", b"wrong"), ("nobody", b"pe1-secret"),
                                     ("pe-cert", b"")):
                refused = await verifier.verify_chap(*_fields(chap_request(identity, secret)))
                self.assertIsNone(refused)
            # authorization sources read from the same reply
            decision = await client.chap_verify(*_fields(chap_request("pe2", b"pe2-secret")))
            self.assertTrue(decision.accepted)
            self.assertEqual(decision.attributes["Class"], (b"rserpool:pools=echo",))
            self.assertEqual(decision.attributes["Filter-Id"], ("echo-servers",))
            self.assertEqual(client.stats["dropped"], 0)
            self.assertEqual(client.stats["retransmits"], 0)

        return defer.ensureDeferred(run())

    def test_default_client_socket_is_on_loopback(self) -> defer.Deferred:
        # As the radius plugin builds it: no bind_address.  The socket is bound
        # to 127.0.0.1 (the route to the server), not 0.0.0.0, and still works.
        client = RadiusClient(reactor, [self.radius.server], timeout=TIMEOUT, retries=RETRIES)
        self.addCleanup(client.stop)

        async def run() -> None:
            decision = await client.authorize_only("pe1")
            self.assertTrue(decision.accepted)
            hosts = [sock.port.getHost().host for sock in client._sockets.values()]
            self.assertEqual(hosts, ["127.0.0.1"])

        return defer.ensureDeferred(run())

    def test_authorize_only(self) -> defer.Deferred:
        client = self.make_client([self.radius.server])
        authorizer = RadiusAuthorizer(client, reactor, sources=["class", "vsa"])

        async def run() -> None:
            self.assertTrue(await authorizer.authorize("pe-cert", frozenset(), "register",
                                                       b"daytime-7"))
            self.assertEqual(authorizer.cached("pe-cert").groups, frozenset({"cert-pe"}))
            self.assertFalse(await authorizer.authorize("pe-cert", frozenset(), "register", b"echo"))
            self.assertFalse(await authorizer.authorize("nobody", frozenset(), "register", b"echo"))
            decision = await client.authorize_only("pe1")
            self.assertTrue(decision.accepted)
            self.assertEqual(client.stats["requests"], 3)  # the second pe-cert call was cached

        return defer.ensureDeferred(run())

    def test_failover_to_second_server(self) -> defer.Deferred:
        dead = RadiusServer("127.0.0.1", free_udp_port(), self.radius.secret)
        client = self.make_client([dead, self.radius.server])

        async def run() -> None:
            started = time.monotonic()
            decision = await client.chap_verify(*_fields(chap_request("pe1", b"pe1-secret")))
            elapsed = time.monotonic() - started
            self.assertTrue(decision.accepted)
            self.assertEqual(client.stats["failovers"], 1)
            self.assertGreaterEqual(elapsed, BOUND * 0.9)
            self.assertTrue(client.is_dead(dead))
            # the dead server is skipped now: no second failover
            decision = await client.chap_verify(*_fields(chap_request("pe2", b"pe2-secret")))
            self.assertTrue(decision.accepted)
            self.assertEqual(client.stats["failovers"], 1)

        return defer.ensureDeferred(run())

    def test_server_stopped_then_restarted(self) -> defer.Deferred:
        own = FreeRadius(self.tmp / "own", executable=self.radius.executable)
        own.start()
        self.addCleanup(own.stop)
        client = self.make_client([own.server], dead_time=60.0)

        async def run() -> None:
            decision = await client.chap_verify(*_fields(chap_request("pe1", b"pe1-secret")))
            self.assertTrue(decision.accepted)
            own.stop()
            started = time.monotonic()
            with self.assertRaises(BackendUnavailable):
                await client.chap_verify(*_fields(chap_request("pe1", b"pe1-secret")))
            elapsed = time.monotonic() - started
            self.assertLess(elapsed, BOUND + 0.5)
            self.assertGreaterEqual(elapsed, BOUND * 0.9)
            own.start()
            # still marked dead, but the only server: tried anyway, and revived
            decision = await client.chap_verify(*_fields(chap_request("pe1", b"pe1-secret")))
            self.assertTrue(decision.accepted)
            self.assertFalse(client.is_dead(own.server))

        return defer.ensureDeferred(run())

    def test_paused_server_does_not_stall_reactor(self) -> defer.Deferred:
        own = FreeRadius(self.tmp / "paused", executable=self.radius.executable)
        own.start()
        self.addCleanup(own.stop)
        client = self.make_client([own.server])
        ticker = StallTicker()

        async def run() -> None:
            assert own.process is not None
            os.kill(own.process.pid, signal.SIGSTOP)
            try:
                ticker.start()
                with self.assertRaises(BackendUnavailable):
                    await client.chap_verify(*_fields(chap_request("pe1", b"pe1-secret")))
                ticker.stop()
            finally:
                os.kill(own.process.pid, signal.SIGCONT)
            self.assertGreater(len(ticker.gaps), 10)
            self.assertLess(max(ticker.gaps), 0.2)
            decision = await client.chap_verify(*_fields(chap_request("pe1", b"pe1-secret")))
            self.assertTrue(decision.accepted)

        return defer.ensureDeferred(run())


    def test_unsigned_replies_are_dropped(self) -> defer.Deferred:
        """A FreeRADIUS 3.2.1 site without the Message-Authenticator lines
        answers unsigned: every reply is dropped, the request fails as
        unavailable (never as accepted or refused)."""
        own = FreeRadius(self.tmp / "unsigned", executable=self.radius.executable)
        own.configure()
        site = own.raddb / "sites-enabled" / "rserpool"
        text = site.read_text()
        self.assertEqual(text.count("&Message-Authenticator := 0x00"), 2)
        site.write_text(text.replace("&Message-Authenticator := 0x00", '&Reply-Message := "unsigned"'))
        own.start()
        self.addCleanup(own.stop)
        client = self.make_client([own.server])

        async def run() -> None:
            with self.assertRaises(BackendUnavailable):
                await client.chap_verify(*_fields(chap_request("pe1", b"pe1-secret")))
            self.assertEqual(client.stats["dropped"], RETRIES + 1)
            self.assertEqual(client.stats["accepts"] + client.stats["rejects"], 0)

        return defer.ensureDeferred(run())

def _fields(request: Any) -> tuple[str, int, bytes, bytes]:
    return request.identity, request.identifier, request.challenge, request.response
