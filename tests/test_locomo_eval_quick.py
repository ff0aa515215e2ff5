"""``benchmarks/locomo_eval.py --quick`` runs end to end on the LoCoMo data when it is present.

Only the shape of the output is checked (every figure exists and lies in [0, 1]; the main rows, the
embedder variants, the ablation, the held-out check, the chart and the marked markdown section are
written; the rest of the markdown file is kept), never the values.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "locomo_eval.py"
DATA = ROOT.parent / "shared" / "data" / "locomo" / "locomo_dev.json"
SYSTEMS = ("hybrid", "bm25", "dense", "hybrid@fp32", "dense@fp32", "hybrid@torch", "dense@torch")
ROW_LABELS = ("engine hybrid", "BM25-only", "dense-only", "engine hybrid (torch)", "dense-only (fp32)")
KS = (1, 5, 10, 25)
CATEGORIES = ("1", "2", "3", "4")


def _fraction(value: Any, where: str) -> None:
    assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {value!r}"
    assert math.isfinite(value) and 0.0 <= value <= 1.0, f"{where}: {value!r}"


def _check_recall(block: dict[str, Any], where: str) -> None:
    assert isinstance(block["n"], int) and block["n"] >= 0, where
    for k in KS:
        _fraction(block[f"any@{k}"], f"{where}.any@{k}")
        _fraction(block[f"all@{k}"], f"{where}.all@{k}")
        assert block[f"all@{k}"] <= block[f"any@{k}"], f"{where}: all@{k} above any@{k}"


@pytest.mark.skipif(not DATA.is_file(), reason=f"LoCoMo data not found at {DATA}")
def test_locomo_eval_quick(tmp_path: Path) -> None:
    out_json = tmp_path / "l.json"
    out_md = tmp_path / "l.md"
    out_md.write_text("# Title\n\nkept before\n\n<!-- locomo:start -->\nstale\n<!-- locomo:end -->\n\nkept after\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(DATA), "--quick", "--embedders", "int8,fp32,torch", "--no-progress",
         "--json", str(out_json), "--out", str(out_md)],
        capture_output=True, text=True, timeout=600, env=env, cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    results = json.loads(out_json.read_text())
    settings = results["settings"]
    assert settings["quick"] is True
    assert settings["conversations"] == 2
    assert 0 < settings["questions"] <= 60
    assert settings["turns"] > 0
    for system in SYSTEMS:
        _check_recall(results["summary"][system]["overall"], f"{system}.overall")
        for category in CATEGORIES:
            _check_recall(results["summary"][system]["per_category"][category], f"{system}.cat{category}")
    assert sum(results["summary"]["hybrid"]["per_category"][c]["n"] for c in CATEGORIES) == settings["questions"]
    assert len(results["rows"]) == settings["questions"]
    assert results["time_s"] > 0
    ablation = [key for key in results["summary"] if key.startswith("ablation:")]
    assert len(ablation) == 7
    for key in ablation:
        _check_recall(results["summary"][key]["overall"], key)
    held_out = results["held_out"]
    assert [fold["held_out"] for fold in held_out["folds"]] == settings["conversation_ids"]
    assert len(held_out["grid"]) == 64  # --quick: two values of each of the six knobs
    assert [step["label"] for step in held_out["steps"]][-1] == "+ two neighbours on each side as context (every knob)"
    for fold in held_out["folds"]:
        assert fold["chosen"] in held_out["grid"]
        _fraction(fold["any@5"], "fold any@5")
    _fraction(held_out["pooled"]["any@5"], "pooled any@5")
    _fraction(held_out["pooled"]["any@10"], "pooled any@10")
    per_category = held_out["per_category"]
    assert sum(per_category[c]["n"] for c in CATEGORIES) == held_out["pooled"]["n"] == settings["questions"]
    for name, figures in [*per_category.items(), ("pooled", held_out["pooled"])]:
        for metric in ("any@5", "any@10", "all@10"):
            _fraction(figures[metric], f"held-out {name} {metric}")
        assert figures["any@5"] <= figures["any@10"] and figures["all@10"] <= figures["any@10"], name
    chart = tmp_path / "img" / "locomo_recall.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    text = out_md.read_text()
    assert "Per category on the held-out folds" in text and "| all |" in text
    assert text.startswith("# Title\n\nkept before\n\n<!-- locomo:start -->\n")
    assert text.endswith("<!-- locomo:end -->\n\nkept after\n")
    assert "stale" not in text
    assert text.count("<!-- locomo:start -->") == 1 and text.count("<!-- locomo:end -->") == 1
    section = text.split("<!-- locomo:start -->")[1].split("<!-- locomo:end -->")[0]
    assert "LoCoMo evidence retrieval" in section
    header = next(line for line in section.splitlines() if line.startswith("| system"))
    for column in ("any@1", "any@5", "any@10", "any@25", "all@5", "all@10"):
        assert f"| {column} |" in header, column
    for label in ROW_LABELS:
        row = next((line for line in section.splitlines() if line.startswith(f"| {label} |")), None)
        assert row is not None, label
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        assert len(cells) == 10, row
        for cell in cells:
            _fraction(float(cell), f"{label}: {cell}")
    assert "any@5 ≥ 0.65" in section and "any@10 ≥ 0.75" in section
    assert "![LoCoMo recall per system](img/locomo_recall.png)" in section
    assert "### What each retrieval change bought" in section
    assert "### Held-out check of the retrieval knobs" in section
    assert "What each knob bought on the held-out folds" in section
    assert "**pooled (" in section
