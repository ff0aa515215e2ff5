"""``benchmarks/bench_peers.py --quick`` runs end to end with the project's Python.

The peers' virtual environments are normally absent here: they must be skipped with a message
saying so, and our own figures must be present and well-formed (only their shape is checked, never
how fast anything was).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_peers.py"
QUICK_SIZES = [30, 80]


def _positive(value: Any, where: str) -> None:
    assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {value!r}"
    assert math.isfinite(value) and value > 0, f"{where}: {value!r}"


def test_bench_peers_quick(tmp_path: Path) -> None:
    out_md = tmp_path / "bench.md"
    out_md.write_text("# Title\n\nkept text\n")
    out_json = tmp_path / "peers.json"
    # no peer venvs there, whatever this machine has under benchmarks/.cache/venvs
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "BENCH_PEERS_VENVS": str(tmp_path / "no-venvs")}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out_json), "--out", str(out_md)],
        capture_output=True, text=True, timeout=600, env=env, cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(out_json.read_text())
    assert results["settings"]["sizes"] == QUICK_SIZES
    ours = results["systems"]["ours"]
    assert ours["ok"], ours
    assert [s["size"] for s in ours["sizes"]] == QUICK_SIZES
    for step in ours["sizes"]:
        where = f"ours@{step['size']}"
        _positive(step["batch_add_per_s"], f"{where}.batch_add_per_s")
        _positive(step["rss_mb"], f"{where}.rss_mb")
        for key in ("single_add_ms", "search_ms"):
            _positive(step[key]["p50"], f"{where}.{key}.p50")
            assert step[key]["p50"] <= step[key]["p95"], f"{where}.{key} out of order"
        assert step["needle_found"], where
        assert step["stored"] >= step["size"]
    reopen = ours["reopen"]
    _positive(reopen["first_search_ms"], "reopen.first_search_ms")
    assert reopen["found"] and reopen["first_search_hits"] > 0
    assert reopen["recall_of_probes"] == 1.0
    _positive(ours["rss_peak_mb"], "rss_peak_mb")

    for peer in ("headroom", "mem0"):
        got = results["systems"][peer]
        assert not got["ok"]
        assert "not installed" in got["skipped"] and "--setup-peers" in got["skipped"]
        assert f"[run] {peer}: skipped: not installed" in proc.stderr

    text = out_md.read_text()
    assert text.startswith("# Title\n\nkept text\n")
    assert text.count("<!-- peers:start -->") == 1 and text.count("<!-- peers:end -->") == 1
    section = text.split("<!-- peers:start -->")[1].split("<!-- peers:end -->")[0]
    assert "| figure |" in section and "reopen: needle found" in section
    assert "skipped: not installed" in section
    # a second run replaces the section instead of appending another one
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--systems", "ours", "--out", str(out_md)],
        capture_output=True, text=True, timeout=600, env=env, cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert out_md.read_text().count("<!-- peers:start -->") == 1
