"""SQL storage of memories (SQLAlchemy Core): the source of truth for content, scopes and validity."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Row,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    true,
    update,
)

from headroom_integrations.errors import EmbedderMismatchError, MemoryAlreadySupersededError, MemoryNotFoundError
from headroom_integrations.memory.models import ChatRecord, Memory, MemoryCategory, MemoryFilter, MemoryScope, utc
from headroom_integrations.memory.schema import chat_messages, counters, memories, meta, metadata_obj, tombstones
from headroom_integrations.memory.sqlite import (
    SNAPSHOT,
    WRITE,
    ChangeProbe,
    checkpoint_truncate,
    create_sqlite_engine,
    document_frequencies,
    fts_optimize,
    fts_rank,
    fts_search,
    fts_totals,
    install_fts,
    memory_rows,
    search_texts,
    storage_errors,
    vectors_by_pk,
)
from headroom_integrations.memory.text_query import (
    FINGERPRINT_VERSION,
    bm25,
    fingerprint,
    idf,
    index_text,
    select_terms,
)

__all__ = ["Changes", "IndexRow", "KeywordQuery", "MemoryStore", "StoredRow", "now_utc"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
_NO_EMBEDDING = [c for c in memories.c if c.name not in ("embedding", "search_text", "fingerprint")]
# Statements on the search path are built once (building one costs more than running it).
_CURRENT_SEQ = select(counters.c.value).where(counters.c.name == "seq")
# Statements of the write path are built once: building one costs SQLAlchemy more (a new object and
# its cache key) than running it does SQLite, about 0.3 ms per statement on a small machine.
_BUMP_SEQ = (
    update(counters).where(counters.c.name == "seq")
    .values(value=counters.c.value + bindparam("count", type_=BigInteger)).returning(counters.c.value)
)
_CURRENT_TWINS = select(*_NO_EMBEDDING).where(
    memories.c.user_id == bindparam("user_id"), memories.c.fingerprint == bindparam("fingerprint"),
    memories.c.valid_to.is_(None),
)
_INSERT = insert(memories).returning(memories.c.pk, sort_by_parameter_order=True)
# Rows by primary key are read with driver SQL (``memory_rows``): see there.
_COLUMNS = [column.name for column in _NO_EMBEDDING]
_COLUMNS_WITH_VECTOR = [*_COLUMNS, "embedding", "fingerprint"]


def now_utc() -> datetime:
    """The current time as naive UTC, the form stored in SQL."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _naive(value: datetime) -> datetime:
    return utc(value).replace(tzinfo=None)


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=timezone.utc)


def row_to_memory(row: Row[Any] | Mapping[str, Any]) -> Memory:
    """Build a :class:`Memory` from a ``memories`` row (or a mapping with its columns)."""
    m = row._mapping if isinstance(row, Row) else row
    return Memory(
        id=m["id"],
        content=m["content"],
        user_id=m["user_id"],
        session_id=m["session_id"],
        agent_id=m["agent_id"],
        turn_id=m["turn_id"],
        scope=MemoryScope(m["scope"]),
        category=MemoryCategory(m["category"]),
        importance=float(m["importance"]),
        metadata=json.loads(m["meta_json"]),
        created_at=_aware(m["created_at"]),  # type: ignore[arg-type]
        updated_at=_aware(m["updated_at"]),
        valid_from=_aware(m["valid_from"]),
        valid_to=_aware(m["valid_to"]),
        supersedes=m["supersedes"],
        superseded_by=m["superseded_by"],
        chain_id=m["chain_id"],
    )


class StoredRow(NamedTuple):
    """A memory as read back for a search: the value, its vector (None when not read or not
    embedded yet) and its fingerprint (None when not read)."""

    memory: Memory
    vector: np.ndarray | None
    fingerprint: str | None


def _stored_row(m: Mapping[str, Any]) -> StoredRow:
    blob = m.get("embedding")
    return StoredRow(row_to_memory(m), None if blob is None else np.frombuffer(blob, dtype=np.float32),
                     m.get("fingerprint"))


@dataclass(frozen=True)
class IndexRow:
    """What the vector index needs to know about one memory (no content)."""

    pk: int
    seq: int
    current: bool
    user_id: str
    scope: str
    session_id: str | None
    agent_id: str | None
    turn_id: str | None
    category: str
    embedding: np.ndarray | None


@dataclass(frozen=True)
class KeywordQuery:
    """The full-text terms a search uses with their IDFs, the divisor that normalises their BM25
    scores and the index's average document length.

    Example:
        >>> KeywordQuery((("alic", 3.1), ("googl", 4.4)), scale=7.5, average_length=6.0).terms
        ['alic', 'googl']
    """

    weights: tuple[tuple[str, float], ...]
    scale: float
    average_length: float

    @property
    def terms(self) -> list[str]:
        """The terms searched."""
        return [term for term, _ in self.weights]


@dataclass(frozen=True)
class Changes:
    """Writes committed after a watermark: rows to (re)index or drop, deleted primary keys and,
    among them, the erased ones (whose vectors must be overwritten, not only dropped)."""

    seq: int
    rows: list[IndexRow]
    deleted: list[int]
    erased: list[int] = field(default_factory=list)


_INDEX_COLUMNS = [
    memories.c.pk, memories.c.seq, memories.c.valid_to, memories.c.user_id, memories.c.scope,
    memories.c.session_id, memories.c.agent_id, memories.c.turn_id, memories.c.category,
]


def _index_row(row: Row[Any], with_embedding: bool) -> IndexRow:
    m = row._mapping
    blob = m["embedding"] if with_embedding else None
    return IndexRow(
        pk=m["pk"], seq=m["seq"], current=m["valid_to"] is None, user_id=m["user_id"], scope=m["scope"],
        session_id=m["session_id"], agent_id=m["agent_id"], turn_id=m["turn_id"], category=m["category"],
        embedding=None if blob is None else np.frombuffer(blob, dtype=np.float32),
    )


class MemoryStore:
    """Blocking, thread-safe access to the memory tables of one database.

    Example:
        >>> store = MemoryStore(None)  # an in-memory database
        >>> store.check_embedder("test/model", 8)
        >>> store.stats(None)["total"]
        0
    """

    def __init__(self, path: Path | None, busy_timeout_ms: int = 10_000) -> None:
        self.path = path
        self._df_cache: dict[str, tuple[int, int]] = {}  # term -> (document frequency, seq read at)
        self._totals = (0, 0, -(10**9))  # (rows, tokens in the full-text index, seq read at)
        self._rows: OrderedDict[int, tuple[int, StoredRow]] = OrderedDict()
        self._rows_lock = threading.Lock()
        with storage_errors(path, "open"):
            self.engine = create_sqlite_engine(path, busy_timeout_ms)
            try:
                self._probe = ChangeProbe(path)
                self._create()
            except BaseException:
                self.engine.dispose()
                raise

    def _create(self) -> None:
        """Create the tables on first use; bring older stores' derived columns up to date."""
        with self.read() as conn:  # a store that is complete needs no write (a read-only file opens)
            tables = set(conn.exec_driver_sql("SELECT name FROM sqlite_master").scalars())
            stored = dict(conn.execute(select(meta.c.key, meta.c.value)).all()) if "meta" in tables else {}
            scrub = "scrub" in {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(memory_tombstones)")}
        complete = {t.name for t in metadata_obj.sorted_tables} | {"memories_fts"} <= tables and scrub
        if complete and stored.get("fingerprint_version") == FINGERPRINT_VERSION:
            return
        if complete and self.path is not None and not os.access(self.path, os.W_OK):
            logger.warning("%s is read-only: its duplicate fingerprints stay those of an older version", self.path)
            return
        with self.write() as conn:
            metadata_obj.create_all(conn)
            install_fts(conn)
            columns = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(memory_tombstones)")}
            if "scrub" not in columns:  # a store written by an earlier version
                conn.exec_driver_sql("ALTER TABLE memory_tombstones ADD COLUMN scrub INTEGER NOT NULL DEFAULT 0")
            if conn.execute(select(counters.c.value).where(counters.c.name == "seq")).first() is None:
                conn.execute(insert(counters).values(name="seq", value=0))
            if conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first() is None:
                conn.execute(insert(meta).values(key="schema_version", value=SCHEMA_VERSION))
            self._refingerprint(conn)

    @staticmethod
    def _refingerprint(conn: Connection) -> None:
        """Recompute every stored fingerprint when the fingerprint function changed (older stores)."""
        found = conn.execute(select(meta.c.value).where(meta.c.key == "fingerprint_version")).scalar()
        if found == FINGERPRINT_VERSION:
            return
        last = 0
        while True:
            rows = conn.execute(
                select(memories.c.pk, memories.c.content)
                .where(memories.c.pk > last).order_by(memories.c.pk).limit(5000)
            ).all()
            if not rows:
                break
            last = rows[-1][0]
            conn.execute(
                update(memories).where(memories.c.pk == bindparam("row_pk")).values(fingerprint=bindparam("print")),
                [{"row_pk": pk, "print": fingerprint(content)} for pk, content in rows],
            )
        conn.execute(delete(meta).where(meta.c.key == "fingerprint_version"))
        conn.execute(insert(meta).values(key="fingerprint_version", value=FINGERPRINT_VERSION))

    # -- transactions -------------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (takes the database write lock at once)."""
        with storage_errors(self.path, "write"), self.engine.connect() as conn:
            conn.execution_options(**WRITE)
            with conn.begin():
                yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction (a consistent snapshot)."""
        with storage_errors(self.path, "read"), self.engine.connect() as conn:
            conn.execution_options(**SNAPSHOT)
            with conn.begin():
                yield conn

    @contextmanager
    def connect(self, conn: Connection | None = None) -> Iterator[Connection]:
        """A connection for single-statement reads (reuses ``conn`` when given)."""
        if conn is not None:
            yield conn
            return
        with storage_errors(self.path, "read"), self.engine.connect() as fresh:
            yield fresh

    @staticmethod
    def _bump_seq(conn: Connection, count: int = 1) -> int:
        """Reserve ``count`` change numbers; return the last one."""
        return int(conn.execute(_BUMP_SEQ, {"count": count}).scalar_one())

    def maybe_changed(self) -> bool:
        """Cheap test: False only if no connection committed since the previous call."""
        with storage_errors(self.path, "read"):
            return self._probe.changed()

    def current_seq(self, conn: Connection | None = None) -> int:
        """The number of the last committed change."""
        with self.connect(conn) as c:
            return int(c.execute(_CURRENT_SEQ).scalar_one())

    # -- embedder identity -----------------------------------------------------------------------

    def check_embedder(self, name: str, dimension: int) -> None:
        """Record the embedder on first use; refuse another embedder afterwards.

        Raises:
            EmbedderMismatchError: the database holds vectors of another embedder or dimension.
        """
        with self.write() as conn:
            stored = dict(conn.execute(select(meta.c.key, meta.c.value)).all())
            old_name, old_dim = stored.get("embedder_name"), stored.get("embedder_dimension")
            if old_name == name and old_dim == str(dimension):
                return
            has_rows = conn.execute(select(memories.c.pk).limit(1)).first() is not None
            if old_name is not None and has_rows:
                raise EmbedderMismatchError(
                    f"database {self.path or ':memory:'} was written with embedder {old_name!r} "
                    f"({old_dim} dimensions) but this configuration uses {name!r} ({dimension} dimensions); "
                    "open it with the same embedder or use another db_path"
                )
            for key, value in (("embedder_name", name), ("embedder_dimension", str(dimension))):
                conn.execute(delete(meta).where(meta.c.key == key))
                conn.execute(insert(meta).values(key=key, value=value))

    # -- writes ---------------------------------------------------------------------------------

    def insert(
        self, rows: list[dict[str, Any]], same_as: Callable[[dict[str, Any], Memory], bool] | None = None
    ) -> list[tuple[int, int] | Memory]:
        """Insert memory rows in one transaction.

        Returns, per row, its (primary key, seq), or — when ``same_as`` is given and says an
        existing current memory with the same fingerprint is the same memory — that memory
        instead of inserting a duplicate (rows repeated within the batch count too).
        """
        if not rows:
            return []
        for row in rows:
            row["search_text"] = index_text(row["content"])
            row["fingerprint"] = fingerprint(row["content"])
        with self.write() as conn:
            outcome: list[tuple[int, int] | Memory | None] = [None] * len(rows)
            fresh = list(range(len(rows)))
            if same_as is not None:
                fresh = []
                seen: list[Memory] = []
                for position, row in enumerate(rows):
                    twin = self._twin(conn, row, same_as, seen)
                    if twin is None:
                        fresh.append(position)
                        seen.append(row_to_memory({**row, "valid_to": None, "superseded_by": None}))
                    else:
                        outcome[position] = twin
            if fresh:
                last = self._bump_seq(conn, len(fresh))
                for offset, position in enumerate(fresh):
                    rows[position]["seq"] = last - len(fresh) + 1 + offset
                pks = [r[0] for r in conn.execute(_INSERT, [rows[p] for p in fresh])]
                for position, pk in zip(fresh, pks):
                    outcome[position] = (pk, rows[position]["seq"])
        return [item for item in outcome if item is not None]

    @staticmethod
    def _twin(
        conn: Connection, row: dict[str, Any], same_as: Callable[[dict[str, Any], Memory], bool], seen: list[Memory]
    ) -> Memory | None:
        for memory in seen:
            if memory.user_id == row["user_id"] and same_as(row, memory):
                return memory
        found = conn.execute(_CURRENT_TWINS, {"user_id": row["user_id"], "fingerprint": row["fingerprint"]}).all()
        for candidate in found:
            memory = row_to_memory(candidate)
            if same_as(row, memory):
                return memory
        return None

    def set_embeddings(self, vectors: dict[int, bytes]) -> list[tuple[IndexRow, int]]:
        """Store vectors computed after the fact for rows that had none; return the rows now
        ready for the vector index (with their new change numbers)."""
        if not vectors:
            return []
        ready: list[tuple[IndexRow, int]] = []
        with self.write() as conn:
            for pk, blob in vectors.items():
                seq = self._bump_seq(conn)
                row = conn.execute(
                    update(memories).where(memories.c.pk == pk, memories.c.embedding.is_(None))
                    .values(embedding=blob, seq=seq).returning(*_INDEX_COLUMNS, memories.c.embedding)
                ).first()
                if row is not None:
                    ready.append((_index_row(row, True), seq))
        return ready

    def index_rows_of(self, vectors: Mapping[int, np.ndarray]) -> list[IndexRow]:
        """Index rows of the given memories with the given vectors (not stored), for the index alone."""
        if not vectors:
            return []
        with self.connect() as conn:
            rows = conn.execute(select(*_INDEX_COLUMNS).where(memories.c.pk.in_(list(vectors)))).all()
        return [replace(_index_row(r, False), embedding=vectors[r.pk]) for r in rows]

    def all_pks(self) -> set[int]:
        """Primary keys of every stored memory (any version)."""
        with self.connect() as conn:
            return set(conn.execute(select(memories.c.pk)).scalars())

    def without_embedding(self, pks: Sequence[int] | None = None) -> list[tuple[int, str]]:
        """(primary key, content) of rows still waiting for their vector (all, or among ``pks``)."""
        statement = select(memories.c.pk, memories.c.content).where(memories.c.embedding.is_(None))
        if pks is not None:
            if not pks:
                return []
            statement = statement.where(memories.c.pk.in_(list(pks)))
        with self.connect() as conn:
            return [(r[0], r[1]) for r in conn.execute(statement)]

    def supersede(
        self, old_id: str, build_new: Callable[[Memory], dict[str, Any]], revive: bool = False
    ) -> tuple[Memory, int, dict[str, Any]]:
        """Close ``old_id``'s validity and insert its successor, atomically.

        ``build_new`` receives the old memory and returns the new row (without validity columns).
        Returns the old memory as it was, its primary key, and the inserted row (with ``pk`` and
        ``seq``; the old row's change number is ``seq - 1``). With ``revive``, ``old_id`` may also
        be the latest version of a fact that has no current version (its head was deleted): the
        new row becomes the head.

        Raises:
            MemoryNotFoundError: no such memory.
            MemoryAlreadySupersededError: the memory is no longer current (and may not be revived).
        """
        with self.write() as conn:
            found = conn.execute(select(*_NO_EMBEDDING).where(memories.c.id == old_id)).first()
            if found is None:
                raise MemoryNotFoundError(old_id)
            old = row_to_memory(found)
            if not old.is_current:
                headless = conn.execute(
                    select(memories.c.pk).where(memories.c.chain_id == old.chain_id, memories.c.valid_to.is_(None))
                ).first() is None
                if not (revive and headless):
                    raise MemoryAlreadySupersededError(old_id, old.superseded_by, successor_deleted=headless)
            new = build_new(old)
            stamp = now_utc()
            last = self._bump_seq(conn, 2)
            closed = {"valid_to": stamp} if old.is_current else {}
            conn.execute(
                update(memories).where(memories.c.id == old_id)
                .values(**closed, superseded_by=new["id"], updated_at=stamp, seq=last - 1)
            )
            new.update(
                search_text=index_text(new["content"]),
                fingerprint=fingerprint(new["content"]),
                valid_from=stamp, valid_to=None, created_at=stamp, updated_at=stamp,
                supersedes=old_id, superseded_by=None, chain_id=old.chain_id, seq=last,
            )
            new["pk"] = conn.execute(insert(memories).returning(memories.c.pk), new).scalar_one()
        return old, found._mapping["pk"], new

    def update(self, memory_id: str, values: dict[str, Any]) -> tuple[int, int]:
        """Change columns of one memory in place; return its (primary key, seq).

        Raises:
            MemoryNotFoundError: no such memory.
        """
        if "content" in values:
            values = {
                **values, "search_text": index_text(values["content"]), "fingerprint": fingerprint(values["content"])
            }
        with self.write() as conn:
            seq = self._bump_seq(conn)
            pk = conn.execute(
                update(memories).where(memories.c.id == memory_id)
                .values(**values, updated_at=now_utc(), seq=seq).returning(memories.c.pk)
            ).scalar()
            if pk is None:
                raise MemoryNotFoundError(memory_id)
        return int(pk), seq

    def delete_where(self, condition: ColumnElement[bool], erase: bool = False) -> tuple[list[int], int]:
        """Delete the memories matching ``condition``; return their primary keys and the change number.

        ``erase`` marks the deletion as an erasure: every process overwrites the vectors too."""
        with self.write() as conn:
            pks = list(conn.execute(select(memories.c.pk).where(condition)).scalars())
            if not pks:
                return [], 0
            seq = self._bump_seq(conn)
            for start in range(0, len(pks), 500):
                chunk = pks[start : start + 500]
                conn.execute(delete(memories).where(memories.c.pk.in_(chunk)))
                conn.execute(insert(tombstones), [{"pk": pk, "seq": seq, "scrub": int(erase)} for pk in chunk])
        return pks, seq

    def erase_traces(self) -> bool:
        """After a deletion that must leave no trace: merge the full-text index (so deleted terms
        leave its older segments), copy the write-ahead log into the database and truncate it.
        Deleted rows and pages are already overwritten (``secure_delete``). Returns False if
        another connection kept the log from being truncated."""
        self.forget_cached()
        with self.write() as conn:
            fts_optimize(conn)
        with self.connect() as conn:
            return checkpoint_truncate(conn)

    # -- reads ----------------------------------------------------------------------------------

    def get(self, memory_id: str) -> Memory | None:
        """The memory with this id, or None."""
        with self.connect() as conn:
            row = conn.execute(select(*_NO_EMBEDDING).where(memories.c.id == memory_id)).first()
        return None if row is None else row_to_memory(row)

    def get_by_pks(
        self, pks: Sequence[int], with_embedding: bool = False, conn: Connection | None = None
    ) -> dict[int, StoredRow]:
        """Memories (and optionally their vectors and fingerprints) by primary key; missing keys are left out."""
        if not pks:
            return {}
        with self.connect(conn) as c:
            rows = memory_rows(c, _COLUMNS_WITH_VECTOR if with_embedding else _COLUMNS, list(pks))
        return {m["pk"]: _stored_row(m) for m in rows}

    def hydrate(self, pks: Sequence[int], versions: Mapping[int, int]) -> dict[int, StoredRow]:
        """Like ``get_by_pks(..., with_embedding=True)``, served from a small cache of recent rows
        when ``versions`` (primary key -> change number, from the vector index) says a cached
        row is still the current version of that memory."""
        out: dict[int, StoredRow] = {}
        missing: list[int] = []
        with self._rows_lock:
            for pk in pks:
                cached = self._rows.get(pk)
                if cached is not None and versions.get(pk) == cached[0]:
                    self._rows.move_to_end(pk)
                    out[pk] = cached[1]
                else:
                    missing.append(pk)
        if missing:
            with self.connect() as conn:
                rows = memory_rows(conn, _COLUMNS_WITH_VECTOR, missing)
            with self._rows_lock:
                for m in rows:
                    found = _stored_row(m)
                    out[m["pk"]] = found
                    self._rows[m["pk"]] = (m["seq"], found)
                while len(self._rows) > 4096:
                    self._rows.popitem(last=False)
        return out

    def forget_cached(self) -> None:
        """Drop the cache of recently read rows (after an erasure: no copy of the content is kept)."""
        with self._rows_lock:
            self._rows.clear()

    def query(self, flt: MemoryFilter) -> list[Memory]:
        """Memories matching a filter, oldest first."""
        statement = (
            select(*_NO_EMBEDDING).where(filter_condition(flt))
            .order_by(memories.c.created_at, memories.c.pk).offset(flt.offset)
        )
        if flt.limit is not None:
            statement = statement.limit(flt.limit)
        with self.connect() as conn:
            return [row_to_memory(row) for row in conn.execute(statement)]

    def history(self, memory_id: str) -> list[Memory]:
        """Every version of the fact ``memory_id`` belongs to, oldest first.

        Raises:
            MemoryNotFoundError: no such memory.
        """
        with self.read() as conn:
            chain = conn.execute(select(memories.c.chain_id).where(memories.c.id == memory_id)).scalar()
            if chain is None:
                raise MemoryNotFoundError(memory_id)
            rows = conn.execute(
                select(*_NO_EMBEDDING).where(memories.c.chain_id == chain)
                .order_by(memories.c.valid_from, memories.c.pk)
            ).all()
        return [row_to_memory(row) for row in rows]

    def stats(self, user_id: str | None) -> dict[str, Any]:
        """Counts: total rows, current, superseded, current ones by category and by scope."""
        where = true() if user_id is None else memories.c.user_id == user_id
        current = and_(where, memories.c.valid_to.is_(None))
        with self.read() as conn:
            total = conn.execute(select(func.count()).select_from(memories).where(where)).scalar_one()
            n_current = conn.execute(select(func.count()).select_from(memories).where(current)).scalar_one()
            by_category = dict(conn.execute(
                select(memories.c.category, func.count()).where(current).group_by(memories.c.category)
            ).all())
            by_scope = dict(conn.execute(
                select(memories.c.scope, func.count()).where(current).group_by(memories.c.scope)
            ).all())
        return {
            "total": int(total),
            "current": int(n_current),
            "superseded": int(total - n_current),
            "categories": {c.value: int(by_category.get(c.value, 0)) for c in MemoryCategory},
            "scopes": {s.value: int(by_scope.get(s.value, 0)) for s in MemoryScope},
        }

    def _frequencies(self, conn: Connection, terms: list[str], seq: int) -> tuple[dict[str, int], int, float]:
        """Document frequency of each term, the number of indexed rows and their average length.
        All are cached and re-read after 256 changes: stale counts only shift the term bounds and
        the BM25 statistics a little."""
        missing = [t for t in terms if t not in self._df_cache or seq - self._df_cache[t][1] > 256]
        if missing:
            found = document_frequencies(conn, missing)
            if len(self._df_cache) > 50_000:
                self._df_cache.clear()
            for term in missing:
                self._df_cache[term] = (found.get(term, 0), seq)
        if seq - self._totals[2] > 256:
            self._totals = (*fts_totals(conn), seq)
        rows, tokens, _ = self._totals
        return {t: self._df_cache[t][0] for t in terms}, rows, tokens / rows if rows else 0.0

    def keyword_query(
        self, terms: list[str], postings_budget: int, seq: int, max_df: int | None = None
    ) -> KeywordQuery | None:
        """The terms keyword search uses for a query, and the scale of its scores (None: no usable term).

        Terms found in more than ``max_df`` memories are left out, and of the rest only the rarest,
        up to ``postings_budget`` matching rows in all, are searched: BM25 is computed for every
        matching row, and very common terms add cost but almost no ranking signal (their inverse
        document frequency is near zero). Scores are divided by the summed IDF of the query's
        usable terms, so a memory holding each of them once scores about 1 and one that only
        shares a common word with the query scores near 0, whatever the query's length.
        """
        if not terms:
            return None
        with self.connect() as conn:
            frequencies, rows, average_length = self._frequencies(conn, terms, seq)
        if max_df is not None:
            frequencies = {t: f for t, f in frequencies.items() if f <= max_df}
        chosen = select_terms(terms, frequencies, postings_budget)
        if not chosen:
            return None
        weights = tuple((term, idf(frequencies[term], rows)) for term in chosen)
        return KeywordQuery(weights, sum(idf(f, rows) for f in frequencies.values() if f), average_length)

    def text_search(
        self, query: KeywordQuery, condition: ColumnElement[bool] | None, limit: int
    ) -> list[tuple[int, float]]:
        """(primary key, normalised BM25) of memories matching the query (and ``condition``), best first.

        Without a condition the ranking runs inside the full-text index alone, the cheapest form;
        the caller filters.
        """
        terms = query.terms
        with self.connect() as conn:
            hits = fts_rank(conn, terms, limit) if condition is None else fts_search(conn, terms, condition, limit)
        return [(pk, score / query.scale) for pk, score in hits]

    def text_scores(self, query: KeywordQuery, pks: Sequence[int]) -> dict[int, float]:
        """Normalised BM25 of the given memories for the query, computed from their indexed text
        (the score :meth:`text_search` gives them, up to the cached statistics); memories that
        match no term are left out.

        Asking FTS5 for the score of given rows would recount every term's matches (its IDF) per
        statement: milliseconds on a large store, where this costs one primary-key lookup per row.
        """
        if not pks:
            return {}
        with self.connect() as conn:
            texts = search_texts(conn, list(pks))
        scores = {pk: bm25(text.split(), query.weights, query.average_length) for pk, text in texts}
        return {pk: score / query.scale for pk, score in scores.items() if score > 0}

    def vectors_of(self, pks: Sequence[int]) -> tuple[list[int], np.ndarray]:
        """Primary keys and vectors of the given memories that have one (any version)."""
        if not pks:
            return [], np.zeros((0, 0), dtype=np.float32)
        with self.connect() as conn:
            rows = vectors_by_pk(conn, list(pks))
        if not rows:
            return [], np.zeros((0, 0), dtype=np.float32)
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
        return [r[0] for r in rows], matrix

    def vectors_where(self, condition: ColumnElement[bool]) -> tuple[list[int], np.ndarray]:
        """Primary keys and vectors of every memory matching ``condition`` (for exact search)."""
        with self.connect() as conn:
            rows = conn.execute(
                select(memories.c.pk, memories.c.embedding).where(condition, memories.c.embedding.is_not(None))
            ).all()
        if not rows:
            return [], np.zeros((0, 0), dtype=np.float32)
        return [r[0] for r in rows], np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])

    # -- feeding the vector index ------------------------------------------------------------------

    def changes_since(self, seq: int) -> Changes:
        """Rows written and primary keys deleted after change number ``seq``."""
        with self.read() as conn:
            last = int(conn.execute(select(counters.c.value).where(counters.c.name == "seq")).scalar_one())
            if last <= seq:
                return Changes(last, [], [])
            rows = conn.execute(
                select(*_INDEX_COLUMNS, memories.c.embedding).where(memories.c.seq > seq).order_by(memories.c.seq)
            ).all()
            deleted = conn.execute(select(tombstones.c.pk, tombstones.c.scrub).where(tombstones.c.seq > seq)).all()
        return Changes(
            last, [_index_row(r, True) for r in rows], [pk for pk, _ in deleted], [pk for pk, scrub in deleted if scrub]
        )

    def index_rows(self, batch_size: int = 20_000) -> Iterator[list[tuple[Any, ...]]]:
        """Every current memory with a vector, in batches of plain tuples, for (re)building the index.

        Each tuple is (pk, seq, user_id, scope, session_id, agent_id, turn_id, category, embedding bytes).
        """
        c = memories.c
        columns = [c.pk, c.seq, c.user_id, c.scope, c.session_id, c.agent_id, c.turn_id, c.category, c.embedding]
        last_pk = 0
        while True:
            with self.connect() as conn:
                rows = conn.execute(
                    select(*columns)
                    .where(c.valid_to.is_(None), c.pk > last_pk, c.embedding.is_not(None))
                    .order_by(c.pk).limit(batch_size)
                ).all()
            if not rows:
                return
            last_pk = rows[-1][0]
            yield [tuple(r) for r in rows]

    # -- conversation log -------------------------------------------------------------------------

    def append_messages(self, rows: list[dict[str, Any]]) -> None:
        """Log chat messages (rows with user_id, session_id, role, content, payload, created_at)."""
        if rows:
            with self.write() as conn:
                conn.execute(insert(chat_messages), rows)

    def messages(self, user_id: str, session_id: str, limit: int | None) -> list[ChatRecord]:
        """A session's messages, oldest first (only the last ``limit`` when given)."""
        c = chat_messages.c
        statement = select(c.pk, c.role, c.content, c.payload, c.created_at).where(
            c.user_id == user_id, c.session_id == session_id
        )
        statement = statement.order_by(c.pk) if limit is None else statement.order_by(c.pk.desc()).limit(limit)
        with self.connect() as conn:
            rows = conn.execute(statement).all()
        if limit is not None:
            rows.reverse()
        return [ChatRecord(r.role, r.content, json.loads(r.payload), _aware(r.created_at)) for r in rows]

    def delete_messages(self, user_id: str, session_id: str | None) -> int:
        """Delete a session's messages (every session of the user when ``session_id`` is None)."""
        condition = chat_messages.c.user_id == user_id
        if session_id is not None:
            condition = and_(condition, chat_messages.c.session_id == session_id)
        with self.write() as conn:
            return int(conn.execute(delete(chat_messages).where(condition)).rowcount or 0)

    def close(self) -> None:
        """Release every connection."""
        self._probe.close()
        self.engine.dispose()


def filter_condition(flt: MemoryFilter) -> ColumnElement[bool]:
    """The SQL condition of a :class:`MemoryFilter` (exact id matches, validity, categories…)."""
    c = memories.c
    parts: list[ColumnElement[bool]] = []
    for name in ("user_id", "session_id", "agent_id", "turn_id"):
        value = getattr(flt, name)
        if value is not None:
            parts.append(c[name] == value)
    if flt.categories is not None:
        parts.append(c.category.in_([cat.value for cat in flt.categories]))
    if flt.scopes is not None:
        parts.append(c.scope.in_([scope.value for scope in flt.scopes]))
    parts.append(validity_condition(flt.include_superseded, flt.valid_at))
    if flt.created_after is not None:
        parts.append(c.created_at >= _naive(flt.created_after))
    if flt.created_before is not None:
        parts.append(c.created_at < _naive(flt.created_before))
    if flt.min_importance is not None:
        parts.append(c.importance >= flt.min_importance)
    return and_(*parts)


def validity_condition(include_superseded: bool, valid_at: datetime | None) -> ColumnElement[bool]:
    """Current rows only, every version, or the versions valid at a point in time."""
    c = memories.c
    if valid_at is not None:
        at = _naive(valid_at)
        return and_(c.valid_from <= at, or_(c.valid_to.is_(None), c.valid_to > at))
    if include_superseded:
        return true()
    return c.valid_to.is_(None)
