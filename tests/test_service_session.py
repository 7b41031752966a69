"""The PU-PE session layer over real loopback TLS: cookie echo, business
cards, failover with the application's callback gating the data."""

from __future__ import annotations

import tempfile
from pathlib import Path

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from rserpool.asap.pu_session import PuSessionSettings, PuState
from rserpool.asap.session import SessionClosedError
from rserpool.security import tls
from rserpool.service.channel import ChannelSettings
from rserpool.service.pe_session import SessionServer, listen_sessions
from rserpool.service.pu_session import SessionClient, pe_tls_options
from tests.asaphelpers import make_pe
from tests.tlshelpers import make_test_pki

POOL = b"echo"


class EchoApp:
    """PE application: sends a cookie (and optionally a business card) to
    every PU, echoes data prefixed with its name, records everything."""

    def __init__(self, name: bytes, card=None) -> None:
        self.name = name
        self.card = card
        self.events: list[tuple] = []
        self.sessions = []
        self._watchers: list[tuple] = []

    def _note(self, event: tuple) -> None:
        self.events.append(event)
        for item in list(self._watchers):
            predicate, d = item
            if predicate(self.events):
                self._watchers.remove(item)
                d.callback(list(self.events))

    def wait(self, predicate) -> defer.Deferred:
        if predicate(self.events):
            return defer.succeed(list(self.events))
        d = defer.Deferred()
        self._watchers.append((predicate, d))
        return d.addTimeout(10, reactor)

    def session_started(self, session) -> None:
        self.sessions.append(session)
        self._note(("start",))
        session.send_cookie(b"cookie-" + self.name)
        if self.card is not None:
            session.send_business_card(POOL, self.card)

    def cookie_echoed(self, session, cookie) -> None:
        self._note(("echo", cookie))

    def business_card_received(self, session, pool_handle, pool_elements) -> None:
        self._note(("card", pool_handle))

    def data_received(self, session, payload) -> None:
        self._note(("data", payload))
        session.send(self.name + b":" + payload)

    def session_ended(self, session, reason) -> None:
        self._note(("end",))


class SessionOverTLS(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.pki = make_test_pki(Path(cls._tmp.name))

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def setUp(self):
        self.ports = []
        self.servers = []
        self.clients = []
        self.received: list[bytes] = []
        self._data_waiters: list[tuple] = []

    @defer.inlineCallbacks
    def tearDown(self):
        for client in self.clients:
            yield client.close()
        for server in self.servers:
            server.abort_all()
        for port in self.ports:
            yield port.stopListening()
        # let aborted connections finish closing
        yield task.deferLater(reactor, 0.05, lambda: None)

    @defer.inlineCallbacks
    def start_pe(self, name: bytes, pe_id: int, card=None, channel_settings=None):
        app = EchoApp(name, card)
        server = SessionServer(app, reactor=reactor, channel_settings=channel_settings)
        options = tls.server_options(self.pki.server.cert, self.pki.server.key,
                                     require_client_cert=False)
        port = yield listen_sessions(reactor, "tcp:0:interface=127.0.0.1", server, options)
        self.ports.append(port)
        self.servers.append(server)
        return app, server, port, make_pe(pe_id, port.getHost().port)

    def on_data(self, payload: bytes) -> None:
        self.received.append(payload)
        for item in list(self._data_waiters):
            if item[0] == payload:
                self._data_waiters.remove(item)
                item[1].callback(payload)

    def wait_data(self, payload: bytes) -> defer.Deferred:
        if payload in self.received:
            return defer.succeed(payload)
        d = defer.Deferred()
        self._data_waiters.append((payload, d))
        return d.addTimeout(10, reactor)

    def make_client(self, selector, reports, callback=None, *, pe_name=None, **settings):
        client = SessionClient(
            POOL, reactor=reactor, selector=selector,
            report_unreachable=lambda handle, pe_id: reports.append((handle, pe_id)),
            tls_options_for=pe_tls_options([self.pki.ca.cert], pe_name=pe_name),
            on_data=self.on_data, failover_callback=callback,
            settings=PuSessionSettings(backoff_initial=0.05, backoff_max=0.2, **settings),
            channel_settings=ChannelSettings(heartbeat_interval=0.5, dead_after=2.0),
            connect_timeout=5.0,
        )
        self.clients.append(client)
        return client

    @defer.inlineCallbacks
    def wait_established(self, client, pe_id, timeout=10.0):
        """Poll (every 10 ms) until ``client`` is established with ``pe_id``."""
        waited = 0.0
        while not (client.state is PuState.ESTABLISHED and client.current_pe.pe_id == pe_id):
            if waited > timeout:
                self.fail(f"not established with 0x{pe_id:x}: {client.state}")
            yield task.deferLater(reactor, 0.01, lambda: None)
            waited += 0.01

    @defer.inlineCallbacks
    def kill(self, server, port):
        """The PE dies: its listener closes and its connections drop."""
        yield port.stopListening()
        self.ports.remove(port)
        server.abort_all()

    @defer.inlineCallbacks
    def test_failover_echoes_cookie_first_and_callback_gates_data(self):
        app_a, server_a, port_a, pe_a = yield self.start_pe(b"A", 0xA)
        app_b, server_b, port_b, pe_b = yield self.start_pe(b"B", 0xB)
        offers = [pe_a, pe_b]
        selected = []

        def selector(handle):
            self.assertEqual(handle, POOL)
            pe = offers.pop(0)
            selected.append(pe.pe_id)
            return defer.succeed(pe)

        gate = defer.Deferred()
        called = defer.Deferred()
        calls = []

        def failover(old, new, echoed):
            calls.append((old.pe_id, new.pe_id, echoed))
            called.callback(None)
            return gate

        reports = []
        client = self.make_client(selector, reports, failover)
        pe = yield client.start()
        self.assertEqual(pe.pe_id, 0xA)
        client.send(b"one")
        yield self.wait_data(b"A:one")
        self.assertEqual(client.core.cookie, b"cookie-A")
        self.assertEqual(app_a.events[:2], [("start",), ("data", b"one")])

        yield self.kill(server_a, port_a)
        yield called.addTimeout(10, reactor)
        self.assertEqual(calls, [(0xA, 0xB, True)])
        self.assertEqual(client.state, PuState.RESUMING)
        self.assertEqual(reports, [(POOL, 0xA)])
        self.assertEqual(selected, [0xA, 0xB])
        # data sent now waits for the callback's Deferred
        client.send(b"two")
        yield app_b.wait(lambda ev: ("echo", b"cookie-A") in ev)
        yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(app_b.events, [("start",), ("echo", b"cookie-A")])
        self.assertNotIn(b"B:two", self.received)

        gate.callback(None)
        yield self.wait_data(b"B:two")
        client.send(b"three")
        yield self.wait_data(b"B:three")
        self.assertEqual(app_b.events, [("start",), ("echo", b"cookie-A"), ("data", b"two"),
                                        ("data", b"three")])
        self.assertEqual(client.core.cookie, b"cookie-B")  # B's own cookie replaced A's
        self.assertEqual(client.failovers, 1)
        self.assertEqual(reports, [(POOL, 0xA)])

    @defer.inlineCallbacks
    def test_silent_pe_is_detected_by_heartbeats(self):
        # A hangs: it stops reading and never sends a heartbeat of its own;
        # the TCP connection stays open.  The PU's heartbeats go unanswered
        # and after dead_after (2 s here) it fails over.
        quiet = ChannelSettings(heartbeat_interval=100.0, dead_after=200.0)
        app_a, server_a, _, pe_a = yield self.start_pe(b"A", 0xA, channel_settings=quiet)
        app_b, _, _, pe_b = yield self.start_pe(b"B", 0xB)
        offers = [pe_a, pe_b]
        reports = []
        client = self.make_client(lambda handle: offers.pop(0), reports)
        yield client.start()
        client.send(b"x")
        yield self.wait_data(b"A:x")
        (session,) = server_a.sessions
        session.channel.transport.pauseProducing()
        started = reactor.seconds()
        yield app_b.wait(lambda ev: ("echo", b"cookie-A") in ev)
        self.assertGreaterEqual(reactor.seconds() - started, 1.5)
        self.assertEqual(reports, [(POOL, 0xA)])
        yield self.wait_established(client, 0xB)
        client.send(b"y")
        yield self.wait_data(b"B:y")

    @defer.inlineCallbacks
    def test_close_during_the_failover_callback_and_session_limit(self):
        app_a, server_a, port_a, pe_a = yield self.start_pe(b"A", 0xA)
        app_b, server_b, _, pe_b = yield self.start_pe(b"B", 0xB)
        server_b.max_sessions = 0  # B refuses every session
        app_c, _, _, pe_c = yield self.start_pe(b"C", 0xC)
        offers = [pe_a, pe_b, pe_c]
        pending = defer.Deferred()
        called = defer.Deferred()

        def failover(old, new, echoed):
            reactor.callLater(0, called.callback, new.pe_id)  # resume the test afterwards
            return pending

        reports = []
        client = self.make_client(lambda handle: offers.pop(0), reports, failover)
        yield client.start()
        yield self.kill(server_a, port_a)
        new_id = yield called.addTimeout(10, reactor)
        self.assertEqual(new_id, 0xC)  # B dropped the connection: reported, skipped
        self.assertEqual(reports, [(POOL, 0xA), (POOL, 0xB)])
        client.send(b"held")
        yield client.close()
        self.assertTrue(pending.called)  # cancelled: no timer outlives the session
        self.assertEqual(client.state, PuState.CLOSED)
        with self.assertRaises(SessionClosedError):
            client.send(b"late")
        self.assertNotIn(("data", b"held"), app_c.events)

    @defer.inlineCallbacks
    def test_business_card_order_is_followed(self):
        # C is in the card but dead (its port is closed): tried, reported, skipped.
        _, server_c, port_c, pe_c = yield self.start_pe(b"C", 0xC)
        yield self.kill(server_c, port_c)
        app_b, _, _, pe_b = yield self.start_pe(b"B", 0xB)
        app_a, server_a, port_a, pe_a = yield self.start_pe(b"A", 0xA, card=(pe_c, pe_b))
        offers = [pe_a]
        reports = []
        client = self.make_client(lambda handle: offers.pop(0), reports)
        yield client.start()
        client.send(b"x")
        yield self.wait_data(b"A:x")
        self.assertEqual([p.pe_id for p in client.core.business_card], [0xC, 0xB])

        yield self.kill(server_a, port_a)
        yield app_b.wait(lambda ev: ("echo", b"cookie-A") in ev)
        client.send(b"y")
        yield self.wait_data(b"B:y")
        self.assertEqual(reports, [(POOL, 0xA), (POOL, 0xC)])
        self.assertEqual(offers, [])  # the selector was not needed

    @defer.inlineCallbacks
    def test_wrong_pe_certificate_name_is_a_failed_pe_and_attempts_are_bounded(self):
        _, _, _, pe_a = yield self.start_pe(b"A", 0xA)
        reports = []
        client = self.make_client(lambda handle: pe_a, reports, pe_name="other.rserpool.test",
                                  max_attempts=3)
        client.send(b"queued before start")
        try:
            yield client.start()
        except SessionClosedError as exc:
            self.assertIn("3 attempts", str(exc))
        else:
            self.fail("the session should have given up")
        self.assertEqual(client.state, PuState.FAILED)
        self.assertEqual(reports, [(POOL, 0xA)])  # reported once, tried three times
        self.assertEqual(self.received, [])

    @defer.inlineCallbacks
    def test_failover_callback_failure_drops_the_new_pe(self):
        app_a, server_a, port_a, pe_a = yield self.start_pe(b"A", 0xA)
        app_b, _, _, pe_b = yield self.start_pe(b"B", 0xB)
        _, _, _, pe_c = yield self.start_pe(b"C", 0xC)
        offers = [pe_a, pe_b, pe_c]

        def failover(old, new, echoed):
            if new.pe_id == 0xB:
                raise RuntimeError("no trust in B")
            return None

        reports = []
        client = self.make_client(lambda handle: offers.pop(0), reports, failover)
        yield client.start()
        yield self.kill(server_a, port_a)
        yield self.wait_established(client, 0xC)
        client.send(b"z")
        yield self.wait_data(b"C:z")
        self.assertEqual(reports, [(POOL, 0xA)])  # B was reachable: not reported
        self.assertNotIn(("data", b"z"), app_b.events)
        self.assertEqual(client.current_pe.pe_id, 0xC)


# --------------------------------------------------------------------------
# With the real registrar, PU library and echo PEs


class _RecordingEcho:
    """Wraps an EchoSessionApplication and records what each session saw."""

    def __init__(self, inner, name: bytes) -> None:
        self.inner = inner
        self.name = name
        self.events: list[tuple] = []

    def __getattr__(self, attr):
        method = getattr(self.inner, attr)

        def call(session, *args):
            self.events.append((attr, *args))
            return method(session, *args)

        return call


class _CliProcess:
    """Process protocol: writes stdin, collects stdout/stderr, fires on exit."""

    def __init__(self, stdin: bytes) -> None:
        from twisted.internet import protocol

        self.stdin = stdin
        self.out = b""
        self.err = b""
        self.ended = defer.Deferred()
        outer = self

        class _P(protocol.ProcessProtocol):
            def connectionMade(self):
                self.transport.write(outer.stdin)
                self.transport.closeStdin()

            def outReceived(self, data):
                outer.out += data

            def errReceived(self, data):
                outer.err += data

            def processEnded(self, reason):
                outer.ended.callback(reason.value.exitCode)

        self.protocol = _P()


class SessionWithRegistrar(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.pki = make_test_pki(Path(cls._tmp.name))

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    @defer.inlineCallbacks
    def setUp(self):
        from tests.asaphelpers import registrar_port, start_registrar

        self.registrar = yield start_registrar(reactor, self.pki)
        self.registrar_port = registrar_port(self.registrar)
        self.stoppables = []

    @defer.inlineCallbacks
    def tearDown(self):
        for item in reversed(self.stoppables):
            yield item()
        yield self.registrar.stopService()
        yield task.deferLater(reactor, 0.05, lambda: None)

    @defer.inlineCallbacks
    def start_echo_pe(self, name: bytes, identity, key: bytes):
        from rserpool.demo.echo_pe import EchoPoolElement
        from rserpool.demo.echo_session import echo_session_server
        from rserpool.service.candidates import RegistrarCandidates

        server = echo_session_server(reactor, cookie_key=key)
        recorder = _RecordingEcho(server.application, name)
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
        def stop():
            server.abort_all()
            if echo.running:
                yield echo.stopService()

        self.stoppables.append(stop)
        return echo, server, recorder

    @defer.inlineCallbacks
    def test_pool_user_fails_over_between_registered_echo_pes(self):
        from rserpool.demo.echo_client import EchoSession
        from rserpool.service.pu import PoolUser

        key = b"shared pool cookie key 0123456789"
        pes = {}
        for name, identity in ((b"A", self.pki.pe1), (b"B", self.pki.pe2)):
            echo, server, recorder = yield self.start_echo_pe(name, identity, key)
            pes[echo.pe.pe_id] = (echo, server, recorder)
        pu = PoolUser.connecting_to(reactor, [f"127.0.0.1:{self.registrar_port}"],
                                    [self.pki.ca.cert], server_name="localhost")
        self.stoppables.append(pu.stop)
        failovers = []
        session = EchoSession(
            reactor, selector=pu.select, report_unreachable=pu.report_unreachable,
            tls_options_for=pe_tls_options([self.pki.ca.cert]),
            settings=PuSessionSettings(backoff_initial=0.05, backoff_max=0.2),
            on_failover=lambda old, new, echoed: failovers.append((old.pe_id, new.pe_id, echoed)))
        self.stoppables.append(session.close)
        first = yield session.start().addTimeout(10, reactor)
        for word in (b"one", b"two"):
            echo = yield session.send(word).addTimeout(10, reactor)
            self.assertEqual(echo, word)
        first_echo, first_server, _ = pes[first.pe_id]
        (other_id,) = [pe_id for pe_id in pes if pe_id != first.pe_id]
        second_echo, _, second_recorder = pes[other_id]

        # The first PE dies: its sessions drop, then it goes away.
        first_server.abort_all()
        yield first_echo.stopService()
        echo = yield session.send(b"three").addTimeout(15, reactor)
        self.assertEqual(echo, b"three")
        self.assertEqual(failovers, [(first.pe_id, other_id, True)])
        self.assertEqual(session.client.current_pe.pe_id, other_id)
        # The new PE saw the sealed cookie first, accepted it and kept counting.
        kinds = [event[0] for event in second_recorder.events]
        self.assertEqual(kinds[:3], ["session_started", "cookie_echoed", "data_received"])
        self.assertEqual(second_recorder.inner.cookies_accepted, 1)
        server_session = next(iter(pes[other_id][1].sessions))
        self.assertEqual(server_session.state, 3)  # two on A, one on B
        echo = yield session.send(b"four").addTimeout(10, reactor)
        self.assertEqual(echo, b"four")
        self.assertEqual(pu.cached(b"echo") is None or all(
            pe.pe_id != first.pe_id for pe in pu.cached(b"echo")), True)

    @defer.inlineCallbacks
    def test_forged_cookie_is_refused_by_the_echo_pe(self):
        from rserpool.wire import AsapCookieEcho

        echo, server, recorder = yield self.start_echo_pe(b"A", self.pki.pe1, b"k" * 32)
        from tests.asaphelpers import connect_raw

        raw = yield connect_raw(reactor, echo.address[1],
                                tls.client_options("127.0.0.1", [self.pki.ca.cert]))
        raw.send(AsapCookieEcho(b"forged" * 10))
        yield raw.closed.addTimeout(10, reactor)
        self.assertEqual(recorder.inner.cookies_refused, 1)

    @defer.inlineCallbacks
    def test_echo_command(self):
        import os
        import sys

        yield self.start_echo_pe(b"A", self.pki.pe1, b"k" * 32)
        proc = _CliProcess(b"hello\nsecond line\n")
        args = [sys.executable, "-m", "rserpool.cli", "echo", "--registrar",
                f"127.0.0.1:{self.registrar_port}", "--registrar-name", "localhost",
                "--ca", str(self.pki.ca.cert), "--timeout", "10"]
        reactor.spawnProcess(proc.protocol, sys.executable, args, env=dict(os.environ))
        code = yield proc.ended.addTimeout(60, reactor)
        self.assertEqual(code, 0, proc.err.decode())
        self.assertEqual(proc.out, b"hello\nsecond line\n")
        self.assertIn(b"# connected to PE", proc.err)
