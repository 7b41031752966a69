"""ENRP server hunt, the pure part (RFC 5352 section 3.6).

No Twisted, no sockets, no clock: time is passed in as ``now``.  The Twisted
shell is ``rserpool.service.hunt``; docs/server-hunt.md explains the whole.

- ``Candidate``: one registrar to try (an address to connect to and the name
  its TLS certificate must carry).
- ``parse_host_port`` / ``StaticEntry``: the configured static list.
- ``srv_order``: RFC 2782 ordering of SRV records (priority, then a
  weight-randomised order within each priority).
- ``Backoff``: the T5-Serverhunt timer (10 s, doubling up to RETRAN-MAX).
- ``AnnounceTable``: candidates learnt from ASAP_SERVER_ANNOUNCE datagrams,
  expiring (T7-ENRPoutdate) and bounded in number, in total and per source.
- ``HuntRound``: one round of the hunt (SH1, SH4): at most three attempts in
  flight, in the defined order, each candidate tried at most once a round.
"""

from __future__ import annotations

import enum
import ipaddress
import random
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

__all__ = [
    "ASAP_TLS_PORT", "MAX_PARALLEL", "Origin", "Candidate", "StaticEntry", "SrvTarget",
    "parse_host_port", "is_ip", "srv_order", "dedupe", "Backoff", "AnnounceTable",
    "AnnounceVerdict", "HuntRound", "order_for_round",
]

#: IANA port of ASAP over TLS/TCP (RFC 5352 section 8.2: asap-tcp-tls 3864).
ASAP_TLS_PORT = 3864
#: SH1: an ASAP endpoint MUST NOT establish more than three connections.
MAX_PARALLEL = 3


class Origin(enum.Enum):
    """Where a candidate came from (the hunt tries them in this order)."""

    STATIC = "static"
    SRV = "srv"
    ANNOUNCE = "announce"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A registrar to try: connect to ``host``:``port`` (an IP address) and
    require a certificate for ``tls_name`` (a DNS name or an IP address)."""

    host: str
    port: int
    tls_name: str
    origin: Origin = Origin.STATIC
    source: str = ""  # what produced it (the static entry, the SRV name, the announcer)
    server_id: int | None = None  # from an announce

    def __post_init__(self) -> None:
        if not is_ip(self.host):
            raise ValueError(f"candidate host must be an IP address: {self.host!r}")
        if not 0 < self.port <= 0xFFFF:
            raise ValueError(f"bad port {self.port!r}")
        if not self.tls_name:
            raise ValueError("a candidate needs a TLS name to verify")

    @property
    def key(self) -> tuple[str, int]:
        """The transport address: two candidates with the same key are one server."""
        return (self.host, self.port)

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.host).version

    def describe(self) -> str:
        """The candidate in a log line: ``host:port`` (the one form of an
        address), then the name its certificate must carry when that is not
        the address itself, and where it came from:
        ``127.0.0.1:3864 (static)``,
        ``127.0.0.1:9911 (registrar-a.example, static)``,
        ``192.0.2.7:3864 (announce from 192.0.2.7)``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        address = f"{host}:{self.port}"
        how = self.origin.value
        if self.source and self.source != address:
            how = f"{how} {self.source}"
        if self.tls_name != self.host:
            how = f"{self.tls_name}, {how}"
        return f"{address} ({how})"


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``host`` (with ``default_port``) or a bare IPv6 address."""
    text = text.strip()
    if not text:
        raise ValueError("empty host:port")
    host: str
    port_text: str | None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {text!r}")
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError(f"junk after ']' in {text!r}")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:  # a bare IPv6 address
        host, port_text = text, None
    elif ":" in text:
        host, port_text = text.split(":", 1)
    else:
        host, port_text = text, None
    if not host:
        raise ValueError(f"no host in {text!r}")
    if port_text is None:
        if default_port is None:
            raise ValueError(f"no port in {text!r}")
        port = default_port
    else:
        if not port_text.isdigit():
            raise ValueError(f"bad port in {text!r}")
        port = int(port_text)
    if not 0 < port <= 0xFFFF:
        raise ValueError(f"port out of range in {text!r}")
    host = host.rstrip(".").lower() if not is_ip(host) else str(ipaddress.ip_address(host))
    return host, port


@dataclass(frozen=True, slots=True)
class StaticEntry:
    """One configured registrar: ``host`` is an IP address or a DNS name.

    ``server_name`` is the name the certificate must carry; by default the
    DNS name itself, or the IP address for an IP-only entry.
    """

    host: str
    port: int = ASAP_TLS_PORT
    server_name: str | None = None

    @classmethod
    def parse(cls, text: str, default_port: int = ASAP_TLS_PORT) -> StaticEntry:
        """``host:port`` optionally followed by whitespace and the expected server name."""
        parts = text.split()
        if not parts or len(parts) > 2:
            raise ValueError(f"expected 'host:port [server-name]': {text!r}")
        host, port = parse_host_port(parts[0], default_port)
        return cls(host, port, parts[1] if len(parts) == 2 else None)

    @property
    def is_ip(self) -> bool:
        return is_ip(self.host)

    @property
    def tls_name(self) -> str:
        return self.server_name or self.host


@dataclass(frozen=True, slots=True)
class SrvTarget:
    """One SRV record's data (RFC 2782)."""

    priority: int
    weight: int
    port: int
    target: str


def srv_order(records: Iterable[SrvTarget], rng: random.Random) -> list[SrvTarget]:
    """RFC 2782 order: ascending priority; within a priority, repeatedly pick
    a record with probability proportional to its weight (weight-0 records
    placed first, so they get a small chance when all weights are 0)."""
    records = [r for r in records if r.target not in ("", ".")]  # "." = no service
    result: list[SrvTarget] = []
    for priority in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == priority]
        rng.shuffle(group)  # "arrange ... in any order"
        group.sort(key=lambda r: r.weight != 0)  # stable: zero weights first
        while group:
            total = sum(r.weight for r in group)
            pick = rng.randint(0, total)
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    break
            result.append(group.pop(index))
    return result


def dedupe(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Keep the first candidate for each transport address."""
    seen: set[tuple[str, int]] = set()
    out: list[Candidate] = []
    for c in candidates:
        if c.key not in seen:
            seen.add(c.key)
            out.append(c)
    return out


def order_for_round(
    candidates: Sequence[Candidate], deprioritised: Iterable[tuple[str, int]] = ()
) -> list[Candidate]:
    """The defined order, with the deprioritised addresses (a failed home
    server, attempts cut off by the last T5 expiry: SH5.3 "a different set")
    moved to the end, keeping their relative order."""
    later = set(deprioritised)
    ordered = dedupe(candidates)
    return [c for c in ordered if c.key not in later] + [c for c in ordered if c.key in later]


class Backoff:
    """T5-Serverhunt: ``initial`` doubling on every expiry, capped at ``maximum``."""

    __slots__ = ("initial", "maximum", "current")

    def __init__(self, initial: float = 10.0, maximum: float = 60.0) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("need 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self.current = initial

    def expired(self) -> float:
        """SH5.1: double (capped); returns the new value."""
        self.current = min(self.current * 2, self.maximum)
        return self.current

    def reset(self) -> None:
        """SH3: back to the initial value."""
        self.current = self.initial

    def sequence(self, count: int) -> list[float]:
        """The next ``count`` timer values without changing this object."""
        values, value = [], self.current
        for _ in range(count):
            values.append(value)
            value = min(value * 2, self.maximum)
        return values


class AnnounceVerdict(enum.Enum):
    NEW = "new"
    REFRESHED = "refreshed"
    REJECTED_FULL = "rejected: table full"
    REJECTED_SOURCE = "rejected: too many from this source"


@dataclass(slots=True)
class _Announced:
    candidate: Candidate
    source_ip: str
    expires: float
    order: int


@dataclass
class AnnounceTable:
    """Registrars learnt from unauthenticated announces (RFC 5352 section 9:
    do not trust them).  Entries expire ``lifetime`` seconds after their last
    announce (T7-ENRPoutdate).  At most ``max_entries`` are kept, at most
    ``max_per_source`` per announcing IP; when full, new addresses are
    refused (known ones are still refreshed), so a flood cannot evict a
    registrar already known.  Announced candidates only ever get a chance to
    pass TLS server authentication."""

    lifetime: float = 5.0
    max_entries: int = 16
    max_per_source: int = 4
    _entries: dict[tuple[str, int], _Announced] = field(default_factory=dict)
    _counter: int = 0
    rejected: int = 0

    def __post_init__(self) -> None:
        if self.lifetime <= 0 or self.max_entries < 1 or self.max_per_source < 1:
            raise ValueError("lifetime, max_entries and max_per_source must be positive")

    def __len__(self) -> int:
        return len(self._entries)

    def observe(self, candidate: Candidate, source_ip: str, now: float) -> AnnounceVerdict:
        """Record one announced address (from a datagram sent by ``source_ip``)."""
        self.expire(now)
        entry = self._entries.get(candidate.key)
        if entry is not None:
            entry.expires = now + self.lifetime
            entry.candidate = candidate  # e.g. a new server ID after a restart
            return AnnounceVerdict.REFRESHED
        if len(self._entries) >= self.max_entries:
            self.rejected += 1
            return AnnounceVerdict.REJECTED_FULL
        same_source = sum(1 for e in self._entries.values() if e.source_ip == source_ip)
        if same_source >= self.max_per_source:
            self.rejected += 1
            return AnnounceVerdict.REJECTED_SOURCE
        self._counter += 1
        self._entries[candidate.key] = _Announced(
            candidate, source_ip, now + self.lifetime, self._counter
        )
        return AnnounceVerdict.NEW

    def expire(self, now: float) -> list[Candidate]:
        """Drop entries not refreshed in time; returns them."""
        gone = [k for k, e in self._entries.items() if e.expires <= now]
        return [self._entries.pop(k).candidate for k in gone]

    def candidates(self, now: float) -> list[Candidate]:
        """Live entries, oldest first-seen first."""
        self.expire(now)
        return [e.candidate for e in sorted(self._entries.values(), key=lambda e: e.order)]

    def next_expiry(self) -> float | None:
        return min((e.expires for e in self._entries.values()), default=None)


class HuntRound:
    """One round (SH1 to SH5): the candidates in order, at most ``max_parallel``
    attempts in flight, each candidate tried once.  The shell calls
    ``to_start()`` to fill free slots, then ``failed``/``succeeded``."""

    __slots__ = ("max_parallel", "_queue", "_seen", "in_flight", "failures", "winner")

    def __init__(self, candidates: Iterable[Candidate], max_parallel: int = MAX_PARALLEL) -> None:
        if not 1 <= max_parallel <= MAX_PARALLEL:
            raise ValueError(f"max_parallel must be 1..{MAX_PARALLEL} (RFC 5352 SH1)")
        self.max_parallel = max_parallel
        self._queue: list[Candidate] = []
        self._seen: set[tuple[str, int]] = set()
        self.in_flight: dict[tuple[str, int], Candidate] = {}
        self.failures: list[tuple[Candidate, str]] = []
        self.winner: Candidate | None = None
        self.add(candidates)

    def add(self, candidates: Iterable[Candidate]) -> int:
        """Append candidates not yet seen in this round (e.g. a fresh announce)."""
        added = 0
        for c in candidates:
            if c.key not in self._seen:
                self._seen.add(c.key)
                self._queue.append(c)
                added += 1
        return added

    def to_start(self) -> list[Candidate]:
        """Candidates to start now (and mark as in flight)."""
        if self.winner is not None:
            return []
        started: list[Candidate] = []
        while self._queue and len(self.in_flight) < self.max_parallel:
            c = self._queue.pop(0)
            self.in_flight[c.key] = c
            started.append(c)
        return started

    def failed(self, candidate: Candidate, why: str) -> None:
        """SH4: this one failed; the next ``to_start()`` tries another address."""
        if self.in_flight.pop(candidate.key, None) is not None:
            self.failures.append((candidate, why))

    def succeeded(self, candidate: Candidate) -> list[Candidate]:
        """SH3/SH6: ``candidate`` wins; returns the other attempts to cancel."""
        if self.winner is not None or candidate.key not in self.in_flight:
            raise ValueError(f"{candidate.describe()} is not an attempt in flight")
        self.winner = candidate
        del self.in_flight[candidate.key]
        others = list(self.in_flight.values())
        self.in_flight.clear()
        self._queue.clear()
        return others

    def stop(self) -> list[Candidate]:
        """SH5.2: the round is over; returns the attempts still in flight."""
        others = list(self.in_flight.values())
        self.in_flight.clear()
        self._queue.clear()
        return others

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def exhausted(self) -> bool:
        """Every candidate was tried and none is in flight (wait for T5)."""
        return self.winner is None and not self._queue and not self.in_flight

    def __iter__(self) -> Iterator[Candidate]:
        return iter(list(self.in_flight.values()) + self._queue)
