"""The package ``__init__``s export what users call, lazily."""

import importlib
import subprocess
import sys

import pytest

PACKAGES = ["rserpool.security", "rserpool.service", "rserpool.asap"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_is_the_submodules_object(package):
    module = importlib.import_module(package)
    assert module.__all__ == sorted(module.__all__)
    assert module.__all__
    for name in module.__all__:
        value = getattr(module, name)
        assert getattr(value, "__module__", "").startswith(package + "."), name
        defining = importlib.import_module(value.__module__)
        assert getattr(defining, name) is value
        assert name in dir(module)


@pytest.mark.parametrize("package", PACKAGES)
def test_an_unknown_name_is_an_attribute_error(package):
    module = importlib.import_module(package)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        module.NoSuchThing  # noqa: B018


@pytest.mark.parametrize("package", PACKAGES)
def test_star_import_gives_the_exports(package):
    namespace: dict = {}
    exec(f"from {package} import *", namespace)
    assert set(importlib.import_module(package).__all__) <= set(namespace)


def test_importing_the_packages_imports_no_submodule():
    code = (
        "import sys\n"
        "import rserpool.security, rserpool.service, rserpool.asap\n"
        f"packages = {PACKAGES!r}\n"
        "loaded = sorted(m for m in sys.modules for p in packages if m.startswith(p + '.'))\n"
        "print(loaded)\n"
        "print('twisted.internet.reactor' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["[]", "False"]
