"""Keyword scoring shared by the backends: which query terms to search and BM25 as FTS5 computes it.

Both backends score keyword matches the same way (BM25 from term statistics, normalised by the
query's summed IDF), so the fusion with vector scores behaves the same on either.
"""

from __future__ import annotations

from collections.abc import Iterable

from headroom_integrations.memory.backends.base import KeywordQuery
from headroom_integrations.memory.text_query import bm25, idf, select_terms

__all__ = ["bm25_scores", "keyword_weights"]


def keyword_weights(
    terms: list[str], frequencies: dict[str, int], rows: int, average_length: float, postings_budget: int,
    max_df: int | None,
) -> KeywordQuery | None:
    """The keyword query of some terms given their document frequencies (shared by the backends).

    Terms found in more than ``max_df`` memories are left out, and of the rest only the rarest, up
    to ``postings_budget`` matching rows in all, are searched: very common terms add cost but
    almost no ranking signal. The scale is the summed IDF of every usable term.

    Example:
        >>> query = keyword_weights(["alic", "googl"], {"alic": 9, "googl": 1}, 10, 5.0, 100, 5)
        >>> query.terms
        ['googl']
    """
    if max_df is not None:
        frequencies = {t: f for t, f in frequencies.items() if f <= max_df}
    chosen = select_terms(terms, frequencies, postings_budget)
    if not chosen:
        return None
    weights = tuple((term, idf(frequencies[term], rows)) for term in chosen)
    return KeywordQuery(weights, sum(idf(f, rows) for f in frequencies.values() if f), average_length,
                        postings=sum(frequencies[term] for term in chosen))


def bm25_scores(texts: Iterable[tuple[int, str]], query: KeywordQuery) -> dict[int, float]:
    """Normalised BM25 of indexed texts ((pk, search_text) pairs); non-matching ones left out."""
    scores = {pk: bm25(text.split(), query.weights, query.average_length) for pk, text in texts}
    return {pk: score / query.scale for pk, score in scores.items() if score > 0}
