"""Registrars with ENRP over real loopback TLS, in this process.

``registrar_cert`` adds registrar certificates to the test PKI (one DNS
name ``<name>.rserpool.test``, the peer identity, and IP 127.0.0.1).  ``start_node`` starts a ``RegistrarService`` with its
``EnrpService`` on ephemeral loopback ports; ``until`` waits, without
polling, until a condition over the nodes holds (re-checked after every
batch of ENRP outputs and every ASAP change).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer
from zope.interface import implementer

from rserpool.asap.registrar import RegistrarSettings
from rserpool.enrp import EnrpSettings, PeerLimits
from rserpool.security import pki, tls
from rserpool.gate import ACTION_PEER
from rserpool.interfaces import IPoolAuthorizer
from rserpool.service.enrp import EnrpService
from rserpool.service.registrar import RegistrarService
from tests.tlshelpers import CertFiles, TestPKI

FAST_TIMERS = dict(heartbeat_cycle=1.0, max_time_last_heard=4.0, max_time_no_response=2.0,
                   mentor_discovery_timeout=1.0, mentor_retry=0.2)


def registrar_cert(test_pki: TestPKI, name: str) -> CertFiles:
    """A registrar certificate from the test CA (cached in ``test_pki.extra``)."""
    cached = test_pki.extra.get(("registrar", name))
    if cached is not None:
        return cached
    ca = pki.IssuedCertificate(test_pki.ca.issued.certificate, test_pki.ca.issued.private_key)
    issued = pki.create_server_certificate(ca, [f"{name}.rserpool.test", "127.0.0.1"], test_pki.now)
    directory = Path(test_pki.directory)
    files = CertFiles(directory / f"{name}.pem", directory / f"{name}.key", issued)
    pki.write_certificate(files.cert, issued.certificate)
    pki.write_private_key(files.key, issued.private_key)
    test_pki.extra[("registrar", name)] = files
    return files


class StaticPeers:
    """A candidate source the test fills in once the ports are known."""

    def __init__(self) -> None:
        self.entries: list = []

    def candidates(self) -> defer.Deferred:
        return defer.succeed(list(self.entries))


@dataclass
class Node:
    name: str
    registrar: RegistrarService
    enrp: EnrpService
    peers: StaticPeers
    authorizer: Any
    events: list = field(default_factory=list)

    @property
    def asap_port(self) -> int:
        return self.registrar.listening_addresses[0].port

    @property
    def enrp_port(self) -> int:
        return self.enrp.listening_addresses[0].port

    @property
    def handlespace(self):
        return self.registrar.handlespace

    def candidate(self):
        from rserpool.asap.hunt import Candidate

        return Candidate("127.0.0.1", self.enrp_port, f"{self.name}.rserpool.test")

    @defer.inlineCallbacks
    def stop(self):
        yield self.registrar.stopService()


@implementer(IPoolAuthorizer)
class PoolAndPeerRules:
    """PEs may do anything; only the listed identities may be peers."""

    def __init__(self, *peers: str) -> None:
        self.peers = set(peers)
        self.asked: list = []

    def authorize(self, identity, groups, action, pool_handle):
        if action == ACTION_PEER:
            self.asked.append(identity)
            return identity in self.peers
        return True


@defer.inlineCallbacks
def start_node(reactor, test_pki: TestPKI, name: str, *, peers_allowed=("registrar-a.rserpool.test",
               "registrar-b.rserpool.test", "registrar-c.rserpool.test"), cert: CertFiles | None = None, server_id: int | None = None,
               timers: dict | None = None, peer_limits: PeerLimits | None = None,
               expect_peers: bool = True, keylog: str | None = None, **enrp_kw: Any):
    """A registrar with ENRP on 127.0.0.1 ephemeral ports."""
    cert = cert or registrar_cert(test_pki, name)
    server_id = server_id or random.randrange(1, 2**32)
    authorizer = PoolAndPeerRules(*peers_allowed)
    asap_tls = tls.server_options(cert.cert, cert.key, [test_pki.ca.cert], require_client_cert=False,
                                  keylog_path=keylog)
    registrar = RegistrarService(RegistrarSettings(server_id=server_id), reactor=reactor,
                                 listen=["tcp:0:interface=127.0.0.1"], tls_options=asap_tls,
                                 authorizer=authorizer)
    server_tls = tls.server_options(cert.cert, cert.key, [test_pki.ca.cert], require_client_cert=True,
                                    keylog_path=keylog)

    def client_tls(tls_name: str):
        return tls.client_options(tls_name, [test_pki.ca.cert], client_cert=cert.pair, keylog_path=keylog)

    settings = dict(FAST_TIMERS)
    settings.update(timers or {})
    peers = StaticPeers()
    enrp = EnrpService(EnrpSettings(server_id, peer_limits=peer_limits or PeerLimits(), **settings),
                       reactor=reactor, handlespace=registrar.handlespace, listen=["tcp:0:interface=127.0.0.1"],
                       server_tls=server_tls, client_tls=client_tls,
                       gate=registrar.gate, authorizer=authorizer,
                       candidates=peers if expect_peers else None, **enrp_kw)
    registrar.change_listeners.append(enrp.local_change)
    enrp.setServiceParent(registrar)
    yield defer.maybeDeferred(registrar.startService)
    return Node(name, registrar, enrp, peers, authorizer)


def connect_all(nodes: list[Node]) -> None:
    """Give every node the others as static peers and start dialling."""
    for node in nodes:
        node.peers.entries = [other.candidate() for other in nodes if other is not node]
        node.enrp.connector.rediscover()


def until(nodes: list[Node], condition: Callable[[], bool], timeout: float = 15.0,
          reactor: Any = None) -> defer.Deferred:
    """Fires when ``condition()`` holds (checked after every ENRP batch and
    every registrar change); fails after ``timeout`` seconds."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    done: defer.Deferred = defer.Deferred()

    def check(*_: Any) -> None:
        if not done.called and condition():
            cleanup()
            done.callback(None)

    def expired() -> None:
        if not done.called:
            cleanup()
            done.errback(AssertionError(f"condition not met within {timeout} s"))

    def cleanup() -> None:
        for node in nodes:
            if check in node.enrp.watchers:
                node.enrp.watchers.remove(check)
            if check in node.registrar.change_listeners:
                node.registrar.change_listeners.remove(check)
        if timer.active():
            timer.cancel()

    timer = reactor.callLater(timeout, expired)
    for node in nodes:
        node.enrp.watchers.append(check)
        node.registrar.change_listeners.append(check)
    reactor.callLater(0, check)
    return done


def views_agree(nodes: list[Node]) -> bool:
    """Same PEs (home and payload) everywhere, and every checksum agrees."""
    def view(node: Node) -> dict:
        return {(e.pool_handle, e.pe_id): (e.home_server_id, e.payload) for e in node.handlespace.entries()}

    first = view(nodes[0])
    if any(view(node) != first for node in nodes[1:]):
        return False
    ids = [node.registrar.server_id for node in nodes]
    return all(node.handlespace.checksum(sid) == owner.handlespace.checksum(sid)
               for node in nodes for sid, owner in zip(ids, nodes))


def transfers_done(nodes: list[Node]) -> bool:
    """No table transfer under way or due (a re-synchronization a starting
    peer refused is asked for again a little later)."""
    return all(link.fetch is None and link.resync_at is None
               for node in nodes for link in node.enrp.core.peers.links)


def all_linked(nodes: list[Node]) -> bool:
    ids = {node.registrar.server_id for node in nodes}
    return all(node.enrp.core.initialized and
               {link.server_id for link in node.enrp.core.peers.active()} == ids - {node.registrar.server_id}
               for node in nodes)


class EnrpClusterMixin:
    """For trial TestCases: the test PKI for the class (``self.pki``),
    registrars started with :meth:`start` (``self.nodes``) and raw TLS
    clients from :meth:`client` (``self.clients``); all closed and stopped
    after each test."""

    @classmethod
    def setUpClass(cls):
        import tempfile

        from tests.tlshelpers import make_test_pki

        cls._tmp = tempfile.TemporaryDirectory()
        cls.pki = make_test_pki(Path(cls._tmp.name))

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def setUp(self):
        self.nodes = []
        self.clients = []

    @defer.inlineCallbacks
    def tearDown(self):
        for client in self.clients:
            if client.channel is not None and not client.channel.closed:
                client.channel.abort()
                yield client.closed
        for node in self.nodes:
            if node.registrar.running:
                yield node.stop()

    @defer.inlineCallbacks
    def start(self, *names, **kw):
        """Start a node per name (``start_node``'s keywords); the started nodes."""
        from twisted.internet import reactor

        started = []
        for name in names:
            node = yield start_node(reactor, self.pki, name, **kw)
            self.nodes.append(node)
            started.append(node)
        return started

    @defer.inlineCallbacks
    def client(self, node, cert=None, port=None):
        """A raw TLS client of ``node`` (its ASAP port unless ``port``), with ``cert``."""
        from twisted.internet import reactor

        from tests.asaphelpers import connect_raw

        creator = tls.client_options(f"{node.name}.rserpool.test", [self.pki.ca.cert],
                                     client_cert=cert.pair if cert is not None else None)
        client = yield connect_raw(reactor, port or node.asap_port, creator)
        self.clients.append(client)
        return client
