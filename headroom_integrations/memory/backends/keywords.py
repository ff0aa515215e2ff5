"""Keyword scoring shared by the backends: which query terms to search and BM25 as FTS5 computes it.

Both backends score keyword matches the same way (BM25 from term statistics, normalised by the
query's summed IDF), so the fusion with vector scores behaves the same on either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from headroom_integrations.memory.backends.base import KeywordQuery
from headroom_integrations.memory.text_query import bm25, idf, select_terms

__all__ = ["MAX_CACHED_TERMS", "STALE_AFTER", "FrequencyCache", "bm25_scores", "keyword_weights"]

MAX_CACHED_TERMS = 50_000
"""Distinct terms a :class:`FrequencyCache` keeps by default before it starts over."""

STALE_AFTER = 256
"""Changes to the store after which a cached count is read again (stale counts only shift the
term bounds and the BM25 statistics a little)."""


class FrequencyCache:
    """Document frequencies of terms, cached by the store's change number (shared by the backends).

    A term's count is read again once it is :data:`STALE_AFTER` changes old; past ``max_terms``
    (default :data:`MAX_CACHED_TERMS`) cached terms the cache starts over. A lookup serves the
    counts it read, so neither its own start-over nor another thread's loses a term it serves.

    Example:
        >>> cache = FrequencyCache()
        >>> cache.get(["alic", "zebra"], 10, lambda missing: {"alic": 4})
        {'alic': 4, 'zebra': 0}
        >>> cache.get(["alic"], 200, lambda missing: {"alic": 99})  # 190 changes later: still cached
        {'alic': 4}
    """

    def __init__(self, max_terms: int | None = None) -> None:
        self._counts: dict[str, tuple[int, int]] = {}  # term -> (document frequency, change number read at)
        self._max_terms = MAX_CACHED_TERMS if max_terms is None else max_terms

    def __len__(self) -> int:
        return len(self._counts)

    def get(self, terms: list[str], version: int, count: Callable[[list[str]], Mapping[str, int]]) -> dict[str, int]:
        """Each term's document frequency as of change ``version``; ``count`` reads the ones missing
        or stale (a term it leaves out counts 0)."""
        cached = self._counts
        if len(cached) > self._max_terms:
            cached.clear()
        # Served from what this lookup read, never read back from the shared dict: another thread
        # may start the cache over in between.
        served: dict[str, int] = {}
        missing: list[str] = []
        for term in terms:
            entry = cached.get(term)
            if entry is None or version - entry[1] > STALE_AFTER:
                missing.append(term)
            else:
                served[term] = entry[0]
        if missing:
            found = count(missing)
            for term in missing:
                served[term] = int(found.get(term, 0))
                cached[term] = (served[term], version)
        return {t: served[t] for t in terms}


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
