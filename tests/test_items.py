"""Key-value items in the engine (``put_item`` and friends), on every backend: versions by key,
revival after a delete, lookup-only items, expiry, namespace prefixes, and stores made before
the item columns existed (upgraded in place)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stores import Store  # tests/ is on sys.path

from headroom_integrations import MemoryEngine, MemoryFilter
from headroom_integrations.errors import InvalidInputError
from headroom_integrations.memory.backends.schema import SCHEMA_VERSION
from headroom_integrations.memory.namespaces import decode_namespace, encode_namespace, prefix_bounds

NS = ("memories", "alice")


def test_putting_a_key_again_makes_a_new_version_and_keeps_the_old_one(engine: MemoryEngine) -> None:
    first = engine.put_item("alice", NS, "job", "Works at Google", metadata={"value": {"job": "Google"}})
    second = engine.put_item("alice", NS, "job", "Works at Anthropic", metadata={"value": {"job": "Anthropic"}})
    current = engine.get_item("alice", NS, "job")
    assert current is not None and (current.id, current.content) == (second.id, "Works at Anthropic")
    assert (current.namespace, current.key, current.metadata) == (NS, "job", {"value": {"job": "Anthropic"}})
    chain = engine.get_history(second.id)
    assert [m.content for m in chain] == ["Works at Google", "Works at Anthropic"]
    assert chain[0].superseded_by == second.id and chain[1].supersedes == first.id
    assert second.created_at == first.created_at  # the item's creation; the version's time is valid_from
    assert second.valid_from is not None and second.valid_from >= first.valid_from  # type: ignore[operator]
    at_first = engine.query(MemoryFilter(user_id="alice", namespace=NS, key="job", valid_at=first.valid_from))
    assert [m.content for m in at_first] == ["Works at Google"]  # point in time
    assert [h.content for h in engine.search("where does alice work?", user_id="alice")] == ["Works at Anthropic"]


def test_a_deleted_item_put_again_continues_its_history(engine: MemoryEngine) -> None:
    engine.put_item("alice", NS, "pet", "Has a cat")
    engine.put_item("alice", NS, "pet", "Has a dog")
    assert engine.delete_item("alice", NS, "pet") and engine.get_item("alice", NS, "pet") is None
    assert not engine.delete_item("alice", NS, "pet")
    revived = engine.put_item("alice", NS, "pet", "Has two dogs")
    assert [m.content for m in engine.get_history(revived.id)] == ["Has a cat", "Has two dogs"]
    assert engine.get_item("alice", NS, "pet").content == "Has two dogs"  # type: ignore[union-attr]


def test_items_are_per_user_namespace_and_key(engine: MemoryEngine) -> None:
    engine.put_item("alice", NS, "k", "Alice's value")
    engine.put_item("bob", NS, "k", "Bob's value")
    engine.put_item("alice", (*NS, "deeper"), "k", "Deeper value")
    engine.put_item("alice", NS, "other", "Other key")
    assert engine.get_item("alice", NS, "k").content == "Alice's value"  # type: ignore[union-attr]
    assert engine.get_item("bob", NS, "k").content == "Bob's value"  # type: ignore[union-attr]
    under = engine.query(MemoryFilter(namespace_prefix=NS))
    assert sorted(m.content for m in under) == ["Alice's value", "Bob's value", "Deeper value", "Other key"]
    exact = engine.query(MemoryFilter(user_id="alice", namespace=NS))
    assert sorted(m.content for m in exact) == ["Alice's value", "Other key"]
    assert engine.query(MemoryFilter(namespace_prefix=("memories", "ali"))) == []  # labels, not characters
    engine.add("A plain memory", user_id="alice")
    assert len(engine.query(MemoryFilter(namespace_prefix=()))) == 4  # () = every item, no plain memory


def test_a_lookup_only_item_is_never_embedded_nor_found(engine: MemoryEngine) -> None:
    stored = engine.put_item("alice", NS, "raw", "Secret plans for the garden", searchable=False)
    engine.put_item("alice", NS, "seen", "Plans for the garden")
    engine.flush()
    assert engine.backend.without_embedding() == [] and engine.backend.refresh() == []
    assert [h.content for h in engine.search("garden plans", user_id="alice", top_k=5)] == ["Plans for the garden"]
    assert engine.get_item("alice", NS, "raw").searchable is False  # type: ignore[union-attr]
    assert engine.backend.rows([]) == {}
    newer = engine.supersede(stored.id, "Other secret plans")
    assert newer.searchable is False and engine.backend.without_embedding() == []
    engine.update(newer.id, content="Edited secret plans")
    assert engine.backend.without_embedding() == []
    assert [h.content for h in engine.search("secret plans", user_id="alice", top_k=5)] == ["Plans for the garden"]


def test_expiry_filters_and_sweeping(engine: MemoryEngine) -> None:
    now = datetime.now(timezone.utc)
    soon = engine.put_item("alice", NS, "soon", "Expires soon", expires_at=now + timedelta(minutes=5))
    engine.put_item("alice", NS, "soon", "Expires soon, second version", expires_at=now + timedelta(minutes=5))
    engine.put_item("alice", NS, "never", "Never expires")
    later = now + timedelta(minutes=10)
    assert [m.key for m in engine.query(MemoryFilter(namespace_prefix=NS, live_at=later))] == ["never"]
    assert [m.key for m in engine.query(MemoryFilter(namespace_prefix=NS, expired_at=later))] == ["soon"]
    assert engine.get_item("alice", NS, "soon") is not None
    current = engine.get_item("alice", NS, "soon")
    engine.set_expiry({current.id: now - timedelta(seconds=1)})  # type: ignore[union-attr]
    assert engine.get_item("alice", NS, "soon") is None  # expired: no longer returned
    assert engine.sweep_expired() == 1 and engine.sweep_expired() == 0
    with pytest.raises(Exception, match=soon.id):
        engine.get_history(soon.id)  # swept with its whole history
    assert engine.get_item("alice", NS, "never") is not None


@pytest.mark.parametrize(("call", "message"), [
    (lambda e: e.put_item("u", (), "k", "x"), "namespace must not be empty"),
    (lambda e: e.put_item("u", "memories", "k", "x"), "tuple of strings"),
    (lambda e: e.put_item("u", ("a", ""), "k", "x"), "non-empty strings"),
    (lambda e: e.put_item("u", ("a", "b\x00"), "k", "x"), "without NUL"),
    (lambda e: e.put_item("u", ("a",), 3, "x"), "key must be a string"),
    (lambda e: e.put_item("u", ("a",), "k", ""), "content must not be empty"),
    (lambda e: e.put_item("u", ("a",), "k", "x", searchable="no"), "searchable must be True or False"),
    (lambda e: e.put_item("u", ("a",), "k", "x", expires_at="soon"), "expires_at must be"),
    (lambda e: e.set_expiry(["id"]), "expiries must be a mapping"),
    (lambda e: e.query(MemoryFilter(namespace_prefix=[1])), "non-empty strings"),
])
def test_bad_item_input_is_refused_and_stores_nothing(engine: MemoryEngine, call: Callable[[MemoryEngine], object],
                                                     message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        call(engine)
    assert engine.query(MemoryFilter(include_superseded=True)) == []


labels = st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=4)
                  | st.sampled_from(["a", "b", "\x1f", "\\", "\\s", "a\x1f", "a\\"]), min_size=0, max_size=4)


@given(namespace=labels.filter(bool), prefix=labels)
@settings(max_examples=400, deadline=None)
def test_namespace_encoding_round_trips_and_prefix_ranges_are_exact(namespace: list[str], prefix: list[str]) -> None:
    stored = encode_namespace(namespace)
    assert decode_namespace(stored) == tuple(namespace)
    bounds = prefix_bounds(prefix)
    inside = True if bounds is None else bounds[0] <= stored < bounds[1]
    assert inside == (tuple(namespace[: len(prefix)]) == tuple(prefix))  # the range holds exactly the prefix's


@given(namespaces=st.lists(labels.filter(bool), min_size=1, max_size=6), prefix=labels)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_prefix_queries_match_the_labels_on_the_database(engine: MemoryEngine, namespaces: list[list[str]],
                                                         prefix: list[str]) -> None:
    engine.clear("fuzz")
    for i, namespace in enumerate(namespaces):
        engine.put_item("fuzz", namespace, str(i), f"value {i}", searchable=False)
    found = {m.key for m in engine.query(MemoryFilter(user_id="fuzz", namespace_prefix=prefix))}
    assert found == {str(i) for i, ns in enumerate(namespaces) if tuple(ns[: len(prefix)]) == tuple(prefix)}


def _downgrade(engine: MemoryEngine, store: Store) -> None:
    """Make the store look like one written before the item columns existed (schema 1)."""
    with engine.backend.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.exec_driver_sql("DROP INDEX ix_memories_item")
        conn.exec_driver_sql("DROP INDEX ix_memories_user_observed")
        for column in ("namespace", "item_key", "expires_at", "searchable", "observed_at"):
            conn.exec_driver_sql(f"ALTER TABLE memories DROP COLUMN {column}")
        conn.exec_driver_sql("UPDATE meta SET value = '1' WHERE key = 'schema_version'")


def test_a_store_made_before_items_is_upgraded_in_place(make_engine: Callable[..., MemoryEngine], store: Store) -> None:
    engine = make_engine()
    old = engine.add("Keeps bees", user_id="alice")
    _downgrade(engine, store)
    engine.close()  # the last engine on the store releases it: the next one opens it anew
    engine = make_engine()
    assert engine.backend.meta()["schema_version"] == SCHEMA_VERSION
    assert engine.get(old.id) == old  # nothing lost
    assert [h.content for h in engine.search("bees", user_id="alice")] == ["Keeps bees"]
    engine.put_item("alice", NS, "k", "Keeps wasps")
    assert engine.get_item("alice", NS, "k").content == "Keeps wasps"  # type: ignore[union-attr]


@pytest.mark.sqlite_only
def test_a_read_only_store_made_before_items_says_how_to_upgrade(make_engine: Callable[..., MemoryEngine],
                                                                 store: Store) -> None:
    import multiprocessing
    import os

    import workers

    engine = make_engine()
    engine.add("Keeps bees", user_id="alice")
    _downgrade(engine, store)
    engine.close()
    os.chmod(store.spec, 0o444)
    try:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            message = pool.apply(workers.open_error, (store.spec,))
    finally:
        os.chmod(store.spec, 0o644)
    assert message.startswith("StorageError") and "read-only: open it writable once to upgrade" in message, message
    assert make_engine().search("bees", user_id="alice")  # writable again: upgraded, nothing lost


async def test_the_async_face_has_the_item_methods(store: Store) -> None:
    from headroom_integrations import HierarchicalMemory

    async with await HierarchicalMemory.create(store.config()) as memory:
        await memory.put_item("alice", NS, "city", "Lives in Porto")
        await memory.put_item("alice", NS, "city", "Lives in Lisbon")
        found = await memory.get_item("alice", NS, "city")
        assert found is not None and found.content == "Lives in Lisbon"
        await memory.set_expiry({found.id: datetime.now(timezone.utc) - timedelta(seconds=1)})
        assert await memory.get_item("alice", NS, "city") is None
        assert await memory.sweep_expired() == 1
        assert not await memory.delete_item("alice", NS, "city")
