"""Unit tests of rserpool.backends.ldap: ldap3's MOCK_SYNC directory, a
synchronous (or held) stand-in for the thread pool and a task.Clock, so
everything is deterministic.  The real slapd is in
test_backends_ldap_integration.py."""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any, Callable

import ldap3
import pytest
from ldap3.core.exceptions import LDAPSessionTerminatedByServerError, LDAPSocketOpenError
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from rserpool.backends.ldap import (
    LdapDirectory,
    LdapError,
    LdapOverloaded,
    LdapSchema,
    LdapTls,
    LdapUnavailable,
    fill_filter,
)
from rserpool.errors import BackendUnavailable
from rserpool.interfaces import ICertificateMapping, IGroupSource, ISrpVerifierStore
from rserpool.security import pki
from rserpool.security.certidentity import fingerprint_sha256
from rserpool.security.srp import make_verifier

BASE = "dc=rserpool,dc=test"
SVC_DN = f"uid=enrp-svc,ou=services,{BASE}"
SVC_PW = "svc-secret-do-not-log"
PE1_DN = f"uid=pe1,ou=elements,{BASE}"
PE2_DN = f"uid=pe2,ou=elements,{BASE}"
HOSTILE = "*)(uid=*"
HOSTILE_DN = f"uid=\\2a\\29\\28uid\\3d\\2a,ou=elements,{BASE}"
SALT, VERIFIER = make_verifier("pe1", "pe1-secret", salt=bytes(range(16)))
FINGERPRINT = "ab" * 32


class ThreadlessClock(Clock):
    """A Clock that also takes ``callFromThread`` (runs it at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.triggers: list[tuple[Any, ...]] = []

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:  # noqa: N802
        f(*args, **kw)

    def addSystemEventTrigger(self, phase: str, event: str, f: Any, *a: Any) -> Any:  # noqa: N802
        handle = (phase, event, f)
        self.triggers.append(handle)
        return handle

    def removeSystemEventTrigger(self, handle: Any) -> None:  # noqa: N802
        self.triggers.remove(handle)


class SyncPool:
    """Runs each job at once, in the caller's thread."""

    def __init__(self) -> None:
        self.jobs = 0

    def callInThreadWithCallback(  # noqa: N802 (ThreadPool's name)
            self, on_result: Any, f: Any, *args: Any, **kw: Any) -> None:
        self.jobs += 1
        try:
            result = f(*args, **kw)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)


class HeldPool(SyncPool):
    """Keeps jobs until ``run_all()``."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[Any, ...]] = []

    def callInThreadWithCallback(  # noqa: N802 (ThreadPool's name)
            self, on_result: Any, f: Any, *args: Any, **kw: Any) -> None:
        self.held.append((on_result, f, args, kw))

    def run_all(self) -> None:
        held, self.held = self.held, []
        for on_result, f, args, kw in held:
            SyncPool.callInThreadWithCallback(self, on_result, f, *args, **kw)


def mock_connection(extra: Callable[[Any], None] | None = None) -> Any:
    server = ldap3.Server("mock", get_info=ldap3.NONE)
    conn = ldap3.Connection(server, user=SVC_DN, password=SVC_PW,
                            client_strategy=ldap3.MOCK_SYNC, check_names=False)
    add = conn.strategy.add_entry
    add(SVC_DN, {"objectClass": ["account"], "uid": "enrp-svc", "userPassword": SVC_PW})
    add(PE1_DN, {"objectClass": ["account", "rserpoolPoolElement"], "uid": "pe1",
                 "rserpoolSrpSalt": SALT, "rserpoolSrpVerifier": VERIFIER,
                 "rserpoolCertFingerprint": FINGERPRINT,
                 "memberOf": [f"cn=echo,ou=pools,{BASE}", f"cn=discard,ou=pools,{BASE}",
                              f"cn=staff,ou=other,{BASE}"]})
    add(PE2_DN, {"objectClass": ["account", "rserpoolPoolElement"], "uid": "pe2",
                 "rserpoolPool": ["echo", "hex:ff*"],
                 "rserpoolCertSubject": "CN=pe2,O=rserpool",
                 "memberOf": [f"cn=echo,ou=pools,{BASE}"]})
    add(HOSTILE_DN, {"objectClass": ["account", "rserpoolPoolElement"], "uid": HOSTILE})
    add(f"cn=echo,ou=pools,{BASE}", {"objectClass": ["groupOfNames"], "cn": "echo",
                                      "member": [PE1_DN, PE2_DN]})
    add(f"cn=discard,ou=pools,{BASE}", {"objectClass": ["groupOfNames"], "cn": "discard",
                                         "member": [PE1_DN]})
    if extra is not None:
        extra(conn)
    assert conn.bind()
    return conn


class CountingFactory:
    """A connection factory counting opens and searches; can fail on demand."""

    def __init__(self) -> None:
        self.opens = 0
        self.searches = 0
        self.fail_open: list[BaseException] = []
        self.fail_search: list[BaseException] = []
        self.connections: list[Any] = []

    def __call__(self) -> Any:
        self.opens += 1
        if self.fail_open:
            raise self.fail_open.pop(0)
        conn = mock_connection()
        original = conn.search

        def search(*args: Any, **kw: Any) -> Any:
            self.searches += 1
            if self.fail_search:
                raise self.fail_search.pop(0)
            return original(*args, **kw)

        conn.search = search
        self.connections.append(conn)
        return conn


def make(pool: Any = None, factory: Any = None,
         **kwargs: Any) -> tuple[LdapDirectory, ThreadlessClock]:
    clock = ThreadlessClock()
    directory = LdapDirectory(clock, "ldap://127.0.0.1:1", SVC_DN, SVC_PW, BASE,
                              connection_factory=factory or CountingFactory(),
                              threadpool=pool or SyncPool(), **kwargs)
    directory.start()
    return directory, clock


def result_of(d: defer.Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def failure_of(d: defer.Deferred[Any]) -> Failure:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box and isinstance(box[0], Failure), f"expected a failure, got {box}"
    return box[0]


# ------------------------------------------------------------------ lookups

def test_provides_the_interfaces() -> None:
    directory, _ = make()
    assert ISrpVerifierStore.providedBy(directory)
    assert IGroupSource.providedBy(directory)
    assert ICertificateMapping.providedBy(directory)


def test_srp_verifier_groups_and_pools() -> None:
    directory, _ = make()
    assert result_of(directory.srp_verifier("pe1")) == (SALT, VERIFIER)
    assert result_of(directory.groups("pe1")) == frozenset({"echo", "discard", "staff"})
    assert result_of(directory.pools("pe2")) == ("echo", "hex:ff*")
    assert result_of(directory.srp_verifier("pe2")) is None  # entry without a verifier
    entry = result_of(directory.entry("pe1"))
    assert entry.dn == PE1_DN and entry.pools == ()


def test_groups_only_under_group_base() -> None:
    directory, _ = make(schema=LdapSchema(group_base=f"ou=pools,{BASE}"))
    assert result_of(directory.groups("pe1")) == frozenset({"echo", "discard"})


def test_groups_by_member_search() -> None:
    factory = CountingFactory()
    directory, _ = make(factory=factory,
                        schema=LdapSchema(group_attribute="", group_base=f"ou=pools,{BASE}"))
    assert result_of(directory.groups("pe1")) == frozenset({"echo", "discard"})
    assert result_of(directory.groups("pe2")) == frozenset({"echo"})
    assert factory.searches == 4  # entry + group search, each


def test_unknown_identity() -> None:
    directory, _ = make()
    assert result_of(directory.srp_verifier("nobody")) is None
    assert result_of(directory.groups("nobody")) == frozenset()
    assert result_of(directory.pools("nobody")) == ()
    assert result_of(directory.entry("")) is None
    assert result_of(directory.entry("bad\x00name")) is None
    assert result_of(directory.entry("x" * 256)) is None


def test_filter_values_are_escaped() -> None:
    text = fill_filter("(&(objectClass=x)(uid={identity}))", identity=HOSTILE)
    assert text == "(&(objectClass=x)(uid=\\2a\\29\\28uid=\\2a))"
    assert fill_filter("(member={dn})", dn="cn=a\\,b") == "(member=cn=a\\5c,b)"
    assert fill_filter("(uid={identity})", identity="a\x00b") == "(uid=a\\00b)"


def test_hostile_identity_matches_only_itself() -> None:
    directory, _ = make()
    entry = result_of(directory.entry(HOSTILE))
    assert entry is not None and entry.identity == HOSTILE and entry.dn == HOSTILE_DN
    assert result_of(directory.entry("*")) is None
    assert result_of(directory.entry("pe*")) is None
    assert result_of(directory.srp_verifier("pe1)(uid=*")) is None


def test_ambiguous_entry_is_unavailable_not_unknown() -> None:
    directory, _ = make(schema=LdapSchema(user_filter="(|(uid=pe1)(uid=pe2)(uid={identity}))"))
    failure = failure_of(directory.entry("pe1"))
    assert failure.check(LdapUnavailable)
    assert "2 entries" in str(failure.value)


def test_certificate_mapping_by_fingerprint_and_subject() -> None:
    directory, _ = make()
    assert result_of(directory.identity_for_certificate(FINGERPRINT.upper(), "CN=x")) == "pe1"
    assert result_of(directory.identity_for_certificate("cd" * 32, "CN=pe2,O=rserpool")) == "pe2"
    assert result_of(directory.identity_for_certificate("cd" * 32, "CN=other")) is None
    assert result_of(directory.identity_for_certificate("not hex", "CN=pe2,O=rserpool")) is None
    assert result_of(directory.identity_for_certificate("cd" * 32, "*")) is None


def test_identity_for_a_certificate() -> None:
    now = dt.datetime.now(dt.timezone.utc)
    ca = pki.create_ca("unit CA", now)
    cert = pki.create_client_certificate(ca, "pe9", now).certificate
    fingerprint = fingerprint_sha256(cert)

    def add(conn: Any) -> None:
        conn.strategy.add_entry(f"uid=pe9,ou=elements,{BASE}", {
            "objectClass": ["account", "rserpoolPoolElement"], "uid": "pe9",
            "rserpoolCertFingerprint": fingerprint,
            "memberOf": [f"cn=echo,ou=pools,{BASE}"]})

    directory, _ = make(factory=lambda: mock_connection(add))
    identity = result_of(directory.identity_for(cert))
    assert identity.name == "pe9" and identity.mechanism == "certificate"
    assert identity.groups == frozenset({"echo"})
    assert identity.attributes["fingerprint_sha256"] == (fingerprint,)
    other = pki.create_client_certificate(ca, "pe10", now).certificate
    assert result_of(directory.identity_for(other)) is None


# -------------------------------------------------------------------- cache

def test_cache_hits_and_expiry() -> None:
    factory = CountingFactory()
    directory, clock = make(factory=factory, cache_ttl=60, negative_cache_ttl=5)
    for _ in range(3):
        assert result_of(directory.srp_verifier("pe1")) == (SALT, VERIFIER)
        assert result_of(directory.groups("pe1"))  # same cached entry
    assert factory.searches == 1
    clock.advance(59)
    result_of(directory.pools("pe1"))
    assert factory.searches == 1
    clock.advance(1)
    result_of(directory.pools("pe1"))
    assert factory.searches == 2


def test_negative_results_cached_shorter() -> None:
    factory = CountingFactory()
    directory, clock = make(factory=factory, cache_ttl=60, negative_cache_ttl=5)
    assert result_of(directory.entry("nobody")) is None
    assert result_of(directory.entry("nobody")) is None
    assert factory.searches == 1
    clock.advance(5)
    assert result_of(directory.entry("nobody")) is None
    assert factory.searches == 2


def test_failures_are_not_cached() -> None:
    factory = CountingFactory()
    directory, _ = make(factory=factory)
    factory.fail_open.append(LDAPSocketOpenError("connection refused"))
    assert failure_of(directory.entry("pe1")).check(LdapUnavailable)
    assert result_of(directory.entry("pe1")) is not None
    assert factory.opens == 2


def test_cache_is_bounded_lru() -> None:
    factory = CountingFactory()
    directory, _ = make(factory=factory, max_cache=2)
    for name in ("pe1", "pe2", "pe1", "nobody"):
        result_of(directory.entry(name))
    assert directory.cache_size == 2
    searches = factory.searches
    result_of(directory.entry("pe1"))  # most recently used: kept
    assert factory.searches == searches
    result_of(directory.entry("pe2"))  # evicted
    assert factory.searches == searches + 1


def test_concurrent_lookups_share_one_request() -> None:
    pool = HeldPool()
    factory = CountingFactory()
    directory, _ = make(pool=pool, factory=factory)
    waiting = [directory.srp_verifier("pe1") for _ in range(5)]
    assert len(pool.held) == 1 and directory.pending == 1
    pool.run_all()
    assert [result_of(d) for d in waiting] == [(SALT, VERIFIER)] * 5
    assert directory.pending == 0


def test_forget() -> None:
    factory = CountingFactory()
    directory, _ = make(factory=factory)
    result_of(directory.entry("pe1"))
    directory.forget("pe1")
    result_of(directory.entry("pe1"))
    assert factory.searches == 2
    directory.forget()
    assert directory.cache_size == 0


# ------------------------------------------------- failures and the queue

def test_deadline_fails_with_backend_unavailable() -> None:
    pool = HeldPool()
    directory, clock = make(pool=pool, connect_timeout=1, receive_timeout=1, timeout=0.5)
    d = directory.srp_verifier("pe1")
    clock.advance(0.49)
    assert not d.called
    clock.advance(0.01)
    failure = failure_of(d)
    assert failure.check(LdapUnavailable) and failure.check(BackendUnavailable)
    assert "within 0.5 s" in str(failure.value)
    assert directory.pending == 1  # the thread has not returned yet
    pool.run_all()  # a late answer is dropped quietly
    assert directory.pending == 0
    assert directory.cache_size == 0


def test_default_deadline_covers_connect_and_two_receives() -> None:
    directory, _ = make(connect_timeout=1.5, receive_timeout=2)
    assert directory.timeout == 5.5


def test_queue_bound_fails_fast() -> None:
    pool = HeldPool()
    directory, _ = make(pool=pool, max_pending=2)
    first, second = directory.entry("pe1"), directory.entry("pe2")
    third = directory.entry("nobody")
    assert third.called and failure_of(third).check(LdapOverloaded)
    assert not first.called and not second.called
    pool.run_all()
    assert result_of(first).identity == "pe1" and result_of(second).identity == "pe2"
    fourth = directory.entry("nobody")  # room again
    pool.run_all()
    assert result_of(fourth) is None


def test_broken_reused_connection_is_retried_once() -> None:
    factory = CountingFactory()
    directory, _ = make(factory=factory)
    result_of(directory.entry("pe1"))
    factory.fail_search.append(LDAPSessionTerminatedByServerError("closed"))
    assert result_of(directory.entry("pe2")).identity == "pe2"
    assert factory.opens == 2


def test_fresh_connection_failure_is_not_retried() -> None:
    factory = CountingFactory()
    directory, _ = make(factory=factory)
    factory.fail_search.append(socket.timeout("timed out"))
    failure = failure_of(directory.entry("pe1"))
    assert failure.check(LdapUnavailable) and "timed out" in str(failure.value)
    assert factory.opens == 1
    assert result_of(directory.entry("pe1")) is not None  # reconnects
    assert factory.opens == 2


def test_not_started_or_stopped() -> None:
    directory, _ = make()
    directory.stop()
    assert failure_of(directory.entry("pe1")).check(LdapUnavailable)


def test_real_connection_refused_is_unavailable_and_password_not_logged() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends
    clock = ThreadlessClock()
    directory = LdapDirectory(clock, f"ldap://127.0.0.1:{port}", SVC_DN, SVC_PW, BASE,
                              allow_plaintext=True, connect_timeout=1, receive_timeout=1,
                              threadpool=SyncPool())
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        directory.start()
        failure = failure_of(directory.entry("pe1"))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert failure.check(LdapUnavailable)
    assert "cannot connect" in str(failure.value)
    assert any("unavailable" in str(e.get("log_format", "")) for e in events)
    text = repr(events) + str(failure.value) + repr(directory)
    assert SVC_PW not in text


def test_secrets_not_in_reprs() -> None:
    directory, _ = make()
    entry = result_of(directory.entry("pe1"))
    assert SVC_PW not in repr(directory)
    assert VERIFIER.hex()[:16] not in repr(entry) and repr(VERIFIER)[:20] not in repr(entry)
    assert "salt" not in repr(entry)


# ---------------------------------------------------------------- lifecycle

def test_thread_pool_started_and_stopped() -> None:
    clock = ThreadlessClock()
    directory = LdapDirectory(clock, "ldap://127.0.0.1:1", SVC_DN, SVC_PW, BASE,
                              allow_plaintext=True, pool_min=1, pool_max=3)
    assert directory._pool is None and not clock.triggers
    directory.startService()
    pool = directory._pool
    assert isinstance(pool, ThreadPool) and pool.started and pool.max == 3
    assert directory.started and clock.triggers == [("during", "shutdown", directory.stop)]
    directory.stopService()
    assert not pool.started and pool.joined
    assert not any(thread.is_alive() for thread in pool.threads)
    assert not directory.started and clock.triggers == []
    directory.stop()  # idempotent
    directory.start()  # and restartable
    assert directory._pool is not pool and directory._pool.started
    directory.stop()
    assert directory._pool is None


def test_lifecycle_with_a_borrowed_pool_leaves_it_alone() -> None:
    pool = SyncPool()
    directory, clock = make(pool=pool)
    assert clock.triggers == []
    directory.stop()
    assert directory._pool is pool


# ------------------------------------------------------------ configuration

@pytest.mark.parametrize("kwargs, message", [
    ({"uri": "http://x"}, "ldap:// or ldaps://"),
    ({"uri": "ldap://"}, "without a host"),
    ({"bind_password": ""}, "password"),
    ({"base_dn": ""}, "base_dn"),
    ({"allow_plaintext": False}, "allow_plaintext"),
    ({"uri": "ldaps://127.0.0.1"}, "needs TLS"),
    ({"connect_timeout": 0}, "connect_timeout"),
    ({"receive_timeout": -1}, "receive_timeout"),
    ({"pool_min": 3, "pool_max": 2}, "pool_min"),
])
def test_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    args = {"uri": "ldap://127.0.0.1", "bind_dn": SVC_DN, "bind_password": SVC_PW,
            "base_dn": BASE, "allow_plaintext": True}
    args.update(kwargs)
    with pytest.raises(LdapError, match=message):
        LdapDirectory(Clock(), args.pop("uri"), args.pop("bind_dn"), args.pop("bind_password"),
                      args.pop("base_dn"), **args)


def test_tls_settings() -> None:
    directory = LdapDirectory(Clock(), "ldap://127.0.0.1", SVC_DN, SVC_PW, BASE,
                              tls=LdapTls("/ca.pem"))
    assert directory.encrypted and not directory.plaintext_warning
    assert LdapDirectory(Clock(), "ldaps://h:1636", SVC_DN, SVC_PW, BASE,
                         tls=LdapTls("/ca.pem", starttls=False)).port == 1636


def test_example_ldif_verifier_is_for_the_documented_password() -> None:
    import base64
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "etc" / "ldap" / "example.ldif").read_text()
    unfolded = text.replace("\n ", "")
    values = {}
    for line in unfolded.splitlines():
        for name in ("rserpoolSrpSalt", "rserpoolSrpVerifier"):
            if line.startswith(name + ":: "):
                values[name] = base64.b64decode(line.split(":: ", 1)[1])
    salt = values["rserpoolSrpSalt"]
    assert make_verifier("pe1", "pe1-secret", salt=salt) == (salt, values["rserpoolSrpVerifier"])
