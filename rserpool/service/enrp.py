"""The registrar's ENRP service: the Twisted shell around ``rserpool.enrp``.

- Listens on its own endpoints (``[enrp] listen``, TLS on top, client
  certificates required) and dials peers (``PeerConnector`` in
  ``rserpool.service.enrp_discovery``), both as TCP-mapping channels
  carrying ENRP in DATA chunks with PPID 12 (``rserpool.service.channel``).
- A channel becomes a peer link only through the registrar's security gate
  (``rserpool.gate``, its ``peer`` door, docs/gate.md): the TLS handshake
  (chain, validity, CRLs; on dialled channels also the expected name), the
  certificate's holder named by ``identity_of`` (OCSP and the certificate
  mapping when configured), then the gate opens the channel for that
  identity and puts the ``peer`` action to the authorizer (default deny).
  Until then its messages are dropped and nothing about it is kept; a
  refused peer gets an ENRP_ERROR with the gate's cause and the channel
  closes.
- Feeds the core messages, the registrar's own handlespace changes
  (``RegistrarService.change_listeners``) and the reactor's time, carries
  out what comes back, and keeps one timer at the core's next deadline.
- The periodic PRESENCE also goes over UDP to configured unicast targets
  (multicast only when configured): a hint for discovery, never trusted.
- With its registrar (``registrar``, or the parent service): resolutions
  wait until the handlespace is in sync (joining at start, rejoining after
  a restart in place), PEs adopted by a takeover get their expiry timer,
  and the registrar's own shutdown deletes nothing at the peers (its PEs
  re-register elsewhere; docs/takeover.md).

See docs/enrp.md.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterable

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from rserpool.asap.registrar import PoolElementAdded, PoolElementRemoved
from rserpool.enrp import (
    Announce, ApplyPage, Close, Connect, EnrpCore, EnrpSettings, Initialized, PeerDead, PeerDown, PeerUp,
    Restarted, Send, TakenOver, TakeoverAborted, TakeoverStarted, TookOver,
)
from rserpool.gate import ACTION_PEER, DOOR_PEER, AskAuthorizer, CloseChannel, Gate, Opened
from rserpool.handlespace import Handlespace
from rserpool.identity import MECH_CERTIFICATE, Identity
from rserpool.security.certidentity import CertIdentityError, IdentityPolicy, identity_from_certificate
from rserpool.security.tls import NotTLSError, peer_certificate
from rserpool.service.channel import Channel, ChannelSettings, address_text
from rserpool.service.enrp_discovery import PeerConnector, PresenceReceiver
from rserpool.service.tlsfactory import TLSServerFactory
from rserpool.wire import EnrpError, EnrpHandleUpdate, Limits, OperationError, WireError
from rserpool.wire.codes import CAUSE_SECURITY

__all__ = ["EnrpService", "PEER_IDENTITY_POLICY", "certificate_name"]

_log = Logger()
_TAKEOVER_EVENTS = (TakeoverStarted, TakeoverAborted, TookOver, TakenOver, Restarted)

#: A registrar's identity as an ENRP peer is the one DNS name of its
#: certificate (the name its peers dial and verify).  A certificate with
#: several DNS names is ambiguous and names nobody (rserpool.security.certidentity).
PEER_IDENTITY_POLICY = IdentityPolicy.create(("dns",))


def certificate_name(policy: IdentityPolicy = PEER_IDENTITY_POLICY) -> Callable[[Any, Any], str | None]:
    """``identity_of`` naming a peer certificate's holder by ``policy``
    alone (no OCSP, no mapping); the application passes the registrar's own
    derivation instead (rserpool.tap)."""

    def identity_of(cert: Any, transport: Any = None) -> str | None:
        return identity_from_certificate(cert, policy).name

    return identity_of


class _Refused(Protocol):
    def connectionMade(self) -> None:
        abort = getattr(self.transport, "abortConnection", None)
        (abort or self.transport.loseConnection)()


class _ListenFactory(Factory):
    def __init__(self, service: "EnrpService") -> None:
        self.service = service

    def buildProtocol(self, addr: Any) -> Protocol:
        service = self.service
        host = getattr(addr, "host", "")
        if (len(service.channels) >= service.max_connections
                or service._per_address.get(host, 0) >= service.max_connections_per_address):
            _log.warn("refusing ENRP connection from {addr}: too many connections", addr=addr)
            return _Refused()
        return service.new_channel(initiator=False, host=host) or _Refused()


class EnrpService(MultiService):
    """ENRP for one registrar: listener, dialled peers, presence, timers."""

    def __init__(
        self,
        settings: EnrpSettings,
        *,
        reactor: Any,
        handlespace: Handlespace,
        listen: Iterable[str],
        server_tls: Any,
        client_tls: Callable[[str], Any],
        gate: Gate,
        authorizer: Any,
        groups_of: Callable[[str], Any] | None = None,
        identity_of: Callable[[Any, Any], Any] | None = None,
        candidates: Any = None,
        presence_listen: tuple[str, int] | None = None,
        presence_targets: Iterable[tuple[str, int]] = (),
        presence_multicast: tuple[str, int] | None = None,
        channel_settings: ChannelSettings | None = None,
        max_connections: int = 128,
        max_connections_per_address: int = 16,
        rng: random.Random | None = None,
        connect_timeout: float = 5.0,
        registrar: Any = None,
    ) -> None:
        super().__init__()
        if server_tls is None:
            raise ValueError("ENRP runs only over TLS with mutual authentication (RFC 5355 2.5, 2.15)")
        self.reactor = reactor
        self.clock = reactor
        self.rng = rng or random.SystemRandom()
        limits = settings.peer_limits
        self.channel_settings = channel_settings or ChannelSettings(
            limits=Limits(max_message_size=limits.max_message_bytes))
        self.core = EnrpCore(settings, handlespace, rng=random.Random(self.rng.random()), log=self._core_log)
        self.listen = tuple(listen)
        self.server_tls = server_tls
        self.client_tls = client_tls
        self.gate = gate
        self.authorizer = authorizer
        self.groups_of = groups_of or (lambda identity: ())
        self.identity_of = identity_of or certificate_name()
        self.max_connections = max_connections
        self.max_connections_per_address = max_connections_per_address
        self.channels: set[Channel] = set()
        self._per_address: dict[str, int] = {}
        self._admitting: dict[Channel, defer.Deferred] = {}
        self.outages = 0
        self.dropped_before_admission = 0
        self.ports: list[Any] = []
        self.listening_addresses: list[Any] = []
        self._timer: IDelayedCall | None = None
        self._page_calls: dict[Any, IDelayedCall] = {}  # link -> the call applying its waiting page
        self.connector = PeerConnector(reactor, self._dial, candidates, rng=self.rng,
                                       linked=lambda sid: self.core.peers.link_of(sid) is not None,
                                       connect_timeout=connect_timeout)
        self.presence_listen = presence_listen
        self.presence_targets = tuple(presence_targets)
        self.presence_multicast = presence_multicast
        self.presence = PresenceReceiver(self._presence_hint, reactor)
        self._presence_port: Any = None
        self.expect_peers = candidates is not None
        #: Called (no arguments) after every batch of the core's outputs:
        #: lets a watcher (a test, a status page) look again without polling.
        self.watchers: list[Callable[[], None]] = []
        #: The RegistrarService sharing the handlespace (default: the parent
        #: service, when it is one).
        self.registrar = registrar
        self.takeover_events: list[Any] = []  # the last takeover outputs, for operators

    @property
    def server_id(self) -> int:
        return self.core.server_id

    def _core_log(self, fmt: str, **kwargs: Any) -> None:
        _log.info(fmt, **kwargs)

    # -- lifecycle --------------------------------------------------------------------

    def _registrar(self) -> Any:
        registrar = self.registrar
        if registrar is None:
            parent = self.parent
            if getattr(parent, "handlespace", None) is self.core.handlespace and hasattr(parent, "core"):
                registrar = self.registrar = parent
        return registrar

    @defer.inlineCallbacks
    def startService(self):
        super().startService()
        registrar = self._registrar()
        if registrar is not None and self.expect_peers:
            registrar.hold_resolutions()  # until joined: no answer from an empty handlespace
        if registrar is not None:
            registrar.peer_source = self.peer_views
        for description in self.listen:
            factory = TLSServerFactory(self.server_tls, _ListenFactory(self), clock=self.reactor)
            port = yield serverFromString(self.reactor, description).listen(factory)
            self.ports.append(port)
            self.listening_addresses.append(port.getHost())
            _log.info("registrar {sid:08x} listening for ENRP peers on {address} (TLS, client certificates "
                      "required)", sid=self.server_id, address=address_text(port.getHost()))
        self.core.server_info = self._server_info()
        if self.presence_listen is not None or self.presence_targets or self.presence_multicast:
            host, port = self.presence_listen or ("127.0.0.1", 0)
            if self.presence_multicast:
                self._presence_port = self.reactor.listenMulticast(port, self.presence, interface=host)
                self._presence_port.joinGroup(self.presence_multicast[0])
            else:
                self._presence_port = self.reactor.listenUDP(port, self.presence, interface=host)
        self.connector.own_addresses = {(a.host, a.port) for a in self.listening_addresses}
        self.connector.own_id = self.server_id
        self._carry_out(self.core.start(self.clock.seconds(), self.expect_peers))
        self.connector.start()

    def _server_info(self) -> Any:
        import ipaddress

        from rserpool.wire import SctpTransport, ServerInformation

        for address in self.listening_addresses:
            try:
                ip = ipaddress.ip_address(address.host)
            except ValueError:
                continue
            # RFC 5354 3.11 allows only an SCTP transport here; over the TCP
            # mapping it names the ENRP listener's address and TCP port.
            return ServerInformation(self.server_id, SctpTransport(address.port, (ip,)))
        return None

    @defer.inlineCallbacks
    def stopService(self):
        self.connector.stop()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for call in self._page_calls.values():
            if call.active():
                call.cancel()
        self._page_calls.clear()
        if self._presence_port is not None:
            yield defer.maybeDeferred(self._presence_port.stopListening)
            self._presence_port = None
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

    # -- channels ------------------------------------------------------------------------

    def new_channel(self, initiator: bool, host: str) -> Channel | None:
        """A channel through the gate's peer door, or None when the gate's
        connection limits refuse it (logged there)."""
        channel = Channel(self, self.clock, self.channel_settings, tls=True, initiator=initiator)
        channel.peer_host = host
        admission = self.gate.open_channel(DOOR_PEER, host, True, self.clock.seconds(), channel=channel)
        if admission is None:
            return None
        channel.admission = admission
        admission.door_state = channel
        self.channels.add(channel)
        self._per_address[host] = self._per_address.get(host, 0) + 1
        return channel

    def _dial(self, candidate: Any) -> defer.Deferred:
        """Connect to ``candidate`` (TLS verifying its ``tls_name``); fires
        with the Channel once its handshake completed."""
        from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS

        ready: defer.Deferred = defer.Deferred()
        endpoint_class = TCP6ClientEndpoint if ":" in candidate.host else TCP4ClientEndpoint
        endpoint = wrapClientTLS(self.client_tls(candidate.tls_name),
                                 endpoint_class(self.reactor, candidate.host, candidate.port,
                                                timeout=self.connector.connect_timeout))
        factory = Factory()
        factory.buildProtocol = lambda addr: self._dialled_channel(candidate, ready)  # type: ignore[method-assign]
        connecting = endpoint.connect(factory)
        connecting.addErrback(lambda failure: ready.called or ready.errback(failure))
        return ready

    def _dialled_channel(self, candidate: Any, ready: defer.Deferred) -> Protocol:
        channel = self.new_channel(initiator=True, host=candidate.host)
        if channel is None:
            if not ready.called:
                ready.errback(Failure(ConnectionRefusedError("the gate's connection limits")))
            return _Refused()
        channel.ready_deferred = ready
        channel.candidate = candidate
        return channel

    # ChannelHandler

    def channel_ready(self, channel: Channel) -> None:
        ready = getattr(channel, "ready_deferred", None)
        if ready is not None and not ready.called:
            ready.callback(channel)
        try:
            cert = peer_certificate(channel.transport)
        except NotTLSError:
            cert = None
        if cert is None:
            self._gate_outputs(channel, self.gate.identified(channel.admission, None, self.clock.seconds()))
            return
        check = defer.maybeDeferred(self.identity_of, cert, channel.transport)
        check.addCallback(self._with_groups)
        self._admitting[channel] = check
        check.addCallbacks(self._identified, self._identity_failed, callbackArgs=(channel,),
                           errbackArgs=(channel,))

    def _with_groups(self, name: Identity | str | None) -> Any:
        if name is None or isinstance(name, Identity):
            return name  # an Identity: the registrar's checkers named it, with its groups
        d = defer.maybeDeferred(self.groups_of, name)
        return d.addCallback(lambda groups: Identity.create(name, MECH_CERTIFICATE, groups or ()))

    def _identified(self, identity: Identity | None, channel: Channel) -> Any:
        self._admitting.pop(channel, None)
        if channel.closed:
            return None
        adm = channel.admission
        self._gate_outputs(channel, self.gate.identified(adm, identity, self.clock.seconds()))
        if channel.closed or adm.identity is None:
            return None
        decision = self.gate.admit(adm, ACTION_PEER, b"", self.clock.seconds())
        if decision is None:
            return self._admitted(channel)
        if isinstance(decision, int):
            return self._refuse(channel, decision)
        ask: AskAuthorizer = decision
        d = defer.maybeDeferred(self.authorizer.authorize, ask.identity, ask.groups, ask.action,
                                ask.pool_handle)
        d.addCallbacks(self._answered, self._authorizer_failed, callbackArgs=(channel, ask),
                       errbackArgs=(channel, ask))
        self._admitting[channel] = d
        return None

    def _identity_failed(self, failure: Failure, channel: Channel) -> None:
        self._admitting.pop(channel, None)
        if failure.check(defer.CancelledError) or channel.closed:
            return
        now = self.clock.seconds()
        if failure.check(CertIdentityError):
            _log.warn("ENRP channel from {address}: its certificate names no registrar ({error})",
                      address=channel.admission.address, error=failure.getErrorMessage())
            self._gate_outputs(channel, self.gate.identified(channel.admission, None, now))
            return
        self.outages += 1
        _log.error("ENRP channel from {address}: the certificate check failed: {error}; refusing",
                   address=channel.admission.address, error=failure.getErrorMessage())
        self._gate_outputs(channel, self.gate.identification_refused(channel.admission,
                                                                     "certificate check failed", now))

    def _answered(self, allowed: Any, channel: Channel, ask: AskAuthorizer) -> None:
        self._admitting.pop(channel, None)
        cause = self.gate.authorization_answered(ask, allowed is True, self.clock.seconds())
        if channel.closed:
            return
        if cause is None:
            self._admitted(channel)
        else:
            self._refuse(channel, cause)

    def _authorizer_failed(self, failure: Failure, channel: Channel, ask: AskAuthorizer) -> None:
        self._admitting.pop(channel, None)
        if failure.check(defer.CancelledError):
            return
        self.outages += 1
        cause = self.gate.authorization_answered(ask, None, self.clock.seconds(), failure.getErrorMessage())
        if not channel.closed:
            self._refuse(channel, cause if cause is not None else CAUSE_SECURITY)

    def _admitted(self, channel: Channel) -> None:
        adm = channel.admission
        link, outputs = self.core.link_up(channel, adm.identity, adm.address, channel.initiator,
                                          self.clock.seconds())
        channel.state = link
        _log.info("ENRP channel with {identity}@{address} admitted", identity=adm.identity, address=adm.address)
        self._carry_out(outputs)

    def _gate_outputs(self, channel: Channel, outputs: list) -> None:
        for output in outputs:
            if type(output) is CloseChannel:
                target = output.admission.door_state
                if target is not None:
                    self._refuse(target, CAUSE_SECURITY)
            elif type(output) is not Opened:
                _log.warn("unexpected decision of the gate at the peer door: {output!r}", output=output)

    def _refuse(self, channel: Channel, cause: int) -> None:
        """The gate said no (it logged why): the peer hears the cause, then the channel closes."""
        if channel.closed:
            return
        if cause > 0:
            channel.send(EnrpError(self.server_id, 0, OperationError.of(cause)))
        channel.close()

    def message_received(self, channel: Channel, message: Any, now: float) -> None:
        link = channel.state
        if link is None:
            self._not_admitted(channel, now)
            return
        outputs = self.core.message_received(link, message, now)
        # A peer's update that was applied (no answer) moves no ENRP timer
        # earlier: the timer need not be looked at again for each of them.
        self._carry_out(outputs, rearm=bool(outputs) or type(message) is not EnrpHandleUpdate)

    def wire_error(self, channel: Channel, ppid: int, error: WireError, now: float) -> None:
        link = channel.state
        _log.info("undecodable message on ENRP channel from {peer}: {error}", peer=address_text(channel.peer),
                  error=error)
        if link is None:
            self._not_admitted(channel, now)
            return
        self._carry_out(self.core.wire_error(link, ppid, error))

    def _not_admitted(self, channel: Channel, now: float) -> None:
        """Input before the gate admitted the channel: dropped (nothing about
        a peer is kept before that), counted by the gate (which closes a
        channel that sends too much of it)."""
        self.dropped_before_admission += 1
        self._gate_outputs(channel, self.gate.hold(channel.admission, now))

    def data_received(self, channel: Channel, ppid: int, payload: bytes, now: float) -> None:
        _log.warn("closing ENRP channel from {peer}: PPID {ppid} is neither ENRP nor ASAP",
                  peer=address_text(channel.peer), ppid=ppid)
        channel.abort()

    def channel_closed(self, channel: Channel, reason: Failure) -> None:
        checking = self._admitting.pop(channel, None)
        if checking is not None:
            checking.cancel()
        self.gate.channel_closed(channel.admission)
        ready = getattr(channel, "ready_deferred", None)
        if ready is not None and not ready.called:
            ready.errback(reason)
        if channel in self.channels:
            self.channels.discard(channel)
            host = getattr(channel, "peer_host", "")
            left = self._per_address.get(host, 1) - 1
            if left > 0:
                self._per_address[host] = left
            else:
                self._per_address.pop(host, None)
        link = channel.state
        if link is not None:
            self._carry_out(self.core.link_down(link, self.clock.seconds(), "channel closed"))
        # After the core unlinked it: the connector dials again only servers not linked.
        self.connector.channel_closed(channel, link)

    # -- the registrar's own changes -----------------------------------------------------

    def local_change(self, output: Any) -> None:
        """``RegistrarService.change_listeners`` hook."""
        kind = type(output)
        # Only the updates to send come back, which move no timer.
        if kind is PoolElementAdded:
            self._carry_out(self.core.pe_added(output.entry), rearm=False)
        elif kind is PoolElementRemoved:
            registrar = self._registrar()
            if registrar is not None and getattr(registrar, "stopping", False) and \
                    output.reason == "ASAP channel lost":
                # Our own shutdown closed its channel: the PE lives and
                # re-registers elsewhere; the peers keep it meanwhile.
                self.core.applier.forget(output.entry)
                return
            self._carry_out(self.core.pe_removed(output.entry), rearm=False)

    # -- discovery hints ------------------------------------------------------------------

    def _presence_hint(self, server_id: int, host: str, port: int) -> None:
        if server_id == self.server_id or self.core.peers.link_of(server_id) is not None:
            return
        self.connector.hint(server_id, host, port)

    # -- carrying out ---------------------------------------------------------------------

    def _carry_out(self, outputs: list, rearm: bool = True) -> None:
        """Carry out the core's ``outputs``; then look at the timer again
        (``rearm``: unless the caller knows no deadline moved earlier) and
        tell the watchers."""
        for output in outputs:
            kind = type(output)
            if kind is Send:
                channel = output.channel.channel  # the PeerLink's channel
                if not channel.closed:
                    if output.data is not None:
                        channel.send_encoded(output.message.PPID, output.data)
                    else:
                        channel.send(output.message)
            elif kind is Close:
                link = output.channel  # the PeerLink
                _log.info("closing ENRP channel of {peer}: {reason}", peer=link.describe(), reason=output.reason)
                self.connector.closing(link.channel, link, output.reason)
                link.channel.close()
            elif kind is ApplyPage:
                self._apply_later(output.link)
            elif kind is Connect:
                self.connector.hint(output.server_id, output.host, output.port)
            elif kind is Announce:
                self._announce(output.message)
            elif kind is PeerUp:
                _log.info("ENRP peer {peer} is up", peer=output.link.describe())
                self.connector.bound(output.link.channel, output.link.server_id)
            elif kind is PeerDown:
                _log.info("ENRP peer {peer} is down: {reason}", peer=output.link.describe(), reason=output.reason)
            elif kind is PeerDead:
                _log.warn("ENRP peer {sid:08x} ({identity}) is dead with {n} PEs homed at it",
                          sid=output.server_id, identity=output.identity, n=output.owned)
            elif kind is Initialized:
                _log.info("ENRP initialized ({how}); {n} PEs in the handlespace",
                          how="alone" if output.mentor is None else f"mentor {output.mentor:08x}",
                          n=output.pes)
                registrar = self._registrar()
                if registrar is not None:
                    registrar.release_resolutions()
            elif kind in _TAKEOVER_EVENTS:
                self._takeover_event(output)
        if rearm:
            self._arm_timer()
        if self.watchers:
            for watcher in list(self.watchers):
                watcher()

    def _apply_later(self, link: Any) -> None:
        """Apply ``link``'s waiting page two turns later: Twisted's TLS layer
        writes the request for the next page on the next turn and the socket
        takes it in that turn's poll, so the peer builds that page meanwhile."""
        earlier = self._page_calls.pop(link, None)
        if earlier is not None and earlier.active():
            earlier.cancel()
        self._page_calls[link] = self.reactor.callLater(0, self._apply_turn, link, 1)

    def _apply_turn(self, link: Any, turns_left: int) -> None:
        if turns_left:
            self._page_calls[link] = self.reactor.callLater(0, self._apply_turn, link, turns_left - 1)
            return
        self._page_calls.pop(link, None)
        if not link.closed:
            self._carry_out(self.core.apply_page(link, self.clock.seconds()))

    def _takeover_event(self, output: Any) -> None:
        kind = type(output)
        self.takeover_events.append((self.clock.seconds(), output))
        del self.takeover_events[:-64]
        if kind is TakeoverStarted:
            _log.warn("starting the takeover of ENRP peer {target:08x} (asking {n} peers)",
                      target=output.target, n=len(output.peers))
        elif kind is TakeoverAborted:
            _log.info("takeover of {target:08x} aborted: {reason}", target=output.target, reason=output.reason)
        elif kind is TookOver:
            _log.warn("took ENRP peer {target:08x} over: now the home of its {n} PEs (they expire unless "
                      "they re-register){missing}", target=output.target, n=output.pes,
                      missing="" if not output.missing else
                      "; no ACK from " + ", ".join(f"{m:08x}" for m in output.missing))
            registrar = self._registrar()
            if registrar is not None:
                registrar.timers_changed()
        elif kind is TakenOver:
            _log.warn("ENRP peer {winner:08x} took {target:08x} over ({n} PEs)", winner=output.winner,
                      target=output.target, n=output.pes)
        elif kind is Restarted:
            _log.warn("registrar {old:08x} was not run for {gap:.1f} s (more than MAX-TIME-LAST-HEARD): "
                      "restarting in place as {new:08x}", old=output.old_id, gap=output.gap, new=output.new_id)
            self.connector.own_id = output.new_id
            registrar = self._registrar()
            if registrar is not None:
                registrar.restart_in_place(output.new_id)
            self.connector.kick()

    def peer_views(self) -> list[dict[str, Any]]:
        """The peer list for the admin endpoint (``/api/v1/status``)."""
        core = self.core
        views = []
        for sid, record in sorted(core.peers.records.items()):
            link = record.link
            views.append({
                "server_id": f"{sid:08x}",
                "identity": record.identity,
                "state": "linked" if link is not None and not link.closed else "unlinked",
                "last_heard": record.last_heard,
                "checksum": f"{core.handlespace.checksum(sid):04x}",
                "taking_over": sid in core.takeover.attempts,
            })
        return views

    def _announce(self, message: Any) -> None:
        port = self._presence_port
        if port is None:
            return
        data = message.encode()
        for target in self.presence_targets:
            try:
                port.write(data, target)
            except Exception as exc:  # a bad target must not stop the others
                _log.warn("PRESENCE to {target} failed: {error}", target=target, error=exc)
        if self.presence_multicast:
            port.write(data, self.presence_multicast)

    # -- timer ----------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        if not self.running:
            return
        deadline = self.core.next_deadline()
        timer = self._timer
        if timer is not None and timer.active():
            if deadline is not None and abs(timer.getTime() - deadline) < 1e-6:
                return
            timer.cancel()
        self._timer = None
        if deadline is not None:
            self._timer = self.clock.callLater(max(0.0, deadline - self.clock.seconds()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._carry_out(self.core.on_timer(self.clock.seconds()))
