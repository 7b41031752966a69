"""The demo run by ``scripts/run``: a registrar with two echo pool elements
and a pool user talking to them through the session layer, all on loopback
over TLS with the development PKI.

Nothing here is special-cased: the PEs register through the PE library with
their client certificate (identity ``pe1``, allowed by ``etc/authz.rules``),
the PU resolves the pool through the PU library and keeps one session with
cookies and failover.  Every few seconds the PU sends a line and logs the
echo and which PE answered; one PE is restarted now and then so that the
failover (cookie echo, application callback) shows in the log.
"""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import defer, task
from twisted.logger import Logger

__all__ = ["DemoService", "ensure_pe_server_certificate"]

_log = Logger()


def ensure_pe_server_certificate(pki_dir: Path) -> tuple[Path, Path]:
    """A server certificate for the demo PEs' listeners (IP SAN 127.0.0.1),
    issued by the development CA; created once."""
    from rserpool.security import pki

    cert_path, key_path = pki_dir / "echo-pe-server.pem", pki_dir / "echo-pe-server.key"
    if cert_path.exists() and key_path.exists():
        cert = pki.load_certificate(cert_path)
        if cert.not_valid_after_utc > dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1):
            return cert_path, key_path
    ca = pki.IssuedCertificate(pki.load_certificate(pki_dir / "ca.pem"), pki.load_private_key(pki_dir / "ca.key"))
    issued = pki.create_server_certificate(ca, ["127.0.0.1", "localhost"], dt.datetime.now(dt.timezone.utc),
                                           common_name="rserpool demo echo PE")
    pki.write_private_key(key_path, issued.private_key)
    pki.write_certificate(cert_path, issued.certificate)
    return cert_path, key_path


class DemoService(MultiService):
    """Two echo PEs and one PU session next to a running registrar."""

    def __init__(self, registrar: Any, pki_dir: Path, reactor: Any, interval: float = 2.0,
                 restart_every: int = 10) -> None:
        super().__init__()
        self.registrar = registrar
        self.pki_dir = Path(pki_dir)
        self.reactor = reactor
        self.interval = interval
        self.restart_every = restart_every
        self.pes: list[Any] = []
        self.pu: Any = None
        self.session: Any = None
        self._loop: task.LoopingCall | None = None
        self._count = 0
        self._stopping = False

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        # The registrar's ports are open once its own startService ran.
        self.reactor.callLater(0.2, self._start)

    @defer.inlineCallbacks
    def _start(self):
        from rserpool.demo.echo_client import EchoSession
        from rserpool.demo.echo_pe import echo_pool_element
        from rserpool.demo.echo_session import echo_session_server
        from rserpool.service.pu import PoolUser
        from rserpool.service.pu_session import pe_tls_options

        address = self.registrar.listening_addresses[0]
        registrar = f"{address.host}:{address.port}"
        ca, pe_cert, pe_key = self.pki_dir / "ca.pem", self.pki_dir / "pe.pem", self.pki_dir / "pe.key"
        server_cert, server_key = ensure_pe_server_certificate(self.pki_dir)
        cookie_key = secrets.token_bytes(32)
        _log.info("demo: starting two echo PEs registering with {registrar} as pe1", registrar=registrar)
        for _ in range(2):
            sessions = echo_session_server(self.reactor, cookie_key=cookie_key)
            pe = echo_pool_element(
                self.reactor, registrars=[registrar], ca=ca, cert=pe_cert, key=pe_key,
                server_cert=server_cert, server_key=server_key, protocol_factory=sessions,
                registration_life=60)
            pe.sessions = sessions
            self.pes.append(pe)
            yield pe.start()
            yield pe.pe.registered()
            _log.info("demo: echo PE {pe_id:08x} on {host}:{port} registered", pe_id=pe.pe.pe_id,
                      host=pe.address[0], port=pe.address[1])
        self.pu = PoolUser.connecting_to(self.reactor, [registrar], [ca])
        members = yield self.pu.resolve(b"echo")
        _log.info("demo: the PU resolved pool echo to {n} PEs: {ids}", n=len(members),
                  ids=", ".join(f"{m.pe_id:08x}" for m in members))
        self.session = EchoSession(self.reactor, selector=self.pu.select,
                                   report_unreachable=self.pu.report_unreachable,
                                   tls_options_for=pe_tls_options([ca]), on_failover=self._failover)
        pe = yield self.session.start()
        _log.info("demo: PU session established with PE {pe_id:08x}", pe_id=pe.pe_id)
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True).addErrback(lambda f: _log.failure("demo loop", f))

    def _failover(self, old: Any, new: Any, cookie_echoed: bool) -> None:
        _log.info("demo: failover from PE {old:08x} to PE {new:08x} (cookie echoed: {echoed})",
                  old=old.pe_id, new=new.pe_id, echoed=cookie_echoed)

    @defer.inlineCallbacks
    def _tick(self):
        self._count += 1
        line = f"hello {self._count}".encode()
        try:
            echo = yield self.session.send(line)
        except defer.CancelledError:
            if self._stopping:
                return  # stopping: the session closed under this echo
            raise
        except Exception as exc:  # the demo keeps going; the log says why
            if self._stopping:  # the session closed under the last echo: no failure
                _log.info("demo: {line!r} not echoed: the demo is stopping", line=line)
            else:
                _log.warn("demo: echo failed: {error}", error=exc)
            return
        current = self.session.client.current_pe
        _log.info("demo: sent {line!r}, PE {pe_id:08x} echoed {echo!r}", line=line,
                  pe_id=current.pe_id if current else 0, echo=echo)
        if self.restart_every and self._count % self.restart_every == 0:
            yield self._restart_serving_pe()

    @defer.inlineCallbacks
    def _restart_serving_pe(self):
        current = self.session.client.current_pe
        for pe in self.pes:
            if current is not None and pe.pe is not None and pe.pe.pe_id == current.pe_id:
                _log.info("demo: stopping PE {pe_id:08x} (listener and sessions) to show failover",
                          pe_id=pe.pe.pe_id)
                yield defer.maybeDeferred(pe.stopService)
                # A planned restart: the sessions end with a clean TLS close
                # (the PU fails over all the same).
                closing = []
                for session in list(pe.sessions.sessions):
                    if session.channel is not None:
                        closing.append(session.channel.closed_deferred())
                        session.close()
                yield defer.DeferredList(closing)
                yield pe.start()
                yield pe.pe.registered()
                _log.info("demo: PE restarted as {pe_id:08x}", pe_id=pe.pe.pe_id)
                return

    @defer.inlineCallbacks
    def stopService(self):
        self._stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self.session is not None:
            yield self.session.close()
        if self.pu is not None:
            yield defer.maybeDeferred(self.pu.stop)
        for pe in self.pes:
            if pe.running:
                yield defer.maybeDeferred(pe.stopService)
        yield defer.maybeDeferred(super().stopService)

