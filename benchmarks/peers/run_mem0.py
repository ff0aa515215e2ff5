"""Worker for mem0 OSS (``mem0ai``); run with ``benchmarks/.cache/venvs/mem0/bin/python``.

``Memory.add(..., infer=False)`` stores the texts as they are (no LLM); the embedder is mem0's
``huggingface`` provider (sentence-transformers) pointed at the bundled MiniLM; the vector store is
mem0's default (local Qdrant), its files kept under the run's directory. A batch is one ``add`` call
with one message per memory (mem0 then embeds and stores them one by one).

Prefill (see ``_harness``): for each text, the payload ``add(text, user_id=..., infer=False)``
writes (``Memory._create_memory``: ``user_id``, ``role``, ``data``, ``hash``, ``created_at``,
``updated_at``, ``text_lemmatized`` from mem0's own ``lemmatize_for_bm25``) with a fresh UUID,
written per chunk the way mem0's own batch pipeline (``infer=True``) writes: one
``memory.vector_store.insert(vectors=..., ids=..., payloads=...)`` (which also computes the BM25
sparse vectors when fastembed is installed) and one ``memory.db.batch_add_history``. ``search``
reads nothing else (the vector store for the dense and BM25 hits, the entity store, which
``infer=False`` never fills), so prefilled memories are found exactly like added ones.
"""

from __future__ import annotations

import hashlib
import os
import sys
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MEM0_TELEMETRY", "False")
os.environ.setdefault("OPENAI_API_KEY", "unused-infer-is-false")  # the default LLM is built, never called
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness
import numpy as np

ON_DISK = os.environ.get("BENCH_PEERS_MEM0_ON_DISK", "") == "1"  # mem0's default is False
PREFILL_CHUNK = 1000


class Mem0:
    batch_native = True

    def __init__(self, model_path: str) -> None:
        self.model_path = model_path
        self.memory: Any = None

    def open(self, path: str) -> None:
        from mem0 import Memory

        config: dict[str, Any] = {
            "embedder": {"provider": "huggingface", "config": {"model": self.model_path, "embedding_dims": 384}},
            "vector_store": {"provider": "qdrant", "config": {
                "collection_name": "mem0", "path": str(Path(path) / "qdrant"), "embedding_model_dims": 384,
                **({"on_disk": True} if ON_DISK else {})}},
            "history_db_path": str(Path(path) / "history.db"),
        }
        self.memory = Memory.from_config(config)

    def add(self, text: str) -> None:
        self.memory.add(text, user_id=_harness.USER, infer=False)

    def add_batch(self, texts: list[str]) -> None:
        self.memory.add([{"role": "user", "content": t} for t in texts], user_id=_harness.USER, infer=False)

    def prefill(self, texts: list[str], vectors: np.ndarray, progress: _harness.Progress) -> None:
        """Store ``texts`` with their precomputed ``vectors`` as ``add(infer=False)`` would (see the module)."""
        for i in range(0, len(texts), PREFILL_CHUNK):
            chunk = texts[i : i + PREFILL_CHUNK]
            ids = [str(uuid.uuid4()) for _ in chunk]
            payloads = [self._payload(text) for text in chunk]
            self.memory.vector_store.insert(vectors=vectors[i : i + PREFILL_CHUNK].tolist(), ids=ids,
                                            payloads=payloads)
            self.memory.db.batch_add_history([
                {"memory_id": memory_id, "old_memory": None, "new_memory": p["data"], "event": "ADD",
                 "created_at": p["created_at"], "updated_at": p["updated_at"], "role": p["role"]}
                for memory_id, p in zip(ids, payloads)])
            progress(len(chunk))

    @staticmethod
    def _payload(text: str) -> dict[str, Any]:
        """The payload mem0's ``_create_memory`` writes for one message added with ``infer=False``."""
        from mem0.utils.lemmatization import lemmatize_for_bm25

        now = datetime.now(timezone.utc).isoformat()
        return {"user_id": _harness.USER, "role": "user", "data": text, "hash": hashlib.md5(text.encode()).hexdigest(),
                "created_at": now, "updated_at": now, "text_lemmatized": lemmatize_for_bm25(text)}

    def search(self, query: str) -> list[str]:
        found = self.memory.search(query, filters={"user_id": _harness.USER}, top_k=_harness.TOP_K)
        rows = found.get("results", []) if isinstance(found, dict) else found
        return [row["memory"] for row in rows]

    def close(self) -> None:
        client = getattr(getattr(self.memory, "vector_store", None), "client", None)
        if client is not None and hasattr(client, "close"):
            client.close()
        db = getattr(self.memory, "db", None)
        if db is not None and hasattr(db, "close"):
            db.close()
        self.memory = None


def describe() -> dict[str, str]:
    return {"name": "mem0", "package": "mem0ai", "version": metadata.version("mem0ai"),
            "vector_store": "qdrant (local)" + (", on_disk" if ON_DISK else ", default on_disk=False")}


if __name__ == "__main__":
    sys.exit(_harness.main(Mem0, describe))
