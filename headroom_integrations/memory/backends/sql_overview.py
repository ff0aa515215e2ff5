"""Whole-store reads and writes over the memory tables (portable SQL): counts per store and per
user, dumps and loads of every version with its vector, and the checks of version chains the
``doctor`` runs. Mixed into :class:`~headroom_integrations.memory.backends.sql_store.SqlStore`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import and_, case, func, inspect, select, true

from headroom_integrations.memory.backends.rows import memory_row, row_to_memory
from headroom_integrations.memory.models import Memory, MemoryCategory, MemoryScope, UserCounts

__all__ = ["SqlOverview"]


class SqlOverview:
    """Counts, dumps, loads and chain checks of a :class:`SqlStore` (see that class for the attributes used).

    Example (through a backend)::

        backend.users()  # [UserCounts(user_id='alice', total=3, current=2), ...]
        for batch in backend.dump(1000, user_id="alice"):
            ...
    """

    tables: Any
    _no_embedding: list[Any]

    def stats(self, user_id: str | None) -> dict[str, Any]:
        """Counts: total rows, current, superseded, current ones by category and by scope."""
        m = self.tables.memories
        where = true() if user_id is None else m.c.user_id == user_id
        current = and_(where, m.c.valid_to.is_(None))
        with self.read() as conn:  # type: ignore[attr-defined]
            total = conn.execute(select(func.count()).select_from(m).where(where)).scalar_one()
            by = {
                column: dict(conn.execute(select(m.c[column], func.count()).where(current).group_by(m.c[column])).all())
                for column in ("category", "scope")
            }
        n_current = sum(by["scope"].values())
        return {
            "total": int(total), "current": int(n_current), "superseded": int(total - n_current),
            "categories": {c.value: int(by["category"].get(c.value, 0)) for c in MemoryCategory},
            "scopes": {s.value: int(by["scope"].get(s.value, 0)) for s in MemoryScope},
        }

    def users(self) -> list[UserCounts]:
        """Every user with memories and their counts, by user id."""
        m = self.tables.memories
        current = func.sum(case((m.c.valid_to.is_(None), 1), else_=0))
        statement = select(m.c.user_id, func.count(), current).group_by(m.c.user_id).order_by(m.c.user_id)
        with self.read() as conn:  # type: ignore[attr-defined]
            return [UserCounts(user, int(total), int(live or 0)) for user, total, live in conn.execute(statement)]

    def dump(
        self, batch_size: int = 1000, user_id: str | None = None
    ) -> Iterator[list[tuple[Memory, np.ndarray | None]]]:
        """Every memory (all versions; of one user when given) with its vector, in batches, in
        primary-key order (the order they were stored in)."""
        m = self.tables.memories
        whose = true() if user_id is None else m.c.user_id == user_id
        last = 0
        while True:
            with self.connect() as conn:  # type: ignore[attr-defined]
                rows = conn.execute(
                    select(*self._no_embedding, m.c.embedding).where(m.c.pk > last, whose)
                    .order_by(m.c.pk).limit(batch_size)
                ).all()
            if not rows:
                return
            last = rows[-1].pk
            yield [(row_to_memory(r._mapping), self._vector_of(r.embedding)) for r in rows]  # type: ignore[attr-defined]

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of these memory ids are stored."""
        m = self.tables.memories
        if not ids:
            return set()
        with self.connect() as conn:  # type: ignore[attr-defined]
            return set(conn.execute(select(m.c.id).where(m.c.id.in_(list(ids)))).scalars())

    def load_rows(self, rows: Sequence[tuple[Memory, np.ndarray | None]]) -> list[dict[str, Any]]:
        """Store memories exactly as given; ids already present are skipped. The rows written."""
        m = self.tables.memories
        if not rows:
            return []
        with self.write() as conn:  # type: ignore[attr-defined]
            self._lock_writes(conn)  # type: ignore[attr-defined]
            ids = [memory.id for memory, _ in rows]
            present = set(conn.execute(select(m.c.id).where(m.c.id.in_(ids))).scalars())
            fresh = []
            for memory, vector in rows:
                if memory.id in present:
                    continue
                present.add(memory.id)
                row = memory_row(memory)
                row["embedding"] = None if vector is None else self._vector_value(vector)  # type: ignore[attr-defined]
                fresh.append(self._prepare(row))  # type: ignore[attr-defined]
            self._insert_rows(conn, fresh)  # type: ignore[attr-defined]
        return fresh

    def chain_problems(self) -> dict[str, int]:
        """Version chains that are not well formed: ``chains_with_several_current`` (a fact with
        more than one current version). A link to a deleted version is not a problem: deleting a
        version keeps its neighbours' links, so the history shows where it was."""
        m = self.tables.memories
        several = (
            select(m.c.chain_id).where(m.c.valid_to.is_(None)).group_by(m.c.chain_id).having(func.count() > 1)
        ).subquery()
        with self.read() as conn:  # type: ignore[attr-defined]
            count = conn.execute(select(func.count()).select_from(several)).scalar_one()
        return {"chains_with_several_current": int(count)}

    def missing_indexes(self, repair: bool) -> int:
        """How many of the memory table's indexes the database lacks; ``repair`` creates them."""
        m = self.tables.memories
        with self.connect() as conn:  # type: ignore[attr-defined]
            present = {index["name"] for index in inspect(conn).get_indexes(m.name)}
        missing = [index for index in m.indexes if index.name not in present]
        if repair and missing:
            with self.write() as conn:  # type: ignore[attr-defined]
                for index in missing:
                    index.create(conn, checkfirst=True)
        return len(missing)
