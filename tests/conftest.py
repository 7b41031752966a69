"""Shared pytest configuration.

``require_tool(name)`` is how a test asks for an external program (tshark,
text2pcap, freeradius, slapd, openssl).  On a developer's machine a missing
tool skips the test; under CI (``CI=true``) it fails it, so that a broken
install can never hide behind a skip.
"""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        message = f"{name} is not installed (scripts/bootstrap installs it as root)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def tool():
    return require_tool
