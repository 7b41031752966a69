"""A registrar and demo echo PEs on loopback over real TLS, for the tests of
the demo and of the ``rserpool echo`` command.

``EchoPoolCase`` (a trial TestCase base) starts a registrar before each
test, ``start_echo_pe`` adds echo PEs registered through the PE library, and
``tearDown`` stops everything and waits, through the Deferreds the services
and channels return, until every connection has closed: no sleep.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer, reactor
from twisted.trial import unittest

from rserpool.security import tls
from tests.tlshelpers import make_test_pki

__all__ = ["EchoPoolCase", "RecordingEcho"]


class RecordingEcho:
    """Wraps an EchoSessionApplication and records what each session saw."""

    def __init__(self, inner: Any, name: bytes) -> None:
        self.inner = inner
        self.name = name
        self.events: list[tuple] = []

    def __getattr__(self, attr: str) -> Callable[..., Any]:
        method = getattr(self.inner, attr)

        def call(session: Any, *args: Any) -> Any:
            self.events.append((attr, *args))
            return method(session, *args)

        return call


def abort_sessions(server: Any) -> defer.Deferred:
    """Drop every session of a ``SessionServer``; fires once all are closed."""
    closing = [session.channel.closed_deferred() for session in list(server.sessions)
               if session.channel is not None]
    server.abort_all()
    return defer.DeferredList(closing)


class EchoPoolCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls._tmp = tempfile.TemporaryDirectory()
        cls.pki = make_test_pki(Path(cls._tmp.name))

    @classmethod
    def tearDownClass(cls) -> None:
        cls._tmp.cleanup()

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        from tests.asaphelpers import registrar_port, start_registrar

        self.registrar = yield start_registrar(reactor, self.pki)
        self.registrar_port = registrar_port(self.registrar)
        self.stoppables: list[Callable[[], Any]] = []

    @defer.inlineCallbacks
    def tearDown(self) -> Any:
        for stop in reversed(self.stoppables):
            yield stop()
        yield self.registrar.stopService()

    @defer.inlineCallbacks
    def start_echo_pe(self, name: bytes, identity: Any, key: bytes) -> Any:
        """An echo PE with the session application, registered; returns
        ``(echo_pe, session_server, recorder)``."""
        from rserpool.demo.echo_pe import EchoPoolElement
        from rserpool.demo.echo_session import echo_session_server
        from rserpool.service.candidates import RegistrarCandidates

        server = echo_session_server(reactor, cookie_key=key)
        recorder = RecordingEcho(server.application, name)
        server.application = recorder
        options = tls.server_options(self.pki.server.cert, self.pki.server.key,
                                     require_client_cert=False)
        echo = EchoPoolElement(
            reactor, server_tls_options=options, protocol_factory=server,
            candidates=RegistrarCandidates(static=[f"127.0.0.1:{self.registrar_port} localhost"]),
            tls_options_factory=lambda host: tls.client_options(host, [self.pki.ca.cert],
                                                                client_cert=identity.pair),
            hunt_options=dict(t5_initial=1.0, attempt_timeout=2.0))
        yield echo.start()
        yield echo.pe.registered().addTimeout(10, reactor)

        @defer.inlineCallbacks
        def stop() -> Any:
            yield abort_sessions(server)
            if echo.running:
                yield echo.stopService()

        self.stoppables.append(stop)
        return echo, server, recorder
