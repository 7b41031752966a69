"""The shipped configuration (etc/registrar.ini and etc/authz.rules) for tests.

:func:`shipped_ini` copies both files into a test directory and changes only
what a test must not share with other runs: the listening port (an
ephemeral one on 127.0.0.1), the state directory (so the development PKI is
created fresh) and the announce targets (none: no datagrams to a fixed
port).  Everything else is exactly what ``scripts/run`` starts with.
"""

from __future__ import annotations

import re
from pathlib import Path

ETC = Path(__file__).resolve().parent.parent / "etc"

_CHANGES = (
    (r"(?m)^asap_listen = .*$", "asap_listen = tcp:0:interface=127.0.0.1"),
    (r"(?m)^state_dir = .*$", "state_dir = var"),
    (r"(?m)^targets = .*$", "targets ="),
)


def shipped_ini(directory: Path) -> Path:
    """``directory/registrar.ini``: the shipped file with the three changes above."""
    text = (ETC / "registrar.ini").read_text()
    for pattern, replacement in _CHANGES:
        text, count = re.subn(pattern, replacement, text)
        if count != 1:
            raise AssertionError(f"etc/registrar.ini: expected one line matching {pattern!r}")
    (directory / "authz.rules").write_text((ETC / "authz.rules").read_text())
    ini = directory / "registrar.ini"
    ini.write_text(text)
    return ini
