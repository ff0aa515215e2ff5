"""The lifts benchmark runs end to end in --quick mode and produces every figure, well-formed.

Only the shape of the output is checked (both engines timed, the lifts reached some queries, the
markdown section), never how fast anything was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench_checks import finite_everywhere

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- lifts-bench:start -->", "<!-- lifts-bench:end -->"


def test_quick_run_writes_every_figure(tmp_path: Path) -> None:
    out, raw = tmp_path / "b.md", tmp_path / "b.json"
    out.write_text("# Benchmarks\n\nSome other section.\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_lifts.py"), "--quick",
                           "--out", str(out), "--json", str(raw)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(raw.read_text())
    finite_everywhere(results)
    assert (results["size"], results["queries"]) == (500, 30)
    for name in ("off", "shipped"):
        figures = results["figures"][name]
        assert figures["n"] == 60 and 0 < figures["p50"] <= figures["p95"], name
    assert results["queries_lifted"]["time"] > 0  # the shipped defaults lift dated queries
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nSome other section.\n") and text.count(START) == text.count(END) == 1
    assert "| lifts and diversity off |" in text and "| shipped defaults |" in text
