import pytest

from rserpool.security.authz import RulesAuthorizer, RulesError, parse_rules

RULES = """
# comment
deny   pe2            register            echo      # explicit refusal first
pe1                   register,deregister echo echo-*
@ops                  all                 *
*                     resolve             public-*
pe3                   register            hex:ff*
"""


@pytest.fixture
def authz():
    return RulesAuthorizer(parse_rules(RULES))


def test_default_deny(authz):
    assert not authz.decide("nobody", (), "register", b"echo")
    assert not RulesAuthorizer(()).decide("pe1", (), "resolve", b"x")


def test_identity_actions_and_globs(authz):
    assert authz.decide("pe1", (), "register", b"echo")
    assert authz.decide("pe1", (), "deregister", b"echo-7")
    assert not authz.decide("pe1", (), "register", b"echoes")
    assert not authz.decide("pe1", (), "resolve", b"echo")


def test_first_match_wins_and_deny(authz):
    assert not authz.decide("pe2", ("ops",), "register", b"echo")
    assert authz.decide("pe2", ("ops",), "register", b"other")


def test_groups_and_wildcard(authz):
    assert authz.decide("x", ["ops"], "enrp", b"anything")
    assert authz.decide(None, (), "resolve", b"public-1")  # anonymous PU may resolve
    assert not authz.decide(None, (), "register", b"public-1")


def test_binary_handles(authz):
    assert authz.decide("pe3", (), "register", b"\xff\x00")
    assert not authz.decide("pe1", (), "register", b"\xffecho")


@pytest.mark.parametrize("text", ["pe1 fly echo", "pe1 register", "p e1, register x"])
def test_malformed_rules(text):
    with pytest.raises(RulesError):
        parse_rules(text)
