"""Scope visibility exactly as documented, and recall when one database holds many users."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from headroom_integrations import InvalidInputError, MemoryEngine, MemoryScope


@pytest.fixture
def scoped(engine: MemoryEngine) -> MemoryEngine:
    engine.add("alice user-level: prefers Go", user_id="alice", session_id="A", scope="user")
    engine.add("alice session A: debugging the parser", user_id="alice", session_id="A")
    engine.add("alice agent A/coder: uses black", user_id="alice", session_id="A", agent_id="coder")
    engine.add("alice turn A/coder/t1: scratch note", user_id="alice", session_id="A", agent_id="coder", turn_id="t1")
    engine.add("bob user-level: prefers Rust", user_id="bob", session_id="A", scope="user")
    return engine


def _seen(engine: MemoryEngine, **ids: str | None) -> set[str]:
    hits = engine.search("prefers parser black scratch note Go Rust", top_k=20, min_score=-1.0, **ids)  # type: ignore[arg-type]
    return {h.content.split(":")[0] for h in hits}


def test_scope_is_derived_from_ids(scoped: MemoryEngine) -> None:
    scopes = {m.content.split(":")[0]: m.scope for m in scoped.query()}
    assert scopes["alice session A"] is MemoryScope.SESSION
    assert scopes["alice agent A/coder"] is MemoryScope.AGENT
    assert scopes["alice turn A/coder/t1"] is MemoryScope.TURN
    assert scopes["alice user-level"] is MemoryScope.USER


def test_visibility_matrix(scoped: MemoryEngine) -> None:
    assert _seen(scoped, user_id="alice") == {"alice user-level"}
    assert _seen(scoped, user_id="alice", session_id="B") == {"alice user-level"}
    assert _seen(scoped, user_id="alice", session_id="A") == {"alice user-level", "alice session A"}
    assert _seen(scoped, user_id="alice", session_id="A", agent_id="other") == {"alice user-level", "alice session A"}
    assert _seen(scoped, user_id="alice", session_id="A", agent_id="coder") == {
        "alice user-level", "alice session A", "alice agent A/coder"}
    assert _seen(scoped, user_id="alice", session_id="B", agent_id="coder") == {"alice user-level"}
    assert _seen(scoped, user_id="alice", session_id="A", agent_id="coder", turn_id="t1") == {
        "alice user-level", "alice session A", "alice agent A/coder", "alice turn A/coder/t1"}
    assert _seen(scoped, user_id="alice", session_id="A", agent_id="coder", turn_id="t2") == {
        "alice user-level", "alice session A", "alice agent A/coder"}
    assert _seen(scoped, user_id="bob", session_id="A", agent_id="coder", turn_id="t1") == {"bob user-level"}
    assert _seen(scoped, user_id="carol", session_id="A") == set()


def test_turn_memories_expire_with_clear(scoped: MemoryEngine) -> None:
    assert scoped.clear("alice", turn_id="t1") == 1
    assert "alice turn A/coder/t1" not in _seen(scoped, user_id="alice", session_id="A", agent_id="coder", turn_id="t1")


def test_explicit_scope_needs_its_id(engine: MemoryEngine) -> None:
    with pytest.raises(InvalidInputError, match="needs session_id"):
        engine.add("x", user_id="u", scope="session")
    with pytest.raises(InvalidInputError, match="needs agent_id"):
        engine.add("x", user_id="u", session_id="s", scope="agent")


@pytest.mark.parametrize("brute_force_max", [8192, 0], ids=["exact", "hnsw-filtered"])
def test_recall_with_many_users_in_one_database(
    make_engine: Callable[..., MemoryEngine], brute_force_max: int
) -> None:
    """A user's memory is found even when 99% of the vectors belong to other users."""
    engine = make_engine(brute_force_max=brute_force_max)
    rng = np.random.default_rng(0)
    topics = ["hiking", "chess", "painting", "sailing", "baking", "cycling", "poetry", "gardening", "jazz", "surfing"]
    items = [
        {"content": f"Enjoys {topics[i % 10]} on weekends with friend number {i}", "user_id": f"user{rng.integers(40)}"}
        for i in range(2000)
    ]
    engine.add_batch(items)
    target = engine.add("Keeps bees on the roof of the apartment", user_id="needle")
    engine.add("Enjoys chess on weekends", user_id="needle")
    hits = engine.search("beekeeping hobby", user_id="needle", top_k=1)
    assert [h.id for h in hits] == [target.id]
    # a crowded user: still only their own memories come back
    crowd = engine.search("chess on weekends", user_id="user3", top_k=10)
    assert len(crowd) == 10 and all(h.memory.user_id == "user3" for h in crowd)
