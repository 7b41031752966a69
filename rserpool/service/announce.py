"""The registrar's ASAP_SERVER_ANNOUNCEs over UDP (RFC 5352 section 3.6):
to configured unicast targets, and to a multicast group only when one is
configured (tests never send multicast).

:class:`ServerAnnouncer` sends, every ``interval`` seconds with a jitter of
plus or minus 12.5 % (so that registrars do not synchronise), the message
``message()`` builds (the registrar's server ID and the transports it
listens on).  Its socket is bound to loopback when every target is.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any, Callable, Iterable

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from rserpool.wire.transports import TcpTransport

__all__ = ["AnnounceProtocol", "ServerAnnouncer", "listening_transports"]

_log = Logger()


class AnnounceProtocol(DatagramProtocol):
    """The registrar's announce socket: it only sends."""

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802 (Twisted)
        pass


def listening_transports(addresses: Iterable[Any]) -> tuple[TcpTransport, ...]:
    """The TCP transports to announce for the listening ``addresses``
    (a wildcard address stands for "the address this datagram came from":
    receivers substitute the sender's address)."""
    transports = []
    for address in addresses:
        try:
            ip = ipaddress.ip_address(getattr(address, "host", None))
        except (TypeError, ValueError):
            continue
        transports.append(TcpTransport(address.port, ip))
    return tuple(transports)


class ServerAnnouncer:
    """Sends ``message()`` (an ``AsapServerAnnounce``) to ``targets`` and
    ``multicast`` every ``interval`` seconds, jittered."""

    def __init__(self, reactor: Any, message: Callable[[], Any], *, targets: Iterable[tuple[str, int]] = (),
                 interval: float = 1.0, multicast: tuple[str, int] | None = None, ttl: int = 1,
                 rng: random.Random | None = None) -> None:
        self.reactor = reactor
        self.message = message
        self.targets = tuple(targets)
        self.interval = interval
        self.multicast = multicast
        self.ttl = ttl
        self.rng = rng or random.SystemRandom()
        self._call: IDelayedCall | None = None
        self._port: Any = None

    def start(self) -> None:
        if self.multicast:
            _log.info("announcing to multicast group {group}", group=self.multicast)
            self._port = self.reactor.listenMulticast(0, AnnounceProtocol())
            self._port.setTTL(self.ttl)
        elif self.targets:
            interface = "127.0.0.1" if self._loopback_only() else ""
            self._port = self.reactor.listenUDP(0, AnnounceProtocol(), interface=interface)
        if self._port is not None:
            self._schedule()

    def stop(self) -> Any:
        """Stop sending; returns what closing the socket returns (a Deferred or None)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        port, self._port = self._port, None
        return port.stopListening() if port is not None else None

    def _loopback_only(self) -> bool:
        try:
            return all(ipaddress.ip_address(host).is_loopback for host, _ in self.targets)
        except ValueError:
            return False

    def _schedule(self) -> None:
        # T6 with +/-12.5 % jitter so that registrars do not synchronise.
        delay = self.interval * (0.875 + 0.25 * self.rng.random())
        self._call = self.reactor.callLater(delay, self._announce)

    def _announce(self) -> None:
        self._call = None
        if self._port is None:
            return
        data = self.message().encode()
        for target in self.targets:
            try:
                self._port.write(data, target)
            except Exception as exc:  # a bad target must not stop the others
                _log.warn("announce to {target} failed: {error}", target=target, error=exc)
        if self.multicast:
            self._port.write(data, self.multicast)
        self._schedule()
