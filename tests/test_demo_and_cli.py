"""The README's main job (the demo), run as a user would (the command line: test_cli.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ENV = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")} | {"HF_HUB_OFFLINE": "1"}


def test_demo_prints_scoped_and_versioned_memories(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "headroom_integrations.demo", "--db", str(tmp_path / "demo.db")],
        capture_output=True, text=True, env=ENV, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "superseded: Works at Google as a backend engineer" in out
    assert "current: Now works at Anthropic on the API team" in out
    by_title: dict[str, str] = {}
    title = ""
    for line in out.split("Searches from the 'afternoon' session:")[1].splitlines():
        if line.startswith("  ") and not line.startswith("    "):
            title = line.strip()
            by_title[title] = ""
        elif title:
            by_title[title] += line + "\n"
    lang = next(v for k, v in by_title.items() if k.startswith("alice: 'which language"))
    assert "Prefers Go for performance-critical code" in lang
    assert "Prefers Python" not in lang
    work = next(v for k, v in by_title.items() if k.startswith("alice: 'where does she work"))
    assert "Anthropic" in work and "Google" not in work
    elsewhere = next(v for k, v in by_title.items() if k.startswith("alice: 'what was I debugging"))
    assert "flaky" not in elsewhere
    home = next(v for k, v in by_title.items() if k.startswith("alice, back in 'morning'"))
    assert "flaky integration test" in home
    bobs = next(v for k, v in by_title.items() if k.startswith("bob:"))
    assert "Prefers Python with type hints" in bobs and "Go" not in bobs
    assert "Store: 6 rows, 5 current, 1 superseded" in out
    chat = out.split("=== Part 2")[1]
    assert "OFFLINE STAND-IN" in chat
    assert "(recalled)  Works at Google on the search infrastructure | Prefers Go" in chat
    assert "[user/fact, superseded] Works at Google on the search infrastructure" in chat
    assert "[user/fact, current] Works at Anthropic" in chat
    assert "5 chat requests for 5 turns" in chat
    assert "<memory>" not in out
