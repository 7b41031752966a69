"""ENRP server hunt for pool elements and pool users (RFC 5352 section 3.6),
the Twisted shell around ``rserpool.asap.hunt``.

- ``RegistrarCandidates`` gathers the candidates of one round, in the defined
  order: the static list (IP addresses, or DNS names resolved with
  ``twisted.names``), then SRV names (``_asap-tcp-tls._tcp.<domain>``,
  RFC 2782 order), then registrars heard announcing themselves.
- ``AnnounceReceiver`` is the UDP protocol for ASAP_SERVER_ANNOUNCE datagrams
  (``listen_for_announces`` binds it; multicast only when configured).
- ``ServerHunt.find()`` returns a cancellable ``Deferred`` firing with the
  first ``Channel`` whose TLS handshake completed (server authenticated):
  at most three attempts at once (SH1), T5-Serverhunt back-off between
  rounds (SH5), losers cancelled and closed.

See docs/server-hunt.md.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from typing import Any, Callable, Iterable, Protocol as TypingProtocol, Sequence

from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.names import dns
from twisted.names.error import DNSNameError
from twisted.python.failure import Failure

from rserpool.asap.hunt import (
    ASAP_TLS_PORT, MAX_PARALLEL, AnnounceTable, AnnounceVerdict, Backoff, Candidate, HuntRound,
    Origin, SrvTarget, StaticEntry, dedupe, order_for_round, srv_order,
)
from rserpool.interfaces import IChannelHandler
from rserpool.service.channel import Channel, ChannelSettings
from rserpool.wire import AsapServerAnnounce, Limits, TcpTransport, WireError, decode_message
from rserpool.wire.codes import PPID_ASAP

__all__ = [
    "SRV_SERVICE", "CandidateSource", "RegistrarCandidates", "AnnounceReceiver",
    "listen_for_announces", "ServerHunt", "make_channel_factory", "describe_failure",
    "resolve_addresses",
]

_log = Logger()

#: The SRV service label: the IANA service name of port 3864/tcp (RFC 5352
#: section 8.2, "asap-tcp-tls"), as RFC 6335 asks for SRV labels.
SRV_SERVICE = "_asap-tcp-tls._tcp"

DnsTimeout = Sequence[float]


class CandidateSource(TypingProtocol):
    """Anything that yields the ordered candidates of a round."""

    def candidates(self) -> defer.Deferred[list[Candidate]]:
        ...


# --- DNS ---------------------------------------------------------------------------


def _ipv6_text(payload: Any) -> str:
    return socket.inet_ntop(socket.AF_INET6, payload.address)


def _addresses_in(records: Iterable[Any], name: str | None = None) -> list[str]:
    """A/AAAA addresses in ``records`` (only those owned by ``name`` if given:
    an answer section may carry a CNAME chain, an additional section anything)."""
    found: list[str] = []
    want = name.lower().rstrip(".") if name is not None else None
    for rr in records:
        if want is not None and str(rr.name).lower().rstrip(".") != want:
            continue
        if rr.type == dns.A:
            found.append(rr.payload.dottedQuad())
        elif rr.type == dns.AAAA:
            found.append(_ipv6_text(rr.payload))
    return found


def resolve_addresses(resolver: Any, name: str, timeout: DnsTimeout) -> defer.Deferred[list[str]]:
    """A then AAAA addresses of ``name``; a lookup that fails counts as empty,
    and the Deferred fails only when both lookups failed otherwise than with
    "no such name"."""
    lookups = [resolver.lookupAddress(name, timeout=timeout),
               resolver.lookupIPV6Address(name, timeout=timeout)]

    def combine(results: list[tuple[bool, Any]]) -> list[str] | Failure:
        addresses: list[str] = []
        errors: list[Failure] = []
        for ok, value in results:
            if ok:
                answers = value[0]
                addresses.extend(a for a in _addresses_in(answers) if a not in addresses)
            elif not value.check(DNSNameError):
                errors.append(value)
        if not addresses and len(errors) == len(results):
            return errors[0]
        return addresses

    return defer.DeferredList(lookups, consumeErrors=True).addCallback(combine)


class RegistrarCandidates:
    """The candidate list of a PE or PU, rebuilt at the start of each round.

    ``static``: ``StaticEntry`` objects or strings ``"host:port [server-name]"``
    (``host`` an IP address or a DNS name).  ``srv_names``: domains (the
    ``SRV_SERVICE`` label is prepended) or full SRV owner names starting with
    ``_``.  ``announces``: an ``AnnounceReceiver``.  ``resolver``: an
    ``IResolver`` (``twisted.names.client.Resolver``); created from the
    system configuration when needed and not given.

    The TLS name of a candidate: the DNS name of a static entry (or its
    configured server name); the IP of an IP-only entry unless a server name
    is configured; the SRV target (``srv_name_check="target"``, the default)
    or the queried domain (``"domain"``); for announces, the receiver's
    configured ``server_name`` or else the announced IP.
    """

    def __init__(
        self,
        *,
        static: Iterable[StaticEntry | str] = (),
        srv_names: Iterable[str] = (),
        announces: AnnounceReceiver | None = None,
        resolver: Any = None,
        srv_service: str = SRV_SERVICE,
        srv_name_check: str = "target",
        dns_timeout: DnsTimeout = (1.0, 3.0),
        default_port: int = ASAP_TLS_PORT,
        rng: random.Random | None = None,
    ) -> None:
        if srv_name_check not in ("target", "domain"):
            raise ValueError("srv_name_check must be 'target' or 'domain'")
        self.static = tuple(
            e if isinstance(e, StaticEntry) else StaticEntry.parse(e, default_port) for e in static
        )
        self.srv_names = tuple(
            n.rstrip(".") if n.startswith("_") else f"{srv_service}.{n.rstrip('.')}"
            for n in srv_names
        )
        self.announces = announces
        self._resolver = resolver
        self.srv_name_check = srv_name_check
        self.dns_timeout = tuple(dns_timeout)
        self.rng = rng or random.Random()

    @property
    def resolver(self) -> Any:
        if self._resolver is None:
            from twisted.names import client

            self._resolver = client.createResolver()
        return self._resolver

    # listeners: the hunt is told about newly announced registrars at once
    def add_listener(self, listener: Callable[[list[Candidate]], None]) -> None:
        if self.announces is not None:
            self.announces.listeners.append(listener)

    def remove_listener(self, listener: Callable[[list[Candidate]], None]) -> None:
        if self.announces is not None and listener in self.announces.listeners:
            self.announces.listeners.remove(listener)

    def candidates(self) -> defer.Deferred[list[Candidate]]:
        parts: list[defer.Deferred[list[Candidate]]] = []
        for entry in self.static:
            parts.append(self._static(entry))
        for name in self.srv_names:
            parts.append(self._srv(name))

        def join(results: list[tuple[bool, Any]]) -> list[Candidate]:
            ordered: list[Candidate] = []
            for ok, value in results:
                ordered.extend(value)  # each part logs and swallows its errors
            if self.announces is not None:
                ordered.extend(self.announces.candidates())
            return dedupe(ordered)

        return defer.DeferredList(parts, consumeErrors=True).addCallback(join)

    def _static(self, entry: StaticEntry) -> defer.Deferred[list[Candidate]]:
        source = f"{entry.host}:{entry.port}"
        if entry.is_ip:
            return defer.succeed([Candidate(entry.host, entry.port, entry.tls_name,
                                            Origin.STATIC, source)])
        d = resolve_addresses(self.resolver, entry.host, self.dns_timeout)

        def build(addresses: list[str]) -> list[Candidate]:
            if not addresses:
                _log.warn("registrar {name}: no A/AAAA records", name=entry.host)
            return [Candidate(a, entry.port, entry.tls_name, Origin.STATIC, source)
                    for a in addresses]

        return d.addCallback(build).addErrback(self._dns_failed, entry.host)

    def _srv(self, name: str) -> defer.Deferred[list[Candidate]]:
        d = self.resolver.lookupService(name, timeout=self.dns_timeout)
        domain = name.split("._tcp.", 1)[-1] if "._tcp." in name else name

        def ordered(result: Any) -> defer.Deferred[list[Candidate]]:
            answers, _authority, additional = result
            targets = [SrvTarget(rr.payload.priority, rr.payload.weight, rr.payload.port,
                                 str(rr.payload.target).rstrip("."))
                       for rr in answers if rr.type == dns.SRV]
            targets = srv_order(targets, self.rng)
            if not targets:
                _log.warn("SRV {name}: no usable records", name=name)
            lookups = []
            for target in targets:
                known = _addresses_in(additional, target.target)
                lookups.append(defer.succeed(known) if known else
                               resolve_addresses(self.resolver, target.target, self.dns_timeout)
                               .addErrback(self._dns_failed, target.target))

            def build(results: list[tuple[bool, Any]]) -> list[Candidate]:
                out: list[Candidate] = []
                for target, (ok, addresses) in zip(targets, results):
                    tls_name = target.target if self.srv_name_check == "target" else domain
                    for address in addresses if ok else ():
                        out.append(Candidate(address, target.port, tls_name, Origin.SRV,
                                             f"{name} -> {target.target}"))
                return out

            return defer.DeferredList(lookups, consumeErrors=True).addCallback(build)

        return d.addCallback(ordered).addErrback(self._dns_failed, name)

    @staticmethod
    def _dns_failed(failure: Failure, name: str) -> list[Candidate]:
        _log.warn("DNS lookup of {name} failed: {why}", name=name, why=describe_failure(failure))
        return []


# --- announces -----------------------------------------------------------------------


class AnnounceReceiver(DatagramProtocol):
    """Receives ASAP_SERVER_ANNOUNCE datagrams and keeps an ``AnnounceTable``.

    Announces are unauthenticated (RFC 5352 section 9): they only add
    candidates, which must then pass TLS server authentication against
    ``server_name`` (or, when it is None, the announced IP address).

    - TCP Transport params give the address and port to try; a wildcard
      address means the datagram's source.  An address other than the
      source is ignored unless ``trust_announced_addresses`` (so a forged
      announce cannot make every PE connect to a third party).  SCTP
      transports are ignored (this implementation speaks TLS over TCP).
    - Without any transport param: the source address and ``default_port``
      (the IANA asap-tcp-tls port 3864, as RFC 5352 section 3.6 says "the
      IANA-registered ASAP port"); ``default_port=None`` takes the UDP
      source port instead (rsplib's behaviour).
    - ``allowed_sources``: optional networks announces are accepted from.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        table: AnnounceTable | None = None,
        server_name: str | None = None,
        default_port: int | None = ASAP_TLS_PORT,
        trust_announced_addresses: bool = False,
        allowed_sources: Iterable[str] = (),
        max_datagram: int = 1024,
        multicast_group: str | None = None,
    ) -> None:
        self.clock = clock
        self.table = table if table is not None else AnnounceTable()
        self.server_name = server_name
        self.default_port = default_port
        self.trust_announced_addresses = trust_announced_addresses
        self.allowed_sources = tuple(ipaddress.ip_network(n, strict=False) for n in allowed_sources)
        self.max_datagram = max_datagram
        self.multicast_group = multicast_group
        self.limits = Limits(max_message_size=max_datagram)
        self.listeners: list[Callable[[list[Candidate]], None]] = []
        self.received = 0
        self.dropped = 0

    def startProtocol(self) -> None:
        if self.multicast_group:
            _log.info("joining multicast group {group} for announces", group=self.multicast_group)
            self.transport.joinGroup(self.multicast_group)

    def candidates(self) -> list[Candidate]:
        return self.table.candidates(self.clock.seconds())

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received += 1
        source_ip, source_port = str(addr[0]), int(addr[1])
        if len(datagram) > self.max_datagram:
            return self._drop(source_ip, f"oversized datagram ({len(datagram)} bytes)")
        try:
            source = ipaddress.ip_address(source_ip.split("%", 1)[0])
        except ValueError:
            return self._drop(source_ip, "unparsable source address")
        if self.allowed_sources and not any(source in n for n in self.allowed_sources):
            return self._drop(source_ip, "source not allowed")
        try:
            message = decode_message(datagram, PPID_ASAP, self.limits)
        except WireError as exc:
            return self._drop(source_ip, f"malformed: {exc}")
        if not isinstance(message, AsapServerAnnounce):
            return self._drop(source_ip, f"not a server announce: {message.name}")
        now = self.clock.seconds()
        new: list[Candidate] = []
        for candidate in self._candidates_of(message, str(source), source_port):
            verdict = self.table.observe(candidate, str(source), now)
            if verdict is AnnounceVerdict.NEW:
                _log.info("registrar {server_id:#010x} announced at {candidate}",
                          server_id=message.server_id, candidate=candidate.describe())
                new.append(candidate)
            elif verdict is not AnnounceVerdict.REFRESHED:
                self._drop(source_ip, verdict.value)
        if new:
            for listener in list(self.listeners):
                listener(new)

    def _candidates_of(self, message: AsapServerAnnounce, source: str,
                       source_port: int) -> list[Candidate]:
        out: list[Candidate] = []
        tcp = [t for t in message.transports if isinstance(t, TcpTransport)]
        if not message.transports:
            port = self.default_port if self.default_port is not None else source_port
            if port:
                out.append(self._candidate(source, port, message.server_id, source))
        for t in tcp:
            address = t.address
            host = source if address.is_unspecified else str(address)
            if host != source and not self.trust_announced_addresses:
                _log.debug("ignoring announced address {host} from {source}",
                           host=host, source=source)
                continue
            if t.port:
                out.append(self._candidate(host, t.port, message.server_id, source))
        return out

    def _candidate(self, host: str, port: int, server_id: int, source: str) -> Candidate:
        return Candidate(host, port, self.server_name or host, Origin.ANNOUNCE,
                         f"from {source}", server_id)

    def _drop(self, source_ip: str, why: str) -> None:
        self.dropped += 1
        _log.debug("announce from {source} dropped: {why}", source=source_ip, why=why)


def listen_for_announces(reactor: Any, port: int, receiver: AnnounceReceiver,
                         interface: str = "127.0.0.1") -> Any:
    """Bind ``receiver`` to UDP ``interface``:``port``; returns the ``IListeningPort``."""
    return reactor.listenUDP(port, receiver, interface=interface,
                             maxPacketSize=max(receiver.max_datagram + 1, 512))


# --- the hunt --------------------------------------------------------------------------


def describe_failure(failure: Failure) -> str:
    """A one-line reason for the logs (e.g. a certificate for the wrong name)."""
    value = failure.value
    name = type(value).__name__
    if name in ("VerificationError", "CertificateError"):
        return f"server certificate does not match the expected name: {value}"
    if isinstance(value, defer.CancelledError):
        return "cancelled"
    text = str(value) or repr(value)
    return f"{name}: {text}"


def make_channel_factory(
    handler_factory: Callable[[Candidate], IChannelHandler],
    clock: IReactorTime,
    settings: ChannelSettings | None = None,
) -> Callable[[Candidate], Channel]:
    """A ``channel_factory`` for ``ServerHunt``: a TLS, initiating ``Channel``
    per attempt with the handler ``handler_factory(candidate)`` returns."""
    settings = settings or ChannelSettings()

    def factory(candidate: Candidate) -> Channel:
        return Channel(handler_factory(candidate), clock, settings, tls=True, initiator=True)

    return factory


class _Attempt:
    __slots__ = ("candidate", "channel", "handler", "connecting", "timer", "cancelled")

    def __init__(self, candidate: Candidate, channel: Channel) -> None:
        self.candidate = candidate
        self.channel = channel
        self.handler = channel.handler  # the user's, restored for the winner
        self.connecting: defer.Deferred[Any] | None = None
        self.timer: IDelayedCall | None = None
        self.cancelled = False


class _Watcher:
    """The channel's handler while its attempt is undecided."""

    def __init__(self, hunt: ServerHunt, attempt: _Attempt) -> None:
        self.hunt = hunt
        self.attempt = attempt

    def channel_ready(self, channel: Channel) -> None:
        self.hunt._ready(self.attempt)

    def channel_closed(self, channel: Channel, reason: Failure) -> None:
        self.hunt._closed(self.attempt, reason)

    def message_received(self, channel: Channel, message: Any, now: float) -> None:
        pass  # not yet (or never) the home server

    def wire_error(self, channel: Channel, ppid: int, error: WireError, now: float) -> None:
        pass

    def data_received(self, channel: Channel, ppid: int, payload: bytes, now: float) -> None:
        pass


class ServerHunt:
    """Find a home registrar (RFC 5352 section 3.6).

    ``source.candidates()`` gives each round's ordered candidates.
    ``tls_options_factory(tls_name)`` returns a client connection creator
    (e.g. ``lambda name: tls.client_options(name, roots, client_cert=...)``).
    ``channel_factory(candidate)`` returns a fresh ``Channel`` (see
    ``make_channel_factory``); its handler hears ``channel_ready`` only if
    that channel wins, and nothing at all otherwise.  ``endpoint_factory``
    replaces the default endpoint (``TCP4ClientEndpoint``/``TCP6ClientEndpoint``
    wrapped by ``wrapClientTLS``), e.g. in tests.
    """

    def __init__(
        self,
        reactor: Any,
        source: CandidateSource,
        tls_options_factory: Callable[[str], Any],
        channel_factory: Callable[[Candidate], Channel],
        *,
        max_parallel: int = MAX_PARALLEL,
        t5_initial: float = 10.0,
        t5_max: float = 60.0,
        attempt_timeout: float | None = 7.5,
        endpoint_factory: Callable[[Candidate], IStreamClientEndpoint] | None = None,
    ) -> None:
        if not 1 <= max_parallel <= MAX_PARALLEL:
            raise ValueError(f"max_parallel must be 1..{MAX_PARALLEL} (RFC 5352 SH1)")
        self.reactor = reactor
        self.source = source
        self.tls_options_factory = tls_options_factory
        self.channel_factory = channel_factory
        self.max_parallel = max_parallel
        self.backoff = Backoff(t5_initial, t5_max)
        self.attempt_timeout = attempt_timeout
        self.endpoint_factory = endpoint_factory or self._default_endpoint
        self.rounds = 0
        self.round: HuntRound | None = None
        self.home: Candidate | None = None  # the last hunt's winner
        self._result: defer.Deferred[Channel] | None = None
        self._attempts: dict[tuple[str, int], _Attempt] = {}
        self._t5: IDelayedCall | None = None
        self._avoid: set[tuple[str, int]] = set()
        self._stalled: set[tuple[str, int]] = set()
        self._round_token = 0
        self._warned = False

    @property
    def hunting(self) -> bool:
        return self._result is not None

    @property
    def in_flight(self) -> int:
        return len(self._attempts)

    def find(self, avoid: Iterable[Candidate | tuple[str, int]] = ()) -> defer.Deferred[Channel]:
        """Hunt until a registrar is found (forever, or until the Deferred is
        cancelled).  ``avoid``: addresses (e.g. the home server that just
        failed) to try only after all others."""
        if self._result is not None:
            raise RuntimeError("a server hunt is already running")
        self._result = defer.Deferred(self._cancel)
        self._avoid = {c.key if isinstance(c, Candidate) else tuple(c) for c in avoid}
        self._stalled = set()
        self.backoff.reset()
        self.rounds = 0
        listen = getattr(self.source, "add_listener", None)
        if listen is not None:
            listen(self._announced)
        result = self._result
        self._start_round()
        return result

    # -- rounds -------------------------------------------------------------------

    def _start_round(self) -> None:
        self.rounds += 1
        self._round_token += 1
        token = self._round_token
        self.round = None
        self._t5 = self.reactor.callLater(self.backoff.current, self._t5_expired)
        try:
            gathering = self.source.candidates()
        except Exception:
            gathering = defer.fail()
        gathering.addCallbacks(self._gathered, self._gather_failed,
                               callbackArgs=(token,), errbackArgs=(token,))

    def _gather_failed(self, failure: Failure, token: int) -> None:
        _log.failure("collecting registrar candidates failed", failure)
        self._gathered([], token)

    def _gathered(self, candidates: list[Candidate], token: int) -> None:
        if token != self._round_token or self._result is None:
            return  # that round is over already
        ordered = order_for_round(candidates, self._avoid | self._stalled)
        self.round = HuntRound(ordered, self.max_parallel)
        self._warned = False
        _log.info("server hunt round {n}: {count} candidate(s), T5 {t5:g} s",
                  n=self.rounds, count=len(ordered), t5=self.backoff.current)
        self._fill()

    def _announced(self, candidates: list[Candidate]) -> None:
        if self.round is not None and self._result is not None and self.round.add(candidates):
            self._warned = False
            self._fill()

    def _fill(self) -> None:
        hunt_round = self.round
        if hunt_round is None or self._result is None:
            return
        for candidate in hunt_round.to_start():
            self._start_attempt(candidate)
            if self._result is None or self.round is not hunt_round:
                return  # won (or cancelled) synchronously
        if hunt_round.exhausted and not self._warned:
            self._warned = True
            delay = self._t5.getTime() - self.reactor.seconds() if self._t5 else 0.0
            _log.warn("server hunt round {n}: no registrar reachable ({failed} failed); "
                      "next round in {delay:.1f} s",
                      n=self.rounds, failed=len(hunt_round.failures), delay=max(delay, 0.0))

    def _t5_expired(self) -> None:
        self._t5 = None
        stalled = self.round.stop() if self.round is not None else []
        self._stalled = {c.key for c in stalled}
        for candidate in stalled:
            self._cancel_attempt(candidate.key, "T5-Serverhunt expired")
        self.backoff.expired()
        self._start_round()

    # -- attempts ----------------------------------------------------------------------

    def _default_endpoint(self, candidate: Candidate) -> IStreamClientEndpoint:
        timeout = self.attempt_timeout or 30
        cls = endpoints.TCP6ClientEndpoint if candidate.family == 6 else endpoints.TCP4ClientEndpoint
        tcp = cls(self.reactor, candidate.host, candidate.port, timeout=timeout)
        return endpoints.wrapClientTLS(self.tls_options_factory(candidate.tls_name), tcp)

    def _start_attempt(self, candidate: Candidate) -> None:
        try:
            endpoint = self.endpoint_factory(candidate)
            channel = self.channel_factory(candidate)
        except Exception as exc:
            _log.failure("cannot try {candidate}", candidate=candidate.describe())
            self._failed(candidate, f"set-up error: {exc}")
            return
        attempt = _Attempt(candidate, channel)
        channel.handler = _Watcher(self, attempt)
        self._attempts[candidate.key] = attempt
        _log.debug("trying registrar {candidate}", candidate=candidate.describe())
        if self.attempt_timeout is not None:
            attempt.timer = self.reactor.callLater(self.attempt_timeout, self._timed_out, attempt)
        connecting = endpoints.connectProtocol(endpoint, channel)
        if attempt.cancelled or self._attempts.get(candidate.key) is not attempt:
            return
        attempt.connecting = connecting
        connecting.addCallbacks(self._connected, self._connect_failed,
                                callbackArgs=(attempt,), errbackArgs=(attempt,))

    def _connected(self, _protocol: Any, attempt: _Attempt) -> None:
        attempt.connecting = None  # now waiting for the TLS handshake

    def _connect_failed(self, failure: Failure, attempt: _Attempt) -> None:
        attempt.connecting = None
        if not attempt.cancelled:
            self._attempt_over(attempt, describe_failure(failure))

    def _timed_out(self, attempt: _Attempt) -> None:
        attempt.timer = None
        if self._attempts.get(attempt.candidate.key) is attempt:
            self._cancel_attempt(attempt.candidate.key, "timed out")
            self._failed(attempt.candidate, f"no authenticated connection within "
                                            f"{self.attempt_timeout:g} s")

    def _ready(self, attempt: _Attempt) -> None:
        key = attempt.candidate.key
        if (attempt.cancelled or self._result is None or self.round is None
                or self._attempts.get(key) is not attempt):
            attempt.channel.abort()
            return
        others = self.round.succeeded(attempt.candidate)
        del self._attempts[key]
        if attempt.timer is not None and attempt.timer.active():
            attempt.timer.cancel()
        for other in others:
            self._cancel_attempt(other.key, "another registrar answered first")
        result = self._finish()
        channel = attempt.channel
        channel.handler = attempt.handler
        self.home = attempt.candidate
        _log.info("home registrar: {candidate} (round {n})",
                  candidate=attempt.candidate.describe(), n=self.rounds)
        attempt.handler.channel_ready(channel)
        result.callback(channel)

    def _closed(self, attempt: _Attempt, reason: Failure) -> None:
        if attempt.timer is not None and attempt.timer.active():
            attempt.timer.cancel()
        if not attempt.cancelled:
            self._attempt_over(attempt, describe_failure(reason))

    def _attempt_over(self, attempt: _Attempt, why: str) -> None:
        if self._attempts.get(attempt.candidate.key) is attempt:
            del self._attempts[attempt.candidate.key]
            if attempt.timer is not None and attempt.timer.active():
                attempt.timer.cancel()
            self._failed(attempt.candidate, why)

    def _failed(self, candidate: Candidate, why: str) -> None:
        _log.warn("registrar {candidate} failed: {why}", candidate=candidate.describe(), why=why)
        if self.round is not None and self._result is not None:
            self.round.failed(candidate, why)
            self._fill()

    def _cancel_attempt(self, key: tuple[str, int], why: str) -> None:
        attempt = self._attempts.pop(key, None)
        if attempt is None:
            return
        attempt.cancelled = True
        _log.debug("dropping attempt {candidate}: {why}",
                   candidate=attempt.candidate.describe(), why=why)
        if attempt.timer is not None and attempt.timer.active():
            attempt.timer.cancel()
        attempt.timer = None
        if attempt.connecting is not None:
            connecting, attempt.connecting = attempt.connecting, None
            connecting.cancel()
        attempt.channel.abort()

    # -- end ----------------------------------------------------------------------------

    def _finish(self) -> defer.Deferred[Channel]:
        result = self._result
        assert result is not None
        self._result = None
        self._round_token += 1
        if self._t5 is not None and self._t5.active():
            self._t5.cancel()
        self._t5 = None
        for key in list(self._attempts):
            self._cancel_attempt(key, "hunt over")
        self.round = None
        unlisten = getattr(self.source, "remove_listener", None)
        if unlisten is not None:
            unlisten(self._announced)
        return result

    def _cancel(self, _result: defer.Deferred[Channel]) -> None:
        if self._result is not None:
            _log.info("server hunt cancelled after {n} round(s)", n=self.rounds)
            self._finish()
