"""Lazy package exports (PEP 562).

A package ``__init__`` names what users call and the submodule that defines
each name; the submodule is imported on first use, so importing the package
stays cheap and cannot create an import cycle.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, table: Mapping[str, str]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__all__, __getattr__, __dir__)`` for *package*.

    *table* maps each exported name to its submodule, relative to the
    package (``"tls"`` for ``package.tls``).
    """
    exports = dict(table)
    names = sorted(exports)

    def getattr_(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        globals_ = importlib.import_module(package).__dict__
        globals_[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(importlib.import_module(package).__dict__) | set(names))

    return names, getattr_, dir_
