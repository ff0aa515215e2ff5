"""The backends benchmark script runs end to end in --quick mode and produces every figure for both backends.

Only the shape of the output is checked (numbers present, finite, positive; every size and layout;
no error, no lost write and no hit of another user under the concurrent load; the markdown
section), never how fast anything was nor whether a speed target was met.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench_checks import finite_everywhere, latency, positive

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_backends.py"
BACKENDS = ("sqlite", "postgres")
QUICK_SIZES = [1000, 3000]
LAYOUTS = ("one_user", "many_users")



@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, str, Path]:
    """Run the script once in --quick mode; return its JSON, its markdown file, its stdout and its cache dir."""
    tmp = tmp_path_factory.mktemp("backends")
    out, raw, cache = tmp / "bench.md", tmp / "bench.json", tmp / "cache"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--no-progress", "--workdir", str(tmp / "work"),
         "--cache-dir", str(cache), "--out", str(out), "--json", str(raw)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, f"benchmark failed:\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(raw.read_text()), out.read_text(), proc.stdout, cache


def test_search_figures_for_every_size_layout_and_backend(bench: tuple[dict[str, Any], str, str, Path]) -> None:
    results, _, _, _ = bench
    assert results["quick"] is True and results["backends"] == list(BACKENDS)
    settings = results["settings"]
    assert settings["sizes"] == QUICK_SIZES
    points = results["search"]
    assert [(p["n"], p["layout"]) for p in points] == [(n, layout) for n in QUICK_SIZES for layout in LAYOUTS]
    for point in points:
        where = f"N={point['n']} {point['layout']}"
        assert point["users"] == (1 if point["layout"] == "one_user" else settings["users"])
        assert point["per_user"] >= 1
        assert 0 <= point["top_k_agreement"] <= 1
        for backend in BACKENDS:
            figures = point[backend]
            for key in ("search_ms", "embed_ms", "excl_embed_ms"):
                latency(figures[key], f"{where}.{backend}.{key}")
                assert figures[key]["n"] == settings["queries"]
            assert point["stored"][backend] == point["n"], f"{where}: {backend} holds {point['stored'][backend]}"
            # every timed query was embedded: the query cache never answered
            assert figures["query_cache"] == {"misses": settings["queries"], "hits": 0}, where
            assert figures["mean_hits"] > 0
            assert figures["hits_of_other_users"] == 0


def test_write_and_fill_figures(bench: tuple[dict[str, Any], str, str, Path]) -> None:
    results, _, _, cache = bench
    settings, writes = results["settings"], results["writes"]
    assert writes["n"] == QUICK_SIZES[0] and writes["users"] == settings["users"]
    for backend in BACKENDS:
        batch = writes["batch_add"][backend]
        assert batch["memories"] == settings["batch_memories"]
        assert batch["batch_size"] == settings["batch_size"]
        positive(batch["seconds"], f"{backend}.batch_add.seconds")
        positive(batch["memories_per_s"], f"{backend}.batch_add.memories_per_s")
        assert 0 < batch["embed_share"] <= 1
        single = writes["single_add"][backend]
        latency(single["add_ms"], f"{backend}.single_add.add_ms")
        latency(single["flush_ms"], f"{backend}.single_add.flush_ms")
        assert single["add_ms"]["n"] == settings["single_adds"]
        fill = results["fill"][backend]
        assert fill["memories"] == 2 * QUICK_SIZES[-1]  # both layouts, filled to the largest size
        positive(fill["memories_per_s"], f"{backend}.fill.memories_per_s")
    # the corpus was embedded once and cached where asked
    vectors = results["corpus_vectors"]
    assert vectors["source"] == "computed" and Path(vectors["path"]).parent == cache
    assert Path(vectors["path"]).is_file()


def test_concurrent_load_loses_nothing(bench: tuple[dict[str, Any], str, str, Path]) -> None:
    results, _, _, _ = bench
    settings = results["settings"]
    for backend in BACKENDS:
        load = results["load"][backend]
        where = f"load.{backend}"
        assert load["processes"] == settings["processes"] and load["threads_per_process"] == settings["threads"]
        assert load["errors"] == 0, f"{where}: {load['error_samples']}"
        assert load["lost_writes"] == 0
        assert load["hits_of_other_users"] == 0
        positive(load["ops"], f"{where}.ops")
        positive(load["ops_per_s"], f"{where}.ops_per_s")
        positive(load["elapsed_s"], f"{where}.elapsed_s")
        positive(load["acknowledged_adds"], f"{where}.acknowledged_adds")
        assert load["search"]["count"] + load["add"]["count"] == load["ops"]
        assert load["add"]["count"] == load["acknowledged_adds"]
        for kind in ("search", "add"):
            latency(load[kind], f"{where}.{kind}")
        # every acknowledged add is stored, and nothing else was
        assert load["stored_after"] - load["stored_before"] == load["acknowledged_adds"]


def test_reopen_targets_and_machine(bench: tuple[dict[str, Any], str, str, Path]) -> None:
    results, _, _, _ = bench
    finite_everywhere(results)
    for backend in BACKENDS:
        reopen = results["reopen"][backend]
        assert "error" not in reopen, reopen
        for key in ("model_load_s", "open_s", "first_search_ms", "second_search_ms", "process_s"):
            positive(reopen[key], f"reopen.{backend}.{key}")
        assert reopen["n"] == QUICK_SIZES[-1] and reopen["hits"] >= 1
    targets = results["targets"]
    assert len(targets) == 6
    for target in targets:
        assert isinstance(target["met"], bool)
        assert isinstance(target["value"], (int, float)) and math.isfinite(target["value"])
    robustness = [t for t in targets if t["unit"] == "errors + lost writes"]
    assert len(robustness) == 2 and all(t["met"] for t in robustness)
    machine = results["machine"]
    for key in ("cpu", "python", "numpy", "date", "psycopg", "pgserver"):
        assert isinstance(machine[key], str) and machine[key], key
    for key in ("server_version", "pgvector", "shared_buffers"):
        assert isinstance(machine["postgres"][key], str) and machine["postgres"][key], key
    for key in ("other_processes_cores", "postgres_server_cores"):
        assert isinstance(machine[key], (int, float)) and machine[key] >= 0, key
    assert "onnxruntime" in results["embedder"]
    positive(results["wall_s"], "wall_s")


def test_markdown_section_and_stdout(bench: tuple[dict[str, Any], str, str, Path]) -> None:
    _, markdown, stdout, _ = bench
    assert markdown.startswith("# Benchmarks")
    start, end = markdown.find("<!-- backends-bench:start -->"), markdown.find("<!-- backends-bench:end -->")
    assert 0 <= start < end
    section = markdown[start:end]
    assert "## Storage backends: SQLite vs PostgreSQL" in section
    for size in QUICK_SIZES:
        assert f"\n| {size:,} | 1 ({size:,}) |" in section
        assert f"\n| {size:,} | 100 (" in section
    for needle in ("### Search latency", "### Writes", "### Concurrent load", "### Reopen in a fresh process",
                   "### Targets", "### Machine", "| SQLite |", "| PostgreSQL |", "lost writes",
                   "PostgreSQL search p50 <= 2x SQLite's"):
        assert needle in section, needle
    assert "## Storage backends: SQLite vs PostgreSQL" in stdout and "### Targets" in stdout


def test_rerun_replaces_the_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing the section twice keeps one section and the text around it."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_backends", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_backends", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    doc = tmp_path / "doc.md"
    doc.write_text("# Perf\n\nintro\n<!-- engine-bench:start -->\nengine\n<!-- engine-bench:end -->\n")
    module._report.write_section(doc, "first\n", module.MARK_START, module.MARK_END)
    module._report.write_section(doc, "second\n", module.MARK_START, module.MARK_END)
    text = doc.read_text()
    assert text.startswith("# Perf\n\nintro\n<!-- engine-bench:start -->\nengine\n<!-- engine-bench:end -->\n")
    assert text.count(module.MARK_START) == 1 and "second" in text and "first" not in text
