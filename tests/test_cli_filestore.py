"""rserpool srp|chap|certmap|group|store|rules commands, through rserpool.cli.main."""

from __future__ import annotations

import os

import pytest

from rserpool.backends import filestore as fs
from rserpool.backends import filestore_format as fmt
from rserpool.cli import main
from rserpool.security import srp


@pytest.fixture
def creds(tmp_path):
    return str(tmp_path / "credentials")


@pytest.fixture
def password_file(tmp_path):
    path = tmp_path / "password"
    path.write_text("correct horse battery\nignored second line\n")
    return str(path)


def test_srp_add_makes_a_working_verifier(creds, password_file, capsys) -> None:
    assert main(["srp", "add", "pe1", "--password-file", password_file, "--file", creds]) == 0
    out = capsys.readouterr()
    assert "added SRP verifier for pe1" in out.out and "correct horse" not in out.out + out.err
    assert os.stat(creds).st_mode & 0o777 == 0o600
    entry = fmt.parse_credentials(open(creds).read()).srp["pe1"]
    expected = srp.make_verifier("pe1", "correct horse battery", salt=entry.salt)[1]
    assert entry.verifier == expected
    assert main(["srp", "add", "pe1", "--password-file", password_file, "--file", creds]) == 1
    assert "already has an SRP verifier" in capsys.readouterr().err
    assert main(["srp", "add", "pe1", "--password-file", password_file, "--file", creds, "--replace"]) == 0
    assert fmt.parse_credentials(open(creds).read()).srp["pe1"].salt != entry.salt
    assert main(["srp", "remove", "pe1", "--file", creds]) == 0
    assert main(["srp", "remove", "pe1", "--file", creds]) == 1
    assert not fmt.parse_credentials(open(creds).read()).srp


def test_no_tty_and_no_file_is_an_error(creds, capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", open(os.devnull))
    assert main(["srp", "add", "pe1", "--file", creds]) == 1
    assert "use --password-file" in capsys.readouterr().err
    assert not os.path.exists(creds)


def test_prompt_reads_twice_with_getpass(creds, monkeypatch, capsys) -> None:
    answers = iter(["s3cret", "s3cret"])
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    assert main(["chap", "set", "pe2", "--file", creds]) == 0
    assert fmt.parse_credentials(open(creds).read()).chap["pe2"] == b"s3cret"
    assert "s3cret" not in capsys.readouterr().out
    answers = iter(["one", "two"])
    assert main(["chap", "set", "pe2", "--file", creds]) == 1
    assert "differ" in capsys.readouterr().err


def test_chap_and_groups_and_certmap(creds, password_file, capsys) -> None:
    assert main(["chap", "set", "pe2", "--secret-file", password_file, "--file", creds]) == 0
    fingerprint = "AB:" * 31 + "AB"
    assert main(["certmap", "add", fingerprint, "pe3", "--groups", "echo,ops", "--file", creds]) == 0
    assert main(["certmap", "add", "CN=pe 4,O=Example", "pe4", "--file", creds]) == 0
    assert main(["group", "set", "pe2", "echo-servers,all", "--file", creds]) == 0
    assert main(["certmap", "add", "CN=broken,,", "pe5", "--file", creds]) == 1
    assert "RFC 4514" in capsys.readouterr().err
    data = fmt.parse_credentials(open(creds).read())
    assert data.chap["pe2"] == b"correct horse battery"
    assert data.certs["sha256:" + "ab" * 32].identity == "pe3"
    assert data.groups_of("pe3") == {"echo", "ops"}
    assert data.groups_of("pe2") == {"echo-servers", "all"}
    assert main(["store", "list", "--file", creds]) == 0
    listing = capsys.readouterr().out
    assert "chap   pe2  (secret set)" in listing and "correct horse" not in listing
    assert "subject:CN=pe 4,O=Example" in listing
    assert main(["certmap", "remove", "sha256:" + "ab" * 32, "--file", creds]) == 0
    assert main(["chap", "remove", "pe2", "--file", creds]) == 0
    assert main(["group", "remove", "pe2", "--file", creds]) == 0
    data = fmt.parse_credentials(open(creds).read())
    assert not data.chap and list(data.certs) == ["subject:CN=pe 4,O=Example"]


def test_store_list_refuses_unsafe_or_malformed(creds, password_file, capsys) -> None:
    assert main(["chap", "set", "pe2", "--secret-file", password_file, "--file", creds]) == 0
    os.chmod(creds, 0o644)
    assert main(["store", "list", "--file", creds]) == 1
    assert "readable by group or others" in capsys.readouterr().err
    fs.write_atomic(creds, "chap pe2\n")
    assert main(["store", "list", "--file", creds]) == 1
    assert ":1: expected" in capsys.readouterr().err
    assert main(["chap", "set", "pe3", "--secret-file", password_file, "--file", creds]) == 1
    assert open(creds).read() == "chap pe2\n"  # an edit never writes a file that does not parse


def test_bad_identity(creds, password_file, capsys) -> None:
    assert main(["srp", "add", "@group", "--password-file", password_file, "--file", creds]) == 1
    assert "bad identity" in capsys.readouterr().err


def test_rules_check(tmp_path, capsys) -> None:
    rules = tmp_path / "authz.rules"
    rules.write_text("pe1 register,deregister echo\n@ops all *\n* resolve *\n")
    assert main(["rules", "check", str(rules)]) == 0
    assert "3 rules, OK" in capsys.readouterr().out
    assert main(["rules", "check", str(rules), "--identity", "pe1", "--action", "register",
                 "--pool", "echo"]) == 0
    assert "allowed" in capsys.readouterr().out
    assert main(["rules", "check", str(rules), "--identity", "pe2", "--action", "register",
                 "--pool", "echo"]) == 1
    assert "refused" in capsys.readouterr().out
    # ``all`` never grants the peer door (``enrp`` is read as ``peer``): only a rule naming it does.
    assert main(["rules", "check", str(rules), "--identity", "x", "--groups", "ops", "--action", "enrp",
                 "--pool", ""]) == 1
    rules.write_text("@ops peer *\n")
    assert main(["rules", "check", str(rules), "--identity", "x", "--groups", "ops", "--action", "enrp",
                 "--pool", ""]) == 0
    capsys.readouterr()
    rules.write_text("pe1 register echo\npe2 fly echo\n")
    assert main(["rules", "check", str(rules)]) == 1
    assert ":2: unknown action" in capsys.readouterr().err
