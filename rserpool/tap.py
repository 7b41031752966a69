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
        ["log-level", None, "info", "log level: debug, info, warn, error or critical"],
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
        """Load the configuration and check everything that could stop the
        registrar (rserpool.startup, with a trial bind of every listening
        endpoint): a problem ends twistd here with one line each, before it
        logs, daemonizes or binds anything, and exit status 1."""
        from rserpool.logs import parse_level
        from rserpool.startup import check

        problems: list[str] = []
        try:
            self.log_level = parse_level(self["log-level"])
        except ValueError as exc:
            problems.append(f"--log-level: {exc}")
        if not self["config"]:
            _fail(problems + ["--config FILE is required: the registrar's configuration (etc/registrar.ini "
                              "is the annotated example; every key is in docs/configuration.md)"])
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
        try:
            self.config = load_config(self["config"]).with_overrides(overrides)
        except ConfigError as exc:
            _fail(problems + str(exc).splitlines())
        if self["demo"] and self.config["tls"]["certificate"]:
            problems.append("--demo runs with the development PKI only: leave [tls] certificate empty")
        if problems:
            _fail(problems)
        _fail(check(self.config, build=build_registrar, try_bind=True,
                    from_command_line=frozenset((section, key) for section, key, _ in overrides)))


def _fail(problems: list[str]) -> None:
    """End twistd with one line per problem (none: carry on)."""
    if problems:
        import sys

        for problem in problems:
            sys.stderr.write(f"twistd rserpool-registrar: {problem}\n")
        sys.stderr.flush()
        raise SystemExit(1)


def _target(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"announce target {text!r} is not host:port")
    return host, int(port)


def build_registrar(config: Config, reactor: Any = None, *, demo: bool = False,
                    dev_pki_directory: Path | None = None) -> Any:
    """The RegistrarService described by ``config``.  ``dev_pki_directory``
    replaces ``state_dir/pki`` for the development PKI (``rserpool.startup``
    builds a registrar only to check it, in a scratch directory)."""
    from rserpool.asap.registrar import RegistrarSettings
    from rserpool.gate import GatePolicy
    from rserpool.handlespace import HandlespaceLimits
    from rserpool.security import devpki
    from rserpool.security.ratelimit import RateLimit
    from rserpool.service.channel import ChannelSettings
    from rserpool.service.registrar import RegistrarService
    from rserpool.wire import Limits

    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    registrar, tls_conf, asap, security = config["registrar"], config["tls"], config["asap"], config["security"]
    server_id = registrar["server_id"] or (secrets.randbits(32) or 1)

    tls_options = revocation = crl_monitor = tls_files = dev_pki = None
    # TLS-PSK keys are tried only as the registrar's gate allows (its failure
    # budgets); the registrar is made after its TLS options, hence the relay.
    psk_admit = _PskAdmit()
    if tls_conf["enabled"]:
        cert, key, cas = tls_conf["certificate"], tls_conf["private_key"], tls_conf["ca_certificates"]
        crls, refresh = tls_conf["crls"], None
        if not cert:
            paths = devpki.ensure_dev_pki(dev_pki_directory or Path(registrar["state_dir"]) / "pki",
                                       server_names=(tls_conf["server_name"], "localhost", "127.0.0.1", "::1"))
            cert, key = str(paths.server_cert), str(paths.server_key)
            cas = cas or (str(paths.ca_cert),)
            dev_pki = paths.directory
            if not crls:
                crls, refresh = (str(paths.crl),), _dev_crl_refresh(paths.directory)
            # A warning, except with --demo, which runs on the development PKI only.
            (_log.info if demo else _log.warn)(
                "using the DEVELOPMENT PKI in {directory} (CA {ca}; PE certificate {pe}, PU certificate "
                "{pu}; CRL {crl}); configure [tls] certificate for production", directory=paths.directory,
                ca=paths.ca_cert, pe=paths.pe_cert, pu=paths.pu_cert, crl=paths.crl)
        if not crls and tls_conf["ocsp"] == "off":
            _log.warn("NO REVOCATION CHECK: [tls] crls is empty and [tls] ocsp = off, so a revoked client "
                      "certificate is accepted")
        tls_options, revocation, crl_monitor = _server_security(tls_conf, cert, key, cas, reactor, crls, refresh,
                                                                psk_admit)
        tls_files = (cert, key, cas)
    else:
        _log.critical("INSECURE: TLS is disabled by configuration")

    if security["allow_unauthenticated"]:
        _log.critical("INSECURE: registrations from unauthenticated pool elements are accepted")
    site_dirs = config["plugins"]["directories"]
    built: list[Any] = []  # every plugin built, sub-plugins included: services start with the registrar
    authorizer = _authorizer(config, reactor, site_dirs, built)
    checkers = _checkers(config, reactor, site_dirs, built)

    limits = config["limits"]
    settings = RegistrarSettings(
        server_id=server_id,
        keepalive_interval=asap["keepalive_interval"],
        keepalive_timeout=asap["keepalive_timeout"],
        max_resolution_items=asap["max_resolution_items"],
    )
    if not asap["unreachable_removal_needs_failed_probe"]:
        _log.warn("INSECURE: [asap] unreachable_removal_needs_failed_probe = no: {n} ENDPOINT_UNREACHABLE "
                  "reporters (anonymous pool users on {n} addresses) remove a PE that still answers its "
                  "keep-alives (RFC 5355 2.13)", n=asap["max_bad_pe_reports"])
    gate_policy = GatePolicy(
        allow_insecure_channels=not tls_conf["enabled"],
        allow_unauthenticated=security["allow_unauthenticated"],
        authorize_resolution=security["authorize_resolution"],
        check_pe_addresses=security["check_pe_addresses"],
        unreachable_requires_identity=security["unreachable_requires_identity"],
        unreachable_removal_needs_failed_probe=asap["unreachable_removal_needs_failed_probe"],
        max_bad_pe_reports=asap["max_bad_pe_reports"],
        registration_rate=RateLimit(security["registration_rate"], 2 * security["registration_rate"]),
        registration_rate_per_address=RateLimit(security["registration_rate_per_address"],
                                                2 * security["registration_rate_per_address"]),
        resolution_rate=RateLimit(security["resolution_rate"], 2 * security["resolution_rate"]),
        anonymous_resolution_rate=RateLimit(security["anonymous_resolution_rate"],
                                            2 * security["anonymous_resolution_rate"]),
        unreachable_rate=RateLimit(security["unreachable_rate"], max(1.0, 10 * security["unreachable_rate"])),
        max_connections=limits["max_connections"],
        max_connections_per_address=limits["max_connections_per_address"],
        ipv6_prefix=limits["ipv6_prefix_length"],
        authenticated_reserve=limits["authenticated_reserve"],
        evict_idle_after=limits["evict_idle_after"],
        max_pools_per_identity=limits["max_pools_per_identity"],
    )
    if 10 * limits["max_pools_per_identity"] > limits["max_pools"]:
        _log.warn("[limits] max_pools_per_identity = {per} is not well below max_pools = {total}: "
                  "{n} identities can fill the pool table", per=limits["max_pools_per_identity"],
                  total=limits["max_pools"], n=-(-limits["max_pools"] // limits["max_pools_per_identity"]))
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
        gate_policy=gate_policy,
        checkers=checkers,
        limits=handlespace_limits,
        channel_settings=channel_settings,
        announce_targets=[_target(t) for t in announce["targets"]],
        announce_interval=announce["interval"],
        announce_multicast=multicast,
        announce_ttl=announce["multicast_ttl"],
        rng=random.SystemRandom(),
        revocation=revocation,
        ocsp_recheck_interval=tls_conf["ocsp_recheck_interval"] if tls_conf["enabled"] else 0.0,
    )
    psk_admit.target = service.psk_attempt
    if crl_monitor is not None:  # a CRL reload reaches the channels already open
        crl_monitor.monitor.add_reload_listener(service.crls_reloaded)
    if service.authenticator is not None:
        _log.info("PE authentication inside TLS: {mechanisms}",
                  mechanisms=", ".join(service.authenticator.mechanisms))
    started: list[Any] = []
    for provider in built:
        # A plugin with resources (a RADIUS socket, a thread pool) starts and
        # stops with the registrar.
        if IService.providedBy(provider) and provider.parent is None and provider not in started:
            started.append(provider)
            provider.setServiceParent(service)
    if crl_monitor is not None:
        crl_monitor.setServiceParent(service)
    if config["admin"]["listen"]:
        _admin_service(config, service, tls_files, dev_pki, reactor,
                       crls if tls_files else (), demo=demo).setServiceParent(service)
    if config["enrp"]["enabled"]:
        _enrp_service(config, service, tls_files, crls if tls_files else (), crl_monitor, reactor
                      ).setServiceParent(service)
    return service


def _shared_gate(registrar: Any) -> Any:
    """The registrar's one security gate (made here while the registrar has none)."""
    from rserpool.admin.access import admin_gate

    gate = getattr(registrar, "gate", None)
    if gate is None:
        gate = registrar.gate = admin_gate(registrar)
    return gate


def _enrp_service(config: Config, registrar: Any, tls_files: Any, crls: Any, crl_monitor: Any,
                  reactor: Any) -> Any:
    """The ENRP service of ``[enrp]`` (docs/enrp.md): mutual TLS with the
    registrar's certificate, peers admitted by the gate's ``peer`` door."""
    from rserpool.admin.access import certificate_identity_of
    from rserpool.enrp import EnrpSettings, PeerLimits
    from rserpool.security import tls
    from rserpool.security.ratelimit import RateLimit
    from rserpool.service.enrp import EnrpService
    from rserpool.service.enrp_discovery import peer_candidates

    enrp = config["enrp"]
    if tls_files is None:
        raise ConfigError("[enrp] enabled needs TLS: ENRP peers authenticate each other by certificate "
                          "(RFC 5355 2.5, 2.15)")
    cert, key, cas = tls_files
    if not cas:
        raise ConfigError("[enrp] enabled needs [tls] ca_certificates: peers present certificates from those CAs")
    try:
        limits = PeerLimits(max_pes=enrp["max_pes_per_peer"], max_pools=enrp["max_pools_per_peer"],
                            update_rate=RateLimit(enrp["update_rate"], 2 * enrp["update_rate"]),
                            max_response_pes=enrp["max_response_pes"])
        settings = EnrpSettings(registrar.server_id, heartbeat_cycle=enrp["heartbeat_cycle"],
                                max_time_last_heard=enrp["max_time_last_heard"],
                                max_time_no_response=enrp["max_time_no_response"],
                                mentor_discovery_timeout=enrp["mentor_discovery_timeout"],
                                max_peers=enrp["max_peers"], page_pes=min(enrp["page_pes"], enrp["max_response_pes"]),
                                peer_limits=limits, takeover_ack_timeout=enrp["takeover_ack_timeout"],
                                max_adopted_life=enrp["max_adopted_life"])
        candidates = None
        if enrp["peers"] or enrp["srv_names"]:
            candidates = peer_candidates(enrp["peers"], enrp["srv_names"], srv_service=enrp["srv_service"])
        presence_listen = _target(enrp["presence_listen"]) if enrp["presence_listen"] else None
        multicast = _target(enrp["presence_multicast"]) if enrp["presence_multicast"] else None
    except ValueError as exc:
        raise ConfigError(f"[enrp]: {exc}") from None
    current_crls = [tuple(crls)]
    server_tls = tls.ReloadableServerOptions(tls.server_options(cert, key, cas, require_client_cert=True,
                                                                crls=current_crls[0]))

    def client_tls(name: str) -> Any:
        return tls.client_options(name, cas, client_cert=(cert, key), crls=current_crls[0])

    if crl_monitor is not None:
        def reloaded(loaded: Any) -> None:
            current_crls[0] = tuple(loaded)
            server_tls.replace(tls.server_options(cert, key, cas, require_client_cert=True, crls=loaded))

        crl_monitor.monitor.add_reload_listener(reloaded)
    service = EnrpService(settings, reactor=reactor, handlespace=registrar.handlespace, listen=enrp["listen"],
                          server_tls=server_tls, client_tls=client_tls, gate=_shared_gate(registrar),
                          authorizer=registrar.authorizer,
                          identity_of=certificate_identity_of(registrar), candidates=candidates,
                          presence_listen=presence_listen,
                          presence_targets=[_target(t) for t in enrp["presence_targets"]],
                          presence_multicast=multicast, registrar=registrar)
    registrar.change_listeners.append(service.local_change)
    _log.info("ENRP on {listen}; peers {peers}; SRV {srv}", listen=", ".join(enrp["listen"]),
              peers=", ".join(enrp["peers"]) or "none", srv=", ".join(enrp["srv_names"]) or "none")
    return service


def _admin_service(config: Config, registrar: Any, tls_files: Any, dev_pki: Any, reactor: Any,
                   crls: Any = (), *, demo: bool = False) -> Any:
    """The HTTPS admin endpoint of ``[admin]`` (docs/operations.md); ``crls``
    are the registrar's (the development PKI's CRL by default)."""
    from rserpool.admin import AdminAccess, AdminService, AdminSettings, TokenError, load_token
    from rserpool.admin.access import certificate_identity_of
    from rserpool.security import tls

    admin, tls_conf = config["admin"], config["tls"]
    if tls_files is None:
        raise ConfigError("[admin] listen needs TLS: the admin endpoint never runs in plaintext")
    cert, key, cas = tls_files
    if not cas:
        raise ConfigError("[admin] listen needs [tls] ca_certificates: admin clients are authenticated by "
                          "certificates from those CAs")
    token = None
    if admin["token_file"]:
        try:
            token = load_token(admin["token_file"])
        except TokenError as exc:
            raise ConfigError(f"[admin] token_file: {exc}") from None
    if dev_pki is not None:
        from rserpool.admin.devcert import ensure_admin_certificate

        issued = ensure_admin_certificate(dev_pki)
        # A warning, except with --demo, which runs on the development PKI only.
        (_log.info if demo else _log.warn)(
            "admin endpoint: DEVELOPMENT admin certificate {cert} (key {key}, browser bundle {p12})",
            cert=issued.cert, key=issued.key, p12=issued.p12)
    try:
        settings = AdminSettings(
            max_connections=admin["max_connections"],
            max_connections_per_address=admin["max_connections_per_address"],
            request_timeout=admin["request_timeout"], idle_timeout=admin["idle_timeout"],
            refresh=admin["refresh"], page_size=admin["page_size"])
    except ValueError as exc:
        raise ConfigError(f"[admin]: {exc}") from None
    options = tls.server_options(cert, key, cas, require_client_cert=token is None, crls=crls)
    access = AdminAccess(authorizer=registrar.authorizer, identity_of=certificate_identity_of(registrar),
                         gate=_shared_gate(registrar), clock=reactor, token=token, token_scope=admin["token_scope"],
                         on_outage=lambda: registrar.events.outage("admin-authorizer"))
    return AdminService(registrar, reactor=reactor, listen=admin["listen"], tls_options=options,
                        access=access, settings=settings)


def _load(kind: str, name: str, options: dict[str, str], reactor: Any, site_dirs: Any, built: list[Any],
          where: str) -> Any:
    from rserpool.errors import PluginError
    from rserpool.plugin import load_named

    try:
        return load_named(kind, name, options, reactor, site_dirs, built)
    except PluginError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _authorizer(config: Config, reactor: Any, site_dirs: Any, built: list[Any]) -> Any:
    """The pool authorizer plugin ``[security] authorizer`` (default deny)."""
    security = config["security"]
    name = security["authorizer"]
    options = config.plugin_options("authorizer", name)
    if name == "file":
        rules_path = options.setdefault("rules", security["rules"])
        if not rules_path or not Path(rules_path).exists():
            raise ConfigError(f"the rules file {rules_path!r} of the file authorizer does not exist "
                              "(an empty file refuses everything)")
    elif name == "radius":
        # [radius] holds the RADIUS settings; [authorizer:radius] may override them.
        from rserpool.plugins.radius import options_from_section

        options = {**options_from_section(config["radius"]), **options}
    elif name == "ldap":
        # [ldap] holds the directory settings; [authorizer:ldap] may override them.
        from rserpool.plugins.ldap import ldap_options

        options = ldap_options(config, "authorizer")
    authorizer = _load("authorizer", name, options, reactor, site_dirs, built, "[security] authorizer")
    _log.info("pool authorization by the {name!r} plugin ({authorizer!r})", name=name, authorizer=authorizer)
    return authorizer


#: The built-in authenticators' sub-plugin roles (option name -> plugin kind)
#: and defaults, filled from the shared sections of the configuration.
_BUILTIN_ROLES: dict[str, dict[str, str]] = {
    "certificate": {"mapping": "cert-mapping", "groups": "groups"},
    "psk": {"groups": "groups"},
    "srp": {"store": "srp-store", "groups": "groups"},
    "chap": {"backend": "chap-store", "verifier": "chap-verifier", "groups": "groups"},
}


def _sub_options(config: Config, kind: str, name: str) -> dict[str, str]:
    """A sub-plugin's options from the shared sections: [security]
    credentials for ``file``, [ldap] for ``ldap``, [radius] for ``radius``,
    then [<kind>:<name>]."""
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


def _authenticator_options(config: Config, name: str) -> dict[str, str]:
    """``[authenticator:<name>]``, and for a built-in authenticator its
    sub-plugins' options from the shared sections (unless given there)."""
    options = config.plugin_options("authenticator", name)
    roles = _BUILTIN_ROLES.get(name)
    if roles is None:
        return options  # a site authenticator: its own section only
    security = config["security"]
    if "groups" not in options and security["credentials"]:
        options["groups"] = "file"  # @group rules from the credentials file, as for every identity
    if name == "srp":
        options.setdefault("store", "file")
        if security["server_secret_file"]:
            options.setdefault("server_secret_file", security["server_secret_file"])
        elif "server_secret_file" not in options:
            _log.warn("no [security] server_secret_file: the fake SRP salts of unknown identities change "
                      "at every start, which lets a prober tell restarts apart from real accounts")
    if name == "chap" and "verifier" not in options:
        options.setdefault("backend", "file")
    for role, kind in roles.items():
        sub = options.get(role, "").strip()
        if not sub or sub == "none":
            continue
        for key, value in _sub_options(config, kind, sub).items():
            options.setdefault(f"{role}.{key}", value)
    return options


def _checkers(config: Config, reactor: Any, site_dirs: Any, built: list[Any]) -> list[Any]:
    """The authenticator plugins of ``[security] authenticators``, in order
    (twisted.cred checkers: certificate, psk, srp, chap or a site one)."""
    names = list(config["security"]["authenticators"])
    psk_file = config["tls"]["psk_file"]
    if "psk" in names and not psk_file:
        raise ConfigError("[security] authenticators lists psk but [tls] psk_file is empty")
    if psk_file and "psk" not in names:
        # [tls] psk_file alone has always made TLS-PSK identities count.
        _log.info("[tls] psk_file is set: TLS-PSK identities are checked by the psk authenticator")
        names.append("psk")
    if len(set(names)) != len(names):
        raise ConfigError(f"[security] authenticators names one twice: {', '.join(names)}")
    return [_load("authenticator", name, _authenticator_options(config, name), reactor, site_dirs, built,
                  f"[security] authenticators: {name}") for name in names]


def _dev_crl_refresh(directory: Path) -> Any:
    """The CRL monitor's refresh hook for the development PKI: re-sign its CRL
    before it expires (a file change the monitor then reloads)."""
    from rserpool.security import devpki

    def refresh(now: Any) -> None:
        devpki.ensure_dev_crl(directory, devpki.load_dev_ca(directory), now)

    return refresh


class _PskAdmit:
    """``admit(identity, tls_protocol)`` of the PSK server options, relayed
    to the registrar once it exists (refused until then)."""

    def __init__(self) -> None:
        self.target: Any = None

    def __call__(self, identity: str, tls_protocol: Any) -> bool:
        return self.target is not None and self.target(identity, tls_protocol)


def _server_security(tls_conf: Any, cert: str, key: str, cas: Any, reactor: Any, crls: Any = None,
                     refresh: Any = None, psk_admit: Any = None) -> tuple[Any, Any, Any]:
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
        return psk.PskServerOptions(base, store, hint, psk_admit) if store is not None else base

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
    from rserpool.errors import PluginError
    from rserpool.logs import LoggingRoot

    # The root service gives twistd's application the log observer, filtered
    # at --log-level (rserpool.logs), and turns a failed start into one line.
    twistd_options = getattr(options, "parent", None)
    top = LoggingRoot(options.log_level, twistd_options)
    try:
        registrar = build_registrar(options.config, demo=options["demo"])
    except (ConfigError, PluginError, ValueError, OSError, LookupError) as exc:
        # rserpool.startup.check built it already: only a file changed since.
        _fail([" ".join((str(exc) or type(exc).__name__).split())])
    from twisted.logger import LogLevel

    # Every PE's registration and routine removal, one line each, at debug
    # (otherwise counted: a summary line a minute).
    registrar.pe_log.every_change = options.log_level == LogLevel.debug
    registrar.setServiceParent(top)
    if not options["demo"]:
        return top
    from twisted.internet import reactor

    from rserpool.demo.showcase import DemoService

    DemoService(registrar, Path(options.config["registrar"]["state_dir"]) / "pki", reactor).setServiceParent(top)
    return top
