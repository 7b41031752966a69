"""The registrar's ini configuration: one schema, typed values, clear errors.

Every key the registrar understands is declared in ``SCHEMA`` with its type,
default and a one-line description.  Unknown sections or keys are errors (a
misspelt security option must never be silently ignored), and so are values
of the wrong type.  ``etc/registrar.ini`` is the annotated example and
``docs/configuration.md`` is generated from the same schema
(``rserpool config-doc``).

Relative paths in the file are resolved against the file's directory.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

__all__ = ["ConfigError", "Option", "SCHEMA", "Config", "load_config", "schema_markdown"]


class ConfigError(ValueError):
    """A configuration file or value is invalid."""


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "yes", "true", "on"):
        return True
    if value in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r} (use yes or no)")


def _list(text: str) -> tuple[str, ...]:
    items = []
    for line in text.replace(",", "\n").splitlines():
        line = line.strip()
        if line:
            items.append(line)
    return tuple(items)


def _server_id(text: str) -> int:
    text = text.strip().lower()
    if text in ("", "auto", "random"):
        return 0
    value = int(text, 0)
    if not 1 <= value <= 0xFFFFFFFF:
        raise ValueError("a server ID is a non-zero 32-bit number")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be greater than 0")
    return value


def _positive_int(text: str) -> int:
    value = int(text, 0)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _ipv6_prefix(text: str) -> int:
    value = int(text, 0)
    if not 1 <= value <= 128:
        raise ValueError("must be 1-128")
    return value


def _reserve(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 0.9:
        raise ValueError("must be 0 to 0.9")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _in_flight(text: str) -> int:
    value = int(text, 0)
    if not 1 <= value <= 256:
        raise ValueError("must be within 1..256 (one RADIUS identifier space)")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text, 0)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _ocsp_mode(text: str) -> str:
    value = text.strip().lower()
    if value not in ("off", "soft", "hard"):
        raise ValueError("must be off, soft or hard")
    return value


def _token_scope(text: str) -> str:
    value = text.strip().lower()
    if value not in ("metrics", "all"):
        raise ValueError("must be metrics or all")
    return value


@dataclass(frozen=True)
class Option:
    parse: Callable[[str], Any]
    default: str
    help: str
    path: bool = False  # values are file paths, resolved against the file's directory


_S = Option
SCHEMA: dict[str, dict[str, Option]] = {
    "registrar": {
        "server_id": _S(_server_id, "auto", "ENRP server ID: a non-zero 32-bit number, or auto for a random one"),
        "asap_listen": _S(_list, "tcp:port=3864:interface=127.0.0.1",
                          "Twisted endpoint strings (one per line) the ASAP service listens on; TLS is added on top"),
        "state_dir": _S(str, "var", "directory for generated state (development PKI, caches)", path=True),
    },
    "tls": {
        "enabled": _S(_bool, "yes", "TLS on every channel; 'no' is insecure and logged as such"),
        "certificate": _S(str, "", "PEM certificate chain of this registrar (empty: development PKI in state_dir)", path=True),
        "private_key": _S(str, "", "PEM private key of this registrar", path=True),
        "ca_certificates": _S(_list, "", "PEM files of the CAs that issue PE, PU and peer certificates", path=True),
        "crls": _S(_list, "", "PEM or DER CRL files checked on every client certificate (empty with the "
                              "development PKI: its CRL, state_dir/pki/crl.pem)", path=True),
        "require_client_certificate": _S(_bool, "no",
                                         "refuse TLS clients without a certificate (scenario A only)"),
        "server_name": _S(str, "localhost", "host name clients use to reach this registrar (development PKI SAN)"),
        "crl_check_interval": _S(_non_negative_float, "60",
                                 "seconds between checks of the CRL files: reload when changed, warn before "
                                 "and after expiry (0: never)"),
        "crl_warn_days": _S(_non_negative_float, "7", "warn this many days before a loaded CRL expires"),
        "ocsp": _S(_ocsp_mode, "off", "OCSP check of PE/PU client certificates after the handshake: off, "
                                      "soft (allow, with a warning, when the responder cannot answer) or hard"),
        "ocsp_responder": _S(str, "", "OCSP responder URL used instead of the certificates' AIA URLs"),
        "ocsp_timeout": _S(_positive_float, "5.0", "seconds to wait for the OCSP responder"),
        "ocsp_recheck_interval": _S(_non_negative_float, "60", "seconds between OCSP re-checks of the certificates "
                                                              "of open channels (an answer is reused until its "
                                                              "nextUpdate; a verified 'revoked' closes the channels "
                                                              "and removes their PEs; 0: never)"),
        "ocsp_allow_remote": _S(_bool, "no", "query OCSP responders on non-loopback hosts (no: loopback only)"),
        "ocsp_require_nonce": _S(_bool, "no", "refuse OCSP responses that do not echo the request's nonce"),
        "psk_file": _S(str, "", "TLS-PSK keys, 'identity key-hex' per line, mode 0600 (empty: no TLS-PSK)",
                       path=True),
        "psk_identity_hint": _S(str, "", "TLS-PSK identity hint sent to clients (empty: none)"),
    },
    "asap": {
        "keepalive_interval": _S(_positive_float, "5.0", "seconds between ENDPOINT_KEEP_ALIVE to each PE (with jitter)"),
        "keepalive_timeout": _S(_positive_float, "5.0", "seconds to wait for ENDPOINT_KEEP_ALIVE_ACK before removing the PE"),
        "max_bad_pe_reports": _S(_positive_int, "3", "distinct reporters whose ENDPOINT_UNREACHABLE reports remove a "
                                                     "PE (MAX-BAD-PE-REPORT) when unreachable_removal_needs_failed_probe "
                                                     "= no"),
        "unreachable_removal_needs_failed_probe": _S(_bool, "yes", "reports alone never remove a PE: a report probes "
                                                                   "it (at most once per keepalive_interval) and only "
                                                                   "a probe it leaves unanswered removes it (RFC 5355 "
                                                                   "2.13); no (INSECURE): max_bad_pe_reports anonymous "
                                                                   "reporters remove a healthy PE"),
        "max_resolution_items": _S(_positive_int, "3", "PEs returned per handle resolution unless the pool holds fewer"),
        "max_registration_life": _S(_positive_int, "3600", "upper bound on a PE's registration life in seconds"),
        "heartbeat_interval": _S(_positive_float, "10.0", "seconds between TCP-mapping HEARTBEATs on an idle channel"),
        "heartbeat_timeout": _S(_positive_float, "20.0", "seconds without any data before a channel is closed as dead"),
        "max_message_size": _S(_positive_int, "65535", "largest ASAP message accepted"),
        "chunk_timeout": _S(_positive_float, "10.0", "seconds within which a TCP-mapping chunk that has "
                                                     "started to arrive must be complete"),
        "handshake_timeout": _S(_positive_float, "10.0", "seconds within which a client must finish the "
                                                         "TLS handshake"),
        "first_message_timeout": _S(_positive_float, "10.0", "seconds within which a client must send its "
                                                             "first message after the handshake"),
    },
    "announce": {
        "targets": _S(_list, "", "host:port UDP unicast targets of ASAP SERVER_ANNOUNCE (one per line)"),
        "interval": _S(_positive_float, "1.0", "seconds between announces (T6), with +/-12.5 % jitter"),
        "multicast_group": _S(str, "", "multicast group to announce to as well (never used by tests)"),
        "multicast_ttl": _S(_positive_int, "1", "TTL of multicast announces"),
    },
    "limits": {
        "max_pools": _S(_positive_int, "10000", "pools in the handlespace"),
        "max_pes_per_pool": _S(_positive_int, "100000", "PEs in one pool"),
        "max_pes_per_identity": _S(_positive_int, "1000", "PEs registered by one authenticated identity"),
        "max_pools_per_identity": _S(_positive_int, "100", "pools one identity (or, with allow_unauthenticated, one "
                                                           "address) may have PEs in; keep it well below max_pools "
                                                           "so that a few identities cannot fill the pool table"),
        "max_connections": _S(_positive_int, "10000", "simultaneous ASAP connections"),
        "max_connections_per_address": _S(_positive_int, "256", "simultaneous ASAP connections from one IP "
                                                                "address (IPv6: one prefix, ipv6_prefix_length)"),
        "ipv6_prefix_length": _S(_ipv6_prefix, "64", "IPv6 addresses in one prefix of this length count as one "
                                                     "address for max_connections_per_address"),
        "evict_idle_after": _S(_positive_float, "5.0", "seconds without a message after which an anonymous "
                                                       "channel with no PE may be dropped to make room for a "
                                                       "new connection when a connection limit is reached"),
        "authenticated_reserve": _S(_reserve, "0.1", "share of max_connections that anonymous channels never "
                                                     "hold: kept for channels with an identity (PEs), 0 to 0.9"),
    },
    "security": {
        "allow_unauthenticated": _S(_bool, "no", "INSECURE: accept registrations from unauthenticated PEs"),
        "authenticators": _S(_list, "certificate",
                             "authenticator plugins (twisted.cred checkers), in order: certificate (TLS client "
                             "certificate), psk (TLS-PSK; implied by [tls] psk_file), srp and chap (ASAP "
                             "authentication extension), or a site plugin; options in [authenticator:<name>] "
                             "(e.g. [authenticator:srp] store = file|ldap, [authenticator:chap] backend = file "
                             "or verifier = radius, [authenticator:certificate] mapping = file|ldap)"),
        "server_secret_file": _S(str, "", "file with at least 16 secret bytes from which SRP derives the fake "
                                          "salts of unknown identities (empty: a new secret per start)", path=True),
        "authorizer": _S(str, "file", "pool authorization plugin name"),
        "authorize_resolution": _S(_bool, "no", "also authorize pool users' handle resolutions"),
        "rules": _S(str, "authz.rules", "rules file of the file authorizer (see docs/authorization.md)", path=True),
        "credentials": _S(str, "", "embedded credentials file: SRP verifiers, CHAP secrets, certificate "
                                   "mappings, groups (see docs/plugins.md)", path=True),
        "check_pe_addresses": _S(_bool, "yes", "a PE may register only the address its ASAP channel comes from"),
        "registration_rate": _S(_positive_float, "50", "registrations per second per identity (burst: twice that)"),
        "registration_rate_per_address": _S(_positive_float, "500", "registrations per second per source address"),
        "resolution_rate": _S(_positive_float, "2000", "handle resolutions per second per identity or address"),
        "anonymous_resolution_rate": _S(_positive_float, "20000", "handle resolutions per second from all "
                                                                  "anonymous pool users together (burst: twice "
                                                                  "that); the rest of the registrar is kept for "
                                                                  "pool users with an identity"),
        "unreachable_rate": _S(_positive_float, "1", "ENDPOINT_UNREACHABLE reports per second per reporter"),
        "unreachable_requires_identity": _S(_bool, "no", "drop ENDPOINT_UNREACHABLE from pool users without an "
                                                         "authenticated identity (RFC 5355 2.13)"),
    },
    "admin": {
        "listen": _S(_list, "", "Twisted endpoint strings (one per line) of the HTTPS admin endpoint: status page, "
                                "JSON API, Prometheus /metrics (empty: off; see docs/operations.md)"),
        "token_file": _S(str, "", "file with a bearer token that grants read access to token_scope, e.g. for "
                                  "Prometheus (root-owned, not readable by others; empty: client certificates only)",
                         path=True),
        "token_scope": _S(_token_scope, "metrics", "what the bearer token may read: metrics (/metrics only) or all"),
        "max_connections": _S(_positive_int, "64", "simultaneous admin connections"),
        "max_connections_per_address": _S(_positive_int, "16", "simultaneous admin connections from one address"),
        "request_timeout": _S(_positive_float, "10", "seconds a client has to send a complete request head "
                                                     "(TLS handshake included)"),
        "idle_timeout": _S(_positive_float, "60", "seconds before an idle admin connection is closed"),
        "refresh": _S(_positive_int, "5", "seconds between the status page's own refreshes"),
        "page_size": _S(_positive_int, "100", "PEs per page of the status page and of the JSON API (at most 500)"),
    },
    "enrp": {
        "enabled": _S(_bool, "no", "ENRP with peer registrars (RFC 5353, docs/enrp.md); needs TLS: peers "
                                   "authenticate each other by certificate and must be granted 'peer' in the rules"),
        "listen": _S(_list, "tcp:port=9902:interface=127.0.0.1",
                     "Twisted endpoint strings the ENRP service listens on; TLS with client certificates is added"),
        "peers": _S(_list, "", "static peers, 'host:port [tls-name]' per line (host: IP address or DNS name; "
                               "tls-name: the name their certificate must carry, default the host)"),
        "srv_names": _S(_list, "", "domains whose SRV records (srv_service) list the peers"),
        "srv_service": _S(str, "_enrp-tls._tcp", "SRV label of ENRP peers"),
        "presence_listen": _S(str, "", "host:port of the UDP socket for ENRP_PRESENCE datagrams (hints only; "
                                       "empty: none)"),
        "presence_targets": _S(_list, "", "host:port UDP unicast targets of the periodic ENRP_PRESENCE"),
        "presence_multicast": _S(str, "", "multicast group host:port for ENRP_PRESENCE as well (never used by tests)"),
        "heartbeat_cycle": _S(_positive_float, "30", "PEER-HEARTBEAT-CYCLE: seconds between PRESENCEs (+/-50 % jitter)"),
        "max_time_last_heard": _S(_positive_float, "61", "MAX-TIME-LAST-HEARD: seconds of silence before a peer "
                                                         "is probed"),
        "max_time_no_response": _S(_positive_float, "5", "MAX-TIME-NO-RESPONSE: seconds to wait for a probe, a "
                                                         "list or a handle-table answer"),
        "mentor_discovery_timeout": _S(_positive_float, "5", "seconds a starting registrar waits for a mentor before "
                                                             "it starts alone"),
        "max_peers": _S(_positive_int, "64", "peers in the peer list"),
        "max_pes_per_peer": _S(_positive_int, "200000", "PEs homed at one peer this registrar accepts"),
        "max_pools_per_peer": _S(_positive_int, "10000", "pools holding PEs of one peer"),
        "update_rate": _S(_positive_float, "10000", "ENRP_HANDLE_UPDATEs per second per peer (burst: twice that)"),
        "max_response_pes": _S(_positive_int, "4096", "PEs in one ENRP_HANDLE_TABLE_RESPONSE accepted"),
        "page_pes": _S(_positive_int, "1024", "PEs per ENRP_HANDLE_TABLE_RESPONSE sent (and at most 60,000 bytes)"),
        "takeover_ack_timeout": _S(_positive_float, "5", "seconds a takeover initiator waits for the "
                                                         "ENRP_INIT_TAKEOVER_ACKs before it goes on with the peers "
                                                         "that answered (docs/takeover.md)"),
        "max_adopted_life": _S(_positive_float, "300", "longest a PE taken over from a dead peer is kept without "
                                                       "re-registering (its registration life, at most this)"),
    },
    "plugins": {
        "directories": _S(_list, "", "site plugin directories (root-owned, not group/world-writable)", path=True),
    },
    "radius": {
        "servers": _S(_list, "", "RADIUS servers host:port (IP literals), tried in order with failover"),
        "secret_file": _S(str, "", "file whose first line is the RADIUS shared secret (not world-readable)", path=True),
        "authorization": _S(str, "class,filter-id,vsa", "reply attributes that carry pools and groups"),
        "authorize_only": _S(_bool, "yes", "ask RADIUS (Service-Type Authorize-Only) about identities "
                                            "authenticated by certificate or SRP"),
        "timeout": _S(_positive_float, "1.0", "seconds before a request is retransmitted"),
        "retries": _S(_non_negative_int, "2", "retransmissions per server before failing over"),
        "dead_time": _S(_non_negative_float, "30", "seconds a failed server is tried last"),
        "max_in_flight": _S(_in_flight, "64", "requests outstanding at once"),
        "max_queue": _S(_non_negative_int, "1024", "requests waiting for an identifier"),
        "nas_identifier": _S(str, "rserpool", "NAS-Identifier sent in every request"),
        "cache_ttl": _S(_non_negative_float, "300", "seconds an Access-Accept's authorization is cached"),
        "negative_cache_ttl": _S(_non_negative_float, "30", "seconds a refusal is cached"),
        "cache_size": _S(_positive_int, "10000", "identities kept in the authorization cache"),
        "dictionary": _S(str, "", "extra RADIUS dictionary file (empty: the one shipped)", path=True),
    },
}


#: Sections ``[<kind>:<name>]`` carry free-form options for the plugin
#: ``name`` of that kind (``[authorizer:ldap]``, ``[authenticator:chap]``);
#: the plugin's factory rejects options it does not know.
PLUGIN_SECTION_KINDS = ("authorizer", "authenticator", "srp-store", "chap-store", "chap-verifier",
                        "cert-mapping", "groups")


#: Free-form sections validated by their backend rather than by SCHEMA
#: (their keys and defaults are documented with the backend).
FREEFORM_SECTIONS = {"ldap": "docs/ldap.md"}


def _is_path_option(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return last in ("path", "rules") or last.endswith("_file") or last.endswith("_path")


class Config:
    """Typed access to a parsed configuration: ``config["asap"]["keepalive_interval"]``."""

    def __init__(self, values: Mapping[str, Mapping[str, Any]], source: str | None = None,
                 plugin_options: Mapping[tuple[str, str], Mapping[str, str]] | None = None):
        self._values = {section: dict(keys) for section, keys in values.items()}
        self.source = source
        self._plugin_options = {k: dict(v) for k, v in (plugin_options or {}).items()}

    def plugin_options(self, kind: str, name: str = "") -> dict[str, str]:
        """The options of ``[kind:name]``, or of a free-form section such as
        ``[ldap]`` with ``name`` empty (empty when the section is absent)."""
        return dict(self._plugin_options.get((kind, name), {}))

    def __getitem__(self, section: str) -> Mapping[str, Any]:
        return self._values[section]

    def get(self, section: str, key: str) -> Any:
        return self._values[section][key]

    def with_overrides(self, overrides: Iterable[tuple[str, str, str]]) -> "Config":
        """A copy with ``(section, key, raw value)`` overrides (command-line options)."""
        values = {s: dict(k) for s, k in self._values.items()}
        for section, key, raw in overrides:
            values[section][key] = _parse_value(section, key, raw, None, self.source or "<command line>")
        return Config(values, self.source, self._plugin_options)


def _parse_value(section: str, key: str, raw: str, base: str | None, source: str) -> Any:
    option = SCHEMA[section][key]
    try:
        value = option.parse(raw)
    except ValueError as exc:
        why = str(exc)
        if why.startswith(("invalid literal for int()", "could not convert string to float")):
            why = "not a number"
        raise ConfigError(f"{source}: [{section}] {key} = {raw!r}: {why}") from None
    if option.path and base is not None:
        if isinstance(value, tuple):
            value = tuple(os.path.normpath(os.path.join(base, v)) for v in value)
        elif value:
            value = os.path.normpath(os.path.join(base, value))
    return value


def load_config(path: str | None = None, text: str | None = None) -> Config:
    """Parse ``path`` (or ``text``) against ``SCHEMA``; missing keys take defaults.
    ConfigError lists every problem of the file, one per line."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    parser.optionxform = str  # keys are case-sensitive
    source = path or "<text>"
    base = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
    try:
        if path is not None:
            with open(path, encoding="utf-8") as handle:
                parser.read_file(handle, source=path)
        elif text is not None:
            parser.read_string(text, source=source)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the configuration file: "
                          f"{(exc.strerror or str(exc)).lower()}") from None
    except configparser.Error as exc:
        raise ConfigError(f"{source}: {' '.join(str(exc).split())}") from None
    plugin_options: dict[tuple[str, str], dict[str, str]] = {}
    problems: list[str] = []
    for section in parser.sections():
        kind, colon, name = section.partition(":")
        if not colon and section in FREEFORM_SECTIONS:
            kind, name = section, ""
        if (colon and kind in PLUGIN_SECTION_KINDS and name) or section in FREEFORM_SECTIONS:
            options = {}
            for key, raw in parser[section].items():
                if _is_path_option(key) and raw.strip() and not os.path.isabs(raw.strip()):
                    raw = os.path.normpath(os.path.join(base, raw.strip()))
                options[key] = raw
            plugin_options[(kind, name)] = options
            continue
        if section not in SCHEMA:
            problems.append(f"{source}: unknown section [{section}] (known: {', '.join(SCHEMA)}, "
                            f"and [<kind>:<plugin>] with kind one of {', '.join(PLUGIN_SECTION_KINDS)})")
            continue
        for key in parser[section]:
            if key not in SCHEMA[section]:
                problems.append(f"{source}: unknown key {key!r} in [{section}] "
                                f"(known: {', '.join(SCHEMA[section])})")
    values: dict[str, dict[str, Any]] = {}
    for section, options in SCHEMA.items():
        values[section] = {}
        for key, option in options.items():
            if parser.has_option(section, key):
                raw, where = parser.get(section, key), base
            else:
                raw, where = option.default, base
            try:
                values[section][key] = _parse_value(section, key, raw, where, source)
            except ConfigError as exc:
                problems.append(str(exc))
    if problems:
        # Every problem of the file, one line each.
        raise ConfigError("\n".join(problems))
    return Config(values, source, plugin_options)


def schema_markdown() -> str:
    """The reference table of every section and key, for docs/configuration.md."""
    lines = ["# Registrar configuration reference", "",
             "Generated from `rserpool.config.SCHEMA` (`rserpool config-doc`).", ""]
    for section, options in SCHEMA.items():
        lines += [f"## [{section}]", "", "| key | default | meaning |", "|---|---|---|"]
        for key, option in options.items():
            default = option.default.replace("\n", " ") or "(empty)"
            lines.append(f"| `{key}` | `{default}` | {option.help} |")
        lines.append("")
    for section, doc in FREEFORM_SECTIONS.items():
        lines += [f"## [{section}]", "", f"Keys are checked by the backend; see [{doc}]({doc[5:]}).", ""]
    lines += ["## [<kind>:<name>]", "",
              "Options of the plugin `name` of that kind (" + ", ".join(PLUGIN_SECTION_KINDS) + "), "
              "checked by the plugin; see [plugins.md](plugins.md). Relative values of keys ending in "
              "`path`, `_file` or named `rules` are resolved against the configuration file.", ""]
    return "\n".join(lines)
