"""rserpool config-doc and config-check, through rserpool.cli.main."""

from __future__ import annotations

from pathlib import Path

from rserpool.cli import main
from rserpool.config import schema_markdown

ETC = Path(__file__).resolve().parent.parent / "etc"


def test_config_doc_prints_the_schema(capsys) -> None:
    assert main(["config-doc"]) == 0
    assert capsys.readouterr().out == schema_markdown()


def test_config_check_accepts_the_shipped_configuration(capsys) -> None:
    path = str(ETC / "registrar.ini")
    assert main(["config-check", path]) == 0
    assert capsys.readouterr().out == f"{path}: valid\n"


def test_config_check_reports_an_invalid_file(tmp_path, capsys) -> None:
    path = tmp_path / "bad.ini"
    path.write_text("[registrar]\nno_such_key = 1\n")
    assert main(["config-check", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"{path}: unknown key 'no_such_key' in [registrar] "
                            "(known: server_id, asap_listen, state_dir)\n")


def test_config_check_refuses_a_psk_shorter_than_the_registrar_takes(tmp_path, capsys) -> None:
    # Issue 12: config-check called a configuration with a 2-byte PSK valid,
    # and that configuration then stopped the registrar at start-up.
    from tests.shipped import shipped_ini

    keys = tmp_path / "psk.keys"
    keys.write_text("pe-psk 0011\n")
    keys.chmod(0o600)
    ini = shipped_ini(tmp_path)
    ini.write_text(ini.read_text().replace("\npsk_file =\n", "\npsk_file = psk.keys\n"))
    assert main(["config-check", str(ini)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"[tls] psk_file: {keys}:1: a PSK has 16 to 512 bytes" in captured.err
