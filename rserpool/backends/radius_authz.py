"""RADIUS for the registrar: CHAP verifier, pool authorizer, configuration.

- :class:`RadiusChapVerifier` checks CHAP responses through RADIUS
  (:class:`~rserpool.interfaces.IChapVerifier`, for the registrar's
  ``ChapChecker``).
- :class:`RadiusAuthorizer` is a pool authorizer
  (``authorize(identity, groups, action, pool_handle) -> Deferred[bool]``)
  from RADIUS reply attributes, cached, or fetched by authorize-only.
- :func:`radius_from_config` builds all three from a ``[radius]`` section
  (docs/radius.md).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Callable, Iterable, Mapping

from twisted.internet import defer
from zope.interface import implementer

from rserpool.backends.radius import RadiusClient, parse_servers
from rserpool.backends.radius_decision import (
    AUTHORIZATION_SOURCES,
    RadiusDecision,
    decision_from_attributes,
)
from rserpool.identity import normalize_identity
from rserpool.interfaces import IChapVerifier, Identity, IPoolAuthorizer
from rserpool.security.authz import pool_matches

#: The mechanism name of identities proven by RADIUS CHAP (as
#: :data:`rserpool.security.credentials.MECH_CHAP`).
MECHANISM = "CHAP-MD5"
#: Reply attributes copied into :attr:`Identity.attributes` (strings only).
IDENTITY_ATTRIBUTES = ("Class", "Filter-Id", "RSerPool-Allowed-Pool", "RSerPool-Group")

__all__ = [
    "MECHANISM",
    "RadiusAuthorizer",
    "RadiusChapVerifier",
    "identity_attributes",
    "radius_from_config",
    "read_secret_file",
]


@implementer(IChapVerifier)
class RadiusChapVerifier:
    """:class:`~rserpool.interfaces.IChapVerifier` through RADIUS
    (CHAP-Password and CHAP-Challenge) for
    :class:`rserpool.security.credentials.ChapChecker`.  An accepted
    decision is handed to ``authorizer.remember`` so that the following
    registration is authorized from the same reply.
    """

    def __init__(self, client: RadiusClient, sources: Iterable[str] = AUTHORIZATION_SOURCES,
                 authorizer: "RadiusAuthorizer | None" = None) -> None:
        self.client = client
        self.sources = frozenset(sources)
        self.authorizer = authorizer

    def verify_chap(self, identity: str, identifier: int, challenge: bytes,
                    response: bytes) -> defer.Deferred[Identity | None]:
        """:class:`IChapVerifier`: an :class:`Identity` (groups and pools
        from the Accept's attributes) when RADIUS accepts, ``None`` for an
        Access-Reject (wrong response and unknown identity alike), or a
        failure with :class:`~rserpool.errors.BackendUnavailable`."""
        d = self.client.chap_verify(identity, identifier, challenge, response)

        def decided(decision: RadiusDecision) -> Identity | None:
            if not decision.accepted:
                return None
            full = decision_from_attributes(decision.identity, True, decision.attributes,
                                            self.sources)
            if self.authorizer is not None:
                self.authorizer.remember(full)
            return Identity.create(full.identity, MECHANISM, full.groups,
                                   identity_attributes(full))

        return d.addCallback(decided)


def identity_attributes(decision: RadiusDecision) -> dict[str, tuple[str, ...]]:
    """The informative string attributes of a decision, for the log."""
    attributes: dict[str, tuple[str, ...]] = {}
    for name in IDENTITY_ATTRIBUTES:
        values = []
        for value in decision.attributes.get(name, ()):
            if isinstance(value, bytes):
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError:
                    continue
            if isinstance(value, str) and value.isprintable():
                values.append(value)
        if values:
            attributes[name] = tuple(values)
    if decision.pools:
        attributes["pools"] = decision.pools
    return attributes


@implementer(IPoolAuthorizer)
class RadiusAuthorizer:
    """The registrar's pool authorizer, from RADIUS reply attributes.

    ``authorize(identity, groups, action, pool_handle)`` fires with True when
    the identity's (cached, or fetched by an authorize-only request) decision
    is an accept and either ``action`` is one of ``pool_actions`` and a pool
    pattern of the decision matches, or the optional ``rules`` authorizer
    says yes for the identity with its groups plus the RADIUS groups.  A
    refused decision denies everything; an unknown identity (None) is left to
    ``rules`` (default deny).  A backend failure fails the Deferred (the
    registrar logs it and refuses).

    Accepts are cached ``ttl`` seconds, refusals ``negative_ttl``; at most
    ``max_entries`` identities (least recently used evicted).
    """

    def __init__(
        self,
        client: RadiusClient | None,
        clock: Any,
        *,
        sources: Iterable[str] = AUTHORIZATION_SOURCES,
        ttl: float = 300.0,
        negative_ttl: float = 30.0,
        max_entries: int = 10_000,
        pool_actions: Iterable[str] = ("register", "deregister"),
        rules: Any = None,
        authorize_only: bool = True,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.client = client
        self.clock = clock
        self.sources = frozenset(sources)
        decision_from_attributes("-", False, {}, self.sources)  # validates the sources
        self.ttl = float(ttl)
        self.negative_ttl = float(negative_ttl)
        self.max_entries = int(max_entries)
        self.pool_actions = frozenset(pool_actions)
        self.rules = rules
        self.use_authorize_only = authorize_only and client is not None
        self._cache: OrderedDict[str, tuple[float, RadiusDecision]] = OrderedDict()
        self._waiting: dict[str, list[defer.Deferred[RadiusDecision]]] = {}

    def __len__(self) -> int:
        return len(self._cache)

    def with_rules(self, rules: Any) -> "RadiusAuthorizer":
        """An authorizer with other ``rules`` that shares this one's client,
        settings, cache and in-flight lookups (one cache per RADIUS
        configuration, whoever asks)."""
        other = RadiusAuthorizer(
            self.client, self.clock, sources=self.sources, ttl=self.ttl,
            negative_ttl=self.negative_ttl, max_entries=self.max_entries,
            pool_actions=self.pool_actions, rules=rules, authorize_only=self.use_authorize_only)
        other._cache = self._cache
        other._waiting = self._waiting
        return other

    def remember(self, decision: RadiusDecision) -> None:
        ttl = self.ttl if decision.accepted else self.negative_ttl
        if ttl <= 0:
            return
        self._cache[decision.identity] = (self.clock.seconds() + ttl, decision)
        self._cache.move_to_end(decision.identity)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    def forget(self, identity: str) -> None:
        self._cache.pop(identity, None)

    def cached(self, identity: str) -> RadiusDecision | None:
        entry = self._cache.get(identity)
        if entry is None:
            return None
        if entry[0] <= self.clock.seconds():
            del self._cache[identity]
            return None
        self._cache.move_to_end(identity)
        return entry[1]

    def decision_for(self, identity: str) -> defer.Deferred[RadiusDecision]:
        canonical = normalize_identity(identity)  # one cache entry per identity, any spelling
        if canonical is None:
            return defer.succeed(RadiusDecision(False, identity))
        identity = canonical
        decision = self.cached(identity)
        if decision is not None:
            return defer.succeed(decision)
        if not self.use_authorize_only or self.client is None:
            return defer.succeed(RadiusDecision(False, identity))
        waiter: defer.Deferred[RadiusDecision] = defer.Deferred()
        waiters = self._waiting.get(identity)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        self._waiting[identity] = [waiter]

        def done(result: Any) -> None:
            waiting = self._waiting.pop(identity, [])
            if isinstance(result, RadiusDecision):
                result = decision_from_attributes(identity, result.accepted, result.attributes,
                                                  self.sources)
                self.remember(result)
            for each in waiting:
                if isinstance(result, RadiusDecision):
                    each.callback(result)
                else:
                    each.errback(result)

        self.client.authorize_only(identity).addBoth(done)
        return waiter

    def authorize(self, identity: str | None, groups: Iterable[str], action: str,
                  pool_handle: bytes) -> defer.Deferred[bool]:
        if identity is None:
            return defer.succeed(self._rules(None, frozenset(groups), action, pool_handle))

        def decide(decision: RadiusDecision) -> bool:
            if not decision.accepted:
                return False
            if action in self.pool_actions and any(
                    pool_matches(pattern, pool_handle) for pattern in decision.pools):
                return True
            return self._rules(identity, frozenset(groups) | decision.groups, action, pool_handle)

        return self.decision_for(identity).addCallback(decide)

    def _rules(self, identity: str | None, groups: frozenset[str], action: str,
               pool_handle: bytes) -> bool:
        if self.rules is None:
            return False
        decide: Callable[..., bool] = getattr(self.rules, "decide", None) or self.rules.authorize
        return decide(identity, groups, action, pool_handle) is True


# ------------------------------------------------------------ configuration

def read_secret_file(path: str) -> bytes:
    """The shared secret: the file's first line (without the line end).

    A secret readable by other users is refused.
    """
    mode = os.stat(path).st_mode
    if mode & 0o004:
        raise ValueError(f"RADIUS secret file {path} is readable by everyone (chmod 600 it)")
    with open(path, "rb") as handle:
        secret = handle.readline(4096).rstrip(b"\r\n")
    if not secret:
        raise ValueError(f"RADIUS secret file {path} is empty")
    return secret


def _config_sources(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        value = value.replace("|", ",").replace(",", " ").split()
    return frozenset(item.strip().lower() for item in value if item.strip())


def radius_from_config(
    reactor: Any, section: Mapping[str, Any], *, rules: Any = None,
) -> tuple[RadiusClient, RadiusChapVerifier, RadiusAuthorizer]:
    """Build the client, CHAP verifier and authorizer from a ``[radius]``
    configuration section (keys in docs/radius.md; values as strings or
    already typed).  Only ``servers`` and ``secret_file`` are required."""
    def get(key: str, default: Any, kind: Callable[[Any], Any] = str) -> Any:
        value = section.get(key, default)
        if isinstance(value, str) and kind is not str:
            value = value.strip()
            if kind is bool:
                return value.lower() in ("1", "yes", "true", "on")
        return kind(value)

    secret = read_secret_file(get("secret_file", ""))
    servers_value = section.get("servers", "")
    servers_text = servers_value if isinstance(servers_value, str) else " ".join(servers_value)
    sources = _config_sources(section.get("authorization", "class,filter-id,vsa"))
    client = RadiusClient(
        reactor,
        parse_servers(servers_text, secret),
        dictionary=get("dictionary", "") or None,
        timeout=get("timeout", 1.0, float),
        retries=get("retries", 2, int),
        max_in_flight=get("max_in_flight", 64, int),
        max_queue=get("max_queue", 1024, int),
        dead_time=get("dead_time", 30.0, float),
        nas_identifier=get("nas_identifier", "rserpool"),
    )
    authorizer = RadiusAuthorizer(
        client, reactor, sources=sources,
        ttl=get("cache_ttl", 300.0, float),
        negative_ttl=get("negative_cache_ttl", 30.0, float),
        max_entries=get("cache_size", 10_000, int),
        authorize_only=get("authorize_only", "yes", bool),
        rules=rules,
    )
    return client, RadiusChapVerifier(client, sources, authorizer), authorizer
