"""Address checks over IPv6 (RFC 5355 2.3: "a PE can register only for
itself"), against a registrar listening on ::1 over real TLS.

A PE on ::1 may register only ::1: another IPv6 address, an IPv4 address,
and the IPv4-mapped form of an address (``::ffff:127.0.0.1``) are all
refused with cause 0x3 and create nothing; an anonymous PU on ::1 still
resolves.  Connections from IPv6 addresses count per /64 (tests/test_gate.py
and tests/test_addresses.py: only ::1 exists on loopback, so one real
address cannot show the prefix).
"""

from __future__ import annotations

import random
import tempfile
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from twisted.internet import defer, endpoints, reactor
from twisted.internet.protocol import Factory
from twisted.trial import unittest

from rserpool.asap.registrar import RegistrarSettings
from rserpool.security import tls
from rserpool.service.channel import Channel, ChannelSettings
from rserpool.service.registrar import RegistrarService
from rserpool.wire import (
    AsapHandleResolution, AsapRegistration, PoolElement, RoundRobinPolicy, TcpTransport,
)
from rserpool.wire.codes import CAUSE_INVALID_VALUES
from tests.asaphelpers import AllowAll, RawClient
from tests.tlshelpers import make_test_pki

pytestmark = pytest.mark.integration

H = b"echo"


def pe_at(pe_id: int, address: IPv4Address | IPv6Address) -> PoolElement:
    return PoolElement(pe_id, 0, 30, TcpTransport(7, address), RoundRobinPolicy())


class Ipv6AddressChecks(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_a_pe_on_ipv6_registers_only_its_own_address(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        pki = make_test_pki(Path(tmp.name))
        options = tls.server_options(pki.server.cert, pki.server.key, [pki.ca.cert], require_client_cert=False)
        registrar = RegistrarService(
            RegistrarSettings(server_id=random.randrange(1, 2**32)), reactor=reactor,
            listen=["tcp6:0:interface=\\:\\:1"], tls_options=options, authorizer=AllowAll())
        yield registrar.startService()
        self.addCleanup(registrar.stopService)
        port = registrar.listening_addresses[0].port

        @defer.inlineCallbacks
        def connect(cert=None):
            client = RawClient()
            factory = Factory.forProtocol(
                lambda: Channel(client, reactor, ChannelSettings(), tls=True, initiator=True))
            creator = tls.client_options("::1", [pki.ca.cert], client_cert=cert.pair if cert else None)
            endpoint = endpoints.wrapClientTLS(creator, endpoints.TCP6ClientEndpoint(reactor, "::1", port))
            yield endpoint.connect(factory)
            yield client.ready.addTimeout(10, reactor)
            self.addCleanup(lambda: client.channel.abort() if not client.channel.closed else None)
            return client

        pe = yield connect(pki.pe1)
        for n, address in enumerate((IPv6Address("::2"), IPv6Address("2001:db8::1"), IPv4Address("127.0.0.1"),
                                     IPv6Address("::ffff:127.0.0.1"))):
            reply = yield pe.request(AsapRegistration(H, pe_at(0x60 + n, address))).addTimeout(10, reactor)
            self.assertTrue(reply.reject, address)
            self.assertEqual(reply.error.causes[0].code, CAUSE_INVALID_VALUES, address)
        self.assertEqual(len(registrar.handlespace), 0)
        own = yield pe.request(AsapRegistration(H, pe_at(0x70, IPv6Address("::1")))).addTimeout(10, reactor)
        self.assertFalse(own.reject, own)
        self.assertEqual(registrar.handlespace.get(H, 0x70).identity, "pe1")
        pu = yield connect()
        answer = yield pu.request(AsapHandleResolution(H)).addTimeout(10, reactor)
        self.assertEqual([(p.pe_id, str(p.user_transport.address)) for p in answer.pool_elements],
                         [(0x70, "::1")])
        self.assertEqual(registrar.gate.connections, {"::/64": 2})
