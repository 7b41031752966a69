"""Find rserpool plugins (built-in and site) and build them by name.

Built-in plugins live in :mod:`rserpool.plugins`; third-party packages may
add modules to the ``rserpool/plugins/`` directory of any ``sys.path`` entry
(``twisted.plugin.pluginPackagePaths`` semantics, as for ``twisted/plugins``).
Site plugins are modules in directories named by the configuration (for
example ``/etc/rserpool/plugins``): each module of such a directory is
imported as a submodule of a private package named after the directory, so
one site's modules never shadow another's or the built-ins'.  Built-ins are
discovered with ``twisted.plugin.getPlugins``; site modules are scanned the
same way (module-level objects providing ``IPlugin`` and the interface)
but without Twisted's ``dropin.cache``, a pickle, so nothing is unpickled
from a site directory.

Every factory is checked with ``zope.interface.verify.verifyObject`` against
:class:`~rserpool.interfaces.IBackendFactory` when it is found, and what it
builds against its kind's interface (``KIND_INTERFACES``); a plugin that
does not keep its contract is a :class:`~rserpool.errors.PluginError` that
names it and says what is missing.  A factory providing
:class:`~rserpool.interfaces.IComposedFactory` gets an
:class:`~rserpool.interfaces.IPluginLoader` for the sub-plugins its options
name (an authenticator over a verifier store, a mapping, a group source).

Importing a plugin module runs its code with the registrar's privileges, so
a site directory and everything in it must be owned by root or by the user running rserpool and
must not be writable by group or others; otherwise
:class:`~rserpool.errors.UnsafePluginDirectory` is raised and nothing in it
is imported.  See ``docs/plugins.md``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import stat
import sys
import types
from collections.abc import Iterable, Mapping
from typing import Any

from twisted.plugin import IPlugin, getPlugins
from zope.interface import implementer
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from rserpool.errors import PluginError, PluginNotFound, UnsafePluginDirectory
from rserpool.interfaces import KIND_INTERFACES, KINDS, IBackendFactory, IComposedFactory, IPluginLoader

__all__ = ["PluginLoader", "check_site_directory", "find_factories", "find_plugins", "load_named",
           "site_modules", "verify_provider"]

_SITE_PREFIX = "_rserpool_site_plugins_"
_MAX_ENTRIES = 10_000


def _unsafe(path: str, st: os.stat_result) -> str | None:
    if st.st_uid not in (0, os.geteuid()):
        return f"{path} is owned by uid {st.st_uid}, not root or the current user"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} is writable by group or others (mode {st.st_mode & 0o777:o})"
    return None


def check_site_directory(directory: str) -> str:
    """The absolute path of a safe site plugin directory, or
    :class:`UnsafePluginDirectory` (also for a missing directory)."""
    path = os.path.abspath(directory)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UnsafePluginDirectory(f"plugin directory {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePluginDirectory(f"plugin directory {path} is not a directory")
    problem = _unsafe(path, st)
    if problem:
        raise UnsafePluginDirectory(f"refusing plugin directory: {problem}")
    seen = 0
    for root, dirs, files in os.walk(path):
        for entry in dirs + files:
            seen += 1
            if seen > _MAX_ENTRIES:
                raise UnsafePluginDirectory(f"plugin directory {path} holds more than {_MAX_ENTRIES} entries")
            child = os.path.join(root, entry)
            try:
                problem = _unsafe(child, os.stat(child))
            except OSError as exc:
                problem = f"{child}: {exc.strerror}"
            if problem:
                raise UnsafePluginDirectory(f"refusing plugin directory {path}: {problem}")
    return path


def _load_module(package: str, path: str) -> types.ModuleType:
    """Import ``path`` as ``package.<stem>`` (again only when it changed)."""
    name = f"{package}.{os.path.basename(path)[:-3]}"
    st = os.stat(path)
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__rserpool_stamp__", None) == stamp:
        return module
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
        raise PluginError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise PluginError(f"site plugin {path} failed to import: {exc!r}") from exc
    module.__rserpool_stamp__ = stamp  # type: ignore[attr-defined]
    return module


def site_modules(directory: str) -> list[types.ModuleType]:
    """Import every ``*.py`` module of a (checked) site directory, in name
    order, each as a submodule of a private package named after the
    directory.  Twisted's ``dropin.cache`` (a pickle) is never read here."""
    path = check_site_directory(directory)
    package = _SITE_PREFIX + hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    if package not in sys.modules:
        holder = types.ModuleType(package, f"rserpool site plugins from {path}")
        holder.__path__ = []  # a namespace for the site modules only; nothing is searched
        sys.modules[package] = holder
    files = sorted(e for e in os.listdir(path) if e.endswith(".py") and e.isascii()
                   and e[:-3].isidentifier())
    return [_load_module(package, os.path.join(path, f)) for f in files]


def _site_plugins(interface: Any, directory: str) -> list[Any]:
    found = []
    for module in site_modules(directory):
        for value in list(vars(module).values()):
            if IPlugin.providedBy(value):
                adapted = interface(value, None)
                if adapted is not None:
                    found.append(adapted)
    return found


def find_plugins(interface: Any, site_dirs: Iterable[str] = ()) -> list[Any]:
    """Every plugin providing ``interface``: the built-ins (with
    ``twisted.plugin.getPlugins``), then each site directory in order.
    Raises UnsafePluginDirectory before importing anything from an unsafe
    directory, PluginError when a site module fails to import."""
    import rserpool.plugins

    found: list[Any] = list(getPlugins(interface, rserpool.plugins))
    for directory in site_dirs:
        found.extend(_site_plugins(interface, directory))
    return found


def verify_provider(interface: Any, provider: Any, what: str) -> None:
    """``verifyObject(interface, provider)``, as a :class:`PluginError`
    naming ``what`` and what is missing."""
    try:
        verifyObject(interface, provider)
    except Invalid as exc:
        detail = " ".join(str(exc).split())
        raise PluginError(f"{what} does not provide {interface.__name__}: {detail}") from None


def find_factories(kind: str | None = None, site_dirs: Iterable[str] = ()) -> list[Any]:
    """The :class:`IBackendFactory` plugins, optionally of one ``kind``; each
    is checked against the interface (a broken one is a PluginError naming it)."""
    if kind is not None and kind not in KINDS:
        raise PluginError(f"unknown plugin kind {kind!r} (known: {', '.join(KINDS)})")
    found = []
    for factory in find_plugins(IBackendFactory, site_dirs):
        verify_provider(IBackendFactory, factory, f"plugin {factory!r} ({type(factory).__module__})")
        if factory.kind not in KINDS:
            raise PluginError(f"plugin {factory.name!r} ({type(factory).__module__}) has unknown kind "
                              f"{factory.kind!r} (known: {', '.join(KINDS)})")
        if kind is None or factory.kind == kind:
            found.append(factory)
    return found


def load_named(kind: str, name: str, options: Mapping[str, str] | None = None,
               reactor: Any = None, site_dirs: Iterable[str] = (), built: list[Any] | None = None) -> Any:
    """Build the ``kind`` plugin called ``name`` with ``options``.

    Raises :class:`PluginNotFound` (listing the available names) for an
    unknown name, :class:`PluginError` when two plugins claim the name or
    the factory fails or builds something that does not provide the kind's
    interface (``verifyObject``).  ``built``, when given, collects every
    provider built, sub-plugins included (the application starts those that
    are services).
    """
    site_dirs = tuple(site_dirs)
    factories = find_factories(kind, site_dirs)
    matching = [f for f in factories if f.name == name]
    if not matching:
        raise PluginNotFound(kind, name, tuple(sorted({f.name for f in factories})))
    if len(matching) > 1:
        raise PluginError(f"{len(matching)} {kind} plugins are called {name!r}; remove all but one")
    factory = matching[0]
    try:
        if IComposedFactory.providedBy(factory):
            provider = factory.build(dict(options or {}), reactor, PluginLoader(reactor, site_dirs, built))
        else:
            provider = factory.build(dict(options or {}), reactor)
    except (ValueError, OSError) as exc:
        if isinstance(exc, OSError) and exc.filename and exc.strerror:
            why = f"{exc.filename}: {exc.strerror}"  # not "[Errno 2] ...: '...'"
        else:
            why = str(exc)
        raise PluginError(f"{kind} plugin {name!r}: {why}") from exc
    verify_provider(KIND_INTERFACES[kind], provider, f"{kind} plugin {name!r} built {provider!r}, which")
    if built is not None:
        built.append(provider)
    return provider


@implementer(IPluginLoader)
class PluginLoader:
    """Builds sub-plugins for an :class:`IComposedFactory`, from the same
    site directories (and into the same ``built`` list) as its parent."""

    def __init__(self, reactor: Any, site_dirs: Iterable[str] = (), built: list[Any] | None = None) -> None:
        self.reactor = reactor
        self.site_dirs = tuple(site_dirs)
        self.built = built

    def load(self, kind: str, name: str, options: Mapping[str, str]) -> Any:
        return load_named(kind, name, options, self.reactor, self.site_dirs, self.built)
