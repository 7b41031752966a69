"""Built-in rserpool plugins (embedded file backends and checkers).

Cheap to import: every ``build`` imports what it needs when it runs.

=============  ===============  ==============================================
kind           name             options
=============  ===============  ==============================================
authorizer     ``file``         ``rules`` (path of the rules file)
srp-store      ``file``         ``path`` (credentials file)
chap-store     ``file``         ``path``
cert-mapping   ``file``         ``path``
groups         ``file``         ``path``
authenticator  ``certificate``  ``mapping`` (cert-mapping plugin or ``none``),
                                ``groups`` (groups plugin or ``none``),
                                ``use_certificate_names`` (yes/no; default
                                no when a mapping is given)
authenticator  ``psk``          ``groups``
authenticator  ``chap``         ``backend`` (chap-store plugin) or
                                ``verifier`` (chap-verifier plugin), ``groups``
authenticator  ``srp``          ``store`` (srp-store plugin), ``groups``,
                                ``server_secret_file``
=============  ===============  ==============================================

The authenticators are :class:`~rserpool.interfaces.IComposedFactory`
plugins: their sub-plugins (stores, mappings, group sources) are built by
the loader they are given, from the same site directories.  A sub-plugin's
options are given with its role as prefix: ``mapping.path``,
``groups.path``, ``backend.path``...  Unknown options are errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from zope.interface import implementer

from rserpool.interfaces import IBackendFactory, IComposedFactory, IPluginLoader

__all__ = ["BuiltinFactory", "ComposedFactory"]


@implementer(IBackendFactory)
class BuiltinFactory:
    """An :class:`IBackendFactory` from a build function and its option names."""

    def __init__(self, kind: str, name: str, description: str, options: tuple[str, ...],
                 build: Callable[[Mapping[str, str], Any], Any], roles: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.name = name
        self.description = description
        self.options = options
        self.roles = roles  # prefixes of sub-plugin options
        self._build = build

    def __repr__(self) -> str:
        return f"<{self.kind} plugin {self.name!r}>"

    def _check_options(self, options: Mapping[str, str]) -> None:
        for key in options:
            prefix = key.split(".", 1)[0]
            if key not in self.options and not ("." in key and prefix in self.roles):
                known = ", ".join(list(self.options) + [f"{r}.*" for r in self.roles]) or "none"
                raise ValueError(f"unknown option {key!r} (known: {known})")

    def build(self, options: Mapping[str, str], reactor: Any) -> Any:
        self._check_options(options)
        return self._build(options, reactor)


@implementer(IComposedFactory)
class ComposedFactory(BuiltinFactory):
    """A :class:`BuiltinFactory` whose provider is built over sub-plugins."""

    def build(self, options: Mapping[str, str], reactor: Any, plugins: IPluginLoader | None = None) -> Any:
        if plugins is None:
            raise ValueError(f"the {self.kind} plugin {self.name!r} needs a plugin loader for its sub-plugins")
        self._check_options(options)
        return self._build(options, reactor, plugins)


def _required(options: Mapping[str, str], key: str) -> str:
    value = options.get(key, "").strip()
    if not value:
        raise ValueError(f"option {key!r} is required")
    return value


def _yes(options: Mapping[str, str], key: str, default: bool) -> bool:
    text = options.get(key)
    if text is None:
        return default
    if text.strip().lower() in ("1", "yes", "true", "on"):
        return True
    if text.strip().lower() in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"option {key!r} must be yes or no")


def _sub(plugins: IPluginLoader, options: Mapping[str, str], role: str, kind: str, default: str | None) -> Any:
    """Build the sub-plugin for ``role`` (``none`` or absent without default: None)."""
    name = options.get(role, default)
    if name is None or name.strip().lower() == "none":
        return None
    prefix = role + "."
    sub_options = {k[len(prefix):]: v for k, v in options.items() if k.startswith(prefix)}
    return plugins.load(kind, name.strip(), sub_options)


# ---------------------------------------------------------------- builders


def _rules_authorizer(options: Mapping[str, str], reactor: Any) -> Any:
    from rserpool.backends.filestore import RulesFileAuthorizer

    return RulesFileAuthorizer(_required(options, "rules"))


def _file_store(options: Mapping[str, str], reactor: Any) -> Any:
    from rserpool.backends.filestore import FileStore

    return FileStore.shared(_required(options, "path"))


def _certificate(options: Mapping[str, str], reactor: Any, plugins: IPluginLoader) -> Any:
    from rserpool.security.credentials import CertificateChecker

    mapping = _sub(plugins, options, "mapping", "cert-mapping", None)
    return CertificateChecker(
        mapping,
        _sub(plugins, options, "groups", "groups", None),
        # A configured mapping is authoritative unless told otherwise.
        use_certificate_names=_yes(options, "use_certificate_names", mapping is None),
    )


def _psk(options: Mapping[str, str], reactor: Any, plugins: IPluginLoader) -> Any:
    from rserpool.security.credentials import PskChecker

    return PskChecker(_sub(plugins, options, "groups", "groups", None))


def _chap(options: Mapping[str, str], reactor: Any, plugins: IPluginLoader) -> Any:
    from rserpool.security.credentials import ChapChecker

    if "verifier" in options and "backend" in options:
        raise ValueError("give either 'backend' (a chap-store) or 'verifier' (a chap-verifier)")
    if "verifier" in options:
        backend = _sub(plugins, options, "verifier", "chap-verifier", None)
    else:
        backend = _sub(plugins, options, "backend", "chap-store", "file")
    if backend is None:
        raise ValueError("the chap authenticator needs a backend or a verifier")
    return ChapChecker(backend, _sub(plugins, options, "groups", "groups", None))


def _srp(options: Mapping[str, str], reactor: Any, plugins: IPluginLoader) -> Any:
    import secrets

    from rserpool.security.credentials import SrpChecker

    store = _sub(plugins, options, "store", "srp-store", "file")
    if store is None:
        raise ValueError("the srp authenticator needs a store")
    secret_file = options.get("server_secret_file", "").strip()
    if secret_file:
        with open(secret_file, "rb") as handle:
            secret = handle.read(4096).strip()
        if len(secret) < 16:
            raise ValueError(f"{secret_file}: the server secret must be at least 16 bytes")
    else:
        secret = secrets.token_bytes(32)
    return SrpChecker(store, secret, _sub(plugins, options, "groups", "groups", None))


file_authorizer = BuiltinFactory(
    "authorizer", "file", "rules file: identities and @groups to pool-handle patterns, default deny",
    ("rules",), _rules_authorizer)
file_srp_store = BuiltinFactory(
    "srp-store", "file", "SRP verifiers from the embedded credentials file", ("path",), _file_store)
file_chap_store = BuiltinFactory(
    "chap-store", "file", "CHAP secrets from the embedded credentials file (mode 0600)", ("path",),
    _file_store)
file_cert_mapping = BuiltinFactory(
    "cert-mapping", "file", "certificate fingerprint or subject to identity, from the credentials file",
    ("path",), _file_store)
file_groups = BuiltinFactory(
    "groups", "file", "identity groups from the credentials file", ("path",), _file_store)
certificate_authenticator = ComposedFactory(
    "authenticator", "certificate", "TLS client certificate (scenario A), mapped or by its names",
    ("mapping", "groups", "use_certificate_names"), _certificate, ("mapping", "groups"))
psk_authenticator = ComposedFactory(
    "authenticator", "psk", "TLS-PSK identity proven by the handshake", ("groups",), _psk, ("groups",))
chap_authenticator = ComposedFactory(
    "authenticator", "chap", "CHAP (RFC 1994) inside TLS, against a secret store or a verifier",
    ("backend", "verifier", "groups"), _chap, ("backend", "verifier", "groups"))
srp_authenticator = ComposedFactory(
    "authenticator", "srp", "SRP-6a (RFC 5054 2048-bit group, SHA-256) inside TLS",
    ("store", "groups", "server_secret_file"), _srp, ("store", "groups"))
