"""rserpool.backends.filestore_format: parsing and editing the credentials
file's text (pure: no file, no clock)."""

from __future__ import annotations

import pytest

from rserpool.backends import filestore_format as fmt
from rserpool.security import srp

SALT, VERIFIER = srp.make_verifier("pe1", "pw", salt=b"s" * 16)


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


def test_round_trip() -> None:
    data = fmt.parse_credentials(sample())
    assert data.srp["pe1"] == fmt.SrpEntry("pe1", "SRP-6a-SHA256-2048", SALT, VERIFIER)
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
    ("chap ｐｅ1 c2Vj", "normalized form (write 'pe1'"),
    ("chap PE1 c2Vj", "normalized form (write 'pe1'"),
    ("srp Pe1 SRP-6a-SHA256-2048 c2FsdHNhbHQ= AAAA", "normalized form"),
    ("cert PE1 - sha256:" + "ab" * 32, "normalized form"),
])
def test_malformed_lines_name_their_line(line: str, message: str) -> None:
    with pytest.raises(fmt.FileStoreError) as info:
        fmt.parse_credentials("# header\n\n" + line + "\n", "creds")
    assert str(info.value).startswith("creds:3: ") and message in str(info.value)


def test_duplicates_and_limits() -> None:
    line = fmt.chap_line("pe1", b"x")
    with pytest.raises(fmt.FileStoreError, match=":2: second chap"):
        fmt.parse_credentials(line + "\n" + line)
    with pytest.raises(fmt.FileStoreError, match="longer than"):
        fmt.parse_credentials("# " + "x" * fmt.MAX_LINE_LENGTH)
    with pytest.raises(fmt.FileStoreError, match="more than"):
        fmt.parse_credentials("group pe1 " + ",".join(f"g{i}" for i in range(fmt.MAX_GROUPS + 1)))


def test_editing_keeps_other_lines() -> None:
    text, replaced = fmt.set_entry(sample(), fmt.chap_line("pe2", b"new"))
    assert replaced and "# a comment" in text
    assert fmt.parse_credentials(text).chap["pe2"] == b"new"
    text, replaced = fmt.set_entry(text, fmt.chap_line("pe5", b"five"))
    assert not replaced
    text, removed = fmt.remove_entry(text, "cert", "AB:" * 31 + "AB")
    assert removed == 1 and "sha256:" + "ab" * 32 not in fmt.parse_credentials(text).certs
    text, removed = fmt.remove_entry(text, "cert", "CN=pe 4,O=Example Org")
    assert removed == 1
    assert fmt.remove_entry(text, "srp", "nobody")[1] == 0
