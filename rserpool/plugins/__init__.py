"""rserpool's plugin package, searched with ``twisted.plugin.getPlugins``.

Built-in plugin objects are in :mod:`rserpool.plugins.builtin`.  Like
``twisted/plugins``, this package's ``__path__`` also takes in the
``rserpool/plugins/`` directory of every other ``sys.path`` entry (one
without an ``__init__.py``), so an installed distribution can ship a plugin
module there.  Configured site directories are loaded separately by
:func:`rserpool.plugin.find_plugins`.  Never import heavy modules here.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))  # type: ignore[name-defined]  # noqa: F821
__all__: list[str] = []
