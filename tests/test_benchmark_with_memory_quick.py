"""The with_memory overhead benchmark runs end to end in --quick mode and produces every figure, well-formed.

Only the shape of the output is checked (figures present, finite, positive; every variant; the
markdown section; no extra HTTP request in the end-to-end run), never how fast anything was.
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
from bench_checks import finite_everywhere

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_with_memory.py"
START, END = "<!-- with-memory-bench:start -->", "<!-- with-memory-bench:end -->"
VARIANTS = ["fresh", "cached", "supersede", "no_flush", "pause"]
TIMED = ["prepare_ms", "retrieve_ms", "inject_instruct_ms", "finish_ms", "parse_strip_ms", "store_ms", "total_ms"]


def _positive(value: Any, where: str) -> float:
    assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where} is not a number: {value!r}"
    assert math.isfinite(value), f"{where} is not finite: {value!r}"
    assert value > 0, f"{where} is not positive: {value!r}"
    return float(value)


def _latency(summary: Any, where: str, calls: int) -> None:
    assert isinstance(summary, dict), f"{where} is missing"
    for key in ("p50", "p95", "mean", "min", "max"):
        _positive(summary[key], f"{where}.{key}")
    assert summary["min"] <= summary["p50"] <= summary["p95"] <= summary["max"], f"{where} is out of order"
    assert summary["n"] == calls, f"{where} has {summary['n']} samples, not {calls}"


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, str]:
    """Run the script once in --quick mode into a file that already has other content."""
    tmp = tmp_path_factory.mktemp("bench_with_memory")
    out, raw = tmp / "b.md", tmp / "b.json"
    out.write_text("# Benchmarks\n\nSome other section.\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--no-progress", "--workdir", str(tmp / "work"),
         "--out", str(out), "--json", str(raw)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, f"benchmark failed:\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(raw.read_text()), out.read_text(), proc.stdout


def test_every_variant_has_every_figure(bench: tuple[dict[str, Any], str, str]) -> None:
    results, _, _ = bench
    finite_everywhere(results)
    assert results["quick"] is True
    settings = results["settings"]
    assert settings["n"] == 500
    assert [v["variant"] for v in results["variants"]] == VARIANTS
    for v in results["variants"]:
        name, calls = v["variant"], v["calls"]
        expected = {"cached": settings["cached_reps"], "pause": settings["pause_reps"]}.get(name, settings["reps"])
        assert calls == expected and calls >= 1
        assert v["pause_ms"] == (settings["pause_ms"] if name == "pause" else 0)
        for key in TIMED:
            _latency(v[key], f"{name}.{key}", calls)
        assert v["query_embed_ms"]["n"] == calls
        if name == "cached":
            assert v["query_embed_ms"]["max"] == 0, "the repeated message was embedded again"
        else:
            _latency(v["query_embed_ms"], f"{name}.query_embed_ms", calls)
        if v["flush_between_calls"]:
            _latency(v["background_wait_ms"], f"{name}.background_wait_ms", calls)
        else:
            assert name == "no_flush" and "background_wait_ms" not in v
        for key in TIMED:
            assert len(v["samples_ms"][key.removesuffix("_ms")]) == calls
        # total is prepare + finish of the same call, and the store step is part of finish
        samples = v["samples_ms"]
        for prepare, finish, store, total in zip(samples["prepare"], samples["finish"], samples["store"],
                                                 samples["total"], strict=True):
            assert total == pytest.approx(prepare + finish, abs=1e-3)
            assert store <= finish + 1e-3
        assert v["stored"] == calls, f"{name}: one memory per reply should have been stored"
        assert v["superseded"] == (calls if name == "supersede" else 0)
        assert v["replies_stripped"] is True
        assert v["mean_injected"] > 0
        _positive(v["mean_prompt_chars_added"], f"{name}.mean_prompt_chars_added")
        assert v["other_processes_cores"] >= 0


def test_fill_end_to_end_targets_and_machine(bench: tuple[dict[str, Any], str, str]) -> None:
    results, _, _ = bench
    fill = results["fill"]
    assert fill["memories"] == results["settings"]["n"]
    _positive(fill["seconds"], "fill.seconds")
    _positive(fill["memories_per_s"], "fill.memories_per_s")
    _positive(results["open_s"], "open_s")
    _positive(results["wall_s"], "wall_s")
    e2e = results["end_to_end"]
    assert e2e["calls"] == results["settings"]["e2e_calls"] >= 1
    assert e2e["http_requests"] == e2e["calls"] and e2e["extra_requests"] == 0, "with_memory made extra requests"
    assert e2e["embedding_requests"] == 0
    assert e2e["memories_stored"] == e2e["calls"]
    assert e2e["replies_stripped"] and e2e["memories_injected"] and e2e["instruction_added"]
    _latency(e2e["wall_ms"], "end_to_end.wall_ms", e2e["calls"])
    warm, n = results["settings"]["warmup_calls"], results["settings"]["n"]
    stored = sum(v["calls"] + warm for v in results["variants"]) + e2e["calls"]
    assert results["final_stats"]["total"] == n + stored
    assert len(results["targets"]) == 2
    for target in results["targets"]:
        _positive(target["value"], f"target {target['name']}")
        assert isinstance(target["met"], bool) and target["at_n"] == n and target["at_target_size"] is False
    machine = results["machine"]
    for key in ("cpu", "python", "embedder", "date"):
        assert isinstance(machine[key], str) and machine[key], key
    _positive(machine["logical_cores"], "machine.logical_cores")
    for key in ("load_avg_1m", "load_avg_1m_at_end", "other_processes_cores"):
        assert isinstance(machine[key], (int, float)) and machine[key] >= 0


def test_markdown_section_and_stdout(bench: tuple[dict[str, Any], str, str]) -> None:
    _, markdown, stdout = bench
    assert markdown.startswith("# Benchmarks\n\nSome other section.\n"), "the text outside the markers changed"
    assert markdown.count(START) == 1 and markdown.count(END) == 1
    start, end = markdown.index(START), markdown.index(END)
    assert start < end and markdown.endswith(END + "\n")
    section = markdown[start:end]
    for needle in ("## with_memory overhead benchmark", "| fresh message, new memory |",
                   "| repeated message (cached query embedding), new memory |",
                   "| fresh message, memory supersedes [m1] |", "no flush between calls",
                   "idle pause between calls", "### Targets",
                   "total overhead p50 (prepare + finish) <= 15 ms", "store step p50 <= 2 ms",
                   "### End to end through the SDK", "(0 extra)", "### Machine", "Load average",
                   "Other processes used"):
        assert needle in section, needle
    assert "## with_memory overhead benchmark" in stdout and "(0 extra)" in stdout


def _load_script(monkeypatch: pytest.MonkeyPatch) -> Any:
    spec = importlib.util.spec_from_file_location("bench_with_memory", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_with_memory", module)  # dataclasses look their module up
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script extends sys.path
    spec.loader.exec_module(module)
    return module


def test_write_section_replaces_or_appends_and_keeps_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = _load_script(monkeypatch)

    def write(path: Path, section: str) -> None:
        script._report.write_section(path, section, script.MARK_START, script.MARK_END)

    doc = tmp_path / "doc.md"
    before, after = "# Perf\n\nintro\n\n<!-- engine-bench:start -->\nx\n<!-- engine-bench:end -->", "\n\ntail\n"
    doc.write_text(before + after)
    write(doc, "first\n")
    assert doc.read_text() == before + after + f"\n{START}\nfirst\n{END}\n"  # appended at the end
    write(doc, "second\n")
    assert doc.read_text() == before + after + f"\n{START}\nsecond\n{END}\n"  # replaced in place
    doc.write_text(f"head\n{START}\nold\n{END}\nbetween\n")
    write(doc, "new\n")
    assert doc.read_text() == f"head\n{START}\nnew\n{END}\nbetween\n"
    broken = f"head\n{END}\n{START}\n"
    doc.write_text(broken)
    with pytest.raises(SystemExit):
        write(doc, "new\n")
    assert doc.read_text() == broken
