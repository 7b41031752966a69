"""Finding ENRP peers, the Twisted side (RFC 5353 3.2.2, RFC 5355 2.12).

- ``PeerConnector`` dials what ``rserpool.enrp.discovery.PeerTargets`` says:
  the configured peers (a ``CandidateSource`` such as
  ``rserpool.service.hunt.RegistrarCandidates``: IP addresses, DNS names and
  SRV records through ``twisted.names``, refreshed every
  ``rediscover_interval``) and hints from LIST_RESPONSEs and UDP PRESENCE.
- ``PresenceReceiver`` is the UDP protocol for ENRP_PRESENCE datagrams.  They
  are unauthenticated: one only yields a hint (the datagram's source address
  and the port its Server Information names); it never touches the peer
  list, a peer's liveness or the handlespace.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from rserpool.enrp.discovery import PeerTargets, Target
from rserpool.security.ratelimit import RateLimit, RateLimiter
from rserpool.service.hunt import describe_failure
from rserpool.wire import EnrpPresence, Limits, WireError, decode_message
from rserpool.wire.codes import PPID_ENRP

__all__ = ["ENRP_SRV_SERVICE", "ENRP_TLS_PORT", "PeerConnector", "PresenceReceiver", "peer_candidates"]

_log = Logger()

#: IANA's port of ENRP over TLS (RFC 5353 5.3: enrp-sctp-tls 9902; here over TCP).
ENRP_TLS_PORT = 9902
#: The SRV label of ENRP peers (no service name is registered for ENRP over
#: TLS/TCP; this one follows RFC 6335's form, ``[enrp] srv_service`` changes it).
ENRP_SRV_SERVICE = "_enrp-tls._tcp"


def peer_candidates(static: Any = (), srv_names: Any = (), *, resolver: Any = None,
                    srv_service: str = ENRP_SRV_SERVICE, rng: random.Random | None = None) -> Any:
    """The configured peers as a candidate source: ``host:port [tls-name]``
    entries (IP addresses, or DNS names resolved through ``twisted.names``)
    and SRV names (the server hunt's ``RegistrarCandidates``, with ENRP's
    SRV label and port)."""
    from rserpool.service.candidates import RegistrarCandidates

    return RegistrarCandidates(static=static, srv_names=srv_names, resolver=resolver,
                               srv_service=srv_service, default_port=ENRP_TLS_PORT, rng=rng)


class PeerConnector:
    """Keeps dialling configured and hinted peers that are not linked."""

    def __init__(self, reactor: Any, dial: Callable[[Any], defer.Deferred], candidates: Any = None, *,
                 rng: random.Random | None = None, linked: Callable[[int], bool] = lambda sid: False,
                 targets: PeerTargets | None = None, rediscover_interval: float = 30.0,
                 connect_timeout: float = 5.0) -> None:
        self.reactor = reactor
        self.dial = dial
        self.candidates = candidates
        self.rng = rng or random.Random()
        self.linked = linked
        self.targets = targets or PeerTargets()
        self.rediscover_interval = rediscover_interval
        self.connect_timeout = connect_timeout
        self.own_id = 0
        self._timer: IDelayedCall | None = None
        self._rediscover: IDelayedCall | None = None
        self._running = False
        self.dialled = 0

    @property
    def own_addresses(self) -> set:
        return self.targets.own

    @own_addresses.setter
    def own_addresses(self, addresses: set) -> None:
        self.targets.own = set(addresses)

    def start(self) -> None:
        self._running = True
        self._discover()

    def stop(self) -> None:
        self._running = False
        for call in (self._timer, self._rediscover):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._rediscover = None

    def rediscover(self) -> None:
        self._discover()

    def _discover(self) -> None:
        """Ask the candidate source again (now, then every ``rediscover_interval``)."""
        if self._rediscover is not None and self._rediscover.active():
            self._rediscover.cancel()
        self._rediscover = None
        if not self._running:
            return
        if self.candidates is not None:
            d = self.candidates.candidates()
            d.addCallback(self._discovered)
            d.addErrback(lambda f: _log.failure("ENRP peer discovery failed", f))
        self._rediscover = self.reactor.callLater(self.rediscover_interval, self._discover)

    def _discovered(self, candidates: list) -> None:
        if not self._running:
            return
        self.targets.set_configured(candidates, self.reactor.seconds())
        self.kick()

    def hint(self, server_id: int, host: str, port: int) -> None:
        if self.targets.hint(server_id, host, port, self.reactor.seconds()):
            self.kick()

    def kick(self) -> None:
        if not self._running:
            return
        now = self.reactor.seconds()
        for target in self.targets.due(now, self.linked):
            self._attempt(target)
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        deadline = self.targets.next_deadline(self.linked)
        if deadline is not None and self._running:
            delay = max(0.05, deadline - self.reactor.seconds())
            self._timer = self.reactor.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.kick()

    def _attempt(self, target: Target) -> None:
        self.dialled += 1
        _log.debug("dialling ENRP peer {candidate}", candidate=target.candidate.describe())
        d = self.dial(target.candidate)
        d.addCallbacks(self._connected, self._failed, callbackArgs=(target,), errbackArgs=(target,))

    def _connected(self, channel: Any, target: Target) -> None:
        self.targets.connected(target, channel)

    def _failed(self, failure: Failure, target: Target) -> None:
        _log.info("ENRP peer {candidate} not reached: {why}", candidate=target.candidate.describe(),
                  why=describe_failure(failure))
        self.targets.failed(target, self.reactor.seconds())
        self._arm()

    # -- told by the service ---------------------------------------------------------------

    def bound(self, channel: Any, server_id: int) -> None:
        self.targets.bound(channel, server_id)

    def closing(self, channel: Any, link: Any, reason: str) -> None:
        """The core closes a channel (before ``channel_closed``)."""

    def channel_closed(self, channel: Any, link: Any) -> None:
        claimed = None if link is None else (link.server_id or link.claimed)
        self.targets.closed(channel, claimed, self.own_id, self.reactor.seconds())
        if self._running:
            self._arm()


class PresenceReceiver(DatagramProtocol):
    """ENRP_PRESENCE over UDP: hints only (threat 2.12)."""

    def __init__(self, on_hint: Callable[[int, str, int], None], clock: Any, *, max_datagram: int = 1024,
                 rate: RateLimit = RateLimit(rate=10.0, burst=50.0)) -> None:
        self.on_hint = on_hint
        self.clock = clock
        self.max_datagram = max_datagram
        self.limits = Limits(max_message_size=max_datagram)
        self._rates = RateLimiter(rate, max_keys=1024)
        self.received = 0
        self.dropped = 0

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received += 1
        host = str(addr[0])
        if len(datagram) > self.max_datagram or not self._rates.allow(host, self.clock.seconds()):
            self.dropped += 1
            return
        try:
            message = decode_message(datagram, PPID_ENRP, self.limits)
        except WireError:
            self.dropped += 1
            return
        info = getattr(message, "server_info", None)
        if type(message) is not EnrpPresence or info is None or info.server_id != message.sender_id:
            self.dropped += 1
            return
        announced = [str(a) for a in info.transport.addresses]
        if announced and host not in announced:
            # Only the source address is dialled: a forged datagram cannot
            # point this registrar at a third party.
            _log.debug("PRESENCE from {host} announces {announced}; using the source address",
                       host=host, announced=announced)
        self.on_hint(message.sender_id, host, info.transport.port)
