"""rserpool.demo.echo_session: the echo PE's session application refuses a
cookie it did not seal (a real registrar and echo PE over loopback TLS)."""

from __future__ import annotations

from twisted.internet import defer, reactor

from rserpool.security import tls
from rserpool.wire import AsapCookieEcho
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
