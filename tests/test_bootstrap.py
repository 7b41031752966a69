"""scripts/bootstrap: the editable install that twistd's plugin scan sees,
and one progress line per step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.integration


def test_twistd_lists_the_registrar_plugin_from_any_directory(tmp_path):
    # From a directory that is not the checkout: the install must put the
    # checkout's twisted/plugins on sys.path, not the current directory.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([str(BIN / "twistd"), "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert any(line.split()[:1] == ["rserpool-registrar"] for line in result.stdout.splitlines()), \
        result.stdout


def test_the_install_is_a_plain_path_not_the_transitional_compat_mode():
    bootstrap = (ROOT / "scripts" / "bootstrap").read_text()
    assert "editable_mode=compat" not in bootstrap.replace("`editable_mode=compat`", "")
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    (pth,) = site.glob("__editable__*rserpool*.pth")
    assert pth.read_text().split() == [str(ROOT)]


def test_bootstrap_prints_one_line_per_step_and_is_idempotent():
    result = subprocess.run([str(ROOT / "scripts" / "bootstrap")], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    steps = [line for line in result.stderr.splitlines() if not line.startswith("bootstrap:   pip: ")]
    assert [line[:len("bootstrap: [1/4]")] for line in steps] == [
        f"bootstrap: [{n}/4]" for n in range(1, 5)], result.stderr
    assert "twistd lists rserpool-registrar" in steps[-1]
    again = subprocess.run([str(ROOT / "scripts" / "bootstrap")], capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and "up to date" in again.stderr, again.stderr
