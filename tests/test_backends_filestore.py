"""rserpool.backends.filestore: parsing, editing, permissions, reload, rules file."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import pytest
from twisted.python.failure import Failure

from rserpool.backends import filestore as fs
from rserpool.backends import filestore_format as fmt
from rserpool.errors import BackendUnavailable
from rserpool.security import pki, srp
from rserpool.security.certidentity import fingerprint_sha256

SALT, VERIFIER = srp.make_verifier("pe1", "pw", salt=b"s" * 16)


def result(d: Any) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def write(path: Any, text: str, mode: int = 0o600, mtime: int | None = None) -> None:
    fs.write_atomic(str(path), text, mode)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def sample() -> str:
    return "\n".join([
        "# a comment",
        fmt.srp_line("pe1", SALT, VERIFIER),
        fmt.chap_line("pe2", b"secret two"),
        fmt.group_line("pe1", ["echo-servers", "all"]),
        fmt.cert_line("ab" * 32, "pe3", ["certified"]),
        fmt.cert_line("CN=pe 4,O=Example Org", "pe4"),
        "",
    ])


def test_store_lookups_and_reload(tmp_path) -> None:
    path = tmp_path / "credentials"
    write(path, sample(), mtime=1_000_000)
    store = fs.FileStore(str(path))
    assert store.lookup_srp("pe1") == (SALT, VERIFIER)
    assert result(store.srp_verifier("pe1")) == (SALT, VERIFIER)
    assert result(store.chap_secret("pe2")) == b"secret two"
    assert result(store.chap_secret("pe1")) is None
    assert result(store.groups("pe1")) == {"echo-servers", "all"}
    assert store.reloads == 1
    store.lookup_srp("pe1")
    assert store.reloads == 1  # unchanged file: not parsed again
    write(path, sample().replace("secret two", "ignored") + fmt.chap_line("pe6", b"six") + "\n",
          mtime=1_000_001)
    assert result(store.chap_secret("pe6")) == b"six"
    assert store.reloads == 2
    write(path, "chap broken\n", mtime=1_000_002)
    with pytest.raises(BackendUnavailable, match=":1:"):
        store.lookup_chap_secret("pe6")  # fail closed, never stale data
    with pytest.raises(BackendUnavailable):
        result(store.srp_verifier("pe1"))
    write(path, fmt.chap_line("pe7", b"seven") + "\n", mtime=1_000_003)
    assert store.lookup_chap_secret("pe7") == b"seven"
    os.unlink(path)
    assert store.lookup_chap_secret("pe7") is None


def test_certificate_mapping(tmp_path) -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    ca = pki.create_ca("filestore CA", now)
    by_fp = pki.create_client_certificate(ca, "one", now).certificate
    by_subject = pki.create_client_certificate(ca, "two", now).certificate
    unknown = pki.create_client_certificate(ca, "three", now).certificate
    path = tmp_path / "credentials"
    write(path, "\n".join([
        fmt.cert_line(fingerprint_sha256(by_fp), "pe-one", ["a"]),
        fmt.cert_line(by_subject.subject.rfc4514_string(), "pe-two"),
        fmt.group_line("pe-two", ["b"]),
    ]) + "\n")
    store = fs.FileStore.shared(str(path))
    assert fs.FileStore.shared(str(path)) is store
    one = result(store.identity_for(by_fp))
    assert (one.name, one.groups, one.attributes["mapped_by"]) == ("pe-one", {"a"}, ("sha256",))
    two = result(store.identity_for(by_subject))
    assert (two.name, two.groups, two.attributes["mapped_by"]) == ("pe-two", {"b"}, ("subject",))
    assert result(store.identity_for(unknown)) is None


def test_permissions(tmp_path) -> None:
    path = tmp_path / "credentials"
    write(path, sample(), mode=0o640)
    with pytest.raises(BackendUnavailable, match="CHAP secrets"):
        fs.FileStore(str(path)).lookup_srp("pe1")
    only_srp = fmt.srp_line("pe1", SALT, VERIFIER) + "\n"
    write(path, only_srp, mode=0o644)
    store = fs.FileStore(str(path))
    assert store.lookup_srp("pe1") == (SALT, VERIFIER)
    assert any("offline password guessing" in w for w in store.warnings)
    write(path, only_srp, mode=0o602)
    with pytest.raises(BackendUnavailable, match="world-writable"):
        fs.FileStore(str(path)).lookup_srp("pe1")


def test_update_file_is_atomic_and_private(tmp_path) -> None:
    path = str(tmp_path / "credentials")
    data = fs.update_file(path, lambda text: fmt.set_entry(text, fmt.chap_line("pe1", b"x"))[0])
    assert data.chap["pe1"] == b"x"
    assert os.stat(path).st_mode & 0o777 == 0o600
    before = open(path).read()
    with pytest.raises(fmt.FileStoreError):
        fs.update_file(path, lambda text: text + "chap\n")
    assert open(path).read() == before  # a bad edit writes nothing
    assert sorted(os.listdir(tmp_path)) == ["credentials", "credentials.lock"]


def test_bounded_read(tmp_path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"#" * (fmt.MAX_FILE_SIZE + 1))
    with pytest.raises(fmt.FileStoreError, match="larger"):
        fs.read_text(str(path))


def test_rules_file_authorizer(tmp_path) -> None:
    path = tmp_path / "authz.rules"
    authorizer = fs.RulesFileAuthorizer(str(path), recheck_interval=0)  # stat on every call
    assert authorizer.authorize("pe1", frozenset(), "register", b"echo") is False  # missing: deny
    write(path, "pe1 register echo\n", mode=0o644, mtime=2_000_000)
    assert authorizer.authorize("pe1", frozenset(), "register", b"echo") is True
    assert authorizer.authorize("pe1", frozenset(), "deregister", b"echo") is False
    write(path, "@ops all *\n", mode=0o644, mtime=2_000_001)
    # ``all`` never grants the peer or admin doors (``enrp`` is read as ``peer``).
    assert authorizer.authorize("x", frozenset({"ops"}), "peer", b"") is False
    assert authorizer.authorize("x", frozenset({"ops"}), "enrp", b"") is False
    assert authorizer.authorize("x", frozenset({"ops"}), "admin", b"") is False
    assert authorizer.authorize("x", frozenset({"ops"}), "resolve", b"echo") is True
    assert authorizer.authorize("pe1", frozenset(), "register", b"echo") is False
    write(path, "pe1 fly echo\n", mode=0o644, mtime=2_000_002)
    with pytest.raises(BackendUnavailable, match=":1: unknown action"):
        authorizer.authorize("pe1", frozenset(), "register", b"echo")
    write(path, "pe1 register echo\n", mode=0o646, mtime=2_000_003)
    with pytest.raises(BackendUnavailable, match="world-writable"):
        authorizer.authorize("pe1", frozenset(), "register", b"echo")


def test_rules_file_is_checked_at_most_once_per_interval(tmp_path, monkeypatch) -> None:
    path = tmp_path / "authz.rules"
    now = [100.0]
    authorizer = fs.RulesFileAuthorizer(str(path), clock=lambda: now[0])
    assert authorizer.recheck_interval == 1.0
    stats = []
    real_stat = fs.os.stat
    monkeypatch.setattr(fs.os, "stat", lambda p, *a, **k: stats.append(p) or real_stat(p, *a, **k))
    write(path, "pe1 register echo\n", mode=0o644, mtime=2_000_000)
    assert authorizer.authorize("pe1", frozenset(), "register", b"echo") is True
    write(path, "pe2 register echo\n", mode=0o644, mtime=2_000_001)
    now[0] += 0.5  # within the interval: neither stat'ed nor re-read
    assert authorizer.authorize("pe1", frozenset(), "register", b"echo") is True
    assert authorizer.authorize("pe2", frozenset(), "register", b"echo") is False
    assert len(stats) == 1 and authorizer.reloads == 1
    now[0] += 0.5  # the interval is over: the change is seen
    assert authorizer.authorize("pe1", frozenset(), "register", b"echo") is False
    assert authorizer.authorize("pe2", frozenset(), "register", b"echo") is True
    assert len(stats) == 2 and authorizer.reloads == 2
    # A malformed file keeps failing (without a stat) until the next check.
    write(path, "pe1 fly echo\n", mode=0o644, mtime=2_000_002)
    now[0] += 1.0
    for _ in range(2):
        with pytest.raises(BackendUnavailable, match=":1: unknown action"):
            authorizer.authorize("pe1", frozenset(), "register", b"echo")
    assert len(stats) == 3
    write(path, "pe1 register echo\n", mode=0o644, mtime=2_000_003)
    now[0] += 1.0
    assert authorizer.authorize("pe1", frozenset(), "register", b"echo") is True
    # A failed stat is not remembered: the next call stats again.
    path.unlink()
    now[0] += 1.0
    monkeypatch.setattr(fs.os, "stat", lambda p, *a, **k: (_ for _ in ()).throw(PermissionError(13, "denied")))
    for _ in range(2):
        with pytest.raises(BackendUnavailable, match="denied"):
            authorizer.authorize("pe1", frozenset(), "register", b"echo")
