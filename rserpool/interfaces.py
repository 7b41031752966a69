"""The zope.interface contracts that rserpool's backends and plugins implement.

Each interface is deliberately small: a backend provides only what it can
do (a RADIUS server verifies CHAP but cannot reveal a secret; a directory
stores SRP verifiers and groups; a rules file authorizes).  The registrar
composes them.  See ``docs/plugins.md`` for how to write one.

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

from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface

from rserpool.identity import Identity

__all__ = [
    "ACTIONS",
    "KIND_INTERFACES",
    "KINDS",
    "IBackendFactory",
    "ICertificateMapping",
    "IChapSecretStore",
    "IChapVerifier",
    "IGroupSource",
    "IPoolAuthorizer",
    "IPskKeyStore",
    "IRSerPoolPlugin",
    "ISrpVerifierStore",
    "Identity",
]

#: What an authorizer is asked about (``rserpool.security.authz`` rules).
ACTIONS: tuple[str, ...] = ("register", "deregister", "resolve", "peer", "admin")

# ------------------------------------------------------------------ providers


class IPoolAuthorizer(Interface):
    """May an identity do an action in a pool?  Default deny."""

    def authorize(identity, groups, action, pool_handle):  # type: ignore[no-untyped-def]
        """Decide one request.

        :param identity: the authenticated name (``str``), or ``None`` for an
            anonymous pool user (only ever asked with ``resolve``).
        :param groups: ``frozenset[str]`` of the identity's groups.
        :param action: one of :data:`ACTIONS`: ``register``, ``deregister``,
            ``resolve`` (a PU resolving the handle), ``peer`` (a registrar
            acting as an ENRP peer; ``pool_handle`` is then ``b""``) or ``admin``
            (an operator or Prometheus reading the admin endpoint;
            ``pool_handle`` is ``b""``).
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


# -------------------------------------------------------------------- plugins

#: Plugin kinds and the interface the object a factory builds must provide.
#: ``authenticator`` factories build twisted.cred checkers
#: (:class:`twisted.cred.checkers.ICredentialsChecker`).
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
    from twisted.cred.checkers import ICredentialsChecker

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
