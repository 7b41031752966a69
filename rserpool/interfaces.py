"""The zope.interface contracts that rserpool's plugins, backends and shells implement.

Each interface is deliberately small: a backend provides only what it can
do (a RADIUS server verifies CHAP but cannot reveal a secret; a directory
stores SRP verifiers and groups; a rules file authorizes).  The registrar
composes them.  Plugins are checked against their kind's interface with
``zope.interface.verify.verifyObject`` when they are loaded.  See
``docs/plugins.md`` for how to write one and :mod:`rserpool.testing` for
fakes to test it with.

Conventions shared by every method here:

- Results come as a :class:`~twisted.internet.defer.Deferred` (a provider
  with a synchronous answer returns ``defer.succeed(value)``);
  :meth:`IPoolAuthorizer.authorize` may also return a plain ``bool``.
- "Unknown" is a value (``None``, ``False`` or an empty set), never an
  exception.
- A backend that cannot answer fails the Deferred with
  :class:`rserpool.errors.BackendUnavailable`.  Callers fail closed on it and
  log it as an outage, never as a wrong secret.
- Identities are ``str`` names (NFKC, printable, at most 255 characters);
  pool handles are ``bytes``.
"""

from __future__ import annotations

import types
from collections.abc import Mapping

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials
from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface

from rserpool.gate.facts import ACTIONS
from rserpool.identity import Identity

__all__ = [
    "ACTIONS",
    "KIND_INTERFACES",
    "KINDS",
    "IBackendFactory",
    "ICandidateSource",
    "ICertificateCredentials",
    "ICertificateMapping",
    "IChannelHandler",
    "IChapCredentials",
    "IChapSecretStore",
    "IChapVerifier",
    "IComposedFactory",
    "IGroupSource",
    "IIdentityChecker",
    "IPluginLoader",
    "IPoolAuthorizer",
    "IPskCredentials",
    "IPskKeyStore",
    "IRSerPoolPlugin",
    "ISessionApplication",
    "ISrpChecker",
    "ISrpCredentials",
    "ISrpVerifierStore",
    "IWatchedCandidateSource",
    "Identity",
]

# ------------------------------------------------------------------ providers


class IPoolAuthorizer(Interface):
    """May an identity do an action in a pool?  Default deny."""

    def authorize(identity, groups, action, pool_handle):  # type: ignore[no-untyped-def]
        """Decide one request.

        :param identity: the authenticated name (``str``), or ``None`` for an
            anonymous pool user (``resolve``) or an anonymous PE (only with
            the insecure ``allow_unauthenticated``).
        :param groups: ``frozenset[str]`` of the identity's groups.
        :param action: one of :data:`ACTIONS`: ``register``, ``deregister``,
            ``resolve`` (a PU resolving the handle), ``peer`` (an ENRP peer
            acting as a registrar of this cluster), ``admin`` (the
            operators' endpoint; ``pool_handle`` is ``b""`` for these two)
            or ``opaque-transport`` (register a PE whose user transport is
            an Opaque Transport, asked after ``register``).  An action the
            authorizer does not know is refused.
        :param pool_handle: the pool handle (``bytes``).
        :return: ``bool`` or a Deferred firing with one.  ``False`` is a
            refusal; a failure (:class:`~rserpool.errors.BackendUnavailable`)
            means no decision and is refused too, but logged as an outage.
        """


class ISrpVerifierStore(Interface):
    """Where SRP-6a verifiers live (file, directory)."""

    def srp_verifier(identity):  # type: ignore[no-untyped-def]
        """Deferred firing with ``(salt, verifier)`` (``bytes``, the verifier
        big-endian and padded to the group's length, as
        :func:`rserpool.security.srp.make_verifier` makes it) for the
        production group, or ``None`` for an unknown identity."""


class IChapSecretStore(Interface):
    """Where CHAP secrets live.  RFC 1994 needs the cleartext secret."""

    def chap_secret(identity):  # type: ignore[no-untyped-def]
        """Deferred firing with the secret (``bytes``) or ``None``."""


class IChapVerifier(Interface):
    """A backend that checks a CHAP response without revealing the secret
    (RADIUS: CHAP-Password and CHAP-Challenge)."""

    def verify_chap(identity, identifier, challenge, response):  # type: ignore[no-untyped-def]
        """Check ``response`` (16 bytes) to ``challenge`` with CHAP
        ``identifier`` (0-255) for ``identity``.

        :return: Deferred firing with an :class:`Identity` (its groups and
            attributes from the backend) when the response is right, ``None``
            when it is wrong or the identity unknown (the two must not be told
            apart), or failing with ``BackendUnavailable``.
        """


class ICertificateMapping(Interface):
    """Explicit certificate-to-identity mapping (by fingerprint or subject)."""

    def identity_for(certificate):  # type: ignore[no-untyped-def]
        """Deferred firing with the :class:`Identity` a *verified*
        ``cryptography.x509.Certificate`` stands for, or ``None`` when the
        mapping does not know it (the caller may then fall back to the
        certificate's own names)."""


class IPskKeyStore(Interface):
    """TLS-PSK keys (RFC 5355 section 4), looked up while OpenSSL waits:
    the answer must be synchronous."""

    def psk_key(identity):  # type: ignore[no-untyped-def]
        """The key (``bytes``) of ``identity``, or ``None`` when it has none."""


class IGroupSource(Interface):
    """Groups of an identity, for authorization rules (``@group``)."""

    def groups(identity):  # type: ignore[no-untyped-def]
        """Deferred firing with a ``frozenset[str]`` (empty when unknown)."""


# ------------------------------------------------------------- credentials


class ICertificateCredentials(ICredentials):
    """A client certificate the TLS layer has verified (chain, validity,
    CRLs); the certificate's OCSP check, when configured, has passed."""

    certificate = Attribute("the verified cryptography.x509.Certificate")
    der = Attribute("the certificate's DER bytes")
    fingerprint = Attribute("SHA-256 of the DER bytes, lower-case hex")
    policy = Attribute("IdentityPolicy naming the holder when no mapping does")


class IPskCredentials(ICredentials):
    """A TLS-PSK identity whose key the TLS handshake has proven."""

    identity = Attribute("the PSK identity (str)")


class IChapCredentials(ICredentials):
    """A CHAP response (RFC 1994) to a channel-bound challenge."""

    identity = Attribute("the claimed identity (str)")
    identifier = Attribute("CHAP identifier, 0-255")
    challenge = Attribute("the effective 16-byte challenge")
    response = Attribute("the 16-byte response")


class ISrpCredentials(ICredentials):
    """The client's answer (A, M1) in an SRP-6a run started by
    :meth:`ISrpChecker.challenge`."""

    identity = Attribute("the claimed identity (str)")
    server_proof = Attribute("M2 once verify() succeeded, else None")

    def verify():  # type: ignore[misc]
        """Check the proof; return the server proof M2 or raise SrpError."""


class IIdentityChecker(ICredentialsChecker):
    """A checker that can say more than a name: mechanism, groups, attributes."""

    def check(credentials):  # type: ignore[no-untyped-def]
        """Deferred firing with the :class:`Identity` the credentials prove;
        failing with ``UnauthorizedLogin`` (bad credentials) or
        ``BackendUnavailable`` (no answer)."""


class ISrpChecker(ICredentialsChecker):
    """The checker of SRP credentials: SRP needs a challenge from the
    verifier before the client can answer (docs/auth-exchanges.md)."""

    def challenge(identity, channel_binding):  # type: ignore[no-untyped-def]
        """Deferred firing with a :class:`rserpool.security.srp.SrpChallenge`
        (``salt``, ``server_public``) for ``identity`` on the channel whose
        binding is ``channel_binding``; an unknown identity gets a challenge
        too (fake salt and verifier).  ``BackendUnavailable`` when the store
        cannot answer.  The client's proof then goes to ``requestAvatarId``
        as ``SrpCredentials``."""


# ------------------------------------------------------------------ shells


class IChannelHandler(Interface):
    """What a :class:`rserpool.service.channel.Channel` reports to.  All
    methods are called on the reactor thread."""

    def channel_ready(channel):  # type: ignore[no-untyped-def]
        """The channel is up (after the TLS handshake when TLS is used)."""

    def message_received(channel, message, now):  # type: ignore[no-untyped-def]
        """A decoded ASAP or ENRP message."""

    def wire_error(channel, ppid, error, now):  # type: ignore[no-untyped-def]
        """A message that could not be decoded (``error.cause`` says why)."""

    def data_received(channel, ppid, payload, now):  # type: ignore[no-untyped-def]
        """Application data (a PPID other than ASAP's and ENRP's)."""

    def channel_closed(channel, reason):  # type: ignore[no-untyped-def]
        """The channel is gone; no more calls follow."""


class ICandidateSource(Interface):
    """Where a server hunt finds its registrars (static list, DNS, announces)."""

    def candidates():  # type: ignore[misc]
        """The ordered candidates of a round (a list, or a Deferred firing with one)."""


class IWatchedCandidateSource(ICandidateSource):
    """A candidate source that also tells of new candidates as they come
    (a registrar's announce), so a running hunt can try them at once."""

    def add_listener(listener):  # type: ignore[no-untyped-def]
        """Call ``listener(candidates)`` when new candidates are known."""

    def remove_listener(listener):  # type: ignore[no-untyped-def]
        """Stop calling ``listener``."""


class ISessionApplication(Interface):
    """What a PE's application implements to serve PU-PE sessions
    (``rserpool.service.pe_session.SessionServer``)."""

    def session_started(session):  # type: ignore[no-untyped-def]
        """A PU connected (TLS handshake done)."""

    def cookie_echoed(session, cookie):  # type: ignore[no-untyped-def]
        """The PU failed over to us and echoed this cookie (check it yourself)."""

    def business_card_received(session, pool_handle, pool_elements):  # type: ignore[no-untyped-def]
        """The PU (a PU/PE combination) sent its pool handle and failover order."""

    def data_received(session, payload):  # type: ignore[no-untyped-def]
        """Application data from the PU."""

    def session_ended(session, reason):  # type: ignore[no-untyped-def]
        """The connection is gone."""


# -------------------------------------------------------------------- plugins

#: Plugin kinds and the interface the object a factory builds must provide.
#: ``authenticator`` factories build twisted.cred checkers
#: (:class:`twisted.cred.checkers.ICredentialsChecker`; those that also
#: provide :class:`IIdentityChecker` give groups, an SRP one must provide
#: :class:`ISrpChecker`).
KINDS: tuple[str, ...] = (
    "authorizer",
    "srp-store",
    "chap-store",
    "chap-verifier",
    "cert-mapping",
    "groups",
    "authenticator",
)


def _kind_interfaces() -> Mapping[str, type[Interface]]:
    return types.MappingProxyType({
        "authorizer": IPoolAuthorizer,
        "srp-store": ISrpVerifierStore,
        "chap-store": IChapSecretStore,
        "chap-verifier": IChapVerifier,
        "cert-mapping": ICertificateMapping,
        "groups": IGroupSource,
        "authenticator": ICredentialsChecker,
    })


KIND_INTERFACES: Mapping[str, type[Interface]] = _kind_interfaces()


class IRSerPoolPlugin(IPlugin):
    """Anything rserpool discovers with :func:`rserpool.plugin.find_plugins`."""

    name = Attribute("Short name chosen in the configuration, e.g. 'file' (str).")
    kind = Attribute(f"What it builds: one of {', '.join(KINDS)} (str).")
    description = Attribute("One line for listings and error messages (str).")


class IBackendFactory(IRSerPoolPlugin):
    """A plugin object that builds a provider from configuration options.

    Importing the module that defines it must be cheap: do heavy imports and
    open files or sockets in :meth:`build`, not at module level.
    """

    def build(options, reactor):  # type: ignore[no-untyped-def]
        """Build the provider of ``KIND_INTERFACES[self.kind]``.

        :param options: ``Mapping[str, str]`` from the configuration (keys
            and meanings documented by the plugin).  Unknown keys must be
            rejected with ``ValueError``, so misspelt security options are
            never silently ignored.
        :param reactor: the reactor (also the clock) to use; never import the
            global one.
        :raise ValueError: bad or missing options.
        """


class IPluginLoader(Interface):
    """Builds plugins by kind and name (what :func:`rserpool.plugin.load_named`
    does), handed to a :class:`IComposedFactory` for its sub-plugins."""

    def load(kind, name, options):  # type: ignore[no-untyped-def]
        """The provider built by the ``kind`` plugin ``name`` with ``options``;
        ``PluginError`` when there is none or it cannot be built."""


class IComposedFactory(IBackendFactory):
    """A factory whose provider is built over other plugins (a checker over
    a verifier store, a mapping, a group source)."""

    def build(options, reactor, plugins):  # type: ignore[no-untyped-def]
        """As :meth:`IBackendFactory.build`; ``plugins`` (an
        :class:`IPluginLoader`) builds the sub-plugins the options name."""
