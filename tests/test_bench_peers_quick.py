"""``benchmarks/bench_peers.py --quick`` runs end to end with the project's Python.

Without the peers' virtual environments (forced absent here) the peers must be skipped with a
message saying so, and our own figures (both runtimes) must be present and well-formed; with the
peers installed under ``benchmarks/.cache/venvs`` (skipped otherwise) their figures, the prefill of
the last quick step and the ratios are checked too. Only the shape of the output is checked, never
how fast anything was.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_peers.py"
QUICK_SIZES = [200, 600]
PREFILLED = [600]  # quick mode prefills the steps above 200 memories
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _bench_peers() -> Any:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_peers

    return bench_peers


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _positive(value: Any, where: str) -> None:
    assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {value!r}"
    assert math.isfinite(value) and value > 0, f"{where}: {value!r}"


def _check_step(step: dict[str, Any], where: str, prefilled: bool) -> None:
    assert step["prefilled"] is prefilled, where
    if prefilled:
        assert step["batch_add_per_s"] is None, where
    else:
        _positive(step["batch_add_per_s"], f"{where}.batch_add_per_s")
    _positive(step["rss_mb"], f"{where}.rss_mb")
    for key in ("single_add_ms", "search_ms"):
        _positive(step[key]["p50"], f"{where}.{key}.p50")
        assert step[key]["p50"] <= step[key]["p95"], f"{where}.{key} out of order"
    assert step["needle_found"], where
    assert step["stored_recall"] == 1.0, f"{where}: stored texts not found"  # prefilled ones included
    assert step["stored"] >= step["size"]


def _check_system(result: dict[str, Any], name: str, prefilled: list[int]) -> None:
    assert result["ok"], result
    assert [s["size"] for s in result["sizes"]] == QUICK_SIZES
    for step in result["sizes"]:
        _check_step(step, f"{name}@{step['size']}", step["size"] in prefilled)
    reopen = result["reopen"]
    _positive(reopen["first_search_ms"], f"{name}.reopen.first_search_ms")
    assert isinstance(reopen["found"], bool) and 0.0 <= reopen["recall_of_probes"] <= 1.0
    _positive(result["rss_peak_mb"], f"{name}.rss_peak_mb")


def _section(out_md: Path) -> str:
    text = out_md.read_text()
    assert text.startswith("# Title\n\nkept text\n")
    assert text.count("<!-- peers:start -->") == 1 and text.count("<!-- peers:end -->") == 1
    return text.split("<!-- peers:start -->")[1].split("<!-- peers:end -->")[0]


def _check_chart(out_md: Path, section: str) -> None:
    png = out_md.parent / "img" / "peers_search_latency.png"
    assert png.is_file() and png.read_bytes().startswith(PNG_MAGIC)
    assert "](img/peers_search_latency.png)" in section


def _table(section: str) -> dict[str, list[str]]:
    """``{figure: cells}`` of the section's table, the header row under the key ``figure``."""
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


@pytest.fixture(scope="module")
def no_peers_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One quick run of both our runtimes, the peers' venvs forced absent."""
    tmp = tmp_path_factory.mktemp("bench-peers")
    out_md, out_json = tmp / "bench.md", tmp / "peers.json"
    out_md.write_text("# Title\n\nkept text\n")
    env = {**ENV, "BENCH_PEERS_VENVS": str(tmp / "no-venvs")}
    proc = _run(env, "--ours-runtime", "both", "--json", str(out_json), "--out", str(out_md))
    return {"proc": proc, "env": env, "out_md": out_md, "results": json.loads(out_json.read_text())}


def test_bench_peers_quick(no_peers_run: dict[str, Any]) -> None:
    results, out_md = no_peers_run["results"], no_peers_run["out_md"]
    assert results["settings"]["sizes"] == QUICK_SIZES
    assert results["settings"]["prefilled_sizes"] == PREFILLED
    assert list(results["systems"]) == ["ours-onnx-int8", "ours-torch", "headroom", "mem0"]
    for runtime in ("onnx-int8", "torch"):
        ours = results["systems"][f"ours-{runtime}"]
        _check_system(ours, f"ours-{runtime}", prefilled=[])  # ours fills every step through add_batch
        assert ours["system"]["runtime"] == runtime
        assert ours["reopen"]["found"] and ours["reopen"]["first_search_hits"] > 0
        assert ours["reopen"]["recall_of_probes"] == 1.0
    assert results["settings"]["prefill_embedder"] is None  # no peer ran: nothing embedded for them

    for peer in ("headroom", "mem0"):
        got = results["systems"][peer]
        assert not got["ok"]
        assert "not installed" in got["skipped"] and "--setup-peers" in got["skipped"]
        assert f"[run] {peer}: skipped: not installed" in no_peers_run["proc"].stderr

    section = _section(out_md)
    table = _table(section)
    assert table["figure"][:2] == ["headroom-integrations (ours, onnx-int8)", "headroom-integrations (ours, torch)"]
    assert "reopen: needle found" in table and "600: recall of stored texts" in table
    assert "skipped: not installed" in section
    _check_chart(out_md, section)
    # a second run replaces the section instead of appending another one
    _run(no_peers_run["env"], "--systems", "ours", "--out", str(out_md))
    assert out_md.read_text().count("<!-- peers:start -->") == 1


def test_report_marks_prefilled_steps(no_peers_run: dict[str, Any]) -> None:
    """The report of a (made-up) prefilled peer: *prefilled* instead of a rate, no ratio there."""
    bench_peers = _bench_peers()
    results = copy.deepcopy(no_peers_run["results"])
    peer = copy.deepcopy(results["systems"]["ours-onnx-int8"])
    peer["sizes"][-1].update(prefilled=True, batch_add_per_s=None)
    results["systems"]["mem0"] = peer
    table = _table(bench_peers.markdown(results))
    assert table["figure"][-2:] == ["ours (onnx-int8)/mem0", "ours (torch)/mem0"]
    assert table["600: batch add (memories/s) ↑"][2:] == ["prefilled", "", ""]
    assert all(re.fullmatch(r"\d+\.\d+x", cell) for cell in table["200: batch add (memories/s) ↑"][3:])
    assert all(re.fullmatch(r"\d+\.\d+x", cell) for cell in table["600: search p50 (ms)"][3:])
    assert table["600: needle found"][3:] == ["", ""]


def test_bench_peers_quick_with_peers(tmp_path: Path) -> None:
    bench_peers = _bench_peers()
    peers = [p for p in bench_peers.PEERS if bench_peers.peer_installed(p)]
    if not peers:
        pytest.skip("no peer venv under benchmarks/.cache/venvs (python benchmarks/bench_peers.py --setup-peers)")
    out_md, out_json = tmp_path / "bench.md", tmp_path / "peers.json"
    out_md.write_text("# Title\n\nkept text\n")
    _run(ENV, "--systems", ",".join(["ours", *peers]), "--json", str(out_json), "--out", str(out_md))
    results = json.loads(out_json.read_text())
    assert results["settings"]["prefill_embedder"]
    _check_system(results["systems"]["ours-onnx-int8"], "ours-onnx-int8", prefilled=[])
    for peer in peers:
        _check_system(results["systems"][peer], peer, prefilled=PREFILLED)

    section = _section(out_md)
    assert "*prefilled*" in section
    table = _table(section)
    n = 1 + len(peers)  # value columns, then one ratio column per peer
    assert table["figure"][n:] == [f"ours (onnx-int8)/{peer}" for peer in peers]
    assert table["600: batch add (memories/s) ↑"][1:] == ["prefilled"] * len(peers) + [""] * len(peers)
    for figure in ("200: batch add (memories/s) ↑", "200: search p50 (ms)", "600: search p50 (ms)"):
        assert all(re.fullmatch(r"\d+\.\d+x", cell) for cell in table[figure][n:]), figure
    _check_chart(out_md, section)
