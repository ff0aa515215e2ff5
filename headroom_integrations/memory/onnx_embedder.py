"""The local model run by onnxruntime: the same MiniLM vectors, several times faster than torch.

The sentence-transformers model (transformer + mean pooling + normalisation) is exported once to
ONNX from the local model directory into a cache folder (``HEADROOM_CACHE_DIR``, default
``~/.cache/headroom_integrations``), with each layer's attention fused into onnxruntime's own
``Attention`` operator (about 15% faster on a short query), then run with onnxruntime and the
model's own fast tokenizer.
The vectors match sentence-transformers' to about 1e-6 (cosine), so a store written with either
runtime can be read with the other: both carry the same embedder name.

An int8 copy (dynamic quantisation of the weights, per output channel, made once beside the fp32
export) embeds about 1.7 times as fast with the same retrieval quality; it is what a new store gets
by default. Its vectors are close to, not equal to, the fp32 ones (cosine 0.99 on average), so it
carries its own name (``...-int8``) and a store written with one is not searched with the other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from headroom_integrations.errors import EmbedderError, MissingDependencyError
from headroom_integrations.memory.embedders import Embedder

__all__ = ["OnnxEmbedder", "export_onnx", "exported_model_path", "quantize_onnx", "quantized_model_path"]

logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where exported models are kept."""
    return Path(os.environ.get("HEADROOM_CACHE_DIR") or Path.home() / ".cache" / "headroom_integrations")


def _fingerprint(model_dir: Path) -> str:
    digest = hashlib.sha1(str(model_dir.resolve()).encode())
    for name in sorted(os.listdir(model_dir)):
        path = model_dir / name
        if path.is_file():
            stat = path.stat()
            digest.update(f"{name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return digest.hexdigest()[:16]


# Part of the cached file names: a new export recipe never reuses an older export (v2: fused attention).
_RECIPE = "v2"


def exported_model_path(model_dir: Path) -> Path:
    """Where the ONNX export of a model directory is cached (one folder per version of its files)."""
    return cache_dir() / "onnx" / f"{model_dir.name}-{_fingerprint(model_dir)}" / f"model-{_RECIPE}.onnx"


def export_onnx(model_dir: Path, target: Path) -> Path:
    """Export a sentence-transformers model directory (mean pooling, normalised) to ``target``.

    Needs torch, transformers and onnx; writes atomically (temporary file, then rename).
    """
    try:
        import torch
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        raise MissingDependencyError("torch", "local", "Exporting the local model to ONNX") from exc

    class _Pooled(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            hidden = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    # The plain ("eager") attention exports as the graph pattern that onnxruntime can fuse.
    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    sample = tokenizer(["an example", "another, longer example sentence"], padding=True, return_tensors="pt")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    axes = {"0": "batch", "1": "tokens"}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes about Python control flow in the model
            torch.onnx.export(
                _Pooled(model), (sample["input_ids"], sample["attention_mask"], sample["token_type_ids"]),
                str(tmp), input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["embedding"],
                dynamic_axes={
                    "input_ids": {0: axes["0"], 1: axes["1"]}, "attention_mask": {0: axes["0"], 1: axes["1"]},
                    "token_type_ids": {0: axes["0"], 1: axes["1"]}, "embedding": {0: axes["0"]},
                },
                opset_version=17, dynamo=False,
            )
        _fuse_attention(tmp, model.config, {name: tensor.numpy() for name, tensor in sample.items()})
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _fuse_attention(path: Path, config: Any, feeds: dict[str, np.ndarray]) -> None:
    """Rewrite the export at ``path`` with fused attention/layer-norm/GELU operators, in place.

    Kept only if the fused model gives the same vectors on ``feeds``; a model whose graph the
    optimiser does not know stays as exported (correct, just not fused).
    """
    import onnxruntime

    fused = path.with_name(f"{path.name}.fused")
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        optimized = optimize_model(
            str(path), model_type="bert", num_heads=int(getattr(config, "num_attention_heads", 0)),
            hidden_size=int(getattr(config, "hidden_size", 0)), opt_level=1,
        )
        optimized.save_model_to_file(str(fused))
        before, after = (_session(onnxruntime, p, 1).run(None, feeds)[0] for p in (path, fused))
        if np.all(np.sum(before * after, axis=1) > 0.99999):
            os.replace(fused, path)
        else:
            logger.warning("fusing the attention of %s changed its vectors; keeping the plain export", path)
    except Exception as exc:  # an optimiser failure only costs speed
        logger.warning("could not fuse the attention of %s (%s); keeping the plain export", path, exc)
    finally:
        fused.unlink(missing_ok=True)


def quantized_model_path(model_dir: Path) -> Path:
    """Where the int8 copy of a model directory's ONNX export is cached (beside the fp32 export)."""
    return exported_model_path(model_dir).with_name(f"model-{_RECIPE}.int8-per-channel.onnx")


def quantize_onnx(source: Path, target: Path) -> Path:
    """Quantise an fp32 ONNX model's weights to int8 (dynamic quantisation) into ``target``.

    Weights get one scale per output channel: with a single scale per matrix the vectors of
    MiniLM drift to cosine 0.95 of the fp32 ones on average (0.89 at worst); per channel they stay at
    0.99 (0.97 at worst) for the same speed. Writes atomically (temporary file, then rename).
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise MissingDependencyError("onnx", "local", "Quantising the local model to int8") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.stem}.{os.getpid()}.{threading.get_ident()}.tmp.onnx")
    try:
        quantize_dynamic(
            str(source), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
            # the fused operators carry no type information for the quantiser: their outputs are float
            extra_options={"DefaultTensorType": 1},
        )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _session(onnxruntime: Any, model: Path, threads: int) -> Any:
    """An onnxruntime CPU session of ``model`` on ``threads`` intra-op threads."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # No busy-waiting between runs: spinning threads starve the keyword search that runs beside
    # a query embedding (and anything else on a small machine) for ~10% of idle speed.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


class OnnxEmbedder(Embedder):
    """A sentence-transformers model directory run by onnxruntime (exported on first use, then cached).

    Example::

        embedder = OnnxEmbedder(bundled_model_path("all-MiniLM-L6-v2"), name="local/all-MiniLM-L6-v2")
        embedder.embed(["I prefer Go"]).shape      # (1, 384)

    Args:
        model_dir: a sentence-transformers model directory with a ``tokenizer.json``.
        name: the embedder name recorded in stores.
        batch_size: texts per model run when embedding many.
        quantized: run the int8 copy of the export (made once, then cached).
    """

    def __init__(self, model_dir: str | Path, name: str, batch_size: int = 64, quantized: bool = False) -> None:
        try:
            import onnxruntime
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingDependencyError("onnxruntime", "local", "The ONNX runtime of the local model") from exc
        model_dir = Path(model_dir)
        if not (model_dir / "tokenizer.json").exists():
            raise EmbedderError(f"{model_dir} has no tokenizer.json; cannot run it with onnxruntime")
        target = exported_model_path(model_dir)
        if not target.exists():
            logger.info("exporting %s to ONNX at %s (once)", model_dir, target)
            export_onnx(model_dir, target)
        if quantized:
            fp32, target = target, quantized_model_path(model_dir)
            if not target.exists():
                logger.info("quantising %s to int8 at %s (once)", fp32, target)
                quantize_onnx(fp32, target)
        max_length = 256
        settings = model_dir / "sentence_bert_config.json"
        if settings.exists():
            max_length = int(json.loads(settings.read_text()).get("max_seq_length", max_length))
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length)
        self._tokenizer.enable_padding()
        self._session = _session(onnxruntime, target, os.cpu_count() or 1)
        self.name = name
        self.batch_size = batch_size
        self.dimension = int(self._run(["dimension probe"]).shape[1])
        self._run(["warm up", "a slightly longer sentence to warm up the runtime"] * 4)

    def _run(self, texts: list[str]) -> np.ndarray:
        encoded = self._tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64),
        }
        return self._session.run(None, feeds)[0]

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Embed texts, batching similar lengths together (less padding)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            out[chunk] = self._run([texts[i] for i in chunk])
        return out
