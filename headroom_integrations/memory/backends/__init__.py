"""Storage backends behind one protocol (:mod:`.base`); :func:`open_backend` picks one from the config.

``db_path`` (or a ``sqlite://`` URL) opens the embedded SQLite backend; a ``postgresql://`` URL the
PostgreSQL + pgvector one (the ``postgres`` extra).
"""

from __future__ import annotations

from headroom_integrations.memory.backends.base import (
    ROLLED_BACK_TO,
    KeywordQuery,
    MemoryBackend,
    Revision,
    Scores,
    SearchScope,
    StoredRow,
)
from headroom_integrations.memory.config import MemoryConfig

__all__ = [
    "ROLLED_BACK_TO",
    "KeywordQuery",
    "MemoryBackend",
    "Revision",
    "Scores",
    "SearchScope",
    "StoredRow",
    "backend_key",
    "open_backend",
    "recorded_meta",
]


def backend_key(config: MemoryConfig) -> str | None:
    """What identifies the store a configuration opens, within one process (None: a private RAM store)."""
    if config.backend == "postgres":
        from headroom_integrations.memory.backends.postgres import url_key

        return url_key(config.postgres_url)  # type: ignore[arg-type]
    path = config.resolved_db_path
    return None if path is None else str(path)


def recorded_meta(config: MemoryConfig, key: str) -> str | None:
    """A store-wide fact of an existing store (``embedder_name``, ``embedder_dimension``, …), read
    without creating anything; None when the store or the fact does not exist."""
    if config.backend == "postgres":
        from headroom_integrations.memory.backends.postgres import recorded_meta as postgres_meta

        return postgres_meta(config.postgres_url, key)  # type: ignore[arg-type]
    from headroom_integrations.memory.backends.sqlite.driver import recorded_meta as sqlite_meta

    return sqlite_meta(config.resolved_db_path, key)


def open_backend(config: MemoryConfig, embedder_name: str, dimension: int) -> MemoryBackend:
    """Open (creating on first use) the store a configuration names.

    Raises:
        StorageError: the store cannot be opened (named in the message).
        EmbedderMismatchError: the store was written with another embedder.
        MissingDependencyError: a PostgreSQL URL without the ``postgres`` extra installed.
    """
    if config.backend == "postgres":
        from headroom_integrations.memory.backends.postgres import PostgresBackend

        return PostgresBackend(
            config.postgres_url, embedder_name, dimension, hnsw_m=config.hnsw_m,  # type: ignore[arg-type]
            hnsw_ef_construction=config.resolved_ef_construction, hnsw_ef_search=config.hnsw_ef_search,
            brute_force_max=config.brute_force_max, pool_size=config.db_pool_size,
        )
    from headroom_integrations.memory.backends.sqlite import SqliteBackend

    return SqliteBackend(
        config.resolved_db_path, embedder_name, dimension, index_path=config.resolved_index_path,
        busy_timeout_ms=config.busy_timeout_ms, hnsw_m=config.hnsw_m,
        hnsw_ef_construction=config.resolved_ef_construction, hnsw_ef_search=config.hnsw_ef_search,
        brute_force_max=config.brute_force_max,
    )
