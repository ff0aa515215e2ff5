"""The LOCAL model on onnxruntime: same vectors as sentence-transformers, interchangeable stores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from headroom_integrations import EmbedderMismatchError, InvalidInputError, MemoryConfig, MemoryEngine
from headroom_integrations.memory.embedders import LocalEmbedder, build_embedder, bundled_model_path
from headroom_integrations.memory.onnx_embedder import (
    OnnxEmbedder,
    cache_dir,
    exported_model_path,
    quantized_model_path,
)

TEXTS = [
    "where does alice work",
    "Prefers Go for performance-critical code",
    "Caroline went to the LGBTQ support group on 7 May 2023 and felt accepted.",
    "The quick brown fox jumps over the lazy dog. " * 40,  # longer than the model's 256 tokens
    "naïve café — 日本語 🚀",
]

pytestmark = pytest.mark.sqlite_only  # files beside the database, sidecars, reopen from disk


def test_onnx_vectors_match_sentence_transformers() -> None:
    onnx = build_embedder(MemoryConfig(db_path=":memory:", local_runtime="onnx"))
    torch = build_embedder(MemoryConfig(db_path=":memory:", local_runtime="torch"))
    assert isinstance(onnx, OnnxEmbedder) and isinstance(torch, LocalEmbedder)
    assert onnx.name == torch.name == "local/all-MiniLM-L6-v2" and onnx.dimension == torch.dimension == 384
    a, b = onnx.embed(TEXTS), torch.embed(TEXTS)
    assert np.all(np.sum(a * b, axis=1) > 0.9999)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    # batching by length must not change a text's vector
    assert np.allclose(onnx.embed(TEXTS[::-1])[::-1], a, atol=1e-5)


def test_auto_prefers_onnx_and_the_export_is_cached() -> None:
    embedder = build_embedder(MemoryConfig(db_path=":memory:"))
    assert isinstance(embedder, OnnxEmbedder) and embedder.name == "local/all-MiniLM-L6-v2-int8"
    exported = exported_model_path(Path(bundled_model_path("all-MiniLM-L6-v2") or ""))
    assert exported.parent.parent == cache_dir() / "onnx"
    before = exported.stat().st_mtime
    OnnxEmbedder(bundled_model_path("all-MiniLM-L6-v2"), name="local/all-MiniLM-L6-v2")  # type: ignore[arg-type]
    assert exported.stat().st_mtime == before
    int8 = quantized_model_path(Path(bundled_model_path("all-MiniLM-L6-v2") or ""))
    assert not [path for path in exported.parent.iterdir() if "tmp" in path.name or "fused" in path.name]
    # each of MiniLM's six layers runs as one fused attention operator, in both copies
    for path in (exported, int8):
        ops = [node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node]
        assert ops.count("Attention") + ops.count("QAttention") == 6, path.name


def test_stores_are_interchangeable_between_runtimes(make_engine: Callable[..., MemoryEngine], db_path: Path) -> None:
    with MemoryEngine(MemoryConfig(db_path=db_path, local_runtime="onnx")) as engine:
        engine.add("Keeps bees on the roof", user_id="u")
        engine.add("Allergic to shellfish", user_id="u")
    reopened = make_engine(local_runtime="torch")
    assert isinstance(reopened.embedder, LocalEmbedder)
    assert reopened.search("beekeeping hobby", user_id="u", top_k=1)[0].content == "Keeps bees on the roof"


def test_int8_runtime_is_a_close_copy_with_a_store_of_its_own(
    make_engine: Callable[..., MemoryEngine], db_path: Path
) -> None:
    int8 = build_embedder(MemoryConfig(db_path=":memory:", local_runtime="onnx-int8"))
    fp32 = build_embedder(MemoryConfig(db_path=":memory:", local_runtime="onnx"))
    assert isinstance(int8, OnnxEmbedder) and int8.name == "local/all-MiniLM-L6-v2-int8" and int8.dimension == 384
    assert quantized_model_path(Path(bundled_model_path("all-MiniLM-L6-v2") or "")).exists()
    a, b = int8.embed(TEXTS), fp32.embed(TEXTS)
    cosines = np.sum(a * b, axis=1)
    # close to fp32 (per-channel weight scales: one scale per matrix gave 0.86 on the long text), not the same
    assert np.all(cosines > 0.96) and np.any(cosines < 0.9999)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)

    engine = make_engine(local_runtime="onnx-int8")
    engine.add("Keeps bees on the roof", user_id="u")
    engine.add("Allergic to shellfish", user_id="u")
    assert engine.search("beekeeping hobby", user_id="u", top_k=1)[0].content == "Keeps bees on the roof"
    engine.close()
    with pytest.raises(EmbedderMismatchError, match="int8"):
        make_engine(local_runtime="onnx")  # vectors of another model: refused, not silently mixed
    assert make_engine(local_runtime="onnx-int8").search("shellfish", user_id="u")[0].content == "Allergic to shellfish"


def test_default_runtime_keeps_a_full_precision_store_on_full_precision(
    make_engine: Callable[..., MemoryEngine], db_path: Path, tmp_path: Path
) -> None:
    """``auto`` gives new stores the int8 copy; a store written before in fp32 keeps opening in fp32."""
    with MemoryEngine(MemoryConfig(db_path=db_path, local_runtime="torch")) as engine:
        engine.add("Keeps bees on the roof", user_id="u")
    reopened = make_engine()
    assert isinstance(reopened.embedder, OnnxEmbedder) and reopened.embedder.name == "local/all-MiniLM-L6-v2"
    assert reopened.search("beekeeping hobby", user_id="u", top_k=1)[0].content == "Keeps bees on the roof"
    second = make_engine()  # the same file, already open in this process
    assert second.embedder is reopened.embedder
    reopened.close()
    second.close()

    fresh = MemoryEngine(MemoryConfig(db_path=tmp_path / "new.db"))
    assert fresh.embedder.name == "local/all-MiniLM-L6-v2-int8"
    fresh.add("Allergic to shellfish", user_id="u")
    fresh.close()
    with MemoryEngine(MemoryConfig(db_path=tmp_path / "new.db")) as again:
        assert again.embedder.name == "local/all-MiniLM-L6-v2-int8"
        assert again.search("shellfish", user_id="u")[0].content == "Allergic to shellfish"
    (tmp_path / "not-a-store.db").write_text("plain text, not SQLite")
    with pytest.raises(Exception, match=r"(?i)database|file"):
        MemoryEngine(MemoryConfig(db_path=tmp_path / "not-a-store.db"))  # reported by opening, as before


def test_bad_runtime_values() -> None:
    with pytest.raises(InvalidInputError, match="local_runtime"):
        MemoryConfig(local_runtime="tensorflow")
    with pytest.raises(Exception, match="local model directory"):
        build_embedder(MemoryConfig(db_path=":memory:", embedder_model="not-a-local-model", local_runtime="onnx"))
    with pytest.raises(Exception, match="local model directory"):
        build_embedder(MemoryConfig(db_path=":memory:", embedder_model="not-a-local-model", local_runtime="onnx-int8"))
