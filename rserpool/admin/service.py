"""The admin endpoint's listener: HTTPS (twisted.web over the registrar's TLS
machinery) with limits on everything a client controls.

- **TLS** with the registrar's certificate, CAs and CRLs.  A client
  certificate is required in the handshake unless a bearer token is
  configured (then it is optional there and each request needs one or the
  other, see ``rserpool.admin.access``).
- **Connections**: at most ``max_connections`` at once and
  ``max_connections_per_address`` from one address; more are dropped at
  accept time.
- **Slow clients**: a connection must deliver a complete request head
  within ``request_timeout`` seconds of connecting (the TLS handshake
  included) or of its previous response, else it is aborted; an idle
  connection is closed after ``idle_timeout`` seconds.
- **Size**: request line and header lines at most 4 KiB, all headers 8 KiB,
  at most 32 headers (400 beyond); no request body at all (413).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.http import HTTPChannel
from twisted.web.server import Site

from rserpool.admin.access import AdminAccess
from rserpool.admin.resource import AdminResource
from rserpool.service.channel import address_text

__all__ = ["AdminService", "AdminSettings"]

_log = Logger()


@dataclass(frozen=True, slots=True)
class AdminSettings:
    max_connections: int = 64
    max_connections_per_address: int = 16
    request_timeout: float = 10.0
    idle_timeout: float = 60.0
    refresh: int = 5
    page_size: int = 100

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_connections_per_address < 1:
            raise ValueError("connection limits must be at least 1")
        if self.request_timeout <= 0 or self.idle_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if not 1 <= self.refresh <= 3600:
            raise ValueError("refresh must be within 1..3600 seconds")
        if not 1 <= self.page_size <= 500:
            raise ValueError("page_size must be within 1..500")


class _Refused(Protocol):
    def connectionMade(self) -> None:
        self.transport.abortConnection()


class AdminChannel(HTTPChannel):
    """``HTTPChannel`` with tighter limits and a deadline for each request head."""

    MAX_LENGTH = 4096  # one request or header line
    totalHeadersSize = 8192
    maxHeaders = 32

    site: "AdminSite"
    _deadline: IDelayedCall | None = None
    _refusing = False
    _host = ""

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm_deadline()

    def _arm_deadline(self) -> None:
        self._cancel_deadline()
        self._deadline = self.callLater(self.site.settings.request_timeout, self._too_slow)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        _log.info("admin endpoint: dropping {peer}: no complete request within {seconds} s",
                  peer=self._host, seconds=self.site.settings.request_timeout)
        self.transport.abortConnection()

    def allHeadersReceived(self) -> None:
        self._cancel_deadline()
        if self.length != 0:  # a body (Content-Length or chunked): never wanted here
            self._refusing = True
            _log.info("admin endpoint: refusing a request body from {peer}", peer=self._host)
            self.transport.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
            self.loseConnection()
            return
        super().allHeadersReceived()

    def lineReceived(self, line: bytes) -> None:
        if not self._refusing:
            super().lineReceived(line)
            if self._refusing:  # refused in allHeadersReceived: nothing more is read
                self.setRawMode()

    def rawDataReceived(self, data: bytes) -> None:
        if not self._refusing:
            super().rawDataReceived(data)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._refusing = True
        self._respondToBadRequestAndDisconnect()

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        if self.persistent and not self._refusing:
            self._arm_deadline()

    def connectionLost(self, reason: Any) -> None:
        self._cancel_deadline()
        self.site.connection_closed(self)
        self.site.resource.access.channel_closed(self)
        super().connectionLost(reason)


class AdminSite(Site):
    """A ``Site`` that counts and limits its connections."""

    protocol = AdminChannel
    displayTracebacks = False

    def __init__(self, resource: AdminResource, settings: AdminSettings, reactor: Any) -> None:
        super().__init__(resource, timeout=settings.idle_timeout, reactor=reactor)
        self.settings = settings
        self.connections = 0
        self.per_address: dict[str, int] = {}
        self.channels: set[AdminChannel] = set()

    def buildProtocol(self, addr: Any) -> Any:
        host = getattr(addr, "host", "")
        if self.connections >= self.settings.max_connections:
            _log.warn("admin endpoint: refusing a connection from {host}: {n} open", host=host, n=self.connections)
            return _Refused()
        if self.per_address.get(host, 0) >= self.settings.max_connections_per_address:
            _log.warn("admin endpoint: refusing a connection from {host}: too many from it", host=host)
            return _Refused()
        channel = super().buildProtocol(addr)
        channel._host = host
        self.channels.add(channel)
        self.connections += 1
        self.per_address[host] = self.per_address.get(host, 0) + 1
        return channel

    def connection_closed(self, channel: AdminChannel) -> None:
        self.channels.discard(channel)
        host = channel._host
        self.connections -= 1
        left = self.per_address.get(host, 1) - 1
        if left > 0:
            self.per_address[host] = left
        else:
            self.per_address.pop(host, None)


class AdminService(Service):
    """Listens on ``listen`` (Twisted endpoint strings) with ``tls_options``."""

    def __init__(self, registrar: Any, *, reactor: Any, listen: Iterable[str], tls_options: Any,
                 access: AdminAccess, settings: AdminSettings | None = None) -> None:
        if tls_options is None:
            raise ValueError("the admin endpoint runs over TLS only")
        self.registrar = registrar
        self.reactor = reactor
        self.listen = tuple(listen)
        self.tls_options = tls_options
        self.access = access
        self.settings = settings or AdminSettings()
        self.resource = AdminResource(registrar, access, refresh=self.settings.refresh,
                                      page_size=self.settings.page_size)
        self.site = AdminSite(self.resource, self.settings, reactor)
        self.ports: list[Any] = []

    @property
    def addresses(self) -> list[Any]:
        return [port.getHost() for port in self.ports]

    @defer.inlineCallbacks
    def startService(self):
        super().startService()
        factory = TLSMemoryBIOFactory(self.tls_options, False, self.site, clock=self.reactor)
        for description in self.listen:
            port = yield serverFromString(self.reactor, description).listen(factory)
            self.ports.append(port)
            _log.info("admin endpoint listening on {address} (HTTPS; {who})",
                      address=address_text(port.getHost()),
                      who="client certificate or bearer token" if self.access.has_token
                      else "client certificate")

    @defer.inlineCallbacks
    def stopService(self):
        ports, self.ports = self.ports, []
        yield defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports], consumeErrors=True)
        for channel in list(self.site.channels):
            channel.transport.abortConnection()
        yield defer.maybeDeferred(super().stopService)
