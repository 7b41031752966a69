"""Pool authorization rules: who may do what in which pool (default deny).

The embedded authorizer reads a rules file, one rule per line::

    # subject           actions                pool-handle patterns
    pe1                 register,deregister    echo
    @echo-servers       register,deregister    echo echo-*
    *                   resolve                *
    registrar-b.example peer                   *

- *subject* is an identity name (read in normalized form,
  :func:`rserpool.identity.normalize_identity`: ``PE1`` is ``pe1``), ``@group`` (a group the identity belongs to,
  e.g. from a certificate mapping, LDAP or RADIUS), or ``*`` (any
  authenticated identity; for ``resolve`` also an anonymous pool user).
- *actions*: ``register``, ``deregister``, ``resolve``, ``peer`` (act as an
  ENRP peer, the security gate's ``peer`` door; ``enrp`` is read as
  ``peer``), ``admin`` (read the admin endpoint), both with an empty pool
  handle, so grant them with the pattern ``*``), ``opaque-transport``
  (register a PE whose user transport is an Opaque Transport, parameter
  0x10, whose address the registrar cannot check), or ``all`` (every action
  but ``peer``, ``admin`` and ``opaque-transport``, which are only ever
  granted by name).
- *patterns* are shell-style globs (``fnmatch``, case-sensitive) over the pool
  handle, which is read as UTF-8; a handle that is not valid UTF-8 only
  matches ``*`` or a ``hex:`` pattern such as ``hex:0a0b*``.
- A line starting with ``deny`` (``deny pe2 register echo``) refuses
  explicitly; the first matching rule decides, and when no rule matches the
  answer is no.

Pure: no I/O except ``load_rules(path)``, no clock.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Iterable

from zope.interface import implementer

from rserpool.identity import normalize_identity
from rserpool.interfaces import IPoolAuthorizer

__all__ = [
    "ACTIONS", "Rule", "RulesError", "RulesAuthorizer", "parse_rules", "load_rules", "pool_matches",
]

ACTIONS = frozenset({"register", "deregister", "resolve", "peer", "admin", "opaque-transport"})
#: What ``all`` stands for: the peer and admin doors, and registering an
#: Opaque Transport, are never granted by a wildcard.
_ALL_ACTIONS = ACTIONS - {"admin", "peer", "opaque-transport"}
#: Older names of actions, read as the current ones.
_ALIASES = {"enrp": "peer"}
_MAX_RULES = 100_000


class RulesError(ValueError):
    """A malformed rules file (with its line number)."""


@dataclass(frozen=True, slots=True)
class Rule:
    allow: bool
    subject: str  # name, "@group" or "*"
    actions: frozenset[str]
    patterns: tuple[str, ...]
    line: int

    def matches(self, identity: str | None, groups: frozenset[str], action: str, handle: bytes) -> bool:
        if action not in self.actions:
            return False
        subject = self.subject
        if subject == "*":
            if identity is None and action != "resolve":
                return False
        elif subject.startswith("@"):
            if subject[1:] not in groups:
                return False
        elif subject != identity:
            return False
        return any(pool_matches(pattern, handle) for pattern in self.patterns)


def pool_matches(pattern: str, handle: bytes) -> bool:
    """Shell-glob match of a pool handle (UTF-8, case-sensitive), or
    ``hex:`` over its lower-case hex; ``*`` matches every handle.  The one
    pool pattern rule of the rules file and the RADIUS and LDAP backends."""
    if pattern == "*":
        return True
    if pattern.startswith("hex:"):
        return fnmatch.fnmatchcase(handle.hex(), pattern[4:].lower())
    try:
        text = handle.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return fnmatch.fnmatchcase(text, pattern)


_NAME = re.compile(r"^(\*|@?[^\s,#]+)$")


def parse_rules(text: str, source: str = "<rules>") -> tuple[Rule, ...]:
    rules = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        allow = True
        if words[0] in ("allow", "deny"):
            allow = words.pop(0) == "allow"
        if len(words) < 3:
            raise RulesError(f"{source}:{number}: expected 'subject actions pattern...'")
        subject, actions_text, patterns = words[0], words[1], tuple(words[2:])
        if not _NAME.match(subject):
            raise RulesError(f"{source}:{number}: bad subject {subject!r}")
        if subject != "*" and not subject.startswith("@"):
            canonical = normalize_identity(subject)
            if canonical is None:
                raise RulesError(f"{source}:{number}: bad subject {subject!r}")
            subject = canonical
        actions = set()
        for action in actions_text.split(","):
            action = _ALIASES.get(action.strip(), action.strip())
            if action == "all":
                actions |= _ALL_ACTIONS
            elif action in ACTIONS:
                actions.add(action)
            else:
                raise RulesError(f"{source}:{number}: unknown action {action!r} "
                                 f"(known: {', '.join(sorted(ACTIONS))}, all)")
        rules.append(Rule(allow, subject, frozenset(actions), patterns, number))
        if len(rules) > _MAX_RULES:
            raise RulesError(f"{source}: more than {_MAX_RULES} rules")
    return tuple(rules)


def load_rules(path: str) -> tuple[Rule, ...]:
    with open(path, encoding="utf-8") as handle:
        return parse_rules(handle.read(), path)


#: Decisions a RulesAuthorizer remembers (oldest dropped first).
_DECISIONS_CACHED = 4096


@implementer(IPoolAuthorizer)
class RulesAuthorizer:
    """First matching rule decides; no match means no.

    The rules are indexed by action and subject, so a decision only looks at
    the rules that name the identity, one of its groups, or ``*`` (in file
    order); recent decisions are remembered (the rules never change)."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)
        # action -> (name -> indices, group -> indices, indices of "*" rules)
        self._index: dict[str, tuple[dict[str, list[int]], dict[str, list[int]], list[int]]] = {}
        for action in ACTIONS:
            names: dict[str, list[int]] = {}
            groups: dict[str, list[int]] = {}
            anyone: list[int] = []
            for number, rule in enumerate(self.rules):
                if action not in rule.actions:
                    continue
                subject = rule.subject
                if subject == "*":
                    anyone.append(number)
                elif subject.startswith("@"):
                    groups.setdefault(subject[1:], []).append(number)
                else:
                    names.setdefault(subject, []).append(number)
            self._index[action] = (names, groups, anyone)
        self._decisions: dict[tuple, bool] = {}

    def _candidates(self, identity: str | None, groups: frozenset[str], action: str) -> list[int]:
        """Indices (ascending) of every rule that may match; a superset."""
        index = self._index.get(action)
        if index is None:
            return []
        names, group_rules, anyone = index
        lists = [anyone] if anyone else []
        if identity is not None:
            named = names.get(identity)
            if named:
                lists.append(named)
        if group_rules:
            for group in groups:
                listed = group_rules.get(group)
                if listed:
                    lists.append(listed)
        if len(lists) == 1:
            return lists[0]
        return sorted(set().union(*lists))

    def decide(self, identity: str | None, groups: Iterable[str], action: str, pool_handle: bytes) -> bool:
        action = _ALIASES.get(action, action)  # a request is read as its rule would be
        group_set = frozenset(groups)
        key = (identity, group_set, action, pool_handle)
        decisions = self._decisions
        answer = decisions.get(key)
        if answer is not None:
            return answer
        answer = False
        rules = self.rules
        if identity is not None:
            # Rules name normalized identities; so is the one asked about (no
            # spelling of a name escapes its rules or reaches another's).
            identity = normalize_identity(identity)
            if identity is None:
                return False
        for number in self._candidates(identity, group_set, action):
            rule = rules[number]
            if rule.matches(identity, group_set, action, pool_handle):
                answer = rule.allow
                break
        if len(decisions) >= _DECISIONS_CACHED:
            del decisions[next(iter(decisions))]
        decisions[key] = answer
        return answer

    def authorize(self, identity: str | None, groups: Iterable[str], action: str, pool_handle: bytes) -> bool:
        """The registrar's authorizer interface (synchronous here)."""
        return self.decide(identity, groups, action, pool_handle)
