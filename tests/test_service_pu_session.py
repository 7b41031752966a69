"""The pool user's end of the PU-PE session layer (``SessionClient``) against
real ``SessionServer`` PEs: cookie echo, business cards, failover with the
application's callback gating the data.

Everything runs on ``tests.memnet.MemoryNetwork``: real TLS (the test PKI,
pyOpenSSL memory BIOs) over in-memory connections on a ``task.Clock``, so
every wait is a step of the test clock, never of the wall clock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

from rserpool.asap.pu_session import PuSessionSettings, PuState
from rserpool.asap.session import SessionClosedError
from rserpool.security import tls
from rserpool.service.channel import ChannelSettings
from rserpool.service.pe_session import SessionServer, listen_sessions
from rserpool.service.pu_session import SessionClient, pe_tls_options
from tests.asaphelpers import make_pe
from tests.memnet import MemoryNetwork
from tests.tlshelpers import TestPKI, make_test_pki

POOL = b"echo"


class EchoApp:
    """PE application: sends a cookie (and optionally a business card) to
    every PU, echoes data prefixed with its name, records everything."""

    def __init__(self, name: bytes, card: Any = None) -> None:
        self.name = name
        self.card = card
        self.events: list[tuple] = []
        self.sessions: list[Any] = []

    def session_started(self, session: Any) -> None:
        self.sessions.append(session)
        self.events.append(("start",))
        session.send_cookie(b"cookie-" + self.name)
        if self.card is not None:
            session.send_business_card(POOL, self.card)

    def cookie_echoed(self, session: Any, cookie: bytes) -> None:
        self.events.append(("echo", cookie))

    def business_card_received(self, session: Any, pool_handle: bytes, pool_elements: Any) -> None:
        self.events.append(("card", pool_handle))

    def data_received(self, session: Any, payload: bytes) -> None:
        self.events.append(("data", payload))
        session.send(self.name + b":" + payload)

    def session_ended(self, session: Any, reason: Any) -> None:
        self.events.append(("end",))


class PE:
    """One echo PE listening on the memory network."""

    def __init__(self, net: MemoryNetwork, pki: TestPKI, name: bytes, pe_id: int, *,
                 card: Any = None, channel_settings: ChannelSettings | None = None) -> None:
        self.net = net
        self.app = EchoApp(name, card)
        self.server = SessionServer(self.app, reactor=net, channel_settings=channel_settings)
        options = tls.server_options(pki.server.cert, pki.server.key, require_client_cert=False)
        listening = listen_sessions(net, "tcp:0:interface=127.0.0.1", self.server, options)
        self.port = _result(listening)
        self.pe = make_pe(pe_id, self.port.getHost().port)

    def kill(self) -> None:
        """The PE dies: its listener closes and its connections drop."""
        self.port.stopListening()
        self.server.abort_all()
        self.net.run()


def _result(d: defer.Deferred) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    if isinstance(out[0], Exception) or hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_test_pki(Path(tmp_path_factory.mktemp("pki")))


class Harness:
    def __init__(self, pki: TestPKI) -> None:
        self.pki = pki
        self.net = MemoryNetwork()
        self.received: list[bytes] = []
        self.reports: list[tuple[bytes, int]] = []

    def pe(self, name: bytes, pe_id: int, **kwargs: Any) -> PE:
        return PE(self.net, self.pki, name, pe_id, **kwargs)

    def client(self, selector: Any, callback: Any = None, *, pe_name: str | None = None,
               channel_settings: ChannelSettings | None = None, **settings: Any) -> SessionClient:
        return SessionClient(
            POOL, reactor=self.net, selector=selector,
            report_unreachable=lambda handle, pe_id: self.reports.append((handle, pe_id)),
            tls_options_for=pe_tls_options([self.pki.ca.cert], pe_name=pe_name),
            on_data=self.received.append, failover_callback=callback,
            settings=PuSessionSettings(backoff_initial=0.05, backoff_max=0.2, **settings),
            channel_settings=channel_settings or ChannelSettings(heartbeat_interval=0.5,
                                                                 dead_after=2.0),
            connect_timeout=5.0,
        )

    def start(self, client: SessionClient) -> Any:
        started = client.start()
        self.net.run()
        return _result(started)


@pytest.fixture
def h(pki: TestPKI) -> Harness:
    return Harness(pki)


def offering(*pes: PE) -> Any:
    offers = [pe.pe for pe in pes]
    return lambda handle: defer.succeed(offers.pop(0))


def test_failover_echoes_cookie_first_and_callback_gates_data(h: Harness) -> None:
    a, b = h.pe(b"A", 0xA), h.pe(b"B", 0xB)
    offers = [a.pe, b.pe]
    selected: list[int] = []

    def selector(handle: bytes) -> defer.Deferred:
        assert handle == POOL
        pe = offers.pop(0)
        selected.append(pe.pe_id)
        return defer.succeed(pe)

    gate: defer.Deferred = defer.Deferred()
    calls: list[tuple] = []

    def failover(old: Any, new: Any, echoed: bool) -> defer.Deferred:
        calls.append((old.pe_id, new.pe_id, echoed))
        return gate

    client = h.client(selector, failover)
    assert h.start(client).pe_id == 0xA
    client.send(b"one")
    h.net.run()
    assert h.received == [b"A:one"]
    assert client.core.cookie == b"cookie-A"
    assert a.app.events[:2] == [("start",), ("data", b"one")]

    a.kill()
    assert calls == [(0xA, 0xB, True)]
    assert client.state is PuState.RESUMING
    assert h.reports == [(POOL, 0xA)] and selected == [0xA, 0xB]
    # Data sent now waits for the callback's Deferred, however long it takes.
    client.send(b"two")
    h.net.pass_time(1.0)
    assert b.app.events == [("start",), ("echo", b"cookie-A")]
    assert b"B:two" not in h.received

    gate.callback(None)
    h.net.run()
    client.send(b"three")
    h.net.run()
    assert h.received == [b"A:one", b"B:two", b"B:three"]
    assert b.app.events == [("start",), ("echo", b"cookie-A"), ("data", b"two"),
                            ("data", b"three")]
    assert client.core.cookie == b"cookie-B"  # B's own cookie replaced A's
    assert client.failovers == 1 and h.reports == [(POOL, 0xA)]


def test_silent_pe_is_detected_by_heartbeats(h: Harness) -> None:
    # A hangs: it stops reading and never sends a heartbeat of its own; the
    # connection stays open.  The PU's heartbeats (every 0.5 s) go unanswered
    # and after dead_after (2 s) it fails over to B.
    quiet = ChannelSettings(heartbeat_interval=100.0, dead_after=200.0)
    a, b = h.pe(b"A", 0xA, channel_settings=quiet), h.pe(b"B", 0xB)
    client = h.client(offering(a, b))
    h.start(client)
    client.send(b"x")
    h.net.run()
    assert h.received == [b"A:x"]
    (session,) = a.server.sessions
    session.channel.transport.pauseProducing()
    h.net.pass_time(1.9)
    assert client.current_pe.pe_id == 0xA and h.reports == []
    assert b.app.events == []
    h.net.pass_time(0.2)
    assert h.reports == [(POOL, 0xA)]
    h.net.pass_time(0.5)
    assert client.state is PuState.ESTABLISHED and client.current_pe.pe_id == 0xB
    assert b.app.events == [("start",), ("echo", b"cookie-A")]
    client.send(b"y")
    h.net.run()
    assert h.received == [b"A:x", b"B:y"]


def test_close_during_the_failover_callback_and_session_limit(h: Harness) -> None:
    a, b, c = h.pe(b"A", 0xA), h.pe(b"B", 0xB), h.pe(b"C", 0xC)
    b.server.max_sessions = 0  # B refuses every session
    pending: defer.Deferred = defer.Deferred()
    called: list[int] = []

    def failover(old: Any, new: Any, echoed: bool) -> defer.Deferred:
        called.append(new.pe_id)
        return pending

    client = h.client(offering(a, b, c), failover)
    h.start(client)
    a.kill()
    h.net.pass_time(1.0)
    assert called == [0xC]  # B dropped the connection: reported, skipped
    assert h.reports == [(POOL, 0xA), (POOL, 0xB)]
    client.send(b"held")
    closing = client.close()
    h.net.run()
    _result(closing)
    assert pending.called  # cancelled: no timer outlives the session
    assert client.state is PuState.CLOSED
    with pytest.raises(SessionClosedError):
        client.send(b"late")
    assert ("data", b"held") not in c.app.events
    assert h.net.getDelayedCalls() == []


def test_business_card_order_is_followed(h: Harness) -> None:
    # C is in the card but dead (its port is closed): tried, reported, skipped.
    c = h.pe(b"C", 0xC)
    c.kill()
    b = h.pe(b"B", 0xB)
    a = h.pe(b"A", 0xA, card=(c.pe, b.pe))
    offers = [a.pe]
    client = h.client(lambda handle: offers.pop(0))
    h.start(client)
    client.send(b"x")
    h.net.run()
    assert h.received == [b"A:x"]
    assert [p.pe_id for p in client.core.business_card] == [0xC, 0xB]

    a.kill()
    h.net.pass_time(1.0)
    assert ("echo", b"cookie-A") in b.app.events
    client.send(b"y")
    h.net.run()
    assert h.received == [b"A:x", b"B:y"]
    assert h.reports == [(POOL, 0xA), (POOL, 0xC)]
    assert offers == []  # the selector was not needed
    assert ("127.0.0.1", c.pe.user_transport.port) in h.net.refused


def test_wrong_pe_certificate_name_is_a_failed_pe_and_attempts_are_bounded(h: Harness) -> None:
    a = h.pe(b"A", 0xA)
    client = h.client(lambda handle: a.pe, pe_name="other.rserpool.test", max_attempts=3)
    client.send(b"queued before start")
    started = client.start()
    h.net.pass_time(5.0)
    failures: list[Any] = []
    started.addErrback(failures.append)
    assert len(failures) == 1 and failures[0].check(SessionClosedError)
    assert "3 attempts" in str(failures[0].value)
    assert client.state is PuState.FAILED
    assert h.reports == [(POOL, 0xA)]  # reported once, tried three times
    assert len([e for e in a.app.events if e == ("start",)]) == 0  # no handshake finished
    assert h.received == []


def test_failover_callback_failure_drops_the_new_pe(h: Harness) -> None:
    a, b, c = h.pe(b"A", 0xA), h.pe(b"B", 0xB), h.pe(b"C", 0xC)

    def failover(old: Any, new: Any, echoed: bool) -> None:
        if new.pe_id == 0xB:
            raise RuntimeError("no trust in B")
        return None

    client = h.client(offering(a, b, c), failover)
    h.start(client)
    a.kill()
    h.net.pass_time(1.0)
    assert client.state is PuState.ESTABLISHED and client.current_pe.pe_id == 0xC
    client.send(b"z")
    h.net.run()
    assert h.received == [b"C:z"]
    assert h.reports == [(POOL, 0xA)]  # B was reachable: not reported
    assert ("data", b"z") not in b.app.events


def test_handshake_that_never_finishes_times_out(h: Harness) -> None:
    # A accepts the TCP connection but never reads: no TLS handshake.  After
    # connect_timeout (5 s; the channel's own dead-peer limit is longer
    # here) the attempt fails and B is tried.
    a, b = h.pe(b"A", 0xA), h.pe(b"B", 0xB)
    client = h.client(offering(a, b),
                      channel_settings=ChannelSettings(heartbeat_interval=10.0, dead_after=30.0))
    started = client.start()
    h.net.advance(0)  # the connection is made ...
    (link,) = h.net.links_to(a.port.getHost().port)
    link.hang_server()  # ... and A never answers
    h.net.pass_time(4.9)
    assert not started.called and client.state is PuState.CONNECTING
    h.net.pass_time(0.5)
    assert _result(started).pe_id == 0xB
    assert h.reports == [(POOL, 0xA)]
