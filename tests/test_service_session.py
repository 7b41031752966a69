"""The PU-PE session layer over real loopback TLS: cookie echo, business
cards, failover with the application's callback gating the data."""

from __future__ import annotations

import tempfile
from pathlib import Path

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from rserpool.asap.session import PuSessionSettings, PuState, SessionClosedError
from rserpool.security import tls
from rserpool.service.channel import ChannelSettings
from rserpool.service.session import (
    SessionClient, SessionServer, listen_sessions, pe_tls_options,
)
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
    def start_pe(self, name: bytes, pe_id: int, card=None):
        app = EchoApp(name, card)
        server = SessionServer(app, reactor=reactor)
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
