"""The pool element library: the Twisted shell around
``rserpool.asap.pe.PeRegistration``.

``PoolElementService`` is a ``twisted.application.service.Service``: start it
and it hunts for a registrar (``rserpool.service.hunt.ServerHunt``, or any
injected ``hunt(avoid) -> Deferred[Channel]``), registers the PE over TLS,
answers the registrar's keep-alives, re-registers before the life ends (T4),
fails over to another registrar when the home registrar's channel dies
(connection lost or the channel's dead-peer detection), and deregisters when
stopped (bounded by T3).

Deferred API::

    pe = PoolElementService(reactor, b"echo", TcpTransport(port, ip), LeastUsedPolicy(0),
                            candidates=RegistrarCandidates(static=["127.0.0.1:3864 localhost"]),
                            tls_options_factory=lambda name: tls.client_options(
                                name, [ca], client_cert=(cert, key)))
    pe.startService()
    event = yield pe.registered()          # rserpool.asap.pe.Registered
    yield pe.update_policy(LeastUsedPolicy(5))
    yield pe.stopService()                 # deregisters

Observers (``add_observer``) receive every event of ``rserpool.asap.pe``
(``Registered``, ``RegistrationRefused``, ``HomeChanged``, ``NeedServer``
with ``failover=True`` when the home registrar was lost, ``RegistrationLost``,
``Deregistered``, ``RegistrationFailed``, ``Ignored``, ``KeepAliveDropped``).  See
docs/pe-library.md.

Keep-alives over ``PeSettings.keepalive_rate``/``keepalive_burst`` on a
registrar channel are not answered (RFC 5355 2.14) and logged sparingly by
``drop_log`` (:class:`rserpool.service.keepalive_log.KeepAliveDropLog`: the
first one dropped on a channel, then at most one summary line per
``keepalive_log_interval`` seconds while drops go on, and one when the
channel closes with drops not yet logged).  ``stats["keepalives_dropped"]``
counts them (``stats["keepalives_answered"]`` the answered ones) over the
service's life.
"""

from __future__ import annotations

import secrets
from typing import Any, Callable, Iterable

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from rserpool.asap.pe import (
    CloseChannel, Deregistered, RegistrationFailed, HomeChanged, KeepAliveDropped, NeedServer,
    PeSettings, PeState, PeRegistration, Registered, RegistrationLost, RegistrationRefused, Send,
)
from rserpool.outputs import Ignored
from rserpool.service.channel import Channel, ChannelSettings, address_text
from rserpool.service.keepalive_log import KeepAliveDropLog
from rserpool.wire import AsapEndpointKeepAliveAck, AsapRegistration, WireError, error_reply
from rserpool.wire.codes import PPID_ASAP
from rserpool.wire.params import pool_handle_text
from rserpool.wire.transports import Transport

__all__ = [
    "PoolElementService", "Hunt", "PoolElementError", "RegistrationRefusedError",
    "RegistrationFailedError", "PoolElementStopped", "static_hunt", "AuthenticationFailedError",
]

_log = Logger()


#: Find a home registrar: ``hunt(avoid)`` returns a Deferred firing with a
#: ready ``Channel``; ``avoid``: addresses (host, port) to try last (the
#: registrar just lost).
Hunt = Callable[[tuple[tuple[str, int], ...]], "defer.Deferred[Channel]"]


class PoolElementError(Exception):
    """Base of the errors the Deferred API fails with."""


class RegistrationRefusedError(PoolElementError):
    def __init__(self, event: RegistrationRefused) -> None:
        super().__init__(f"registration refused: {event.cause}")
        self.event = event
        self.cause = event.cause


class RegistrationFailedError(PoolElementError):
    def __init__(self, event: RegistrationFailed) -> None:
        super().__init__(f"registration failed after {event.attempts} attempt(s): {event.reason}")
        self.event = event


class AuthenticationFailedError(PoolElementError):
    """The registrar refused the PE's SRP/CHAP authentication (or does not
    support it); the PE does not hunt again until ``retry()``."""

    def __init__(self, error: Any) -> None:
        super().__init__(f"authentication failed: {error}")
        self.error = error  # rserpool.service.auth.AuthenticationError
        self.event = error.event  # rserpool.security.exchange.AuthenticationFailed
        self.unsupported = error.unsupported


class PoolElementStopped(PoolElementError):
    def __init__(self) -> None:
        super().__init__("the pool element stopped")


class PoolElementService(Service):
    """One pool element registered in one pool, with failover."""

    def __init__(
        self,
        reactor: Any,
        pool_handle: bytes,
        user_transport: Transport,
        policy: Any,
        *,
        registration_life: int = 300,
        hunt: Hunt | None = None,
        candidates: Any = None,
        tls_options_factory: Callable[[str], Any] | None = None,
        hunt_options: dict[str, Any] | None = None,
        channel_settings: ChannelSettings | None = None,
        settings: PeSettings | None = None,
        pe_id: int | None = None,
        randbits: Callable[[int], int] = secrets.randbits,
        hunt_retry: tuple[float, float] = (1.0, 60.0),
        authenticator: Any = None,
        keepalive_log_interval: float = 60.0,
    ) -> None:
        self.reactor = reactor
        # SRP/CHAP before registering (rserpool.service.auth.PeAuthenticator), on
        # every new registrar channel (so again after a failover).
        self.authenticator = authenticator
        self._auth_blocked = False
        self.channel_settings = channel_settings or ChannelSettings()
        self.core = PeRegistration(pool_handle, user_transport, policy, registration_life,
                                       settings, pe_id=pe_id, randbits=randbits)
        self.server_hunt: Any = None
        if hunt is None:
            if candidates is None or tls_options_factory is None:
                raise ValueError("give either hunt, or candidates and tls_options_factory")
            from rserpool.service.hunt import ServerHunt, make_channel_factory
            self.server_hunt = ServerHunt(
                reactor, candidates, tls_options_factory,
                make_channel_factory(lambda candidate: self, reactor, self.channel_settings),
                **(hunt_options or {}))
            server_hunt = self.server_hunt

            def hunt(avoid: tuple[tuple[str, int], ...]) -> defer.Deferred[Channel]:
                return server_hunt.find(avoid)
        self._hunt: Hunt = hunt
        self._hunting: defer.Deferred[Channel] | None = None
        self._hunt_retry_initial, self._hunt_retry_max = hunt_retry
        self._hunt_retry = self._hunt_retry_initial
        self._hunt_retry_call: IDelayedCall | None = None
        self._avoid: tuple[tuple[str, int], ...] = ()
        self.channels: set[Channel] = set()
        self._up_early: set[Channel] = set()  # channel_up given behind the proof, verdict pending
        self._timer: IDelayedCall | None = None
        self._timer_at: float | None = None
        self._observers: list[Callable[[Any], None]] = []
        self._waiting_registered: list[defer.Deferred[Registered]] = []
        self._update_waiting: list[defer.Deferred[Registered]] = []
        self._update_sent: list[defer.Deferred[Registered]] = []
        self._deregister_waiting: list[defer.Deferred[Deregistered]] = []
        self.last_registered: Registered | None = None
        self.last_deregistered: Deregistered | None = None
        # RFC 5355 2.14: counters over the service's life (the core is
        # replaced when the service restarts), and the drop log per channel.
        self.stats = {"keepalives_answered": 0, "keepalives_dropped": 0}
        self.drop_log = KeepAliveDropLog(
            reactor, keepalive_log_interval, pe_id=lambda: self.pe_id,
            dropped_in_all=lambda: self.stats["keepalives_dropped"])

    # -- state ------------------------------------------------------------------------

    @property
    def pe_id(self) -> int:
        return self.core.pe_id

    @property
    def pool_handle(self) -> bytes:
        return self.core.pool_handle

    @property
    def state(self) -> PeState:
        return self.core.state

    @property
    def is_registered(self) -> bool:
        return self.core.state is PeState.REGISTERED

    @property
    def home_server_id(self) -> int | None:
        return self.core.home_server_id

    @property
    def home_channel(self) -> Channel | None:
        return self.core.home

    def add_observer(self, observer: Callable[[Any], None]) -> None:
        """``observer(event)`` for every event of ``rserpool.asap.pe``."""
        self._observers.append(observer)

    def remove_observer(self, observer: Callable[[Any], None]) -> None:
        self._observers.remove(observer)

    # -- lifecycle ----------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if self.core.state is PeState.STOPPED:  # restarted: same PE, new registration
            old = self.core
            self.core = PeRegistration(old.pool_handle, old.element.user_transport, old.policy,
                                           old.registration_life, old.settings, pe_id=old.pe_id)
        _log.info("PE {pe_id:08x} starting: pool {handle}, {transport}, life {life} s",
                  pe_id=self.pe_id, handle=pool_handle_text(self.pool_handle),
                  transport=self.core.element.user_transport, life=self.core.registration_life)
        self._carry_out(self.core.start(self.reactor.seconds()))

    def stopService(self) -> defer.Deferred[None]:
        """Deregister (at most T3), then close the channels cleanly (the
        registrar's last message acknowledged, a TLS close_notify; a
        registrar that does not complete the close is aborted after the
        channel's ``close_timeout``)."""
        super().stopService()
        d = self.deregister()

        def close(_: Any) -> defer.Deferred[Any]:
            self._cancel_hunt()
            self._cancel_timer()
            closing = [channel.closed_deferred() for channel in self.channels]
            for channel in list(self.channels):
                channel.close()
            self.drop_log.close_all()
            return defer.DeferredList(closing)

        d.addBoth(close)
        d.addCallback(lambda _: None)
        return d

    # -- Deferred API -------------------------------------------------------------------

    def registered(self) -> defer.Deferred[Registered]:
        """Fires with the ``Registered`` event: at once if registered now,
        else at the next successful registration.  Fails with
        ``RegistrationRefusedError``, ``RegistrationFailedError`` or
        ``PoolElementStopped``."""
        if self.core.state is PeState.REGISTERED and self.last_registered is not None:
            return defer.succeed(self.last_registered)
        if self.core.state is PeState.STOPPED:
            return defer.fail(PoolElementStopped())
        d: defer.Deferred[Registered] = defer.Deferred()
        self._waiting_registered.append(d)
        return d

    def next_registration(self) -> defer.Deferred[Registered]:
        """Fires at the next successful (re-)registration, whatever the state now."""
        d: defer.Deferred[Registered] = defer.Deferred()
        self._waiting_registered.append(d)
        return d

    def update(self, *, policy: Any = None, registration_life: int | None = None,
               user_transport: Transport | None = None) -> defer.Deferred[Registered]:
        """Re-register with new values; fires once a registration carrying
        them succeeded (also how a refused registration is retried)."""
        d: defer.Deferred[Registered] = defer.Deferred()
        self._update_waiting.append(d)
        self._carry_out(self.core.update(self.reactor.seconds(), policy=policy,
                                         registration_life=registration_life,
                                         user_transport=user_transport))
        return d

    def update_policy(self, policy: Any) -> defer.Deferred[Registered]:
        """Re-register with a new policy (e.g. a new load value)."""
        return self.update(policy=policy)

    def retry(self) -> defer.Deferred[Registered]:
        """After ``RegistrationFailed`` or a refusal: try again (attempts counted anew)."""
        if self._auth_blocked:
            self._auth_blocked = False
            d = self.next_registration()
            self._start_hunt()
            return d
        return self.update()

    def deregister(self) -> defer.Deferred[Deregistered]:
        """Deregister and stop registering (bounded by T3); fires with ``Deregistered``."""
        if self.core.state in (PeState.STOPPED, PeState.IDLE):
            return defer.succeed(self.last_deregistered or Deregistered(True))
        d: defer.Deferred[Deregistered] = defer.Deferred()
        self._deregister_waiting.append(d)
        self._carry_out(self.core.stop(self.reactor.seconds()))
        return d

    # -- ChannelHandler -------------------------------------------------------------------

    def channel_ready(self, channel: Channel) -> None:
        pass  # the hunt's Deferred hands the channel over (see _hunted)

    def message_received(self, channel: Channel, message: Any, now: float) -> None:
        if channel in self.channels:
            self._carry_out(self.core.message_received(channel, message, now))

    def wire_error(self, channel: Channel, ppid: int, error: WireError, now: float) -> None:
        _log.warn("undecodable message from registrar {peer}: {error}", peer=address_text(channel.peer), error=error)
        if error.report is not None and channel in self.channels:
            channel.send(error_reply(error, PPID_ASAP))

    def data_received(self, channel: Channel, ppid: int, payload: bytes, now: float) -> None:
        _log.warn("ignoring data with PPID {ppid} from registrar {peer}", ppid=ppid, peer=address_text(channel.peer))

    def channel_closed(self, channel: Channel, reason: Failure) -> None:
        self.drop_log.channel_closed(channel)
        if channel not in self.channels:
            return
        self.channels.discard(channel)
        if channel is self.core.home:
            # Closed by us (deregistered, stopping): expected, and the
            # deregistration line said so already; by the registrar or the
            # network: the PE must find another registrar.
            log = _log.debug if channel.closing or self.core.state is PeState.STOPPED else _log.warn
            log("PE {pe_id:08x}: channel to home registrar {peer} closed: {reason}",
                pe_id=self.pe_id, peer=address_text(channel.peer), reason=reason.getErrorMessage())
            address = _address_of(channel)
            self._avoid = (address,) if address is not None else ()
        self._carry_out(self.core.channel_down(channel, self.reactor.seconds()))

    # -- the hunt --------------------------------------------------------------------------

    def _start_hunt(self) -> None:
        if self._auth_blocked:
            return
        if self._hunting is not None or self._hunt_retry_call is not None:
            return
        try:
            d = self._hunt(self._avoid)
        except Exception:
            d = defer.fail()
        self._hunting = d
        d.addCallbacks(self._hunted, self._hunt_failed)

    def _hunted(self, channel: Channel) -> None:
        self._hunting = None
        self._hunt_retry = self._hunt_retry_initial
        channel.handler = self
        if channel.closed:
            self._hunt_failed(Failure(PoolElementError("the registrar's channel closed before use")))
            return
        self.channels.add(channel)
        # At debug: the hunt has just said "home registrar: ...".
        _log.debug("PE {pe_id:08x}: registrar channel to {peer} ready", pe_id=self.pe_id,
                   peer=address_text(channel.peer))
        if self.authenticator is not None:
            # The registration goes right behind the proof (one round trip
            # less); the registrar handles it after its verdict.
            d = self.authenticator.authenticate(channel, then=lambda: self._proof_sent(channel))
            d.addCallbacks(self._authenticated, self._authentication_failed,
                           callbackArgs=(channel,), errbackArgs=(channel,))
            return
        self._carry_out(self.core.channel_up(channel, self.reactor.seconds()))

    def _proof_sent(self, channel: Channel) -> None:
        if channel.closed or channel not in self.channels:
            return
        self._up_early.add(channel)
        self._carry_out(self.core.channel_up(channel, self.reactor.seconds()))

    def _authenticated(self, event: Any, channel: Channel) -> None:
        early = channel in self._up_early
        self._up_early.discard(channel)
        if channel.closed or channel not in self.channels:
            return
        _log.info("PE {pe_id:08x} authenticated to {peer} by {mechanism}", pe_id=self.pe_id,
                  peer=address_text(channel.peer), mechanism=event.mechanism)
        if not early:
            self._carry_out(self.core.channel_up(channel, self.reactor.seconds()))

    def _authentication_failed(self, failure: Failure, channel: Channel) -> None:
        if channel in self._up_early:  # the registration behind the proof was never handled
            self._up_early.discard(channel)
            self._carry_out(self.core.channel_refused(channel, self.reactor.seconds()))
        self.channels.discard(channel)
        error = failure.value
        address = _address_of(channel)
        self._avoid = (address,) if address is not None else ()
        if not self.running or not hasattr(error, "transient"):
            if self.running:
                self._hunt_failed(failure)
            return
        if error.transient:
            _log.warn("PE {pe_id:08x}: authentication to {peer} did not complete ({reason}); "
                      "hunting again", pe_id=self.pe_id, peer=address_text(channel.peer), reason=error)
            self._hunt_failed(failure)
            return
        _log.error("PE {pe_id:08x}: authentication to registrar {peer} failed: {reason}; "
                   "not registering until retry()", pe_id=self.pe_id, peer=address_text(channel.peer),
                   reason=error)
        self._auth_blocked = True
        for observer in list(self._observers):
            try:
                observer(error.event)
            except Exception:
                _log.failure("PE observer {observer!r} failed", observer=observer)
        self._fail_waiters(AuthenticationFailedError(error))

    def _hunt_failed(self, failure: Failure) -> None:
        self._hunting = None
        if failure.check(defer.CancelledError) or not self.running:
            return
        _log.failure("server hunt failed; retrying in {delay:g} s", failure, delay=self._hunt_retry)
        delay = self._hunt_retry
        self._hunt_retry = min(self._hunt_retry * 2, self._hunt_retry_max)
        self._hunt_retry_call = self.reactor.callLater(delay, self._retry_hunt)

    def _retry_hunt(self) -> None:
        self._hunt_retry_call = None
        if self.core.state in (PeState.HUNTING, PeState.DEREGISTERING) and self.core.home is None:
            self._start_hunt()

    def _cancel_hunt(self) -> None:
        if self._hunt_retry_call is not None and self._hunt_retry_call.active():
            self._hunt_retry_call.cancel()
        self._hunt_retry_call = None
        if self._hunting is not None:
            d, self._hunting = self._hunting, None
            d.cancel()

    # -- carrying out the core's decisions --------------------------------------------------

    def _carry_out(self, outputs: list) -> None:
        for output in outputs:
            kind = type(output)
            if kind is Send:
                sent = type(output.message)
                if sent is AsapEndpointKeepAliveAck:
                    self.stats["keepalives_answered"] += 1
                elif sent is AsapRegistration:
                    self._update_sent.extend(self._update_waiting)
                    self._update_waiting = []
                output.channel.send(output.message)
                continue
            if kind is CloseChannel:
                _log.info("closing channel to {peer}: {reason}", peer=address_text(output.channel.peer),
                          reason=output.reason)
                output.channel.abort()
                continue
            handler = self._event_handlers.get(kind)
            if handler is not None:
                handler(self, output)
            for observer in list(self._observers):
                try:
                    observer(output)
                except Exception:
                    _log.failure("PE observer {observer!r} failed", observer=observer)
        self._arm_timer()

    def _need_server(self, event: NeedServer) -> None:
        if event.failover:
            _log.warn("PE {pe_id:08x}: failing over to another registrar ({reason})",
                      pe_id=self.pe_id, reason=event.reason)
        else:
            _log.info("PE {pe_id:08x}: hunting for a registrar ({reason})", pe_id=self.pe_id,
                      reason=event.reason)
        self._start_hunt()

    def _registered(self, event: Registered) -> None:
        self.last_registered = event
        _log.info("PE {pe_id:08x} {what} in pool {handle} at registrar {registrar}",
                  pe_id=event.pe_id, handle=pool_handle_text(self.pool_handle),
                  what="re-registered" if event.reregistration else "registered",
                  registrar=_registrar(self.core.home, event.server_id))
        if event.warning is not None:
            _log.warn("registrar warning with the registration: {warning}", warning=event.warning)
        waiting = self._waiting_registered + self._update_sent
        self._waiting_registered, self._update_sent = [], []
        for d in waiting:
            d.callback(event)

    def _refused(self, event: RegistrationRefused) -> None:
        _log.error("PE {pe_id:08x}: registration in pool {handle} refused: {cause}",
                   pe_id=self.pe_id, handle=pool_handle_text(self.pool_handle), cause=event.cause)
        self._fail_waiters(RegistrationRefusedError(event))

    def _failed(self, event: RegistrationFailed) -> None:
        _log.error("PE {pe_id:08x}: giving up registration after {n} attempt(s): {reason}",
                   pe_id=self.pe_id, n=event.attempts, reason=event.reason)
        self._fail_waiters(RegistrationFailedError(event))

    def _home_changed(self, event: HomeChanged) -> None:
        _log.info("PE {pe_id:08x}: home registrar is now {server} (was {previous})",
                  pe_id=self.pe_id, server=_server(event.server_id), previous=_server(event.previous))

    def _lost(self, event: RegistrationLost) -> None:
        _log.warn("PE {pe_id:08x}: the registrar dropped the registration ({error}); re-registering",
                  pe_id=self.pe_id, error=event.error)

    def _deregistered(self, event: Deregistered) -> None:
        self.last_deregistered = event
        _log.info("PE {pe_id:08x} deregistered from pool {handle} ({how})", pe_id=self.pe_id,
                  handle=pool_handle_text(self.pool_handle),
                  how="confirmed" if event.confirmed else "not confirmed")
        self._cancel_hunt()
        self._fail_waiters(PoolElementStopped())
        waiting, self._deregister_waiting = self._deregister_waiting, []
        for d in waiting:
            d.callback(event)
        for channel in list(self.channels):
            channel.close()

    def _ignored(self, event: Ignored) -> None:
        _log.info("PE {pe_id:08x} ignoring {message}: {reason}", pe_id=self.pe_id,
                  message=event.what_text, reason=event.reason)

    def _keepalive_dropped(self, event: KeepAliveDropped) -> None:
        self.stats["keepalives_dropped"] += 1
        settings = self.core.settings
        self.drop_log.dropped(event.channel, settings.keepalive_rate, settings.keepalive_burst)

    _event_handlers: dict[type, Callable[[Any, Any], None]] = {
        NeedServer: _need_server,
        Registered: _registered,
        RegistrationRefused: _refused,
        RegistrationFailed: _failed,
        HomeChanged: _home_changed,
        RegistrationLost: _lost,
        Deregistered: _deregistered,
        Ignored: _ignored,
        KeepAliveDropped: _keepalive_dropped,
    }

    def _fail_waiters(self, error: PoolElementError) -> None:
        waiting = self._waiting_registered + self._update_sent + self._update_waiting
        self._waiting_registered, self._update_sent, self._update_waiting = [], [], []
        for d in waiting:
            d.errback(Failure(error))

    # -- timer ----------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        deadline = self.core.next_deadline()
        if deadline == self._timer_at and self._timer is not None and self._timer.active():
            return
        self._cancel_timer()
        if deadline is None:
            return
        self._timer_at = deadline
        self._timer = self.reactor.callLater(max(0.0, deadline - self.reactor.seconds()), self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._timer_at = None

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._carry_out(self.core.timer(self.reactor.seconds()))


def _server(server_id: int | None) -> str:
    return "unknown" if server_id is None else f"{server_id:08x}"


def _registrar(channel: Any, server_id: int | None) -> str:
    """The home registrar in a log line: its address (what an operator can
    look up), and its server identifier once the PE has learnt it."""
    address = address_text(channel.peer) if channel is not None else "(channel gone)"
    return address if server_id is None else f"{address} ({server_id:08x})"


def _address_of(channel: Channel) -> tuple[str, int] | None:
    peer = channel.peer
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    if isinstance(host, str) and isinstance(port, int):
        return (host, port)
    return None


def static_hunt(connect: Callable[[], defer.Deferred[Channel]]) -> Hunt:
    """A ``Hunt`` that always calls ``connect()`` (tests, single registrar)."""

    def hunt(avoid: Iterable[tuple[str, int]] = ()) -> defer.Deferred[Channel]:
        return connect()

    return hunt
