"""Driver SQL for the PostgreSQL backend's search path (psycopg 3, binary vectors).

A search asks the database about ten small questions; through SQLAlchemy's statement building
and pgvector's text format each cost about a millisecond of Python, several times what the
server spends. Here each is one prepared statement on the raw psycopg connection, with vectors
sent and read in pgvector's binary form (two 16-bit counts, then big-endian float32s). The scope
restriction is the same rule as :func:`~headroom_integrations.memory.backends.sql_filters.scope_condition`,
written as SQL text (the contract suite runs both on the same searches).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import numpy as np

from headroom_integrations.memory.backends.base import SearchScope
from headroom_integrations.memory.backends.rows import naive
from headroom_integrations.memory.models import MemoryScope

__all__ = [
    "binary_vector_type",
    "neighbours_sql",
    "register_vector_types",
    "scope_sql",
    "tsquery_literal",
    "tsvector_literal",
    "vector_of",
]

_HEADER = struct.Struct(">HH")
_MAX_LEXEME_BYTES = 2000  # PostgreSQL refuses lexemes of 2 KiB and more
_MAX_TSVECTOR_BYTES = 900_000  # and tsvectors of 1 MiB


def vector_of(data: bytes | memoryview | None) -> np.ndarray | None:
    """A pgvector value in binary form as a float32 vector (None stays None)."""
    if data is None:
        return None
    return np.frombuffer(data, dtype=">f4", offset=4).astype(np.float32)


def register_vector_types(connection: Any, oid: int) -> None:
    """Teach one psycopg connection to send numpy vectors as pgvector values (binary) and to read
    them back as numpy arrays from binary cursors; only this connection is affected (not the
    process's psycopg), and text-format results (SQLAlchemy's, with pgvector's own type) are left
    as they are."""
    from psycopg.adapt import Dumper, Loader
    from psycopg.pq import Format

    class VectorDumper(Dumper):
        format = Format.BINARY

        def dump(self, obj: Any) -> bytes:
            vector = np.asarray(obj, dtype=">f4")
            return _HEADER.pack(vector.shape[0], 0) + vector.tobytes()

    class VectorLoader(Loader):
        format = Format.BINARY

        def load(self, data: Any) -> np.ndarray:
            return vector_of(data)  # type: ignore[return-value]

    VectorDumper.oid = oid
    connection.adapters.register_dumper(np.ndarray, VectorDumper)
    connection.adapters.register_loader(oid, VectorLoader)


def binary_vector_type(dimension: int) -> Any:
    """The SQLAlchemy type of the ``vector(dimension)`` column: pgvector's, except that written
    values go to psycopg as numpy arrays, which a connection taught by
    :func:`register_vector_types` sends in binary (pgvector's own type formats them as text).
    Reads are pgvector's (text)."""
    from pgvector.sqlalchemy import VECTOR

    class BinaryVector(VECTOR):  # type: ignore[misc]
        cache_ok = True

        def bind_processor(self, dialect: Any) -> Any:
            def process(value: Any) -> np.ndarray | None:
                return None if value is None else np.asarray(value, dtype=np.float32)

            return process

    return BinaryVector(dimension)


def scope_sql(scope: SearchScope, current_only: bool = False) -> tuple[str, dict[str, Any]]:
    """The SQL condition (psycopg placeholders) and parameters of a search scope: the user, the
    visibility buckets it may see, validity (``current_only`` forces current versions) and categories.

    Example:
        >>> sql, params = scope_sql(SearchScope("alice", session_id="s1"))
        >>> "(scope = 'session' AND session_id = %(s1)s)" in sql, sql.endswith("valid_to IS NULL")
        (True, True)
        >>> params
        {'user': 'alice', 's1': 's1'}
    """
    params: dict[str, Any] = {"user": scope.user_id}
    options = []
    for number, (_, kind, session, agent, turn) in enumerate(scope.buckets()):
        parts = [f"scope = '{MemoryScope(kind).value}'"]
        for column, value, short in (("session_id", session, "s"), ("agent_id", agent, "a"), ("turn_id", turn, "t")):
            if kind == MemoryScope.USER.value or (column != "session_id" and kind == MemoryScope.SESSION.value) or (
                column == "turn_id" and kind == MemoryScope.AGENT.value
            ):
                continue
            if value is None:
                parts.append(f"{column} IS NULL")
            else:
                name = f"{short}{number}"
                params[name] = value
                parts.append(f"{column} = %({name})s")
        options.append(parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")")
    sql = [f"user_id = %(user)s AND ({' OR '.join(options) if options else 'FALSE'})"]
    if current_only or not (scope.include_superseded or scope.valid_at is not None):
        sql.append("valid_to IS NULL")
    elif scope.valid_at is not None:
        params["at"] = naive(scope.valid_at)
        sql.append("valid_from <= %(at)s AND (valid_to IS NULL OR valid_to > %(at)s)")
    if scope.categories is not None:
        params["categories"] = [c.value for c in scope.categories]
        sql.append("category = ANY(%(categories)s)")
    return " AND ".join(sql), params


_SAME_BUCKET = (
    "m.user_id = b.user_id AND m.scope = b.scope"
    " AND (b.scope = 'user' OR m.session_id IS NOT DISTINCT FROM b.session_id)"
    " AND (b.scope IN ('user', 'session') OR m.agent_id IS NOT DISTINCT FROM b.agent_id)"
    " AND (b.scope <> 'turn' OR m.turn_id IS NOT DISTINCT FROM b.turn_id)"
    " AND m.valid_to IS NULL AND m.embedding IS NOT NULL"
)  # the rule of visibility.bucket_key: the ids that matter for the row's scope


def neighbours_sql(where: str) -> str:
    """The query of each given row's nearest ``%(span)s`` current, embedded rows of the same bucket
    on either side (at most ``%(reach)s`` primary keys away): given pk, neighbour pk (NULL: none on either
    side), its category, its cosine to ``%(q)s`` and its indexed text. ``where``: the visibility
    condition (from :func:`scope_sql`) a given row must meet; its neighbours share its bucket, so
    they meet it too."""
    side = (
        "(SELECT m.pk, m.category, m.embedding, m.search_text FROM memories m WHERE m.pk {op} b.pk "
        "AND m.pk {bound} b.pk {sign} %(reach)s AND " + _SAME_BUCKET + " ORDER BY m.pk {order} LIMIT %(span)s)"
    )
    before = side.format(op="<", bound=">=", sign="-", order="DESC")
    after = side.format(op=">", bound="<=", sign="+", order="ASC")
    return (
        "WITH b AS (SELECT pk, user_id, scope, session_id, agent_id, turn_id FROM memories "
        f"WHERE pk = ANY(%(given)s) AND {where} AND embedding IS NOT NULL) "
        "SELECT b.pk, n.pk, n.category, 1 - (n.embedding <=> %(q)s), n.search_text "
        f"FROM b LEFT JOIN LATERAL ({before} UNION ALL {after}) n ON true ORDER BY b.pk, n.pk"
    )


def _lexeme(term: str) -> str:
    return "'" + term.replace("\\", "\\\\").replace("'", "''") + "'"


def tsvector_literal(search_text: str) -> str:
    """The ``tsvector`` literal of an indexed text: its terms taken verbatim (no parser, no stemming:
    they are normalised in Python, as for FTS5)."""
    out, size = [], 0
    for term in dict.fromkeys(search_text.split()):
        if len(term.encode("utf-8")) >= _MAX_LEXEME_BYTES:
            continue
        size += len(term.encode("utf-8")) + 4
        if size > _MAX_TSVECTOR_BYTES:
            break
        out.append(_lexeme(term))
    return " ".join(out)


def tsquery_literal(terms: Iterable[str]) -> str:
    """A ``tsquery`` matching any of the terms, each quoted (no operator typed by a user survives)."""
    return " | ".join(_lexeme(t) for t in terms if len(t.encode("utf-8")) < _MAX_LEXEME_BYTES)
