"""Public fakes for testing rserpool plugins and applications.

Each fake provides the real interface of :mod:`rserpool.interfaces` (or
twisted.cred's), so a site plugin author can test an authorizer or an
authenticator against the registrar's contracts without a directory, a
RADIUS server or a network.  ``tests/test_testing.py`` checks every one with
``zope.interface.verify.verifyObject``; ``docs/plugins.md`` shows a site
plugin tested with them.

- :class:`AllowAll` and :class:`ScriptedAuthorizer`: ``IPoolAuthorizer``;
- :class:`MemorySrpStore`, :class:`MemoryChapStore`,
  :class:`MemoryCertificateMapping`, :class:`MemoryGroups`: the credential
  stores, in memory (with a switch that makes them fail as an outage);
- :class:`MemoryChecker`: a twisted.cred checker of username/password
  credentials, for an authenticator plugin's unit tests;
- :func:`connected_channels`: two :class:`~rserpool.service.channel.Channel`
  objects connected back to back over in-memory transports, on a
  :class:`twisted.internet.task.Clock`;
- :func:`identified_channel`: the per-channel state of a ``RegistrarCore`` whose
  channel the gate opened with a given identity (for tests of code that
  reads the registrar: metrics, pages, the core itself).

Never use these in a deployment: ``AllowAll`` authorizes everything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from rserpool.errors import BackendUnavailable
from rserpool.identity import MECH_CERTIFICATE, Identity, normalize_identity
from rserpool.interfaces import (
    ICertificateMapping,
    IChannelHandler,
    IChapSecretStore,
    IGroupSource,
    IIdentityChecker,
    IPoolAuthorizer,
    ISrpVerifierStore,
)
from rserpool.security import srp as _srp

__all__ = [
    "AllowAll",
    "ChannelPair",
    "MemoryCertificateMapping",
    "MemoryChapStore",
    "MemoryChecker",
    "MemoryGroups",
    "MemorySrpStore",
    "RecordingHandler",
    "ScriptedAuthorizer",
    "connected_channels",
    "identified_channel",
]


# -- authorizers -------------------------------------------------------------------------------


@implementer(IPoolAuthorizer)
class AllowAll:
    """Says yes to everything and records what it was asked (tests only)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, str, bytes]] = []

    def authorize(self, identity: str | None, groups: frozenset[str], action: str,
                  pool_handle: bytes) -> bool:
        self.calls.append((identity, action, pool_handle))
        return True


@implementer(IPoolAuthorizer)
class ScriptedAuthorizer:
    """Answers from a script: ``answers[(identity, action, pool_handle)]``
    is True, False, or an exception to fail with (``BackendUnavailable`` for
    an outage); anything not in the script is refused.  With ``deferred``
    the answers come as Deferreds the test fires (``pending``)."""

    def __init__(self, answers: Mapping[tuple[str | None, str, bytes], Any] | None = None, *,
                 deferred: bool = False) -> None:
        self.answers = dict(answers or {})
        self.deferred = deferred
        self.calls: list[tuple[str | None, frozenset[str], str, bytes]] = []
        self.pending: list[tuple[defer.Deferred[bool], Any]] = []

    def authorize(self, identity: str | None, groups: frozenset[str], action: str,
                  pool_handle: bytes) -> bool | defer.Deferred[bool]:
        self.calls.append((identity, frozenset(groups), action, pool_handle))
        answer = self.answers.get((identity, action, pool_handle), False)
        if self.deferred:
            d: defer.Deferred[bool] = defer.Deferred()
            self.pending.append((d, answer))
            return d
        if isinstance(answer, BaseException):
            return defer.fail(answer)
        return answer is True

    def fire_pending(self) -> None:
        """Answer every Deferred handed out so far, in order."""
        pending, self.pending = self.pending, []
        for d, answer in pending:
            if isinstance(answer, BaseException):
                d.errback(answer)
            else:
                d.callback(answer is True)


# -- stores ------------------------------------------------------------------------------------


class _Memory:
    """Answers from memory; ``down`` (an exception) makes every call fail
    with it, as a backend outage (``BackendUnavailable`` by default)."""

    def __init__(self) -> None:
        self.down: BaseException | None = None
        self.asked: list[Any] = []

    def _answer(self, question: Any, value: Any) -> defer.Deferred[Any]:
        self.asked.append(question)
        if self.down is not None:
            return defer.fail(self.down)
        return defer.succeed(value)

    def fail(self, reason: str = "the store is down (test)") -> None:
        self.down = BackendUnavailable(reason)


@implementer(ISrpVerifierStore)
class MemorySrpStore(_Memory):
    """SRP verifiers made from passwords: ``MemorySrpStore({"pe1": "password"})``."""

    def __init__(self, passwords: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.entries: dict[str, tuple[bytes, bytes]] = {}
        for identity, password in (passwords or {}).items():
            self.add(identity, password)

    def add(self, identity: str, password: str) -> None:
        self.entries[identity] = _srp.make_verifier(identity, password)

    def srp_verifier(self, identity: str) -> defer.Deferred[tuple[bytes, bytes] | None]:
        return self._answer(identity, self.entries.get(identity))


@implementer(IChapSecretStore)
class MemoryChapStore(_Memory):
    """CHAP secrets: ``MemoryChapStore({"pe1": b"secret"})``."""

    def __init__(self, secrets: Mapping[str, bytes] | None = None) -> None:
        super().__init__()
        self.secrets = dict(secrets or {})

    def chap_secret(self, identity: str) -> defer.Deferred[bytes | None]:
        return self._answer(identity, self.secrets.get(identity))


@implementer(ICertificateMapping)
class MemoryCertificateMapping(_Memory):
    """Certificates (by SHA-256 fingerprint, lower-case hex) to identities."""

    def __init__(self, identities: Mapping[str, Identity] | None = None) -> None:
        super().__init__()
        self.identities = dict(identities or {})

    def identity_for(self, certificate: Any) -> defer.Deferred[Identity | None]:
        from cryptography.hazmat.primitives import hashes

        fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
        return self._answer(fingerprint, self.identities.get(fingerprint))


@implementer(IGroupSource)
class MemoryGroups(_Memory):
    """Groups per identity: ``MemoryGroups({"pe1": {"echo-servers"}})``."""

    def __init__(self, groups: Mapping[str, Iterable[str]] | None = None) -> None:
        super().__init__()
        self.group_map = {identity: frozenset(names) for identity, names in (groups or {}).items()}

    def groups(self, identity: str) -> defer.Deferred[frozenset[str]]:
        return self._answer(identity, self.group_map.get(identity, frozenset()))


# -- a checker ---------------------------------------------------------------------------------


@implementer(ICredentialsChecker, IIdentityChecker)
class MemoryChecker:
    """Username/password credentials (``twisted.cred.credentials.UsernamePassword``)
    checked against a dict: the shape of a site authenticator, for tests of
    code that takes any ``ICredentialsChecker``."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, passwords: Mapping[str, bytes], mechanism: str = "password",
                 groups: Mapping[str, Iterable[str]] | None = None) -> None:
        self.passwords = dict(passwords)
        self.mechanism = mechanism
        self.group_map = {k: frozenset(v) for k, v in (groups or {}).items()}
        self.down: BaseException | None = None

    def check(self, credentials: Any) -> defer.Deferred[Identity]:
        if self.down is not None:
            return defer.fail(self.down)
        name = credentials.username
        name = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
        identity = normalize_identity(name)
        known = self.passwords.get(identity) if identity is not None else None
        if known is None or not credentials.checkPassword(known):
            return defer.fail(UnauthorizedLogin("bad credentials"))
        return defer.succeed(Identity.create(identity, self.mechanism, self.group_map.get(identity, ())))

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[str]:  # noqa: N802 (twisted.cred)
        return self.check(credentials).addCallback(lambda identity: identity.name)


# -- channels ----------------------------------------------------------------------------------


@implementer(IChannelHandler)
class RecordingHandler:
    """An ``IChannelHandler`` that records what its channel reports."""

    def __init__(self) -> None:
        self.ready: list[Any] = []
        self.messages: list[Any] = []
        self.errors: list[Any] = []
        self.data: list[tuple[int, bytes]] = []
        self.closed: list[Any] = []

    def channel_ready(self, channel: Any) -> None:
        self.ready.append(channel)

    def message_received(self, channel: Any, message: Any, now: float) -> None:
        self.messages.append(message)

    def wire_error(self, channel: Any, ppid: int, error: Any, now: float) -> None:
        self.errors.append(error)

    def data_received(self, channel: Any, ppid: int, payload: bytes, now: float) -> None:
        self.data.append((ppid, payload))

    def channel_closed(self, channel: Any, reason: Any) -> None:
        self.closed.append(reason)


class ChannelPair:
    """Two channels connected back to back in memory (no TLS): call
    :meth:`flush` to deliver what each wrote to the other, :meth:`advance`
    to move the shared clock."""

    def __init__(self, client: Any, server: Any, clock: Clock) -> None:
        self.client = client
        self.server = server
        self.clock = clock

    def flush(self, rounds: int = 10) -> None:
        for _ in range(rounds):
            moved = False
            for sender, receiver in ((self.client, self.server), (self.server, self.client)):
                data = sender.transport.value()
                if data:
                    sender.transport.clear()
                    receiver.dataReceived(data)
                    moved = True
            if not moved:
                return

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.flush()


def connected_channels(client_handler: Any = None, server_handler: Any = None, *,
                       settings: Any = None, clock: Clock | None = None) -> ChannelPair:
    """A :class:`ChannelPair`: the client channel initiates the TCP mapping,
    both are ready (their handlers got ``channel_ready``); handlers default
    to :class:`RecordingHandler`."""
    from rserpool.service.channel import Channel, ChannelSettings

    clock = clock or Clock()
    settings = settings or ChannelSettings()
    client = Channel(client_handler or RecordingHandler(), clock, settings, tls=False, initiator=True)
    server = Channel(server_handler or RecordingHandler(), clock, settings, tls=False)
    client.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40001)))
    server.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 3864)))
    pair = ChannelPair(client, server, clock)
    pair.flush()
    return pair


def identified_channel(core: Any, address: str = "127.0.0.1", identity: str | None = None, *,
                       tls: bool = True, mechanism: str = MECH_CERTIFICATE, now: float = 0.0) -> Any:
    """An ``AsapChannelState`` of ``core`` (a ``RegistrarCore``) on a channel from
    ``address`` that the gate opened with ``identity`` (proven by
    ``mechanism``; None: anonymous)."""
    from rserpool.gate import DOOR_ASAP

    admission = core.gate.open_channel(DOOR_ASAP, address, tls, now)
    if admission is None:
        raise RuntimeError("the gate refused the connection (its connection limits)")
    core.gate.identified(admission, None if identity is None else Identity(identity, mechanism), now)
    return core.open_channel(object(), admission)
