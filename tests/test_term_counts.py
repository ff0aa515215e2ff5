"""The SQLite store's term counts (``memories_terms``): kept by triggers in the same transaction
as every write, equal to a recount (and to FTS5's own counts) after any sequence of writes, made
once for a store written before them, and not needed by an older store opened read-only."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headroom_integrations import MemoryConfig, MemoryEngine
from headroom_integrations.memory.text_query import index_text

pytestmark = pytest.mark.sqlite_only

WORDS = ["hike", "hiking", "Tokyo", "tokyo", "café", "cafe", "foo_bar", "42", "1.5", "don't", '"quoted"', "back\\slash",
         "NEAR", "AND", "*", "naïve", "straße", "日本", "x", "the", "fjord", "Alice", "alice's", "🎉"]
texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map(" ".join)


def kept_counts(engine: MemoryEngine) -> dict[str, int]:
    with engine.backend.connect() as conn:  # type: ignore[attr-defined]
        return dict(conn.exec_driver_sql("SELECT term, docs FROM memories_terms").all())


def recount(engine: MemoryEngine) -> dict[str, int]:
    """Each distinct term of every stored row's indexed text, counted in Python."""
    with engine.backend.connect() as conn:  # type: ignore[attr-defined]
        rows = conn.exec_driver_sql("SELECT search_text FROM memories").scalars().all()
    return dict(Counter(term for text in rows for term in set(text.split())))


def fts_counts(engine: MemoryEngine) -> dict[str, int]:
    with engine.backend.connect() as conn:  # type: ignore[attr-defined]
        return dict(conn.exec_driver_sql("SELECT term, doc FROM memories_fts_vocab").all())


operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(texts, min_size=1, max_size=4), st.sampled_from(["u1", "u2"])),
        st.tuples(st.just("update"), st.integers(0, 50), texts),
        st.tuples(st.just("supersede"), st.integers(0, 50), texts),
        st.tuples(st.just("delete"), st.integers(0, 50), st.booleans()),
        st.tuples(st.just("clear"), st.sampled_from(["u1", "u2"])),
        st.tuples(st.just("purge"), st.sampled_from(["u1", "u2"])),
    ),
    min_size=1, max_size=12,
)


@given(steps=operations)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_counts_equal_a_recount_after_any_writes(make_engine: Callable[..., MemoryEngine], tmp_path: Path,
                                                 steps: list[tuple]) -> None:  # type: ignore[type-arg]
    engine = make_engine(db_path=str(tmp_path / f"{os.urandom(6).hex()}.db"))
    ids: list[str] = []
    for step in steps:
        kind, *args = step
        live = [m.id for m in engine.query()]
        target = live[args[0] % len(live)] if live and kind in ("update", "supersede", "delete") else None
        if kind == "add":
            ids += [m.id for m in engine.add_batch(args[0], user_id=args[1], dedupe=False)]
        elif kind == "update" and target:
            engine.update(target, content=args[1])
        elif kind == "supersede" and target:
            engine.supersede(target, args[1])
        elif kind == "delete" and target:
            engine.delete(target, all_versions=args[1])
        elif kind == "clear":
            engine.clear(args[0])
        elif kind == "purge":
            engine.purge(args[0])
        assert kept_counts(engine) == recount(engine), step
    plain = {t: n for t, n in recount(engine).items() if "_" not in t}  # FTS5 splits "foo_bar" in two
    assert plain == {t: n for t, n in fts_counts(engine).items() if t in plain or t not in ("foo", "bar")}


def test_searches_read_no_posting_list(make_engine: Callable[..., MemoryEngine], tmp_path: Path) -> None:
    """Document frequencies come from the counts table: FTS5's vocabulary (which walks posting
    lists) is never asked on a store that has it."""
    engine = make_engine(db_path=str(tmp_path / "m.db"))
    engine.add_batch([f"Sam went hiking, trip {i}" for i in range(300)] + ["a rare fjord"], user_id="u")
    statements: list[str] = []
    from sqlalchemy import event

    event.listen(engine.backend.engine, "before_cursor_execute",  # type: ignore[attr-defined]
                 lambda conn, cursor, sql, *rest: statements.append(sql))
    hits = engine.search("which fjord did Sam hike to?", user_id="u", top_k=3)
    assert hits[0].memory.content == "a rare fjord"
    assert any("memories_terms" in sql for sql in statements)
    assert not any("memories_fts_vocab" in sql for sql in statements)


def _without_counts(path: Path) -> None:
    """Make a store look like one written before the counts table existed."""
    import sqlite3

    with sqlite3.connect(path) as conn:
        for trigger in ("insert", "delete", "update"):
            conn.execute(f"DROP TRIGGER memories_terms_{trigger}")
        conn.execute("DROP TABLE memories_terms")


def test_an_older_store_is_counted_once_when_opened_writable(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with MemoryEngine(MemoryConfig(db_path=str(path))) as engine:
        engine.add_batch(["Sam went hiking in Tokyo", "Sam likes café au lait", "foo_bar and 42"], user_id="u")
        before = kept_counts(engine)
    _without_counts(path)
    with MemoryEngine(MemoryConfig(db_path=str(path))) as engine:
        assert kept_counts(engine) == before == recount(engine)
        engine.add("Sam hiked again", user_id="u")  # the triggers are back
        assert kept_counts(engine)["hike"] == before["hike"] + 1
        assert not any(engine.doctor().values())


def test_an_older_store_opened_read_only_counts_from_the_full_text_index(tmp_path: Path) -> None:
    import multiprocessing

    import workers

    path = tmp_path / "old.db"
    with MemoryEngine(MemoryConfig(db_path=str(path))) as engine:
        engine.add_batch(["Sam went hiking in Tokyo", "Sam likes café au lait"], user_id="u")
    _without_counts(path)
    os.chmod(path, 0o444)
    try:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            found = pool.apply(workers.search_contents, (str(path), "where did Sam hike?", "u"))
    finally:
        os.chmod(path, 0o644)
    assert found[0] == "Sam went hiking in Tokyo"
    with MemoryEngine(MemoryConfig(db_path=str(path))) as engine:
        assert "memories_terms" not in str(engine.doctor())  # nothing was written while read-only
        assert kept_counts(engine) == recount(engine)


def test_a_word_of_an_erased_user_leaves_the_counts(make_engine: Callable[..., MemoryEngine], tmp_path: Path) -> None:
    engine = make_engine(db_path=str(tmp_path / "m.db"))
    engine.add("My secret word is zanzibarite", user_id="gone")
    engine.add("I like zanzibarite too", user_id="stays")
    engine.add("Only I say quixotically", user_id="gone")
    engine.purge("gone")
    kept = kept_counts(engine)
    assert kept["zanzibarit"] == 1 and index_text("quixotically") not in kept
