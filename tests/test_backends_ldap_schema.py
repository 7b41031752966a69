"""rserpool.backends.ldap_schema: settings, filter templates, DN parsing and
reading a directory's answer, without a directory."""

from __future__ import annotations

from typing import Any

import pytest

from rserpool.backends.ldap_schema import (
    MAX_SALT,
    MAX_VALUES,
    MAX_VERIFIER,
    LdapEntry,
    LdapError,
    LdapSchema,
    LdapTls,
    entry_from_answer,
    fill_filter,
    group_name_from_dn,
    group_names,
    parse_uri,
    raw_values,
    search_result,
    text_values,
    valid_identity,
)


def test_group_name_from_dn() -> None:
    assert group_name_from_dn("cn=echo,ou=pools,dc=x") == "echo"
    assert group_name_from_dn("CN=Echo,OU=Pools,DC=x", base="ou=pools,dc=x") == "Echo"
    assert group_name_from_dn("cn=echo,ou=other,dc=x", base="ou=pools,dc=x") is None
    assert group_name_from_dn("ou=pools,dc=x", base="ou=pools,dc=x") is None
    assert group_name_from_dn("uid=echo,ou=pools,dc=x") is None
    assert group_name_from_dn("cn=a\\2cb,dc=x") == "a,b"
    assert group_name_from_dn("cn=a+uid=b,dc=x") is None
    assert group_name_from_dn("not a dn") is None


def test_tls_needs_a_ca_file() -> None:
    with pytest.raises(LdapError):
        LdapTls("")
    assert LdapTls("/ca.pem").starttls


@pytest.mark.parametrize("kwargs", [
    {"user_filter": "(uid=pe1)"},
    {"user_filter": "uid={identity}"},
    {"cert_filter": "(objectClass=x)"},
    {"group_attribute": "", "group_base": ""},
    {"group_attribute": "", "group_base": "ou=p", "group_filter": "(member=x)"},
    {"identity_attribute": "uid)(x"},
])
def test_bad_schema(kwargs: dict[str, Any]) -> None:
    with pytest.raises(LdapError):
        LdapSchema(**kwargs)


def test_entry_value() -> None:
    entry = LdapEntry("uid=x", "x", salt=b"s" * 16)
    assert entry.srp is None
    assert LdapEntry("uid=x", "x", salt=b"s", verifier=b"v").srp == (b"s", b"v")


def test_fill_filter_escapes_values() -> None:
    assert fill_filter("(uid={identity})", identity="*)(uid=*") == "(uid=\\2a\\29\\28uid=\\2a)"
    assert fill_filter("(|(a={fingerprint})(b={subject}))", fingerprint="ab", subject="CN=x\\") == (
        "(|(a=ab)(b=CN=x\\5c))")


def test_parse_uri() -> None:
    assert parse_uri("ldap://h") == ("h", 389, False)
    assert parse_uri("ldaps://h") == ("h", 636, True)
    assert parse_uri("ldap://127.0.0.1:1389") == ("127.0.0.1", 1389, False)
    for bad in ("http://h", "ldap://", "ldap://h:x"):
        with pytest.raises(LdapError):
            parse_uri(bad)


def test_valid_identity() -> None:
    assert valid_identity("pe1")
    assert not valid_identity("")
    assert not valid_identity("x" * 256)
    assert not valid_identity("a\nb")
    assert not valid_identity(b"pe1")


def test_raw_and_text_values() -> None:
    entry: dict[str, Any] = {"raw_attributes": {
        "UID": [b"pe1"], "memberOf": "cn=a,dc=x", "many": [b"v"] * (MAX_VALUES + 5),
        "mixed": [b" ok ", b"\xff\xfe", b"", b"bad\x00"]}}
    assert raw_values(entry, "uid") == [b"pe1"]
    assert raw_values(entry, "memberof") == [b"cn=a,dc=x"]
    assert len(raw_values(entry, "many")) == MAX_VALUES
    assert raw_values(entry, "absent") == [] and raw_values(entry, "") == []
    assert text_values(raw_values(entry, "mixed")) == ["ok"]


def test_search_result_from_either_strategy() -> None:
    entries = [{"type": "searchResEntry", "dn": "uid=a"}, {"type": "searchResRef"}]
    assert search_result((True, {"result": 0}, entries, None), None) == (
        {"result": 0}, [entries[0]])

    class Conn:
        result = None
        response = None

    assert search_result(False, Conn()) == ({}, [])


def test_group_names_keep_only_groups_under_the_base() -> None:
    schema = LdapSchema(group_base="ou=pools,dc=x")
    dns = ["cn=echo,ou=pools,dc=x", "cn=other,ou=elsewhere,dc=x", "not a dn",
           "uid=echo2,ou=pools,dc=x", "cn=echo,ou=pools,dc=x"]
    assert group_names(dns, schema) == frozenset({"echo"})
    assert group_names([], schema) == frozenset()


def test_entry_from_answer_keeps_only_one_sane_salt_and_verifier() -> None:
    schema = LdapSchema()
    answer = {"dn": "uid=pe1,dc=x", "raw_attributes": {
        "rserpoolSrpSalt": [b"s" * 16], "rserpoolSrpVerifier": [b"v" * 256],
        "rserpoolPool": [b"echo", b"daytime-*"]}}
    entry = entry_from_answer(answer, "pe1", schema, frozenset({"g"}))
    assert entry == LdapEntry("uid=pe1,dc=x", "pe1", b"s" * 16, b"v" * 256,
                              ("echo", "daytime-*"), frozenset({"g"}))
    for salts, verifiers in (([b"s", b"t"], [b"v"]), ([b"s" * (MAX_SALT + 1)], [b"v"]),
                             ([b"s"], [b"v" * (MAX_VERIFIER + 1)]), ([], [b"v"]),
                             ([b""], [b"v"])):
        odd = {"dn": "uid=pe1,dc=x", "raw_attributes": {
            "rserpoolSrpSalt": salts, "rserpoolSrpVerifier": verifiers}}
        assert entry_from_answer(odd, "pe1", schema, frozenset()).srp is None
    assert entry_from_answer({}, "pe1", schema, frozenset()).dn == ""

