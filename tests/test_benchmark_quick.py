"""The engine benchmark script runs end to end in --quick mode and produces every figure, well-formed.

Only the shape of the output is checked (numbers present, finite, positive; every size; the
markdown section; the store found its memory after reopen), never how fast anything was.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench_checks import finite_everywhere, latency, positive

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_engine.py"
QUICK_SIZES = [200, 1000]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, str]:
    """Run the script once in --quick mode; return its JSON, its markdown file and its stdout."""
    tmp = tmp_path_factory.mktemp("bench")
    out, raw = tmp / "bench.md", tmp / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--no-progress", "--workdir", str(tmp / "work"),
         "--out", str(out), "--json", str(raw)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, f"benchmark failed:\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(raw.read_text()), out.read_text(), proc.stdout


def test_every_size_has_every_figure(bench: tuple[dict[str, Any], str, str]) -> None:
    results, _, _ = bench
    assert results["quick"] is True
    assert [entry["n"] for entry in results["sizes"]] == QUICK_SIZES
    for entry in results["sizes"]:
        where = f"N={entry['n']}"
        for key in ("search_fresh_ms", "search_cached_ms", "search_fresh_embed_ms", "search_fresh_excl_embed_ms",
                    "add_ms"):
            latency(entry[key], f"{where}.{key}")
        batch = entry["batch_add"]
        positive(batch["memories"], f"{where}.batch_add.memories")
        positive(batch["seconds"], f"{where}.batch_add.seconds")
        positive(batch["memories_per_s"], f"{where}.batch_add.memories_per_s")
        assert 0 < batch["embed_share"] <= 1
        positive(entry["rss_mb"], f"{where}.rss_mb")
        assert entry["stats_total"] == entry["n"] + results["settings"]["adds"]
        assert entry["hits_of_other_users"] == 0
        # fresh queries really were embedded every time; the cached one never was
        assert entry["query_cache"]["misses_during_fresh"] == results["settings"]["queries"]
        assert entry["query_cache"]["hits_during_cached"] == results["settings"]["cached_reps"]
        assert entry["mean_hits"] > 0
        reopen = entry["reopen"]
        for key in ("close_s", "open_s", "first_search_ms"):
            positive(reopen[key], f"{where}.reopen.{key}")
        assert reopen["found"] is True, f"{where}: the memory stored before reopen was not found"
        assert reopen["model_reused"] is True, f"{where}: reopening reloaded the embedding model"
        assert 0 <= reopen["recall_at_k"] <= 1 and reopen["recall_probes"] >= 1


def test_overall_machine_targets_and_multi_user(bench: tuple[dict[str, Any], str, str]) -> None:
    results, _, _ = bench
    finite_everywhere(results)
    overall = results["batch_add_overall"]
    assert overall["memories"] == QUICK_SIZES[-1] - results["settings"]["adds"] * (len(QUICK_SIZES) - 1)
    positive(overall["memories_per_s"], "batch_add_overall.memories_per_s")
    for key in ("cold_open_s", "model_rss_mb", "baseline_rss_mb", "db_bytes", "wall_s"):
        positive(results[key], key)
    machine = results["machine"]
    for key in ("cpu", "python", "torch", "numpy", "date"):
        assert isinstance(machine[key], str) and machine[key], key
    positive(machine["logical_cores"], "machine.logical_cores")
    positive(machine["ram_gib"], "machine.ram_gib")
    # busy-machine warnings come from other processes' CPU time during the run, not the lagging load average
    assert isinstance(machine["other_processes_cores"], float) and machine["other_processes_cores"] >= 0
    assert len(results["targets"]) == 5
    assert results["settings"]["local_runtime"] == "auto" and "onnxruntime" in results["embedder"]
    assert "(int8)" in results["embedder"]  # a new store gets the int8 copy by default
    for target in results["targets"]:
        positive(target["value"], f"target {target['name']}")
        assert isinstance(target["met"], bool)
        assert target["at_n"] == QUICK_SIZES[-1]
    multi = results["multi_user"]
    assert multi is not None and multi["users"] >= 2 and multi["per_user"] >= 1
    latency(multi["search_fresh_ms"], "multi_user.search_fresh_ms")
    latency(multi["search_cached_ms"], "multi_user.search_cached_ms")
    assert multi["hits_of_other_users"] == 0


def test_markdown_section_and_stdout(bench: tuple[dict[str, Any], str, str]) -> None:
    _, markdown, stdout = bench
    assert markdown.startswith("# Benchmarks")
    start, end = markdown.find("<!-- engine-bench:start -->"), markdown.find("<!-- engine-bench:end -->")
    assert 0 <= start < end
    section = markdown[start:end]
    for size in QUICK_SIZES:
        assert f"\n| {size:,} |" in section
    for needle in ("### Targets", "### Machine", "search p50, fresh query <= 5 ms", "reopen of the store < 2 s",
                   "found after reopen", "RSS (MiB)", "Other processes used"):
        assert needle in section
    assert "| 1,000 |" in stdout and "### Targets" in stdout


def test_rerun_replaces_the_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing the section twice keeps one section and the text around it."""
    spec = importlib.util.spec_from_file_location("bench_engine", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench_engine = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_engine", bench_engine)  # dataclasses look their module up
    spec.loader.exec_module(bench_engine)
    doc = tmp_path / "doc.md"
    doc.write_text("# Perf\n\nintro\n")

    def write(path: Path, section: str, runtime: str = "auto") -> None:
        bench_engine._report.write_section(path, section, *bench_engine.markers(runtime))

    write(doc, "first\n")
    write(doc, "fp32 run\n", "onnx")
    write(doc, "second\n")
    text = doc.read_text()
    assert text.startswith("# Perf\n\nintro\n")
    assert text.count("<!-- engine-bench:start -->") == 1 and "second" in text and "first" not in text
    assert text.count("<!-- engine-bench-onnx:start -->") == 1 and "fp32 run" in text


def test_another_local_runtime_writes_its_own_section(
    bench: tuple[dict[str, Any], str, str], tmp_path: Path
) -> None:
    """``--local-runtime onnx`` measures the fp32 model and leaves the default (int8) run's section alone."""
    _, markdown, _ = bench
    out, raw = tmp_path / "bench.md", tmp_path / "bench.json"
    out.write_text(markdown)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--no-progress", "--local-runtime", "onnx", "--sizes", "200",
         "--multi-user-size", "100", "--workdir", str(tmp_path / "work"), "--out", str(out), "--json", str(raw)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, f"benchmark failed:\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    results, text = json.loads(raw.read_text()), out.read_text()
    assert results["settings"]["local_runtime"] == "onnx"
    assert results["embedder"].startswith("local/all-MiniLM-L6-v2 on onnxruntime") and "(fp32)" in results["embedder"]
    latency(results["sizes"][0]["search_fresh_ms"], "fp32 search_fresh_ms")
    assert markdown.split("<!-- engine-bench:end -->")[0] in text  # the default section is untouched
    start, end = text.find("<!-- engine-bench-onnx:start -->"), text.find("<!-- engine-bench-onnx:end -->")
    assert 0 <= start < end and '`local_runtime="onnx"`' in text[start:end]
