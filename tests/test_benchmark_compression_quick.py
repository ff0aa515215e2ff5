"""``benchmarks/locomo_compression.py --quick`` runs end to end on the LoCoMo data when it is present,
and its tokenizer works offline.

Only the shape of the output is checked (every figure present and finite, recall in [0, 1] with
*all* never above *any*, the ratios consistent with the token means, the shipped defaults recorded,
the marked section written and the rest of the page kept), never the values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from bench_checks import finite_everywhere, load_script, positive, stale_page, written_section

from headroom_integrations.adapter_core import AdapterCore

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "locomo_compression.py"
DATA = ROOT.parent / "shared" / "data" / "locomo" / "locomo_dev.json"
START, END = "<!-- compression:start -->", "<!-- compression:end -->"
CATEGORIES = ("1", "2", "3", "4")


def _module() -> ModuleType:
    return load_script(SCRIPT)


def test_openai_encodings_load_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty tiktoken cache is filled from the bundled files; tiktoken checks them and encodes as OpenAI does."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))
    module = _module()
    assert module.openai_encoding("o200k_base").encode("hello world") == [24912, 2375]
    assert module.openai_encoding("cl100k_base").encode("hello world") == [15339, 1917]
    assert len(list((tmp_path / "tiktoken").iterdir())) == 2
    encoding = module.openai_encoding("o200k_base")
    # chat framing: 3 tokens a message (+ role and content), 3 for the reply's priming
    assert module.chat_tokens(encoding, [{"role": "user", "content": "hello world"}]) == 3 + 1 + 2 + 3


@pytest.mark.skipif(not DATA.is_file(), reason=f"LoCoMo data not found at {DATA}")
def test_locomo_compression_quick(tmp_path: Path) -> None:
    out_json, out_md = tmp_path / "c.json", tmp_path / "c.md"
    stale_page(out_md, START, END)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TIKTOKEN_CACHE_DIR": str(tmp_path / "tiktoken")}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(DATA), "--quick", "--json", str(out_json), "--out", str(out_md)],
        capture_output=True, text=True, timeout=600, env=env, cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    results = json.loads(out_json.read_text())
    finite_everywhere(results)
    settings = results["settings"]
    shipped = AdapterCore("u", db_path=":memory:").memory
    assert (settings["top_k"], settings["token_budget"]) == (shipped.top_k, shipped.token_budget)
    assert settings["quick"] is True and settings["conversations"] == 2
    assert 0 < settings["questions"] <= 60 and len(results["rows"]) == settings["questions"]
    for row in results["rows"]:
        assert 0 < row["memories"] <= settings["top_k"]
        assert row["all"] <= row["any"]
        assert set(row["injected_dias"]) <= {f"D{s}:{t}" for s in range(1, 4) for t in range(1, 100)}
    for encoding in (settings["encoding"], settings["second_encoding"]):
        block = results["summary"][encoding]
        blocks = {"overall": block["overall"], **{f"cat {c}": block["per_category"][c] for c in CATEGORIES}}
        assert sum(block["per_category"][c]["n"] for c in CATEGORIES) == block["overall"]["n"]
        for where, s in blocks.items():
            if not s["n"]:
                continue
            for key in ("injected_mean", "injected_median", "conversation_mean", "ratio_of_means", "ratio_median",
                        "content_tokens_mean", "turn_tokens_mean", "approx_tokens_mean"):
                positive(s[key], f"{encoding} {where}.{key}")
            assert s["turn_tokens_mean"] < s["content_tokens_mean"] < s["injected_mean"] < s["conversation_mean"], where
            assert abs(s["ratio_of_means"] - s["conversation_mean"] / s["injected_mean"]) < 0.01, where
            assert 0.0 <= s["recall_all"] <= s["recall_any"] <= 1.0, where
    for conv in results["conversations"]:
        assert 0 < conv["conversation_text_tokens"]["o200k_base"] < conv["conversation_tokens"]["o200k_base"]

    section = written_section(out_md, START, END)
    assert "## Temporal compression on LoCoMo (quick run)" in section
    assert "| **all** |" in section and "benchmarks/locomo_answers.py" in section
