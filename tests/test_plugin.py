"""rserpool.plugin: built-in discovery, a site plugin from outside the package, safety."""

from __future__ import annotations

import os
import textwrap

import pytest
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from rserpool.backends.filestore import FileStore, RulesFileAuthorizer
from rserpool.errors import PluginError, PluginNotFound, UnsafePluginDirectory
from rserpool.interfaces import IBackendFactory, IPoolAuthorizer
from rserpool.plugin import find_factories, find_plugins, load_named
from rserpool.security.credentials import CertificateChecker, ChapChecker, SrpChecker

SITE_PLUGIN = textwrap.dedent('''
    """A site authorizer: PEs may register only in pools named after them."""
    from zope.interface import implementer
    from rserpool.interfaces import IBackendFactory, IPoolAuthorizer

    @implementer(IPoolAuthorizer)
    class OwnPoolAuthorizer:
        def __init__(self, suffix, clock):
            self.suffix = suffix
            self.clock = clock

        def authorize(self, identity, groups, action, pool_handle):
            return identity is not None and pool_handle == (identity + self.suffix).encode()

    @implementer(IBackendFactory)
    class OwnPoolFactory:
        name = "own-pool"
        kind = "authorizer"
        description = "a PE may use the pool named after it"

        def build(self, options, reactor):
            unknown = set(options) - {"suffix"}
            if unknown:
                raise ValueError(f"unknown options {sorted(unknown)}")
            return OwnPoolAuthorizer(options.get("suffix", ""), reactor)

    own_pool = OwnPoolFactory()
''')


@pytest.fixture
def site_dir(tmp_path):
    directory = tmp_path / "site-plugins"
    directory.mkdir(mode=0o755)
    (directory / "mysite.py").write_text(SITE_PLUGIN)
    os.chmod(directory / "mysite.py", 0o644)
    return directory


def test_builtins_are_found() -> None:
    names = {(f.kind, f.name) for f in find_plugins(IBackendFactory)}
    assert {("authorizer", "file"), ("srp-store", "file"), ("chap-store", "file"),
            ("cert-mapping", "file"), ("groups", "file"), ("authenticator", "certificate"),
            ("authenticator", "psk"), ("authenticator", "chap"), ("authenticator", "srp")} <= names


def test_site_plugin_from_outside_the_package(site_dir) -> None:
    factories = find_factories("authorizer", site_dirs=[str(site_dir)])
    names = {f.name for f in factories}
    assert {"file", "own-pool"} <= names
    assert "own-pool" not in {f.name for f in find_factories("authorizer")}
    clock = Clock()
    authorizer = load_named("authorizer", "own-pool", {"suffix": "-pool"}, clock, [str(site_dir)])
    assert verifyObject(IPoolAuthorizer, authorizer)
    assert authorizer.clock is clock
    assert authorizer.authorize("pe1", frozenset(), "register", b"pe1-pool") is True
    assert authorizer.authorize("pe1", frozenset(), "register", b"pe2-pool") is False
    # without the site directory it is unknown
    with pytest.raises(PluginNotFound):
        load_named("authorizer", "own-pool")


def test_unknown_name_lists_the_available_ones(site_dir) -> None:
    with pytest.raises(PluginNotFound) as info:
        load_named("authorizer", "nosuch", site_dirs=[str(site_dir)])
    available = info.value.available
    assert {"file", "own-pool"} <= set(available) and list(available) == sorted(available)
    assert str(info.value) == f"unknown authorizer plugin 'nosuch' (available: {', '.join(available)})"
    with pytest.raises(PluginError, match="unknown plugin kind"):
        load_named("wizard", "file")


def test_bad_options_are_errors(site_dir) -> None:
    with pytest.raises(PluginError, match="unknown option"):
        load_named("authorizer", "file", {"rules": "x", "rulez": "y"})
    with pytest.raises(PluginError, match="required"):
        load_named("authorizer", "file", {})
    with pytest.raises(PluginError, match="unknown options"):
        load_named("authorizer", "own-pool", {"sufix": "-pool"}, site_dirs=[str(site_dir)])


@pytest.mark.parametrize("target", ["dir", "module"])
def test_writable_site_directory_is_refused(site_dir, target: str) -> None:
    path = site_dir if target == "dir" else site_dir / "mysite.py"
    os.chmod(path, 0o777 if target == "dir" else 0o666)
    with pytest.raises(UnsafePluginDirectory, match="writable by group or others"):
        find_factories("authorizer", site_dirs=[str(site_dir)])


def test_missing_site_directory_is_refused(tmp_path) -> None:
    with pytest.raises(UnsafePluginDirectory):
        find_plugins(IBackendFactory, [str(tmp_path / "nope")])


def test_duplicate_names_are_refused(site_dir) -> None:
    (site_dir / "clash.py").write_text(SITE_PLUGIN.replace('"own-pool"', '"file"'))
    os.chmod(site_dir / "clash.py", 0o644)
    with pytest.raises(PluginError, match="are called 'file'"):
        load_named("authorizer", "file", {"rules": "x"}, site_dirs=[str(site_dir)])


def test_factory_must_build_the_kind(site_dir) -> None:
    (site_dir / "wrong.py").write_text(SITE_PLUGIN.replace('"own-pool"', '"liar"').replace(
        'kind = "authorizer"', 'kind = "groups"'))
    os.chmod(site_dir / "wrong.py", 0o644)
    with pytest.raises(PluginError, match="does not provide IGroupSource"):
        load_named("groups", "liar", site_dirs=[str(site_dir)])


def test_builtin_file_plugins_share_one_store(tmp_path) -> None:
    path = str(tmp_path / "credentials")
    stores = [load_named(kind, "file", {"path": path}) for kind in ("srp-store", "chap-store",
                                                                      "cert-mapping", "groups")]
    assert all(s is stores[0] for s in stores) and isinstance(stores[0], FileStore)
    assert isinstance(load_named("authorizer", "file", {"rules": path}), RulesFileAuthorizer)


def test_builtin_authenticators(tmp_path) -> None:
    path = str(tmp_path / "credentials")
    chap = load_named("authenticator", "chap", {"backend.path": path, "groups": "file", "groups.path": path})
    assert isinstance(chap, ChapChecker) and chap.group_source is chap.backend
    srp = load_named("authenticator", "srp", {"store.path": path})
    assert isinstance(srp, SrpChecker)
    cert = load_named("authenticator", "certificate", {"mapping": "file", "mapping.path": path,
                                                       "use_certificate_names": "no"})
    assert isinstance(cert, CertificateChecker) and not cert.use_certificate_names
    for checker in (chap, srp, cert):
        assert verifyObject(ICredentialsChecker, checker)
    with pytest.raises(PluginError, match="unknown option"):
        load_named("authenticator", "chap", {"backend.path": path, "backend.paht": path})
    with pytest.raises(PluginError, match="either"):
        load_named("authenticator", "chap", {"backend": "file", "verifier": "radius"})


def test_broken_site_module_is_a_clear_error(site_dir) -> None:
    (site_dir / "broken.py").write_text("raise RuntimeError('boom')\n")
    os.chmod(site_dir / "broken.py", 0o644)
    with pytest.raises(PluginError, match="broken.py failed to import"):
        find_factories("authorizer", site_dirs=[str(site_dir)])
