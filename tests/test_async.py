"""The async face: the seed's snippet as written, use inside a running loop, concurrency (every backend)."""

from __future__ import annotations

import asyncio

from stores import Store

from headroom_integrations import (
    EmbedderBackend,
    HierarchicalMemory,
    MemoryCategory,
    MemoryFilter,
    MemoryScope,
)


async def test_seed_snippet_runs_as_written(store: Store) -> None:
    memory = await HierarchicalMemory.create(store.config())
    m = await memory.add("User works at Google", user_id="alice", category=MemoryCategory.FACT, importance=0.9)
    new = await memory.supersede(old_memory_id=m.id, new_content="User now works at Anthropic")
    current = await memory.query(MemoryFilter(user_id="alice", include_superseded=False))
    chain = await memory.get_history(new.id)
    hits = await memory.search("where does alice work", user_id="alice", session_id=None, top_k=5)
    assert [c.content for c in current] == ["User now works at Anthropic"]
    assert [(c.content, c.is_current) for c in chain] == [
        ("User works at Google", False), ("User now works at Anthropic", True)]
    assert hits[0].content == "User now works at Anthropic"
    assert memory.config.embedder_backend is EmbedderBackend.LOCAL
    assert MemoryScope.USER is m.scope
    await memory.close()


async def test_sync_face_works_inside_a_running_loop(store: Store) -> None:
    """The anchor failed here with 'Cannot run the event loop while another loop is running'."""
    memory = HierarchicalMemory.open(**store.where)
    memory.sync.add("Prefers tabs", user_id="u")
    assert memory.sync.search("indentation", user_id="u")[0].content == "Prefers tabs"
    assert (await memory.search("indentation", user_id="u"))[0].content == "Prefers tabs"
    await memory.close()


async def test_context_manager_and_concurrency(store: Store) -> None:
    async with await HierarchicalMemory.create(**store.where) as memory:
        facts = [f"Fact {i}: likes number {i}" for i in range(20)]
        await asyncio.gather(*(memory.add(text, user_id="u") for text in facts))
        results = await asyncio.gather(*(memory.search(f"number {i}", user_id="u", top_k=3) for i in range(20)))
        assert all(results)
        stats = await memory.stats("u")
        assert stats["total"] == 20
    reopened = await HierarchicalMemory.create(**store.where)
    assert (await reopened.stats())["total"] == 20
    await reopened.close()


def test_async_methods_keep_their_docs() -> None:
    assert HierarchicalMemory.search.__doc__ and "Hybrid" in HierarchicalMemory.search.__doc__
    assert asyncio.iscoroutinefunction(HierarchicalMemory.add)
