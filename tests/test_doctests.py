"""Every ``>>>`` example in the package's docstrings runs (``Example::`` blocks that need a model
server or an LLM are shown, not run)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import headroom_integrations

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(headroom_integrations.__path__, "headroom_integrations.")
    if not info.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str, tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples that open a store write into the test's directory
    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # an optional extra that is not installed
        pytest.skip(f"{name}: {exc}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
