"""LDAP backend: SRP verifiers, certificate mappings, groups and pools from a
directory (OpenLDAP, 389-DS, Active Directory...), through ldap3.

ldap3 is blocking, so it runs only on this backend's own bounded
:class:`~twisted.python.threadpool.ThreadPool`, started by :meth:`start`
(or ``startService``) and stopped by :meth:`stop` (or ``stopService``, and a
``shutdown`` system-event trigger, so that the process never hangs at exit).
Everything else (the cache, the deadline, the queue bound) runs on the
reactor.  See ``docs/ldap.md``.

- One shared service connection (``SAFE_SYNC``, thread-safe), bound as the
  configured service account, opened on first use and re-opened after a
  failure (one retry when a reused connection turns out broken).
- Connect and receive timeouts are always set (ldap3 takes the receive
  timeout in whole seconds: it is rounded up); on top of them, every request
  has a reactor-side deadline (``timeout``): a directory that is down, paused
  or slow makes the Deferred fail with :class:`LdapUnavailable` (a
  :class:`~rserpool.errors.BackendUnavailable`) within it.  "Not found" is a
  value (``None``, an empty set), never an exception.
- At most ``max_pending`` requests are in the pool (queued or running, a
  request abandoned at its deadline still counts until its thread returns);
  beyond that, a request fails at once with :class:`LdapOverloaded`.
- TLS (``ldaps://`` or StartTLS) verifies the server certificate against the
  configured CA (``ssl.CERT_REQUIRED``) and the URI's host name.
- Referrals are never followed (ldap3's ``auto_referrals`` off, no referral
  host allowed): the registrar talks to the configured URI only, and a
  referral answer makes the lookup fail with :class:`LdapUnavailable`.  Plaintext
  needs ``allow_plaintext=True`` and is logged as a warning.
- Identities are looked up, cached and returned in normalized form
  (:func:`rserpool.identity.normalize_identity`), the uid the directory
  answers for a certificate included.
- Filter values are escaped (RFC 4515) with ldap3's ``escape_filter_chars``;
  filter templates use ``{identity}``, ``{fingerprint}``, ``{subject}`` and
  ``{dn}`` placeholders, replaced textually (no ``str.format``).
- Results are cached (bounded LRU, ``cache_ttl`` seconds; unknown identities
  ``negative_cache_ttl``); concurrent lookups of one key share one request.
- The bind password and the verifiers are never logged or put in a repr.

The settings, errors, filter templates, DN parsing and entry reading are in
:mod:`rserpool.backends.ldap_schema` (re-exported here: this module is the
backend's public face); the pool authorizer and the ``[ldap]``
configuration are in :mod:`rserpool.backends.ldap_authz`.
"""

from __future__ import annotations

import math
import ssl
import threading
from collections import OrderedDict
from typing import Any, Callable, TypeVar

import ldap3
from cryptography import x509
from ldap3.core import exceptions as ldap_exceptions
from twisted.application.service import Service
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from rserpool.backends.ldap_schema import (
    MAX_VALUES,
    LdapEntry,
    LdapError,
    LdapOverloaded,
    LdapSchema,
    LdapTls,
    LdapUnavailable,
    entry_from_answer,
    fill_filter,
    group_name_from_dn,
    group_names,
    parse_uri,
    raw_values,
    search_result,
    text_values,
    valid_identity,
)
from rserpool.identity import normalize_identity
from rserpool.interfaces import (
    ICertificateMapping,
    IGroupSource,
    Identity,
    ISrpVerifierStore,
)
from rserpool.security.certidentity import fingerprint_sha256, normalize_fingerprint

__all__ = [
    "LdapDirectory",
    "LdapEntry",
    "LdapError",
    "LdapOverloaded",
    "LdapSchema",
    "LdapTls",
    "LdapUnavailable",
    "fill_filter",
    "group_name_from_dn",
]

_log = Logger()
T = TypeVar("T")

_LOG_INTERVAL = 10.0


class _Cache:
    """A bounded LRU of (expiry, value), on the reactor's clock."""

    def __init__(self, clock: Any, max_entries: int) -> None:
        if max_entries < 1:
            raise LdapError("cache size must be >= 1")
        self.clock = clock
        self.max_entries = max_entries
        self._data: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Any) -> tuple[bool, Any]:
        item = self._data.get(key)
        if item is None:
            return False, None
        if item[0] <= self.clock.seconds():
            del self._data[key]
            return False, None
        self._data.move_to_end(key)
        return True, item[1]

    def put(self, key: Any, value: Any, ttl: float) -> None:
        if ttl <= 0:
            return
        self._data[key] = (self.clock.seconds() + ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()


_COMMUNICATION_ERRORS = (
    ldap_exceptions.LDAPCommunicationError,
    ldap_exceptions.LDAPSocketOpenError,
    ldap_exceptions.LDAPSessionTerminatedByServerError,
    ldap_exceptions.LDAPStartTLSError,
    ldap_exceptions.LDAPCertificateError,
    ldap_exceptions.LDAPSSLConfigurationError,
    ldap_exceptions.LDAPResponseTimeoutError,
    OSError,
    ssl.SSLError,
)


@implementer(ISrpVerifierStore, ICertificateMapping, IGroupSource)
class LdapDirectory(Service):
    """The directory, as the registrar's SRP store, certificate mapping and
    group source (and the pools behind :class:`~rserpool.backends.ldap_authz.LdapAuthorizer`).

    ``connection_factory`` (tests) replaces opening and binding a real
    connection: a callable returning an open, bound ldap3 Connection.
    ``threadpool`` (tests) replaces the private ThreadPool; it is then not
    started or stopped here.
    """

    def __init__(
        self,
        reactor: Any,
        uri: str,
        bind_dn: str,
        bind_password: str,
        base_dn: str,
        *,
        schema: LdapSchema | None = None,
        tls: LdapTls | None = None,
        allow_plaintext: bool = False,
        connect_timeout: float = 2.0,
        receive_timeout: float = 2.0,
        timeout: float | None = None,
        pool_min: int = 1,
        pool_max: int = 4,
        max_pending: int | None = None,
        cache_ttl: float = 300.0,
        negative_cache_ttl: float = 30.0,
        max_cache: int = 10_000,
        connection_factory: Callable[[], Any] | None = None,
        threadpool: Any = None,
    ) -> None:
        self.reactor = reactor
        self.uri = uri
        self.host, self.port, self.ldaps = parse_uri(uri)
        if not bind_dn or not bind_password:
            raise LdapError("a service bind DN and password are required")
        self.bind_dn = bind_dn
        self._password = bind_password
        if not base_dn:
            raise LdapError("base_dn is required")
        self.base_dn = base_dn
        self.schema = schema or LdapSchema()
        self.tls = tls
        if tls is None and self.ldaps:
            raise LdapError("an ldaps:// URI needs TLS settings (ca_file)")
        self.encrypted = self.ldaps or (tls is not None and tls.starttls)
        if not self.encrypted and not allow_plaintext and connection_factory is None:
            raise LdapError("LDAP without TLS needs allow_plaintext (the service password and "
                            "the verifiers would cross the network in clear)")
        for name, value in (("connect_timeout", connect_timeout),
                            ("receive_timeout", receive_timeout)):
            if not value or value <= 0:
                raise LdapError(f"{name} must be > 0")
        self.connect_timeout = float(connect_timeout)
        self.receive_timeout = float(receive_timeout)
        # connect (+ StartTLS) + bind + up to two searches, once retried
        self.timeout = float(timeout) if timeout else (
            self.connect_timeout + 2 * self.receive_timeout)
        if not 1 <= pool_min <= pool_max:
            raise LdapError("need 1 <= pool_min <= pool_max")
        self.pool_min, self.pool_max = int(pool_min), int(pool_max)
        self.max_pending = int(max_pending) if max_pending else 8 * self.pool_max
        if self.max_pending < 1:
            raise LdapError("max_pending must be >= 1")
        self.cache_ttl = float(cache_ttl)
        self.negative_cache_ttl = float(negative_cache_ttl)
        self._cache = _Cache(reactor, int(max_cache))
        self._waiting: dict[Any, list[defer.Deferred[Any]]] = {}
        self._connection_factory = connection_factory
        self._own_pool = threadpool is None
        self._pool: Any = threadpool
        self._trigger: Any = None
        self._running = False
        self.pending = 0
        self._conn: Any = None
        self._lock = threading.Lock()
        self._last_log = -_LOG_INTERVAL
        self.plaintext_warning = not self.encrypted and connection_factory is None

    def __repr__(self) -> str:
        return f"<LdapDirectory {self.uri} as {self.bind_dn} base {self.base_dn}>"

    # ------------------------------------------------------------ lifecycle
    @property
    def started(self) -> bool:
        """Started by :meth:`start` (``running`` is the IService flag)."""
        return self._running

    def start(self) -> None:
        if self._running:
            return
        if self.plaintext_warning:
            _log.warn("LDAP to {uri} WITHOUT TLS (allow_plaintext): the service password and "
                      "SRP verifiers cross the network in clear", uri=self.uri)
        if self.tls is not None and not self.tls.verify:
            _log.warn("LDAP to {uri}: server certificate NOT verified (tls verify off)",
                      uri=self.uri)
        if self._own_pool:
            self._pool = ThreadPool(self.pool_min, self.pool_max, name="rserpool-ldap")
            self._pool.start()
            self._trigger = self.reactor.addSystemEventTrigger("during", "shutdown", self.stop)
        self._running = True

    def stop(self) -> None:
        """Stop the pool (waits for running requests, each bounded by its
        timeouts); pending Deferreds already fired at their deadline."""
        if not self._running:
            return
        self._running = False
        self._cache.clear()
        pool, trigger = self._pool, self._trigger
        self._trigger = None
        if trigger is not None:
            try:
                self.reactor.removeSystemEventTrigger(trigger)
            except (ValueError, KeyError):
                pass
        if self._own_pool and pool is not None:
            pool.callInThread(self._close)
            pool.stop()
            self._pool = None
        else:
            self._close()

    def startService(self) -> None:  # noqa: N802 (IService)
        Service.startService(self)
        self.start()

    def stopService(self) -> None:  # noqa: N802 (IService)
        Service.stopService(self)
        self.stop()

    def forget(self, identity: str | None = None) -> None:
        """Drop cached answers (all, or one identity's entry)."""
        if identity is None:
            self._cache.clear()
        else:
            self._cache._data.pop(("entry", normalize_identity(identity)), None)

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    # ----------------------------------------------------- in the threads
    def _open(self) -> Any:
        if self._connection_factory is not None:
            return self._connection_factory()
        tls = None
        if self.tls is not None:
            tls = ldap3.Tls(
                validate=ssl.CERT_REQUIRED if self.tls.verify else ssl.CERT_NONE,
                ca_certs_file=self.tls.ca_file,
                valid_names=list(self.tls.server_names) or None,
                sni=self.host,
            )
        # Referrals are never followed (ldap3 follows them to any host by
        # default, and binds there with the service DN and password): a
        # referral answer is an error like any other (LdapUnavailable).
        server = ldap3.Server(self.host, port=self.port, use_ssl=self.ldaps, tls=tls,
                              get_info=ldap3.NONE, connect_timeout=self.connect_timeout,
                              allowed_referral_hosts=[])
        conn = ldap3.Connection(
            server, user=self.bind_dn, password=self._password, auto_referrals=False,
            client_strategy=ldap3.SAFE_SYNC, auto_bind=ldap3.AUTO_BIND_NONE,
            receive_timeout=math.ceil(self.receive_timeout), read_only=True, raise_exceptions=False,
            check_names=False,
        )
        try:
            conn.open()
            if self.tls is not None and self.tls.starttls and not self.ldaps:
                if not conn.start_tls(read_server_info=False):
                    raise LdapUnavailable(f"StartTLS refused by {self.uri}: "
                                          f"{(conn.result or {}).get('description')}")
            outcome = conn.bind()
            status, result = (outcome[0], outcome[1]) if isinstance(outcome, tuple) else (
                outcome, conn.result)
            if not status:
                raise LdapUnavailable(
                    f"LDAP bind as {self.bind_dn} refused by {self.uri}: "
                    f"{(result or {}).get('description', 'unknown error')}")
        except BaseException:
            self._safe_unbind(conn)
            raise
        return conn

    @staticmethod
    def _safe_unbind(conn: Any) -> None:
        try:
            conn.unbind()
        except Exception:  # noqa: BLE001 - closing a broken connection
            pass

    def _close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            self._safe_unbind(conn)

    def _connection(self) -> tuple[Any, bool]:
        """(connection, reused)."""
        with self._lock:
            if self._conn is not None and not getattr(self._conn, "closed", False):
                return self._conn, True
            self._conn = self._open()
            return self._conn, False

    def _discard(self, conn: Any) -> None:
        with self._lock:
            if self._conn is conn:
                self._conn = None
        self._safe_unbind(conn)

    def _with_connection(self, what: str, job: Callable[[Any], T]) -> T:
        for attempt in (0, 1):
            try:
                conn, reused = self._connection()
            except LdapUnavailable:
                raise
            except _COMMUNICATION_ERRORS + (ldap_exceptions.LDAPException,) as exc:
                raise LdapUnavailable(f"LDAP {what}: cannot connect to {self.uri}: "
                                      f"{type(exc).__name__}: {exc}") from None
            try:
                return job(conn)
            except _COMMUNICATION_ERRORS as exc:
                self._discard(conn)
                if reused and attempt == 0:
                    continue
                raise LdapUnavailable(f"LDAP {what} on {self.uri}: "
                                      f"{type(exc).__name__}: {exc}") from None
            except ldap_exceptions.LDAPException as exc:
                raise LdapUnavailable(f"LDAP {what} on {self.uri}: "
                                      f"{type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")

    def _search(self, conn: Any, what: str, base: str, filter_text: str,
                attributes: list[str], size_limit: int) -> list[dict[str, Any]]:
        outcome = conn.search(base, filter_text, search_scope=ldap3.SUBTREE,
                              attributes=attributes, size_limit=size_limit,
                              time_limit=max(1, int(self.receive_timeout + 0.999)))
        result, entries = search_result(outcome, conn)
        code = result.get("result", 0)
        if code == 32:  # noSuchObject: the base is absent, so no entry
            return []
        if code == 4:  # sizeLimitExceeded
            raise LdapUnavailable(f"LDAP {what}: more than {size_limit - 1} entries match "
                                  f"(fix the directory or the filter)")
        if code != 0:
            raise LdapUnavailable(f"LDAP {what} on {self.uri} failed: "
                                  f"{result.get('description', code)} {result.get('message', '')}")
        return entries

    def _read_entry(self, identity: str) -> LdapEntry | None:
        schema = self.schema

        def job(conn: Any) -> LdapEntry | None:
            entries = self._search(conn, "entry lookup", self.base_dn,
                                   fill_filter(schema.user_filter, identity=identity),
                                   schema.attributes(), size_limit=2)
            if not entries:
                return None
            if len(entries) > 1:
                raise LdapUnavailable(f"LDAP: {len(entries)} entries match identity "
                                      f"{identity!r} (fix the directory or user_filter)")
            entry = entries[0]
            if schema.group_attribute:
                groups = group_names(
                    text_values(raw_values(entry, schema.group_attribute)), schema)
            else:
                found = self._search(conn, "group search", schema.group_base,
                                     fill_filter(schema.group_filter, dn=entry.get("dn", "")),
                                     [schema.group_name_attribute], size_limit=MAX_VALUES + 1)
                groups = group_names((group.get("dn", "") for group in found), schema)
            return entry_from_answer(entry, identity, schema, groups)

        return self._with_connection("entry lookup", job)

    def _read_certificate(self, fingerprint: str, subject: str) -> str | None:
        schema = self.schema

        def job(conn: Any) -> str | None:
            entries = self._search(
                conn, "certificate lookup", self.base_dn,
                fill_filter(schema.cert_filter, fingerprint=fingerprint, subject=subject),
                [schema.identity_attribute], size_limit=2)
            if not entries:
                return None
            if len(entries) > 1:
                raise LdapUnavailable("LDAP: several entries match one certificate "
                                      "(fix the directory or cert_filter)")
            names = text_values(raw_values(entries[0], schema.identity_attribute))
            name = normalize_identity(names[0]) if len(names) == 1 else None
            if name is None or not valid_identity(name):
                raise LdapUnavailable(f"LDAP: the entry for a certificate has no single "
                                      f"usable {schema.identity_attribute}")
            return name

        return self._with_connection("certificate lookup", job)

    # -------------------------------------------------------- the reactor
    def _submit(self, what: str, function: Callable[..., T], *args: Any) -> defer.Deferred[T]:
        if not self._running or self._pool is None:
            return defer.fail(LdapUnavailable(f"LDAP {what}: backend not started"))
        if self.pending >= self.max_pending:
            self._log_failure(LdapOverloaded("queue full"))
            return defer.fail(LdapOverloaded(
                f"LDAP {what}: {self.pending} requests pending (max_pending), not sent"))
        self.pending += 1
        outer: defer.Deferred[T] = defer.Deferred()

        def expire() -> None:
            if not outer.called:
                error = LdapUnavailable(f"LDAP {what}: no answer from {self.uri} within "
                                        f"{self.timeout:g} s")
                self._log_failure(error)
                outer.errback(error)

        timer = self.reactor.callLater(self.timeout, expire)

        def finished(result: Any) -> None:
            self.pending -= 1
            if timer.active():
                timer.cancel()
            if isinstance(result, Failure) and not result.check(LdapUnavailable):
                result = Failure(LdapUnavailable(
                    f"LDAP {what}: unexpected {result.type.__name__}: {result.value}"))
            if isinstance(result, Failure):
                self._log_failure(result.value)
            if outer.called:
                return None
            if isinstance(result, Failure):
                outer.errback(result)
            else:
                outer.callback(result)
            return None

        threads.deferToThreadPool(self.reactor, self._pool, function, *args).addBoth(finished)
        return outer

    def _log_failure(self, error: BaseException) -> None:
        now = self.reactor.seconds()
        if now - self._last_log >= _LOG_INTERVAL:
            self._last_log = now
            _log.warn("LDAP directory unavailable: {error}", error=str(error))

    def _cached(self, key: Any, negative: Callable[[Any], bool],
                fetch: Callable[[], defer.Deferred[Any]]) -> defer.Deferred[Any]:
        hit, value = self._cache.get(key)
        if hit:
            return defer.succeed(value)
        waiter: defer.Deferred[Any] = defer.Deferred()
        waiters = self._waiting.get(key)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        self._waiting[key] = [waiter]

        def done(result: Any) -> None:
            waiting = self._waiting.pop(key, [])
            if not isinstance(result, Failure):
                ttl = self.negative_cache_ttl if negative(result) else self.cache_ttl
                self._cache.put(key, result, ttl)
            for each in waiting:
                if isinstance(result, Failure):
                    each.errback(result)
                else:
                    each.callback(result)

        fetch().addBoth(done)
        return waiter

    # ------------------------------------------------------------ lookups
    def entry(self, identity: str) -> defer.Deferred[LdapEntry | None]:
        """The identity's entry (cached), or None when unknown.

        Looked up (and cached) by the normalized form of ``identity``
        (:mod:`rserpool.identity`): slapd matches ``uid`` without case and
        extra spaces, so every spelling it would take for one entry is that
        one identity here too."""
        identity = normalize_identity(identity)  # type: ignore[assignment]
        if identity is None or not valid_identity(identity):
            return defer.succeed(None)
        return self._cached(("entry", identity), lambda value: value is None,
                            lambda: self._submit("entry lookup", self._read_entry, identity))

    def srp_verifier(self, identity: str) -> defer.Deferred[tuple[bytes, bytes] | None]:
        """``(salt, verifier)`` or None (unknown identity, or no verifier)."""
        return self.entry(identity).addCallback(lambda e: None if e is None else e.srp)

    def groups(self, identity: str) -> defer.Deferred[frozenset[str]]:
        return self.entry(identity).addCallback(
            lambda e: frozenset() if e is None else e.groups)

    def pools(self, identity: str) -> defer.Deferred[tuple[str, ...]]:
        """Pool handle patterns from ``pools_attribute`` (empty when unknown)."""
        return self.entry(identity).addCallback(lambda e: () if e is None else e.pools)

    def identity_for_certificate(self, fingerprint: str,
                                 subject: str) -> defer.Deferred[str | None]:
        """The identity whose entry lists the certificate's SHA-256
        ``fingerprint`` (hex, any case or colons) or its ``subject``
        (RFC 4514), or None."""
        try:
            fingerprint = normalize_fingerprint(fingerprint)
        except ValueError:
            return defer.succeed(None)
        if not isinstance(subject, str) or len(subject) > 1024 or not subject.isprintable():
            return defer.succeed(None)
        return self._cached(
            ("cert", fingerprint, subject), lambda value: value is None,
            lambda: self._submit("certificate lookup", self._read_certificate,
                                 fingerprint, subject))

    def identity_for(self, certificate: x509.Certificate) -> defer.Deferred[Identity | None]:
        """:class:`ICertificateMapping`: the mapped :class:`Identity` with its
        directory groups, or None."""
        fingerprint = fingerprint_sha256(certificate)
        subject = certificate.subject.rfc4514_string()

        def mapped(name: str | None) -> Any:
            if name is None:
                return None

            def build(entry: LdapEntry | None) -> Identity:
                groups = entry.groups if entry is not None else frozenset()
                return Identity.create(name, "certificate", groups,
                                       {"fingerprint_sha256": fingerprint, "subject": subject,
                                        "mapped_by": "ldap"})

            return self.entry(name).addCallback(build)

        return self.identity_for_certificate(fingerprint, subject).addCallback(mapped)
