"""What a RADIUS reply means to rserpool: the accept or reject, and the
pools and groups read from its attributes (``docs/radius.md``).  Pure: no
packet, no socket, no clock; :mod:`rserpool.backends.radius` builds the
:class:`RadiusDecision` of each reply with :func:`decision_from_attributes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "AUTHORIZATION_SOURCES",
    "MAX_GROUPS",
    "MAX_POOLS",
    "RadiusDecision",
    "decision_from_attributes",
]

#: Where rserpool reads authorization from: the Class attribute
#: (``rserpool:pools=a,b;groups=c``), Filter-Id (a group name) or the
#: RSerPool-Allowed-Pool / RSerPool-Group vendor attributes.
AUTHORIZATION_SOURCES = frozenset({"class", "filter-id", "vsa"})

MAX_POOLS = 64
MAX_GROUPS = 64


@dataclass(frozen=True, slots=True)
class RadiusDecision:
    """The outcome of an Access-Request.

    ``attributes`` maps attribute names to their decoded values (a tuple
    each); it is informational and not hashable.
    """

    accepted: bool
    identity: str
    groups: frozenset[str] = frozenset()
    pools: tuple[str, ...] = ()
    attributes: Mapping[str, tuple[Any, ...]] = field(default_factory=dict, compare=False)


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


def _names(text: str) -> list[str]:
    """Comma-separated names; empty items and items with blanks inside are skipped."""
    names = []
    for item in text.split(","):
        item = item.strip()
        if item and not any(char.isspace() for char in item):
            names.append(item)
    return names


def decision_from_attributes(
    identity: str,
    accepted: bool,
    attributes: Mapping[str, Sequence[Any]],
    sources: Iterable[str] = AUTHORIZATION_SOURCES,
    class_prefix: str = "rserpool:",
) -> RadiusDecision:
    """Read pools and groups from reply attributes; a refusal carries none.

    - ``class``: each Class value starting with ``class_prefix`` holds
      ``key=v1,v2`` items separated by ``;`` (keys ``pools`` and ``groups``);
      other Class values are ignored.
    - ``filter-id``: each Filter-Id is a group name.
    - ``vsa``: RSerPool-Allowed-Pool values are pool-handle patterns,
      RSerPool-Group values are group names.

    At most MAX_POOLS patterns and MAX_GROUPS groups are kept.
    """
    sources = frozenset(sources)
    unknown = sources - AUTHORIZATION_SOURCES
    if unknown:
        raise ValueError(f"unknown authorization source(s) {sorted(unknown)}")
    attrs = {name: tuple(values) for name, values in attributes.items()}
    if not accepted:
        return RadiusDecision(False, identity, frozenset(), (), attrs)
    pools: list[str] = []
    groups: list[str] = []
    if "class" in sources:
        for raw in attrs.get("Class", ()):
            text = _text(raw)
            if text is None or not text.startswith(class_prefix):
                continue
            for item in text[len(class_prefix):].split(";"):
                key, sep, rest = item.partition("=")
                if not sep:
                    continue
                if key.strip() == "pools":
                    pools.extend(_names(rest))
                elif key.strip() == "groups":
                    groups.extend(_names(rest))
    if "filter-id" in sources:
        for raw in attrs.get("Filter-Id", ()):
            text = _text(raw)
            if text:
                groups.extend(_names(text))
    if "vsa" in sources:
        for raw in attrs.get("RSerPool-Allowed-Pool", ()):
            text = _text(raw)
            if text:
                pools.extend(_names(text))
        for raw in attrs.get("RSerPool-Group", ()):
            text = _text(raw)
            if text:
                groups.extend(_names(text))
    unique_pools = tuple(dict.fromkeys(pools))[:MAX_POOLS]
    unique_groups = frozenset(tuple(dict.fromkeys(groups))[:MAX_GROUPS])
    return RadiusDecision(True, identity, unique_groups, unique_pools, attrs)
