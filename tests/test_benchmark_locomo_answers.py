"""``benchmarks/locomo_answers.py``: offline it only says it skipped; against a loopback
OpenAI-compatible server (the test's scripted stub, reached through the real ``openai`` SDK) it
asks every chosen question with the memories and with the full history, and scores the answers
with LoCoMo's F1, whose function is checked on its own (known values and properties).
"""

from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from bench_checks import finite_everywhere, load_script
from hypothesis import given, settings
from hypothesis import strategies as st
from openai_stub import StubLLM

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "locomo_answers.py"
DATA = ROOT.parent / "shared" / "data" / "locomo" / "locomo_dev.json"
START, END = "<!-- locomo-answers:start -->", "<!-- locomo-answers:end -->"


def _module() -> ModuleType:
    return load_script(SCRIPT)


answers = _module()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    return {**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra}


def test_without_a_key_it_says_it_skipped(tmp_path: Path) -> None:
    out_json = tmp_path / "a.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--json", str(out_json)], capture_output=True, text=True,
                          timeout=120, env=_env(), cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("skipped: ") and proc.stdout.count("\n") == 1
    assert not out_json.exists()


# -- the F1 ---------------------------------------------------------------------------------------------


def test_docstring_examples() -> None:
    failures, tried = doctest.testmod(answers)
    assert tried >= 6 and failures == 0


@pytest.mark.parametrize(("prediction", "answer", "category", "expected"), [
    ("7 May 2023", "7 May 2023", 2, 1.0),
    ("7 May, 2023.", "7 May 2023", 2, 1.0),  # commas, punctuation, case
    ("the painting", "a painting", 4, 1.0),  # articles
    ("running", "run", 4, 1.0),  # Porter stemming
    ("2022", 2022, 2, 1.0),  # gold answers that are numbers
    ("Paris", "London", 4, 0.0),
    ("", "London", 4, 0.0),
    ("the", "the", 4, 0.0),  # nothing left after normalisation
    ("she paints", "paints", 4, 2 / 3),
    ("pottery, camping, painting", "painting, swimming", 1, 0.5),  # each gold part: best predicted part
    ("pottery camping painting", "painting, swimming", 1, 0.25),  # one predicted part: F1 1/2 vs painting
    ("adoption agencies", "adoption agencies; she wants to adopt", 3, 1.0),  # category 3: before the first ;
    ("she wants to adopt", "adoption agencies; she wants to adopt", 3, 1 / 3),  # adopt = adoption, stemmed
])
def test_answer_f1_values(prediction: str, answer: Any, category: int, expected: float) -> None:
    assert answers.answer_f1(prediction, answer, category) == pytest.approx(expected)


def test_stemmer_is_nltk_porter_as_in_locomo() -> None:
    assert answers.stemmer_name() == "nltk"


_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
_WORDS_A = st.lists(st.text(alphabet="abcdefghij", min_size=1, max_size=8), min_size=1, max_size=6)
_WORDS_B = st.lists(st.text(alphabet="klmnopqrst", min_size=1, max_size=8), min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(_TEXT, _TEXT, st.sampled_from([1, 2, 3, 4]))
def test_f1_is_a_fraction(prediction: str, answer: str, category: int) -> None:
    assert 0.0 <= answers.answer_f1(prediction, answer, category) <= 1.0


@settings(max_examples=200, deadline=None)
@given(_TEXT, st.sampled_from([2, 4]))
def test_identical_answers_score_one(answer: str, category: int) -> None:
    if answers.normalize_answer(answer):
        assert answers.answer_f1(answer, answer, category) == pytest.approx(1.0)
    else:
        assert answers.answer_f1(answer, answer, category) == 0.0


@settings(max_examples=200, deadline=None)
@given(_WORDS_A, _WORDS_B, st.sampled_from([1, 2, 3, 4]))
def test_disjoint_answers_score_zero(first: list[str], second: list[str], category: int) -> None:
    # no shared letter, so no shared stem (Porter keeps a word's first letter)
    assert answers.answer_f1(" ".join(first), " ".join(second), category) == 0.0


@settings(max_examples=200, deadline=None)
@given(_TEXT, _TEXT)
def test_token_f1_is_symmetric(first: str, second: str) -> None:
    assert answers.token_f1(first, second) == answers.token_f1(second, first)
    assert answers.answer_f1(first, second, 4) == answers.answer_f1(second, first, 4)


# -- end to end against a loopback server ----------------------------------------------------------------


@pytest.mark.skipif(not DATA.is_file(), reason=f"LoCoMo data not found at {DATA}")
def test_quick_run_against_a_loopback_model(tmp_path: Path) -> None:
    gold = {qa["question"]: str(qa["answer"]) for s in json.loads(DATA.read_text()) for qa in s["qa"]
            if qa.get("category") in (1, 2, 3, 4)}

    def reply(body: dict[str, Any]) -> str:
        """The right answer when memories were injected, a wrong one with the full history."""
        last = body["messages"][-1]["content"]
        if "<memories>" not in last:
            return "no idea"
        return next(answer for question, answer in gold.items() if last.startswith(question))

    limit = 4
    out_json, out_md = tmp_path / "a.json", tmp_path / "a.md"
    out_md.write_text(f"# Title\n\n{START}\nstale\n{END}\n\nkept after\n")
    with StubLLM() as stub:
        for _ in range(2 * limit):
            stub.reply_fn(reply)
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), str(DATA), "--quick", "--limit", str(limit), "--model", "stub-model",
             "--retries", "0", "--json", str(out_json), "--out", str(out_md)],
            capture_output=True, text=True, timeout=600, cwd=str(ROOT),
            env=_env(OPENAI_API_KEY="test-key", OPENAI_BASE_URL=stub.base_url,
                     TIKTOKEN_CACHE_DIR=str(tmp_path / "tiktoken")),
        )
        requests = list(stub.requests)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(requests) == 2 * limit and all(r["model"] == "stub-model" for r in requests)
    memory_requests = [r for r in requests if "<memories>" in r["messages"][-1]["content"]]
    assert len(memory_requests) == limit and all(len(r["messages"]) == 2 for r in memory_requests)
    history_requests = [r for r in requests if r not in memory_requests]
    assert all(len(r["messages"]) > 50 for r in history_requests)

    results = json.loads(out_json.read_text())
    finite_everywhere(results)
    assert results["settings"]["model"] == "stub-model" and results["settings"]["questions"] == limit
    assert {r["conversation"] for r in results["rows"]} == {"conv-26", "conv-30"}  # spread over both
    for row in results["rows"]:
        assert row["memory"]["answer"] == row["gold"] and "error" not in row["memory"]
        assert row["memory"]["f1"] == pytest.approx(1.0)
        assert row["history"]["answer"] == "no idea" and row["history"]["f1"] == 0.0
        assert 0 < row["memory"]["tokens"] < row["history"]["tokens"]
        assert row["memory"]["usage_prompt_tokens"] is not None
    overall = results["summary"]["overall"]
    assert overall["n"] == limit and overall["memory"]["f1"] == pytest.approx(1.0)
    assert overall["history"]["f1"] == 0.0 and overall["memory"]["errors"] == overall["history"]["errors"] == 0
    assert sum(results["summary"]["per_category"][c]["n"] for c in "1234") == limit

    text = out_md.read_text()
    assert "stale" not in text and text.endswith("\n\nkept after\n")
    assert "## LoCoMo answers: memory vs full history (quick run)" in text and "| **all** | **4** |" in text
