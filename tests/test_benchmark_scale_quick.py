"""The scale benchmark runs end to end in --quick mode and produces every figure, well-formed.

Only the shape of the output is checked (both scenarios, every case's latency summaries, sizes,
RSS and reopen figures positive and finite, the markdown section), never how fast anything was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench_checks import finite_everywhere, latency, positive

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- scale-bench:start -->", "<!-- scale-bench:end -->"


def test_quick_run_writes_every_figure(tmp_path: Path) -> None:
    out, raw = tmp_path / "b.md", tmp_path / "b.json"
    out.write_text("# Benchmarks\n\nSome other section.\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_scale.py"), "--quick", "--queries", "12",
                           "--workdir", str(tmp_path), "--out", str(out), "--json", str(raw)],
                          capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(raw.read_text())
    finite_everywhere(results)
    assert results["quick"] is True and set(results["scenarios"]) == {"A", "B"}
    for name, scenario in results["scenarios"].items():
        fill, search = scenario["fill"], scenario["search"]
        assert fill["rows"] == scenario["total"], name
        for key in ("rows_per_s", "db_bytes", "peak_rss_mb"):
            positive(fill[key], f"{name}.fill.{key}")
        for key in ("model_load_s", "open_s", "reopen_s", "rss_after_reopen_mb", "rss_after_searches_mb",
                    "peak_rss_mb"):
            positive(search[key], f"{name}.search.{key}")
        assert search["open_s"] <= search["reopen_s"]
        assert scenario["reopen_s"]["n"] == 2 and scenario["reopen_s"]["min"] <= scenario["reopen_s"]["median"]
        positive(scenario["reopen_s"]["min"], f"{name}.reopen_s.min")
        assert len(search["cases"]) == (1 if name == "A" else 2)
        for case, figures in search["cases"].items():
            assert figures["queries"] == 12 and figures["hits_of_other_users"] == 0, (name, case)
            assert figures["mean_hits"] > 0, (name, case)
            for key in ("search_fresh_ms", "query_embedding_ms", "search_fresh_minus_embedding_ms",
                        "search_cached_vector_ms"):
                latency(figures[key], f"{name}.{case}.{key}")
    assert results["scenarios"]["B"]["fill"]["index_bytes"] > 0  # the big user's graph is saved
    assert not list(tmp_path.glob("scale-bench-*"))  # the stores were removed
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nSome other section.\n") and text.count(START) == text.count(END) == 1
    assert "| A | random user |" in text and "| B | the single big user |" in text


def test_kept_stores_are_searched_again_without_a_new_fill(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    runs = []
    for run in range(2):
        raw = tmp_path / f"run{run}.json"
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_scale.py"), "--quick", "--queries", "4",
                               "--scenarios", "A", "--keep", "--workdir", str(tmp_path), "--json", str(raw)],
                              capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(json.loads(raw.read_text())["scenarios"]["A"])
    assert [r["reused_fill"] for r in runs] == [False, True]
    assert runs[1]["fill"] == runs[0]["fill"]  # the first run's fill figures, carried over
    assert runs[1]["search"]["cases"]["random user"]["mean_hits"] > 0
    assert (tmp_path / "scale-A-quick" / "scale.db").exists()  # kept
