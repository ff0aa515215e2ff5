"""The export/import benchmark runs end to end in --quick mode and produces every figure, well-formed.

Only the shape of the output is checked (both backends, every rate positive and finite, the round
trip identical, the markdown section), never how fast anything was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench_checks import finite_everywhere

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- transfer-bench:start -->", "<!-- transfer-bench:end -->"


def test_quick_run_writes_every_figure(tmp_path: Path) -> None:
    out, raw = tmp_path / "b.md", tmp_path / "b.json"
    out.write_text("# Benchmarks\n\nSome other section.\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_transfer.py"), "--quick",
                           "--out", str(out), "--json", str(raw)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(raw.read_text())
    finite_everywhere(results)
    assert set(results["backends"]) == {"SQLite", "PostgreSQL"}
    for name, figures in results["backends"].items():
        assert figures["rows"] == 300 and figures["round_trip_identical"] is True, name
        for key in ("export", "export_vectors", "import_vectors", "import_embed", "reimport"):
            rate = figures["rows_per_s"][key]
            assert 0 < rate["min"] <= rate["median"] <= rate["max"], (name, key)
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nSome other section.\n") and text.count(START) == text.count(END) == 1
    assert "| SQLite |" in text and "| PostgreSQL |" in text
