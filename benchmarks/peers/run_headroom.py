"""Worker for the seed, ``headroom-ai`` (``headroom.memory.HierarchicalMemory``); run with
``benchmarks/.cache/venvs/headroom/bin/python``.

Default configuration (SQLite store, automatic vector backend, FTS5 text index) with the local
embedder pointed at the bundled MiniLM. Its API is async: one event loop drives every call.
"""

from __future__ import annotations

import asyncio
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness

_VECTOR_BACKEND = {"name": "?"}
# the seed's AUTO picks sqlite-vec when installed, else hnswlib; "hnsw" or "sqlite_vec" forces one
VECTOR = os.environ.get("BENCH_PEERS_SEED_VECTOR", "auto")


class Seed:
    batch_native = True

    def __init__(self, model_path: str) -> None:
        self.model_path = model_path
        self.loop = asyncio.new_event_loop()
        self.memory: Any = None

    def open(self, path: str) -> None:
        from headroom.memory import HierarchicalMemory, MemoryConfig
        from headroom.memory.config import VectorBackend

        config = MemoryConfig(db_path=Path(path) / "memory.db", embedder_model=self.model_path,
                              vector_backend=VectorBackend(VECTOR))
        self.memory = self.loop.run_until_complete(HierarchicalMemory.create(config))
        _VECTOR_BACKEND["name"] = type(self.memory.vector_index).__name__

    def add(self, text: str) -> None:
        self.loop.run_until_complete(self.memory.add(text, user_id=_harness.USER))

    def add_batch(self, texts: list[str]) -> None:
        items = [{"content": t, "user_id": _harness.USER} for t in texts]
        self.loop.run_until_complete(self.memory.add_batch(items))

    def search(self, query: str) -> list[str]:
        hits = self.loop.run_until_complete(self.memory.search(query, user_id=_harness.USER, top_k=_harness.TOP_K))
        return [hit.memory.content for hit in hits]

    def close(self) -> None:
        self.loop.run_until_complete(self.memory.close())
        self.memory = None


def describe() -> dict[str, str]:
    return {"name": "headroom", "package": "headroom-ai", "version": metadata.version("headroom-ai"),
            "vector_backend": _VECTOR_BACKEND["name"]}


if __name__ == "__main__":
    sys.exit(_harness.main(Seed, describe))
