"""A private FreeRADIUS 3 instance for integration tests.

``FreeRadius(base_dir, port)`` copies ``/etc/freeradius/3.0`` (readable by
root only on Debian) into ``base_dir/raddb`` and trims it
(``../shared/notes/aaa-recipes.md`` section 2):

- radiusd.conf: private log and run directories, no ``user``/``group``
  switch, ``reject_delay = 0``, ``proxy_requests = no``;
- mods-enabled: only always, attr_filter, chap, expr, files (the stock eap
  module needs the snakeoil key);
- sites-enabled: only the example site ``etc/freeradius/sites-rserpool``,
  with its port replaced (the stock inner-tunnel listens on 18120);
- clients.conf, the users file and the vendor dictionary: the examples from
  ``etc/freeradius/``, with a random shared secret.

``start()`` runs ``freeradius -X -d raddb`` (single-threaded, debug log to
``base_dir/radiusd.log``) and polls with an Access-Request until a reply
arrives (bounded; no fixed sleep).  ``stop()`` sends SIGTERM;
``pause()``/``resume()`` send SIGSTOP/SIGCONT.  The process management is
``tests.aaahelpers.BackendProcess``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

from pyrad import packet as _packet

from rserpool.backends.radius import RadiusServer, load_dictionary
from tests.aaahelpers import BackendProcess, free_port

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "etc" / "freeradius"
SYSTEM_RADDB = Path("/etc/freeradius/3.0")
MODULES = ("always", "attr_filter", "chap", "expr", "files")
START_POLLS = 400  # 25 ms apart (each poll also waits up to 25 ms): at most about 20 s


def free_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


def _replace(text: str, pattern: str, replacement: str, path: str) -> str:
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count == 0:
        raise RuntimeError(f"{path}: pattern {pattern!r} not found")
    return new


class FreeRadius(BackendProcess):
    """One private FreeRADIUS server on 127.0.0.1:port."""

    name = "freeradius"
    stop_timeout = 5.0

    def __init__(self, base_dir: Path, port: int | None = None, secret: bytes | None = None,
                 executable: str = "freeradius") -> None:
        super().__init__(base_dir, executable, "radiusd.log")
        self.port = port or free_udp_port()
        self.secret = secret or secrets.token_hex(16).encode("ascii")
        self.raddb = self.base / "raddb"

    @property
    def server(self) -> RadiusServer:
        return RadiusServer("127.0.0.1", self.port, self.secret)

    def configure(self) -> None:
        if self._configured:
            return
        self.base.mkdir(parents=True, exist_ok=True)
        for sub in ("log", "run"):
            (self.base / sub).mkdir(exist_ok=True)
        shutil.copytree(SYSTEM_RADDB, self.raddb, symlinks=True)
        conf = self.raddb / "radiusd.conf"
        text = conf.read_text()
        text = _replace(text, r"^logdir = .*$", f"logdir = {self.base / 'log'}", "radiusd.conf")
        text = _replace(text, r"^run_dir = .*$", f"run_dir = {self.base / 'run'}", "radiusd.conf")
        text = _replace(text, r"^(\s*)(user|group) = freerad$", r"\1#\2 = freerad", "radiusd.conf")
        text = _replace(text, r"^(\s*)reject_delay = \d+$", r"\1reject_delay = 0", "radiusd.conf")
        text = _replace(text, r"^proxy_requests\s*= yes$", "proxy_requests = no", "radiusd.conf")
        conf.write_text(text)
        for directory, keep in (("mods-enabled", MODULES), ("sites-enabled", ())):
            target = self.raddb / directory
            for entry in target.iterdir():
                entry.unlink()
            for name in keep:
                (target / name).symlink_to(f"../mods-available/{name}")
        site = (EXAMPLES / "sites-rserpool").read_text()
        site = _replace(site, r"^(\s*)port = 18121$", rf"\g<1>port = {self.port}", "sites-rserpool")
        (self.raddb / "sites-enabled" / "rserpool").write_text(site)
        clients = (EXAMPLES / "clients.conf").read_text()
        clients = _replace(clients, r"^(\s*)secret = .*$", rf"\1secret = {self.secret.decode()}",
                           "clients.conf")
        (self.raddb / "clients.conf").write_text(clients)
        users = self.raddb / "mods-config" / "files" / "authorize"
        users.unlink()
        shutil.copyfile(EXAMPLES / "users", users)
        shutil.copyfile(EXAMPLES / "dictionary.rserpool", self.raddb / "dictionary.rserpool")
        with open(self.raddb / "dictionary", "a", encoding="utf-8") as handle:
            handle.write("\n$INCLUDE dictionary.rserpool\n")
        for path in self.raddb.rglob("*"):  # FreeRADIUS refuses world-writable files
            if not path.is_symlink():
                path.chmod(path.stat().st_mode & ~0o022)
        self._configured = True

    def check(self) -> None:
        """``freeradius -C``: raise with the output if the config is invalid."""
        self.configure()
        result = subprocess.run([self.executable, "-C", "-X", "-d", str(self.raddb)],
                                capture_output=True, timeout=30)
        if result.returncode != 0:
            raise RuntimeError("invalid FreeRADIUS configuration:\n"
                               + result.stdout.decode(errors="replace")[-4000:])

    def command(self) -> list[str]:
        return [self.executable, "-X", "-d", str(self.raddb)]

    def _wait_ready(self) -> None:
        dictionary = load_dictionary()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(0.025)
            for attempt in range(START_POLLS):
                self._check_running()
                pkt = _packet.AuthPacket(code=_packet.AccessRequest, id=attempt % 256,
                                         secret=self.secret, dict=dictionary)
                pkt.add_message_authenticator()
                pkt["User-Name"] = "rserpool-fixture-probe"
                pkt["NAS-Identifier"] = "fixture"
                try:
                    sock.sendto(pkt.RequestPacket(), ("127.0.0.1", self.port))
                    data = sock.recv(4096)
                except (TimeoutError, ConnectionRefusedError, socket.timeout):
                    time.sleep(0.025)
                    continue
                if len(data) >= 20 and data[1] == pkt.id:
                    return
        raise self._not_ready()


def freeradius_available() -> bool:
    return os.access(SYSTEM_RADDB / "radiusd.conf", os.R_OK)
