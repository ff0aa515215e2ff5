"""The soak script of the reliability suite runs, reads what each check tried and writes its table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import soak_reliability


def test_soak_script_at_a_small_scale(tmp_path: Path) -> None:
    page, raw = tmp_path / "reliability.md", tmp_path / "reliability.json"
    page.write_text("# Reliability\n\nintro kept\n")
    code = soak_reliability.main(["--scale", "0.05", "--label", "quick", "--fixed", "--checks", "test_protocol_fuzz",
                                  "test_dedup_meaning", "--out", str(page), "--json", str(raw)])
    assert code == 0
    results = json.loads(raw.read_text())
    fuzz = results["test_protocol_fuzz|any"]  # the parser alone: no store
    assert fuzz["failed"] == 0 and fuzz["counts"]["replies"] == 500
    assert results["test_protocol_fuzz|PostgreSQL"]["failed"] == 0  # replies through the SDK, stored on PostgreSQL
    text = page.read_text()
    assert text.startswith("# Reliability\n\nintro kept\n") and "| 5 | Inline protocol fuzz | any | 500 generated replies" in text
