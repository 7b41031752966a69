"""Attacks at the registrar's admission gate (issue 12), each against the
SHIPPED configuration: etc/registrar.ini and etc/authz.rules as
``scripts/run`` starts them (``tests.shipped``), with the development PKI.

Most tests run the real registrar, the real PE library and real TLS over
``tests.memnet`` (in-memory connections on a test clock), so that minutes of
attack take a fraction of a second and nothing depends on the machine's
speed; the ones that measure latency run over loopback.  docs/threats.md
names each test next to the threat it attacks.
"""

from __future__ import annotations

import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import endpoints
from twisted.python.failure import Failure

from rserpool.asap.pe import PeSettings
from rserpool.backends.filestore_format import srp_line
from rserpool.security import exchange, pki, srp, tls
from rserpool.service.auth import AuthenticationError, PeAuthenticator
from rserpool.service.candidates import RegistrarCandidates
from rserpool.service.channel import Channel, ChannelSettings, tls_client_endpoint
from rserpool.service.pe import PoolElementService
from rserpool.wire import (
    AsapEndpointKeepAlive,
    AsapEndpointUnreachable,
    AsapHandleResolution,
    AsapRegistration,
    LeastUsedPolicy,
    OpaqueTransport,
    PoolElement,
    RoundRobinPolicy,
    TcpTransport,
)
from rserpool.wire.codes import CAUSE_SECURITY, CAUSE_UNKNOWN_POOL_HANDLE
from tests.asaphelpers import RawClient, make_pe
from tests.memnet import MemoryNetwork
from tests.shipped import dev_client_certificate, dev_pki, shipped_registrar

H = b"echo"


class Shipped:
    """A registrar built from the shipped files, on a MemoryNetwork."""

    def __init__(self, directory: Path, **kwargs: Any) -> None:
        self.directory = directory
        self.net = MemoryNetwork()
        # The clock starts at the wall-clock time: the development PKI's CRL
        # is re-signed on this clock and OpenSSL checks it against real time.
        self.net.advance(time.time())
        self.registrar = shipped_registrar(directory, self.net, **kwargs)
        self.registrar.startService()
        self.net.run()
        self.port = self.registrar.listening_addresses[0].port
        self.pki = dev_pki(directory)
        self.ca = [pki.load_certificate(self.pki / "ca.pem")]
        self.services: list[Any] = []

    def stop(self) -> None:
        for service in self.services:
            if service.running:
                service.stopService()
        self.registrar.stopService()
        self.net.run()

    def credentials(self, name: str) -> tuple[Path, Path]:
        """The development PKI's PE certificate ("pe1") or a new one for ``name``."""
        if name == "pe1":
            return self.pki / "pe.pem", self.pki / "pe.key"
        return dev_client_certificate(self.directory, name)

    def client(self, name: str | None = None, source: str = "127.0.0.1") -> RawClient:
        """A raw ASAP client over TLS from ``source``, with the certificate of
        ``name`` (None: anonymous), connected and ready."""
        client = RawClient()
        creator = tls.client_options("localhost", self.ca,
                                     client_cert=self.credentials(name) if name else None)
        tcp = endpoints.TCP4ClientEndpoint(self.net, "127.0.0.1", self.port, bindAddress=(source, 0))
        endpoints.connectProtocol(tls_client_endpoint(creator, tcp, self.net),
                                  Channel(client, self.net, ChannelSettings(), tls=True, initiator=True))
        self.net.run()
        assert client.ready.called, f"the client from {source} did not get a channel"
        return client

    def pool_element(self, pe_id: int, settings: PeSettings | None = None) -> PoolElementService:
        """The PE library with the development PE certificate, registering in "echo"."""
        service = PoolElementService(
            self.net, H, TcpTransport(7, IPv4Address("127.0.0.1")), LeastUsedPolicy(1),
            registration_life=3600, pe_id=pe_id, settings=settings,
            candidates=RegistrarCandidates(static=[f"127.0.0.1:{self.port} localhost"]),
            tls_options_factory=lambda name: tls.client_options(name, self.ca,
                                                                client_cert=self.credentials("pe1")))
        service.startService()
        self.services.append(service)
        self.net.run()
        assert service.is_registered
        return service


@pytest.fixture
def shipped(tmp_path: Path):
    world = Shipped(tmp_path)
    yield world
    world.stop()


def keepalives_seen(service: PoolElementService) -> list[float]:
    """Record when the PE library receives ENDPOINT_KEEP_ALIVEs."""
    seen: list[float] = []
    received = service.message_received

    def spy(channel: Any, message: Any, now: float) -> None:
        if type(message) is AsapEndpointKeepAlive:
            seen.append(now)
        received(channel, message, now)

    service.message_received = spy  # type: ignore[method-assign]
    return seen


# -- RFC 5355 2.13: unreachability reports against a healthy PE -----------------------------------


def test_three_anonymous_reporters_do_not_remove_a_healthy_pe(shipped: Shipped) -> None:
    # Issue 12: three anonymous TLS clients on three addresses each sent one
    # ENDPOINT_UNREACHABLE and the PE that answered its keep-alives was gone.
    pe = shipped.pool_element(0x2130)
    for n in range(3):
        reporter = shipped.client(source=f"127.0.0.{n + 2}")
        reporter.send(AsapEndpointUnreachable(H, 0x2130))
        shipped.net.run()
    shipped.net.pass_time(12.0)
    assert shipped.registrar.handlespace.get(H, 0x2130) is not None
    assert pe.is_registered
    assert shipped.registrar.core.stats["unreachable_reports"] == 3
    # ... and a pool user still gets it.
    pu = shipped.client(source="127.0.0.9")
    pu.send(AsapHandleResolution(H))
    shipped.net.run()
    (answer,) = pu.messages
    assert [element.pe_id for element in answer.pool_elements] == [0x2130]


def test_twelve_reporters_a_second_do_not_outrun_the_pes_keepalive_limit(shipped: Shipped) -> None:
    # Issue 12, the hardened option's failure: 8-12 anonymous reporters at
    # one report a second each made the registrar probe the PE once per
    # report; the PE library's RFC 5355 2.14 limiter dropped probes and the
    # live PE was removed.  Now the registrar probes a PE at most once per
    # keep-alive interval, and the PE always answers its home's spaced probes.
    pe = shipped.pool_element(0x2131)
    seen = keepalives_seen(pe)
    reporters = [shipped.client(source=f"127.0.1.{n}") for n in range(12)]
    for _ in range(90):  # a minute and a half, the reports spread over each second
        for reporter in reporters:
            reporter.send(AsapEndpointUnreachable(H, 0x2131))
            shipped.net.pass_time(1.0 / len(reporters), step=1.0 / len(reporters))
    assert shipped.registrar.handlespace.get(H, 0x2131) is not None
    assert pe.is_registered
    assert pe.stats["keepalives_dropped"] == 0
    assert shipped.registrar.core.stats["keepalive_timeouts"] == 0
    # Every keep-alive the PE got was at least half an interval after the last.
    interval = shipped.registrar.core.settings.keepalive_interval
    assert len(seen) >= 90 / (1.5 * interval) - 1
    assert min(b - a for a, b in zip(seen, seen[1:])) >= 0.5 * interval - 0.1
    # Even a PE whose keep-alive limit is far below the default stays: the
    # registrar's keep-alives are spaced, and the home's are always answered.
    tight = shipped.pool_element(0x2132, PeSettings(keepalive_rate=0.05, keepalive_burst=1))
    for _ in range(60):
        for reporter in reporters:
            reporter.send(AsapEndpointUnreachable(H, 0x2132))
            shipped.net.pass_time(1.0 / len(reporters), step=1.0 / len(reporters))
    assert shipped.registrar.handlespace.get(H, 0x2132) is not None
    assert tight.stats["keepalives_dropped"] == 0


def test_a_pe_that_leaves_the_probe_unanswered_is_removed(shipped: Shipped) -> None:
    # The protection must not keep a dead PE: one that stops answering goes
    # at its first unanswered probe (or periodic keep-alive).
    dead = shipped.client("pe1")
    dead.send(AsapRegistration(H, make_pe(0x2133, life=3600)))
    shipped.net.run()
    assert not dead.messages.pop(0).reject
    reporter = shipped.client(source="127.0.0.5")
    reporter.send(AsapEndpointUnreachable(H, 0x2133))
    shipped.net.run()
    assert [type(m) for m in dead.messages] == [AsapEndpointKeepAlive]  # the probe, never answered
    shipped.net.pass_time(shipped.registrar.core.settings.keepalive_timeout + 0.5)
    assert shipped.registrar.handlespace.get(H, 0x2133) is None
    assert shipped.registrar.core.stats["keepalive_timeouts"] == 1


# -- outsiders lock an identity out (SRP/CHAP failure budgets) ------------------------------------

PE1_PASSWORD = "correct horse battery staple"
AUTH_CHANGES = (
    (r"(?m)^authenticators = certificate$", "authenticators = certificate, srp, chap"),
    (r"(?m)^credentials =$", "credentials = credentials"),
    (r"(?m)^server_secret_file =$", "server_secret_file = server.secret"),
)


def _private(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


@pytest.fixture
def with_srp(tmp_path: Path):
    """The shipped registrar with the ASAP authentication extension on (SRP
    and CHAP from the credentials file); pe1 has only an SRP verifier."""
    salt, verifier = srp.make_verifier("pe1", PE1_PASSWORD)
    _private(tmp_path / "credentials", srp_line("pe1", salt, verifier) + "\n")
    _private(tmp_path / "server.secret", "0123456789abcdef0123456789abcdef\n")
    world = Shipped(tmp_path, changes=AUTH_CHANGES)
    yield world
    world.stop()


def authenticate(world: Shipped, secret: str, mechanism: str, source: str) -> tuple[RawClient, Any]:
    """Run the PE library's exchange as pe1 from ``source``: (client, outcome)."""
    client = world.client(source=source)
    outcome: list[Any] = []
    PeAuthenticator(world.net, "pe1", secret, preferences=(mechanism,),
                    timeout=30.0).authenticate(client.channel).addBoth(outcome.append)
    world.net.pass_time(3.0)  # the identity's slowdown is at most 2 s
    assert outcome, "the exchange did not finish"
    return client, outcome[0]


def test_failures_from_five_addresses_do_not_lock_the_pe_out(with_srp: Shipped) -> None:
    # Issue 12: five wrong CHAP responses for pe1 (which has only an SRP
    # verifier) from five addresses made pe1's correct SRP proof fail with
    # "rate limited" for about a minute.
    for n in range(5):
        _, failed = authenticate(with_srp, "wrong", exchange.MECH_CHAP_MD5, f"127.0.2.{n}")
        assert isinstance(failed, Failure) and failed.check(AuthenticationError)
        assert failed.value.event.code == exchange.FAIL_AUTHENTICATION
    pe, proved = authenticate(with_srp, PE1_PASSWORD, exchange.MECH_SRP_SHA256_2048, "127.0.0.1")
    assert isinstance(proved, exchange.Authenticated), proved
    pe.send(AsapRegistration(H, make_pe(0x2140, life=3600)))
    with_srp.net.run()
    assert not pe.messages[-1].reject
    assert with_srp.registrar.handlespace.get(H, 0x2140).identity == "pe1"
    assert with_srp.registrar.gate.attempts.slowed >= 1  # it waited, and was not refused


def test_one_failure_a_minute_does_not_keep_the_identity_locked(with_srp: Shipped) -> None:
    # Issue 12: after five failures, one more a minute kept pe1 locked.
    for n in range(5):
        authenticate(with_srp, "wrong", exchange.MECH_CHAP_MD5, f"127.0.2.{n}")
    slowed = []
    for minute in range(10):
        _, failed = authenticate(with_srp, "wrong", exchange.MECH_CHAP_MD5, f"127.0.3.{minute}")
        assert isinstance(failed, Failure)
        before = getattr(with_srp.registrar.gate.attempts, "slowed", 0)
        pe, proved = authenticate(with_srp, PE1_PASSWORD, exchange.MECH_SRP_SHA256_2048, "127.0.0.1")
        assert isinstance(proved, exchange.Authenticated), (minute, proved)
        slowed.append(with_srp.registrar.gate.attempts.slowed - before)
        pe.channel.close()
        with_srp.net.pass_time(54.0)
    # Slowed down at first, then not even that: one a minute is forgotten as it comes.
    assert slowed[0] == 1 and slowed[-5:] == [0] * 5, slowed


def test_one_address_guessing_at_pe1_is_stopped_without_stopping_pe1(with_srp: Shipped) -> None:
    # The guesser's own address runs out of attempts for pe1 (then of attempts
    # altogether); pe1 from its address is unaffected.
    codes = []
    for _ in range(7):
        _, failed = authenticate(with_srp, "wrong", exchange.MECH_SRP_SHA256_2048, "127.0.4.1")
        codes.append(failed.value.event.code)
    assert codes[:5] == [exchange.FAIL_AUTHENTICATION] * 5
    assert codes[5:] == [exchange.FAIL_RATE_LIMITED] * 2
    _, proved = authenticate(with_srp, PE1_PASSWORD, exchange.MECH_SRP_SHA256_2048, "127.0.0.1")
    assert isinstance(proved, exchange.Authenticated), proved


# -- Opaque Transport (parameter 0x10): no address the gate can check ---------------------------------

EVIL = OpaqueTransport(b"http://10.1.2.3:80/evil")


def opaque_pe(pe_id: int) -> PoolElement:
    return PoolElement(pe_id, 0, 3600, EVIL, RoundRobinPolicy())


def test_an_opaque_transport_is_refused_unless_the_rules_allow_it(shipped: Shipped) -> None:
    # Issue 12: pe1, allowed in "echo", registered an Opaque Transport holding
    # http://10.1.2.3:80/evil; no address to check, and every anonymous
    # resolution handed it out.
    pe = shipped.client("pe1")
    pe.send(AsapRegistration(H, opaque_pe(0x2150)))
    shipped.net.run()
    (refused,) = pe.messages
    assert refused.reject and refused.error.causes[0].code == CAUSE_SECURITY
    assert shipped.registrar.handlespace.get(H, 0x2150) is None
    # The refusal is remembered for the channel: the authorizer is not asked again.
    pe.send(AsapRegistration(H, opaque_pe(0x2151)))
    shipped.net.run()
    assert pe.messages[-1].reject
    pu = shipped.client(source="127.0.0.9")
    pu.send(AsapHandleResolution(H))
    shipped.net.run()
    assert pu.messages[-1].error.causes[0].code == CAUSE_UNKNOWN_POOL_HANDLE


def test_all_does_not_grant_an_opaque_transport_and_its_name_does(tmp_path: Path) -> None:
    world = Shipped(tmp_path, rules="pe1  all  echo\npe2  register,opaque-transport  echo\npe2  register  other\n")
    try:
        pe1 = world.client("pe1")
        pe1.send(AsapRegistration(H, opaque_pe(0x2152)))
        world.net.run()
        assert pe1.messages[-1].reject  # "all" never grants it
        pe2 = world.client("pe2")
        pe2.send(AsapRegistration(H, opaque_pe(0x2153)))
        world.net.run()
        assert not pe2.messages[-1].reject, pe2.messages
        assert world.registrar.handlespace.get(H, 0x2153).payload.user_transport == EVIL
        # pe2 may register in "other", but not an Opaque Transport there.
        pe2.send(AsapRegistration(b"other", opaque_pe(0x2154)))
        world.net.run()
        assert pe2.messages[-1].reject
    finally:
        world.stop()
