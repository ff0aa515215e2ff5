"""Term statistics of the PostgreSQL backend's keyword side: row counts and document frequencies
for BM25, read from the database and cached between changes."""

from __future__ import annotations

from typing import Any

from headroom_integrations.memory.backends.keywords import STALE_AFTER, FrequencyCache
from headroom_integrations.memory.backends.postgres.driver import tsquery_literal

__all__ = ["TermStatistics"]


class TermStatistics:
    """Row counts and document frequencies of one database, cached by change number.

    Counting a very common term's rows would cost milliseconds on a large store, so terms
    PostgreSQL's statistics list among the column's most common lexemes (``ANALYZE`` keeps the
    share of rows holding each) are estimated from that share; the others are counted, but never
    beyond the most rows a usable term may match (``postings_budget`` or ``max_share`` of the
    current memories, whichever is more): past that, the term is left out of the search either way.

    Example (``raw``: a psycopg connection; nothing is read before the first call):
        >>> TermStatistics().cached_terms
        0
    """

    def __init__(self) -> None:
        self._df = FrequencyCache()
        self._totals = (0, 0, 0, -(10**9))  # (rows, current rows, indexed terms, change number read at)
        self._common: dict[str, float] = {}  # the most common lexemes and the share of rows holding each

    @property
    def cached_terms(self) -> int:
        """How many terms' frequencies are cached."""
        return len(self._df)

    def totals(self, raw: Any, version: int) -> tuple[int, int, int]:
        """Rows, current rows and indexed terms of the whole store as of change ``version``
        (re-read once it is :data:`STALE_AFTER` changes old)."""
        if version - self._totals[3] > STALE_AFTER:
            rows, current, n_terms = raw.execute(
                "SELECT count(*), count(*) FILTER (WHERE valid_to IS NULL), coalesce(sum(n_terms), 0) FROM memories"
            ).fetchone()
            self._totals = (int(rows), int(current), int(n_terms), version)
            self._common = self._common_lexemes(raw)
        return self._totals[:3]

    def frequencies(
        self, raw: Any, version: int, terms: list[str], postings_budget: int = 0, max_share: float = 1.0
    ) -> tuple[dict[str, int], int, int, float]:
        """Document frequencies of ``terms``, rows, current rows and the average indexed length."""
        rows, current, n_terms = self.totals(raw, version)
        cap = max(postings_budget, int(max_share * current)) + 1

        def count(missing: list[str]) -> dict[str, int]:
            found = {t: round(self._common[t] * rows) for t in missing if t in self._common}
            counted = [t for t in missing if t not in found and tsquery_literal([t])]  # lexemes of 2 KiB+ match nothing
            if counted:
                counts = raw.execute(
                    "SELECT (SELECT count(*) FROM (SELECT 1 FROM memories WHERE tsv @@ CAST(q AS tsquery) "
                    "LIMIT %(cap)s) AS hit) FROM unnest(%(queries)s::text[]) WITH ORDINALITY AS u(q, n) ORDER BY n",
                    {"queries": [tsquery_literal([t]) for t in counted], "cap": cap},
                ).fetchall()
                found.update(zip(counted, (row[0] for row in counts)))
            return found

        return self._df.get(terms, version, count), rows, current, n_terms / rows if rows else 0.0

    @staticmethod
    def _common_lexemes(raw: Any) -> dict[str, float]:
        """The most common lexemes of ``tsv`` with the share of rows holding each, as of the last
        ``ANALYZE`` (empty before the first one)."""
        found = raw.execute(
            "SELECT most_common_elems::text::text[], most_common_elem_freqs FROM pg_stats "
            "WHERE schemaname = current_schema() AND tablename = 'memories' AND attname = 'tsv'"
        ).fetchone()
        if found is None or found[0] is None:
            return {}
        lexemes, shares = found
        return dict(zip(lexemes, shares))  # the shares list ends with 3 summary numbers: zip drops them
