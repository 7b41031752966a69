"""rserpool.service.registrar_accept: the registrar's listener factory."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from zope.interface import alsoProvides

from rserpool.asap.registrar import RegistrarSettings
from rserpool.gate import GatePolicy
from rserpool.service.channel import Channel
from rserpool.service.registrar import RegistrarService
from rserpool.service.registrar_accept import RegistrarFactory, Refused
from rserpool.testing import AllowAll


class _TcpTransport(StringTransport):
    aborted = False

    def abortConnection(self) -> None:  # noqa: N802 (Twisted)
        self.aborted = True


class RegistrarFactoryTests(unittest.TestCase):
    def service(self, **policy) -> RegistrarService:
        return RegistrarService(RegistrarSettings(server_id=0x1234), reactor=Clock(), listen=(), tls_options=None,
                                authorizer=AllowAll(), gate_policy=GatePolicy(**policy))

    def test_an_admitted_connection_gets_a_channel_that_knows_its_peer(self) -> None:
        service = self.service()
        addr = IPv4Address("TCP", "127.0.0.5", 40000)
        channel = RegistrarFactory(service, tls=True).buildProtocol(addr)
        self.assertIsInstance(channel, Channel)
        self.assertTrue(channel.tls)
        self.assertIs(channel.peer, addr)  # no getPeer() needed
        admission = service.channels[channel]
        self.assertEqual((admission.address, admission.peer), ("127.0.0.5", "127.0.0.5:40000"))
        self.assertEqual(service.eviction.by_key, {})  # identity not known yet: not evictable

    def test_a_refused_connection_is_reset_at_once(self) -> None:
        service = self.service(max_connections_per_address=1)
        factory = RegistrarFactory(service, tls=False)
        factory.buildProtocol(IPv4Address("TCP", "127.0.0.5", 40000))
        refused = factory.buildProtocol(IPv4Address("TCP", "127.0.0.5", 40001))
        self.assertIsInstance(refused, Refused)
        self.assertEqual(len(service.channels), 1)
        tcp = _TcpTransport()
        alsoProvides(tcp, ITCPTransport)
        refused.makeConnection(tcp)
        self.assertTrue(tcp.aborted)  # a TCP connection is reset
        other = StringTransport()
        Refused().makeConnection(other)
        self.assertTrue(other.disconnecting)  # anything else is closed
