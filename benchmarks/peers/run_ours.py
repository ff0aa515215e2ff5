"""Worker for this package (``headroom_integrations.MemoryEngine``); run with the project's Python.

``BENCH_PEERS_OURS_RUNTIME`` (``onnx-int8``, ``onnx``, ``torch`` or ``auto``) is ``MemoryConfig.local_runtime``.
No ``prefill``: every step, the largest included, is filled through the public ``add_batch``.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness

RUNTIME = os.environ.get("BENCH_PEERS_OURS_RUNTIME", "auto")


class Ours:
    batch_native = True

    def __init__(self, model_path: str) -> None:
        self.model_path = model_path
        self.engine: Any = None

    def open(self, path: str) -> None:
        from headroom_integrations import MemoryConfig, MemoryEngine

        config = MemoryConfig(db_path=str(Path(path) / "memory.db"),  # default model = the bundled MiniLM
                              local_runtime=RUNTIME)
        self.engine = MemoryEngine(config)

    def add(self, text: str) -> None:
        self.engine.add(text, user_id=_harness.USER)

    def add_batch(self, texts: list[str]) -> None:
        self.engine.add_batch(texts, user_id=_harness.USER)

    def search(self, query: str) -> list[str]:
        hits = self.engine.search(query, user_id=_harness.USER, top_k=_harness.TOP_K)
        return [hit.memory.content for hit in hits]

    def close(self) -> None:
        self.engine.close()
        self.engine = None


def describe() -> dict[str, str]:
    return {"name": "ours", "package": "headroom-integrations",
            "version": metadata.version("headroom-integrations"), "runtime": RUNTIME}


if __name__ == "__main__":
    sys.exit(_harness.main(Ours, describe))
