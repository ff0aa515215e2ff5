"""How many memories hold each indexed term, kept by the database itself (``memories_terms``).

BM25 and the choice of which query terms to search need each term's document frequency. FTS5
keeps none: its ``fts5vocab`` table counts a term by walking the term's whole posting list, 5-17 ms
for a word found in 50,000 rows of a million, the first time a process meets it. So the counts
live in a table of their own, ``memories_terms(term, docs)``, updated in the same transaction as
every write by triggers on ``memories`` (the same rows the full-text index sees: each distinct
term of ``search_text``, which holds the normalised terms joined by single spaces). A term whose
count reaches 0 is deleted, so nothing of an erased memory's words stays behind it.

A store made before this table existed is counted once when it is first opened writable
(:func:`install_term_counts`); a read-only one is served from ``fts5vocab`` as before.
"""

from __future__ import annotations

from sqlalchemy import Connection

__all__ = ["TERMS_TABLE", "document_frequencies", "install_term_counts", "term_count_mismatches"]

TERMS_TABLE = "memories_terms"


def _terms_of(column: str) -> str:
    """SQL for the distinct terms of a ``search_text`` value as rows of ``json_each`` (``value``).

    Terms are ``\\w+`` words, but quotes and backslashes are escaped anyway: malformed JSON would
    make the trigger, and with it the user's write, fail.
    """
    escaped = f"replace(replace(coalesce({column}, ''), '\\', '\\\\'), '\"', '\\\"')"
    return f"json_each('[\"' || replace({escaped}, ' ', '\",\"') || '\"]')"


_ADD = (
    f"INSERT INTO {TERMS_TABLE}(term, docs) SELECT DISTINCT value, 1 FROM {_terms_of('new.search_text')} "
    "WHERE value <> '' ON CONFLICT(term) DO UPDATE SET docs = docs + 1;"
)
_DROP = (
    f"UPDATE {TERMS_TABLE} SET docs = docs - 1 WHERE term IN (SELECT value FROM {_terms_of('old.search_text')}); "
    f"DELETE FROM {TERMS_TABLE} WHERE docs <= 0 AND term IN (SELECT value FROM {_terms_of('old.search_text')});"
)
_COUNT_ALL = (
    f"SELECT value, count(*) FROM (SELECT DISTINCT m.pk, j.value FROM memories AS m, {_terms_of('m.search_text')} "
    "AS j WHERE j.value <> '') GROUP BY value"
)
_DDL = [
    f"CREATE TABLE IF NOT EXISTS {TERMS_TABLE} (term TEXT PRIMARY KEY, docs INTEGER NOT NULL) WITHOUT ROWID",
    f"CREATE TRIGGER IF NOT EXISTS memories_terms_insert AFTER INSERT ON memories BEGIN {_ADD} END",
    f"CREATE TRIGGER IF NOT EXISTS memories_terms_delete AFTER DELETE ON memories BEGIN {_DROP} END",
    f"CREATE TRIGGER IF NOT EXISTS memories_terms_update AFTER UPDATE OF search_text ON memories BEGIN "
    f"{_DROP} {_ADD} END",
]


def install_term_counts(connection: Connection) -> None:
    """Create the counts table and its triggers, counting the stored rows once if the table is new
    (inside the caller's write transaction, so a concurrent writer cannot slip between)."""
    exists = connection.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TERMS_TABLE,)
    ).first()
    for statement in _DDL:
        connection.exec_driver_sql(statement)
    if exists is None:
        _recount(connection)


def _recount(connection: Connection) -> None:
    """Fill the counts table from the stored rows (emptying it first)."""
    connection.exec_driver_sql(f"DELETE FROM {TERMS_TABLE}")
    connection.exec_driver_sql(f"INSERT INTO {TERMS_TABLE}(term, docs) {_COUNT_ALL}")


def document_frequencies(connection: Connection, terms: list[str], counts_terms: bool = True) -> dict[str, int]:
    """How many memories contain each term (terms found in none are left out).

    Args:
        connection: a connection to the store.
        terms: normalised terms.
        counts_terms: the store has the counts table (else FTS5's vocabulary is asked, which walks
            each term's posting list: a store made by an older version, opened read-only).
    """
    if not terms:
        return {}
    marks = ",".join("?" * len(terms))
    table, column = (TERMS_TABLE, "docs") if counts_terms else ("memories_fts_vocab", "doc")
    rows = connection.exec_driver_sql(f"SELECT term, {column} FROM {table} WHERE term IN ({marks})", tuple(terms))
    return {term: int(docs) for term, docs in rows}


def term_count_mismatches(connection: Connection, repair: bool = False) -> int:
    """Terms whose kept count differs from a recount of the stored rows (a full scan: for the
    doctor); with ``repair`` the table is rebuilt from the recount."""
    kept = dict(connection.exec_driver_sql(f"SELECT term, docs FROM {TERMS_TABLE}").all())
    recount = dict(connection.exec_driver_sql(_COUNT_ALL).all())
    wrong = sum(1 for term in kept.keys() | recount.keys() if kept.get(term) != recount.get(term))
    if wrong and repair:
        _recount(connection)
    return wrong
