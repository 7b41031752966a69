"""benchmarks/bench_sessions.py's C session generator (``sessgen.c``)
against a real registrar: certificate, SRP-6a and CHAP sessions (the PE
library's pipelined exchange, channel-bound, then a registration), with and
without TLS resumption, in short windows.  A registrar whose store holds
other secrets refuses every SRP proof and CHAP response, so the generator's
arithmetic is what the registrar checks, not something it takes on trust.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI, require_tool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_sessions as bs  # noqa: E402

IDENTITIES = 4
SLOTS = 8
WARMUP, MEASURE = 0.2, 0.3


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    require_tool("gcc")
    require_tool("taskset")
    directory = tmp_path_factory.mktemp("sessions")
    try:
        binary = bs.build_sessgen(directory)
    except subprocess.CalledProcessError as exc:  # e.g. no OpenSSL headers (libssl-dev)
        if IN_CI:
            pytest.fail(f"building sessgen.c failed: {exc}")
        pytest.skip(f"building sessgen.c failed (libssl-dev missing?): {exc}")
    pki = bs.make_pki(directory, IDENTITIES)
    credentials, rules, verifiers = bs.write_credentials(directory, IDENTITIES)
    scripts = {"cert": directory / "cert.sg"}
    bs.write_sessgen_script(scripts["cert"], pki)
    for mechanism in ("srp", "chap"):
        scripts[mechanism] = directory / f"{mechanism}.sg"
        bs.write_auth_script(scripts[mechanism], mechanism, IDENTITIES, verifiers)
    return directory, binary, pki, credentials, rules, verifiers, scripts


@pytest.fixture
def registrar_env(monkeypatch):
    # The registrar child imports rserpool from this checkout.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def sessions(bench, server, mechanism: str, resume: bool = False) -> dict:
    directory, binary, pki, *_, scripts = bench
    argv = bs.sessgen_command(binary, scripts[mechanism], pki.ca, server, SLOTS, WARMUP, MEASURE, resume)
    return bs.run_generator(["taskset", "-c", bs.GENERATOR_CPU, *argv], server, False)


@pytest.mark.integration
def test_sessgen_completes_cert_srp_and_chap_sessions(bench, registrar_env):
    directory, binary, pki, credentials, rules, *_ = bench
    server = bs.start_registrar(directory, "registrar", pki, credentials, rules, tickets=True)
    try:
        for mechanism in ("srp", "chap", "cert"):
            result = sessions(bench, server, mechanism)
            assert result["completed"] > 0, (mechanism, result)
            assert sum(result["errors"].values()) == 0, (mechanism, result)
            assert result["resumed"] == 0
        for mechanism in ("srp", "chap"):
            result = sessions(bench, server, mechanism, resume=True)
            assert result["completed"] > 0 and sum(result["errors"].values()) == 0, (mechanism, result)
            # Only each slot's first session is a full handshake (usually in the warm-up).
            assert result["resumed"] > 0 and result["resumed"] >= result["completed"] - SLOTS, (mechanism, result)
    finally:
        server.stop()


@pytest.mark.integration
def test_sessgen_sessions_fail_against_other_secrets(bench, registrar_env):
    from rserpool.backends.filestore_format import chap_line, srp_line
    from rserpool.security.srp import make_verifier

    directory, binary, pki, _, rules, verifiers, _ = bench
    wrong = directory / "wrong-credentials"
    lines = []
    for i, (salt, _) in enumerate(verifiers):  # the same salts: the proof itself must fail
        lines.append(srp_line(bs.identity("srp", i), salt, make_verifier(bs.identity("srp", i), "other", salt=salt)[1]))
        lines.append(chap_line(bs.identity("chap", i), b"other"))
    wrong.write_text("\n".join(lines) + "\n")
    wrong.chmod(0o600)
    server = bs.start_registrar(directory, "wrong", pki, wrong, rules, tickets=False)
    try:
        for mechanism in ("srp", "chap"):
            result = sessions(bench, server, mechanism)
            assert result["completed_total"] == 0, (mechanism, result)
            assert result["errors"]["auth"] > 0, (mechanism, result)
            assert result["errors"]["auth"] == sum(result["errors"].values()), (mechanism, result)
    finally:
        server.stop()


def test_field_offsets_finds_the_two_fields():
    blank = bytes(8) + bytes(3) + bytes(2) + bytes(5)
    full = bytes(8) + b"\xff" * 3 + bytes(2) + b"\xff" * 5
    assert bs.field_offsets(blank, full, (3, 5)) == (8, 13)
    with pytest.raises(ValueError):
        bs.field_offsets(blank, full, (3, 4))
