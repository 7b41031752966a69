"""rserpool.demo.echo_session: the echo PE's session application refuses a
cookie it did not seal, an older cookie of a session and a cookie whose
session is already live (a real registrar and echo PE over loopback TLS)."""

from __future__ import annotations

from twisted.internet import defer, reactor

from rserpool.asap.session import DEFAULT_DATA_PPID, CookieSealer
from rserpool.security import tls
from rserpool.wire import AsapCookie, AsapCookieEcho
from tests.asaphelpers import connect_raw
from tests.echohelpers import EchoPoolCase


class EchoSessionWithRegistrar(EchoPoolCase):
    @defer.inlineCallbacks
    def test_forged_cookie_is_refused_by_the_echo_pe(self):
        echo, server, recorder = yield self.start_echo_pe(b"A", self.pki.pe1, b"k" * 32)
        raw = yield connect_raw(reactor, echo.address[1],
                                tls.client_options("127.0.0.1", [self.pki.ca.cert]))
        raw.send(AsapCookieEcho(b"forged" * 10))
        yield raw.closed.addTimeout(10, reactor)
        self.assertEqual(recorder.inner.cookies_refused, 1)

    @defer.inlineCallbacks
    def test_stale_and_cloned_cookies_are_refused_by_the_echo_pe(self):
        """Freshness (docs/sessions.md): an older cookie cannot roll the
        count back, and one cookie cannot run two sessions at once."""
        key = b"k" * 32
        echo, server, recorder = yield self.start_echo_pe(b"A", self.pki.pe1, key)
        port = echo.address[1]
        creator = tls.client_options("127.0.0.1", [self.pki.ca.cert])
        sealer = CookieSealer(key, context=b"echo")

        def count(cookie: bytes) -> int:
            """The count sealed into ``cookie`` (its state: the 8 bytes before the tag)."""
            return int.from_bytes(cookie[-40:-32], "big")

        @defer.inlineCallbacks
        def echo_three(client):
            got = []
            for _ in range(3):
                client.channel.send_encoded(DEFAULT_DATA_PPID, b"hi")
                reply = yield client.next().addTimeout(10, reactor)
                self.assertIsInstance(reply, AsapCookie)
                got.append(reply.cookie)
            return got

        @defer.inlineCallbacks
        def resume(cookie):
            """A new connection that echoes ``cookie``; fires with the count
            of the next cookie, or None when the PE closed the session."""
            client = yield connect_raw(reactor, port, creator)
            self.clients.append(client)
            client.send(AsapCookieEcho(cookie))
            client.channel.send_encoded(DEFAULT_DATA_PPID, b"again")
            result, index = yield defer.DeferredList(
                [client.next(), client.closed], fireOnOneCallback=True,
                consumeErrors=True).addTimeout(10, reactor)
            return count(result.cookie) if index == 0 and isinstance(result, AsapCookie) else None

        self.clients = []
        self.addCleanup(lambda: [c.channel.abort() for c in self.clients
                                 if c.channel is not None and not c.channel.closed])
        first = yield connect_raw(reactor, port, creator)
        self.clients.append(first)
        c1, c2, c3 = yield echo_three(first)
        self.assertEqual([count(c) for c in (c1, c2, c3)], [1, 2, 3])
        self.assertEqual([sealer.open(c, reactor.seconds()).seq for c in (c1, c2, c3)], [1, 2, 3])
        # The latest cookie, echoed on a second connection while the first runs.
        self.assertIsNone((yield resume(c3)))
        first.channel.abort()
        yield first.closed.addTimeout(10, reactor)
        # An older cookie once the first connection is gone: no rollback.
        self.assertIsNone((yield resume(c1)))
        self.assertEqual(recorder.inner.cookies_refused, 2)
        # The latest cookie resumes the session where it was.
        self.assertEqual((yield resume(c3)), 4)
        self.assertEqual(recorder.inner.cookies_accepted, 1)
