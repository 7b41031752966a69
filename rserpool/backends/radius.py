"""RADIUS backend: CHAP verification and pool authorization through RADIUS.

pyrad is used only as the packet codec and dictionary
(:class:`pyrad.packet.AuthPacket`, :class:`pyrad.dictionary.Dictionary`).
The transport is our own :class:`DatagramProtocol` on the injected reactor;
timers run on that reactor's clock, so unit tests drive everything with
``task.Clock`` and a fake datagram transport.

Behaviour (see ``docs/radius.md``):

- Every Access-Request carries a Message-Authenticator, and a reply without
  one, or with a wrong one, or with a wrong Response Authenticator, or from
  another address than the server asked, is dropped and logged
  (BlastRADIUS, CVE-2024-3596).  A dropped reply does not end the request.
- Sockets: one UDP socket per local address, bound to the address the
  kernel routes to each server from (loopback for a loopback server,
  :func:`local_address_for`) or to ``bind_address``; never the wildcard
  address, so nothing off that route can reach it.
- Request ids: 256 per socket.  At most
  ``max_in_flight`` requests are outstanding; further ones wait in a queue of
  at most ``max_queue``; beyond that a request fails at once with
  :class:`RadiusOverloaded` (a :class:`BackendUnavailable`).
- A request is sent to the first live server, retransmitted unchanged (same
  id, same bytes, RFC 5080 section 2.2.1) every ``timeout`` seconds
  ``retries`` times, then the server is marked dead for ``dead_time``
  seconds and the request is re-encoded for the next server (new
  authenticator, that server's secret).  When every server is dead the dead
  ones are still tried (oldest failure first), so service resumes as soon as
  one answers.  No answer from any server: :class:`BackendUnavailable`,
  which is *not* a refusal.  Worst case:
  ``len(servers) * (retries + 1) * timeout`` seconds.
- Shared secrets are never logged (``RadiusServer`` hides them from repr).

What a reply's attributes mean (:class:`RadiusDecision`) is
:mod:`rserpool.backends.radius_decision`; the registrar-facing glue (CHAP
verifier, pool authorizer, configuration) is in
:mod:`rserpool.backends.radius_authz`.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from pyrad import packet as _packet
from pyrad.dictionary import Dictionary
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from rserpool.backends.radius_decision import RadiusDecision
from rserpool.errors import BackendUnavailable
from rserpool.identity import normalize_identity
from rserpool.security.chap import CHALLENGE_LEN, RESPONSE_LEN

__all__ = [
    "BackendUnavailable",
    "DEFAULT_DICTIONARY",
    "RadiusClient",
    "RadiusError",
    "RadiusOverloaded",
    "RadiusServer",
    "load_dictionary",
    "parse_servers",
]

_log = Logger()

#: The dictionary shipped with the package.
DEFAULT_DICTIONARY = os.path.join(os.path.dirname(__file__), "radius_dictionary")

MAX_PACKET = 4096  # RFC 2865 section 3
MAX_IDS = 256
MAX_USER_NAME = 253
MAX_ATTRIBUTE_VALUES = 64
RCVBUF_BYTES = 1 << 20
_LOG_INTERVAL = 10.0  # seconds between two logs of the same dropped-reply reason

SERVICE_TYPE_AUTHORIZE_ONLY = "Authorize-Only"  # 17, RFC 5176 section 3.6


class RadiusError(Exception):
    """Misuse of the RADIUS client (bad argument, client stopped)."""


# No RADIUS server answered in time: the backend is down, not a "no".  The
# canonical :class:`rserpool.errors.BackendUnavailable` (re-exported here):
# callers fail closed (RFC 5354 cause 0xa, "backend unavailable" in the log)
# and never report it as a wrong password.  It is deliberately *not* a
# RadiusError (a misuse of the client).


class RadiusOverloaded(BackendUnavailable):
    """The request queue is full; the request was not sent."""


@dataclass(frozen=True, slots=True)
class RadiusServer:
    """One RADIUS server: an IP literal (no DNS lookup on the reactor)."""

    host: str
    port: int
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        ipaddress.ip_address(self.host)  # raises ValueError for a name
        if not 0 < self.port < 65536:
            raise ValueError(f"bad RADIUS port {self.port}")
        if not isinstance(self.secret, bytes) or not self.secret:
            raise ValueError("a RADIUS shared secret (non-empty bytes) is required")

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET


def local_address_for(server: RadiusServer) -> str:
    """The local address to bind for ``server``: loopback for a loopback
    server, else the source address of the kernel's route to it (a UDP
    ``connect``, which sends nothing).  Raises OSError when there is no route."""
    address = ipaddress.ip_address(server.host)
    if address.is_loopback:
        return "::1" if address.version == 6 else "127.0.0.1"
    with socket.socket(server.family, socket.SOCK_DGRAM) as probe:
        probe.connect(server.address)
        return str(probe.getsockname()[0])


def parse_servers(text: str, secret: bytes) -> tuple[RadiusServer, ...]:
    """``"127.0.0.1:1812, [::1]:1812"`` -> servers (port 1812 by default)."""
    servers = []
    for item in text.replace(",", " ").split():
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else 1812
        elif item.count(":") == 1:
            host, port_text = item.split(":")
            port = int(port_text)
        else:
            host, port = item, 1812
        servers.append(RadiusServer(host, port, secret))
    if not servers:
        raise ValueError("no RADIUS server configured")
    return tuple(servers)


def load_dictionary(path: str | None = None) -> Dictionary:
    return Dictionary(path or DEFAULT_DICTIONARY)


# ------------------------------------------------------------- the client

class _Request:
    __slots__ = ("identity", "attributes", "deferred", "tried", "server", "packet",
                 "raw", "ident", "sends", "timer", "sock")

    def __init__(self, identity: str, attributes: list[tuple[str, Any]]) -> None:
        self.identity = identity
        self.attributes = attributes
        self.deferred: defer.Deferred[RadiusDecision] = defer.Deferred()
        self.tried: list[RadiusServer] = []
        self.server: RadiusServer | None = None
        self.packet: _packet.AuthPacket | None = None
        self.raw = b""
        self.ident = -1
        self.sends = 0
        self.timer: Any = None
        self.sock: _Socket | None = None


class _Socket(DatagramProtocol):
    """One UDP socket and its 256 request ids."""

    def __init__(self, client: "RadiusClient", family: int) -> None:
        self.client = client
        self.family = family
        self.port: Any = None
        self.by_id: dict[int, _Request] = {}
        self._next = secrets.randbelow(MAX_IDS)

    def allocate(self, request: _Request) -> bool:
        if len(self.by_id) >= MAX_IDS:
            return False
        while self._next in self.by_id:
            self._next = (self._next + 1) % MAX_IDS
        request.ident = self._next
        self.by_id[self._next] = request
        self._next = (self._next + 1) % MAX_IDS
        return True

    def release(self, request: _Request) -> None:
        if self.by_id.get(request.ident) is request:
            del self.by_id[request.ident]

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:  # noqa: N802 (Twisted)
        self.client._reply_received(self, datagram, addr)


class RadiusClient:
    """An asynchronous RADIUS authentication client on the injected reactor."""

    def __init__(
        self,
        reactor: Any,
        servers: Sequence[RadiusServer],
        *,
        dictionary: Dictionary | str | None = None,
        timeout: float = 1.0,
        retries: int = 2,
        max_in_flight: int = 64,
        max_queue: int = 1024,
        dead_time: float = 30.0,
        nas_identifier: str = "rserpool",
        bind_address: str | None = None,
        local_address: Callable[[RadiusServer], str] = local_address_for,
    ) -> None:
        if not servers:
            raise ValueError("at least one RADIUS server is required")
        if timeout <= 0 or retries < 0 or dead_time < 0:
            raise ValueError("timeout must be > 0, retries and dead_time >= 0")
        if not 1 <= max_in_flight <= MAX_IDS:
            raise ValueError(f"max_in_flight must be in 1..{MAX_IDS}")
        if max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        self.reactor = reactor
        self.servers = tuple(servers)
        if isinstance(dictionary, Dictionary):
            self.dictionary = dictionary
        else:
            self.dictionary = load_dictionary(dictionary)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.max_in_flight = int(max_in_flight)
        self.max_queue = int(max_queue)
        self.dead_time = float(dead_time)
        self.nas_identifier = nas_identifier
        if bind_address is not None and ipaddress.ip_address(bind_address).is_unspecified:
            raise ValueError("bind_address must be a local address, not the wildcard")
        self.bind_address = bind_address
        self._local_address = local_address
        self._sockets: dict[str, _Socket] = {}  # by local address
        self._socket_for: dict[RadiusServer, str] = {}
        self._queue: deque[_Request] = deque()
        self._in_flight = 0
        self._dead_until: dict[RadiusServer, float] = {}
        self._last_log: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._running = False
        self.stats: dict[str, int] = {
            "requests": 0, "sent": 0, "retransmits": 0, "failovers": 0, "accepts": 0,
            "rejects": 0, "unavailable": 0, "overloaded": 0, "dropped": 0,
        }

    # -- life cycle
    def start(self) -> None:
        """Open the sockets: one per local address the servers are reached from."""
        if self._running:
            return
        self._running = True
        for server in self.servers:
            try:
                local = self.bind_address or self._local_address(server)
                if (":" in local) != (server.family == socket.AF_INET6):
                    raise OSError(f"bind address {local} is of another address family")
            except (OSError, ValueError) as exc:
                _log.error("RADIUS server {host}:{port} cannot be used: {error}", host=server.host,
                           port=server.port, error=exc)
                continue
            self._socket_for[server] = local
            if local in self._sockets:
                continue
            sock = _Socket(self, server.family)
            self._sockets[local] = sock
            sock.port = self.reactor.listenUDP(0, sock, interface=local, maxPacketSize=MAX_PACKET)
            raw = getattr(sock.port, "socket", None)
            if raw is not None:
                try:
                    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
                except OSError as exc:  # pragma: no cover - depends on the host
                    _log.warn("could not raise SO_RCVBUF of the RADIUS socket: {error}", error=exc)

    def stop(self) -> defer.Deferred[None]:
        """Fail everything pending with BackendUnavailable, close the sockets."""
        self._running = False
        pending = list(self._queue)
        self._queue.clear()
        for sock in self._sockets.values():
            pending.extend(sock.by_id.values())
            sock.by_id.clear()
        self._in_flight = 0
        for request in pending:
            if request.timer is not None and request.timer.active():
                request.timer.cancel()
            request.timer = None
            if not request.deferred.called:
                request.deferred.errback(BackendUnavailable("RADIUS client stopped"))
        stops = [defer.maybeDeferred(sock.port.stopListening) for sock in self._sockets.values()
                 if sock.port is not None]
        self._sockets.clear()
        self._socket_for.clear()
        return defer.gatherResults(stops).addCallback(lambda _: None)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return len(self._queue)

    def is_dead(self, server: RadiusServer) -> bool:
        return self._dead_until.get(server, 0.0) > self.reactor.seconds()

    # -- public requests
    def chap_verify(self, identity: str, identifier: int, challenge: bytes,
                    response: bytes) -> defer.Deferred[RadiusDecision]:
        """Access-Request with CHAP-Password = identifier || response and
        CHAP-Challenge = challenge.  Fires with an accepted or refused
        decision, or fails with BackendUnavailable."""
        if not 0 <= identifier <= 255:
            return defer.fail(RadiusError("CHAP identifier must be one byte"))
        if len(challenge) != CHALLENGE_LEN or len(response) != RESPONSE_LEN:
            return defer.fail(RadiusError("CHAP challenge and response must be 16 bytes"))
        return self._request(identity, [
            ("CHAP-Password", bytes((identifier,)) + bytes(response)),
            ("CHAP-Challenge", bytes(challenge)),
        ])

    def authorize_only(self, identity: str) -> defer.Deferred[RadiusDecision]:
        """Access-Request with Service-Type = Authorize-Only (17) and no
        credentials, for identities authenticated by certificate or SRP; the
        server's site must accept it (docs/radius.md)."""
        return self._request(identity, [("Service-Type", SERVICE_TYPE_AUTHORIZE_ONLY)])

    # -- internals
    def _request(self, identity: str, attributes: list[tuple[str, Any]]) -> defer.Deferred[RadiusDecision]:
        # User-Name is the normalized identity (rserpool.identity), whatever
        # spelling the caller had: one identity, one answer, one cache entry.
        canonical = normalize_identity(identity)
        if canonical is None:
            return defer.fail(RadiusError("not a valid identity"))
        identity = canonical
        try:
            encoded = identity.encode("utf-8")
        except (AttributeError, UnicodeEncodeError):
            return defer.fail(RadiusError("identity must be a UTF-8 string"))
        if not encoded or len(encoded) > MAX_USER_NAME or b"\x00" in encoded:
            return defer.fail(RadiusError(f"identity must be 1..{MAX_USER_NAME} bytes without NUL"))
        self.start()
        self.stats["requests"] += 1
        request = _Request(identity, attributes)
        if self._in_flight < self.max_in_flight and not self._queue:
            self._dispatch(request)
        elif len(self._queue) < self.max_queue:
            self._queue.append(request)
        else:
            self.stats["overloaded"] += 1
            _log.warn("RADIUS request queue full ({n} waiting): refusing request for {identity}",
                      n=len(self._queue), identity=identity)
            return defer.fail(RadiusOverloaded(
                f"RADIUS request queue full ({self.max_queue} waiting, {self._in_flight} in flight)"))
        return request.deferred

    def _next_server(self, request: _Request) -> RadiusServer | None:
        now = self.reactor.seconds()
        untried = [server for server in self.servers if server not in request.tried]
        alive = [server for server in untried if self._dead_until.get(server, 0.0) <= now]
        if alive:
            return alive[0]
        if untried:
            return min(untried, key=lambda server: self._dead_until.get(server, 0.0))
        return None

    def _dispatch(self, request: _Request) -> None:
        self._in_flight += 1
        self._send_to_next(request)

    def _send_to_next(self, request: _Request) -> None:
        server = self._next_server(request)
        if request.sock is not None:
            request.sock.release(request)
            request.sock = None
        if server is None:
            self._finish(request, failure=BackendUnavailable(
                f"no RADIUS server answered ({len(request.tried)} tried)"))
            return
        sock = self._sockets.get(self._socket_for.get(server, ""))
        if sock is None or not sock.allocate(request):
            # all ids of this socket busy (max_in_flight <= 256 makes this rare:
            # only when several servers share a socket); treat as unavailable
            request.tried.append(server)
            self._send_to_next(request)
            return
        if request.tried:
            self.stats["failovers"] += 1
        request.tried.append(server)
        request.server = server
        request.sock = sock
        pkt = _packet.AuthPacket(
            code=_packet.AccessRequest, id=request.ident, secret=server.secret,
            authenticator=secrets.token_bytes(16), dict=self.dictionary,
        )
        pkt.add_message_authenticator()
        pkt["User-Name"] = request.identity
        pkt["NAS-Identifier"] = self.nas_identifier
        for name, value in request.attributes:
            pkt[name] = value
        request.packet = pkt
        request.raw = pkt.RequestPacket()
        request.sends = 0
        self._transmit(request)

    def _transmit(self, request: _Request) -> None:
        assert request.sock is not None and request.server is not None
        if request.sends:
            self.stats["retransmits"] += 1
        else:
            self.stats["sent"] += 1
        request.sends += 1
        request.sock.transport.write(request.raw, request.server.address)
        request.timer = self.reactor.callLater(self.timeout, self._timed_out, request)

    def _timed_out(self, request: _Request) -> None:
        request.timer = None
        if request.deferred.called:
            return
        if request.sends <= self.retries:
            self._transmit(request)
            return
        server = request.server
        assert server is not None
        if not self.is_dead(server):
            _log.warn("RADIUS server {host}:{port} did not answer ({sends} sends); marking it dead "
                      "for {dead_time}s", host=server.host, port=server.port, sends=request.sends,
                      dead_time=self.dead_time)
        self._dead_until[server] = self.reactor.seconds() + self.dead_time
        self._send_to_next(request)

    def _finish(self, request: _Request, decision: RadiusDecision | None = None,
                failure: Exception | None = None) -> None:
        if request.timer is not None and request.timer.active():
            request.timer.cancel()
        request.timer = None
        if request.sock is not None:
            request.sock.release(request)
            request.sock = None
        self._in_flight -= 1
        if failure is not None:
            self.stats["unavailable"] += 1
            _log.error("RADIUS backend unavailable for {identity}: {reason}",
                       identity=request.identity, reason=str(failure))
            request.deferred.errback(failure)
        else:
            request.deferred.callback(decision)
        self._pump()

    def _pump(self) -> None:
        while self._queue and self._in_flight < self.max_in_flight and self._running:
            self._dispatch(self._queue.popleft())

    def _drop(self, reason: str, addr: Any) -> None:
        self.stats["dropped"] += 1
        now = self.reactor.seconds()
        last = self._last_log.get(reason)
        if last is not None and now - last < _LOG_INTERVAL:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        self._last_log[reason] = now
        _log.warn("dropped RADIUS reply from {addr}: {reason} ({suppressed} similar drops not logged)",
                  addr=addr, reason=reason, suppressed=self._suppressed.pop(reason, 0))

    def _reply_received(self, sock: _Socket, data: bytes, addr: Any) -> None:
        if len(data) < 20:
            self._drop("too short", addr)
            return
        request = sock.by_id.get(data[1])
        if request is None or request.packet is None or request.server is None:
            self._drop("no request with this id", addr)
            return
        if (addr[0], addr[1]) != request.server.address:
            self._drop("wrong source address", addr)
            return
        if data[0] not in (_packet.AccessAccept, _packet.AccessReject):
            self._drop(f"unexpected code {data[0]}", addr)
            return
        try:
            reply = request.packet.CreateReply(packet=data)
        except Exception:
            self._drop("malformed packet", addr)
            return
        if not reply.message_authenticator:
            self._drop("no Message-Authenticator", addr)
            return
        try:
            valid = request.packet.VerifyReply(reply, data, enforce_ma=True)
        except Exception:
            valid = False
        if not valid:
            self._drop("bad Response Authenticator or Message-Authenticator", addr)
            return
        self._dead_until.pop(request.server, None)
        accepted = data[0] == _packet.AccessAccept
        self.stats["accepts" if accepted else "rejects"] += 1
        decision = RadiusDecision(accepted, request.identity, attributes=self._attributes(reply))
        self._finish(request, decision=decision)

    @staticmethod
    def _attributes(reply: _packet.Packet) -> dict[str, tuple[Any, ...]]:
        attributes: dict[str, tuple[Any, ...]] = {}
        for key in reply.keys():
            if not isinstance(key, str) or key == "Message-Authenticator":
                continue  # unknown to the dictionary, or not informative
            try:
                values = tuple(reply[key])[:MAX_ATTRIBUTE_VALUES]
            except Exception:
                continue  # undecodable value: ignore the attribute
            attributes[key] = values
        return attributes
