"""Configuration of the memory engine."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from headroom_integrations.errors import InvalidInputError
from headroom_integrations.memory.models import as_count, as_number

if TYPE_CHECKING:
    from headroom_integrations.memory.embedders import Embedder

__all__ = ["DEFAULT_MODELS", "LOCAL_RUNTIMES", "POSTGRES_SCHEMES", "EmbedderBackend", "MemoryConfig"]


class EmbedderBackend(str, enum.Enum):
    """Where embeddings come from.

    Example:
        >>> EmbedderBackend("ollama") is EmbedderBackend.OLLAMA
        True
    """

    LOCAL = "local"
    OPENAI = "openai"
    OLLAMA = "ollama"


DEFAULT_MODELS: dict[EmbedderBackend, str] = {
    EmbedderBackend.LOCAL: "all-MiniLM-L6-v2",
    EmbedderBackend.OPENAI: "text-embedding-3-small",
    EmbedderBackend.OLLAMA: "nomic-embed-text",
}

#: URL schemes of the PostgreSQL backend (all opened with the psycopg 3 driver).
POSTGRES_SCHEMES: tuple[str, ...] = ("postgresql", "postgres", "postgresql+psycopg")

#: How the LOCAL model may run (``MemoryConfig.local_runtime``).
LOCAL_RUNTIMES: tuple[str, ...] = ("auto", "onnx", "onnx-int8", "torch")

_MAX_CONTEXT_SPAN = 4  # neighbours are looked for within 8 primary keys on each side


@dataclass
class MemoryConfig:
    """Every knob of :class:`HierarchicalMemory`, with defaults that suit an embedded store.

    Args:
        db_path: SQLite file (created if missing). ``":memory:"`` keeps everything in RAM.
        db_url: a database URL instead of ``db_path``: ``postgresql://user:password@host:5432/db``
            (also ``postgres://`` and ``postgresql+psycopg://``; needs the ``postgres`` extra) for
            a store shared by many processes and hosts, or ``sqlite:///path/to/memory.db``.
        embedder_backend: ``LOCAL`` (sentence-transformers, offline), ``OPENAI`` or ``OLLAMA``.
        embedder_model: model name; defaults to the backend's usual model
            (``all-MiniLM-L6-v2``, ``text-embedding-3-small``, ``nomic-embed-text``).
        openai_api_key: key for the OpenAI backend (default: ``OPENAI_API_KEY``).
        openai_base_url: base URL for the OpenAI backend (default: ``OPENAI_BASE_URL`` or api.openai.com).
        ollama_base_url: base URL of the Ollama server.
        vector_dimension: optional; must match the embedder's dimension when given.
        hnsw_ef_construction: HNSW build quality; by default 200 for the SQLite index (hnswlib) and
            64 for PostgreSQL's (pgvector's own default: each insert updates that index in the
            database; measured 460 inserts/s at 64 against 305 at 200 on a 10k store).
        hnsw_m: HNSW graph degree.
        hnsw_ef_search: HNSW search breadth.
        cache_enabled: keep an LRU cache of query embeddings.
        cache_max_size: entries in that cache.
        embedder: an already built embedder object; overrides the backend settings.
        index_path: where the HNSW sidecar lives (default: ``<db_path>.hnsw``).
        busy_timeout_ms: how long a writer waits for another process's write lock (SQLite).
        db_pool_size: connections each process keeps open to a PostgreSQL store (as many again
            are opened under load and closed after).
        max_content_chars: larger memories are refused with an error.
        embed_max_chars: only this many leading characters of a memory are embedded
            (the whole text is stored and keyword-indexed).
        importance_weight: weight (0..1) of a memory's importance in the final ranking.
        recency_weight: weight (0..1) of a memory's age in the final ranking.
        recency_half_life_days: age at which the recency bonus halves.
        brute_force_max: below this many visible vectors, search is exact instead of HNSW.
        vector_weight: weight of the cosine similarity in a candidate's relevance.
        text_weight: weight of the normalised keyword (BM25) score in a candidate's relevance.
        context_weight: how far (0..1) a memory moves up toward a more relevant neighbour (the
            memories stored just before or after it by the same owner); 0 turns context off.
        context_span: how many neighbours on each side count as a memory's context (1: the
            memories stored right before and right after it; 2, the default: two on each side,
            e.g. the answer to a question and the reply to that answer).
        local_runtime: how the LOCAL model runs: ``"onnx-int8"`` (the int8 copy of its ONNX export,
            exported and quantised once from the local model directory: fastest, vectors close to
            but not equal to the full-precision ones, so stores of their own), ``"onnx"`` (the
            full-precision export: the same vectors as sentence-transformers, several times
            faster), ``"torch"`` (sentence-transformers), or ``"auto"``: ``onnx-int8`` for a new
            store, ``onnx`` for a store written in full precision, torch when onnxruntime is missing.
        text_postings_budget: keyword search uses the rarest query terms matching at most this
            many rows in all (it bounds the cost of BM25 on large stores).
        text_max_share: query terms found in more than this share of the stored memories are left
            out of keyword search (they rank nothing, like a user's own name in every memory).
        common_term_weight: those left-out terms still count a little: a candidate holding all of
            them gains this much (a share of it for some), so a question about one person prefers
            that person's memories among otherwise equal ones; 0 turns it off.
        time_weight: a query naming a time ("last week", "in May", "on 8 May, 2023": see
            :mod:`~headroom_integrations.memory.time_expressions`) lifts candidates stated within it
            (by ``observed_at``) by this much; 0 turns it off.
        diversity_weight: the diversity step (maximal marginal relevance): each result is picked
            by its score less this much times its highest cosine to a result picked before it, so
            the top results are not five wordings of one memory; 0 turns it off.

    Example:
        >>> cfg = MemoryConfig(db_path=":memory:", embedder_backend="ollama")
        >>> cfg.embedder_backend, cfg.model_name
        (<EmbedderBackend.OLLAMA: 'ollama'>, 'nomic-embed-text')
    """

    db_path: str | Path = "headroom_memory.db"
    db_url: str | None = None
    embedder_backend: EmbedderBackend | str = EmbedderBackend.LOCAL
    embedder_model: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    ollama_base_url: str = "http://localhost:11434"
    vector_dimension: int | None = None
    hnsw_ef_construction: int | None = None
    hnsw_m: int = 16
    hnsw_ef_search: int = 50
    cache_enabled: bool = True
    cache_max_size: int = 1000
    embedder: Embedder | None = None
    index_path: str | Path | None = None
    busy_timeout_ms: int = 10_000
    db_pool_size: int = 5
    max_content_chars: int = 10_000_000
    embed_max_chars: int = 4_000
    importance_weight: float = 0.0
    recency_weight: float = 0.0
    recency_half_life_days: float = 30.0
    brute_force_max: int = 8192
    vector_weight: float = 0.5
    text_weight: float = 0.5
    context_weight: float = 0.5
    context_span: int = 2
    local_runtime: str = "auto"
    text_postings_budget: int = 1000
    text_max_share: float = 0.5
    common_term_weight: float = 0.2
    time_weight: float = 0.1
    diversity_weight: float = 0.1

    def __post_init__(self) -> None:
        try:
            backend = getattr(self.embedder_backend, "value", self.embedder_backend)
            self.embedder_backend = EmbedderBackend(str(backend).lower())
        except ValueError:
            valid = ", ".join(b.value for b in EmbedderBackend)
            raise InvalidInputError(
                f"unknown embedder_backend {self.embedder_backend!r}; expected one of: {valid}"
            ) from None
        path = self.db_path
        if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)) or not str(path).strip():
            raise InvalidInputError(f"db_path must be a file path (str or Path) or ':memory:', got {path!r}")
        if self.db_url is not None:
            self._parse_db_url()
        if self.index_path is not None and not isinstance(self.index_path, (str, os.PathLike)):
            raise InvalidInputError(f"index_path must be a file path or None, got {self.index_path!r}")
        if self.hnsw_ef_construction is not None:
            as_count(self.hnsw_ef_construction, "hnsw_ef_construction", minimum=1)
        for name in ("hnsw_m", "hnsw_ef_search", "cache_max_size", "embed_max_chars",
                     "max_content_chars", "text_postings_budget", "db_pool_size"):
            as_count(getattr(self, name), name, minimum=1)
        if as_count(self.context_span, "context_span", minimum=1) > _MAX_CONTEXT_SPAN:
            raise InvalidInputError(f"context_span must be at most {_MAX_CONTEXT_SPAN}, got {self.context_span!r}")
        for name in ("busy_timeout_ms", "brute_force_max"):
            as_count(getattr(self, name), name)
        if self.vector_dimension is not None:
            as_count(self.vector_dimension, "vector_dimension", minimum=1)
        for name in ("importance_weight", "recency_weight", "context_weight", "text_max_share",
                     "common_term_weight", "time_weight", "diversity_weight"):
            as_number(getattr(self, name), name, 0.0, 1.0)
        for name in ("vector_weight", "text_weight"):
            if as_number(getattr(self, name), name) < 0:  # type: ignore[operator]
                raise InvalidInputError(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        as_number(self.recency_half_life_days, "recency_half_life_days")
        if self.recency_half_life_days <= 0:
            raise InvalidInputError(f"recency_half_life_days must be > 0, got {self.recency_half_life_days!r}")
        if self.vector_weight + self.text_weight <= 0:
            raise InvalidInputError("vector_weight and text_weight must not both be 0")
        if self.local_runtime not in LOCAL_RUNTIMES:
            raise InvalidInputError(
                f"local_runtime must be one of {', '.join(map(repr, LOCAL_RUNTIMES))}, got {self.local_runtime!r}"
            )
        if self.importance_weight + self.recency_weight > 1.0:
            raise InvalidInputError("importance_weight + recency_weight must not exceed 1")

    @property
    def model_name(self) -> str:
        """The embedding model name, defaulting to the backend's usual model."""
        return self.embedder_model or DEFAULT_MODELS[EmbedderBackend(self.embedder_backend)]

    def _parse_db_url(self) -> None:
        """Check ``db_url``; a ``sqlite://`` URL becomes ``db_path``."""
        url = self.db_url
        if not isinstance(url, str) or not url.strip():
            raise InvalidInputError(f"db_url must be a database URL string, got {url!r}")
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if str(self.db_path) != "headroom_memory.db":
            raise InvalidInputError("give either db_path or db_url, not both")
        if scheme == "sqlite":
            path = url[len("sqlite://"):]
            path = path[1:] if path.startswith("/") else path  # sqlite:///relative, sqlite:////absolute
            self.db_path = path or ":memory:"
            self.db_url = None
        elif scheme not in POSTGRES_SCHEMES:
            raise InvalidInputError(
                f"db_url has an unknown scheme {scheme or url!r}: use postgresql://user:password@host:5432/db "
                "(or postgresql+psycopg://) for PostgreSQL, or sqlite:///path/to/memory.db"
            )

    @property
    def resolved_ef_construction(self) -> int:
        """``hnsw_ef_construction``, or the backend's default (SQLite 200, PostgreSQL 64)."""
        if self.hnsw_ef_construction is not None:
            return self.hnsw_ef_construction
        return 64 if self.backend == "postgres" else 200

    @property
    def backend(self) -> str:
        """The storage backend this configuration selects: ``"sqlite"`` or ``"postgres"``."""
        return "postgres" if self.db_url is not None else "sqlite"

    @property
    def postgres_url(self) -> str | None:
        """``db_url`` in the form SQLAlchemy opens with the psycopg 3 driver (None for SQLite)."""
        if self.db_url is None:
            return None
        return "postgresql+psycopg://" + self.db_url.split("://", 1)[1]

    @property
    def in_memory(self) -> bool:
        """True when the database lives in RAM only."""
        return self.db_url is None and str(self.db_path) == ":memory:"

    @property
    def resolved_db_path(self) -> Path | None:
        """Absolute path of the SQLite file, or None for an in-memory or PostgreSQL database."""
        if self.in_memory or self.db_url is not None:
            return None
        return Path(os.path.abspath(os.path.expanduser(str(self.db_path))))

    @property
    def resolved_index_path(self) -> Path | None:
        """Absolute path of the HNSW sidecar, or None for an in-memory database."""
        if self.index_path is not None:
            return Path(os.path.abspath(os.path.expanduser(str(self.index_path))))
        db = self.resolved_db_path
        return None if db is None else db.with_name(db.name + ".hnsw")
