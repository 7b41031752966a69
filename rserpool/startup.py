"""Everything that can stop a registrar from serving, found before it starts.

``check(config)`` is the validation pass that ``twistd rserpool-registrar``
runs before it builds and starts the registrar, and that ``rserpool
config-check`` runs on its own.  It returns the problems, one line each,
naming the section and key (or the command-line option) and what is wrong;
an empty list means the registrar can be built.  With ``try_bind`` it also
opens and closes every listening endpoint (twistd always does; config-check
with ``--try-bind``), which finds a port already in use or an interface
address this host does not have.

The pass has two steps.  First the checks that do not depend on each other,
all of them, so that one run lists every problem: the listening endpoint
strings, the announce targets, the TLS certificate, key (and whether they
belong together), CAs, CRLs and TLS-PSK file, the rules file, the
credentials file, the server secret, the state directory.  Then, if those
found nothing, the registrar is built exactly as twistd builds it (plugins
loaded and configured, backends set up, nothing started and nothing bound;
a development PKI goes to a scratch directory), and whatever that refuses is
the last problem.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from rserpool.config import Config, ConfigError
from rserpool.errors import StartupError, describe_listen_error

__all__ = ["StartupError", "check", "label_for", "describe_listen_error", "try_listen"]

#: Where a setting can come from on twistd's command line.
COMMAND_LINE_OPTIONS = {("registrar", "asap_listen"): "--listen", ("announce", "targets"): "--announce",
                        ("registrar", "server_id"): "--server-id",
                        ("registrar", "state_dir"): "--state-dir"}


def label_for(section: str, key: str, from_command_line: frozenset = frozenset()) -> str:
    """``[section] key``, or the twistd option that set it."""
    if (section, key) in from_command_line:
        return COMMAND_LINE_OPTIONS[(section, key)]
    return f"[{section}] {key}"


def try_listen(reactor: Any, description: str) -> str | None:
    """Open and close the TCP port of ``description`` at once, as Twisted
    will open it (SO_REUSEADDR); None, or why it failed.  Plain sockets:
    Twisted closes a port only on a later reactor turn, and the reactor is
    not running yet when twistd checks."""
    import socket

    from twisted.internet import endpoints
    from twisted.internet.error import CannotListenError

    endpoint = endpoints.serverFromString(reactor, description)
    port = getattr(endpoint, "_port", None)
    interface = getattr(endpoint, "_interface", None)
    if port is None or interface is None:  # not a TCP endpoint: found when it starts
        return None
    family = socket.AF_INET6 if ":" in interface or type(endpoint).__name__.startswith("TCP6") \
        else socket.AF_INET
    interface = interface or ("::" if family == socket.AF_INET6 else "0.0.0.0")
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((interface, port))
            s.listen(1)
        except OSError as exc:
            return describe_listen_error(CannotListenError(interface, port, exc))
    return None


def _tcp_fields(description: str) -> str | None:
    """What is wrong with a ``tcp:``/``tcp6:``/``ssl:`` string's port and
    interface (None: nothing seen)."""
    import ipaddress
    import re

    kind, _, rest = description.partition(":")
    if kind not in ("tcp", "tcp6", "ssl"):
        return None
    fields = re.split(r"(?<!\\):", rest)
    port = fields[0] if fields and "=" not in fields[0] else None
    named = dict(f.split("=", 1) for f in fields if "=" in f)
    port = named.get("port", port)
    if port is None:
        return "no port (e.g. tcp:port=3864:interface=127.0.0.1)"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        return f"port {port!s} is not a number from 0 to 65535"
    interface = named.get("interface")
    if interface is not None:
        try:
            ipaddress.ip_address(interface.replace("\\:", ":"))
        except ValueError:
            return f"interface {interface} is not an IP address"
    return None


def _parse_listen(reactor: Any, description: str) -> str | None:
    from twisted.internet import endpoints

    wrong = _tcp_fields(description)
    if wrong is None:
        try:
            endpoints.serverFromString(reactor, description)
        except Exception as exc:  # the endpoint parser raises ValueError, KeyError, TypeError...
            wrong = " ".join((str(exc) or type(exc).__name__).split())
    if wrong is not None:
        return f"{description}: not a usable endpoint string: {wrong}"
    return None


def _listen_problems(config: Config, reactor: Any, try_bind: bool, cli: frozenset) -> list[str]:
    problems = []
    listens = [(label_for("registrar", "asap_listen", cli), d) for d in config["registrar"]["asap_listen"]]
    if not listens:
        problems.append(f"{label_for('registrar', 'asap_listen', cli)}: empty: the registrar must "
                        "listen somewhere")
    admin = config["admin"]["listen"]
    for description in (admin,) if isinstance(admin, str) else admin:
        if description:
            listens.append(("[admin] listen", description))
    enrp = _section(config, "enrp")
    if enrp is not None and enrp.get("enabled"):
        listens += [("[enrp] listen", d) for d in enrp.get("listen", ())]
    for label, description in listens:
        bad = _parse_listen(reactor, description)
        if bad is None and try_bind:
            why = try_listen(reactor, description)
            bad = None if why is None else f"{description}: {why}"
        if bad is not None:
            problems.append(f"{label}: {bad}")
    return problems


def _section(config: Config, name: str) -> Any:
    try:
        return config[name]
    except KeyError:
        return None


def _announce_problems(config: Config, cli: frozenset) -> list[str]:
    from rserpool.asap.hunt import parse_host_port

    problems = []
    announce = config["announce"]
    for target in announce["targets"]:
        try:
            parse_host_port(target)
        except ValueError as exc:
            problems.append(f"{label_for('announce', 'targets', cli)}: {exc} (expected HOST:PORT)")
    if announce["multicast_group"]:
        try:
            parse_host_port(announce["multicast_group"])
        except ValueError as exc:
            problems.append(f"[announce] multicast_group: {exc} (expected GROUP:PORT)")
    return problems


def _tls_problems(config: Config, cli: frozenset) -> list[str]:
    from rserpool.security import pki, psk

    tls_conf = config["tls"]
    if not tls_conf["enabled"]:
        return []
    problems = []
    cert_path, key_path = tls_conf["certificate"], tls_conf["private_key"]
    if cert_path:
        loaded: dict[str, Any] = {}
        try:
            loaded["cert"] = pki.load_certificate(cert_path)
        except ValueError as exc:
            problems.append(f"[tls] certificate: {exc}")
        if not key_path:
            problems.append("[tls] private_key: empty, but [tls] certificate is set")
        else:
            try:
                loaded["key"] = pki.load_private_key(key_path)
            except ValueError as exc:
                problems.append(f"[tls] private_key: {exc}")
        if len(loaded) == 2:
            try:
                pki.check_key_pair(loaded["cert"], loaded["key"], cert_path, key_path)
            except ValueError as exc:
                problems.append(f"[tls] private_key: {exc}")
        if not tls_conf["ca_certificates"]:
            problems.append("[tls] ca_certificates: empty: with your own [tls] certificate, give the "
                            "CAs that issue PE and PU certificates")
    else:
        if key_path:
            problems.append("[tls] certificate: empty, but [tls] private_key is set")
        problems += _state_dir_problems(config, cli)
    for path in tls_conf["ca_certificates"]:
        try:
            pki.load_certificates(path)
        except ValueError as exc:
            problems.append(f"[tls] ca_certificates: {exc}")
    for path in tls_conf["crls"]:
        try:
            pki.load_crl(path)
        except ValueError as exc:
            problems.append(f"[tls] crls: {exc}")
    if tls_conf["psk_file"]:
        try:
            psk.load_psk_file(tls_conf["psk_file"])
        except OSError as exc:
            problems.append(f"[tls] psk_file: {tls_conf['psk_file']}: {exc.strerror or exc}")
        except (psk.PskError, ValueError) as exc:
            problems.append(f"[tls] psk_file: {exc}")
    return problems


def _state_dir_problems(config: Config, cli: frozenset) -> list[str]:
    """The development PKI will be created in ``state_dir/pki``: can it be?"""
    state = Path(config["registrar"]["state_dir"])
    label = label_for("registrar", "state_dir", cli)
    existing = state
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        return [f"{label}: {existing} is not a directory (the development PKI goes to {state / 'pki'})"]
    if not (state / "pki" / "ca.pem").exists() and not os.access(existing, os.W_OK | os.X_OK):
        return [f"{label}: {existing} is not writable (the development PKI goes to {state / 'pki'})"]
    return []


def _security_problems(config: Config) -> list[str]:
    from rserpool.backends.filestore_format import FileStoreError, parse_credentials
    from rserpool.security.authz import RulesError, load_rules

    problems = []
    security = config["security"]
    if security["authorizer"] == "file":
        rules = config.plugin_options("authorizer", "file").get("rules", security["rules"])
        label = "[authorizer:file] rules" if "rules" in config.plugin_options("authorizer", "file") \
            else "[security] rules"
        if not rules:
            problems.append(f"{label}: empty: the file authorizer needs a rules file "
                            "(an empty file refuses everything)")
        else:
            try:
                load_rules(rules)
            except FileNotFoundError:
                problems.append(f"{label}: {rules}: no such file (an empty file refuses everything)")
            except OSError as exc:
                problems.append(f"{label}: {rules}: {exc.strerror or exc}")
            except (RulesError, UnicodeDecodeError) as exc:
                problems.append(f"{label}: {exc}")
    if security["credentials"]:
        path = security["credentials"]
        try:
            with open(path, encoding="utf-8") as handle:
                parse_credentials(handle.read(), path)
        except FileNotFoundError:
            pass  # an empty store, logged by the registrar (rserpool srp add creates it)
        except OSError as exc:
            problems.append(f"[security] credentials: {path}: {exc.strerror or exc}")
        except (FileStoreError, UnicodeDecodeError) as exc:
            problems.append(f"[security] credentials: {exc}")
    secret_file = security["server_secret_file"]
    if secret_file:
        try:
            with open(secret_file, "rb") as handle:
                secret = handle.read(4096).strip()
        except OSError as exc:
            problems.append(f"[security] server_secret_file: {secret_file}: {exc.strerror or exc}")
        else:
            if len(secret) < 16:
                problems.append(f"[security] server_secret_file: {secret_file}: {len(secret)} bytes, "
                                "at least 16 needed")
    return problems


def _plugin_problems(config: Config) -> list[str]:
    """The authorizer and every authenticator the configuration names must
    exist as plugins (their options, and the sub-plugins they name, are
    checked when the registrar is built)."""
    from rserpool.errors import PluginError
    from rserpool.plugin import find_factories

    site_dirs = config["plugins"]["directories"]
    security = config["security"]
    wanted = [("[security] authorizer", "authorizer", security["authorizer"])]
    wanted += [("[security] authenticators", "authenticator", name) for name in security["authenticators"]]
    problems = []
    if "psk" in security["authenticators"] and not config["tls"]["psk_file"]:
        problems.append("[security] authenticators: lists psk, but [tls] psk_file is empty")
    for label, kind, name in wanted:
        try:
            names = sorted({f.name for f in find_factories(kind, site_dirs)})
        except PluginError as exc:
            problems.append(f"{label}: {exc}")
            continue
        if name not in names:
            problems.append(f"{label}: unknown {kind} plugin {name!r} (available: {', '.join(names)}; "
                            "site plugins come from [plugins] directories)")
    return problems


def _build_problem(config: Config, reactor: Any, build: Callable[..., Any]) -> str | None:
    """Build the registrar as twistd would (nothing started, nothing bound)."""
    from rserpool.errors import PluginError

    from rserpool.logs import muted

    with tempfile.TemporaryDirectory(prefix="rserpool-check-") as scratch, muted():
        try:
            build(config, reactor, dev_pki_directory=Path(scratch) / "pki")
        except (ConfigError, PluginError, ValueError, OSError, LookupError) as exc:
            return _one_line(exc)
    return None


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def check(config: Config, *, build: Callable[..., Any], reactor: Any = None, try_bind: bool = False,
          from_command_line: frozenset = frozenset()) -> list[str]:
    """The problems that would stop a registrar with ``config``, one line
    each (empty: it can be built).  ``build`` is
    ``rserpool.tap.build_registrar`` (passed in: the tap module uses this
    one).  ``from_command_line`` holds the ``(section, key)`` pairs set by
    twistd options, so that a problem names the option."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    cli = frozenset(from_command_line)
    problems = _listen_problems(config, reactor, try_bind, cli)
    problems += _announce_problems(config, cli)
    problems += _tls_problems(config, cli)
    problems += _security_problems(config)
    problems += _plugin_problems(config)
    if problems:
        return problems
    problem = _build_problem(config, reactor, build)
    return [problem] if problem is not None else []
