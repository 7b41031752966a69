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

import os
import time
from datetime import datetime, timezone
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import endpoints
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from rserpool.asap.pe import PeSettings
from rserpool.backends.filestore_format import srp_line
from rserpool.security import devpki, exchange, pki, psk, srp, tls
from rserpool.security.revocation import CrlMonitorService
from rserpool.service.auth import AuthenticationError, PeAuthenticator
from rserpool.service.candidates import RegistrarCandidates
from rserpool.service.channel import Channel, ChannelSettings, tls_client_endpoint
from rserpool.service.pe import PoolElementService
from rserpool.wire import (
    AsapEndpointKeepAlive,
    AsapEndpointUnreachable,
    AsapHandleResolution,
    AsapHandleResolutionResponse,
    AsapRegistration,
    AsapRegistrationResponse,
    LeastUsedPolicy,
    OpaqueTransport,
    PoolElement,
    RoundRobinPolicy,
    TcpTransport,
)
from rserpool.wire.codes import (
    CAUSE_INVALID_VALUES, CAUSE_LACK_OF_RESOURCES, CAUSE_SECURITY, CAUSE_UNKNOWN_POOL_HANDLE,
)
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
        creator = tls.client_options("localhost", self.ca,
                                     client_cert=self.credentials(name) if name else None)
        client = self.connect(creator, source)
        assert client.ready.called, f"the client from {source} did not get a channel"
        return client

    def connect(self, creator: Any, source: str = "127.0.0.1") -> RawClient:
        """A raw ASAP client with TLS ``creator`` from ``source``, ready or not."""
        client = RawClient()
        tcp = endpoints.TCP4ClientEndpoint(self.net, "127.0.0.1", self.port, bindAddress=(source, 0))
        endpoints.connectProtocol(tls_client_endpoint(creator, tcp, self.net),
                                  Channel(client, self.net, ChannelSettings(), tls=True, initiator=True))
        self.net.run()
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


# -- pool-table exhaustion -------------------------------------------------------------------------


def test_ten_identities_cannot_fill_the_pool_table(tmp_path: Path) -> None:
    # Issue 12: ten identities, each inside its PE quota (1000), filled the
    # global pool limit (10000) in about 24 s; then nobody could create a
    # pool.  Now each identity may have PEs in at most max_pools_per_identity
    # (100) pools: ten of them hold a tenth of the table at most.
    names = [f"tenant{n}" for n in range(10)]
    world = Shipped(tmp_path, rules="".join(f"{name}  register  pool-*\n" for name in names)
                    + "latecomer  register  pool-*\n")
    try:
        config_limits = world.registrar.handlespace.limits
        per_identity = getattr(world.registrar.gate.policy, "max_pools_per_identity", 100)
        assert 10 * per_identity <= config_limits.max_pools // 10
        for name in names:
            client = world.client(name)
            client.auto_ack_keepalives = True  # its PEs stay alive
            client.pe_ids = [(f"pool-{name}-0".encode(), 0x999)]
            for n in range(per_identity + 5):
                client.pe_ids.append((f"pool-{name}-{n}".encode(), n + 1))
                client.send(AsapRegistration(f"pool-{name}-{n}".encode(), make_pe(n + 1, life=3600)))
                world.net.pass_time(0.03, step=0.03)  # inside the per-identity registration rate
            answers = [m for m in client.messages if isinstance(m, AsapRegistrationResponse)]
            assert [a.reject for a in answers] == [False] * per_identity + [True] * 5, name
            assert {a.error.causes[0].code for a in answers[per_identity:]} == {CAUSE_LACK_OF_RESOURCES}
            # More PEs in its own pools are still fine (the PE quota is another limit).
            client.send(AsapRegistration(f"pool-{name}-0".encode(), make_pe(0x999, life=3600)))
            world.net.pass_time(0.03, step=0.03)
            last = [m for m in client.messages if isinstance(m, AsapRegistrationResponse)][-1]
            assert last.pe_id == 0x999 and not last.reject
        assert world.registrar.handlespace.pool_count == 10 * per_identity
        latecomer = world.client("latecomer")
        latecomer.send(AsapRegistration(b"pool-new", make_pe(1, life=3600)))
        world.net.run()
        (answer,) = latecomer.messages
        assert not answer.reject
    finally:
        world.stop()


def test_pe_identifier_zero_is_refused_with_invalid_values(shipped: Shipped) -> None:
    pe = shipped.client("pe1")
    element = make_pe(0, life=3600)
    pe.send(AsapRegistration(H, element))
    shipped.net.run()
    (answer,) = pe.messages
    assert answer.reject
    (cause,) = answer.error.causes
    assert cause.code == CAUSE_INVALID_VALUES and cause.info == element.encode()  # RFC 5354 3.12.4
    assert len(shipped.registrar.handlespace) == 0


# -- TLS-PSK: failures limited and logged ------------------------------------------------------------

PSK_KEY = bytes(range(32))


@pytest.fixture
def with_psk(tmp_path: Path):
    """The shipped registrar with a TLS-PSK file ([tls] psk_file): pe-psk's key."""
    _private(tmp_path / "psk.keys", f"pe-psk {PSK_KEY.hex()}\n")
    world = Shipped(tmp_path, changes=((r"(?m)^psk_file =$", "psk_file = psk.keys"),),
                    rules="pe-psk  register  echo\n")
    yield world
    world.stop()


@pytest.fixture
def logged():
    lines: list[str] = []

    def observe(event: dict) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def test_psk_guesses_are_limited_and_logged(with_psk: Shipped, logged: list[str]) -> None:
    # Issue 12: TLS-PSK failures were neither limited nor logged.
    results = []
    for n in range(7):
        wrong = with_psk.connect(psk.client_options("pe-psk", bytes([n + 1]) * 32), source="127.0.5.1")
        results.append(wrong.ready.called)
    assert results == [False] * 7
    refused = [line for line in logged if line.startswith("refused TLS-PSK authentication as pe-psk from 127.0.5.1")]
    assert len(refused) == 7, logged
    assert all("TLS handshake not completed" in line for line in refused[:5])
    assert all("too many failed attempts for this identity from this address" in line for line in refused[5:])
    # The guesser's address cannot even use the right key now (no oracle: it
    # fails like a wrong one) ...
    right_there = with_psk.connect(psk.client_options("pe-psk", PSK_KEY), source="127.0.5.1")
    assert not right_there.ready.called
    # ... and pe-psk from its own address is not affected.
    pe = with_psk.connect(psk.client_options("pe-psk", PSK_KEY), source="127.0.0.1")
    assert pe.ready.called
    pe.send(AsapRegistration(H, make_pe(0x2160, life=3600)))
    with_psk.net.run()
    (answer,) = [m for m in pe.messages if isinstance(m, AsapRegistrationResponse)]
    assert not answer.reject
    assert with_psk.registrar.handlespace.get(H, 0x2160).identity == "pe-psk"
    # Unknown identities are limited the same way (no existence oracle).
    for n in range(6):
        with_psk.connect(psk.client_options("nobody", PSK_KEY), source="127.0.5.2")
    assert sum("as nobody from 127.0.5.2" in line and "too many failed" in line for line in logged) == 1


# -- connection slots: a reserve for channels with an identity ----------------------------------------

SMALL = "\n[limits]\nmax_connections = 40\n"


def _busy_anonymous(world: Shipped, count: int) -> list[RawClient]:
    """``count`` anonymous clients on ten addresses that keep resolving."""
    clients = [world.connect(tls.client_options("localhost", world.ca), source=f"127.0.7.{n % 10}")
               for n in range(count)]
    for _ in range(3):
        for client in clients:
            if not client.closed.called:
                client.send(AsapHandleResolution(H))
        world.net.pass_time(1.0)
    return [client for client in clients if not client.closed.called]


def test_busy_anonymous_clients_cannot_take_the_slots_kept_for_pes(tmp_path: Path) -> None:
    # Issue 12: 40 anonymous channels against a cap of 40 kept a legitimate
    # PE out; idle ones are dropped for newcomers (tests/test_attacks_connections.py),
    # busy ones hold their share but never the reserve.
    world = Shipped(tmp_path, extra=SMALL)
    try:
        kept = _busy_anonymous(world, 40)
        pe = world.client("pe1", source="127.0.0.1")
        pe.send(AsapRegistration(H, make_pe(0x2170, life=3600)))
        world.net.run()
        (answer,) = [m for m in pe.messages if isinstance(m, AsapRegistrationResponse)]
        assert not answer.reject
        # A pool user from IPv6 gets in once the busy clients go quiet (the
        # idle ones give their slots), and resolves the PE.
        world.net.pass_time(6.0)
        pu = world.connect(tls.client_options("localhost", world.ca), source="2001:db8::7")
        assert pu.ready.called and not pu.closed.called
        pu.send(AsapHandleResolution(H))
        world.net.run()
        assert [element.pe_id for element in pu.messages[-1].pool_elements] == [0x2170]
        assert len(kept) == world.registrar.gate.anonymous_limit == 36  # 40 less the 10 % reserve
    finally:
        world.stop()


def test_without_the_reserve_busy_anonymous_clients_lock_pes_out(tmp_path: Path) -> None:
    # What the reserve prevents, shown with it switched off.
    world = Shipped(tmp_path, extra=SMALL + "authenticated_reserve = 0\n")
    try:
        assert len(_busy_anonymous(world, 40)) == 40
        pe = world.connect(tls.client_options("localhost", world.ca, client_cert=world.credentials("pe1")))
        assert not pe.ready.called or pe.closed.called
    finally:
        world.stop()


# -- revocation reaches channels that are already open -----------------------------------------------


def test_a_crl_reload_closes_the_revoked_pes_channel_and_removes_its_pes(shipped: Shipped) -> None:
    # Issue 12: after a CRL revoking an identity was reloaded, that identity's
    # open channel kept registering new PEs, and its PEs stayed in the pool.
    pe = shipped.pool_element(0x2180)
    raw = shipped.client("pe1", source="127.0.0.3")  # another channel of the same certificate
    raw.send(AsapRegistration(H, make_pe(0x2181, life=3600, address="127.0.0.3", policy=LeastUsedPolicy(1))))
    pu = shipped.client("pu1")  # another certificate, not revoked
    shipped.net.run()
    assert shipped.registrar.handlespace.get(H, 0x2181) is not None
    removed: list[Any] = []
    shipped.registrar.change_listeners.append(removed.append)  # what ENRP peers are told
    (monitor,) = [s.monitor for s in shipped.registrar if isinstance(s, CrlMonitorService)]
    pe_cert = pki.load_certificate(shipped.pki / "pe.pem")
    devpki.revoke_dev_certificate(shipped.pki, pe_cert.serial_number, datetime.now(timezone.utc))
    stamp = time.time_ns() + 1_000_000_000
    os.utime(shipped.pki / "crl.pem", ns=(stamp, stamp))
    monitor.check()  # what its timer does every crl_check_interval
    shipped.net.run()
    assert raw.closed.called
    assert shipped.registrar.handlespace.get(H, 0x2180) is None
    assert shipped.registrar.handlespace.get(H, 0x2181) is None
    assert sorted(o.entry.pe_id for o in removed if type(o).__name__ == "PoolElementRemoved") == [0x2180, 0x2181]
    assert shipped.registrar.live_certificates.stats["revoked_by_crl"] == 1
    assert not pu.closed.called
    # The PE library hunts again, and its handshake is refused: it stays out.
    shipped.net.pass_time(15.0)
    assert shipped.registrar.handlespace.get(H, 0x2180) is None
    assert not pe.is_registered


# -- resolution floods: a budget for all anonymous resolutions ------------------------------------------


def test_anonymous_floods_share_one_budget_and_pool_users_with_an_identity_keep_theirs(tmp_path: Path) -> None:
    # Issue 12: anonymous connections from several addresses, each within its
    # per-address limit, together took the registrar from everyone.  Here a
    # site's budget for all anonymous resolutions is 50/s (the shipped one is
    # 20000/s): ten flooders on ten addresses get that much between them, are
    # paused a quarter second at each refusal (a flood costs one refusal per
    # pause), and a pool user with a certificate is never refused.
    world = Shipped(tmp_path, changes=((r"(?m)^authorize_resolution = no$",
                                        "authorize_resolution = no\nanonymous_resolution_rate = 50"),))
    try:
        world.pool_element(0x2190)
        flooders = [world.client(source=f"127.0.9.{n}") for n in range(10)]
        pu = world.client("pu1", source="127.0.0.8")
        answers = []
        for second in range(4):
            for flooder in flooders:
                for _ in range(100):
                    flooder.send(AsapHandleResolution(H))
            for _ in range(10):  # the pool user asks ten times a second
                pu.send(AsapHandleResolution(H))
                world.net.pass_time(0.1, step=0.05)
        answers = [m for f in flooders for m in f.messages if isinstance(m, AsapHandleResolutionResponse)]
        served = [a for a in answers if a.error is None]
        refused = [a for a in answers if a.error is not None]
        assert {a.error.causes[0].code for a in refused} == {CAUSE_LACK_OF_RESOURCES}
        assert len(served) <= 100 + 50 * 4 + 10  # the burst, then 50/s
        assert len(refused) <= 10 * 4 * 4 + 10  # at most one per flooder and pause
        handled = len(served) + len(refused)
        assert handled < 4000 / 5  # most of the flood was never even read
        pu_answers = [m for m in pu.messages if isinstance(m, AsapHandleResolutionResponse)]
        assert len(pu_answers) == 40 and all(a.error is None for a in pu_answers)
    finally:
        world.stop()
