"""Worker for the seed, ``headroom-ai`` (``headroom.memory.HierarchicalMemory``); run with
``benchmarks/.cache/venvs/headroom/bin/python``.

Default configuration (SQLite store, automatic vector backend, FTS5 text index) with the local
embedder pointed at the bundled MiniLM. Its API is async: one event loop drives every call.

Why its ``add_batch`` is slow, and slower as the store grows: after embedding it (1) writes the
batch to SQLite in one transaction (cheap), (2) adds the vectors to the HNSW index, whose
``auto_save`` then rewrites the whole index *and* a JSON file holding every stored embedding as
text (O(store) per call, about 5 s at 10k memories, which is also what a single ``add`` costs),
(3) indexes each memory for full-text search with one connection and one commit per memory, each
preceded by ``DELETE FROM memory_fts WHERE memory_id = ?``, a full scan of the FTS5 table
(O(store) per memory).

Prefill (see ``_harness``): ``add_batch`` minus its embedding step, through the same components
``HierarchicalMemory`` exposes (``store``, ``vector_index``, ``text_index``, ``cache``), with the
given vectors: ``store.save_batch`` per chunk, then one ``vector_index.index_batch`` (one HNSW
save instead of one per chunk) and one ``text_index.index_batch_memories`` (the FTS5 adapter's own
batch call: the same rows in one transaction; its ``DELETE`` per row still scans what the table
already holds, a few minutes for 90k rows over the 10k stored before). The memories are the same
``Memory`` objects ``add_batch`` builds, so ``search`` (query embedding + ``vector_index.search``)
sees them like any other.
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
import numpy as np

_VECTOR_BACKEND = {"name": "?"}
# the seed's AUTO picks sqlite-vec when installed, else hnswlib; "hnsw" or "sqlite_vec" forces one
VECTOR = os.environ.get("BENCH_PEERS_SEED_VECTOR", "auto")
PREFILL_CHUNK = 2000


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

    def prefill(self, texts: list[str], vectors: np.ndarray, progress: _harness.Progress) -> None:
        """Store ``texts`` with their precomputed ``vectors`` the way ``add_batch`` does (see the module)."""
        from headroom.memory.models import Memory

        memories: list[Any] = []
        for i in range(0, len(texts), PREFILL_CHUNK):
            chunk = [Memory(content=text, user_id=_harness.USER, embedding=np.array(vector, dtype=np.float32))
                     for text, vector in zip(texts[i : i + PREFILL_CHUNK], vectors[i : i + PREFILL_CHUNK])]
            self.loop.run_until_complete(self.memory.store.save_batch(chunk))
            if self.memory.cache is not None:
                self.loop.run_until_complete(self.memory.cache.put_batch(chunk))
            memories += chunk
            progress(len(chunk), "store")
        progress(0, "vector index")
        self.loop.run_until_complete(self.memory.vector_index.index_batch(memories))
        progress(0, "text index")
        self.loop.run_until_complete(self.memory.text_index.index_batch_memories(memories))

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
