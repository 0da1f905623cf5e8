"""The examples in lazymask's docstrings run and give what they show (those marked +SKIP need files)."""

import doctest
import importlib
import pkgutil

import pytest

import lazymask

MODULES = sorted(
    name for _, name, _ in pkgutil.walk_packages(lazymask.__path__, prefix="lazymask.")
    if not name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (run pytest --doctest-modules {name})"
