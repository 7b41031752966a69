"""Start-up failures: the real ``twistd rserpool-registrar`` ends at once
with exit status 1 and one line naming the key, option or file and what is
wrong (no --help text, no traceback, nothing left running), and
``rserpool config-check`` finds the same problems (``rserpool.startup``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rserpool.cli import main
from rserpool.config import load_config
from rserpool.startup import check as _check
from rserpool.tap import build_registrar
from tests.tlshelpers import make_test_pki

ROOT = Path(__file__).resolve().parent.parent
TWISTD = Path(sys.executable).parent / "twistd"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def site(tmp_path):
    """A directory with a rules file and a PSK file."""
    (tmp_path / "authz.rules").write_text("pe1 register,deregister echo\n* resolve *\n")
    return tmp_path


def base(site: Path, extra: str = "", listen: str = "tcp:port=0:interface=127.0.0.1") -> Path:
    text = (f"[registrar]\nasap_listen = {listen}\nstate_dir = {site / 'state'}\n"
            f"[announce]\ntargets =\n[admin]\nlisten =\n"
            f"[security]\nrules = {site / 'authz.rules'}\n") + extra
    sections: dict[str, list[str]] = {}
    order: list[str] = []
    current = None
    for line in text.splitlines():  # merge repeated sections: later keys win
        if line.startswith("["):
            current = line
            if current not in sections:
                sections[current], _ = [], order.append(current)
            continue
        key = line.split("=", 1)[0].strip()
        sections[current] = [k for k in sections[current] if k.split("=", 1)[0].strip() != key]
        sections[current].append(line)
    path = site / "registrar.ini"
    path.write_text("\n".join(f"{s}\n" + "\n".join(sections[s]) for s in order) + "\n")
    return path


def check(config, **kwargs):
    return _check(config, build=build_registrar, **kwargs)


def busy_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def twistd(*args: str, cwd: Path | None = None, timeout: float = 30) -> tuple[int, str, str, float]:
    started = time.monotonic()
    result = subprocess.run([str(TWISTD), "--nodaemon", "--pidfile=", "rserpool-registrar", *args],
                            capture_output=True, text=True, timeout=timeout, cwd=cwd,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return result.returncode, result.stdout, result.stderr, time.monotonic() - started


def assert_fails(args: list[str], *expected: str, cwd: Path | None = None) -> None:
    """twistd exits 1 at once with one line per expected regex, nothing else."""
    import re

    status, out, err, elapsed = twistd(*args, cwd=cwd)
    lines = err.splitlines()
    assert status == 1, (status, out, err)
    assert out == "", out  # no --help text, no log: nothing started
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected):
        assert re.fullmatch("twistd rserpool-registrar: " + pattern, line), line
        assert "Traceback" not in line and "Usage" not in line
    assert elapsed < 15


# -- the real twistd ------------------------------------------------------------------------


@pytest.mark.integration
class TestTwistdStartupFailures:
    def test_port_in_use(self, site):
        with busy_port() as s:
            port = s.getsockname()[1]
            assert_fails(["--config", str(base(site, listen=f"tcp:port={port}:interface=127.0.0.1"))],
                         rf"\[registrar\] asap_listen: tcp:port={port}:interface=127\.0\.0\.1: cannot "
                         rf"listen on 127\.0\.0\.1:{port}: address already in use .*")

    def test_port_in_use_given_on_the_command_line(self, site):
        with busy_port() as s:
            port = s.getsockname()[1]
            assert_fails(["--config", str(base(site)), "--listen", f"tcp:port={port}:interface=127.0.0.1"],
                         rf"--listen: tcp:port={port}:.*address already in use .*")

    def test_malformed_listen_string(self, site):
        assert_fails(["--config", str(base(site)), "--listen", "tcp:port=abc"],
                     r"--listen: tcp:port=abc: not a usable endpoint string: port abc is not a number .*")

    def test_unknown_endpoint_type(self, site):
        assert_fails(["--config", str(base(site, listen="foo:bar"))],
                     r"\[registrar\] asap_listen: foo:bar: not a usable endpoint string: .*foo.*")

    def test_interface_this_host_does_not_have(self, site):
        assert_fails(["--config", str(base(site, listen="tcp:port=0:interface=192.0.2.77"))],
                     r"\[registrar\] asap_listen: .*: cannot listen on 192\.0\.2\.77:0: this host has "
                     r"no address 192\.0\.2\.77")

    def test_missing_certificate_and_key(self, site, pki):
        ini = base(site, f"[tls]\ncertificate = {site / 'nope.pem'}\nprivate_key = {site / 'nope.key'}\n"
                         f"ca_certificates = {pki.ca.cert}\n")
        assert_fails(["--config", str(ini)], r"\[tls\] certificate: .*nope\.pem: no such file",
                     r"\[tls\] private_key: .*nope\.key: no such file")

    def test_key_that_is_not_pem(self, site, pki):
        (site / "bad.key").write_text("garbage\n")
        ini = base(site, f"[tls]\ncertificate = {pki.server.cert}\nprivate_key = {site / 'bad.key'}\n"
                         f"ca_certificates = {pki.ca.cert}\n")
        assert_fails(["--config", str(ini)], r"\[tls\] private_key: .*bad\.key: not a PEM private key")

    def test_key_not_matching_the_certificate(self, site, pki):
        ini = base(site, f"[tls]\ncertificate = {pki.server.cert}\nprivate_key = {pki.pe1.key}\n"
                         f"ca_certificates = {pki.ca.cert}\n")
        assert_fails(["--config", str(ini)],
                     r"\[tls\] private_key: .*pe1\.key: this private key does not match the "
                     r"certificate in .*server\.pem")

    def test_unknown_plugin(self, site):
        assert_fails(["--config", str(base(site, "[security]\nauthorizer = nosuch\n"))],
                     r"\[security\] authorizer: unknown authorizer plugin 'nosuch' \(available: file, "
                     r"ldap, radius; .*\)")

    def test_missing_rules_file(self, site):
        assert_fails(["--config", str(base(site, f"[security]\nrules = {site / 'nope.rules'}\n"))],
                     r"\[security\] rules: .*nope\.rules: no such file .*")

    def test_malformed_rules_file(self, site):
        (site / "bad.rules").write_text("pe1 register\n")
        assert_fails(["--config", str(base(site, f"[security]\nrules = {site / 'bad.rules'}\n"))],
                     r"\[security\] rules: .*bad\.rules.*")

    def test_backend_configuration(self, site):
        assert_fails(["--config", str(base(site, "[security]\nauthorizer = radius\n"))],
                     r"\[security\] authorizer: authorizer plugin 'radius': option 'servers' is required "
                     r"\(the \[radius\] section\)")

    def test_psk_too_short(self, site):
        psk = site / "keys.psk"
        psk.write_text("pe1 00112233\n")
        psk.chmod(0o600)
        assert_fails(["--config", str(base(site, f"[tls]\npsk_file = {psk}\n"))],
                     r"\[tls\] psk_file: .*keys\.psk:1: a PSK has 16 to 512 bytes")

    def test_no_config_option(self, tmp_path):
        assert_fails([], r"--config FILE is required: .*", cwd=tmp_path)

    def test_missing_config_file(self, tmp_path):
        assert_fails(["--config", "nope.ini"],
                     r"nope\.ini: cannot read the configuration file: no such file or directory",
                     cwd=tmp_path)

    def test_every_problem_of_the_file_at_once(self, site):
        ini = site / "bad.ini"
        ini.write_text("[registrar]\nfoo = 1\nserver_id = zz\n[tls]\nenabled = maybe\n")
        assert_fails(["--config", str(ini)], r".*bad\.ini: unknown key 'foo' in \[registrar\] .*",
                     r".*bad\.ini: \[registrar\] server_id = 'zz': not a number",
                     r".*bad\.ini: \[tls\] enabled = 'maybe': not a boolean: .*")

    def test_bad_log_level(self, site):
        assert_fails(["--config", str(base(site)), "--log-level", "loud"],
                     r"--log-level: unknown log level 'loud' \(one of debug, info, warn, error, critical\)")

    def test_a_good_configuration_starts_and_stops(self, site):
        ini = base(site)
        process = subprocess.Popen([str(TWISTD), "--nodaemon", "--pidfile=", "rserpool-registrar",
                                    "--config", str(ini)], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        lines = []
        try:
            for line in process.stdout:
                lines.append(line)
                if "listening for ASAP on" in line:
                    break
            time.sleep(1.0)  # the reactor runs (and handles SIGINT) just after that line
        finally:
            process.send_signal(2)
            rest, _ = process.communicate(timeout=30)
        lines += rest.splitlines(keepends=True)
        assert any("listening for ASAP on 127.0.0.1:" in line for line in lines), lines
        assert lines[-1].rstrip().endswith("Server Shut Down.")
        # The check's own build of the registrar logs nothing (one line each).
        assert sum("using the DEVELOPMENT PKI" in line for line in lines) == 1


# -- the same checks, in-process and through config-check --------------------------------


def test_check_lists_every_independent_problem(site, pki):
    (site / "short.secret").write_text("too short\n")
    ini = base(site, f"[tls]\ncertificate = {site / 'nope.pem'}\nprivate_key = {pki.pe1.key}\n"
                     f"ca_certificates = {site / 'nope-ca.pem'}\n"
                     f"[security]\nrules = {site / 'nope.rules'}\n"
                     f"server_secret_file = {site / 'short.secret'}\n",
               listen="tcp:port=x")
    problems = check(load_config(str(ini)))
    assert [p.split(":")[0] for p in problems] == [
        "[registrar] asap_listen", "[tls] certificate", "[tls] ca_certificates", "[security] rules",
        "[security] server_secret_file"]


def test_a_good_configuration_has_no_problem_and_binds_nothing(site):
    with busy_port() as s:
        ini = base(site, listen=f"tcp:port={s.getsockname()[1]}:interface=127.0.0.1")
        assert check(load_config(str(ini))) == []  # no trial bind: the port in use is not seen
        assert len(check(load_config(str(ini)), try_bind=True)) == 1
    assert not (site / "state").exists()  # the development PKI went to a scratch directory


@pytest.mark.parametrize("extra,expected", [
    ("[security]\nauthorizer = nosuch\n", "[security] authorizer: unknown authorizer plugin 'nosuch'"),
    ("[security]\nauthenticators = certificate,psk\n",
     "[security] authenticators: lists psk, but [tls] psk_file is empty"),
    ("[security]\nauthorizer = ldap\n",
     "[security] authorizer: authorizer plugin 'ldap': option 'uri' is required"),
])
def test_config_check_reports_the_problems(site, capsys, extra, expected):
    ini = base(site, extra)
    assert main(["config-check", str(ini)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"{ini}: {expected}")
    assert len(captured.err.splitlines()) == 1


def test_config_check_try_bind(site, capsys):
    with busy_port() as s:
        port = s.getsockname()[1]
        ini = base(site, listen=f"tcp:port={port}:interface=127.0.0.1")
        assert main(["config-check", str(ini)]) == 0
        assert capsys.readouterr().out == f"{ini}: valid\n"
        assert main(["config-check", "--try-bind", str(ini)]) == 1
        assert f"cannot listen on 127.0.0.1:{port}: address already in use" in capsys.readouterr().err
