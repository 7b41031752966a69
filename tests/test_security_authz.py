import pytest
from hypothesis import given, settings, strategies as st

from rserpool.security.authz import ACTIONS, Rule, RulesAuthorizer, RulesError, parse_rules, pool_matches

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
    assert authz.decide("x", ["ops"], "register", b"anything")
    assert authz.decide(None, (), "resolve", b"public-1")  # anonymous PU may resolve
    assert not authz.decide(None, (), "register", b"public-1")


def test_peer_and_admin_are_granted_by_name_only():
    """``all`` never makes an identity an ENRP peer or an admin; ``enrp`` is
    the older name of ``peer``."""
    rules = RulesAuthorizer(parse_rules("@ops all *\nreg-b.test enrp *\n@registrars peer *\n"))
    assert not rules.decide("x", ["ops"], "peer", b"")
    assert not rules.decide("x", ["ops"], "admin", b"")
    assert rules.decide("reg-b.test", (), "peer", b"")
    assert rules.decide("reg-c.test", ["registrars"], "peer", b"")
    assert not rules.decide("reg-c.test", (), "peer", b"")


def test_binary_handles(authz):
    assert authz.decide("pe3", (), "register", b"\xff\x00")
    assert not authz.decide("pe1", (), "register", b"\xffecho")


@pytest.mark.parametrize("text", ["pe1 fly echo", "pe1 register", "p e1, register x"])
def test_malformed_rules(text):
    with pytest.raises(RulesError):
        parse_rules(text)


# -- the indexed decision equals the plain first-match scan ------------------------

_names = st.sampled_from(["pe1", "pe2", "@g1", "@g2", "*", "@pe1"])
_patterns = st.lists(st.sampled_from(["*", "echo", "echo-*", "e?ho", "hex:6563*", "x"]), min_size=1, max_size=3)
_rules = st.lists(
    st.builds(Rule, st.booleans(), _names, st.frozensets(st.sampled_from(sorted(ACTIONS)), min_size=1),
              _patterns.map(tuple), st.integers(1, 99)),
    max_size=12)


def _linear(rules, identity, groups, action, handle):
    for rule in rules:
        if rule.matches(identity, frozenset(groups), action, handle):
            return rule.allow
    return False


@settings(max_examples=200, deadline=None)
@given(_rules,
       st.lists(st.tuples(st.sampled_from([None, "pe1", "pe2", "@g1", "*"]),
                          st.frozensets(st.sampled_from(["g1", "g2", "pe1"])),
                          st.sampled_from(sorted(ACTIONS) + ["other"]),
                          st.sampled_from([b"echo", b"echo-1", b"x", b"\xff", b""])),
                min_size=1, max_size=8))
def test_indexed_decisions_equal_a_linear_scan(rules, questions):
    authorizer = RulesAuthorizer(rules)
    for _ in range(2):  # the second round answers from the decision cache
        for identity, groups, action, handle in questions:
            assert authorizer.decide(identity, groups, action, handle) == \
                _linear(rules, identity, groups, action, handle)


def test_decision_cache_is_bounded(monkeypatch):
    import rserpool.security.authz as authz_module

    monkeypatch.setattr(authz_module, "_DECISIONS_CACHED", 3)
    authorizer = RulesAuthorizer(parse_rules("* resolve *"))
    for n in range(10):
        assert authorizer.decide(None, (), "resolve", b"pool%d" % n)
    assert len(authorizer._decisions) == 3


def test_every_action_of_the_gate_is_known_and_denied_by_default():
    from rserpool import gate

    assert ACTIONS == frozenset(gate.ACTIONS)
    empty = RulesAuthorizer(())
    for action in gate.ACTIONS:
        assert not empty.decide("pe1", ("ops",), action, b"")
        assert parse_rules(f"pe1 {action} *")[0].actions == {action}


def test_the_old_enrp_action_is_read_as_peer():
    assert parse_rules("@registrars enrp *")[0].actions == {"peer"}


def test_admin_is_granted_by_name_only_never_by_all():
    rules = parse_rules("ops  all  *\nroot  admin  *\n")
    authorizer = RulesAuthorizer(rules)
    assert authorizer.decide("ops", (), "register", b"echo")
    assert not authorizer.decide("ops", (), "admin", b"")
    assert authorizer.decide("root", (), "admin", b"")
    assert not authorizer.decide("root", (), "register", b"echo")
    assert not authorizer.decide(None, (), "admin", b"")  # "*" never means anonymous here


def test_pool_matches() -> None:
    assert pool_matches("echo", b"echo") and not pool_matches("echo", b"echo2")
    assert pool_matches("daytime-*", b"daytime-1") and pool_matches("*", b"\xff")
    assert not pool_matches("e*", b"\xff") and pool_matches("hex:ff*", b"\xff\x01")
