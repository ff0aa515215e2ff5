"""HierarchicalMemory: the async face of the blocking engine (:class:`MemoryEngine`).

Storage, hnswlib and the embedders all block, so the engine is plain blocking code that is safe to
call from several threads. :class:`HierarchicalMemory` exposes the same methods as coroutines that
run the engine in a worker thread (``asyncio.to_thread``), so it works in scripts, in Jupyter and
inside FastAPI alike; ``memory.sync`` is the engine itself.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import fields
from types import TracebackType
from typing import Any

from headroom_integrations._async import async_face
from headroom_integrations.errors import InvalidInputError
from headroom_integrations.memory.config import MemoryConfig
from headroom_integrations.memory.engine import MemoryEngine

__all__ = ["HierarchicalMemory", "MemoryEngine"]


def _config_from(config: MemoryConfig | str | os.PathLike[str] | None, options: dict[str, Any]) -> Any:
    """The configuration :meth:`HierarchicalMemory.create` was given: a config or its fields, not both."""
    if config is not None and options:
        raise InvalidInputError(
            f"pass either a MemoryConfig or its fields as keywords, not both (got config and {sorted(options)})"
        )
    if config is not None:
        return config
    unknown = set(options) - {f.name for f in fields(MemoryConfig)}
    if unknown:
        raise InvalidInputError(f"unknown MemoryConfig fields {sorted(unknown)}")
    return MemoryConfig(**options)


class HierarchicalMemory:
    """Hierarchical, temporal memory for LLM applications (async face of :class:`MemoryEngine`).

    Every method of the engine is available as a coroutine; ``memory.sync`` is the blocking engine
    for plain sync code. Nothing here runs an event loop of its own, so it works inside Jupyter,
    FastAPI or any running loop.

    Example::

        memory = await HierarchicalMemory.create(MemoryConfig(db_path="memory.db"))
        m = await memory.add("User works at Google", user_id="alice", category=MemoryCategory.FACT)
        new = await memory.supersede(old_memory_id=m.id, new_content="User now works at Anthropic")
        [v.is_current for v in await memory.get_history(new.id)]  # [False, True]
        memory.sync.search("where does alice work", user_id="alice")[0].content  # from sync code
        await memory.close()
    """

    def __init__(self, engine: MemoryEngine) -> None:
        self.sync = engine

    @classmethod
    async def create(cls, config: MemoryConfig | None = None, **options: Any) -> HierarchicalMemory:
        """Open (or create) a memory store without blocking the event loop.

        Args:
            config: a :class:`MemoryConfig` (or a database path); or pass its fields as keyword arguments.

        Raises:
            InvalidInputError: both a config and keyword arguments, or an unknown keyword.
        """
        return cls(await asyncio.to_thread(MemoryEngine, _config_from(config, options)))

    @classmethod
    def open(cls, config: MemoryConfig | None = None, **options: Any) -> HierarchicalMemory:
        """Open (or create) a memory store from sync code (arguments as for :meth:`create`)."""
        return cls(MemoryEngine(_config_from(config, options)))

    @property
    def config(self) -> MemoryConfig:
        """The engine's configuration."""
        return self.sync.config

    add = async_face(MemoryEngine.add)
    add_batch = async_face(MemoryEngine.add_batch)
    supersede = async_face(MemoryEngine.supersede)
    update = async_face(MemoryEngine.update)
    rollback = async_face(MemoryEngine.rollback)
    delete = async_face(MemoryEngine.delete)
    clear = async_face(MemoryEngine.clear)
    purge = async_face(MemoryEngine.purge)
    get = async_face(MemoryEngine.get)
    query = async_face(MemoryEngine.query)
    get_history = async_face(MemoryEngine.get_history)
    search = async_face(MemoryEngine.search)
    put_item = async_face(MemoryEngine.put_item)
    get_item = async_face(MemoryEngine.get_item)
    delete_item = async_face(MemoryEngine.delete_item)
    set_expiry = async_face(MemoryEngine.set_expiry)
    sweep_expired = async_face(MemoryEngine.sweep_expired)
    stats = async_face(MemoryEngine.stats)
    users = async_face(MemoryEngine.users)
    doctor = async_face(MemoryEngine.doctor)
    export = async_face(MemoryEngine.export)
    import_ = async_face(MemoryEngine.import_)
    save_index = async_face(MemoryEngine.save_index)
    flush = async_face(MemoryEngine.flush)
    append_messages = async_face(MemoryEngine.append_messages)
    get_messages = async_face(MemoryEngine.get_messages)
    clear_messages = async_face(MemoryEngine.clear_messages)
    close = async_face(MemoryEngine.close)

    async def __aenter__(self) -> HierarchicalMemory:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
