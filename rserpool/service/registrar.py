"""The registrar's Twisted service: listeners, TLS, timers and announces
around ``rserpool.asap.registrar.RegistrarCore``.

Everything protocol-related happens in the core; this module only

- listens on Twisted endpoint strings and wraps every connection in TLS with
  the configured server options (client certificates requested; required
  only when configured),
- turns a finished TLS handshake into an ``AsapSession`` (the identity comes
  from the verified client certificate, if any),
- feeds messages and the reactor's time into the core and carries out what
  it returns (send, close, ask the authorizer),
- keeps one timer armed at the core's next deadline,
- sends ASAP_SERVER_ANNOUNCE over UDP to configured unicast targets (and a
  multicast group only when configured).
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any, Callable, Iterable, Protocol as TypingProtocol

from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL, crypto
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from rserpool.asap.registrar import (
    Authorize,
    Close,
    PoolElementAdded,
    PoolElementRemoved,
    RegistrarCore,
    RegistrarSettings,
    Send,
)
from rserpool.handlespace import Handlespace, HandlespaceLimits
from rserpool.security.certidentity import CertIdentityError, IdentityPolicy, identity_from_certificate
from rserpool.security.psk import MECHANISM as PSK_MECHANISM, psk_identity
from rserpool.security.revocation import RevocationGate, verified_chain
from rserpool.security.tls import NotTLSError, tls_connection
from rserpool.service.channel import Channel, ChannelSettings, address_text
from rserpool.service.tlsfactory import TLSServerFactory
from rserpool.stats import EventCounts
from rserpool.wire import WireError
from rserpool.wire.params import pool_handle_text
from rserpool.wire.transports import TcpTransport

__all__ = ["PoolAuthorizer", "RegistrarService", "AnnounceProtocol"]

_log = Logger()

#: The core's log lines that repeat what the service logs from the core's outputs.
_LOGGED_FROM_OUTPUTS = frozenset({"removed PE {pe_id:08x} from pool {handle!r}: {reason}"})

#: Client certificates whose identity the registrar remembers (oldest dropped first).
_CERTIFICATE_NAMES_CACHED = 4096


class PoolAuthorizer(TypingProtocol):
    """May ``identity`` do ``action`` in pool ``pool_handle``?  A bool or a
    Deferred firing with one.  An exception (or a failed Deferred) counts as
    "no" and is logged as a backend failure, not as a refusal."""

    def authorize(self, identity: str | None, groups: frozenset[str], action: str,
                  pool_handle: bytes) -> bool | defer.Deferred: ...


class _Refused(Protocol):
    """Stands in for a refused connection: drops it at once (returning None
    from buildProtocol would break the TLS wrapper around the factory)."""

    def connectionMade(self) -> None:
        abort = getattr(self.transport, "abortConnection", None)
        (abort or self.transport.loseConnection)()


class _RegistrarFactory(Factory):
    def __init__(self, service: "RegistrarService", tls: bool) -> None:
        self.service = service
        self.tls = tls

    def buildProtocol(self, addr: Any) -> Protocol:
        # Connections count from the moment they are accepted, before the
        # TLS handshake: a burst of handshakes cannot get past the limits.
        service = self.service
        if len(service.channels) >= service.max_connections:
            _log.warn("refusing ASAP connection from {addr}: {n} connections open", addr=addr,
                      n=len(service.channels))
            return _Refused()
        host = getattr(addr, "host", "")
        per_address = service.connections_per_address.get(host, 0)
        if per_address >= service.max_connections_per_address:
            _log.warn("refusing ASAP connection from {addr}: too many from this address", addr=addr)
            return _Refused()
        channel = Channel(service, service.clock, service.channel_settings, tls=self.tls)
        channel.peer_host = host
        service.channels.add(channel)
        service.connections_per_address[host] = per_address + 1
        return channel


class RegistrarService(MultiService):
    """An ENRP server's ASAP service (its ENRP side: ``rserpool.service.enrp``)."""

    #: Log a debug line for every channel that becomes ready.  Off by default:
    #: a Twisted log event costs a few microseconds even when every observer
    #: filters it out, and this one would be built for every new session.
    log_channels: bool = False

    def __init__(
        self,
        settings: RegistrarSettings,
        *,
        reactor: Any,
        listen: Iterable[str],
        tls_options: Any | None,
        authorizer: PoolAuthorizer,
        limits: HandlespaceLimits | None = None,
        channel_settings: ChannelSettings | None = None,
        identity_policy: IdentityPolicy | None = None,
        groups_of: Callable[[str], Iterable[str] | defer.Deferred] | None = None,
        announce_targets: Iterable[tuple[str, int]] = (),
        announce_interval: float = 1.0,
        announce_multicast: tuple[str, int] | None = None,
        announce_ttl: int = 1,
        rng: random.Random | None = None,
        max_connections: int = 10_000,
        max_connections_per_address: int = 256,
        revocation: RevocationGate | None = None,
        max_queued_during_check: int = 16,
        authenticator: Any = None,
        certificate_mapping: Any = None,
    ) -> None:
        super().__init__()
        # Counters for operators (rserpool.stats); shared with the authenticator.
        self.events = EventCounts()
        self.started: float | None = None
        # SRP/CHAP over the ASAP extension (rserpool.service.auth.RegistrarAuthenticator);
        # None: the extension is disabled and its messages are reported as unrecognized.
        self.authenticator = authenticator
        if authenticator is not None:
            authenticator.events = self.events
        # ICertificateMapping: identity_for(cert) -> Identity | name | None (maybe a Deferred)
        self.certificate_mapping = certificate_mapping
        # OCSP gate: no session (so no state) until the client certificate's
        # check allowed it; up to max_queued_during_check messages wait.
        self.revocation = revocation
        self.max_queued_during_check = max_queued_during_check
        self._checking: dict[Channel, tuple[defer.Deferred, list]] = {}
        self.reactor = reactor
        self.clock: IReactorTime = reactor
        self.listen = tuple(listen)
        self.tls_options = tls_options
        self.authorizer = authorizer
        self.rng = rng or random.SystemRandom()
        self.channel_settings = channel_settings or ChannelSettings()
        self.identity_policy = identity_policy or IdentityPolicy()
        # Verified client certificate (DER) -> identity: a pure function of the
        # certificate and the policy, so a bounded cache skips re-deriving it
        # on every new connection of the same PE (benchmarks/bench_sessions.py).
        self._certificate_names: dict[bytes, str] = {}
        self._certificate_names_policy = self.identity_policy
        self.groups_of = groups_of or (lambda identity: ())
        self.handlespace = Handlespace(limits or HandlespaceLimits(), rng=random.Random(self.rng.random()))
        self.core = RegistrarCore(settings, self.handlespace, rng=random.Random(self.rng.random()),
                                  log=self._core_log)
        self.announce_targets = tuple(announce_targets)
        self.announce_interval = announce_interval
        self.announce_multicast = announce_multicast
        self.announce_ttl = announce_ttl
        self.max_connections = max_connections
        self.max_connections_per_address = max_connections_per_address
        self.channels: set[Channel] = set()
        self.connections_per_address: dict[str, int] = {}
        self.ports: list[Any] = []
        self.listening_addresses: list[Any] = []
        self._timer: IDelayedCall | None = None
        self._timer_at: float | None = None
        self._announce_call: IDelayedCall | None = None
        self._announce_port: Any = None
        #: Called with every PoolElementAdded / PoolElementRemoved (the ENRP
        #: service turns them into handle updates to peers).
        self.change_listeners: list[Callable[[Any], None]] = []
        #: Set when stopService begins: the PEs' channels are about to be
        #: closed by us, which is no news for the ENRP peers (docs/takeover.md).
        self.stopping = False
        if tls_options is None:
            _log.critical("INSECURE: the ASAP listener runs WITHOUT TLS; anyone on the network "
                          "can read and forge registrations")

    def _core_log(self, fmt: str, **kwargs: Any) -> None:
        """The core's log lines, at info; a removal is left out: the service
        logs it itself from the ``PoolElementRemoved`` output ("PE ... left
        pool ..."), and a log event costs some microseconds per session."""
        if fmt not in _LOGGED_FROM_OUTPUTS:
            _log.info(fmt, **kwargs)

    # -- lifecycle ------------------------------------------------------------------

    @property
    def server_id(self) -> int:
        return self.core.settings.server_id

    @defer.inlineCallbacks
    def startService(self):
        super().startService()
        self.started = self.clock.seconds()
        for description in self.listen:
            factory: Any = _RegistrarFactory(self, tls=self.tls_options is not None)
            if self.tls_options is not None:
                factory = TLSServerFactory(self.tls_options, factory, self.reactor)
            endpoint = serverFromString(self.reactor, description)
            port = yield endpoint.listen(factory)
            self.ports.append(port)
            self.listening_addresses.append(port.getHost())
            _log.info("registrar {server_id:08x} listening for ASAP on {address} ({tls})",
                      server_id=self.server_id, address=address_text(port.getHost()),
                      tls="TLS" if self.tls_options is not None else "PLAINTEXT")
        if self.announce_multicast:
            _log.info("announcing to multicast group {group}", group=self.announce_multicast)
            self._announce_port = self.reactor.listenMulticast(0, AnnounceProtocol())
            self._announce_port.setTTL(self.announce_ttl)
        elif self.announce_targets:
            interface = "127.0.0.1" if self._loopback_only() else ""
            self._announce_port = self.reactor.listenUDP(0, AnnounceProtocol(), interface=interface)
        if self._announce_port is not None:
            self._schedule_announce()

    def _loopback_only(self) -> bool:
        hosts = [h for h, _ in self.announce_targets]
        if self.announce_multicast:
            return False
        try:
            return all(ipaddress.ip_address(h).is_loopback for h in hosts)
        except ValueError:
            return False

    @defer.inlineCallbacks
    def stopService(self):
        self.stopping = True
        if self._announce_call is not None and self._announce_call.active():
            self._announce_call.cancel()
        self._announce_call = None
        if self._announce_port is not None:
            yield self._announce_port.stopListening()
            self._announce_port = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        ports, self.ports = self.ports, []
        yield defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports], consumeErrors=True)
        closing = [channel.closed_deferred() for channel in self.channels]
        for channel in list(self.channels):
            channel.abort()
        yield defer.DeferredList(closing)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        yield defer.maybeDeferred(super().stopService)

    # -- ChannelHandler ---------------------------------------------------------------

    def channel_ready(self, channel: Channel) -> None:
        address = getattr(channel.peer, "host", "")
        identity = None
        mechanism = None
        cert = None
        gate = self.revocation
        gated = gate is not None and gate.enabled
        if channel.tls:
            try:
                peer = tls_connection(channel.transport).get_peer_certificate()
            except NotTLSError:
                peer = None
            if peer is not None:
                # The identity cache is keyed by the DER straight from OpenSSL:
                # the conversion to a cryptography certificate is only paid on
                # a miss or when revocation or the mapping needs it.
                if gated or self.certificate_mapping is not None:
                    cert = peer.to_cryptography()
                try:
                    identity = self._certificate_identity(
                        cert if cert is not None else peer,
                        crypto.dump_certificate(crypto.FILETYPE_ASN1, peer))
                    mechanism = "certificate"
                except CertIdentityError as exc:
                    self.events.authenticated("certificate", False)
                    _log.warn("client certificate from {address} yields no identity: {error}",
                              address=address, error=exc)
            else:
                identity = psk_identity(channel.transport)
                mechanism = PSK_MECHANISM if identity is not None else None
        if mechanism is not None and not gated and self.certificate_mapping is None:
            self.events.authenticated(mechanism, True)
        if cert is not None and (gated or self.certificate_mapping is not None):
            # Nothing is created for this channel before OCSP allows it and
            # the certificate mapping (a directory, perhaps) named its holder.
            check = self._check_certificate(cert, verified_chain(channel.transport) if gated else None,
                                            identity)
            self._checking[channel] = (check, [])
            check.addCallbacks(self._revocation_checked, self._revocation_failed,
                               callbackArgs=(channel, address, mechanism),
                               errbackArgs=(channel,))
            return
        self._open_session(channel, address, identity, mechanism)

    def _certificate_identity(self, cert: Any, der: bytes | None = None) -> str:
        """``identity_from_certificate(cert, self.identity_policy).name``, cached by DER.

        ``cert`` is a cryptography certificate or a pyOpenSSL ``X509`` (then
        ``der`` must be given; it is converted only on a cache miss)."""
        policy = self.identity_policy
        names = self._certificate_names
        if policy is not self._certificate_names_policy:
            names.clear()
            self._certificate_names_policy = policy
        key = der if der is not None else cert.public_bytes(Encoding.DER)
        name = names.get(key)
        if name is None:
            if isinstance(cert, crypto.X509):
                cert = cert.to_cryptography()
            name = identity_from_certificate(cert, policy).name  # CertIdentityError: not cached
            if len(names) >= _CERTIFICATE_NAMES_CACHED:
                del names[next(iter(names))]
            names[key] = name
        return name

    @defer.inlineCallbacks
    def _check_certificate(self, cert: Any, chain: Any, identity: str | None):
        """(allowed, reason, identity) for a client certificate: revocation
        first, then the configured mapping (authoritative when configured:
        a certificate it does not know yields no identity)."""
        if chain is not None:
            decision = yield self.revocation.check(cert, chain)
            if not decision.allowed:
                return False, decision.reason, identity
        if self.certificate_mapping is not None:
            mapped = yield defer.maybeDeferred(self.certificate_mapping.identity_for, cert)
            name = getattr(mapped, "name", mapped)
            if name is None:
                _log.warn("client certificate {subject} is not mapped to an identity",
                          subject=cert.subject.rfc4514_string())
            identity = name
        return True, "", identity

    def _open_session(self, channel: Channel, address: str, identity: str | None,
                      mechanism: str | None) -> None:
        channel.session = self.core.open_session(channel, address, channel.tls, identity)
        if self.log_channels:
            _log.debug("ASAP channel from {address} ready (identity {identity}, {mechanism})",
                       address=address, identity=identity, mechanism=mechanism or "unauthenticated")

    def _revocation_checked(self, result: tuple, channel: Channel, address: str,
                            mechanism: str | None) -> None:
        allowed, reason, identity = result
        _, queued = self._checking.pop(channel, (None, []))
        if channel.closed:
            return
        self.events.authenticated("certificate", allowed and identity is not None)
        if not allowed:
            _log.warn("closing ASAP channel from {address} ({identity}): {reason}", address=address,
                      identity=identity, reason=reason)
            channel.close()
            return
        self._open_session(channel, address, identity, mechanism if identity is not None else None)
        for kind, item, ppid in queued:
            if channel.closed:
                break
            now = self.clock.seconds()
            if kind == "message":
                self.message_received(channel, item, now)
            else:
                self.wire_error(channel, ppid, item, now)

    def _revocation_failed(self, failure: Failure, channel: Channel) -> None:
        self._checking.pop(channel, None)
        if failure.check(defer.CancelledError):
            return  # the channel went away first
        self.events.outage("certificate-check")
        _log.failure("certificate check (revocation or mapping) failed; closing the channel", failure)
        channel.abort()

    def _hold(self, channel: Channel, kind: str, item: Any, ppid: int = 0) -> bool:
        """Queue input of a channel whose revocation check is pending."""
        pending = self._checking.get(channel)
        if pending is None:
            return False
        queued = pending[1]
        if len(queued) >= self.max_queued_during_check:
            _log.warn("closing ASAP channel from {peer}: over {n} messages before its certificate "
                      "check finished", peer=address_text(channel.peer), n=self.max_queued_during_check)
            channel.abort()
        else:
            queued.append((kind, item, ppid))
        return True

    def message_received(self, channel: Channel, message: Any, now: float) -> None:
        session = channel.session
        if session is None:
            self._hold(channel, "message", message)
            return
        if self.authenticator is not None and self.authenticator.handles(message):
            self.authenticator.message_received(channel, message, now)
            return
        self._carry_out(self.core.message_received(session, message, now))

    def wire_error(self, channel: Channel, ppid: int, error: WireError, now: float) -> None:
        session = channel.session
        _log.info("undecodable message from {peer}: {error}", peer=address_text(channel.peer), error=error)
        if session is None:
            self._hold(channel, "wire", error, ppid)
        else:
            self._carry_out(self.core.wire_error(session, error))

    def data_received(self, channel: Channel, ppid: int, payload: bytes, now: float) -> None:
        _log.info("closing channel from {peer}: unexpected PPID {ppid}", peer=address_text(channel.peer), ppid=ppid)
        channel.abort()

    def channel_closed(self, channel: Channel, reason: Failure) -> None:
        session = channel.session
        if self.authenticator is not None:
            self.authenticator.channel_closed(channel)
        checking = self._checking.pop(channel, None)
        if checking is not None:
            checking[0].cancel()
        if channel.tls and not channel.ready and reason is not None and reason.check(SSL.Error):
            self.events.tls_handshake_failures += 1
        if channel in self.channels:
            self.channels.discard(channel)
            address = getattr(channel, "peer_host", "")
            left = self.connections_per_address.get(address, 1) - 1
            if left > 0:
                self.connections_per_address[address] = left
            else:
                self.connections_per_address.pop(address, None)
        if session is not None:
            self._carry_out(self.core.close_session(session, self.clock.seconds()))

    # -- carrying out the core's decisions ---------------------------------------------------

    def _carry_out(self, outputs: list) -> None:
        for output in outputs:
            kind = type(output)
            if kind is Send:
                session = output.session
                if not session.closed:
                    data = output.data
                    if data is None:
                        session.channel.send(output.message)
                    else:
                        session.channel.send_encoded(output.message.PPID, data)
            elif kind is Authorize:
                self._authorize(output)
            elif kind is Close:
                output.session.channel.close()
            elif kind is PoolElementAdded:
                if output.created:
                    _log.info("PE {pe_id:08x} registered in pool {handle} by {identity}",
                              pe_id=output.entry.pe_id, handle=pool_handle_text(output.entry.pool_handle),
                              identity=output.entry.identity)
                for listener in self.change_listeners:
                    listener(output)
            elif kind is PoolElementRemoved:
                _log.info("PE {pe_id:08x} left pool {handle}: {reason}", pe_id=output.entry.pe_id,
                          handle=pool_handle_text(output.entry.pool_handle), reason=output.reason)
                for listener in self.change_listeners:
                    listener(output)
        self._arm_timer()

    def _authorize(self, request: Authorize) -> None:
        # Plain values (the rules authorizer, static groups) are handled
        # without any Deferred; a Deferred from either step is waited for.
        identity = request.session.identity
        try:
            groups = self.groups_of(identity) if identity is not None else ()
            if isinstance(groups, defer.Deferred):
                result: Any = groups.addCallback(self._ask_authorizer, identity, request)
            else:
                result = self._ask_authorizer(groups, identity, request)
        except Exception:
            self._authorization_failed(Failure(), request, identity)
            return
        if isinstance(result, defer.Deferred):
            result.addCallbacks(self._authorization_answered, self._authorization_failed,
                                callbackArgs=(request,), errbackArgs=(request, identity))
        else:
            self._authorization_answered(result, request)

    def _ask_authorizer(self, groups: Any, identity: str | None, request: Authorize) -> Any:
        return self.authorizer.authorize(identity, frozenset(groups or ()), request.action,
                                         request.pool_handle)

    def _authorization_answered(self, allowed: Any, request: Authorize) -> None:
        self._carry_out(self.core.authorization_done(request.session, request.token, allowed is True,
                                                     self.clock.seconds()))

    def _authorization_failed(self, failure: Failure, request: Authorize, identity: str | None) -> None:
        self.events.outage("authorizer")
        _log.failure("authorization backend failed for {identity} ({action} in pool {handle}); refusing",
                     failure, identity=identity, action=request.action,
                     handle=pool_handle_text(request.pool_handle))
        self._carry_out(self.core.authorization_done(request.session, request.token, None,
                                                     self.clock.seconds()))

    # -- timers --------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        if not self.running:
            return
        timer = self._timer
        if timer is not None and self._timer_at is not None and timer.active():
            # Every deadline known when it was armed is at or after _timer_at:
            # only one set since then can be earlier.
            deadline = self.core.take_earliest_scheduled()
            if deadline is None or self._timer_at <= deadline:
                return
            timer.cancel()
        else:
            self.core.take_earliest_scheduled()
            deadline = self.core.next_deadline()
            if deadline is None:
                return
        delay = max(0.0, deadline - self.clock.seconds())
        self._timer_at = deadline
        self._timer = self.clock.callLater(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._carry_out(self.core.on_timer(self.clock.seconds()))

    # -- ENRP hooks (rserpool.service.enrp; docs/takeover.md) ------------------------------

    def hold_resolutions(self) -> None:
        """Answer no resolution until ``release_resolutions`` (the ENRP
        service syncs the handlespace)."""
        self.core.hold_resolutions()

    def release_resolutions(self) -> None:
        self._carry_out(self.core.release_resolutions(self.clock.seconds()))

    def restart_in_place(self, server_id: int) -> None:
        """Rejoin as ``server_id``: the PEs' channels close (they re-register
        through their server hunt); resolutions wait for the new sync."""
        _log.warn("registrar {old:08x} restarts in place as {new:08x}; closing the channels of its PEs",
                  old=self.server_id, new=server_id)
        self._carry_out(self.core.restart_in_place(server_id))

    def timers_changed(self) -> None:
        """Deadlines were set in the handlespace from outside the ASAP core
        (PEs adopted by a takeover): arm the timer for them."""
        self._arm_timer()

    # -- announces ------------------------------------------------------------------------

    def _schedule_announce(self) -> None:
        # T6 with +/-12.5 % jitter so that registrars do not synchronise.
        delay = self.announce_interval * (0.875 + 0.25 * self.rng.random())
        self._announce_call = self.clock.callLater(delay, self._announce)

    def announce_message(self) -> Any:
        transports = []
        for address in self.listening_addresses:
            host = getattr(address, "host", None)
            try:
                ip = ipaddress.ip_address(host)
            except (TypeError, ValueError):
                continue
            # A wildcard address stands for "the address this datagram came
            # from"; receivers substitute the sender's address.
            transports.append(TcpTransport(address.port, ip))
        return self.core.server_announce(tuple(transports))

    def _announce(self) -> None:
        self._announce_call = None
        if self._announce_port is None:
            return
        data = self.announce_message().encode()
        for target in self.announce_targets:
            try:
                self._announce_port.write(data, target)
            except Exception as exc:  # a bad target must not stop the others
                _log.warn("announce to {target} failed: {error}", target=target, error=exc)
        if self.announce_multicast:
            self._announce_port.write(data, self.announce_multicast)
        self._schedule_announce()


class AnnounceProtocol(DatagramProtocol):
    """The registrar's announce socket: it only sends."""

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        pass
