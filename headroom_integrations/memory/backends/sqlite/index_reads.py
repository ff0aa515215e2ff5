"""What the vector index reads from the SQLite file when it opens: plain driver SQL over one
read snapshot, since at a million rows SQLAlchemy's row processing costs more than SQLite's scan."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from sqlalchemy import Connection

__all__ = ["current_rows", "current_vectors"]

_ROWS = ("SELECT pk, seq, user_id, scope, session_id, agent_id, turn_id, category FROM memories "
         "WHERE valid_to IS NULL AND embedding IS NOT NULL ORDER BY pk")
_RANGE = ("SELECT pk, embedding FROM memories WHERE pk BETWEEN ? AND ? AND valid_to IS NULL "
          "AND embedding IS NOT NULL ORDER BY pk")
_IN = "SELECT pk, embedding FROM memories WHERE pk IN ({}) AND valid_to IS NULL AND embedding IS NOT NULL"


def current_rows(conn: Connection, batch_size: int = 50_000) -> Iterator[list[tuple[Any, ...]]]:
    """Every current memory with a vector, without the vector, in primary-key order and batches:
    (pk, seq, user_id, scope, session_id, agent_id, turn_id, category)."""
    cursor = conn.connection.driver_connection.execute(_ROWS)  # type: ignore[union-attr]
    while True:
        rows = cursor.fetchmany(batch_size)
        if not rows:
            return
        yield rows


def current_vectors(conn: Connection, pks: list[int], dim: int, batch_size: int = 20_000
                    ) -> Iterator[tuple[list[int], np.ndarray]]:
    """The stored vectors of these current memories (sorted primary keys), in batches of
    (primary keys found, (n, dim) float32 matrix). Dense runs of keys are read as a range scan,
    scattered ones by key."""
    driver = conn.connection.driver_connection  # type: ignore[union-attr]
    for first in range(0, len(pks), batch_size):
        part = pks[first : first + batch_size]
        if part[-1] - part[0] < 2 * len(part):
            wanted = set(part)
            rows = [r for r in driver.execute(_RANGE, (part[0], part[-1])) if r[0] in wanted]
        else:
            rows = []
            for at in range(0, len(part), 500):
                chunk = part[at : at + 500]
                rows += driver.execute(_IN.format(",".join("?" * len(chunk))), chunk).fetchall()
        if rows:
            matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
            yield [r[0] for r in rows], matrix
