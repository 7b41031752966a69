"""rserpool.demo.echo_client: an EchoSession through the PU library, a
real registrar and two registered echo PEs over loopback TLS, failing over
when the first PE dies.  Every wait is on an event (a Deferred), none on
the wall clock."""

from __future__ import annotations

from twisted.internet import defer, reactor

from rserpool.asap.pu_session import PuSessionSettings
from rserpool.demo.echo_client import EchoSession
from rserpool.service.pu import PoolUser
from rserpool.service.pu_session import pe_tls_options
from tests.echohelpers import EchoPoolCase, abort_sessions


class EchoClientWithRegistrar(EchoPoolCase):
    @defer.inlineCallbacks
    def test_pool_user_fails_over_between_registered_echo_pes(self):
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
        yield abort_sessions(first_server)
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
