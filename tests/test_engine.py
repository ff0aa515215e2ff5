"""Core engine behaviour over a real SQLite file and the real MiniLM model."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from stores import Store

from headroom_integrations import (
    MemoryCategory,
    MemoryEngine,
    MemoryFilter,
    MemoryNotFoundError,
    MemoryScope,
)
from headroom_integrations.memory.backends import MemoryBackend, Revision, open_backend
from headroom_integrations.memory.models import Memory
from headroom_integrations.memory.validation import new_memory


def test_add_get_and_search(engine: MemoryEngine) -> None:
    m = engine.add("User works at Google", user_id="alice", category=MemoryCategory.FACT, importance=0.9,
                   metadata={"source": "chat"})
    assert engine.get(m.id) == m
    assert m.scope is MemoryScope.USER and m.is_current and m.metadata == {"source": "chat"}
    engine.add("Prefers Go for performance-critical code", user_id="alice", category="preference")
    engine.add("Has a dog called Rex", user_id="alice", category="entity")
    hits = engine.search("where does alice work", user_id="alice", top_k=2)
    assert hits[0].content == "User works at Google"
    assert len(hits) == 2
    assert -1.0 <= hits[0].score <= 1.0


def test_search_returns_the_same_memory_as_get(engine: MemoryEngine) -> None:
    """Search reads its rows on a faster path than ``get``: every field must come back the same."""
    old = engine.add("Lives in Lisbon", user_id="u", session_id="s", scope="session", category="fact",
                     importance=0.4, metadata={"source": "chat", "n": [1, 2]})
    new = engine.supersede(old.id, "Lives in Porto")
    engine.add("Keeps bees on the roof", user_id="u", agent_id="a", session_id="s", scope="agent")
    hits = engine.search("where does the user live", user_id="u", session_id="s", agent_id="a",
                         include_superseded=True, top_k=5)
    by_id = {hit.memory.id: hit.memory for hit in hits}
    assert set(by_id) == {old.id, new.id, engine.search("bees", user_id="u", session_id="s", agent_id="a")[0].id}
    for memory_id, memory in by_id.items():
        assert memory == engine.get(memory_id)
    superseded = by_id[old.id]
    assert superseded.valid_to is not None and superseded.valid_to.tzinfo is not None
    assert superseded.superseded_by == new.id and superseded.metadata == {"source": "chat", "n": [1, 2]}
    assert by_id[new.id].created_at.tzinfo is not None and by_id[new.id].supersedes == old.id


def test_semantic_match_without_shared_words(engine: MemoryEngine) -> None:
    engine.add("Prefers Go for performance-critical code", user_id="bob", category="preference")
    engine.add("Is allergic to peanuts", user_id="bob")
    engine.add("Lives in Lisbon", user_id="bob")
    hits = engine.search("Which programming language should I use for my microservice?", user_id="bob", top_k=1)
    assert hits[0].content == "Prefers Go for performance-critical code"


def test_add_batch_is_one_call_and_validates_everything_first(engine: MemoryEngine) -> None:
    stored = engine.add_batch(
        ["Likes tea", {"content": "Works remotely", "category": "context", "session_id": "s1"}], user_id="carol"
    )
    assert [m.content for m in stored] == ["Likes tea", "Works remotely"]
    assert stored[1].scope is MemoryScope.SESSION and stored[1].category is MemoryCategory.CONTEXT
    with pytest.raises(ValueError, match="item 1"):
        engine.add_batch(["Fine", "   "], user_id="carol")
    assert engine.stats("carol")["total"] == 2  # nothing of the bad batch was stored


def test_update_reembeds_and_reindexes(engine: MemoryEngine) -> None:
    m = engine.add("Favourite colour is blue", user_id="dan")
    engine.add("Drives a red bicycle", user_id="dan")
    updated = engine.update(m.id, content="Plays the cello in an orchestra", importance=0.7, category="fact")
    assert updated.content == "Plays the cello in an orchestra" and updated.importance == 0.7
    assert updated.id == m.id and updated.is_current
    hits = engine.search("musical instrument", user_id="dan", top_k=1)
    assert hits[0].id == m.id
    assert all("blue" not in h.content for h in engine.search("favourite colour blue", user_id="dan"))


def test_delete_and_clear(engine: MemoryEngine) -> None:
    a = engine.add("Likes hiking", user_id="erin")
    engine.add("Current task: write the report", user_id="erin", session_id="s1", category="context")
    engine.add("User-level fact learned in s1", user_id="erin", session_id="s1", scope="user")
    engine.add("Another user's fact", user_id="frank")
    assert engine.delete(a.id) is True
    assert engine.delete(a.id) is False
    assert engine.get(a.id) is None
    assert all(h.id != a.id for h in engine.search("hiking", user_id="erin"))
    assert engine.clear("erin", session_id="s1", scope="session") == 1
    assert [m.content for m in engine.query(MemoryFilter(user_id="erin"))] == ["User-level fact learned in s1"]
    assert engine.clear("erin") == 1
    assert engine.stats("erin")["total"] == 0
    assert engine.stats("frank")["total"] == 1


def test_query_filters(engine: MemoryEngine) -> None:
    engine.add("A", user_id="u", category="fact", importance=0.2)
    engine.add("B", user_id="u", category="decision", importance=0.9, session_id="s")
    engine.add("C", user_id="v", category="decision")
    assert [m.content for m in engine.query(MemoryFilter(user_id="u", categories=["decision"]))] == ["B"]
    assert [m.content for m in engine.query(MemoryFilter(user_id="u", min_importance=0.5))] == ["B"]
    assert [m.content for m in engine.query(MemoryFilter(user_id="u", scopes=[MemoryScope.USER]))] == ["A"]
    assert [m.content for m in engine.query(MemoryFilter(user_id="u", limit=1, offset=1))] == ["B"]
    assert len(engine.query()) == 3


def test_search_filters_categories_scopes_min_score(engine: MemoryEngine) -> None:
    engine.add("Chose PostgreSQL over MySQL", user_id="u", category="decision")
    engine.add("Prefers PostgreSQL for analytics", user_id="u", category="preference")
    engine.add("Migrating the billing DB this week", user_id="u", session_id="s", category="context")
    hits = engine.search("database choice", user_id="u", session_id="s", categories=["decision"])
    assert [h.content for h in hits] == ["Chose PostgreSQL over MySQL"]
    hits = engine.search("database", user_id="u", session_id="s", scopes=["session"])
    assert [h.content for h in hits] == ["Migrating the billing DB this week"]
    assert engine.search("database", user_id="u", min_score=0.99) == []
    everything = engine.search("database", user_id="u", session_id="s", min_score=-1.0, top_k=10)
    assert len(everything) == 3


def test_near_duplicates_are_collapsed(engine: MemoryEngine) -> None:
    engine.add("Prefers dark mode", user_id="u")
    engine.add("Prefers dark mode.", user_id="u")
    engine.add("Uses a standing desk", user_id="u")
    hits = engine.search("dark mode preference", user_id="u", top_k=3)
    assert sum("dark mode" in h.content for h in hits) == 1


def test_stats_counts(engine: MemoryEngine) -> None:
    m = engine.add("Works at Google", user_id="u")
    engine.add("In a meeting", user_id="u", session_id="s", category="context")
    engine.supersede(m.id, "Works at Anthropic")
    stats = engine.stats("u")
    assert stats["total"] == 3 and stats["current"] == 2 and stats["superseded"] == 1
    assert stats["categories"]["fact"] == 1 and stats["categories"]["context"] == 1
    assert stats["scopes"] == {"user": 1, "session": 1, "agent": 0, "turn": 0}


def test_importance_and_recency_weights(make_engine: Callable[..., MemoryEngine]) -> None:
    engine = make_engine(importance_weight=0.9)
    engine.add("Coffee order: flat white", user_id="u", importance=0.1)
    engine.add("Coffee allergy: none, but avoids decaf", user_id="u", importance=1.0)
    hits = engine.search("coffee", user_id="u", top_k=2)
    assert hits[0].memory.importance == 1.0


def test_missing_memory_errors(engine: MemoryEngine) -> None:
    with pytest.raises(MemoryNotFoundError):
        engine.get_history("nope")
    with pytest.raises(MemoryNotFoundError):
        engine.update("nope", content="x")
    with pytest.raises(KeyError):  # MemoryNotFoundError is a KeyError too
        engine.supersede("nope", "x")


def test_dedupe_returns_the_existing_memory_in_the_same_scope(engine: MemoryEngine) -> None:
    first = engine.add("Prefers Go for services.", user_id="u", category="preference")
    again = engine.add("prefers go for services", user_id="u", category="preference", dedupe=True)
    assert again.id == first.id
    in_session = engine.add("Prefers Go for services", user_id="u", session_id="s", dedupe=True)
    assert in_session.id != first.id  # another scope is another memory
    other_user = engine.add("Prefers Go for services", user_id="v", dedupe=True)
    assert other_user.id != first.id
    batch = engine.add_batch(["Likes tea", "likes tea!", "Prefers Go for services"], user_id="u", dedupe=True)
    assert batch[0].id == batch[1].id and batch[2].id == first.id
    assert engine.add("Prefers Go for services", user_id="u").id != first.id  # dedupe is opt-in
    assert engine.stats("u")["total"] == 4


def test_deferred_embedding_is_searchable_at_once(engine: MemoryEngine) -> None:
    engine.add("Allergic to shellfish", user_id="u")
    stored = engine.add("Keeps bees on the roof", user_id="u", defer_embedding=True)
    new = engine.supersede(stored.id, "Keeps bees and chickens on the roof", defer_embedding=True)
    hits = engine.search("beekeeping hobby", user_id="u", top_k=1)  # no shared word: needs the vector
    assert [h.id for h in hits] == [new.id]
    engine.flush()
    assert engine.backend.without_embedding() == []
    older = engine.search("beekeeping hobby", user_id="u", top_k=3, include_superseded=True)
    assert stored.id in [h.id for h in older]  # the superseded version got its vector too


def test_a_version_superseded_before_its_embedding_still_gets_one(
    make_engine: Callable[..., MemoryEngine], store: Store, tmp_path: Path
) -> None:
    """Another process committed a row without its vector (it died before embedding it) and the
    fact was superseded since: the next search embeds that older version too, so history and
    point-in-time searches find it by meaning."""
    engine = make_engine()
    other = open_backend(store.config(index_path=tmp_path / "other.hnsw"), engine.embedder.name,
                         engine.embedder.dimension)
    [(old, _)] = other.insert([_raw_memory("Keeps bees on the roof")], [None], dedupe=False)
    other.supersede(old.id, str(uuid.uuid4()), Revision(content="Moved the hives to the garden"),
                    engine.embedder.embed_one("Moved the hives to the garden"), revive=False)
    other.close()
    engine.flush()
    assert engine.backend.without_embedding() == []
    older = engine.search("beekeeping hobby", user_id="u", top_k=2, include_superseded=True)
    assert old.id in [h.id for h in older]


def test_rows_left_without_vector_are_embedded_by_the_next_search_or_open(
    make_engine: Callable[..., MemoryEngine], store: Store, tmp_path: Path
) -> None:
    engine = make_engine()

    def other_process() -> MemoryBackend:  # a backend of its own, as another process has (own index file)
        return open_backend(store.config(index_path=tmp_path / "other.hnsw"), engine.embedder.name,
                            engine.embedder.dimension)

    engine.add("Allergic to shellfish", user_id="u")
    # another writer committed a row but has not stored its vector yet
    other = other_process()
    other.insert([_raw_memory("Keeps bees on the roof")], [None], dedupe=False)
    other.close()
    assert [h.content for h in engine.search("beekeeping hobby", user_id="u", top_k=1)] == ["Keeps bees on the roof"]
    engine.close()
    # a writer died before embedding: the next open finishes the job
    other = other_process()
    other.insert([_raw_memory("Plays the theremin")], [None], dedupe=False)
    other.close()
    reopened = make_engine()
    assert reopened.backend.without_embedding() == []
    hits = reopened.search("electronic musical instrument", user_id="u", top_k=1)
    assert hits[0].content == "Plays the theremin"


def _raw_memory(content: str) -> Memory:
    return new_memory(1000, content, "u")


def test_conversation_log(make_engine: Callable[..., MemoryEngine]) -> None:
    engine = make_engine()
    engine.append_messages("u", "s1", [{"role": "user", "content": "Hi"},
                                       {"role": "assistant", "content": "Hello!", "payload": {"type": "ai"}}])
    engine.append_messages("u", "s2", [{"role": "user", "content": "Other session"}])
    records = engine.get_messages("u", "s1")
    assert [(r.role, r.content, r.payload) for r in records] == [("user", "Hi", {}), ("assistant", "Hello!", {"type": "ai"})]
    assert [r.content for r in engine.get_messages("u", "s1", limit=1)] == ["Hello!"]
    assert engine.get_messages("v", "s1") == []
    with pytest.raises(ValueError, match="role and content"):
        engine.append_messages("u", "s1", [{"role": "user", "content": "ok"}, {"role": "user", "content": None}])
    assert len(engine.get_messages("u", "s1")) == 2  # the bad batch logged nothing
    engine.close()
    reopened = make_engine()
    assert [r.content for r in reopened.get_messages("u", "s1")] == ["Hi", "Hello!"]
    assert reopened.clear_messages("u", "s1") == 2 and reopened.get_messages("u", "s1") == []
    assert reopened.clear_messages("u") == 1
