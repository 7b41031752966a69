"""A private OpenLDAP slapd for integration tests.

``Slapd(base_dir)`` writes a private ``slapd.conf`` made from the example
``etc/ldap/slapd.conf`` (``../shared/notes/aaa-recipes.md`` section 3): the
schema include, pid/args files, database directory and admin password are
replaced, the ``security simple_bind`` line is dropped (the tests also bind
without TLS), and the TLS lines point at the test PKI when one is given.

``start()`` runs ``slapd -d 0 -f slapd.conf -h "ldap://127.0.0.1:PORT/
[ldaps://127.0.0.1:TLS_PORT/]"`` and polls with a simple bind (bounded, no
fixed sleep).  ``load()`` adds ``etc/ldap/example.ldif`` online with
``ldapadd``, so the memberof overlay fills ``memberOf``.  ``stop()`` sends
SIGTERM; the database survives a restart.  ``pause()``/``resume()`` send
SIGSTOP/SIGCONT.  The process management is ``tests.aaahelpers.BackendProcess``.
"""

from __future__ import annotations

import base64
import re
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.aaahelpers import BackendProcess, free_port

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "etc" / "ldap"
SUFFIX = "dc=rserpool,dc=test"
ADMIN_DN = f"cn=admin,{SUFFIX}"
SERVICE_DN = f"uid=enrp-svc,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "svc-secret"  # etc/ldap/example.ldif
PE_BASE = f"ou=elements,{SUFFIX}"
GROUP_BASE = f"ou=pools,{SUFFIX}"
START_POLLS = 400  # 25 ms apart: at most about 10-20 s


def free_tcp_port() -> int:
    return free_port(socket.SOCK_STREAM)


def _replace(text: str, pattern: str, replacement: str) -> str:
    new, count = re.subn(pattern, lambda _m: replacement, text, flags=re.MULTILINE)
    if count == 0:
        raise RuntimeError(f"slapd.conf: pattern {pattern!r} not found")
    return new


def ldif_value(name: str, value: bytes | str) -> str:
    """One LDIF attribute line, base64 (``::``) for anything but plain ASCII."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if data and all(32 < b < 127 for b in data) and data[:1] not in (b":", b"<"):
        return f"{name}: {data.decode('ascii')}"
    return f"{name}:: {base64.b64encode(data).decode('ascii')}"


class Slapd(BackendProcess):
    """One private slapd on 127.0.0.1 (plain port, and ldaps if ``tls``)."""

    name = "slapd"
    stop_timeout = 10.0

    def __init__(self, base_dir: Path, *, executable: str = "slapd",
                 tls: tuple[Path, Path, Path] | None = None) -> None:
        """``tls``: (server certificate, key, CA certificate) PEM paths."""
        super().__init__(base_dir, executable, "slapd.log")
        self.tls = tls
        self.port = free_tcp_port()
        self.tls_port = free_tcp_port() if tls else None
        self.admin_password = secrets.token_hex(12)
        self.conf = self.base / "slapd.conf"
        self.db = self.base / "db"

    @property
    def uri(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_uri(self) -> str:
        if self.tls_port is None:
            raise RuntimeError("no ldaps listener")
        return f"ldaps://127.0.0.1:{self.tls_port}"

    def configure(self) -> None:
        if self._configured:
            return
        self.base.mkdir(parents=True, exist_ok=True)
        self.db.mkdir(exist_ok=True)
        shutil.copyfile(EXAMPLES / "rserpool.schema", self.base / "rserpool.schema")
        hashed = subprocess.run(["slappasswd", "-s", self.admin_password], check=True,
                                capture_output=True, timeout=30).stdout.decode().strip()
        text = (EXAMPLES / "slapd.conf").read_text()
        text = _replace(text, r"^include /etc/ldap/schema/rserpool\.schema$",
                        f"include {self.base / 'rserpool.schema'}")
        text = _replace(text, r"^pidfile .*$", f"pidfile {self.base / 'slapd.pid'}")
        text = _replace(text, r"^argsfile .*$", f"argsfile {self.base / 'slapd.args'}")
        text = _replace(text, r"^directory .*$", f"directory {self.db}")
        text = _replace(text, r"^rootpw .*$", f"rootpw {hashed}")
        text = _replace(text, r"^security simple_bind=128$", "")
        if self.tls:
            cert, key, ca = self.tls
            text = _replace(text, r"^TLSCertificateFile .*$", f"TLSCertificateFile {cert}")
            text = _replace(text, r"^TLSCertificateKeyFile .*$", f"TLSCertificateKeyFile {key}")
            text = _replace(text, r"^TLSCACertificateFile .*$", f"TLSCACertificateFile {ca}")
        else:
            text = _replace(text, r"^TLS\w+ .*$", "")
        self.conf.write_text(text)
        self._configured = True

    def listeners(self) -> str:
        urls = [f"ldap://127.0.0.1:{self.port}/"]
        if self.tls_port is not None:
            urls.append(f"ldaps://127.0.0.1:{self.tls_port}/")
        return " ".join(urls)

    def command(self) -> list[str]:
        return [self.executable, "-d", "0", "-f", str(self.conf), "-h", self.listeners()]

    def _wait_ready(self) -> None:
        for _ in range(START_POLLS):
            self._check_running()
            probe = subprocess.run(
                ["ldapwhoami", "-x", "-H", self.uri, "-D", ADMIN_DN, "-w", self.admin_password,
                 "-o", "nettimeout=1"],
                capture_output=True, timeout=10, stdin=subprocess.DEVNULL,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.025)
        raise self._not_ready()

    def ldap_tool(self, tool: str, ldif: str) -> None:
        """Run ``ldapadd``/``ldapmodify`` as the admin with ``ldif`` on stdin."""
        result = subprocess.run(
            [tool, "-x", "-H", self.uri, "-D", ADMIN_DN, "-w", self.admin_password],
            input=ldif.encode("utf-8"), capture_output=True, timeout=30,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): "
                               + result.stderr.decode(errors="replace"))

    def load(self, path: Path = EXAMPLES / "example.ldif") -> None:
        self.ldap_tool("ldapadd", Path(path).read_text())

    def replace(self, dn: str, attributes: dict[str, list[bytes | str]]) -> None:
        """Replace attribute values of one entry (an empty list deletes)."""
        lines = [f"dn: {dn}", "changetype: modify"]
        for name, values in attributes.items():
            lines.append(f"replace: {name}")
            lines.extend(ldif_value(name, value) for value in values)
            lines.append("-")
        self.ldap_tool("ldapmodify", "\n".join(lines) + "\n")
