"""The one rule that says when two identity spellings are the same identity.

Every place an identity enters rserpool applies :func:`canonical_identity`:
certificate names (:mod:`rserpool.security.certidentity`), TLS-PSK
identities (:mod:`rserpool.security.psk`), the identities claimed in SRP
and CHAP exchanges (:mod:`rserpool.security.exchange`), the names the
directory and the credentials, rules and PSK files give, and the
handlespace's PE-identity binding (:mod:`rserpool.handlespace.handlespace`).
Failure budgets, rate limits, quotas, authorization rules and PE ownership
are therefore keyed on the canonical form, whichever spelling a client used.

The rule is the union of what the backends treat as one name, so that no
backend can turn two spellings into two identities:

1. Unicode NFKC (the normalisation step of SASLprep, RFC 5054's SRP
   identities; it also maps the no-break and other compatibility spaces to
   a plain space);
2. leading and trailing white space removed, inner runs of white space
   collapsed to one space (LDAP's insignificant-space handling, RFC 4518,
   under which slapd matches ``uid``);
3. case folded (``str.casefold``; LDAP's ``caseIgnoreMatch``, and RADIUS
   servers that match user names without case), then NFKC again.

The result must be 1 to :data:`MAX_IDENTITY_BYTES` bytes of UTF-8 with no
control, format (zero-width), surrogate, private-use or unassigned
character; otherwise there is no identity (``None``).  Files that store
identities (credentials, PSK keys) must spell them canonically; rules files
are canonicalised when read.

Pure: no I/O, no clock.  Results are memoised (a bounded cache), since the
handlespace applies the rule on every registration.
"""

from __future__ import annotations

import functools
import unicodedata

__all__ = ["MAX_IDENTITY_BYTES", "canonical_identity", "is_canonical_identity"]

#: Longest identity (UTF-8 bytes of the canonical form); the ASAP
#: authentication extension's field has the same bound.
MAX_IDENTITY_BYTES = 255
#: Longest input accepted, in characters: longer text (even mostly white
#: space) is refused before any normalisation work.
_MAX_INPUT = 4 * MAX_IDENTITY_BYTES
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


@functools.lru_cache(maxsize=4096)
def _canonical(text: str) -> str | None:
    nfkc = unicodedata.normalize("NFKC", text)
    # Controls (tab, new line, the C1 range...) are refused before white
    # space is collapsed: Python counts some of them as white space.
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in nfkc):
        return None
    words = nfkc.split()
    if not words:
        return None
    folded = unicodedata.normalize("NFKC", " ".join(words).casefold())
    if len(folded.encode("utf-8")) > MAX_IDENTITY_BYTES:
        return None
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in folded):
        return None
    return folded


def canonical_identity(text: object) -> str | None:
    """The canonical form of an identity, or None if ``text`` is not one.

    ``" PE1 "``, ``"Pe1"`` and ``"pe1"`` are all ``"pe1"``;
    ``"pe\\u00a0 1"`` is ``"pe 1"``; ``""``, ``"   "``, ``"pe\\t1"``,
    ``"pe1\\u200b"`` and anything over 255 bytes are None.
    """
    if not isinstance(text, str) or not 0 < len(text) <= _MAX_INPUT:
        return None
    return _canonical(text)


def is_canonical_identity(text: object) -> bool:
    """Whether ``text`` is an identity already in canonical form."""
    return isinstance(text, str) and canonical_identity(text) == text
