"""Checks shared by the benchmark scripts' quick-mode tests: figures are positive finite numbers,
latency summaries are complete and ordered."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["finite_everywhere", "latency", "positive"]


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
