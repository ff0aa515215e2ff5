"""Which store a command works on, and with which embedder.

The store: ``--db-url`` or ``HEADROOM_DB_URL``, else ``--db`` or ``HEADROOM_DB``, else
``headroom_memory.db``. Commands that only read (and ``forget``/``rollback``) never create a store:
a missing one is an error. The embedder: ``--embedder``/``--model``/``--embedder-url`` when given;
otherwise the one the store records (so ``stats`` on a store made with OpenAI needs no key, and
``search`` on it asks for ``OPENAI_API_KEY`` only because it embeds the query).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from headroom_integrations.errors import EmbedderError, InvalidInputError, MemoryNotFoundError, StorageError
from headroom_integrations.memory import Embedder, MemoryConfig, MemoryEngine
from headroom_integrations.memory.backends import recorded_meta

__all__ = ["RecordedEmbedder", "StoreMissingError", "open_engine", "store_config"]

DEFAULT_DB = "headroom_memory.db"


class StoreMissingError(MemoryNotFoundError):
    """The command reads a store that does not exist (exit code 1)."""

    def __init__(self, where: str) -> None:
        super().__init__(where)
        self.where = where

    def __str__(self) -> str:
        return f"there is no memory store at {self.where} (only writing commands such as 'add' or 'import' create one)"


class RecordedEmbedder(Embedder):
    """The store's embedder by name only, for commands that never embed; embedding raises.

    Example:
        >>> RecordedEmbedder("openai/text-embedding-3-small", 1536).dimension
        1536
    """

    def __init__(self, name: str, dimension: int) -> None:
        self.name, self.dimension = name, dimension

    def _embed(self, texts: list[str]) -> np.ndarray:
        raise EmbedderError(f"this command needs the store's embedder {self.name!r}: pass --embedder (and its key)")


def store_config(args: argparse.Namespace) -> MemoryConfig:
    """The configuration of the store and embedder the global options (and environment) name."""
    url = args.db_url or os.environ.get("HEADROOM_DB_URL")
    where = {"db_url": url} if url else {"db_path": Path(args.db or os.environ.get("HEADROOM_DB") or DEFAULT_DB)}
    options: dict[str, object] = {}
    if args.embedder is not None:
        options["embedder_backend"] = args.embedder
    if args.model is not None:
        options["embedder_model"] = args.model
    if args.embedder_url is not None:  # for whichever HTTP embedder is used
        options["openai_base_url"] = options["ollama_base_url"] = args.embedder_url
    return MemoryConfig(**where, **options)  # type: ignore[arg-type]


def _where(config: MemoryConfig) -> str:
    if config.backend == "postgres":
        from headroom_integrations.memory.backends.postgres import masked

        return masked(config.db_url or "")
    return str(config.db_path)


def open_engine(args: argparse.Namespace, *, create: bool, embeds: bool) -> MemoryEngine:
    """The engine a command runs on.

    Args:
        args: the parsed command line.
        create: the command writes and may create the store.
        embeds: the command embeds text (without an ``--embedder`` option the store's recorded
            embedder is built; commands that do not embed use :class:`RecordedEmbedder`).

    Raises:
        StoreMissingError: no store there and ``create`` is False.
    """
    config = store_config(args)
    name = None if config.in_memory else recorded_meta(config, "embedder_name")
    if name is None:
        path = config.resolved_db_path
        if path is not None and path.exists() and path.stat().st_size > 0:  # opening it would say why
            return MemoryEngine(config) if create else _refuse(path)
        if not create:
            _check_reachable(config)
            raise StoreMissingError(_where(config))
        return MemoryEngine(config)
    if args.embedder is None:
        backend, _, model = name.partition("/")
        dimension = int(recorded_meta(config, "embedder_dimension") or 0)
        if not embeds:
            return MemoryEngine(_replace(config, embedder=RecordedEmbedder(name, dimension)))
        if backend in ("openai", "ollama"):
            config = _replace(config, embedder_backend=backend, embedder_model=model, vector_dimension=dimension)
    return MemoryEngine(config)


def _check_reachable(config: MemoryConfig) -> None:
    """A database server that cannot be reached is not a missing store: say what failed."""
    if config.backend != "postgres":
        return
    from sqlalchemy import NullPool, create_engine
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(config.postgres_url, poolclass=NullPool)  # type: ignore[arg-type]
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        reason = " ".join(str(getattr(exc, "orig", exc)).split())[:300]
        raise StorageError(f"cannot connect to {_where(config)}: {reason}") from None
    finally:
        engine.dispose()


def _refuse(path: Path) -> MemoryEngine:
    raise InvalidInputError(f"{path} is not a memory store (it holds no embedder record); reading it changes nothing")


def _replace(config: MemoryConfig, **changes: object) -> MemoryConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]
