"""Checks shared by the benchmark scripts' quick-mode tests: figures are positive finite numbers,
latency summaries are complete and ordered."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["finite_everywhere", "latency", "load_script", "positive", "stale_page", "written_section"]


def positive(value: Any, where: str) -> float:
    assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where} is not a number: {value!r}"
    assert math.isfinite(value), f"{where} is not finite: {value!r}"
    assert value > 0, f"{where} is not positive: {value!r}"
    return float(value)


def latency(summary: Any, where: str) -> None:
    assert isinstance(summary, dict), f"{where} is missing"
    for key in ("p50", "p95", "mean", "min", "max"):
        positive(summary[key], f"{where}.{key}")
    assert summary["min"] <= summary["p50"] <= summary["p95"] <= summary["max"], f"{where} is out of order"
    assert summary["n"] >= 1


def finite_everywhere(value: Any, where: str = "results") -> None:
    """No NaN or infinity anywhere (json would write them as NaN/Infinity)."""
    if isinstance(value, dict):
        for key, item in value.items():
            finite_everywhere(item, f"{where}.{key}")
    elif isinstance(value, list):
        for position, item in enumerate(value):
            finite_everywhere(item, f"{where}[{position}]")
    elif isinstance(value, float):
        assert math.isfinite(value), f"{where} is not finite"


def load_script(script: Path) -> ModuleType:
    """A benchmark script imported as a module (its folder put on ``sys.path`` for its own imports)."""
    sys.path.insert(0, str(script.parent))
    spec = importlib.util.spec_from_file_location(script.stem, script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stale_page(path: Path, start: str, end: str) -> None:
    """Write a page whose marked section is stale, with text before and after it."""
    path.write_text(f"# Title\n\nkept before\n\n{start}\nstale\n{end}\n\nkept after\n")


def written_section(path: Path, start: str, end: str) -> str:
    """The section a script wrote into a :func:`stale_page`, checked to have replaced the stale
    one and kept the rest of the page byte for byte."""
    text = path.read_text()
    assert text.startswith("# Title\n\nkept before\n\n") and text.endswith("\n\nkept after\n")
    assert "stale" not in text and text.count(start) == 1 and text.count(end) == 1
    return text[text.index(start) : text.index(end)]
