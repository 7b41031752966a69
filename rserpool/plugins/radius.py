"""RADIUS plugins: ``authorizer`` ``radius`` and ``chap-verifier`` ``radius``.

Cheap to import: ``build`` imports the RADIUS backend (pyrad) when it runs.

Both factories take the keys of the registrar's ``[radius]`` section
(``docs/radius.md``; ``servers`` and ``secret_file`` are required) as
options; the authorizer also takes ``rules``, a rules file
(``docs/authorization.md``) consulted for what the RADIUS pools do not
grant (``resolve``, ``@group`` rules with the RADIUS groups).  Unknown
options and bad values are ``ValueError``.

One RADIUS client, with one decision cache, is shared by every provider
built with the same RADIUS options on the same reactor: a CHAP Accept seen
by the verifier authorizes the following registration without a second
request.  The providers are also :class:`twisted.application.service.IService`
objects: ``rserpool.tap.build_registrar`` makes them children of the
registrar service, so the client's socket opens when the first of them
starts and closes (failing whatever is pending with ``BackendUnavailable``)
when the last one stops.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from zope.interface import implementer

from rserpool.interfaces import IChapVerifier, IPoolAuthorizer
from rserpool.plugins.builtin import BuiltinFactory

__all__ = [
    "AUTHORIZER_OPTIONS",
    "RADIUS_OPTIONS",
    "RadiusAuthorizerService",
    "RadiusChapVerifierService",
    "SharedRadius",
    "options_from_section",
    "shared_radius",
]

#: The ``[radius]`` keys (``rserpool.config.SCHEMA["radius"]``) and their defaults.
RADIUS_DEFAULTS: Mapping[str, str] = {
    "servers": "",
    "secret_file": "",
    "authorization": "class,filter-id,vsa",
    "authorize_only": "yes",
    "timeout": "1.0",
    "retries": "2",
    "dead_time": "30",
    "max_in_flight": "64",
    "max_queue": "1024",
    "nas_identifier": "rserpool",
    "cache_ttl": "300",
    "negative_cache_ttl": "30",
    "cache_size": "10000",
    "dictionary": "",
}
RADIUS_OPTIONS: tuple[str, ...] = tuple(RADIUS_DEFAULTS)
AUTHORIZER_OPTIONS: tuple[str, ...] = RADIUS_OPTIONS + ("rules",)

_BOOLEANS = {"1": "yes", "yes": "yes", "true": "yes", "on": "yes",
             "0": "no", "no": "no", "false": "no", "off": "no"}


def options_from_section(section: Mapping[str, Any]) -> dict[str, str]:
    """Plugin options (strings) from a parsed ``[radius]`` section
    (``config["radius"]``: lists, booleans and numbers already typed).
    Empty values are left out, so the plugin's own checks and defaults
    apply."""
    options: dict[str, str] = {}
    for key, value in section.items():
        if isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, (tuple, list)):
            text = ", ".join(str(item) for item in value)
        else:
            text = str(value)
        if text.strip():
            options[key] = text
    return options


def _canonical(options: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The RADIUS options with defaults filled in, validated and normalised."""
    values = dict(RADIUS_DEFAULTS)
    values.update({k: v for k, v in options.items() if k in RADIUS_DEFAULTS})
    values = {k: v.strip() for k, v in values.items()}
    for key in ("servers", "secret_file"):
        if not values[key]:
            raise ValueError(f"option {key!r} is required (the [radius] section)")
    flag = _BOOLEANS.get(values["authorize_only"].lower())
    if flag is None:
        raise ValueError("option 'authorize_only' must be yes or no")
    values["authorize_only"] = flag
    for key in ("timeout", "dead_time", "cache_ttl", "negative_cache_ttl"):
        try:
            number = float(values[key])
        except ValueError:
            raise ValueError(f"option {key!r} must be a number, not {values[key]!r}") from None
        if number < 0 or (key == "timeout" and number == 0):
            raise ValueError(f"option {key!r} must be {'> 0' if key == 'timeout' else '>= 0'}")
        values[key] = repr(number)
    for key in ("retries", "max_in_flight", "max_queue", "cache_size"):
        try:
            values[key] = str(int(values[key], 0))
        except ValueError:
            raise ValueError(f"option {key!r} must be an integer, not {values[key]!r}") from None
    return tuple(sorted(values.items()))


class SharedRadius:
    """One RADIUS client, CHAP verifier and decision cache, shared by the
    providers of one configuration, started by the first and stopped by the
    last of them."""

    def __init__(self, reactor: Any, options: Mapping[str, str]) -> None:
        from rserpool.backends.radius_authz import radius_from_config

        self.reactor = reactor
        self.client, self.verifier, self.authorizer = radius_from_config(reactor, options)
        self.users = 0

    def __repr__(self) -> str:
        servers = ", ".join(f"{s.host}:{s.port}" for s in self.client.servers)
        return f"<SharedRadius {servers} ({self.users} running)>"

    @property
    def stats(self) -> dict[str, int]:
        return self.client.stats

    def acquire(self) -> None:
        self.users += 1
        self.client.start()

    def release(self) -> defer.Deferred[None]:
        self.users = max(0, self.users - 1)
        if self.users:
            return defer.succeed(None)
        return self.client.stop()


_SHARED: "weakref.WeakValueDictionary[tuple[Any, ...], SharedRadius]" = weakref.WeakValueDictionary()


def shared_radius(reactor: Any, options: Mapping[str, str]) -> SharedRadius:
    """The :class:`SharedRadius` for these RADIUS options on ``reactor``
    (built on first use; kept while a provider refers to it)."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    key = (id(reactor),) + _canonical(options)
    shared = _SHARED.get(key)
    if shared is None or shared.reactor is not reactor:
        shared = SharedRadius(reactor, dict(key[1:]))
        _SHARED[key] = shared
    return shared


class _RadiusService(Service):
    def __init__(self, shared: SharedRadius) -> None:
        self.shared = shared

    @property
    def client(self) -> Any:
        return self.shared.client

    @property
    def stats(self) -> dict[str, int]:
        return self.shared.client.stats

    def startService(self) -> None:  # noqa: N802 (Twisted)
        super().startService()
        self.shared.acquire()

    def stopService(self) -> defer.Deferred[None]:  # noqa: N802 (Twisted)
        super().stopService()
        return self.shared.release()


@implementer(IPoolAuthorizer)
class RadiusAuthorizerService(_RadiusService):
    """:class:`IPoolAuthorizer` from RADIUS reply attributes (cached,
    fetched by authorize-only) and an :class:`IService`."""

    def __init__(self, shared: SharedRadius, rules: Any = None) -> None:
        super().__init__(shared)
        self.authorizer = shared.authorizer.with_rules(rules)

    def __repr__(self) -> str:
        return f"<RADIUS authorizer {self.shared!r}>"

    def authorize(self, identity: str | None, groups: frozenset[str], action: str,
                  pool_handle: bytes) -> defer.Deferred[bool]:
        return self.authorizer.authorize(identity, groups, action, pool_handle)


@implementer(IChapVerifier)
class RadiusChapVerifierService(_RadiusService):
    """:class:`IChapVerifier` through RADIUS CHAP-Password/CHAP-Challenge
    and an :class:`IService`."""

    def __repr__(self) -> str:
        return f"<RADIUS CHAP verifier {self.shared!r}>"

    def verify_chap(self, identity: str, identifier: int, challenge: bytes,
                    response: bytes) -> defer.Deferred[Any]:
        return self.shared.verifier.verify_chap(identity, identifier, challenge, response)


# ---------------------------------------------------------------- builders


def _authorizer(options: Mapping[str, str], reactor: Any) -> RadiusAuthorizerService:
    rules = None
    path = options.get("rules", "").strip()
    if path:
        from rserpool.backends.filestore import RulesFileAuthorizer

        rules = RulesFileAuthorizer(path)
    return RadiusAuthorizerService(shared_radius(reactor, options), rules)


def _chap_verifier(options: Mapping[str, str], reactor: Any) -> RadiusChapVerifierService:
    return RadiusChapVerifierService(shared_radius(reactor, options))


radius_authorizer = BuiltinFactory(
    "authorizer", "radius",
    "RADIUS reply attributes (Class, Filter-Id, vendor attributes) by authorize-only or CHAP, cached",
    AUTHORIZER_OPTIONS, _authorizer)
radius_chap_verifier = BuiltinFactory(
    "chap-verifier", "radius", "CHAP checked by a RADIUS server (CHAP-Password, CHAP-Challenge)",
    RADIUS_OPTIONS, _chap_verifier)
