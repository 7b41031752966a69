"""Who a peer is: the :class:`Identity` value and the one rule for names.

Pure (no Twisted, no I/O): the security gate, the authentication exchanges,
the checkers and every backend share it.  An identity name is what pool
authorization, rate limits, quotas and PE ownership are keyed on, so every
place that turns a claimed name into an identity goes through
:func:`normalize_identity`.
"""

from __future__ import annotations

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
    "normalize_identity",
]

#: Longest identity name, in UTF-8 bytes after normalization (and characters).
MAX_IDENTITY_LENGTH = 255

#: How an identity was proven (``Identity.mechanism``).
MECH_CERTIFICATE = "certificate"  # a verified TLS client certificate
MECH_PSK = "tls-psk"  # the TLS-PSK handshake (RFC 5355 section 4)
MECH_SRP = "SRP-6a-SHA256-2048"  # SRP-6a inside TLS (docs/auth-exchanges.md)
MECH_CHAP = "CHAP-MD5"  # CHAP inside TLS


def normalize_identity(name: object) -> str | None:
    """The identity ``name`` stands for: NFKC-normalized, 1-255 UTF-8 bytes,
    no control characters; None when ``name`` cannot be an identity."""
    if not isinstance(name, str):
        return None
    text = unicodedata.normalize("NFKC", name)
    if not text or len(text.encode("utf-8", "surrogatepass")) > MAX_IDENTITY_LENGTH:
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text) or not text.isprintable():
        return None
    return text


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
