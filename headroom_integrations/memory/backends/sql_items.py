"""Key-value items over the memory tables (portable SQL): a put that versions an item by its
(user, namespace, key), expiry updates, and the in-place upgrade of stores older than the item
columns. Mixed into :class:`~headroom_integrations.memory.backends.sql_store.SqlStore`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, inspect, select, update

from headroom_integrations.memory.backends.rows import naive, now_utc, row_to_memory
from headroom_integrations.memory.backends.schema import ADDED_COLUMNS, SCHEMA_VERSION
from headroom_integrations.memory.models import Memory
from headroom_integrations.memory.namespaces import encode_namespace

__all__ = ["INDEX_COLUMNS", "SqlItems"]

INDEX_COLUMNS = ("pk", "seq", "valid_to", "user_id", "scope", "session_id", "agent_id", "turn_id", "category",
                 "searchable")
"""The columns that say where a row belongs in a vector index (no content)."""


class SqlItems:
    """Item writes and schema upgrades of a :class:`SqlStore` (see that class for the attributes used).

    Example (through a backend)::

        [(old, new)] = backend.put_rows([new_memory_with_namespace_and_key], [vector])
        old is None  # True: the first version of this item
    """

    tables: Any
    _no_embedding: list[Any]

    def put_rows(
        self, memories: Sequence[Memory], vectors: Sequence[np.ndarray | None]
    ) -> list[tuple[dict[str, Any] | None, dict[str, Any]]]:
        """Store a new version of each item (``memory.user_id``, ``namespace``, ``key``), all in one
        transaction, in order: each supersedes the item's current version, or continues the
        history of an item whose current version was deleted (its latest remaining version), or
        starts a new item.

        Returns per memory the previous version's row as updated (None for a new item) and the
        new row (with ``pk`` and ``seq``). A version stored after a current one keeps the item's
        ``created_at`` (its ``observed_at`` is now: the value was stated now); a lookup-only
        memory (``searchable=False``) is stored without a vector.
        """
        m = self.tables.memories
        out: list[tuple[dict[str, Any] | None, dict[str, Any]]] = []
        with self.write() as conn:  # type: ignore[attr-defined]
            self._lock_writes(conn)  # type: ignore[attr-defined]
            for memory, vector in zip(memories, vectors, strict=True):
                out.append(self._put_one(conn, m, memory, vector if memory.searchable else None))
        return out

    def _put_one(
        self, conn: Connection, m: Any, memory: Memory, vector: np.ndarray | None
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        found = conn.execute(
            select(*self._no_embedding).where(
                m.c.user_id == memory.user_id, m.c.namespace == encode_namespace(memory.namespace or ()),
                m.c.item_key == memory.key,
            ).order_by(m.c.valid_to.is_(None).desc(), m.c.valid_from.desc(), m.c.pk.desc()).limit(1)
        ).first()
        stamp = now_utc()
        old_row = None if found is None else dict(found._mapping)
        if old_row is None:
            memory = dataclasses.replace(memory, created_at=stamp, updated_at=stamp, valid_from=stamp,
                                         chain_id=memory.id, observed_at=stamp)
        else:
            old = row_to_memory(old_row)
            memory = dataclasses.replace(memory, created_at=old.created_at if old.is_current else stamp,
                                         updated_at=stamp, valid_from=stamp, supersedes=old.id, chain_id=old.chain_id,
                                         observed_at=stamp)
        [row] = self._new_rows([memory], [vector])  # type: ignore[attr-defined]
        if old_row is None:
            self._insert_rows(conn, [row])  # type: ignore[attr-defined]
            return None, row
        return old_row, self._link_successor(conn, old_row, row, stamp)  # type: ignore[attr-defined]

    def set_expiry(self, expiries: Mapping[str, datetime | None]) -> None:
        """Set the expiry of memories by id (see :meth:`expiry_rows`)."""
        self.expiry_rows(expiries)

    def expiry_rows(self, expiries: Mapping[str, datetime | None]) -> list[dict[str, Any]]:
        """Set the expiry of memories by id (missing ids are ignored); nothing else changes but
        their change number (cached copies of them are stale). The index columns and vector of
        each row updated."""
        m = self.tables.memories
        by_time: dict[datetime | None, list[str]] = {}
        for memory_id, when in expiries.items():
            by_time.setdefault(naive(when), []).append(memory_id)
        if not by_time:
            return []
        returned = [*(m.c[name] for name in INDEX_COLUMNS), m.c.embedding]
        updated: list[dict[str, Any]] = []
        with self.write() as conn:  # type: ignore[attr-defined]
            self._lock_writes(conn)  # type: ignore[attr-defined]
            seq = self._bump_seq(conn)  # type: ignore[attr-defined]
            for when, ids in by_time.items():
                for start in range(0, len(ids), 500):
                    statement = (update(m).where(m.c.id.in_(ids[start : start + 500]))
                                 .values(expires_at=when, seq=seq).returning(*returned))
                    updated.extend(dict(row._mapping) for row in conn.execute(statement))
        return updated

    def _upgrade_columns(self, conn: Connection) -> None:
        """Add the columns of :data:`ADDED_COLUMNS` a store made by an older version lacks (an added
        ``observed_at`` is filled with ``created_at``), build missing indexes and record the
        current schema version (inside the caller's write)."""
        m, meta = self.tables.memories, self.tables.meta
        present = {column["name"] for column in inspect(conn).get_columns("memories")}
        for name in ADDED_COLUMNS:
            if name in present:
                continue
            column = m.c[name]
            ddl = f"ALTER TABLE memories ADD COLUMN {name} {column.type.compile(dialect=conn.dialect)}"
            if not column.nullable:
                ddl += " NOT NULL"
            if column.server_default is not None:
                ddl += f" DEFAULT '{column.server_default.arg}'"
            conn.exec_driver_sql(ddl)
            if name == "observed_at":  # rows stored before it: the fact was stated when it was stored
                conn.execute(update(m).where(m.c.observed_at.is_(None)).values(observed_at=m.c.created_at))
        for index in m.indexes:  # an index added since the store was created (built once, here)
            index.create(conn, checkfirst=True)
        found = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
        if found is not None and int(found) < int(SCHEMA_VERSION):
            conn.execute(update(meta).where(meta.c.key == "schema_version").values(value=SCHEMA_VERSION))
