"""The shipped configuration (etc/registrar.ini and etc/authz.rules) for tests.

:func:`shipped_ini` copies both files into a test directory and changes only
what a test must not share with other runs: the listening ports (ASAP
and the admin endpoint: ephemeral ones on 127.0.0.1), the state directory
(so the development PKI is created fresh) and the announce targets (none:
no datagrams to a fixed port).  Everything else is exactly what ``scripts/run`` starts with.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ETC = Path(__file__).resolve().parent.parent / "etc"

_CHANGES = (
    (r"(?m)^asap_listen = .*$", "asap_listen = tcp:0:interface=127.0.0.1"),
    (r"(?m)^state_dir = .*$", "state_dir = var"),
    (r"(?m)^targets = .*$", "targets ="),
    (r"(?m)^listen = tcp:port=8864:.*$", "listen = tcp:0:interface=127.0.0.1"),  # [admin]
)


def shipped_ini(directory: Path) -> Path:
    """``directory/registrar.ini``: the shipped file with the changes above."""
    text = (ETC / "registrar.ini").read_text()
    for pattern, replacement in _CHANGES:
        text, count = re.subn(pattern, replacement, text)
        if count != 1:
            raise AssertionError(f"etc/registrar.ini: expected one line matching {pattern!r}")
    (directory / "authz.rules").write_text((ETC / "authz.rules").read_text())
    ini = directory / "registrar.ini"
    ini.write_text(text)
    return ini


def shipped_registrar(directory: Path, reactor: Any, *, rules: str = "", changes: tuple = (),
                      extra: str = "") -> Any:
    """The RegistrarService ``twistd rserpool-registrar`` builds from the
    shipped files (see :func:`shipped_ini`), not started.  ``rules`` is
    appended to the shipped authz.rules (a site granting more identities);
    ``changes`` are further ``(pattern, replacement)`` edits of the ini and
    ``extra`` is appended to it, for the tests that show what an option
    changes."""
    from rserpool.config import load_config
    from rserpool.tap import build_registrar

    ini = shipped_ini(directory)
    text = ini.read_text()
    for pattern, replacement in changes:
        text, count = re.subn(pattern, replacement, text)
        if count != 1:
            raise AssertionError(f"expected one line matching {pattern!r}")
    ini.write_text(text + extra)
    if rules:
        with open(directory / "authz.rules", "a") as handle:
            handle.write(rules)
    return build_registrar(load_config(str(ini)), reactor)


def dev_pki(directory: Path) -> Path:
    """The development PKI the shipped registrar in ``directory`` made."""
    return directory / "var" / "pki"


def dev_client_certificate(directory: Path, name: str, role: str = "pe") -> tuple[Path, Path]:
    """A client certificate for ``name`` from the development CA of the
    shipped registrar in ``directory`` (what an operator issues to a new PE
    or PU): its (certificate, key) files."""
    from rserpool.security import devpki, pki

    pki_dir = dev_pki(directory)
    ca = devpki.load_dev_ca(pki_dir)
    issued = pki.create_client_certificate(ca, name, datetime.now(timezone.utc), role=role)
    cert = pki.write_certificate(pki_dir / f"{name}-client.pem", issued.certificate, *issued.chain)
    key = pki.write_private_key(pki_dir / f"{name}-client.key", issued.private_key)
    return cert, key
