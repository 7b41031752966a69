"""``[enrp]`` in the registrar's configuration, built by rserpool.tap: off
unless enabled, TLS only, one gate shared with the admin door, and the
example cluster's files."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet import reactor

from rserpool.config import ConfigError, load_config
from rserpool.gate import Gate
from rserpool.service.enrp import EnrpService
from rserpool.tap import build_registrar

EXAMPLE = Path(__file__).resolve().parent.parent / "etc" / "cluster"


def _ini(tmp_path, enrp: str, tls: str = "", admin: str = "") -> str:
    (tmp_path / "authz.rules").write_text("reg-b.test peer *\n")
    path = tmp_path / "registrar.ini"
    path.write_text(f"[registrar]\nasap_listen = tcp:port=0:interface=127.0.0.1\nstate_dir = state\n{tls}"
                    f"[security]\nrules = authz.rules\n[admin]\nlisten = {admin}\n[enrp]\n{enrp}")
    return str(path)


def _enrp(service):
    return [child for child in service if isinstance(child, EnrpService)]


def test_off_by_default_and_in_the_single_registrar_example(tmp_path):
    assert _enrp(build_registrar(load_config(_ini(tmp_path, "")), reactor)) == []
    root = Path(__file__).resolve().parent.parent
    assert load_config(str(root / "etc" / "registrar.ini"))["enrp"]["enabled"] is False


def test_never_without_tls(tmp_path):
    ini = _ini(tmp_path, "enabled = yes\n", tls="[tls]\nenabled = no\n")
    with pytest.raises(ConfigError, match="needs TLS"):
        build_registrar(load_config(ini), reactor)


def test_built_with_its_peers_and_the_shared_gate(tmp_path):
    ini = _ini(tmp_path, "enabled = yes\nlisten = tcp:port=0:interface=127.0.0.1\n"
                         "peers = 127.0.0.1:9999 reg-b.test\nheartbeat_cycle = 7\nmax_pes_per_peer = 99\n",
               admin="tcp:port=0:interface=127.0.0.1")
    registrar = build_registrar(load_config(ini), reactor)
    [enrp] = _enrp(registrar)
    assert enrp.core.settings.heartbeat_cycle == 7 and enrp.core.settings.peer_limits.max_pes == 99
    assert enrp.core.server_id == registrar.server_id and enrp.core.handlespace is registrar.handlespace
    assert [(e.host, e.port, e.tls_name) for e in enrp.connector.candidates.static] == [
        ("127.0.0.1", 9999, "reg-b.test")]
    assert isinstance(enrp.gate, Gate) and enrp.gate is registrar.gate
    from rserpool.admin import AdminService
    [admin] = [child for child in registrar if isinstance(child, AdminService)]
    assert admin.access.gate is enrp.gate  # one gate for every door
    assert enrp.local_change in registrar.change_listeners


@pytest.mark.parametrize("line", ["peers = not-a-host-port:x\n", "presence_listen = nonsense\n",
                                  "heartbeat_cycle = 0\n"])
def test_bad_values_are_configuration_errors(tmp_path, line):
    with pytest.raises(ConfigError):
        build_registrar(load_config(_ini(tmp_path, "enabled = yes\n" + line)), reactor)


@pytest.mark.parametrize("letter", "abc")
def test_the_cluster_example_is_valid(letter):
    config = load_config(str(EXAMPLE / f"registrar-{letter}.ini"))
    assert config["enrp"]["enabled"] and len(config["enrp"]["peers"]) == 2
    assert config["tls"]["certificate"].endswith(f"registrar-{letter}.rserpool.test.pem")
    rules = (EXAMPLE / "authz.rules").read_text()
    for other in "abc":
        assert f"registrar-{other}.rserpool.test     peer" in rules
