"""Every ENRP message on the wire between real registrars passes Wireshark's
ENRP dissector (issue 13, item 8).

Three registrars (RegistrarService with EnrpService, in this process) write
their TLS secrets to a key log file (``keylog_path``, what SSLKEYLOGFILE
does).  ``dumpcap`` captures their ENRP ports on the loopback interface
from before the first handshake; the registrars then join each other, PEs
register and leave, an insider peer sends updates it may not and a takeover
request, and the registrars audit each other.  ``tshark`` decrypts every
TCP stream with the key log (``follow,tls,raw``), the TCP-mapping chunks are
split out (``TcpMapConnection``), and every DATA chunk's message goes through
the project's conformance machinery (``tests/test_wire_conformance.py``:
``text2pcap`` into SCTP DATA chunks with PPID 12, then Wireshark's ENRP
dissector): no malformed packet, no expert error, every parameter read as
written.  Nothing of ``../shared`` is used.
"""

from __future__ import annotations

import os
import re
from ipaddress import ip_address
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, protocol, reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest

from rserpool.security import tls
from rserpool.wire import (
    AsapRegistration, AsapDeregistration, EnrpHandleUpdate, EnrpInitTakeover, EnrpPresence, PoolElement,
    RoundRobinPolicy, TcpTransport, decode_message,
)
from rserpool.wire.codes import PPID_ENRP, UPDATE_DEL_PE
from rserpool.wire.tcpmap_chunks import ChunkDecoder, DataChunk
from tests.asaphelpers import connect_raw, make_pe
from tests.conftest import require_tool
from tests.enrpnet import all_linked, connect_all, registrar_cert, start_node, until, views_agree
from tests.test_wire_conformance import dissect, problems_of
from tests.tlshelpers import make_test_pki

pytestmark = pytest.mark.integration

#: The ENRP message types this scenario must have put on the wire.
EXPECTED = {"ENRP_PRESENCE", "ENRP_LIST_REQUEST", "ENRP_LIST_RESPONSE", "ENRP_HANDLE_TABLE_REQUEST",
            "ENRP_HANDLE_TABLE_RESPONSE", "ENRP_HANDLE_UPDATE", "ENRP_ERROR"}


class Dumpcap(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.stderr = b""
        self.capturing: defer.Deferred = defer.Deferred()
        self.ended: defer.Deferred = defer.Deferred()

    def errReceived(self, data: bytes) -> None:
        self.stderr += data
        if b"Capturing on" in self.stderr and not self.capturing.called:
            self.capturing.callback(None)

    def processEnded(self, reason: Any) -> None:
        if not self.capturing.called:
            self.capturing.errback(RuntimeError(f"dumpcap ended: {self.stderr[-2000:]!r}"))
        self.ended.callback(None)


def follow_streams(tshark: str, capture: Path, keylog: Path, ports: list[int]) -> list[tuple[bytes, bytes]]:
    """The decrypted bytes of every TCP stream, (client to server, server to client)."""
    decode_as = [arg for port in ports for arg in ("-d", f"tcp.port=={port},tls")]
    env = dict(os.environ, WIRESHARK_CONFIG_DIR=str(capture.parent))
    listing = subprocess.run([tshark, "-n", "-r", str(capture), "-T", "fields", "-e", "tcp.stream"],
                             capture_output=True, text=True, timeout=120, env=env, check=True)
    streams = sorted({int(s) for s in listing.stdout.split() if s.strip()})
    out = []
    for stream in streams:
        res = subprocess.run([tshark, "-n", "-r", str(capture), "-o", f"tls.keylog_file:{keylog}", *decode_as,
                              "-q", "-z", f"follow,tls,raw,{stream}"],
                             capture_output=True, text=True, timeout=120, env=env, check=True)
        sides = [bytearray(), bytearray()]
        for line in res.stdout.splitlines():
            if not line.strip() or line.startswith(("=", "Follow:", "Filter:", "Node ")):
                continue
            side = 1 if line.startswith("\t") else 0
            if re.fullmatch(r"[0-9a-fA-F]+", line.strip()):
                sides[side] += bytes.fromhex(line.strip())
        out.append((bytes(sides[0]), bytes(sides[1])))
    return out


def chunks(data: bytes) -> list[tuple[int, bytes]]:
    """(PPID, message bytes) of every DATA chunk of one direction (the whole
    direction must frame: a leftover or a framing error fails the test)."""
    decoder = ChunkDecoder()
    found = [(c.ppid, c.payload) for c in decoder.feed(data) if type(c) is DataChunk]
    assert decoder.buffered == 0, f"{decoder.buffered} bytes of an incomplete chunk"
    return found


class EnrpOnTheWire(unittest.TestCase):
    timeout = 120

    def setUp(self):
        self.tshark = require_tool("tshark")
        self.dumpcap = require_tool("dumpcap")
        require_tool("text2pcap")
        self._tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self._tmp.cleanup)
        self.dir = Path(self._tmp.name)
        self.pki = make_test_pki(self.dir / "pki")
        self.keylog = self.dir / "keys.log"
        self.nodes = []
        self.clients = []

    @defer.inlineCallbacks
    def tearDown(self):
        for client in self.clients:
            if client.channel is not None and not client.channel.closed:
                client.channel.abort()
                yield client.closed
        for node in self.nodes:
            yield node.stop()
        tls.close_keylog_writers()

    @defer.inlineCallbacks
    def client(self, node, cert, port):
        creator = tls.client_options(f"{node.name}.rserpool.test", [self.pki.ca.cert],
                                     client_cert=cert.pair if cert is not None else None,
                                     keylog_path=self.keylog)
        client = yield connect_raw(reactor, port, creator)
        self.clients.append(client)
        return client

    @defer.inlineCallbacks
    def test_every_enrp_message_between_registrars_passes_the_dissector(self):
        allowed = ("registrar-a.rserpool.test", "registrar-b.rserpool.test", "registrar-c.rserpool.test",
                   "registrar-evil.rserpool.test")
        for name in ("registrar-a", "registrar-b", "registrar-c"):
            node = yield start_node(reactor, self.pki, name, peers_allowed=allowed, keylog=str(self.keylog),
                                    timers={"page_pes": 2})
            self.nodes.append(node)
        ports = [node.enrp_port for node in self.nodes]
        capture = self.dir / "enrp.pcapng"
        dumpcap = Dumpcap()
        port_filter = " or ".join(f"tcp port {port}" for port in ports)
        reactor.spawnProcess(dumpcap, self.dumpcap, [self.dumpcap, "-q", "-i", "lo", "-f", port_filter,
                                                     "-w", str(capture)], env=dict(os.environ))
        self.addCleanup(lambda: None if dumpcap.ended.called else dumpcap.transport.signalProcess("KILL"))
        yield dumpcap.capturing.addTimeout(20, reactor)

        a, b, c = self.nodes
        # A and B first; C joins later and downloads the table in pages.
        a.peers.entries, b.peers.entries = [b.candidate()], [a.candidate()]
        for node in (a, b):
            node.enrp.connector.rediscover()
        yield until([a, b], lambda: all_linked([a, b]))
        pes = []
        for index, node in enumerate((a, b, a)):
            pe = yield self.client(node, self.pki.pe1, node.asap_port)
            reply = yield pe.request(AsapRegistration(b"echo", make_pe(0x100 + index, port=7000 + index)))
            self.assertFalse(reply.reject, reply)
            pes.append(pe)
        yield until([a, b], lambda: views_agree([a, b]) and len(a.handlespace) == 3)
        c.peers.entries = [a.candidate()]
        c.enrp.connector.rediscover()
        yield until(self.nodes, lambda: all_linked(self.nodes) and views_agree(self.nodes))
        reply = yield pes[0].request(AsapDeregistration(b"echo", 0x100))
        self.assertIsNone(reply.error)
        # An insider: a refused DEL_PE (ENRP_ERROR back) and a takeover request for A.
        evil = yield self.client(a, registrar_cert(self.pki, "registrar-evil"), a.enrp_port)
        evil.send(EnrpPresence(0x0E0E0E0E, 0, 0xFFFF))
        evil.send(EnrpHandleUpdate(0x0E0E0E0E, 0, UPDATE_DEL_PE, b"echo",
                                   PoolElement(0x101, b.registrar.server_id, 60,
                                               TcpTransport(7001, ip_address("127.0.0.1")),
                                               RoundRobinPolicy())))
        evil.send(EnrpInitTakeover(0x0E0E0E0E, 0, a.registrar.server_id))
        # Two heartbeat cycles: PRESENCEs with checksums, audits.
        yield until(self.nodes, lambda: views_agree(self.nodes) and len(c.handlespace) == 2)
        yield deferLater(reactor, 2.5, lambda: None)
        dumpcap.transport.signalProcess("INT")
        yield dumpcap.ended.addTimeout(20, reactor)

        streams = follow_streams(self.tshark, capture, self.keylog, ports)
        messages = []
        for forward, backward in streams:
            for direction in (forward, backward):
                for ppid, payload in chunks(direction):
                    self.assertEqual(ppid, PPID_ENRP)
                    messages.append(payload)
        decoded = [decode_message(data, PPID_ENRP) for data in messages]
        names = {m.name for m in decoded}
        self.assertTrue(EXPECTED <= names, f"not seen on the wire: {sorted(EXPECTED - names)}")
        self.assertGreater(len(decoded), 30)
        self.assertTrue(any(getattr(m, "more", False) for m in decoded))  # a paged table
        self.assertTrue(any(e.identities for m in decoded for e in getattr(m, "entries", ())))
        failures = []
        for msg, data, layers in zip(decoded, messages, dissect("enrp", messages, str(self.dir))):
            for problem in problems_of("enrp", msg, data, layers):
                failures.append(f"{msg.name}: {problem}")
        self.assertEqual(failures, [])
        # The check can fail: a captured table response whose PE Identity
        # parameter is turned into an undocumented type is reported.
        index, data = next((i, d) for i, d in enumerate(messages) if b"\xbf\x01" in d)
        bad = data.replace(b"\xbf\x01", b"\xbf\x02", 1)
        (self.dir / "bad").mkdir()
        [layers] = dissect("enrp", [bad], str(self.dir / "bad"))
        self.assertTrue(problems_of("enrp", decoded[index], bad, layers))
