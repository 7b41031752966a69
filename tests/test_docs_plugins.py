"""docs/plugins.md's complete site plugin, run as it is written: the two
files are extracted from the page, the plugin module is loaded from a site
directory outside the package, and every test of the page's test module runs."""

from __future__ import annotations

import os
import re
import sys
import types
from pathlib import Path

import pytest
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from rserpool.interfaces import IPoolAuthorizer
from rserpool.plugin import load_named

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def doc_files() -> dict[str, str]:
    """``# file: NAME`` python blocks of the page, by NAME."""
    files = {}
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S):
        first, _, rest = block.partition("\n")
        match = re.fullmatch(r"# file: (\S+)", first.strip())
        if match:
            files[match.group(1)] = rest
    return files


@pytest.fixture
def site(tmp_path):
    files = doc_files()
    assert set(files) == {"sitepolicy.py", "test_sitepolicy.py"}
    directory = tmp_path / "plugins"
    directory.mkdir(mode=0o755)
    (directory / "sitepolicy.py").write_text(files["sitepolicy.py"])
    os.chmod(directory / "sitepolicy.py", 0o644)
    return directory, files["test_sitepolicy.py"]


def test_the_pages_tests_pass_against_the_pages_plugin(site, monkeypatch):
    directory, test_source = site
    # The page's test module imports "sitepolicy" as a site author's would.
    monkeypatch.syspath_prepend(str(directory))
    monkeypatch.delitem(sys.modules, "sitepolicy", raising=False)
    module = types.ModuleType("test_sitepolicy")
    exec(compile(test_source, "docs/plugins.md:test_sitepolicy.py", "exec"), module.__dict__)
    tests = [value for name, value in vars(module).items() if name.startswith("test_") and callable(value)]
    assert len(tests) == 3
    for test in tests:
        test()


def test_the_pages_plugins_load_from_a_site_directory(site, tmp_path):
    directory, _ = site
    secrets = tmp_path / "site.secrets"
    secrets.write_text("alice s3cret\n")
    clock = Clock()
    authorizer = load_named("authorizer", "own-pool", {"suffix": "-pool"}, clock, [str(directory)])
    assert verifyObject(IPoolAuthorizer, authorizer)
    assert authorizer.authorize("pe1", frozenset(), "register", b"pe1-pool") is True
    checker = load_named("authenticator", "site-chap", {"secrets_file": str(secrets), "operators": "alice"},
                         clock, [str(directory)])
    assert verifyObject(ICredentialsChecker, checker)
    assert checker.groups == {"alice": ("operators",)}
