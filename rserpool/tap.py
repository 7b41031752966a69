"""``twistd rserpool-registrar``: options and service construction.

    twistd -n rserpool-registrar --config etc/registrar.ini
    twistd -n rserpool-registrar --config etc/registrar.ini \\
        --listen tcp:port=3864:interface=127.0.0.1 --announce 127.0.0.1:3863

Command-line options override the configuration file.  Without a
certificate in the configuration, a development PKI is created (once) in
``state_dir/pki`` and its location is logged.
"""

from __future__ import annotations

import random
import secrets
from pathlib import Path
from typing import Any

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

from rserpool.config import Config, ConfigError, load_config

__all__ = ["Options", "makeService", "build_registrar"]

_log = Logger()


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "An RSerPool registrar (ENRP server): ASAP over TLS for pool elements and pool users."

    optParameters = [
        ["config", "c", None, "the registrar's ini configuration file (see etc/registrar.ini)"],
        ["server-id", None, None, "ENRP server ID (a non-zero 32-bit number; default: random)"],
        ["state-dir", None, None, "directory for generated state such as the development PKI"],
    ]
    optFlags = [
        ["insecure-plaintext", None, "INSECURE: run ASAP without TLS (for protocol debugging only)"],
        ["demo", None, "also run two echo PEs and a PU session against this registrar (development PKI only)"],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["announce"] = []

    def opt_listen(self, description: str) -> None:
        """Twisted endpoint string to listen on for ASAP (repeatable), e.g.
        tcp:port=3864:interface=127.0.0.1 (TLS is added on top)."""
        self["listen"].append(description)

    def opt_announce(self, target: str) -> None:
        """host:port to send ASAP SERVER_ANNOUNCE datagrams to (repeatable)."""
        self["announce"].append(target)

    def postOptions(self) -> None:
        try:
            config = load_config(self["config"]) if self["config"] else load_config(text="")
            overrides = []
            if self["listen"]:
                overrides.append(("registrar", "asap_listen", "\n".join(self["listen"])))
            if self["announce"]:
                overrides.append(("announce", "targets", "\n".join(self["announce"])))
            if self["server-id"]:
                overrides.append(("registrar", "server_id", self["server-id"]))
            if self["state-dir"]:
                overrides.append(("registrar", "state_dir", str(Path(self["state-dir"]).absolute())))
            if self["insecure-plaintext"]:
                overrides.append(("tls", "enabled", "no"))
            self.config = config.with_overrides(overrides)
        except ConfigError as exc:
            raise usage.UsageError(str(exc)) from None


def _target(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"announce target {text!r} is not host:port")
    return host, int(port)


def build_registrar(config: Config, reactor: Any = None) -> Any:
    """The RegistrarService described by ``config``."""
    from rserpool.asap.registrar import RegistrarSettings
    from rserpool.handlespace import HandlespaceLimits
    from rserpool.security import devpki
    from rserpool.errors import PluginError
    from rserpool.plugin import load_named
    from rserpool.security.ratelimit import RateLimit
    from rserpool.service.channel import ChannelSettings
    from rserpool.service.registrar import RegistrarService
    from rserpool.wire import Limits

    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    registrar, tls_conf, asap, security = config["registrar"], config["tls"], config["asap"], config["security"]
    server_id = registrar["server_id"] or (secrets.randbits(32) or 1)

    tls_options = revocation = crl_monitor = None
    if tls_conf["enabled"]:
        cert, key, cas = tls_conf["certificate"], tls_conf["private_key"], tls_conf["ca_certificates"]
        crls, refresh = tls_conf["crls"], None
        if not cert:
            paths = devpki.ensure_dev_pki(Path(registrar["state_dir"]) / "pki",
                                       server_names=(tls_conf["server_name"], "localhost", "127.0.0.1", "::1"))
            cert, key = str(paths.server_cert), str(paths.server_key)
            cas = cas or (str(paths.ca_cert),)
            if not crls:
                crls, refresh = (str(paths.crl),), _dev_crl_refresh(paths.directory)
            _log.warn("using the DEVELOPMENT PKI in {directory} (CA {ca}; PE certificate {pe}, PU certificate "
                      "{pu}; CRL {crl}); configure [tls] certificate for production", directory=paths.directory,
                      ca=paths.ca_cert, pe=paths.pe_cert, pu=paths.pu_cert, crl=paths.crl)
        if not crls and tls_conf["ocsp"] == "off":
            _log.warn("NO REVOCATION CHECK: [tls] crls is empty and [tls] ocsp = off, so a revoked client "
                      "certificate is accepted")
        tls_options, revocation, crl_monitor = _server_security(tls_conf, cert, key, cas, reactor, crls, refresh)
    else:
        _log.critical("INSECURE: TLS is disabled by configuration")

    if security["allow_unauthenticated"]:
        _log.critical("INSECURE: registrations from unauthenticated pool elements are accepted")
    site_dirs = config["plugins"]["directories"]
    authorizer_name = security["authorizer"]
    authorizer_options = config.plugin_options("authorizer", authorizer_name)
    if authorizer_name == "file":
        rules_path = authorizer_options.setdefault("rules", security["rules"])
        if not rules_path or not Path(rules_path).exists():
            raise ConfigError(f"the rules file {rules_path!r} of the file authorizer does not exist "
                              "(an empty file refuses everything)")
    elif authorizer_name == "radius":
        # [radius] holds the RADIUS settings; [authorizer:radius] may override them.
        from rserpool.plugins.radius import options_from_section

        authorizer_options = {**options_from_section(config["radius"]), **authorizer_options}
    elif authorizer_name == "ldap":
        # [ldap] holds the directory settings; [authorizer:ldap] may override them.
        from rserpool.plugins.ldap import ldap_options

        authorizer_options = ldap_options(config, "authorizer")
    try:
        authorizer = load_named("authorizer", authorizer_name, authorizer_options, reactor, site_dirs)
    except PluginError as exc:
        raise ConfigError(str(exc)) from None
    _log.info("pool authorization by the {name!r} plugin ({authorizer!r})", name=authorizer_name,
              authorizer=authorizer)
    groups_of = None
    if security["credentials"]:
        from rserpool.backends.filestore import FileStore

        groups_of = FileStore.shared(security["credentials"]).groups

    authenticator, auth_services = _authenticator(config, reactor, site_dirs)
    certificate_mapping = _certificate_mapping(config, reactor, site_dirs)
    if certificate_mapping is not None and IService.providedBy(certificate_mapping):
        auth_services.append(certificate_mapping)

    limits = config["limits"]
    settings = RegistrarSettings(
        server_id=server_id,
        keepalive_interval=asap["keepalive_interval"],
        keepalive_timeout=asap["keepalive_timeout"],
        max_bad_pe_reports=asap["max_bad_pe_reports"],
        max_resolution_items=asap["max_resolution_items"],
        allow_insecure_channels=not tls_conf["enabled"],
        allow_unauthenticated=security["allow_unauthenticated"],
        authorize_resolution=security["authorize_resolution"],
        check_pe_addresses=security["check_pe_addresses"],
        registration_rate=RateLimit(security["registration_rate"], 2 * security["registration_rate"]),
        registration_rate_per_address=RateLimit(security["registration_rate_per_address"],
                                                2 * security["registration_rate_per_address"]),
        resolution_rate=RateLimit(security["resolution_rate"], 2 * security["resolution_rate"]),
        unreachable_rate=RateLimit(security["unreachable_rate"], max(1.0, 10 * security["unreachable_rate"])),
        unreachable_requires_identity=security["unreachable_requires_identity"],
        unreachable_removal_needs_failed_probe=asap["unreachable_removal_needs_failed_probe"],
    )
    handlespace_limits = HandlespaceLimits(
        max_pools=limits["max_pools"],
        max_pes_per_pool=limits["max_pes_per_pool"],
        max_pes_per_identity=limits["max_pes_per_identity"],
        max_registration_life=asap["max_registration_life"],
    )
    channel_settings = ChannelSettings(
        heartbeat_interval=asap["heartbeat_interval"],
        dead_after=asap["heartbeat_timeout"],
        limits=Limits(max_message_size=asap["max_message_size"]),
        chunk_timeout=asap["chunk_timeout"],
        handshake_timeout=asap["handshake_timeout"],
        first_message_timeout=asap["first_message_timeout"],
    )
    announce = config["announce"]
    multicast = _target(announce["multicast_group"]) if announce["multicast_group"] else None
    service = RegistrarService(
        settings,
        reactor=reactor,
        listen=registrar["asap_listen"],
        tls_options=tls_options,
        authorizer=authorizer,
        groups_of=groups_of,
        limits=handlespace_limits,
        channel_settings=channel_settings,
        announce_targets=[_target(t) for t in announce["targets"]],
        announce_interval=announce["interval"],
        announce_multicast=multicast,
        announce_ttl=announce["multicast_ttl"],
        rng=random.SystemRandom(),
        max_connections=limits["max_connections"],
        max_connections_per_address=limits["max_connections_per_address"],
        ipv6_prefix=limits["ipv6_prefix_length"],
        evict_idle_after=limits["evict_idle_after"],
        revocation=revocation,
        authenticator=authenticator,
        certificate_mapping=certificate_mapping,
    )
    for child in auth_services:
        if child is not authorizer and getattr(child, "parent", None) is None:
            child.setServiceParent(service)
    if crl_monitor is not None:
        crl_monitor.setServiceParent(service)
    if IService.providedBy(authorizer):
        # A plugin with resources (a RADIUS socket, a thread pool) starts and
        # stops with the registrar.
        authorizer.setServiceParent(service)
    return service


_AUTHENTICATORS = ("certificate", "psk", "srp", "chap")


def _backend_options(config: Config, kind: str, name: str) -> dict[str, str]:
    """Options for a credential backend plugin: the shared sections first
    ([security] credentials for file, [ldap], [radius]), then [<kind>:<name>]."""
    options: dict[str, str] = {}
    if name == "file":
        if not config["security"]["credentials"]:
            raise ConfigError(f"the file {kind} needs [security] credentials (the credentials file)")
        options["path"] = config["security"]["credentials"]
    elif name == "ldap":
        from rserpool.plugins.ldap import ldap_options

        return ldap_options(config, kind)
    elif name == "radius":
        from rserpool.plugins.radius import options_from_section

        options.update(options_from_section(config["radius"]))
    options.update(config.plugin_options(kind, name))
    return options


def _authenticator(config: Config, reactor: Any, site_dirs: Any) -> tuple[Any, list]:
    """The SRP/CHAP authenticator for ``[security] authenticators`` (None if
    neither is listed) and the backend services to start with the registrar."""
    from rserpool.errors import PluginError
    from rserpool.plugin import load_named
    from rserpool.security import exchange
    from rserpool.service.auth import RegistrarAuthenticator

    names = config["security"]["authenticators"]
    unknown = sorted(set(names) - set(_AUTHENTICATORS))
    if unknown:
        raise ConfigError(f"[security] authenticators: unknown {', '.join(unknown)} "
                          f"(known: {', '.join(_AUTHENTICATORS)})")
    if "psk" in names and not config["tls"]["psk_file"]:
        raise ConfigError("[security] authenticators lists psk but [tls] psk_file is empty")
    if "srp" not in names and "chap" not in names:
        return None, []

    def load(kind: str, name: str) -> Any:
        try:
            return load_named(kind, name, _backend_options(config, kind, name), reactor, site_dirs)
        except PluginError as exc:
            raise ConfigError(str(exc)) from None

    mechanisms, srp_store, chap_store, chap_verifier = [], None, None, None
    if "srp" in names:
        store_name = config.plugin_options("authenticator", "srp").get("store", "file").strip()
        srp_store = load("srp-store", store_name)
        mechanisms.append(exchange.MECH_SRP_SHA256_2048)
    if "chap" in names:
        options = config.plugin_options("authenticator", "chap")
        if options.get("verifier", "").strip():
            chap_verifier = load("chap-verifier", options["verifier"].strip())
        else:
            chap_store = load("chap-store", options.get("backend", "file").strip())
        mechanisms.append(exchange.MECH_CHAP_MD5)
    secret_file = config["security"]["server_secret_file"]
    if secret_file:
        try:
            with open(secret_file, "rb") as handle:
                server_secret = handle.read(4096).strip()
        except OSError as exc:
            raise ConfigError(f"[security] server_secret_file: {exc}") from None
        if len(server_secret) < 16:
            raise ConfigError(f"{secret_file}: the server secret must be at least 16 bytes")
    else:
        server_secret = secrets.token_bytes(32)
        _log.warn("no [security] server_secret_file: the fake SRP salts of unknown identities change "
                  "at every start, which lets a prober tell restarts apart from real accounts")
    authenticator = RegistrarAuthenticator(reactor, server_secret, srp_store=srp_store, chap_store=chap_store,
                                           chap_verifier=chap_verifier, mechanisms=tuple(mechanisms))
    _log.info("PE authentication inside TLS: {mechanisms}", mechanisms=", ".join(authenticator.mechanisms))
    services = []
    for backend in (srp_store, chap_store, chap_verifier):
        if backend is not None and IService.providedBy(backend) and backend not in services:
            services.append(backend)
    return authenticator, services


class _NoCertificateIdentities:
    """``certificate`` is not among the authenticators: a client certificate
    is still verified by TLS but names nobody."""

    def identity_for(self, cert: Any) -> None:
        return None


def _certificate_mapping(config: Config, reactor: Any, site_dirs: Any) -> Any:
    """``[authenticator:certificate] mapping = file|ldap|<plugin>`` (None: the
    certificate's own names, see docs/tls.md)."""
    from rserpool.errors import PluginError
    from rserpool.plugin import load_named

    if "certificate" not in config["security"]["authenticators"]:
        return _NoCertificateIdentities()
    options = config.plugin_options("authenticator", "certificate")
    unknown = sorted(set(options) - {"mapping"})
    if unknown:
        raise ConfigError(f"[authenticator:certificate]: unknown option(s) {', '.join(unknown)} (known: mapping)")
    name = options.get("mapping", "").strip()
    if not name or name == "none":
        return None
    try:
        return load_named("cert-mapping", name, _backend_options(config, "cert-mapping", name), reactor, site_dirs)
    except PluginError as exc:
        raise ConfigError(str(exc)) from None


def _dev_crl_refresh(directory: Path) -> Any:
    """The CRL monitor's refresh hook for the development PKI: re-sign its CRL
    before it expires (a file change the monitor then reloads)."""
    from rserpool.security import devpki

    def refresh(now: Any) -> None:
        devpki.ensure_dev_crl(directory, devpki.load_dev_ca(directory), now)

    return refresh


def _server_security(tls_conf: Any, cert: str, key: str, cas: Any, reactor: Any, crls: Any = None,
                     refresh: Any = None) -> tuple[Any, Any, Any]:
    """Server TLS options (TLS-PSK when ``psk_file`` is set; CRLs reloadable),
    the OCSP gate (``ocsp``) and the CRL monitor service (``crl_check_interval``).

    ``crls`` defaults to ``[tls] crls``; ``refresh`` is the monitor's hook
    that keeps a development CRL fresh.  The monitor (``.monitor`` of the
    returned service) calls its reload listeners after each reload."""
    crls = tls_conf["crls"] if crls is None else crls
    from datetime import timedelta

    from rserpool.security import psk, tls
    from rserpool.security.revocation import CrlMonitor, CrlMonitorService, gate_from_config

    store = None
    if tls_conf["psk_file"]:
        try:
            store = psk.FilePskStore.from_file(tls_conf["psk_file"])
        except (OSError, psk.PskError) as exc:
            raise ConfigError(f"[tls] psk_file: {exc}") from None
        _log.info("TLS-PSK on: {n} identities from {path}", n=len(store), path=tls_conf["psk_file"])
    hint = tls_conf["psk_identity_hint"] or None

    def build(crls: Any) -> Any:
        base = tls.server_options(cert, key, cas, require_client_cert=tls_conf["require_client_certificate"],
                                  crls=crls)
        return psk.PskServerOptions(base, store, hint) if store is not None else base

    options = tls.ReloadableServerOptions(build(crls))
    monitor = None
    if crls and tls_conf["crl_check_interval"] > 0:
        monitor = CrlMonitorService(CrlMonitor(
            reactor, crls, lambda loaded: options.replace(build(loaded)),
            interval=tls_conf["crl_check_interval"], warn_before=timedelta(days=tls_conf["crl_warn_days"]),
            refresh=refresh))
    gate = gate_from_config(tls_conf, reactor, tls.load_trust_roots(cas) if cas else ())
    return options, gate, monitor


def makeService(options: Options) -> IService:
    registrar = build_registrar(options.config)
    if not options["demo"]:
        return registrar
    from twisted.application.service import MultiService
    from twisted.internet import reactor

    from rserpool.demo.showcase import DemoService

    if options.config["tls"]["certificate"]:
        raise usage.UsageError("--demo runs with the development PKI only (leave [tls] certificate empty)")
    top = MultiService()
    registrar.setServiceParent(top)
    DemoService(registrar, Path(options.config["registrar"]["state_dir"]) / "pki", reactor).setServiceParent(top)
    return top
