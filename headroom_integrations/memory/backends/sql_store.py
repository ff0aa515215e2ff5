"""The memory tables over SQLAlchemy Core, shared by the SQLite and PostgreSQL backends.

Everything here is portable SQL: writes, versioning, filters, history, stats, the chat log and
the copy used by migration. A backend subclass supplies its engine, its tables and a few hooks
(how transactions begin, how errors are named, how vectors are stored, fast row reads).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    bindparam,
    delete,
    insert,
    select,
    true,
    update,
)

from headroom_integrations.errors import (
    EmbedderMismatchError,
    MemoryAlreadySupersededError,
    MemoryNotFoundError,
    StorageError,
)
from headroom_integrations.memory.backends.base import ROLLED_BACK_TO, Revision, SearchScope, StoredRow
from headroom_integrations.memory.backends.rows import memory_row, naive, now_utc, row_to_memory
from headroom_integrations.memory.backends.schema import SCHEMA_VERSION, Tables
from headroom_integrations.memory.backends.sql_chat import SqlChatLog
from headroom_integrations.memory.backends.sql_filters import filter_condition, scope_condition
from headroom_integrations.memory.backends.sql_items import INDEX_COLUMNS, SqlItems
from headroom_integrations.memory.backends.sql_overview import SqlOverview
from headroom_integrations.memory.models import Memory, MemoryFilter
from headroom_integrations.memory.text_query import FINGERPRINT_VERSION, fingerprint, index_text
from headroom_integrations.memory.validation import metadata_json
from headroom_integrations.memory.visibility import bucket_key

__all__ = ["INDEX_COLUMNS", "SqlStore"]



class SqlStore(SqlItems, SqlOverview, SqlChatLog):
    """Blocking, thread-safe access to the memory tables of one database (portable SQL).

    Subclasses set :attr:`engine`, :attr:`tables`, :attr:`location` and may override the hooks
    ``_errors``, ``write``, ``read``, ``_lock_writes``, ``_prepare``, ``_vector_value``,
    ``_vector_of`` and ``_read_rows``.

    Example (the SQLite backend is one)::

        store = SqliteBackend(None, "test/model", 8)
        store.stats(None)["total"]  # 0
    """

    engine: Engine
    tables: Tables
    location: str

    def _setup_statements(self) -> None:
        t = self.tables
        m = t.memories
        self._no_embedding = [c for c in m.c if c.name not in ("embedding", "search_text", "fingerprint", "tsv")]
        self._columns = [c.name for c in self._no_embedding]
        # Statements of the write path are built once: building one costs SQLAlchemy more than running it.
        self._bump = (
            update(t.counters).where(t.counters.c.name == "seq")
            .values(value=t.counters.c.value + bindparam("count", type_=BigInteger)).returning(t.counters.c.value)
        )
        self._twins = select(*self._no_embedding).where(
            m.c.user_id == bindparam("user_id"), m.c.fingerprint == bindparam("fingerprint"), m.c.valid_to.is_(None)
        )
        self._insert = insert(m).returning(m.c.pk, sort_by_parameter_order=True)
        self._current_seq = select(t.counters.c.value).where(t.counters.c.name == "seq")

    # -- hooks ------------------------------------------------------------------------------------

    def _errors(self, action: str) -> contextlib.AbstractContextManager[None]:
        """Turns driver errors inside the block into a :class:`StorageError` naming the store."""
        raise NotImplementedError

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction."""
        with self._errors("write"), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction (one consistent snapshot)."""
        with self._errors("read"), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection for single-statement reads."""
        with self._errors("read"), self.engine.connect() as conn:
            yield conn

    def _lock_writes(self, conn: Connection) -> None:
        """Serialise writers from here to the commit (SQLite's ``BEGIN IMMEDIATE`` already does)."""

    def _prepare(self, row: dict[str, Any]) -> dict[str, Any]:
        """Backend columns derived from a row before it is written (e.g. a ``tsvector``)."""
        return row

    def _vector_value(self, vector: np.ndarray) -> Any:
        """A vector as the ``embedding`` column stores it."""
        return np.asarray(vector, dtype=np.float32).tobytes()

    def _vector_of(self, value: Any) -> np.ndarray | None:
        """A stored ``embedding`` value as a float32 vector."""
        if value is None:
            return None
        if isinstance(value, (bytes, bytearray, memoryview)):
            return np.frombuffer(value, dtype=np.float32)
        return np.asarray(value, dtype=np.float32)

    def _read_rows(self, conn: Connection, columns: list[str], pks: Sequence[int]) -> list[dict[str, Any]]:
        """The given columns of these rows as mappings (SQLite overrides it with driver SQL)."""
        m = self.tables.memories
        statement = select(*[m.c[name] for name in columns]).where(m.c.pk.in_(list(pks)))
        return [dict(r._mapping) for r in conn.execute(statement)]

    # -- schema -----------------------------------------------------------------------------------

    def _check_schema(self, conn: Connection) -> None:
        """Record the schema version on a new store; refuse a store written by newer code."""
        meta = self.tables.meta
        found = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
        if found is None:
            conn.execute(insert(meta).values(key="schema_version", value=SCHEMA_VERSION))
        elif int(found) > int(SCHEMA_VERSION):
            raise StorageError(
                f"memory store {self.location} has schema version {found}, newer than this version of "
                f"headroom_integrations knows ({SCHEMA_VERSION}); upgrade the package to open it"
            )
        counters = self.tables.counters
        if conn.execute(select(counters.c.value).where(counters.c.name == "seq")).first() is None:
            conn.execute(insert(counters).values(name="seq", value=0))

    def _refingerprint(self, conn: Connection) -> None:
        """Recompute every stored fingerprint when the fingerprint function changed (older stores)."""
        meta, m = self.tables.meta, self.tables.memories
        found = conn.execute(select(meta.c.value).where(meta.c.key == "fingerprint_version")).scalar()
        if found == FINGERPRINT_VERSION:
            return
        last = 0
        while True:
            rows = conn.execute(select(m.c.pk, m.c.content).where(m.c.pk > last).order_by(m.c.pk).limit(5000)).all()
            if not rows:
                break
            last = rows[-1][0]
            conn.execute(
                update(m).where(m.c.pk == bindparam("row_pk")).values(fingerprint=bindparam("print")),
                [{"row_pk": pk, "print": fingerprint(content)} for pk, content in rows],
            )
        conn.execute(delete(meta).where(meta.c.key == "fingerprint_version"))
        conn.execute(insert(meta).values(key="fingerprint_version", value=FINGERPRINT_VERSION))

    def check_embedder(self, name: str, dimension: int) -> None:
        """Record the embedder on first use; refuse another embedder afterwards.

        Raises:
            EmbedderMismatchError: the database holds vectors of another embedder or dimension.
        """
        meta = self.tables.meta
        stored = self.meta()
        old_name, old_dim = stored.get("embedder_name"), stored.get("embedder_dimension")
        if old_name == name and old_dim == str(dimension):
            return
        with self.write() as conn:
            has_rows = conn.execute(select(self.tables.memories.c.pk).limit(1)).first() is not None
            if old_name is not None and has_rows:
                raise EmbedderMismatchError(
                    f"database {self.location} was written with embedder {old_name!r} "
                    f"({old_dim} dimensions) but this configuration uses {name!r} ({dimension} dimensions); "
                    "open it with the same embedder or use another database"
                )
            for key, value in (("embedder_name", name), ("embedder_dimension", str(dimension))):
                conn.execute(delete(meta).where(meta.c.key == key))
                conn.execute(insert(meta).values(key=key, value=value))

    def meta(self) -> dict[str, str]:
        """Store-wide facts (schema version, embedder name and dimension, ...)."""
        meta = self.tables.meta
        with self.connect() as conn:
            return dict(conn.execute(select(meta.c.key, meta.c.value)).all())  # type: ignore[arg-type]

    def set_meta(self, key: str, value: str) -> None:
        """Record a store-wide fact."""
        meta = self.tables.meta
        with self.write() as conn:
            conn.execute(delete(meta).where(meta.c.key == key))
            conn.execute(insert(meta).values(key=key, value=value))

    # -- writes -----------------------------------------------------------------------------------

    def _bump_seq(self, conn: Connection, count: int = 1) -> int:
        """Reserve ``count`` change numbers; return the last one."""
        return int(conn.execute(self._bump, {"count": count}).scalar_one())

    write_chunk: int | None = None
    """Rows per INSERT statement of a batch (None: one statement). When set, :meth:`insert_rows`
    reads ``vectors`` chunk by chunk inside its transaction, so the caller may still be computing
    the later chunks while the first ones are written."""

    def _new_rows(self, memories: Sequence[Memory], vectors: Sequence[np.ndarray | None]) -> list[dict[str, Any]]:
        rows = []
        for memory, vector in zip(memories, vectors):
            row = memory_row(memory)
            row["embedding"] = None if vector is None else self._vector_value(vector)
            rows.append(self._prepare(row))
        return rows

    def insert_rows(
        self, new: Sequence[Memory], vectors: Sequence[np.ndarray | None], dedupe: bool
    ) -> list[tuple[Memory, dict[str, Any] | None]]:
        """Store new memories in one transaction; per memory, the stored value and its written row
        (with ``pk`` and ``seq``), or the existing twin and None (``dedupe``)."""
        step = self.write_chunk or max(1, len(new))
        first = self._new_rows(new[:step], vectors[:step])  # built before the transaction starts
        outcome: list[tuple[Memory, dict[str, Any] | None]] = []
        with self.write() as conn:
            self._lock_writes(conn)
            seen: dict[tuple[str, Any], Memory] = {}
            for start in range(0, len(new), step):
                part = new[start : start + step]
                rows = first if start == 0 else self._new_rows(part, vectors[start : start + step])
                fresh = []
                for memory, row in zip(part, rows):
                    twin = None
                    if dedupe:
                        key = (row["fingerprint"], bucket_key(memory.user_id, memory.scope, memory.session_id,
                                                              memory.agent_id, memory.turn_id))
                        twin = seen.get(key) or self._twin(conn, row, key[1])
                        if twin is None:
                            seen[key] = memory
                    outcome.append((twin or memory, None if twin else row))
                    if twin is None:
                        fresh.append(row)
                self._insert_rows(conn, fresh)
        return outcome

    def _insert_rows(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Insert rows with consecutive new change numbers; each row gets its ``seq`` and ``pk``."""
        if not rows:
            return
        last = self._bump_seq(conn, len(rows))
        for offset, row in enumerate(rows):
            row["seq"] = last - len(rows) + 1 + offset
        for row, pk in zip(rows, conn.execute(self._insert, rows).scalars()):
            row["pk"] = pk

    def _twin(self, conn: Connection, row: dict[str, Any], bucket: Any) -> Memory | None:
        for candidate in conn.execute(self._twins, {"user_id": row["user_id"], "fingerprint": row["fingerprint"]}):
            memory = row_to_memory(candidate._mapping)
            if bucket_key(memory.user_id, memory.scope, memory.session_id, memory.agent_id, memory.turn_id) == bucket:
                return memory
        return None

    def supersede_row(
        self, old_id: str, new_id: str, revision: Revision, vector: np.ndarray | None, revive: bool
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Close ``old_id``'s validity and insert its successor in one transaction; the old row (as
        it was, with ``pk``) and the new row (with ``pk`` and ``seq``; the old row's is ``seq - 1``)."""
        m = self.tables.memories
        with self.write() as conn:
            self._lock_writes(conn)
            found = conn.execute(select(*self._no_embedding).where(m.c.id == old_id)).first()
            if found is None:
                raise MemoryNotFoundError(old_id)
            old_row = dict(found._mapping)
            old = row_to_memory(old_row)
            if not old.searchable:
                vector = None  # stored for lookup only: never embedded
            if not old.is_current:
                headless = conn.execute(
                    select(m.c.pk).where(m.c.chain_id == old.chain_id, m.c.valid_to.is_(None))
                ).first() is None
                if not (revive and headless):
                    raise MemoryAlreadySupersededError(old_id, old.superseded_by, successor_deleted=headless)
            stamp = now_utc()
            content = revision.content if revision.content is not None else old.content
            # Only the version a rollback created is a rollback: its successors do not inherit the mark.
            metadata = ({k: v for k, v in old.metadata.items() if k != ROLLED_BACK_TO}
                        if revision.metadata is None else dict(revision.metadata))
            [new] = self._new_rows([Memory(
                id=new_id, content=content, user_id=old.user_id, session_id=old.session_id,
                agent_id=old.agent_id, turn_id=old.turn_id, scope=old.scope,
                category=revision.category or old.category,
                importance=old.importance if revision.importance is None else revision.importance,
                metadata=metadata,
                created_at=stamp, updated_at=stamp, valid_from=stamp, supersedes=old_id, chain_id=old.chain_id,
                namespace=old.namespace, key=old.key, expires_at=old.expires_at, searchable=old.searchable,
                observed_at=stamp if revision.observed_at is None else naive(revision.observed_at),
            )], [vector])
            new = self._link_successor(conn, old_row, new, stamp)
        return old_row, new

    def _link_successor(self, conn: Connection, old_row: dict[str, Any], new: dict[str, Any], stamp: Any
                        ) -> dict[str, Any]:
        """Inside a write: close ``old_row``'s validity (if current), point it at ``new`` and insert
        ``new`` (a row of :meth:`_new_rows`). Both rows are updated in place (``pk``, ``seq``)."""
        m = self.tables.memories
        last = self._bump_seq(conn, 2)
        closed = {"valid_to": stamp} if old_row["valid_to"] is None else {}
        conn.execute(update(m).where(m.c.id == old_row["id"]).values(
            **closed, superseded_by=new["id"], updated_at=stamp, seq=last - 1))
        new["seq"] = last
        new["pk"] = conn.execute(insert(m).returning(m.c.pk), new).scalar_one()
        old_row.update(closed, superseded_by=new["id"], seq=last - 1)
        return new

    def update_row(self, memory_id: str, revision: Revision, vector: np.ndarray | None) -> dict[str, Any]:
        """Change a memory in place; its row as written (with ``pk`` and ``seq``)."""
        m = self.tables.memories
        values: dict[str, Any] = {}
        if revision.content is not None:
            values.update(content=revision.content, search_text=index_text(revision.content),
                          fingerprint=fingerprint(revision.content))
            values["embedding"] = None if vector is None else self._vector_value(vector)
        if revision.category is not None:
            values["category"] = revision.category.value
        if revision.importance is not None:
            values["importance"] = revision.importance
        if revision.metadata is not None:
            values["meta_json"] = metadata_json(revision.metadata)
        if revision.observed_at is not None:
            values["observed_at"] = naive(revision.observed_at)
        values = self._prepare(values)
        with self.write() as conn:
            self._lock_writes(conn)
            if revision.content is not None and conn.execute(
                select(m.c.searchable).where(m.c.id == memory_id)
            ).scalar() in (False, 0):  # stored for lookup only: never embedded
                values.update(embedding=None, search_text="")
                values = self._prepare(values)
            seq = self._bump_seq(conn)
            found = conn.execute(
                update(m).where(m.c.id == memory_id).values(**values, updated_at=now_utc(), seq=seq)
                .returning(*self._no_embedding)
            ).first()
            if found is None:
                raise MemoryNotFoundError(memory_id)
        return dict(found._mapping)

    def _delete_where(self, condition: ColumnElement[bool], erase: bool = False) -> tuple[list[int], int]:
        """Delete the memories matching ``condition``; their pks and the change number. ``erase``
        marks the deletion as an erasure (every process overwrites the vectors too)."""
        m, tombstones = self.tables.memories, self.tables.tombstones
        with self.write() as conn:
            self._lock_writes(conn)
            pks = list(conn.execute(select(m.c.pk).where(condition)).scalars())
            if not pks:
                return [], 0
            seq = self._bump_seq(conn)
            for start in range(0, len(pks), 500):
                chunk = pks[start : start + 500]
                conn.execute(delete(m).where(m.c.pk.in_(chunk)))
                conn.execute(insert(tombstones), [{"pk": pk, "seq": seq, "scrub": int(erase)} for pk in chunk])
        return pks, seq

    def _delete_condition(self, memory_id: str, all_versions: bool) -> ColumnElement[bool]:
        m = self.tables.memories
        if not all_versions:
            return m.c.id == memory_id
        return m.c.chain_id == select(m.c.chain_id).where(m.c.id == memory_id).scalar_subquery()

    # -- reads ------------------------------------------------------------------------------------

    def get(self, memory_id: str) -> Memory | None:
        """The memory with this id, or None."""
        m = self.tables.memories
        with self.connect() as conn:
            row = conn.execute(select(*self._no_embedding).where(m.c.id == memory_id)).first()
        return None if row is None else row_to_memory(row._mapping)

    def query(self, flt: MemoryFilter) -> list[Memory]:
        """Memories matching a filter, oldest first (or latest version first)."""
        m = self.tables.memories
        statement = (
            select(*self._no_embedding).where(self.filter_condition(flt))
            .order_by(*((m.c.valid_from.desc(), m.c.pk.desc()) if flt.newest_first else (m.c.created_at, m.c.pk)))
            .offset(flt.offset)
        )
        if flt.limit is not None:
            statement = statement.limit(flt.limit)
        with self.connect() as conn:
            return [row_to_memory(row._mapping) for row in conn.execute(statement)]

    def history(self, memory_id: str) -> list[Memory]:
        """Every version of the fact ``memory_id`` belongs to, oldest first.

        Raises:
            MemoryNotFoundError: no such memory.
        """
        m = self.tables.memories
        with self.read() as conn:
            chain = conn.execute(select(m.c.chain_id).where(m.c.id == memory_id)).scalar()
            if chain is None:
                raise MemoryNotFoundError(memory_id)
            rows = conn.execute(
                select(*self._no_embedding).where(m.c.chain_id == chain).order_by(m.c.valid_from, m.c.pk)
            ).all()
        return [row_to_memory(row._mapping) for row in rows]

    def stored_rows(self, pks: Sequence[int]) -> dict[int, StoredRow]:
        """The given memories with their vectors and fingerprints (missing ones left out)."""
        if not pks:
            return {}
        with self.connect() as conn:
            rows = self._read_rows(conn, [*self._columns, "embedding", "fingerprint"], pks)
        return {m["pk"]: StoredRow(row_to_memory(m), self._vector_of(m["embedding"]), m["fingerprint"]) for m in rows}

    def without_embedding(self, pks: Sequence[int] | None = None) -> list[tuple[int, str]]:
        """(pk, content) of rows still waiting for their vector (all, or among ``pks``); any version:
        point-in-time and history searches score older versions by their vectors too."""
        m = self.tables.memories
        statement = select(m.c.pk, m.c.content).where(m.c.embedding.is_(None), m.c.searchable == true())
        if pks is not None:
            if not pks:
                return []
            statement = statement.where(m.c.pk.in_(list(pks)))
        with self.connect() as conn:
            return [(r[0], r[1]) for r in conn.execute(statement.order_by(m.c.pk))]

    def store_vectors(self, vectors: Mapping[int, np.ndarray]) -> list[dict[str, Any]]:
        """Store vectors of rows that had none; the index columns of the rows updated (each with a
        new change number)."""
        m = self.tables.memories
        updated = []
        with self.write() as conn:
            self._lock_writes(conn)
            for pk, vector in vectors.items():
                seq = self._bump_seq(conn)
                row = conn.execute(
                    update(m).where(m.c.pk == pk, m.c.embedding.is_(None))
                    .values(embedding=self._vector_value(vector), seq=seq)
                    .returning(*[m.c[name] for name in INDEX_COLUMNS])
                ).first()
                if row is not None:
                    updated.append(dict(row._mapping))
        return updated

    # -- filters ----------------------------------------------------------------------------------

    def filter_condition(self, flt: MemoryFilter) -> ColumnElement[bool]:
        """The SQL condition of a :class:`MemoryFilter`."""
        return filter_condition(self.tables.memories, flt)

    def scope_condition(self, scope: SearchScope) -> ColumnElement[bool]:
        """The SQL condition of a search scope."""
        return scope_condition(self.tables.memories, scope)
