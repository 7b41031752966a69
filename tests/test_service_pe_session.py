"""The pool element's end of the PU-PE session layer (``SessionServer``,
``AcceptedSession``, ``listen_sessions``), driven by a raw PU channel.

Everything runs on ``tests.memnet.MemoryNetwork``: real TLS over in-memory
connections on a ``task.Clock``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import endpoints
from twisted.logger import LogLevel, globalLogPublisher

from rserpool.security import tls
from rserpool.service.channel import Channel, ChannelSettings, tls_client_endpoint
from rserpool.service.pe_session import AcceptedSession, SessionServer, listen_sessions
from rserpool.wire import (
    AsapBusinessCard, AsapCookie, AsapCookieEcho, AsapHandleResolution, PPID_ASAP,
)
from tests.asaphelpers import make_pe
from tests.memnet import MemoryNetwork
from tests.tlshelpers import TestPKI, make_test_pki

POOL = b"echo"
DATA_PPID = 0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_test_pki(Path(tmp_path_factory.mktemp("pki")))


class Recorder:
    """The PE application: records every call, echoes data."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.sessions: list[AcceptedSession] = []

    def session_started(self, session: AcceptedSession) -> None:
        self.sessions.append(session)
        self.calls.append(("start",))

    def cookie_echoed(self, session: AcceptedSession, cookie: bytes) -> None:
        self.calls.append(("echo", cookie))

    def business_card_received(self, session: AcceptedSession, pool_handle: bytes,
                               pool_elements: Any) -> None:
        self.calls.append(("card", pool_handle, tuple(pe.pe_id for pe in pool_elements)))

    def data_received(self, session: AcceptedSession, payload: bytes) -> None:
        self.calls.append(("data", payload))
        session.send(b"echo:" + payload)

    def session_ended(self, session: AcceptedSession, reason: Any) -> None:
        self.calls.append(("end",))


class RawPu:
    """A PU end that speaks the TCP mapping directly (no session logic)."""

    def __init__(self, net: MemoryNetwork, port: int, pki: TestPKI, *, use_tls: bool = True,
                 client_cert: Any = None) -> None:
        self.messages: list[Any] = []
        self.data: list[tuple[int, bytes]] = []
        self.ready = False
        self.closed = False
        self.channel = Channel(self, net, ChannelSettings(), tls=use_tls, initiator=True)
        tcp = endpoints.TCP4ClientEndpoint(net, "127.0.0.1", port)
        if use_tls:
            creator = tls.client_options("127.0.0.1", [pki.ca.cert], client_cert=client_cert)
            tcp = tls_client_endpoint(creator, tcp, net)
        endpoints.connectProtocol(tcp, self.channel)
        net.run()

    def channel_ready(self, channel: Channel) -> None:
        self.ready = True

    def message_received(self, channel: Channel, message: Any, now: float) -> None:
        self.messages.append(message)

    def wire_error(self, channel: Channel, ppid: int, error: Any, now: float) -> None:
        self.messages.append(error)

    def data_received(self, channel: Channel, ppid: int, payload: bytes, now: float) -> None:
        self.data.append((ppid, payload))

    def channel_closed(self, channel: Channel, reason: Any) -> None:
        self.closed = True


class Pe:
    def __init__(self, pki: TestPKI, **kwargs: Any) -> None:
        self.net = MemoryNetwork()
        self.pki = pki
        self.app = Recorder()
        self.server = SessionServer(self.app, reactor=self.net, **kwargs)
        options = tls.server_options(pki.server.cert, pki.server.key, [pki.ca.cert],
                                     require_client_cert=False)
        listening = listen_sessions(self.net, "tcp:0:interface=127.0.0.1", self.server, options)
        self.port = listening.result.getHost().port

    def pu(self, **kwargs: Any) -> RawPu:
        return RawPu(self.net, self.port, self.pki, **kwargs)


@pytest.fixture
def logged() -> Any:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def test_a_session_starts_after_the_handshake_with_the_pu_certificate(pki: TestPKI) -> None:
    pe = Pe(pki)
    pu = pe.pu(client_cert=pki.pu1.pair)
    assert pu.ready and pe.app.calls == [("start",)]
    (session,) = pe.app.sessions
    assert pe.server.sessions == {session} and session.ready
    assert session.peer_certificate.serial_number == pki.pu1.serial
    anonymous = pe.pu()
    assert anonymous.ready and pe.app.sessions[1].peer_certificate is None


def test_cookie_and_business_card_reach_the_pu(pki: TestPKI) -> None:
    pe = Pe(pki)
    pu = pe.pu()
    session = pe.app.sessions[0]
    session.send_cookie(b"state-1")
    session.send_business_card(POOL, [make_pe(0xB, 7001), make_pe(0xC, 7002)])
    pe.net.run()
    assert pu.messages[0] == AsapCookie(b"state-1")
    assert type(pu.messages[1]) is AsapBusinessCard
    assert [p.pe_id for p in pu.messages[1].pool_elements] == [0xB, 0xC]
    with pytest.raises(ValueError):  # the bound of PeSessionSettings, before sending
        session.send_cookie(b"x" * 9000)


def test_only_a_first_cookie_echo_reaches_the_application(pki: TestPKI, logged: Any) -> None:
    pe = Pe(pki)
    pu = pe.pu()
    pu.channel.send(AsapCookieEcho(b"sealed"))
    pu.channel.send(AsapCookieEcho(b"swapped"))
    pu.channel.send(AsapBusinessCard(b"pu-pool", (make_pe(0xD, 7004),)))
    pe.net.run()
    assert pe.app.calls == [("start",), ("echo", b"sealed"), ("card", b"pu-pool", (0xD,))]
    ignored = [e for e in logged if e.get("log_namespace") == "rserpool.service.pe_session"
               and e.get("what") == "ASAP_COOKIE_ECHO"]
    assert len(ignored) == 1 and "already echoed" in ignored[0]["why"]
    later = pe.pu()
    later.channel.send_encoded(DATA_PPID, b"data first")
    later.channel.send(AsapCookieEcho(b"too late"))
    pe.net.run()
    assert ("echo", b"too late") not in pe.app.calls
    assert later.data == [(DATA_PPID, b"echo:data first")]


def test_data_on_another_ppid_is_dropped(pki: TestPKI, logged: Any) -> None:
    pe = Pe(pki, ppid=47)
    pu = pe.pu()
    pu.channel.send_encoded(48, b"wrong channel")
    pu.channel.send_encoded(47, b"right channel")
    pe.net.run()
    assert pe.app.calls == [("start",), ("data", b"right channel")]
    assert pu.data == [(47, b"echo:right channel")]
    drops = [e for e in logged if e.get("log_namespace") == "rserpool.service.pe_session"
             and e.get("ppid") == 48]
    assert len(drops) == 1 and drops[0]["log_level"] is LogLevel.warn and drops[0]["size"] == 13
    with pytest.raises(ValueError):
        SessionServer(Recorder(), reactor=pe.net, ppid=PPID_ASAP)


def test_an_undecodable_control_message_keeps_the_session(pki: TestPKI, logged: Any) -> None:
    pe = Pe(pki)
    pu = pe.pu()
    pu.channel.send_encoded(PPID_ASAP, b"\x0b\x00\x00\x05x")  # a truncated message
    pu.channel.send(AsapHandleResolution(POOL))  # decodes, but a PE does not expect it
    pu.channel.send_encoded(DATA_PPID, b"still here")
    pe.net.run()
    assert not pu.closed and pe.app.calls == [("start",), ("data", b"still here")]
    warnings = [e for e in logged if e.get("log_namespace") == "rserpool.service.pe_session"
                and e["log_level"] is LogLevel.warn]
    assert len(warnings) == 1 and "undecodable" in warnings[0]["log_format"]


def test_sessions_over_the_limit_are_refused_and_the_count_recovers(pki: TestPKI) -> None:
    pe = Pe(pki, max_sessions=2)
    first, second, third = pe.pu(), pe.pu(), pe.pu()
    assert first.ready and second.ready
    assert third.closed and not third.ready
    assert len(pe.server.sessions) == 2
    first.channel.close()
    pe.net.run()
    assert len(pe.server.sessions) == 1 and ("end",) in pe.app.calls
    fourth = pe.pu()
    assert fourth.ready and len(pe.server.sessions) == 2


def test_abort_all_ends_every_session(pki: TestPKI) -> None:
    pe = Pe(pki)
    pus = [pe.pu(), pe.pu()]
    pe.server.abort_all()
    pe.net.run()
    assert all(pu.closed for pu in pus)
    assert pe.server.sessions == set() and pe.app.calls.count(("end",)) == 2
    assert all(not session.ready for session in pe.app.sessions)
    pe.app.sessions[0].send(b"after the end")  # nothing to send on: ignored
    pe.net.run()


def test_sessions_need_tls_unless_plaintext_is_asked_for(pki: TestPKI, logged: Any) -> None:
    net = MemoryNetwork()
    server = SessionServer(Recorder(), reactor=net)
    with pytest.raises(ValueError, match="need TLS"):
        listen_sessions(net, "tcp:0:interface=127.0.0.1", server, None)
    assert net.listening == {}
    port = listen_sessions(net, "tcp:0:interface=127.0.0.1", server, None,
                           allow_plaintext=True).result
    critical = [e for e in logged if e["log_level"] is LogLevel.critical]
    assert len(critical) == 1 and "WITHOUT TLS" in critical[0]["log_format"]
    pu = RawPu(net, port.getHost().port, pki, use_tls=False)
    assert pu.ready and server.application.sessions[0].peer_certificate is None
