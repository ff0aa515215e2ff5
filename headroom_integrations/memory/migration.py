"""Copy a memory store to another backend (SQLite file -> PostgreSQL, or back) without re-embedding.

Every memory keeps its id, version chain, metadata, timestamps and vector; the chat log and the
embedder record come along. Copying is idempotent: memories whose id the target already holds
are skipped, and the chat log continues from where an earlier run stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from headroom_integrations.errors import InvalidInputError, StorageError
from headroom_integrations.memory.backends import MemoryBackend, open_backend, recorded_meta
from headroom_integrations.memory.backends.base import META_MESSAGES_COPIED
from headroom_integrations.memory.config import MemoryConfig

__all__ = ["MigrationReport", "migrate", "store_config"]


@dataclass(frozen=True)
class MigrationReport:
    """What :func:`migrate` did.

    Example:
        >>> MigrationReport(memories=10, skipped=0, messages=4, embedder="local/x").memories
        10
    """

    memories: int
    skipped: int
    messages: int
    embedder: str


def store_config(where: MemoryConfig | str | os.PathLike[str]) -> MemoryConfig:
    """A configuration from a config, a database URL (``postgresql://…``, ``sqlite:///…``) or a file path.

    Example:
        >>> store_config("sqlite:///memory.db").backend, store_config("postgresql://db/app").backend
        ('sqlite', 'postgres')
    """
    if isinstance(where, MemoryConfig):
        return where
    if isinstance(where, str) and "://" in where:
        return MemoryConfig(db_url=where)
    if isinstance(where, (str, os.PathLike)):
        return MemoryConfig(db_path=where)
    raise InvalidInputError(f"a store is a MemoryConfig, a database URL or a file path, got {type(where).__name__}")


def migrate(
    source: MemoryConfig | str | os.PathLike[str],
    target: MemoryConfig | str | os.PathLike[str],
    *,
    batch_size: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> MigrationReport:
    """Copy every memory (all versions, with vectors) and the chat log from ``source`` to ``target``.

    Args:
        source: the store to read (it must exist); a config, URL or file path.
        target: the store to write (created if missing; it must use the same embedder if it has memories).
        batch_size: memories per transaction.
        progress: called with (memories done, memories in the source) after each batch.

    Raises:
        InvalidInputError: the source does not exist or holds no embedder record; bad ``batch_size``.
        EmbedderMismatchError: the target holds memories of another embedder.
        StorageError: either store cannot be opened, read or written.

    Example::

        report = migrate("memory.db", "postgresql://app:secret@db.internal:5432/app")
        print(report.memories, "copied,", report.skipped, "already there")
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    source_config, target_config = store_config(source), store_config(target)
    path = source_config.resolved_db_path
    if source_config.in_memory or (path is not None and not Path(path).exists()):
        raise InvalidInputError(f"there is no memory store at {path or ':memory:'} to migrate from")
    name = recorded_meta(source_config, "embedder_name")
    if name is None:
        raise InvalidInputError("the source holds no memory store (no embedder recorded): nothing to migrate")
    with _opened(source_config, name) as (reader, dimension), _opened(target_config, name, dimension) as (writer, _):
        total = int(reader.stats(None)["total"])
        done = copied = 0
        for batch in reader.dump(batch_size):
            copied += writer.load(batch)
            done += len(batch)
            if progress is not None:
                progress(done, total)
        messages = _copy_messages(reader, writer, batch_size)
    return MigrationReport(memories=copied, skipped=done - copied, messages=messages, embedder=name)


def _copy_messages(reader: MemoryBackend, writer: MemoryBackend, batch_size: int) -> int:
    """Append the source's messages the target has not received yet (counted in its meta table)."""
    key = f"{META_MESSAGES_COPIED}:{hashlib.sha1(reader.location.encode()).hexdigest()[:20]}"
    already = int(writer.meta().get(key, "0"))
    seen = copied = 0
    for batch in reader.dump_messages(batch_size):
        fresh = batch[max(0, already - seen):]
        seen += len(batch)
        if fresh:
            writer.append_messages(fresh)
            copied += len(fresh)
            writer.set_meta(key, str(already + copied))
    return copied


@contextlib.contextmanager
def _opened(config: MemoryConfig, name: str, dimension: int | None = None) -> Iterator[tuple[MemoryBackend, int]]:
    """A backend opened with a known embedder identity (the dimension read from the store when not given)."""
    if dimension is None:
        found = recorded_meta(config, "embedder_dimension")
        if found is None:
            raise StorageError("the source store records no embedder dimension")
        dimension = int(found)
    backend = open_backend(config, name, dimension)
    try:
        yield backend, dimension
    finally:
        backend.close()
