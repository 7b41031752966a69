"""The registrar's Twisted service: listeners, TLS, timers and announces
around ``rserpool.asap.registrar.RegistrarCore`` and the security gate.

Every protocol and admission decision happens in the cores (the registrar
core and :mod:`rserpool.gate`); this module only

- listens on Twisted endpoint strings and wraps every connection in TLS with
  the configured server options (client certificates requested; required
  only when configured), after asking the gate whether the connection may
  open at all;
- reports what TLS proved to the gate: the client certificate or TLS-PSK
  identity, checked by the configured twisted.cred checkers (and, for a
  certificate, by OCSP first when configured), while the gate holds the
  channel's input;
- feeds messages and the reactor's time into the core and carries out what
  it returns (send, close, ask the authorization plugins);
- runs SRP/CHAP inside TLS (``rserpool.service.auth.RegistrarAuthenticator``)
  when a checker for them is configured;
- keeps one timer armed at the core's next deadline;
- sends ASAP_SERVER_ANNOUNCE over UDP to configured unicast targets (and a
  multicast group only when configured).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Iterable

from OpenSSL import SSL, crypto
from twisted.application.service import MultiService
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rserpool.asap.registrar import (
    Close,
    PauseInput,
    PoolElementAdded,
    PoolElementRemoved,
    RegistrarCore,
    RegistrarSettings,
)
from rserpool.errors import BackendUnavailable
from rserpool.gate import (
    CLOSING, ROOM_ADDRESS, AskAuthorizer, CloseChannel, Gate, GatePolicy, NeedRoom, Opened, RemovePoolElements,
)
from rserpool.handlespace import Handlespace, HandlespaceLimits
from rserpool.identity import Identity
from rserpool.interfaces import IChannelHandler, IChapCredentials, IPoolAuthorizer, ISrpCredentials
from rserpool.outputs import Send
from rserpool.security.certidentity import IdentityPolicy
from rserpool.security.credentials import (
    Authenticator, CertificateChecker, CertificateCredentials, PskChecker, PskCredentials,
)
from rserpool.security.psk import psk_identity
from rserpool.security.revocation import RevocationGate, verified_chain
from rserpool.security.tls import NotTLSError, tls_connection
from rserpool.service.auth import RegistrarAuthenticator
from rserpool.service.announce import ServerAnnouncer, listening_transports
from rserpool.service.channel import Channel, ChannelSettings, address_text
from rserpool.service.live_revocation import LiveCertificates
from rserpool.service.pe_log import PeChangeLog
from rserpool.service.registrar_accept import RegistrarFactory as _RegistrarFactory
from rserpool.service.slots import IdleEviction
from rserpool.service.tlsfactory import TLSServerFactory
from rserpool.stats import EventCounts
from rserpool.wire import WireError
from rserpool.wire.params import pool_handle_text

__all__ = ["RegistrarService"]

_log = Logger()

_LEVELS = {"info": _log.info, "warn": _log.warn, "error": _log.error}


@implementer(IChannelHandler)
class RegistrarService(MultiService):
    """An ENRP server's ASAP service (its ENRP side: ``rserpool.service.enrp``).

    ``checkers`` are the configured authenticators (twisted.cred
    ``ICredentialsChecker`` providers, the ``authenticator`` plugins): the
    first for each credentials interface names the holders of client
    certificates, TLS-PSK keys and (enabling the ASAP authentication
    extension) SRP and CHAP proofs.  Default: certificate names and PSK
    identities, no SRP or CHAP.  ``gate_policy`` is what the gate admits.
    """

    #: Log a debug line for every channel that becomes ready.  Off by default:
    #: a Twisted log event costs a few microseconds even when every observer
    #: filters it out, and this one would be built for every new connection.
    log_channels: bool = False

    def __init__(
        self,
        settings: RegistrarSettings,
        *,
        reactor: Any,
        listen: Iterable[str],
        tls_options: Any | None,
        authorizer: IPoolAuthorizer,
        gate_policy: GatePolicy | None = None,
        checkers: Iterable[ICredentialsChecker] | None = None,
        limits: HandlespaceLimits | None = None,
        channel_settings: ChannelSettings | None = None,
        identity_policy: IdentityPolicy | None = None,
        announce_targets: Iterable[tuple[str, int]] = (),
        announce_interval: float = 1.0,
        announce_multicast: tuple[str, int] | None = None,
        announce_ttl: int = 1,
        rng: random.Random | None = None,
        revocation: RevocationGate | None = None,
        exchange_options: dict[str, Any] | None = None,
        ocsp_recheck_interval: float = 60.0,
    ) -> None:
        super().__init__()
        if not IPoolAuthorizer.providedBy(authorizer):
            raise TypeError(f"{authorizer!r} does not provide IPoolAuthorizer")
        # Counters for operators (rserpool.stats); shared with the authenticator.
        self.events = EventCounts()
        self.started: float | None = None
        self.reactor = reactor
        self.clock: IReactorTime = reactor
        self.listen = tuple(listen)
        self.tls_options = tls_options
        self.authorizer = authorizer
        self.rng = rng or random.SystemRandom()
        self.channel_settings = channel_settings or ChannelSettings()
        self.identity_policy = identity_policy or IdentityPolicy()
        # OCSP: the gate holds a channel's input until its certificate's check answered.
        self.revocation = revocation
        # Revocation news (a CRL reload, an OCSP "revoked") for live channels.
        self.live_certificates = LiveCertificates(
            reactor, self._live_certificates, self._revoked, revocation=revocation,
            recheck_interval=ocsp_recheck_interval, trust_roots=getattr(revocation, "trust_roots", ()))
        self.gate = Gate(gate_policy, log=self._gate_log)
        self.checkers = Authenticator(checkers if checkers is not None else (CertificateChecker(), PskChecker()))
        # SRP/CHAP over the ASAP extension; None: the extension is disabled and
        # its messages are reported as unrecognized.
        self.authenticator: RegistrarAuthenticator | None = None
        if self.checkers.srp_checker is not None or self.checkers.handles(IChapCredentials):
            self.authenticator = RegistrarAuthenticator(reactor, self.gate, self.checkers,
                                                        **(exchange_options or {}))
            self.authenticator.events = self.events
            self.authenticator.deliver = self.message_received
        elif self.checkers.handles(ISrpCredentials):
            raise TypeError("the SRP checker does not provide ISrpChecker (it cannot issue challenges)")
        self.handlespace = Handlespace(limits or HandlespaceLimits(), rng=random.Random(self.rng.random()))
        # Removals are logged from the core's ``PoolElementRemoved`` outputs
        # (rserpool.service.pe_log): the core's own line is not even formatted.
        self.core = RegistrarCore(settings, self.handlespace, self.gate, rng=random.Random(self.rng.random()),
                                  log=_log.info, log_removals=False)
        self.announcer = ServerAnnouncer(reactor, self.announce_message, targets=announce_targets,
                                         interval=announce_interval, multicast=announce_multicast,
                                         ttl=announce_ttl, rng=self.rng)
        self.announce_targets = self.announcer.targets
        self.channels: dict[Channel, Any] = {}  # every open connection -> its admission
        # Idle anonymous channels give their slot to newcomers when a limit is
        # reached (which ones may go is the gate's decision); only channels
        # that open anonymous are indexed.
        self.eviction = IdleEviction(self.gate.policy.ipv6_prefix)
        self._logged_at: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}
        self._held: dict[Channel, list] = {}  # input held while the channel is identified
        # The ENRP service's peer list (None: no ENRP), for peer_views().
        self.peer_source: Callable[[], list[dict[str, Any]]] | None = None
        self._identifying: dict[Channel, defer.Deferred] = {}
        self.ports: list[Any] = []
        self.listening_addresses: list[Any] = []
        self._timer: IDelayedCall | None = None
        # PE changes: routine ones counted, a summary a minute (rserpool.service.pe_log).
        self.pe_log = PeChangeLog(reactor, lambda: len(self.handlespace), _log)
        self._timer_at: float | None = None
        #: Called with every PoolElementAdded / PoolElementRemoved (the ENRP
        #: service turns them into handle updates to peers).
        self.change_listeners: list[Callable[[Any], None]] = []
        #: Set when stopService begins: the PEs' channels are about to be
        #: closed by us, which is no news for the ENRP peers (docs/takeover.md).
        self.stopping = False
        if tls_options is None:
            _log.critical("INSECURE: the ASAP listener runs WITHOUT TLS; anyone on the network "
                          "can read and forge registrations")

    @staticmethod
    def _gate_log(level: str, fmt: str, **kwargs: Any) -> None:
        _LEVELS[level](fmt, **kwargs)

    # -- lifecycle ------------------------------------------------------------------

    @property
    def server_id(self) -> int:
        return self.core.settings.server_id

    @defer.inlineCallbacks
    def startService(self):  # noqa: N802 (Twisted)
        super().startService()
        self.started = self.clock.seconds()
        self.live_certificates.start()
        self.pe_log.start()
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
        self.announcer.start()

    @defer.inlineCallbacks
    def stopService(self):  # noqa: N802 (Twisted)
        self.stopping = True
        self.live_certificates.stop()
        self.pe_log.stop()
        yield self.announcer.stop()
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

    # -- IChannelHandler ------------------------------------------------------------------

    def channel_ready(self, channel: Channel) -> None:
        """TLS is up: name the channel's holder (certificate or PSK), after
        the certificate's OCSP check when configured; the gate holds the
        channel's input meanwhile."""
        admission = self.channels.get(channel)
        if admission is None:
            channel.abort()
            return
        credentials: Any = None
        cert = None
        if channel.tls:
            self.gate.handshake_finished(admission, self.clock.seconds())
            try:
                connection = tls_connection(channel.transport)
            except NotTLSError:
                connection = None
            peer = connection.get_peer_certificate() if connection is not None else None
            if peer is not None:
                credentials = CertificateCredentials.from_x509(peer, self.identity_policy)
                self.gate.certificate_seen(admission, credentials.fingerprint)
                cert = credentials
            elif connection is not None:
                name = psk_identity(connection)
                if name is not None:
                    credentials = PskCredentials(name)
        gate = self.revocation
        if cert is not None and gate is not None and gate.enabled:
            d = gate.check(cert.certificate, verified_chain(channel.transport))
            d.addCallback(self._revocation_checked, channel, cert)
        elif credentials is not None:
            d = self.checkers.authenticate(credentials)
            result = d.result if d.called else None
            if isinstance(result, Identity):
                # The checker answered at once (names from the certificate, a
                # PSK identity): no input can have arrived meanwhile.
                self._identified(result, channel)
                return
            d.addErrback(self._no_identity, channel, credentials)
        else:
            self._identified(None, channel)
            return
        self._held[channel] = []  # input waits (bounded by the gate) until the identity is known
        if not d.called:
            self._identifying[channel] = d
        d.addCallbacks(self._identified, self._identification_failed, callbackArgs=(channel,),
                       errbackArgs=(channel,))

    def certificate_identity(self, certificate: Any, transport: Any = None) -> defer.Deferred[Identity | None]:
        """Who a verified client certificate (``cryptography`` or pyOpenSSL)
        names, as on the ASAP door: its OCSP check first when that is on and
        ``transport`` gives the chain (refused: nobody), then the configured
        certificate authenticator.  For the other doors (the admin endpoint)."""
        if isinstance(certificate, crypto.X509):
            credentials = CertificateCredentials.from_x509(certificate, self.identity_policy)
        else:
            credentials = CertificateCredentials(certificate, self.identity_policy)
        gate = self.revocation
        if gate is not None and gate.enabled and transport is not None:
            d = gate.check(credentials.certificate, verified_chain(transport))
            d.addCallback(self._revocation_checked, None, credentials)
        else:
            d = self._authenticate(None, credentials)
        return d.addErrback(self._refused_certificate)

    @staticmethod
    def _refused_certificate(failure: Failure) -> None:
        failure.trap(_Revoked)
        _log.warn("client certificate refused: {reason}", reason=failure.getErrorMessage())
        return None

    def _revocation_checked(self, decision: Any, channel: Channel, credentials: Any) -> Any:
        self.live_certificates.ocsp_decided(credentials.fingerprint, decision)  # its live channels too
        if not decision.allowed:
            raise _Revoked(decision.reason)
        return self._authenticate(channel, credentials)

    def _authenticate(self, channel: Channel, credentials: Any) -> defer.Deferred[Identity | None]:
        d = self.checkers.authenticate(credentials)
        d.addErrback(self._no_identity, channel, credentials)
        return d

    def _no_identity(self, failure: Failure, channel: Channel, credentials: Any) -> None:
        failure.trap(UnauthorizedLogin, UnhandledCredentials)
        if failure.check(UnauthorizedLogin):
            certificate = isinstance(credentials, CertificateCredentials)
            self.events.authenticated("certificate" if certificate else "tls-psk", False)
            _log.warn("{what} from {peer} yields no identity",
                      peer=address_text(channel.peer) if channel is not None else "another door",
                      what="client certificate" if certificate else "TLS-PSK identity")
        return None

    def _identified(self, identity: Identity | None, channel: Channel) -> None:
        self._identifying.pop(channel, None)
        admission = self.channels.get(channel)
        if admission is None or channel.closed:
            return
        if identity is not None:
            self.events.authenticated(identity.mechanism, True)
        self._decided(self.gate.identified(admission, identity, self.clock.seconds()))

    def _identification_failed(self, failure: Failure, channel: Channel) -> None:
        self._identifying.pop(channel, None)
        admission = self.channels.get(channel)
        if failure.check(defer.CancelledError) or admission is None or channel.closed:
            return  # the channel went away first
        if failure.check(_Revoked):
            self.events.authenticated("certificate", False)
            reason = f"certificate refused: {failure.value}"
        elif failure.check(BackendUnavailable):
            self.events.outage("certificate-check")
            reason = f"identity unavailable: {failure.getErrorMessage()}"
        else:
            self.events.outage("certificate-check")
            _log.failure("certificate check (revocation or mapping) failed; closing the channel", failure)
            reason = f"certificate check failed: {failure.getErrorMessage()}"
        self._decided(self.gate.identification_refused(admission, reason, self.clock.seconds()))

    def _decided(self, decisions: list) -> None:
        """Carry out what the gate decided about channels."""
        for decision in decisions:
            kind = type(decision)
            channel = decision.admission.channel
            if kind is Opened:
                self._open_channel_state(channel, decision.admission)
                continue
            now = self.clock.seconds()
            if kind is CloseChannel:
                self._held.pop(channel, None)
                if channel is not None:
                    # An ASAP or ENRP Channel closes cleanly; another door's
                    # channel (the admin endpoint's HTTP channel) is dropped.
                    close = getattr(channel, "close", None) or channel.loseConnection
                    close()
            elif kind is RemovePoolElements:
                state = decision.admission.door_state
                if state is not None:
                    self._carry_out(self.core.remove_pool_elements(state, decision.reason, now))
            elif kind is NeedRoom:
                # Anonymous channels hold all they may: an idle one gives its
                # slot, or this one closes.
                victim = self.eviction.pick(None, now, self.evictable)
                if victim is not None:
                    self._evict(victim, channel.peer)
                    self._decided(self.gate.identified(decision.admission, None, now))
                else:
                    self._decided(self.gate.no_room(decision.admission, now))

    def _open_channel_state(self, channel: Channel, admission: Any) -> None:
        channel.state = self.core.open_channel(channel, admission)
        if admission.identity is None:
            # Only a channel that opens anonymous can ever give its slot to a
            # newcomer (Gate.evictable; an identity is never taken away from
            # an open channel): only those are indexed for IdleEviction.
            self.eviction.add(admission.address, channel)
        if self.log_channels:
            _log.debug("ASAP channel from {address} ready (identity {identity}, {mechanism})",
                       address=admission.address, identity=admission.identity,
                       mechanism=admission.mechanism or "unauthenticated")
        held = self._held.pop(channel, ())
        for kind, item, ppid in held:
            if channel.closed or channel.state is None:
                break
            now = self.clock.seconds()
            if kind == "message":
                self.message_received(channel, item, now)
            else:
                self.wire_error(channel, ppid, item, now)

    def _hold(self, channel: Channel, kind: str, item: Any, now: float, ppid: int = 0) -> None:
        """Input of a channel whose identity is not established yet: the gate
        says whether to keep it (bounded) or close the channel."""
        held = self._held.get(channel)
        admission = self.channels.get(channel)
        if held is None or admission is None:
            return  # closing: dropped
        decisions = self.gate.hold(admission, now)
        if decisions:
            self._held.pop(channel, None)
            channel.abort()
        else:
            held.append((kind, item, ppid))

    def message_received(self, channel: Channel, message: Any, now: float) -> None:
        state = channel.state
        if state is None:
            self._hold(channel, "message", message, now)
            return
        authenticator = self.authenticator
        if authenticator is not None:
            if authenticator.handles(message):
                authenticator.message_received(channel, message, now)
                return
            if authenticator.waiting(channel):  # in order: behind the exchange's step
                if not authenticator.hold(channel, message):
                    _log.info("closing channel from {peer}: more than {n} messages behind its "
                              "authentication", peer=address_text(channel.peer), n=authenticator.max_held)
                    channel.abort()
                return
        self._carry_out(self.core.message_received(state, message, now))

    def wire_error(self, channel: Channel, ppid: int, error: WireError, now: float) -> None:
        state = channel.state
        _log.info("undecodable message from {peer}: {error}", peer=address_text(channel.peer), error=error)
        if state is None:
            self._hold(channel, "wire", error, now, ppid)
        else:
            self._carry_out(self.core.wire_error(state, error))

    def data_received(self, channel: Channel, ppid: int, payload: bytes, now: float) -> None:
        _log.info("closing channel from {peer}: unexpected PPID {ppid}", peer=address_text(channel.peer),
                  ppid=ppid)
        channel.abort()

    def channel_closed(self, channel: Channel, reason: Failure) -> None:
        state = channel.state
        if self.authenticator is not None:
            self.authenticator.channel_closed(channel)
        if channel.tls and not channel.ready and reason is not None and reason.check(SSL.Error):
            self.events.tls_handshake_failures += 1
        self._held.pop(channel, None)
        identifying = self._identifying.pop(channel, None)
        if identifying is not None:
            identifying.cancel()
        self.eviction.remove(channel)
        admission = self.channels.pop(channel, None)
        now = self.clock.seconds()
        if admission is not None:
            self.gate.channel_closed(admission, now)
        if state is not None:
            self._carry_out(self.core.close_channel(state, now))

    def psk_attempt(self, identity: str, tls_protocol: Any) -> bool:
        """A TLS-PSK handshake (``tls_protocol``, Twisted's TLS protocol
        around one of our channels) offers a key for ``identity``: the gate's
        failure budgets say whether it may be tried (no: the handshake fails
        as with a wrong key).  Installed by ``rserpool.tap`` as the PSK
        server options' ``admit``."""
        admission = self.channels.get(getattr(tls_protocol, "wrappedProtocol", None))
        if admission is None:
            return False
        return self.gate.psk_attempt(admission, identity, self.clock.seconds())

    # -- making room for newcomers ------------------------------------------------------------

    def evictable(self, channel: Channel, now: float) -> float | None:
        """From when ``channel`` may give its slot to a newcomer (None:
        never): the gate decides from the facts (its last message, its PEs)."""
        admission = self.channels.get(channel)
        if admission is None:
            return None
        state = channel.state
        return self.gate.evictable(admission, channel.last_message_at, state is not None and bool(state.pes))

    def make_room(self, host: str, now: float, newcomer: Any) -> None:
        """When the gate would refuse a connection from ``host`` for lack of
        room, drop the idle anonymous channel that has waited longest (from
        ``host``'s address if that is what is full)."""
        full = self.gate.room_needed(host)
        if full is None:
            return
        victim = self.eviction.pick(host if full is ROOM_ADDRESS else None, now, self.evictable)
        if victim is not None:
            self._evict(victim, newcomer)

    def _evict(self, victim: Channel, newcomer: Any) -> None:
        admission = self.channels.pop(victim, None)
        if admission is not None:
            self.gate.channel_closed(admission)  # its slot is free now; its close follows
        if self._log_now("evicted"):
            _log.info("dropping idle anonymous ASAP channel from {peer} to make room for {addr} "
                      "({more} more since the last such line)", peer=address_text(victim.peer),
                      addr=address_text(newcomer), more=self._unlogged.pop("evicted", 0))
        victim.abort()

    def _log_now(self, kind: str) -> bool:
        """The first line of a kind, then at most one a minute (the others counted)."""
        now = self.clock.seconds()
        if now - self._logged_at.get(kind, float("-inf")) < 60.0:
            self._unlogged[kind] = self._unlogged.get(kind, 0) + 1
            return False
        self._logged_at[kind] = now
        return True

    # -- revocation of live channels ---------------------------------------------------------

    def revoke(self, *, identity: str | None = None, fingerprint: str | None = None, reason: str) -> None:
        """An identity or a certificate (SHA-256 fingerprint) was revoked:
        the gate closes every channel it authenticated and their PEs go now."""
        self._decided(self.gate.revoke(identity=identity, fingerprint=fingerprint, reason=reason,
                                       now=self.clock.seconds()))

    def crls_reloaded(self, crls: Any) -> None:
        """New CRLs are in force (a ``CrlMonitor`` reload listener): the live
        channels whose certificates they revoke close, at every door."""
        self.live_certificates.crls_reloaded(crls)

    def _revoked(self, fingerprint: str, reason: str) -> None:
        self.revoke(fingerprint=fingerprint, reason=reason)

    def _live_certificates(self) -> Iterable[Any]:
        """(fingerprint, certificate, verified chain) of every live channel
        of every door that came with a client certificate."""
        for admission in list(self.gate.channels):
            if admission.fingerprint is None or admission.state is CLOSING or admission.channel is None:
                continue
            transport = getattr(admission.channel, "transport", None)
            try:
                peer = tls_connection(transport).get_peer_certificate()
            except NotTLSError:
                continue
            if peer is not None:
                yield admission.fingerprint, peer.to_cryptography(), verified_chain(transport)

    # -- carrying out the core's decisions ---------------------------------------------------

    def _carry_out(self, outputs: list, arm: bool = True) -> None:
        """Carry out the core's outputs, then arm the timer for its deadlines
        (``arm`` False: the caller is carrying out outputs and arms it after)."""
        for output in outputs:
            kind = type(output)
            if kind is Send:
                state = output.channel
                if not state.closed:
                    data = output.data
                    if data is None:
                        state.channel.send(output.message)
                    else:
                        state.channel.send_encoded(output.message.PPID, data)
            elif kind is PoolElementAdded:
                if output.created:
                    self.pe_log.added(output.entry)
                for listener in self.change_listeners:
                    listener(output)
            elif kind is PoolElementRemoved:
                self.pe_log.removed(output.entry, output.reason)
                for listener in self.change_listeners:
                    listener(output)
            elif kind is AskAuthorizer:
                self._authorize(output)
            elif kind is Close:
                output.channel.channel.close()  # the AsapChannelState's channel
            elif kind is PauseInput:
                output.channel.channel.pause_input(output.until)
        if arm:
            self._arm_timer()

    def _authorize(self, ask: AskAuthorizer) -> None:
        # A plain answer (the rules authorizer) is handled without any
        # Deferred; a Deferred is waited for.
        try:
            result = self.authorizer.authorize(ask.identity, ask.groups, ask.action, ask.pool_handle)
        except Exception:
            self._authorization_failed(Failure(), ask)
            return
        if isinstance(result, defer.Deferred):
            result.addCallbacks(self._authorization_answered, self._authorization_failed,
                                callbackArgs=(ask,), errbackArgs=(ask,))
        else:  # inside _carry_out, which arms the timer afterwards
            self._carry_out(self.core.authorization_done(ask, result is True, self.clock.seconds()), False)

    def _authorization_answered(self, allowed: Any, ask: AskAuthorizer) -> None:
        self._carry_out(self.core.authorization_done(ask, allowed is True, self.clock.seconds()))

    def _authorization_failed(self, failure: Failure, ask: AskAuthorizer) -> None:
        self.events.outage("authorizer")
        if not failure.check(BackendUnavailable):
            _log.failure("authorization backend failed for {identity} ({action} in pool {handle})", failure,
                         identity=ask.identity, action=ask.action, handle=pool_handle_text(ask.pool_handle))
        self._carry_out(self.core.authorization_done(ask, None, self.clock.seconds(),
                                                     failure.getErrorMessage()))

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

    def peer_views(self) -> list[dict[str, Any]]:
        """The ENRP peers for the admin endpoint (none without ENRP)."""
        source = self.peer_source
        return [] if source is None else source()

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

    def announce_message(self) -> Any:
        """This registrar's ASAP_SERVER_ANNOUNCE (its listening transports)."""
        return self.core.server_announce(listening_transports(self.listening_addresses))


class _Revoked(Exception):
    """The certificate's OCSP check refused it."""

