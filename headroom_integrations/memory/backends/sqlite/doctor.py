"""The SQLite backend's self-check: does the vector index (in RAM, saved beside the file) hold
exactly the current embedded rows, and do the FTS5 table and the term counts agree with the rows
they index?

Both are derived from the rows, so a repair rebuilds them from the file; nothing in the rows changes.
Disagreement comes from edits that bypass the engine (a ``DELETE`` in the ``sqlite3`` shell is not
in the change log the index follows) or from a damaged file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError

from headroom_integrations.memory.backends.sqlite.term_counts import term_count_mismatches

if TYPE_CHECKING:
    from headroom_integrations.memory.backends.sqlite.backend import SqliteBackend

__all__ = ["check_sqlite"]

_FTS_CHECK = "INSERT INTO memories_fts(memories_fts, rank) VALUES ('integrity-check', 1)"
_FTS_REBUILD = "INSERT INTO memories_fts(memories_fts) VALUES ('rebuild')"


def check_sqlite(backend: SqliteBackend, repair: bool) -> dict[str, int]:
    """Counts of what disagrees (before any repair): ``index_missing`` (current embedded rows the
    vector index lacks), ``index_extra`` (vectors of rows that are gone or no longer current),
    ``index_stale`` (vectors of an older change of the row), ``graph_mismatch`` (HNSW labels
    that differ from the index's own bookkeeping), ``keyword_index`` (1 when FTS5's integrity
    check fails), ``term_counts`` (terms whose kept document count differs from a recount) and
    ``indexes_missing`` (SQL indexes the file lacks). ``repair`` rebuilds the vector index (and
    saves it), the FTS5 table, the term counts and the SQL indexes as needed.

    Example::

        check_sqlite(backend, repair=False)  # {'index_missing': 0, ..., 'keyword_index': 0}
    """
    held, graph = backend.index.held()
    expected: dict[int, int] = {}
    for batch in backend.index_rows():
        expected.update((row[0], row[1]) for row in batch)
    found = {
        "index_missing": len(expected.keys() - held.keys()),
        "index_extra": len(held.keys() - expected.keys()),
        "index_stale": sum(1 for pk, seq in expected.items() if pk in held and held[pk] < seq),
        "graph_mismatch": len(held.keys() ^ graph),
        "keyword_index": 0 if _fts_ok(backend) else 1,
        "term_counts": _term_counts(backend, repair),
        "indexes_missing": backend.missing_indexes(repair),
    }
    if repair and any(found[name] for name in ("index_missing", "index_extra", "index_stale", "graph_mismatch")):
        backend.index.rebuild()
        backend.save()
    if repair and found["keyword_index"]:
        with backend.write() as conn:
            conn.exec_driver_sql(_FTS_REBUILD)
    return found


def _term_counts(backend: SqliteBackend, repair: bool) -> int:
    """Terms whose kept count is wrong (0 for an older store opened read-only, which has none)."""
    if not backend.counts_terms:
        return 0
    with backend.write() if repair else backend.read() as conn:
        return term_count_mismatches(conn, repair)


def _fts_ok(backend: SqliteBackend) -> bool:
    """Whether FTS5's integrity check (against the rows it indexes) passes."""
    with backend.engine.connect() as conn:
        try:
            conn.exec_driver_sql(_FTS_CHECK)
        except DBAPIError:
            return False
        finally:
            conn.rollback()
    return True
