"""``benchmarks/locomo_ceiling.py``: the held-out re-ordering learns only from other conversations,
and ``--quick`` runs end to end on the LoCoMo data when it is present.

The end-to-end run checks the shape of the output (every order scored per category, recall within
[0, 1], all@10 never above any@10, the candidate recall bounding every order, the marked section
written and the rest of the page kept), never the values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from bench_checks import finite_everywhere, load_script, stale_page, written_section

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "locomo_ceiling.py"
DATA = ROOT.parent / "shared" / "data" / "locomo" / "locomo_dev.json"
START, END = "<!-- locomo-ceiling:start -->", "<!-- locomo-ceiling:end -->"


def _module() -> ModuleType:
    return load_script(SCRIPT)


def _question(conv: str, evidence: str, candidates: list[tuple[str, float]]) -> dict[str, object]:
    """A question whose candidates carry one feature (and zeros for the rest)."""
    width = len(_module().FEATURES)
    return {"conversation": conv, "category": 4, "evidence": [evidence], "shipped": [],
            "candidates": [dia for dia, _ in candidates],
            "features": [[value] + [0.0] * (width - 1) for _, value in candidates]}


def test_held_out_orders_learn_from_the_other_conversations_only() -> None:
    module = _module()
    # In conversations a and b the evidence has the high feature; in c it has the low one.
    questions = [_question(conv, "E", [("x", 0.1), ("E", 0.9), ("y", 0.2)]) for conv in ("a", "b") for _ in range(30)]
    questions += [_question("c", "E", [("E", 0.1), ("x", 0.9), ("y", 0.2)]) for _ in range(30)]
    orders = module.held_out_orders(questions, module.MODELS["logistic regression"])
    assert all(order[0] == "E" for order in orders[:60])  # learned on the other two (one of them agrees)
    # c is ordered by a model fitted on a and b: the high feature first, the evidence last
    assert all(order == ["x", "y", "E"] for order in orders[60:])
    scores = module.scores(questions, orders)
    assert scores["4"]["questions"] == 90 and scores["all"]["any@5"] == 1.0
    assert module.scores(questions[60:], orders[60:])["all"]["any@10"] == 1.0  # 3 candidates: all within 10


def test_a_training_side_without_evidence_keeps_the_engine_order() -> None:
    module = _module()
    # a and b never hold their evidence among the candidates: nothing to learn from for c
    questions = [_question(conv, "missing", [("x", 0.1), ("y", 0.9)]) for conv in ("a", "b")]
    questions.append(_question("c", "y", [("x", 0.1), ("y", 0.9)]))
    orders = module.held_out_orders(questions, module.MODELS["logistic regression"])
    assert orders[2] == ["x", "y"]
    assert module.candidate_recall(questions)["all"] == {"any": 0.333, "all": 0.333}


@pytest.mark.skipif(not DATA.is_file(), reason=f"LoCoMo data not found at {DATA}")
def test_locomo_ceiling_quick(tmp_path: Path) -> None:
    out_json, out_md = tmp_path / "c.json", tmp_path / "c.md"
    stale_page(out_md, START, END)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(DATA), "--quick", "--json", str(out_json), "--out", str(out_md)],
        capture_output=True, text=True, timeout=600, env=env, cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    results = json.loads(out_json.read_text())
    finite_everywhere(results)
    settings = results["settings"]
    assert settings["quick"] is True and settings["conversations"] == 2 and 0 < settings["questions"] <= 60
    module = _module()
    assert set(results["systems"]) == set(module.SYSTEMS)
    bound = results["candidate_recall"]
    for system, per_category in results["systems"].items():
        assert set(per_category) == {"1", "2", "3", "4", "all"}, system
        for key, r in per_category.items():
            assert 0.0 <= r["all@10"] <= r["any@10"] <= 1.0 and r["any@5"] <= r["any@10"], (system, key)
            if system != "engine as shipped":  # the others re-order the same candidates
                assert r["any@10"] <= bound[key]["any"], (system, key)
    section = written_section(out_md, START, END)
    assert "## How far re-ordering the engine's signals goes (quick run)" in section
