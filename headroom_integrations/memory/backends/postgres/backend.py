"""The shared backend: PostgreSQL with pgvector (HNSW, cosine) and a ``tsvector`` GIN index.

Nothing is kept in process RAM between calls: every search asks the database, with the scope
visibility and validity inside the SQL of the nearest-neighbour query, so any number of processes
on any number of hosts share one database and see each other's writes on their next call.

Keyword scores are computed exactly as on SQLite (BM25 from term statistics, FTS5's formula):
the GIN index finds the rows holding a query term; their indexed text is scored in Python.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Column, Connection, Index, Integer, create_engine, select, text
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from headroom_integrations.errors import HeadroomError, StorageError
from headroom_integrations.memory.backends.base import KeywordQuery, Revision, Scores, SearchScope, StoredRow
from headroom_integrations.memory.backends.keywords import bm25_scores, keyword_weights
from headroom_integrations.memory.backends.postgres.driver import (
    binary_vector_type,
    neighbours_sql,
    register_vector_types,
    scope_sql,
    tsquery_literal,
    tsvector_literal,
)
from headroom_integrations.memory.backends.postgres.term_stats import TermStatistics
from headroom_integrations.memory.backends.postgres.urls import driver_installed, masked
from headroom_integrations.memory.backends.rows import row_to_memory
from headroom_integrations.memory.backends.schema import Tables, build_tables
from headroom_integrations.memory.backends.sql_store import SqlStore
from headroom_integrations.memory.lru import LRU
from headroom_integrations.memory.models import Memory, MemoryFilter

__all__ = ["PostgresBackend"]

logger = logging.getLogger(__name__)

EXACT_MAX = 2000
"""Up to this many visible vectors a search is exact (a scan of the caller's rows), above it the
HNSW index is walked with the restriction inside the query (see :meth:`PostgresBackend.nearest`)."""

_LOCK_ID = 0x68656164  # advisory lock taken while creating or upgrading the schema ("head")


def _psycopg_error() -> type[Exception]:
    import psycopg

    return psycopg.Error


def _tables(dimension: int, hnsw_m: int, hnsw_ef_construction: int) -> Tables:
    tables = build_tables(
        binary_vector_type(dimension),
        Column("tsv", TSVECTOR),
        Column("n_terms", Integer),
        # fastupdate off: rows enter the index as they are written, so searches never scan a pending list.
        Index("ix_memories_tsv", "tsv", postgresql_using="gin", postgresql_with={"fastupdate": "off"}),
        Index("ix_memories_waiting", "pk", postgresql_where=text("embedding IS NULL")),
        # A candidate's neighbours: the owner's current rows just before and after it, read from the
        # index alone (in a store shared by many users, most rows around a pk are someone else's).
        Index("ix_memories_user_pk", "user_id", "pk", postgresql_where=text("valid_to IS NULL")),
    )
    m = tables.memories
    Index(
        "ix_memories_embedding", m.c.embedding, postgresql_using="hnsw",
        postgresql_with={"m": hnsw_m, "ef_construction": hnsw_ef_construction},
        postgresql_ops={"embedding": "vector_cosine_ops"}, postgresql_where=m.c.valid_to.is_(None),
    )
    return tables


class PostgresBackend(SqlStore):
    """The memory backend over a PostgreSQL database with the pgvector extension.

    Args:
        url: a SQLAlchemy URL with the psycopg 3 driver (``postgresql+psycopg://user:pw@host/db``).
        embedder_name: the embedder the vectors come from (recorded; another one is refused).
        dimension: its vector dimension (the ``vector(n)`` column).
        hnsw_m, hnsw_ef_construction: the HNSW index's build parameters (used when it is created).
        hnsw_ef_search: the search breadth (raised per query when the caller sees a small share).
        brute_force_max: up to this many visible vectors (capped at :data:`EXACT_MAX`) search is exact.
        pool_size: connections kept open per process (plus as many again under load).

    Example::

        backend = PostgresBackend("postgresql+psycopg://postgres@/postgres?host=/tmp/pg", "test/model", 8)
        backend.stats(None)["total"]  # 0
        backend.close()
    """

    write_chunk = 32  # the server's index maintenance (HNSW above all) costs more than embedding: overlap them

    def __init__(
        self,
        url: str,
        embedder_name: str,
        dimension: int,
        *,
        hnsw_m: int = 16,
        hnsw_ef_construction: int = 64,
        hnsw_ef_search: int = 50,
        brute_force_max: int = 8192,
        pool_size: int = 5,
    ) -> None:
        driver_installed()
        self.location = masked(url)
        self.ef_search = hnsw_ef_search
        self.exact_max = min(brute_force_max, EXACT_MAX)
        self.tables = _tables(dimension, hnsw_m, hnsw_ef_construction)
        self._setup_statements()
        self._version = 0
        self._terms = TermStatistics()
        self._vector_oid: int | None = None  # known once the extension exists
        self._visible: LRU[Any, tuple[int, int]] = LRU(10_000)  # buckets -> (visible vectors, seq read at)
        with self._errors("open"):
            # A server that does not answer fails the call in 10 s (unless the URL sets connect_timeout).
            timeout = {} if "connect_timeout" in make_url(url).query else {"connect_timeout": 10}
            self.engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size * 2, pool_recycle=1800,
                                        connect_args=timeout)
            # Single-statement reads run in autocommit: no BEGIN/ROLLBACK round trips around each one.
            self._reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        try:
            self._create()
            self.check_embedder(embedder_name, dimension)
            self._fit_vector_column(dimension)
            with self.connect() as conn:
                self._vector_oid = int(conn.execute(text("SELECT 'vector'::regtype::oid")).scalar_one())
        except BaseException:
            self.engine.dispose()
            raise

    # -- hooks of the SQL store -------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Driver errors as one :class:`StorageError` naming the database (password masked). A lost
        connection is dropped from the pool, so the next call connects anew."""
        try:
            yield
        except HeadroomError:
            raise
        except (DBAPIError, SQLAlchemyError, OSError, _psycopg_error()) as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            if "connection" in reason.lower() and ("refused" in reason.lower() or "no such file" in reason.lower()):
                reason += " (is the PostgreSQL server running and reachable?)"
            raise StorageError(f"cannot {action} memory store {self.location}: {reason}") from exc

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection for single-statement reads (autocommit)."""
        with self._errors("read"), self._reader.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def _raw(self, action: str = "search") -> Iterator[Any]:
        """The psycopg connection of a pooled autocommit connection, taught pgvector's binary form
        (see :mod:`.driver`). A connection that broke is dropped from the pool."""
        import psycopg

        with self._errors(action), self._reader.connect() as conn:
            raw = self._taught(conn)
            try:
                yield raw
            except psycopg.OperationalError:
                if raw.closed or raw.broken:  # the server went away: every pooled connection is suspect
                    conn.invalidate()
                    self.engine.dispose()
                raise

    def _taught(self, conn: Connection) -> Any:
        """The psycopg connection under ``conn``, taught pgvector's binary form (once per connection)."""
        raw = conn.connection.driver_connection
        if self._vector_oid is not None and getattr(raw, "_headroom_vectors", None) != self._vector_oid:
            register_vector_types(raw, self._vector_oid)
            raw._headroom_vectors = self._vector_oid  # type: ignore[union-attr]
        return raw

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction; vectors are sent in binary (formatting them as text cost a
        quarter of a millisecond per row)."""
        with super().write() as conn:
            self._taught(conn)
            yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction seeing one snapshot (REPEATABLE READ)."""
        with self._errors("read"), self.engine.connect() as conn:
            conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    def _lock_writes(self, conn: Connection) -> None:
        """Writers queue on the change counter's row: a write sees every write committed before it
        (the duplicate check, supersede's "still current?") and change numbers follow commit order."""
        conn.execute(select(self.tables.counters.c.value).where(self.tables.counters.c.name == "seq").with_for_update())

    def _prepare(self, row: dict[str, Any]) -> dict[str, Any]:
        if "search_text" in row:
            row["tsv"] = tsvector_literal(row["search_text"])
            row["n_terms"] = len(row["search_text"].split())
        return row

    def _vector_value(self, vector: np.ndarray) -> Any:
        return np.asarray(vector, dtype=np.float32)

    def _create(self) -> None:
        """Create the extension and tables on first open, under an advisory lock (several
        processes may open a new database at once); refuse a newer schema."""
        t = self.tables
        with self._errors("open"), self.engine.connect() as conn, conn.begin():
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
            self._vector_extension(conn)
            t.metadata.create_all(conn, tables=[t.meta, t.counters])
            self._check_schema(conn)
            t.metadata.create_all(conn)
            self._upgrade_columns(conn)
            self._refingerprint(conn)

    def _fit_vector_column(self, dimension: int) -> None:
        """An empty store may change embedder (``check_embedder`` allowed it): the ``vector(n)``
        column follows the new dimension (its HNSW index is rebuilt with it)."""
        with self._errors("open"), self.engine.connect() as conn, conn.begin():
            found = conn.execute(text(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'memories'::regclass AND attname = 'embedding'"
            )).scalar()
            if found is not None and int(found) != dimension:
                conn.execute(text(f"ALTER TABLE memories ALTER COLUMN embedding TYPE vector({int(dimension)})"))

    def _vector_extension(self, conn: Connection) -> None:
        if conn.execute(text("SELECT to_regtype('vector')")).scalar() is not None:
            return
        elsewhere = conn.execute(text(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'vector'"
        )).scalar()
        if elsewhere is not None:
            raise StorageError(
                f"memory store {self.location}: the pgvector extension is installed in schema {elsewhere!r}, which "
                "is not on this connection's search_path; add it (e.g. ?options=-csearch_path%3Dmyschema,"
                f"{elsewhere} in the URL)"
            )
        try:
            with conn.begin_nested():
                conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        except DBAPIError as exc:
            raise StorageError(
                f"memory store {self.location} needs the pgvector extension, and this user may not create "
                "it: run CREATE EXTENSION vector; in that database as its owner or a superuser "
                f"({str(exc.orig).splitlines()[0]})"
            ) from exc

    # -- memories ---------------------------------------------------------------------------------

    def insert(
        self, new: Sequence[Memory], vectors: Sequence[np.ndarray | None], dedupe: bool
    ) -> list[tuple[Memory, int | None]]:
        """See :meth:`MemoryBackend.insert`."""
        outcome = self.insert_rows(new, vectors, dedupe)
        return [(memory, None) if row is None else (row_to_memory(row), row["pk"]) for memory, row in outcome]

    def supersede(
        self, old_id: str, new_id: str, revision: Revision, vector: np.ndarray | None, revive: bool
    ) -> tuple[Memory, int]:
        """See :meth:`MemoryBackend.supersede` (one transaction)."""
        _, new = self.supersede_row(old_id, new_id, revision, vector, revive)
        return row_to_memory(new), new["pk"]

    def put(self, memories: Sequence[Memory], vectors: Sequence[np.ndarray | None]) -> list[tuple[Memory, int]]:
        """See :meth:`MemoryBackend.put` (one transaction)."""
        return [(row_to_memory(new), new["pk"]) for _, new in self.put_rows(memories, vectors)]

    def update(self, memory_id: str, revision: Revision, vector: np.ndarray | None) -> Memory:
        """See :meth:`MemoryBackend.update`."""
        return row_to_memory(self.update_row(memory_id, revision, vector))

    def delete(self, memory_id: str, all_versions: bool) -> int:
        """See :meth:`MemoryBackend.delete`."""
        return len(self._delete_where(self._delete_condition(memory_id, all_versions))[0])

    def delete_matching(self, flt: MemoryFilter) -> int:
        """See :meth:`MemoryBackend.delete_matching`."""
        return len(self._delete_where(self.filter_condition(flt))[0])

    def erase_user(self, user_id: str) -> tuple[int, int]:
        """Delete a user's memories and messages, then ``VACUUM`` both tables so the dead rows'
        space is reclaimed. PostgreSQL's write-ahead log, replicas and backups keep their own
        copies until they are recycled: that is the database operator's side (see docs/postgres.md)."""
        flt = MemoryFilter(user_id=user_id, include_superseded=True)
        removed = len(self._delete_where(self.filter_condition(flt), erase=True)[0])
        messages = self.delete_messages(user_id, None)
        with self._errors("vacuum"), self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(text("VACUUM memories, chat_messages"))
        return removed, messages

    def load(self, rows: Sequence[tuple[Memory, np.ndarray | None]]) -> int:
        """See :meth:`MemoryBackend.load`."""
        return len(self.load_rows(rows))

    def set_embeddings(self, vectors: Mapping[int, np.ndarray]) -> bool:
        """See :meth:`MemoryBackend.set_embeddings` (False: not written, nothing kept)."""
        if not vectors:
            return True
        try:
            self.store_vectors(vectors)
        except StorageError as exc:
            logger.warning("could not store %d vector(s); the next search retries: %s", len(vectors), exc)
            return False
        return True

    # -- change detection -------------------------------------------------------------------------

    def refresh(self) -> list[int]:
        """The change counter (one query) and the rows (any version) still waiting for a vector."""
        with self._raw("read") as raw:
            seq, waiting = raw.execute(
                "SELECT (SELECT value FROM counters WHERE name = 'seq'), ARRAY(SELECT pk FROM memories "
                "WHERE embedding IS NULL AND searchable ORDER BY pk LIMIT 1000)"
            ).fetchone()
        self._version = int(seq or 0)
        return list(waiting)

    @property
    def version(self) -> int:
        """The change counter as of the last :meth:`refresh`."""
        return self._version

    # -- keyword side -----------------------------------------------------------------------------

    def keyword_query(self, terms: list[str], postings_budget: int, max_share: float) -> KeywordQuery | None:
        """See :meth:`MemoryBackend.keyword_query`."""
        if not terms:
            return None
        with self._raw() as raw:
            frequencies, rows, current, average = self._terms.frequencies(
                raw, self._version, terms, postings_budget, max_share)
        max_df = max(1, int(max_share * current)) if current >= 4 else None
        return keyword_weights(terms, frequencies, rows, average, postings_budget, max_df)

    def keyword_search(self, query: KeywordQuery, scope: SearchScope, limit: int) -> list[tuple[int, float]]:
        """See :meth:`MemoryBackend.keyword_search`: the GIN index finds the visible rows holding a
        term, BM25 ranks them (ties: older first)."""
        where, params = scope_sql(scope)
        with self._raw() as raw:
            texts = raw.execute(
                f"SELECT pk, search_text FROM memories WHERE tsv @@ %(match)s::tsquery AND {where} ORDER BY pk",
                {**params, "match": tsquery_literal(query.terms)},
            ).fetchall()
        scores = bm25_scores(texts, query)
        return sorted(scores.items(), key=lambda item: -item[1])[:limit]

    # -- vector side ------------------------------------------------------------------------------

    def _visible_count(self, raw: Any, scope: SearchScope) -> int:
        """How many vectors the scope sees (cached; re-counted after 256 changes)."""
        key = (tuple(scope.buckets()), scope.categories)
        cached = self._visible.get(key)
        if cached is not None and self._version - cached[1] <= 256:
            return cached[0]
        where, params = scope_sql(scope)
        count = int(raw.execute(f"SELECT count(*) FROM memories WHERE {where} AND embedding IS NOT NULL",
                                params).fetchone()[0])
        self._visible.put(key, (count, self._version))
        return count

    def nearest(
        self, vector: np.ndarray, scope: SearchScope, k: int, query: KeywordQuery | None = None,
        known: Sequence[int] = (),
    ) -> tuple[list[tuple[int, float]], Scores]:
        """See :meth:`MemoryBackend.nearest` (one statement: the hits with their indexed text, and
        the cosines of ``known``).

        Few visible vectors (or older versions, which the HNSW index leaves out): an exact scan of
        the caller's rows. Many: the HNSW index with the visibility restriction in the same query
        and ``hnsw.ef_search`` raised in proportion to how small a share of the store the caller
        sees; should the index still return fewer than ``k`` rows, the exact scan answers.
        """
        where, params = scope_sql(scope)
        params.update(q=np.asarray(vector, dtype=np.float32), k=k, known=list(known))
        visible_sql = f"FROM memories WHERE {where} AND embedding IS NOT NULL"
        # The HNSW index orders by distance; the exact scan sorts the visible rows by their cosine,
        # computed once per row (ordering by a second distance expression would compute it twice).
        indexed = (f"SELECT pk, 1 - (embedding <=> %(q)s) AS cos, search_text, true AS hit {visible_sql} "
                   "ORDER BY embedding <=> %(q)s LIMIT %(k)s")
        exact = (f"SELECT pk, cos, search_text, true AS hit FROM (SELECT pk, 1 - (embedding <=> %(q)s) AS cos, "
                 f"search_text {visible_sql}) AS visible ORDER BY cos DESC LIMIT %(k)s")
        known_sql = ("SELECT pk, 1 - (embedding <=> %(q)s), NULL, false FROM memories "
                     "WHERE pk = ANY(%(known)s) AND embedding IS NOT NULL")
        with self._raw() as raw:
            visible = self._visible_count(raw, scope) if not scope.history else 0
            use_index = not scope.history and visible > self.exact_max
            if use_index:
                self._set_ef(raw, visible, k)
            statement = indexed if use_index else exact
            if known:
                statement = f"({statement}) UNION ALL ({known_sql}) ORDER BY hit DESC, cos DESC"
            rows = raw.execute(statement, params).fetchall()
            hits = [(pk, float(cos), text) for pk, cos, text, hit in rows if hit]
            if use_index and len(hits) < min(k, visible):
                hits = [(pk, float(cos), text) for pk, cos, text, _ in raw.execute(exact, params).fetchall()]
        others, found = set(known), {pk for pk, _, _ in hits}
        texts = [(pk, text) for pk, _, text in hits if pk not in others]
        return [(pk, cos) for pk, cos, _ in hits], Scores(
            {pk: float(cos) for pk, cos, _, hit in rows if not hit and pk not in found},
            bm25_scores(texts, query) if query is not None else {},
        )

    def _set_ef(self, raw: Any, visible: int, k: int) -> None:
        """``hnsw.ef_search`` for a search seeing ``visible`` vectors: the configured value, raised
        for a caller who sees a small share of the store (a session setting, kept by the pooled
        connection, so it is only sent when it changes)."""
        current = self._terms.totals(raw, self._version)[1]
        share = visible / max(1, current, visible)
        ef = int(min(1000, max(self.ef_search, k, 2 * k / max(share, 1e-3))))
        if getattr(raw, "_headroom_ef", None) != ef:
            raw.execute("SELECT set_config('hnsw.ef_search', %(ef)s, false)", {"ef": str(ef)})
            raw._headroom_ef = ef

    def candidate_scores(
        self, vector: np.ndarray, query: KeywordQuery | None, need_cosine: Sequence[int], need_keyword: Sequence[int]
    ) -> Scores:
        """See :meth:`MemoryBackend.candidate_scores` (one query for both)."""
        wanted = {*need_cosine, *need_keyword}
        if not wanted:
            return Scores({}, {})
        with self._raw() as raw:
            rows = raw.execute(
                "SELECT pk, 1 - (embedding <=> %(q)s), search_text FROM memories WHERE pk = ANY(%(pks)s)",
                {"q": np.asarray(vector, dtype=np.float32), "pks": sorted(wanted)},
            ).fetchall()
        return self._scores(rows, query, need_cosine, need_keyword)

    @staticmethod
    def _scores(rows: Sequence[tuple[int, float | None, str]], query: KeywordQuery | None,
                need_cosine: Iterable[int], need_keyword: Iterable[int]) -> Scores:
        """The wanted scores from rows of (pk, cosine or None, indexed text)."""
        cosine_of, keyword_of = set(need_cosine), set(need_keyword)
        cosines = {pk: float(cos) for pk, cos, _ in rows if pk in cosine_of and cos is not None}
        texts = [(pk, text) for pk, _, text in rows if pk in keyword_of]
        return Scores(cosines, bm25_scores(texts, query) if query is not None else {})

    def neighbours(
        self, pks: Iterable[int], scope: SearchScope, vector: np.ndarray, query: KeywordQuery | None,
        span: int = 1, reach: int = 8,
    ) -> tuple[dict[int, list[int]], Scores]:
        """See :meth:`MemoryBackend.neighbours`: the nearest ``span`` current rows of the same bucket
        on each side, at most ``reach`` primary keys away (the same rule as the SQLite index),
        found by the database with their cosines and texts (one query)."""
        pks = list(pks)
        if not pks:
            return {}, Scores({}, {})
        where, params = scope_sql(SearchScope(scope.user_id, scope.session_id, scope.agent_id, scope.turn_id,
                                              scopes=scope.scopes))
        params.update(given=pks, reach=reach, span=span, q=np.asarray(vector, dtype=np.float32))
        with self._raw() as raw:
            rows = raw.execute(neighbours_sql(where), params).fetchall()
        allowed = None if scope.categories is None else {c.value for c in scope.categories}
        out: dict[int, list[int]] = {}
        scored = []
        for pk, other, category, cos, indexed in rows:
            found = out.setdefault(pk, [])
            if other is not None and (allowed is None or category in allowed):
                found.append(other)
                scored.append((other, cos, indexed))
        linked = {other for other, _, _ in scored} - set(pks)
        return out, self._scores(scored, query, linked, linked)

    def rows(self, pks: Sequence[int]) -> dict[int, StoredRow]:
        """See :meth:`MemoryBackend.rows` (vectors read in binary)."""
        if not pks:
            return {}
        columns = [*self._columns, "embedding", "fingerprint"]
        with self._raw() as raw, raw.cursor(binary=True) as cursor:
            found = cursor.execute(f"SELECT {', '.join(columns)} FROM memories WHERE pk = ANY(%(pks)s)",
                                   {"pks": list(pks)}).fetchall()
        out = {}
        for values in found:
            m = dict(zip(columns, values))
            out[m["pk"]] = StoredRow(row_to_memory(m), m["embedding"], m["fingerprint"])
        return out

    def check_index(self, repair: bool) -> dict[str, int]:
        """See :meth:`MemoryBackend.check_index`: the database keeps its own indexes in step, so
        only their presence is checked (``indexes_missing``; ``repair`` creates them)."""
        return {"indexes_missing": self.missing_indexes(repair)}

    # -- lifecycle --------------------------------------------------------------------------------

    def save(self) -> None:
        """Nothing to save: PostgreSQL holds everything."""

    def close(self) -> None:
        """Return every pooled connection."""
        self.engine.dispose()
