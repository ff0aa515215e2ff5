"""The embedded backend: one SQLite file (FTS5 keyword index) and an hnswlib graph beside it.

The graph lives in each process's RAM as a cache of the file: every write carries a change number,
and before each search the index pulls what other processes committed (see
:mod:`.vector_index`). Several processes on one machine may share one file.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, and_, select

from headroom_integrations.errors import StorageError
from headroom_integrations.memory.backends.base import KeywordQuery, Revision, Scores, SearchScope, StoredRow
from headroom_integrations.memory.backends.keywords import bm25_scores, keyword_weights
from headroom_integrations.memory.backends.rows import row_to_memory
from headroom_integrations.memory.backends.schema import ADDED_COLUMNS, SCHEMA_VERSION
from headroom_integrations.memory.backends.sql_store import INDEX_COLUMNS, SqlStore
from headroom_integrations.memory.backends.sqlite.doctor import check_sqlite
from headroom_integrations.memory.backends.sqlite.driver import (
    SNAPSHOT,
    TABLES,
    WRITE,
    ChangeProbe,
    checkpoint_truncate,
    create_sqlite_engine,
    ensure_waiting_index,
    exact_nearest,
    fts_optimize,
    install_fts,
    memory_rows,
    search_texts,
    storage_errors,
    vectors_by_pk,
)
from headroom_integrations.memory.backends.sqlite.index_rows import Changes, index_row
from headroom_integrations.memory.backends.sqlite.keyword_side import FtsStatistics, ranked_matches
from headroom_integrations.memory.backends.sqlite.term_counts import (
    TERMS_TABLE,
    install_term_counts,
)
from headroom_integrations.memory.backends.sqlite.vector_index import VectorIndex
from headroom_integrations.memory.lru import LRU
from headroom_integrations.memory.models import Memory, MemoryFilter
from headroom_integrations.memory.text_query import FINGERPRINT_VERSION

__all__ = ["SqliteBackend"]

logger = logging.getLogger(__name__)


class SqliteBackend(SqlStore):
    """The memory backend over one SQLite file (or RAM when ``path`` is None).

    Args:
        path: the database file (created with its directory if missing), or None for RAM.
        embedder_name: the embedder the vectors come from (recorded; another one is refused).
        dimension: its vector dimension.
        index_path: the HNSW sidecar (default ``<path>.hnsw``).
        busy_timeout_ms, hnsw_m, hnsw_ef_construction, hnsw_ef_search, brute_force_max: as in
            :class:`~headroom_integrations.memory.config.MemoryConfig`.

    Example:
        >>> backend = SqliteBackend(None, "test/model", 8)
        >>> backend.stats(None)["total"], backend.location
        (0, ':memory:')
        >>> backend.close()
    """

    def __init__(
        self,
        path: Path | None,
        embedder_name: str,
        dimension: int,
        *,
        index_path: Path | None = None,
        busy_timeout_ms: int = 10_000,
        hnsw_m: int = 16,
        hnsw_ef_construction: int = 200,
        hnsw_ef_search: int = 50,
        brute_force_max: int = 8192,
    ) -> None:
        self.path = path
        self.location = str(path) if path is not None else ":memory:"
        self.tables = TABLES
        self._setup_statements()
        self._terms = FtsStatistics()
        self._recent: LRU[int, tuple[int, StoredRow]] = LRU(4096)  # pk -> (seq, row) of rows searches read
        self.counts_terms = True  # the file keeps term counts (see term_counts); _create tells
        with storage_errors(path, "open"):
            self.engine = create_sqlite_engine(path, busy_timeout_ms)
            try:
                self._probe = ChangeProbe(path)
                self._create()
                ensure_waiting_index(self.engine)
                self.check_embedder(embedder_name, dimension)
                if index_path is None and path is not None:
                    index_path = path.with_name(path.name + ".hnsw")
                self.index = VectorIndex(
                    self, dimension, index_path, m=hnsw_m, ef_construction=hnsw_ef_construction,
                    ef_search=hnsw_ef_search, brute_force_max=brute_force_max,
                )
                self.index.open()
            except BaseException:
                self.engine.dispose()
                raise

    # -- hooks of the SQL store -------------------------------------------------------------------

    def _errors(self, action: str) -> contextlib.AbstractContextManager[None]:
        return storage_errors(self.path, action)

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (takes the database write lock at once: ``BEGIN IMMEDIATE``)."""
        with storage_errors(self.path, "write"), self.engine.connect() as conn:
            conn.execution_options(**WRITE)
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction (a consistent snapshot)."""
        with storage_errors(self.path, "read"), self.engine.connect() as conn:
            conn.execution_options(**SNAPSHOT)
            with conn.begin():
                yield conn

    def _read_rows(self, conn: Connection, columns: list[str], pks: Sequence[int]) -> list[dict[str, Any]]:
        return memory_rows(conn, columns, list(pks))

    def _create(self) -> None:
        """Create the tables on first use; bring older stores' derived columns up to date."""
        with self.read() as conn:  # a store that is complete needs no write (a read-only file opens)
            tables = set(conn.exec_driver_sql("SELECT name FROM sqlite_master").scalars())
            meta = TABLES.meta
            stored = dict(conn.execute(select(meta.c.key, meta.c.value)).all()) if "meta" in tables else {}
            scrub = "scrub" in {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(memory_tombstones)")}
            columns = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(memories)")}
        if int(stored.get("schema_version", SCHEMA_VERSION)) > int(SCHEMA_VERSION):
            with self.read() as conn:
                self._check_schema(conn)  # raises: written by a newer version
        complete = {t.name for t in TABLES.metadata.sorted_tables} | {"memories_fts"} <= tables and scrub
        current = complete and set(ADDED_COLUMNS) <= columns
        self.counts_terms = TERMS_TABLE in tables
        if current and self.counts_terms and stored.get("fingerprint_version") == FINGERPRINT_VERSION:
            return
        if complete and self.path is not None and not os.access(self.path, os.W_OK):
            if not current:
                raise StorageError(
                    f"memory store {self.path} was written by an older version (schema "
                    f"{stored.get('schema_version', '1')}) and is read-only: open it writable once to upgrade it"
                )
            logger.warning("%s is read-only: it stays as an older version wrote it (duplicate fingerprints, "
                           "term counts read from the full-text index)", self.path)
            return
        with self.write() as conn:
            TABLES.metadata.create_all(conn)
            install_fts(conn)
            install_term_counts(conn)
            self.counts_terms = True
            columns = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(memory_tombstones)")}
            if "scrub" not in columns:  # a store written by an earlier version
                conn.exec_driver_sql("ALTER TABLE memory_tombstones ADD COLUMN scrub INTEGER NOT NULL DEFAULT 0")
            self._check_schema(conn)
            self._upgrade_columns(conn)
            self._refingerprint(conn)

    # -- memories ---------------------------------------------------------------------------------

    def insert(
        self, new: Sequence[Memory], vectors: Sequence[np.ndarray | None], dedupe: bool
    ) -> list[tuple[Memory, int | None]]:
        """See :meth:`MemoryBackend.insert`; stored rows enter the vector index at once."""
        outcome = self.insert_rows(new, vectors, dedupe)
        stored = [(row, vector) for (_, row), vector in zip(outcome, vectors) if row is not None]
        if stored:
            # Applied even without vectors: the watermark moves on, so the next search does not
            # re-read these rows; their vectors follow as the next change.
            self.index.apply_local([index_row(row, vector) for row, vector in stored],
                                   stored[0][0]["seq"], stored[-1][0]["seq"])
        return [(memory, None) if row is None else (row_to_memory(row), row["pk"]) for memory, row in outcome]

    def supersede(
        self, old_id: str, new_id: str, revision: Revision, vector: np.ndarray | None, revive: bool
    ) -> tuple[Memory, int]:
        """See :meth:`MemoryBackend.supersede`."""
        old, new = self.supersede_row(old_id, new_id, revision, vector, revive)
        vector = None if new["embedding"] is None else vector  # a lookup-only memory stays without one
        self.index.apply_local([index_row(old, None), index_row(new, vector)], new["seq"] - 1, new["seq"])
        return row_to_memory(new), new["pk"]

    def put(self, memories: Sequence[Memory], vectors: Sequence[np.ndarray | None]) -> list[tuple[Memory, int]]:
        """See :meth:`MemoryBackend.put`; the rows enter the vector index at once."""
        written = self.put_rows(memories, vectors)
        rows = []
        for (old, new), vector in zip(written, vectors):
            if old is not None:
                rows.append(index_row(old, None))
            rows.append(index_row(new, None if new["embedding"] is None else vector))
        if rows:
            self.index.apply_local(rows, min(r.seq for r in rows), max(r.seq for r in rows))
        return [(row_to_memory(new), new["pk"]) for _, new in written]

    def set_expiry(self, expiries: Mapping[str, datetime | None]) -> None:
        """See :meth:`MemoryBackend.set_expiry`."""
        rows = self.expiry_rows(expiries)
        if rows:
            self.index.apply_local([index_row(row, self._vector_of(row["embedding"])) for row in rows],
                                   rows[0]["seq"], rows[0]["seq"])

    def update(self, memory_id: str, revision: Revision, vector: np.ndarray | None) -> Memory:
        """See :meth:`MemoryBackend.update`."""
        row = self.update_row(memory_id, revision, vector)
        if not row["searchable"]:
            vector = None
        elif revision.content is None:
            vector = self.stored_rows([row["pk"]])[row["pk"]].vector
        self.index.apply_local([index_row(row, vector)], row["seq"], row["seq"])
        return row_to_memory(row)

    def _remove(self, condition: Any, erase: bool = False) -> int:
        pks, seq = self._delete_where(condition, erase)
        if pks:
            self.index.remove_local(pks, seq, erase)
        return len(pks)

    def delete(self, memory_id: str, all_versions: bool) -> int:
        """See :meth:`MemoryBackend.delete`."""
        return self._remove(self._delete_condition(memory_id, all_versions))

    def delete_matching(self, flt: MemoryFilter) -> int:
        """See :meth:`MemoryBackend.delete_matching`."""
        return self._remove(self.filter_condition(flt))

    def erase_user(self, user_id: str) -> tuple[int, int]:
        """Delete a user's memories and messages, then erase their traces: deleted rows are
        overwritten in the file (``secure_delete``), the full-text index is merged so deleted
        terms leave its older segments, the write-ahead log is copied in and truncated, and the
        vectors are overwritten in the graph and its saved file (other processes do the same on
        their next search)."""
        removed = self._remove(self.filter_condition(MemoryFilter(user_id=user_id, include_superseded=True)), True)
        messages = self.delete_messages(user_id, None)
        self._recent.clear()
        with self.write() as conn:
            fts_optimize(conn)
        with self.connect() as conn:
            if not checkpoint_truncate(conn):
                logger.warning("another connection kept the write-ahead log of %s from being truncated; "
                               "it is truncated at its next checkpoint", self.location)
        self.index.scrub_missing()
        self.save()
        return removed, messages

    def load(self, rows: Sequence[tuple[Memory, np.ndarray | None]]) -> int:
        """See :meth:`MemoryBackend.load`."""
        written = self.load_rows(rows)
        if written:
            self.index.apply_local([index_row(row, self._vector_of(row["embedding"])) for row in written],
                                   written[0]["seq"], written[-1]["seq"])
        return len(written)

    # -- vectors computed after the fact ----------------------------------------------------------------

    def set_embeddings(self, vectors: Mapping[int, np.ndarray]) -> bool:
        """See :meth:`MemoryBackend.set_embeddings`. Vectors that cannot be written (a read-only
        file, a full disk) still enter this process's index, so its searches find the rows."""
        if not vectors:
            return True
        try:
            updated = self.store_vectors(vectors)
        except StorageError as exc:
            logger.warning("could not store %d vector(s), searching with them from memory: %s", len(vectors), exc)
            with self.connect() as conn:
                rows = memory_rows(conn, list(INDEX_COLUMNS), list(vectors))
            self.index.apply_unsaved([index_row(row, vectors[row["pk"]]) for row in rows])
            return False
        if updated:
            seqs = [row["seq"] for row in updated]
            self.index.apply_local([index_row(row, vectors[row["pk"]]) for row in updated], min(seqs), max(seqs))
        return True

    # -- change detection (also what the vector index pulls) --------------------------------------------

    def refresh(self) -> list[int]:
        """Pull other processes' writes into the vector index; the rows among them waiting for a vector."""
        return self.index.sync()

    @property
    def version(self) -> int:
        """Bumped by every change the vector index sees."""
        return self.index.version

    def maybe_changed(self) -> bool:
        """Cheap test: False only if no connection committed since the previous call."""
        with storage_errors(self.path, "read"):
            return self._probe.changed()

    def current_seq(self) -> int:
        """The number of the last committed change."""
        with self.connect() as conn:
            return int(conn.execute(self._current_seq).scalar_one())

    def changes_since(self, seq: int) -> Changes:
        """Rows written and primary keys deleted after change number ``seq``."""
        m, tombstones = TABLES.memories, TABLES.tombstones
        with self.read() as conn:
            last = int(conn.execute(self._current_seq).scalar_one())
            if last <= seq:
                return Changes(last, [], [])
            rows = conn.execute(
                select(*[m.c[name] for name in INDEX_COLUMNS], m.c.embedding).where(m.c.seq > seq).order_by(m.c.seq)
            ).all()
            deleted = conn.execute(select(tombstones.c.pk, tombstones.c.scrub).where(tombstones.c.seq > seq)).all()
        return Changes(
            last, [index_row(r._mapping, self._vector_of(r.embedding)) for r in rows],
            [pk for pk, _ in deleted], [pk for pk, scrub in deleted if scrub],
        )

    def index_rows(self, batch_size: int = 20_000) -> Iterator[list[tuple[Any, ...]]]:
        """Every current memory with a vector, in batches of plain tuples, for (re)building the index.

        Each tuple is (pk, seq, user_id, scope, session_id, agent_id, turn_id, category, embedding bytes).
        """
        c = TABLES.memories.c
        columns = [c.pk, c.seq, c.user_id, c.scope, c.session_id, c.agent_id, c.turn_id, c.category, c.embedding]
        last_pk = 0
        while True:
            with self.connect() as conn:
                rows = conn.execute(
                    select(*columns).where(c.valid_to.is_(None), c.pk > last_pk, c.embedding.is_not(None))
                    .order_by(c.pk).limit(batch_size)
                ).all()
            if not rows:
                return
            last_pk = rows[-1][0]
            yield [tuple(r) for r in rows]

    def all_pks(self) -> set[int]:
        """Primary keys of every stored memory (any version)."""
        with self.connect() as conn:
            return set(conn.execute(select(TABLES.memories.c.pk)).scalars())

    # -- keyword side -----------------------------------------------------------------------------

    def keyword_query(self, terms: list[str], postings_budget: int, max_share: float) -> KeywordQuery | None:
        """See :meth:`MemoryBackend.keyword_query`. Scores are divided by the summed IDF of the
        query's usable terms, so a memory holding each once scores about 1."""
        if not terms:
            return None
        indexed = len(self.index)
        max_df = max(1, int(max_share * indexed)) if indexed >= 4 else None
        with self.connect() as conn:
            frequencies, rows, average_length = self._terms.frequencies(conn, terms, self.index.watermark,
                                                                        self.counts_terms)
        return keyword_weights(terms, frequencies, rows, average_length, postings_budget, max_df)

    def keyword_search(self, query: KeywordQuery, scope: SearchScope, limit: int) -> list[tuple[int, float]]:
        """See :meth:`MemoryBackend.keyword_search` and :func:`.keyword_side.ranked_matches`."""
        with self.connect() as conn:
            hits = ranked_matches(conn, self.index, query, scope, limit, self.scope_condition(scope))
        return [(pk, score / query.scale) for pk, score in hits]

    def candidate_scores(
        self, vector: np.ndarray, query: KeywordQuery | None, need_cosine: Sequence[int], need_keyword: Sequence[int]
    ) -> Scores:
        """See :meth:`MemoryBackend.candidate_scores`."""
        cosines = self._similarities(vector, need_cosine) if need_cosine else {}
        return Scores(cosines, self._keyword_scores(query, need_keyword) if query is not None else {})

    def _keyword_scores(self, query: KeywordQuery, pks: Sequence[int]) -> dict[int, float]:
        """BM25 computed from the rows' indexed text (asking FTS5 would recount every term's
        matches per statement)."""
        if not pks:
            return {}
        with self.connect() as conn:
            texts = search_texts(conn, list(pks))
        return bm25_scores(texts, query)

    # -- vector side ------------------------------------------------------------------------------

    def nearest(
        self, vector: np.ndarray, scope: SearchScope, k: int, query: KeywordQuery | None = None,
        known: Sequence[int] = (),
    ) -> tuple[list[tuple[int, float]], Scores]:
        """See :meth:`MemoryBackend.nearest`: the index's visibility buckets; older versions (not
        in the graph) are scored exactly from the database.

        At a point in time (``scope.valid_at``) every candidate is scored exactly from the rows
        valid then: the graph holds today's current vectors, and the caller's newer memories
        could fill any depth of its candidates with rows not valid then.
        """
        condition = self.scope_condition(scope)
        if scope.valid_at is not None:
            with self.connect() as conn:
                hits = exact_nearest(conn, vector, condition, k)
        else:
            hits = self.index.search(vector, scope.buckets(), k, scope.categories)
        if scope.include_superseded and scope.valid_at is None:
            with self.connect() as conn:
                older = exact_nearest(conn, vector, and_(condition, TABLES.memories.c.valid_to.is_not(None)), k)
            hits = sorted({**dict(hits), **dict(older)}.items(), key=lambda item: item[1], reverse=True)[:k]
        found = {pk for pk, _ in hits}
        others = set(known)
        return hits, self.candidate_scores(
            vector, query, [pk for pk in known if pk not in found], [pk for pk in found if pk not in others]
        )

    def _similarities(self, vector: np.ndarray, pks: Iterable[int]) -> dict[int, float]:
        """Cosines from the index's matrices when it keeps them, else from the vectors in the
        database (older versions)."""
        pks = list(pks)
        out = self.index.similarities(vector, pks)
        missing = [pk for pk in pks if pk not in out]
        if missing:
            with self.connect() as conn:
                rows = vectors_by_pk(conn, missing)
            if rows:
                matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
                out.update(zip([r[0] for r in rows], (matrix @ vector).tolist()))
        return out

    def neighbours(
        self, pks: Iterable[int], scope: SearchScope, vector: np.ndarray, query: KeywordQuery | None, span: int = 1
    ) -> tuple[dict[int, list[int]], Scores]:
        """See :meth:`MemoryBackend.neighbours` (from the index's bookkeeping; SQL only for the
        neighbours' keyword scores)."""
        pks = list(pks)
        links = self.index.neighbours(pks, scope.buckets(), scope.categories, span=span)
        given = set(pks)
        linked = sorted({other for found in links.values() for other in found if other not in given})
        return links, self.candidate_scores(vector, query, linked, linked)

    def rows(self, pks: Sequence[int]) -> dict[int, StoredRow]:
        """See :meth:`MemoryBackend.rows`; served from a small cache of recent rows when the
        vector index says a cached row is still the current version of that memory."""
        versions = self.index.versions(pks)
        out: dict[int, StoredRow] = {}
        missing: list[int] = []
        for pk in pks:
            cached = self._recent.get(pk, versions.get(pk))
            if cached is not None:
                out[pk] = cached[1]
            else:
                missing.append(pk)
        if missing:
            with self.connect() as conn:
                found = memory_rows(conn, [*self._columns, "embedding", "fingerprint"], missing)
            for m in found:
                row = StoredRow(row_to_memory(m), self._vector_of(m["embedding"]), m["fingerprint"])
                out[m["pk"]] = row
                self._recent.put(m["pk"], (m["seq"], row), m["seq"])
        return out

    def check_index(self, repair: bool) -> dict[str, int]:
        """See :meth:`MemoryBackend.check_index` and :func:`.doctor.check_sqlite`."""
        return check_sqlite(self, repair)

    # -- lifecycle --------------------------------------------------------------------------------

    def save(self) -> None:
        """Write the vector index sidecar now.

        Raises:
            StorageError: the file could not be written.
        """
        with storage_errors(self.index.path, "save the vector index of"):
            self.index.save()

    def close(self) -> None:
        """Save the vector index (a failure is logged: it is rebuilt on the next open) and close."""
        try:
            self.index.save()
        except Exception as exc:  # the index is a cache: the next open rebuilds what it lacks
            logger.warning("could not save the vector index %s (%s); it will be rebuilt on the next open",
                           self.index.path, exc)
        finally:
            self._probe.close()
            self.engine.dispose()

