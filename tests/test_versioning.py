"""Temporal versioning: supersede, history, point-in-time, rollback."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from headroom_integrations import (
    InvalidInputError,
    MemoryAlreadySupersededError,
    MemoryEngine,
    MemoryFilter,
    MemoryNotFoundError,
)


def test_supersede_and_history(engine: MemoryEngine) -> None:
    old = engine.add("User works at Google", user_id="alice", category="fact", importance=0.9, session_id="s")
    new = engine.supersede(old_memory_id=old.id, new_content="User now works at Anthropic")
    assert new.supersedes == old.id and new.chain_id == old.chain_id
    assert new.category == old.category and new.importance == 0.9 and new.user_id == "alice"
    assert new.scope == old.scope and new.session_id == "s"
    current = engine.query(MemoryFilter(user_id="alice", include_superseded=False))
    assert [m.content for m in current] == ["User now works at Anthropic"]
    chain = engine.get_history(new.id)
    assert [(m.content, m.is_current) for m in chain] == [
        ("User works at Google", False), ("User now works at Anthropic", True)]
    assert engine.get_history(old.id) == chain
    assert chain[0].superseded_by == new.id and chain[0].valid_to == new.valid_from
    assert len(engine.query(MemoryFilter(user_id="alice", include_superseded=True))) == 2


def test_superseded_never_comes_back_from_search(engine: MemoryEngine) -> None:
    old = engine.add("User works at Google", user_id="alice")
    engine.supersede(old.id, "User now works at Anthropic")
    hits = engine.search("Google", user_id="alice", top_k=5, min_score=-1)
    assert [h.content for h in hits] == ["User now works at Anthropic"]
    with_old = engine.search("Google", user_id="alice", top_k=5, include_superseded=True)
    assert with_old[0].content == "User works at Google"


def test_point_in_time(engine: MemoryEngine) -> None:
    v1 = engine.add("Lives in Paris", user_id="u")
    time.sleep(0.01)
    between = datetime.now(timezone.utc)
    time.sleep(0.01)
    v2 = engine.supersede(v1.id, "Lives in Berlin")
    assert [m.content for m in engine.query(MemoryFilter(user_id="u", valid_at=between))] == ["Lives in Paris"]
    assert [m.content for m in engine.query(MemoryFilter(user_id="u", valid_at=datetime.now(timezone.utc)))] == [
        "Lives in Berlin"]
    before = v1.created_at.replace(year=2000)
    assert engine.query(MemoryFilter(user_id="u", valid_at=before)) == []
    hits = engine.search("where does the user live", user_id="u", valid_at=between)
    assert [h.content for h in hits] == ["Lives in Paris"]
    naive = between.replace(tzinfo=None)  # naive datetimes are read as UTC
    assert [m.id for m in engine.query(MemoryFilter(user_id="u", valid_at=naive))] == [v1.id]
    assert v2.valid_from is not None


def test_point_in_time_search_is_not_crowded_out_by_newer_memories(engine: MemoryEngine) -> None:
    """A search at a past time finds the versions valid then (min(top_k, visible then) of them)
    however many newer memories closer to the query were stored since: 1,300 of them fill the
    deepest candidate list of current vectors (4 * 4 * 4 * 20 = 1,280)."""
    bikes = engine.add_batch([f"Owns a bicycle numbered {i}" for i in range(5)], user_id="u")
    time.sleep(0.01)
    then = datetime.now(timezone.utc)
    time.sleep(0.01)
    engine.supersede(bikes[0].id, "Sold the bicycle numbered 0")  # the old version was valid then
    engine.add_batch([f"Visited the museum of modern art in city {i}" for i in range(1300)], user_id="u")
    for top_k in (3, 10):
        hits = engine.search("museum of modern art visit", user_id="u", top_k=top_k, valid_at=then)
        assert len(hits) == min(top_k, 5)
        assert {h.id for h in hits} <= {b.id for b in bikes}


def test_supersede_errors(engine: MemoryEngine) -> None:
    old = engine.add("A", user_id="u")
    new = engine.supersede(old.id, "B")
    with pytest.raises(MemoryAlreadySupersededError) as info:
        engine.supersede(old.id, "C")
    assert new.id in str(info.value)
    with pytest.raises(MemoryNotFoundError, match="nope"):
        engine.supersede("nope", "C")
    with pytest.raises(InvalidInputError):
        engine.supersede(new.id, "  ")
    assert [m.content for m in engine.query(MemoryFilter(user_id="u"))] == ["B"]


def test_rollback_is_recorded_in_the_chain(engine: MemoryEngine) -> None:
    v1 = engine.add("Team lead is Sarah", user_id="u", category="entity")
    v2 = engine.supersede(v1.id, "Team lead is Omar")
    v3 = engine.rollback(v1.id)
    assert v3.content == "Team lead is Sarah" and v3.is_current and v3.metadata["rolled_back_to"] == v1.id
    chain = engine.get_history(v1.id)
    assert [m.id for m in chain] == [v1.id, v2.id, v3.id]
    assert [m.is_current for m in chain] == [False, False, True]
    assert engine.search("who leads the team", user_id="u", top_k=1)[0].id == v3.id
    with pytest.raises(InvalidInputError, match="already the current"):
        engine.rollback(v3.id)


def test_only_the_rollback_version_is_marked_a_rollback(engine: MemoryEngine) -> None:
    v1 = engine.add("Works at Google", user_id="u", metadata={"source": "chat"})
    engine.supersede(v1.id, "Works at Anthropic")
    v3 = engine.rollback(v1.id)
    v4 = engine.supersede(v3.id, "Works at OpenAI")
    assert v3.metadata == {"source": "chat", "rolled_back_to": v1.id}
    assert v4.metadata == {"source": "chat"}  # inherited, without the rollback mark
    assert engine.get_history(v1.id)[-1].metadata == {"source": "chat"}
