"""The LangGraph store benchmark runs end to end in --quick mode and produces every figure, well-formed.

Only the shape of the output is checked (every store and operation, finite positive latencies in
order, the self-retrieval check, the markdown section), never how fast anything was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench_checks import finite_everywhere

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- store-bench:start -->", "<!-- store-bench:end -->"
STORES = {"headroom (SQLite)", "headroom (PostgreSQL)", "InMemoryStore", "SqliteStore"}


def test_quick_run_writes_every_figure(tmp_path: Path) -> None:
    out, raw = tmp_path / "b.md", tmp_path / "b.json"
    out.write_text("# Benchmarks\n\nSome other section.\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_store.py"), "--quick", "--no-progress",
         "--out", str(out), "--json", str(raw)],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(raw.read_text())
    finite_everywhere(results)
    [point] = results["sizes"]
    assert point["size"] == 200 and set(point["stores"]) | set(point["skipped"]) == STORES
    assert "headroom (SQLite)" in point["stores"] and "InMemoryStore" in point["stores"]
    for name, figures in point["stores"].items():
        assert figures["fill_items_per_s"] > 0, name
        for op in ("put", "get", "search", "filter"):
            s = figures[op]
            assert s["n"] == 10 and 0 < s["min"] <= s["p50"] <= s["p95"] <= s["max"], (name, op)
        assert 0.0 <= figures["self_at_1"] <= 1.0
    assert point["stores"]["headroom (SQLite)"]["self_at_1"] >= 0.9  # the store finds an item by its own text
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nSome other section.\n")
    section = text[text.index(START) : text.index(END)]
    assert "| 200 | headroom (SQLite) |" in section and "| 200 | InMemoryStore |" in section
