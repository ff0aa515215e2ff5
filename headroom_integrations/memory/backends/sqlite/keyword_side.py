"""The SQLite backend's keyword side: term statistics for BM25, and the ranked search that finds
the visible memories matching a keyword query."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from headroom_integrations.memory.backends.base import KeywordQuery, SearchScope
from headroom_integrations.memory.backends.keywords import STALE_AFTER, FrequencyCache
from headroom_integrations.memory.backends.sqlite.driver import fts_rank, fts_search, fts_totals, matching_pks
from headroom_integrations.memory.backends.sqlite.term_counts import document_frequencies
from headroom_integrations.memory.backends.sqlite.vector_index import VectorIndex

__all__ = ["RANK_EVERY_MATCH_MAX", "FtsStatistics", "ranked_matches"]

RANK_EVERY_MATCH_MAX = 5000
"""Keyword searches whose terms match at most this many rows rank every match inside FTS5 and
filter them in RAM, whatever share of the store the caller may see."""


class FtsStatistics:
    """Document frequencies (from the counts the database keeps, see :mod:`.term_counts`), the
    number of indexed rows and their average length, cached by change number.

    Example (nothing is read before the first call):
        >>> FtsStatistics().cached_terms
        0
    """

    def __init__(self) -> None:
        self._df = FrequencyCache()
        self._totals = (0, 0, -(10**9))  # (rows, tokens in the full-text index, seq read at)

    @property
    def cached_terms(self) -> int:
        """How many terms' frequencies are cached."""
        return len(self._df)

    def frequencies(
        self, conn: Connection, terms: list[str], seq: int, counts_terms: bool
    ) -> tuple[dict[str, int], int, float]:
        """Document frequency of each term, indexed rows and their average length as of change
        ``seq`` (``counts_terms``: the file keeps term counts; else FTS5's vocabulary is asked)."""
        found = self._df.get(terms, seq, lambda missing: document_frequencies(conn, missing, counts_terms))
        if seq - self._totals[2] > STALE_AFTER:
            self._totals = (*fts_totals(conn), seq)
        rows, tokens, _ = self._totals
        return found, rows, tokens / rows if rows else 0.0


def ranked_matches(
    conn: Connection, index: VectorIndex, query: KeywordQuery, scope: SearchScope, limit: int, condition: Any
) -> list[tuple[int, float]]:
    """The best ``limit`` visible memories matching ``query`` with their (unscaled) BM25 scores.

    When only current versions count, the ranking runs inside the full-text index alone and is
    filtered with the vector index's bookkeeping (no SQL join): over enough ranked rows to hold
    ``limit`` visible ones when the visible memories are most of the store, over every matching
    row when the terms match few (a join would read each match's row from the table: a random read
    per match in a large store). Matches the index does not hold (a row still waiting for its
    vector) are checked in SQL (``condition``: the scope's SQL condition). Both find what the SQL
    join finds (tests/test_keyword_paths.py).
    """
    keys = scope.buckets()
    share = 0.0 if scope.history else index.visible_share(keys)
    few = 0 < query.postings <= RANK_EVERY_MATCH_MAX
    if scope.history or not (share >= 0.5 or few):
        return fts_search(conn, query.terms, condition, limit)
    # Deep enough for ``limit`` visible ones when the caller sees most of the store, else every
    # match (the counts may miss rows written since they were read: they are re-read after
    # STALE_AFTER changes); deeper while filters leave fewer.
    depth = int(limit / share) + 1 + limit if share >= 0.5 else query.postings + STALE_AFTER + 1 + limit
    while True:
        ranked = fts_rank(conn, query.terms, depth)
        score = dict(ranked)
        unknown: list[int] = []
        kept = index.keep_visible(score, keys, scope.categories, unknown)
        if unknown:
            kept += matching_pks(conn, unknown, condition)
            kept.sort(key=score.__getitem__, reverse=True)
        if len(kept) >= limit or len(ranked) < depth:
            break
        depth *= 4
    return [(pk, score[pk]) for pk in kept[:limit]]
