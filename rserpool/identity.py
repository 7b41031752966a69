"""Who a peer is: the :class:`Identity` value and the one rule for names.

Pure (no Twisted, no I/O): the security gate, the authentication exchanges,
the checkers, every backend and the handlespace share it.  An identity name
is what pool authorization, rate limits, failure budgets, quotas and PE
ownership are keyed on, so every place where a name enters rserpool goes
through :func:`normalize_identity`: certificate names
(:mod:`rserpool.security.certidentity`), TLS-PSK identities
(:mod:`rserpool.security.psk`), the identities claimed in SRP and CHAP
exchanges (:mod:`rserpool.security.exchange`), the names the directory and
the RADIUS server are asked about or answer, the credentials, PSK and rules
files, and the handlespace's PE-identity binding.

The rule is the union of what the backends treat as one name, so that no
backend can turn two spellings into two identities:

1. Unicode NFKC (the normalisation step of SASLprep, RFC 5054's SRP
   identities; it also maps the no-break and other compatibility spaces to
   a plain space);
2. leading and trailing white space removed, inner runs of white space
   collapsed to one space (LDAP's insignificant-space handling, RFC 4518,
   under which slapd matches ``uid``);
3. case folded (``str.casefold``: LDAP's ``caseIgnoreMatch``, RADIUS
   servers that match user names without case), then NFKC again.

The result must be 1 to :data:`MAX_IDENTITY_LENGTH` bytes of UTF-8 with no
control, format (zero-width), surrogate, private-use or unassigned
character; otherwise there is no identity (``None``).  Files that store
identities (credentials, PSK keys) must spell them in this form; rules
files are normalized when read.  Results are memoised (a bounded cache),
since the handlespace applies the rule on registrations.
"""

from __future__ import annotations

import functools
import types
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "Identity",
    "MAX_IDENTITY_LENGTH",
    "MECH_CERTIFICATE",
    "MECH_CHAP",
    "MECH_PSK",
    "MECH_SRP",
    "is_normalized_identity",
    "normalize_identity",
]

#: Longest identity name, in UTF-8 bytes after normalization (and characters).
MAX_IDENTITY_LENGTH = 255

#: How an identity was proven (``Identity.mechanism``).
MECH_CERTIFICATE = "certificate"  # a verified TLS client certificate
MECH_PSK = "tls-psk"  # the TLS-PSK handshake (RFC 5355 section 4)
MECH_SRP = "SRP-6a-SHA256-2048"  # SRP-6a inside TLS (docs/auth-exchanges.md)
MECH_CHAP = "CHAP-MD5"  # CHAP inside TLS


#: Longest input accepted, in characters: longer text (even mostly white
#: space) is refused before any normalization work.
_MAX_INPUT = 4 * MAX_IDENTITY_LENGTH
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


@functools.lru_cache(maxsize=4096)
def _normalized(text: str) -> str | None:
    nfkc = unicodedata.normalize("NFKC", text)
    # Controls (tab, new line, the C1 range...) are refused before white
    # space is collapsed: Python counts some of them as white space.
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in nfkc):
        return None
    words = nfkc.split()
    if not words:
        return None
    folded = unicodedata.normalize("NFKC", " ".join(words).casefold())
    if len(folded.encode("utf-8")) > MAX_IDENTITY_LENGTH:
        return None
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in folded):
        return None
    return folded


def normalize_identity(name: object) -> str | None:
    """The identity ``name`` stands for, or None when it cannot be one.

    ``" PE1 "``, ``"Pe1"`` and ``"pe1"`` are all ``"pe1"``;
    ``"pe\u00a0 1"`` is ``"pe 1"``; ``""``, ``"   "``, ``"pe\t1"``,
    ``"pe1\u200b"`` and anything over 255 bytes are None.
    """
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_INPUT:
        return None
    return _normalized(name)


def is_normalized_identity(name: object) -> bool:
    """Whether ``name`` is an identity already in normalized form."""
    return isinstance(name, str) and normalize_identity(name) == name


def _frozen_attributes(
    attributes: Mapping[str, Iterable[str] | str] | None,
) -> Mapping[str, tuple[str, ...]]:
    result: dict[str, tuple[str, ...]] = {}
    for key, values in (attributes or {}).items():
        result[str(key)] = (values,) if isinstance(values, str) else tuple(str(v) for v in values)
    return types.MappingProxyType(result)


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated principal (a PE, a PU, an ENRP peer, an operator).

    ``name`` is what authorization rules and PE ownership are keyed on;
    ``mechanism`` says how it was proven (``MECH_*``); ``groups`` come from
    the store or the AAA server; ``attributes`` carry backend facts for the
    log or a later authorization step (for example RADIUS reply attributes,
    the certificate fingerprint ``fingerprint_sha256``), never secrets.
    """

    name: str
    mechanism: str = ""
    groups: frozenset[str] = frozenset()
    attributes: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: types.MappingProxyType({}), compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or len(self.name) > MAX_IDENTITY_LENGTH:
            raise ValueError(f"an identity name is 1-{MAX_IDENTITY_LENGTH} characters")
        if not self.name.isprintable():
            raise ValueError("an identity name must not contain control characters")
        object.__setattr__(self, "groups", frozenset(self.groups))
        if not isinstance(self.attributes, types.MappingProxyType):
            object.__setattr__(self, "attributes", _frozen_attributes(self.attributes))

    @classmethod
    def create(
        cls,
        name: str,
        mechanism: str = "",
        groups: Iterable[str] = (),
        attributes: Mapping[str, Iterable[str] | str] | None = None,
    ) -> Identity:
        return cls(name, mechanism, frozenset(groups), _frozen_attributes(attributes))

    def with_groups(self, groups: Iterable[str]) -> Identity:
        """A copy with ``groups`` added."""
        return Identity(self.name, self.mechanism, self.groups | frozenset(groups), self.attributes)

    def with_mechanism(self, mechanism: str) -> Identity:
        return Identity(self.name, mechanism, self.groups, self.attributes)

    @property
    def fingerprint(self) -> str | None:
        """The SHA-256 fingerprint of the certificate that proved it, if any."""
        values = self.attributes.get("fingerprint_sha256")
        return values[0] if values else None
