"""rserpool.backends.filestore: parsing, editing, permissions, reload, rules file."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import pytest
from twisted.python.failure import Failure

from rserpool.backends import filestore as fs
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
        fs.srp_line("pe1", SALT, VERIFIER),
        fs.chap_line("pe2", b"secret two"),
        fs.group_line("pe1", ["echo-servers", "all"]),
        fs.cert_line("ab" * 32, "pe3", ["certified"]),
        fs.cert_line("CN=pe 4,O=Example Org", "pe4"),
        "",
    ])


def test_round_trip() -> None:
    data = fs.parse_credentials(sample())
    assert data.srp["pe1"] == fs.SrpEntry("pe1", "SRP-6a-SHA256-2048", SALT, VERIFIER)
    assert data.chap["pe2"] == b"secret two"
    assert data.groups_of("pe1") == {"echo-servers", "all"}
    assert data.groups_of("pe3") == {"certified"}
    assert data.certs["sha256:" + "ab" * 32].identity == "pe3"
    assert data.certs["subject:CN=pe 4,O=Example Org"].identity == "pe4"
    assert len(data.certs) == 2 and len(data.srp) == len(data.chap) == 1


@pytest.mark.parametrize("line, message", [
    ("srp pe1 SRP-6a-SHA256-2048 AAAA", "expected"),
    ("srp pe1 SRP-1024 c2FsdHNhbHQ= AAAA", "unknown SRP group"),
    ("srp pe1 SRP-6a-SHA256-2048 !!!! AAAA", "not base64"),
    ("srp pe1 SRP-6a-SHA256-2048 c2Fs AAAA", "salt must be"),
    ("srp pe1 SRP-6a-SHA256-2048 c2FsdHNhbHQ= AAAA", "verifier"),
    ("chap @pe1 c2Vj", "bad identity"),
    ("chap * c2Vj", "bad identity"),
    ("chap pe1 c2Vj extra", "expected"),
    ("group pe1 a,,b", "group"),
    ("cert pe1 - sha256:abcd", "fingerprint"),
    ("cert pe1 - subject:not a dn", "RFC 4514"),
    ("password pe1 x", "unknown entry type"),
    ("chap ｐｅ1 c2Vj", "NFKC"),
])
def test_malformed_lines_name_their_line(line: str, message: str) -> None:
    with pytest.raises(fs.FileStoreError) as info:
        fs.parse_credentials("# header\n\n" + line + "\n", "creds")
    assert str(info.value).startswith("creds:3: ") and message in str(info.value)


def test_duplicates_and_limits() -> None:
    line = fs.chap_line("pe1", b"x")
    with pytest.raises(fs.FileStoreError, match=":2: second chap"):
        fs.parse_credentials(line + "\n" + line)
    with pytest.raises(fs.FileStoreError, match="longer than"):
        fs.parse_credentials("# " + "x" * fs.MAX_LINE_LENGTH)
    with pytest.raises(fs.FileStoreError, match="more than"):
        fs.parse_credentials("group pe1 " + ",".join(f"g{i}" for i in range(fs.MAX_GROUPS + 1)))


def test_editing_keeps_other_lines() -> None:
    text, replaced = fs.set_entry(sample(), fs.chap_line("pe2", b"new"))
    assert replaced and "# a comment" in text
    assert fs.parse_credentials(text).chap["pe2"] == b"new"
    text, replaced = fs.set_entry(text, fs.chap_line("pe5", b"five"))
    assert not replaced
    text, removed = fs.remove_entry(text, "cert", "AB:" * 31 + "AB")
    assert removed == 1 and "sha256:" + "ab" * 32 not in fs.parse_credentials(text).certs
    text, removed = fs.remove_entry(text, "cert", "CN=pe 4,O=Example Org")
    assert removed == 1
    assert fs.remove_entry(text, "srp", "nobody")[1] == 0


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
    write(path, sample().replace("secret two", "ignored") + fs.chap_line("pe6", b"six") + "\n",
          mtime=1_000_001)
    assert result(store.chap_secret("pe6")) == b"six"
    assert store.reloads == 2
    write(path, "chap broken\n", mtime=1_000_002)
    with pytest.raises(BackendUnavailable, match=":1:"):
        store.lookup_chap_secret("pe6")  # fail closed, never stale data
    with pytest.raises(BackendUnavailable):
        result(store.srp_verifier("pe1"))
    write(path, fs.chap_line("pe7", b"seven") + "\n", mtime=1_000_003)
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
        fs.cert_line(fingerprint_sha256(by_fp), "pe-one", ["a"]),
        fs.cert_line(by_subject.subject.rfc4514_string(), "pe-two"),
        fs.group_line("pe-two", ["b"]),
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
    only_srp = fs.srp_line("pe1", SALT, VERIFIER) + "\n"
    write(path, only_srp, mode=0o644)
    store = fs.FileStore(str(path))
    assert store.lookup_srp("pe1") == (SALT, VERIFIER)
    assert any("offline password guessing" in w for w in store.warnings)
    write(path, only_srp, mode=0o602)
    with pytest.raises(BackendUnavailable, match="world-writable"):
        fs.FileStore(str(path)).lookup_srp("pe1")


def test_update_file_is_atomic_and_private(tmp_path) -> None:
    path = str(tmp_path / "credentials")
    data = fs.update_file(path, lambda text: fs.set_entry(text, fs.chap_line("pe1", b"x"))[0])
    assert data.chap["pe1"] == b"x"
    assert os.stat(path).st_mode & 0o777 == 0o600
    before = open(path).read()
    with pytest.raises(fs.FileStoreError):
        fs.update_file(path, lambda text: text + "chap\n")
    assert open(path).read() == before  # a bad edit writes nothing
    assert sorted(os.listdir(tmp_path)) == ["credentials", "credentials.lock"]


def test_bounded_read(tmp_path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"#" * (fs.MAX_FILE_SIZE + 1))
    with pytest.raises(fs.FileStoreError, match="larger"):
        fs.read_text(str(path))


def test_rules_file_authorizer(tmp_path) -> None:
    path = tmp_path / "authz.rules"
    authorizer = fs.RulesFileAuthorizer(str(path), recheck_interval=0)  # stat on every call
    assert authorizer.authorize("pe1", frozenset(), "register", b"echo") is False  # missing: deny
    write(path, "pe1 register echo\n", mode=0o644, mtime=2_000_000)
    assert authorizer.authorize("pe1", frozenset(), "register", b"echo") is True
    assert authorizer.authorize("pe1", frozenset(), "deregister", b"echo") is False
    write(path, "@ops all *\n", mode=0o644, mtime=2_000_001)
    assert authorizer.authorize("x", frozenset({"ops"}), "peer", b"") is True
    assert authorizer.authorize("x", frozenset({"ops"}), "admin", b"") is True
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
