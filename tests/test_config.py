import pytest

from rserpool.config import ConfigError, load_config, schema_markdown
from rserpool.tap import Options, build_registrar


def test_defaults_and_types(tmp_path):
    config = load_config(text="[asap]\nkeepalive_interval = 2.5\n")
    assert config["asap"]["keepalive_interval"] == 2.5
    assert config["tls"]["enabled"] is True
    assert config["security"]["allow_unauthenticated"] is False


@pytest.mark.parametrize("text", [
    "[nope]\nx = 1\n",
    "[asap]\nkeepalive_intervall = 1\n",
    "[asap]\nkeepalive_interval = -1\n",
    "[tls]\nenabled = maybe\n",
    "[registrar]\nserver_id = 0x100000000\n",
])
def test_errors(text):
    with pytest.raises(ConfigError):
        load_config(text=text)


def test_paths_relative_to_file(tmp_path):
    path = tmp_path / "r.ini"
    path.write_text("[security]\nrules = my.rules\n")
    assert load_config(str(path))["security"]["rules"] == str(tmp_path / "my.rules")


def test_schema_doc_lists_every_key():
    text = schema_markdown()
    assert "`keepalive_interval`" in text and "## [security]" in text


def test_tap_options_build_a_registrar(tmp_path):
    (tmp_path / "authz.rules").write_text("pe1 register echo\n")
    ini = tmp_path / "r.ini"
    ini.write_text(f"[registrar]\nstate_dir = {tmp_path}/var\n")
    options = Options()
    options.parseOptions(["--config", str(ini), "--listen", "tcp:0:interface=127.0.0.1",
                          "--server-id", "0x42", "--announce", "127.0.0.1:3863"])
    service = build_registrar(options.config)
    assert service.server_id == 0x42
    assert service.listen == ("tcp:0:interface=127.0.0.1",)
    assert service.announce_targets == (("127.0.0.1", 3863),)
    assert service.tls_options is not None
    assert (tmp_path / "var" / "pki" / "ca.pem").exists()
    assert service.authorizer.authorize("pe1", frozenset(), "register", b"echo") is True
    assert service.authorizer.authorize("pe2", frozenset(), "register", b"echo") is False


def test_missing_rules_file_is_an_error(tmp_path):
    ini = tmp_path / "r.ini"
    ini.write_text(f"[registrar]\nstate_dir = {tmp_path}/var\n[security]\nrules = missing.rules\n")
    with pytest.raises(ConfigError, match="missing.rules"):
        build_registrar(load_config(str(ini)))
    with pytest.raises(SystemExit) as exit:  # twistd's options stop there, one line
        Options().parseOptions(["--config", str(ini)])
    assert exit.value.code == 1


def test_plugin_sections(tmp_path):
    config = load_config(text="[authorizer:ldap]\nuri = ldap://127.0.0.1\nbind_password_file = pw\n")
    options = config.plugin_options("authorizer", "ldap")
    assert options["uri"] == "ldap://127.0.0.1"
    assert options["bind_password_file"].endswith("/pw") and options["bind_password_file"].startswith("/")
    assert config.plugin_options("authorizer", "file") == {}


def test_configuration_reference_is_current():
    """docs/configuration.md is generated: regenerate it with
    `rserpool config-doc > docs/configuration.md` after changing the schema."""
    from pathlib import Path

    doc = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    assert doc.read_text() == schema_markdown()


def test_shipped_configuration_is_valid():
    from pathlib import Path

    etc = Path(__file__).resolve().parent.parent / "etc"
    for ini in sorted(etc.glob("*.ini")):
        load_config(str(ini))
