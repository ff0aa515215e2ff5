"""Choosing and opening a backend: URLs, schema versions, pooling, lost connections, migration.

The engine's behaviour itself is the contract suite (every test taking ``store``/``engine`` runs on
both backends); this module covers what is about the storage seam: how a store is named and
opened, what happens when the server is gone, and copying a store from one backend to the other.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy
from stores import Store, pg_schema_url

from headroom_integrations import (
    EmbedderMismatchError,
    InvalidInputError,
    MemoryConfig,
    MemoryEngine,
    MemoryFilter,
    StorageError,
)
from headroom_integrations.cli import main as cli
from headroom_integrations.memory.backends import open_backend
from headroom_integrations.memory.migration import migrate
from headroom_integrations.memory.validation import new_memory

FACTS = [
    "Prefers Go for performance-critical code", "Moved to Lisbon in 2023", "Moved to Lisbon in 2024",
    "Is allergic to peanuts", "Is not allergic to peanuts", "Has a greyhound named Pixel",
    "Works at Anthropic", "Plays chess on Sundays", "Keeps bees on the roof", "Dentist on 2024-03-05",
]
QUERIES = ["which language for fast code?", "where does the user live", "allergies", "pets", "weekend hobby"]


@pytest.mark.parametrize(
    ("url", "backend", "driver_url"),
    [
        ("postgresql://bob:pw@db:5432/app", "postgres", "postgresql+psycopg://bob:pw@db:5432/app"),
        ("postgres://bob@db/app", "postgres", "postgresql+psycopg://bob@db/app"),
        ("postgresql+psycopg://bob@/app?host=/tmp/x", "postgres", "postgresql+psycopg://bob@/app?host=/tmp/x"),
        ("sqlite:///memory.db", "sqlite", None),
        ("sqlite://", "sqlite", None),
    ],
)
def test_db_url_forms(url: str, backend: str, driver_url: str | None) -> None:
    config = MemoryConfig(db_url=url)
    assert (config.backend, config.postgres_url) == (backend, driver_url)
    if url == "sqlite:///memory.db":
        assert config.resolved_db_path == Path("memory.db").resolve()
    if url == "sqlite://":
        assert config.in_memory


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"db_url": "mysql://u@h/db"}, "unknown scheme 'mysql'"),
        ({"db_url": "memory.db"}, "unknown scheme"),
        ({"db_url": ""}, "db_url must be"),
        ({"db_url": 5}, "db_url must be"),
        ({"db_url": "postgresql://h/db", "db_path": "x.db"}, "not both"),
    ],
)
def test_bad_db_urls_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        MemoryConfig(**options)  # type: ignore[arg-type]


def test_unreachable_server_is_named_with_its_password_masked(tmp_path: Path) -> None:
    for url in (f"postgresql://bob:s3cret@/app?host={tmp_path}", "postgresql://bob:s3cret@127.0.0.1:9/app"):
        with pytest.raises(StorageError) as caught:
            MemoryEngine(MemoryConfig(db_url=url))
        message = str(caught.value)
        assert "s3cret" not in message and "bob:***@" in message
        assert "is the PostgreSQL server running" in message


def test_engines_on_one_url_share_one_pool_returned_on_close(
    make_engine: Callable[..., MemoryEngine], store: Store
) -> None:
    first, second = make_engine(), make_engine()
    assert first.backend is second.backend
    first.add("Likes tea", user_id="u")
    first.close()
    assert second.search("tea", user_id="u")[0].content == "Likes tea"
    backend = second.backend
    second.close()
    if store.kind == "postgres":
        assert backend.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_every_read_path_works_on_connections_the_search_used(engine: MemoryEngine) -> None:
    """The search path reads vectors in binary on the pooled connections; every other read on the
    same pool (migration's dump, edits) must still get them right."""
    stored = engine.add_batch(FACTS, user_id="alice")
    for query in QUERIES:
        assert engine.search(query, user_id="alice")
    dumped = {m.id: vector for batch in engine.backend.dump() for m, vector in batch}
    expected = engine.embedder.embed(FACTS)
    for memory, vector in zip(stored, expected):
        assert dumped[memory.id] == pytest.approx(vector, abs=1e-6)
    assert engine.update(stored[0].id, importance=0.9).importance == 0.9
    assert engine.search(FACTS[0], user_id="alice")[0].memory.importance == 0.9


def test_a_newer_schema_is_refused(make_engine: Callable[..., MemoryEngine], store: Store) -> None:
    engine = make_engine()
    engine.add("Likes tea", user_id="u")
    engine.backend.set_meta("schema_version", "99")
    engine.close()
    with pytest.raises(StorageError, match="schema version 99, newer than"):
        MemoryEngine(store.config())


@pytest.mark.postgres_only
def test_server_going_away_gives_a_clear_error_and_the_next_call_reconnects(
    engine: MemoryEngine, pg_server_url: str
) -> None:
    engine.add("Likes tea", user_id="u")
    for call in (lambda: engine.stats("u"), lambda: engine.search("tea", user_id="u")):
        engine.search("tea", user_id="u")  # connections are pooled now
        assert _terminate_clients(pg_server_url)
        with pytest.raises(StorageError) as caught:
            call()
        assert engine.backend.location in str(caught.value)
        assert engine.stats("u")["total"] == 1  # a new connection
        assert engine.search("tea", user_id="u")[0].content == "Likes tea"


def _terminate_clients(server_url: str) -> int:
    """Disconnect every client of the server (as a restart or a failover does); how many."""
    admin = sqlalchemy.create_engine(server_url.replace("postgresql://", "postgresql+psycopg://", 1),
                                     poolclass=sqlalchemy.NullPool)
    with admin.begin() as conn:
        killed = conn.exec_driver_sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
        ).scalar()
    admin.dispose()
    return int(killed or 0)


@pytest.mark.postgres_only
def test_database_without_the_vector_extension(engine: MemoryEngine, pg_server_url: str) -> None:
    """A user who may not create the extension is told which statement its owner must run."""
    admin = sqlalchemy.create_engine(pg_server_url.replace("postgresql://", "postgresql+psycopg://", 1),
                                     isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql("DROP DATABASE IF EXISTS noext")
        conn.exec_driver_sql("DROP ROLE IF EXISTS plain")
        conn.exec_driver_sql("CREATE ROLE plain LOGIN")
        conn.exec_driver_sql("CREATE DATABASE noext OWNER plain")
    try:
        url = sqlalchemy.make_url(pg_server_url).set(username="plain", database="noext").render_as_string(False)
        with pytest.raises(StorageError, match="CREATE EXTENSION vector"):
            MemoryEngine(MemoryConfig(db_url=url))
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql("DROP DATABASE noext")
            conn.exec_driver_sql("DROP ROLE plain")
        admin.dispose()


def _snapshot(engine: MemoryEngine) -> list[dict[str, object]]:
    """Every memory (all versions) of the store as plain values, in id order."""
    rows = []
    for user in ("alice", "bob"):
        for m in engine.query(MemoryFilter(user_id=user, include_superseded=True)):
            rows.append({**m.__dict__, "scope": m.scope.value, "category": m.category.value})
    return sorted(rows, key=lambda r: str(r["id"]))


def _fill(engine: MemoryEngine) -> None:
    engine.add_batch([{"content": fact, "metadata": {"n": i}} for i, fact in enumerate(FACTS)], user_id="alice")
    engine.add("Prefers tea", user_id="bob", session_id="s1", scope="session")
    old = engine.add("Works at Google", user_id="bob")
    new = engine.supersede(old.id, "Works at Anthropic")
    engine.supersede(new.id, "Works at a startup")
    engine.append_messages("bob", "s1", [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    engine.put_item("alice", ("memories", "alice"), "drink", "Drinks tea", metadata={"value": {"v": 1}})
    engine.put_item("alice", ("memories", "alice"), "drink", "Drinks coffee", expires_at="2099-01-01")
    engine.put_item("bob", ("memories", "bob", "raw"), "blob", '{"x": 1}', searchable=False)


def _searches(engine: MemoryEngine) -> list[list[tuple[str, float]]]:
    return [[(h.id, round(h.score, 4)) for h in engine.search(q, user_id=user, session_id="s1", top_k=5)]
            for q in QUERIES for user in ("alice", "bob")]


@pytest.mark.parametrize("direction", ["sqlite-to-postgres", "postgres-to-sqlite"])
def test_migrate_round_trips_a_store(direction: str, tmp_path: Path, pg_server_url: str) -> None:
    admin = sqlalchemy.create_engine(pg_server_url.replace("postgresql://", "postgresql+psycopg://", 1),
                                     poolclass=sqlalchemy.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA m_{direction[0]}")
    admin.dispose()
    stores = [str(tmp_path / "memory.db"), pg_schema_url(pg_server_url, f"m_{direction[0]}")]
    source, target = stores if direction == "sqlite-to-postgres" else stores[::-1]
    with MemoryEngine(_config(source)) as engine:
        _fill(engine)
        before, searched = _snapshot(engine), _searches(engine)
    report = migrate(source, target, batch_size=4)
    assert (report.memories, report.skipped, report.messages) == (len(before), 0, 2)
    with MemoryEngine(_config(target)) as engine:
        assert _snapshot(engine) == before  # ids, chains, metadata, timestamps
        assert _searches(engine) == searched  # the same hits in the same order, with the same vectors
        assert [r.content for r in engine.get_messages("bob", "s1")] == ["hi", "hello"]
        engine.append_messages("bob", "s1", [{"role": "user", "content": "later"}])
    again = migrate(source, target)
    assert (again.memories, again.skipped, again.messages) == (0, len(before), 0)  # nothing twice
    with MemoryEngine(_config(target)) as engine:
        assert len(engine.get_messages("bob", "s1")) == 3


def _config(spec: str) -> MemoryConfig:
    return MemoryConfig(db_url=spec) if "://" in spec else MemoryConfig(db_path=spec)


def test_migrate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str], store: Store) -> None:
    source = tmp_path / "source.db"
    with MemoryEngine(MemoryConfig(db_path=source)) as engine:
        engine.add_batch(FACTS, user_id="alice")
    assert cli(["migrate", "--from", str(source), "--to", store.spec if store.kind == "postgres"
                else str(tmp_path / "copy.db"), "--batch-size", "3"]) == 0
    out = capsys.readouterr()
    assert f"copied {len(FACTS)} memories (0 already there) and 0 messages" in out.out
    assert f"{len(FACTS):,}/{len(FACTS):,} memories" in out.err  # the progress bar's last state
    assert "***" in out.out or store.kind == "sqlite"
    assert cli(["migrate", "--from", str(tmp_path / "missing.db"), "--to", str(tmp_path / "x.db")]) == 2
    assert "no memory store" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()


def test_migrate_refuses_a_target_with_another_embedder(tmp_path: Path) -> None:
    source, target = tmp_path / "a.db", tmp_path / "b.db"
    with MemoryEngine(MemoryConfig(db_path=source)) as engine:
        engine.add("Likes tea", user_id="u")
        dimension = engine.embedder.dimension
    other = open_backend(MemoryConfig(db_path=target), "other/model", dimension)
    other.load([(new_memory(100, "Has a cat", "u"), None)])
    other.close()
    with pytest.raises(EmbedderMismatchError, match="other/model"):
        migrate(source, target)


def test_extension_in_a_schema_off_the_search_path_is_named(pg_server_url: str) -> None:
    admin = sqlalchemy.create_engine(pg_server_url.replace("postgresql://", "postgresql+psycopg://", 1),
                                     poolclass=sqlalchemy.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS lonely")
    admin.dispose()
    url = pg_schema_url(pg_server_url, "lonely").replace("%2Cpublic", "")  # pgvector lives in public
    with pytest.raises(StorageError, match="installed in schema 'public', which is not on this connection's"):
        MemoryEngine(MemoryConfig(db_url=url))


# -- batches written chunk by chunk while the next chunk is embedded (PostgreSQL's write_chunk) ----------


def _batch(n: int) -> list[str]:
    return [f"Batch fact number {i}: the {i}th of {n} things to keep" for i in range(n)]


def test_a_batch_larger_than_a_write_chunk_is_stored_whole_with_its_vectors(engine: MemoryEngine) -> None:
    texts = _batch(101)  # 32-row chunks on PostgreSQL: four statements, the last one short
    stored = engine.add_batch(texts, user_id="u")
    assert [m.content for m in stored] == texts
    rows = engine.backend.rows(list(range(1, 102)))
    expected = engine.embedder.embed(texts)
    by_content = {row.memory.content: row.vector for row in rows.values()}
    assert len(by_content) == 101
    for position, text in enumerate(texts):  # each row got its own vector (batch padding moves it a little)
        similarities = expected @ by_content[text]
        assert int(similarities.argmax()) == position and similarities[position] > 0.98


def test_a_batch_whose_embedding_fails_midway_stores_nothing(engine: MemoryEngine,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real = engine.embedder.embed

    def flaky(texts: list[str]) -> object:  # fails on the texts of the batch's middle (PostgreSQL: its 2nd chunk)
        if any("number 40:" in text for text in texts):
            raise RuntimeError("embedding service went away")
        return real(texts)

    monkeypatch.setattr(engine.embedder, "embed", flaky)
    with pytest.raises(RuntimeError, match="went away"):
        engine.add_batch(_batch(80), user_id="u")
    monkeypatch.setattr(engine.embedder, "embed", real)
    assert engine.stats("u")["total"] == 0  # one transaction: all or nothing
    assert len(engine.add_batch(_batch(3), user_id="u")) == 3  # and the store still takes writes


def test_dedupe_spans_the_chunks_of_a_batch(engine: MemoryEngine) -> None:
    texts = _batch(70)
    texts[65] = texts[2]  # a repeat in a later chunk of the same batch
    stored = engine.add_batch(texts, user_id="u", dedupe=True)
    assert stored[65].id == stored[2].id
    assert engine.stats("u")["total"] == 69


@pytest.mark.postgres_only
def test_an_index_added_since_a_store_was_created_is_built_when_it_is_opened(
    make_engine: Callable[..., MemoryEngine], store: Store
) -> None:
    engine = make_engine()
    engine.add("Keeps bees", user_id="u")
    with engine.backend.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.exec_driver_sql("DROP INDEX ix_memories_user_pk")  # as a store made before it existed
    engine.close()
    reopened = make_engine()
    with reopened.backend.engine.connect() as conn:  # type: ignore[attr-defined]
        names = {row[0] for row in conn.exec_driver_sql(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'memories' AND schemaname = current_schema()")}
    assert "ix_memories_user_pk" in names
    assert [h.content for h in reopened.search("bees", user_id="u")] == ["Keeps bees"]
