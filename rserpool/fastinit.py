"""Fast constructors for frozen slotted dataclasses.

The wire codec and the handlespace build many small frozen dataclasses on
their hot paths (a decoded parameter, a registered PE); a generated
constructor that sets the slots directly costs a fraction of the
dataclass ``__init__`` with its ``__post_init__`` checks.  It sits below
every layer (it imports nothing of rserpool) so that each may use it.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any, Callable

__all__ = ["fast_constructor"]


def fast_constructor(cls: type) -> Callable[..., Any]:
    """A constructor for a frozen slotted dataclass that skips validation.

    Decoders use it for values whose ranges the wire layout already
    guarantees (fixed-width fields); user code goes through ``__init__``.
    """
    ns: dict[str, Any] = {"new": object.__new__, "cls": cls}
    params, body = [], ["    o = new(cls)"]
    for f in fields(cls):
        ns["set_" + f.name] = getattr(cls, f.name).__set__
        if f.kw_only:
            ns["d_" + f.name] = f.default
            body.append(f"    set_{f.name}(o, d_{f.name})")
            continue
        if f.default is not MISSING:
            ns["d_" + f.name] = f.default
            params.append(f"{f.name}=d_{f.name}")
        else:
            params.append(f.name)
        body.append(f"    set_{f.name}(o, {f.name})")
    src = f"def make({', '.join(params)}):\n" + "\n".join(body) + "\n    return o\n"
    exec(src, ns)
    return ns["make"]
