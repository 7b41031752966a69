"""Where a PE or PU looks for registrars: the candidates of each round of
the ENRP server hunt (RFC 5352 section 3.6), the Twisted shell around the
ordering rules of ``rserpool.asap.hunt``.

- ``RegistrarCandidates`` gathers the candidates of one round, in the defined
  order: the static list (IP addresses, or DNS names resolved with
  ``twisted.names``), then SRV names (``_asap-tcp-tls._tcp.<domain>``,
  RFC 2782 order), then registrars heard announcing themselves.
- ``AnnounceReceiver`` is the UDP protocol for ASAP_SERVER_ANNOUNCE datagrams
  (``listen_for_announces`` binds it; multicast only when configured).

``rserpool.service.hunt.ServerHunt`` tries them.  See docs/server-hunt.md.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from typing import Any, Callable, Iterable, Sequence

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.names import dns
from twisted.names.error import DNSNameError
from twisted.python.failure import Failure
from zope.interface import implementer

from rserpool.asap.hunt import (
    ASAP_TLS_PORT, AnnounceTable, AnnounceVerdict, Candidate, Origin, SrvTarget, StaticEntry,
    dedupe, srv_order,
)
from rserpool.interfaces import ICandidateSource, IWatchedCandidateSource
from rserpool.wire import AsapServerAnnounce, Limits, TcpTransport, WireError, decode_message
from rserpool.wire.codes import PPID_ASAP

__all__ = [
    "SRV_SERVICE", "RegistrarCandidates", "AnnounceReceiver",
    "listen_for_announces", "describe_failure", "resolve_addresses",
]

_log = Logger()

#: The SRV service label: the IANA service name of port 3864/tcp (RFC 5352
#: section 8.2, "asap-tcp-tls"), as RFC 6335 asks for SRV labels.
SRV_SERVICE = "_asap-tcp-tls._tcp"

DnsTimeout = Sequence[float]


def describe_failure(failure: Failure) -> str:
    """A one-line reason for the logs and the tools (e.g. "certificate verify
    failed: unknown CA ...", "name mismatch: expected X, certificate is for
    Y", "connection refused"): see ``rserpool.security.tlserrors``."""
    from rserpool.security.tlserrors import connection_error_text

    return connection_error_text(failure)



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


@implementer(IWatchedCandidateSource)
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
        self.lookup_failures: list[str] = []
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
        # Why names of this round gave no address ("name: why"), for tools
        # that report every failure.
        self.lookup_failures: list[str] = []
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
                self.lookup_failures.append(f"{entry.host}: no A/AAAA records")
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
                self.lookup_failures.append(f"{name}: no usable SRV records")
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

    def _dns_failed(self, failure: Failure, name: str) -> list[Candidate]:
        why = describe_failure(failure)
        _log.warn("DNS lookup of {name} failed: {why}", name=name, why=why)
        self.lookup_failures.append(f"{name}: {why}")
        return []


# --- announces -----------------------------------------------------------------------


@implementer(ICandidateSource)
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
