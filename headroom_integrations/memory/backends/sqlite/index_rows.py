"""What the SQLite backend's vector index is fed: one row per memory version (no content) and the
changes committed after a watermark."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Changes", "IndexRow", "index_row"]


@dataclass(frozen=True)
class IndexRow:
    """What the vector index needs to know about one memory (no content); see :func:`index_row`.

    Example:
        >>> IndexRow(1, 4, True, "u", "user", None, None, None, "fact", None).current
        True
    """

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
    searchable: bool = True  # False: stored for lookup only, never gets a vector


def index_row(m: Mapping[str, Any], vector: np.ndarray | None) -> IndexRow:
    """The index row of a ``memories`` row (a mapping with at least its index columns).

    Example:
        >>> row = index_row({"pk": 1, "seq": 4, "valid_to": None, "user_id": "u", "scope": "user",
        ...                  "session_id": None, "agent_id": None, "turn_id": None, "category": "fact"}, None)
        >>> row.current, row.embedding
        (True, None)
    """
    return IndexRow(
        pk=m["pk"], seq=m["seq"], current=m["valid_to"] is None, user_id=m["user_id"], scope=m["scope"],
        session_id=m["session_id"], agent_id=m["agent_id"], turn_id=m["turn_id"], category=m["category"],
        embedding=vector, searchable=bool(m.get("searchable", True)),
    )


@dataclass(frozen=True)
class Changes:
    """Writes committed after a watermark: rows to (re)index or drop, deleted primary keys and,
    among them, the erased ones (whose vectors must be overwritten, not only dropped).

    Example:
        >>> Changes(seq=7, rows=[], deleted=[3]).erased
        []
    """

    seq: int
    rows: list[IndexRow]
    deleted: list[int]
    erased: list[int] = field(default_factory=list)
