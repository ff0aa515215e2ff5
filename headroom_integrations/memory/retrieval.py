"""Hybrid search: vector and keyword (BM25) candidates fused by their scores, with context.

1. Candidates: the nearest memories by cosine similarity and the best BM25 matches, both lists
   already restricted to what the caller may see (scope visibility, validity, categories), so one
   database holding many users keeps its recall.
2. Relevance of each candidate: ``vector_weight * cosine + text_weight * BM25`` (divided by the sum
   of the weights), where BM25 is normalised by the query's summed IDF (about 1 when a memory holds
   every query term, near 0 when it only shares a common word). Every candidate gets both exact
   scores: its cosine when only the keyword side found it, its BM25 when only the vector side did
   (a memory the keyword ranking cut off among many equal matches still gets its keyword score).
3. Context: a memory stored right before or after a relevant one by the same owner (the next turn
   of a conversation, the other facts of the same reply) is often the one that answers. The best
   candidates' neighbours join the candidates, and a memory whose neighbour is more relevant than
   itself moves ``context_weight`` of the way up to it: ``own + context_weight * (neighbour -
   own)``. Nothing is pulled down, and no memory passes the neighbour that lifts it, so a memory
   searched for by its own words still comes first.
4. Two small lifts: query terms the keyword side left out as too common (often the name of the
   person the question is about, found in half the memories) add ``common_term_weight`` times the
   share of them a candidate holds; when the query names a time ("last week", "in May"), a
   candidate stated within it (``observed_at``) gains ``time_weight``. Explicit bounds on
   ``observed_at`` drop the candidates outside them (the search then looks deeper).
5. The ordered candidates are checked once more against the database rows, optionally re-weighted
   by importance and recency, and true repeats (the same wording, case and closing punctuation
   aside: see :func:`text_query.fingerprint`) are collapsed; a diversity step (maximal marginal
   relevance, ``diversity_weight``) then picks the results one at a time, each lowered by its
   similarity to those picked before it. When anything re-weights (step 4's lifts, importance,
   recency, diversity), only the best ``3 * top_k`` fused candidates are re-weighted (deeper ones
   only while fewer than ``top_k`` results survive): a candidate further down would need a lift
   larger than the gap, and reading every candidate's row cost more than the lifts bought (on
   LoCoMo, 2 of 760 questions lose their any@5 hit). Memories that differ in a word, a
   number, a date, a name or a negation are always separate results, however similar.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import numpy as np

from headroom_integrations.memory.backends import KeywordQuery, MemoryBackend, Scores, SearchScope, StoredRow
from headroom_integrations.memory.config import MemoryConfig
from headroom_integrations.memory.lru import LRU
from headroom_integrations.memory.models import Memory, SearchResult
from headroom_integrations.memory.time_expressions import TimeWindow

__all__ = ["KeywordCache", "KeywordHits", "SearchRequest", "hybrid_search", "keyword_candidates"]


RERANK_FACTOR = 3  # re-weighting looks at the best 3 * top_k fused candidates (see _search_once)


@dataclass(frozen=True)
class SearchRequest:
    """One search, already validated (the query vector travels separately)."""

    terms: list[str]
    scope: SearchScope
    top_k: int
    min_score: float | None = None
    min_depth: int = 0
    window: TimeWindow | None = None  # the time the query names (lifts what was stated then)
    observed_after: datetime | None = None  # only memories stated at or after this
    observed_before: datetime | None = None  # ... and before this

    def in_bounds(self, memory: Memory) -> bool:
        """True if the memory was stated within the search's explicit ``observed_at`` bounds."""
        return (self.observed_after is None or memory.observed_at >= self.observed_after) and (
            self.observed_before is None or memory.observed_at < self.observed_before)

    @property
    def depth(self) -> int:
        """How many candidates each list contributes to the fusion."""
        return max(4 * self.top_k, 20, self.min_depth)


@dataclass(frozen=True)
class KeywordHits:
    """The keyword side of a search: the query it ran (None: no usable term) and its ranked hits.

    Example:
        >>> KeywordHits(None, []).hits
        []
    """

    query: KeywordQuery | None
    hits: list[tuple[int, float]]


class KeywordCache:
    """Keyword candidates of recent searches, valid while the store has not changed.

    A repeated search (a retried request, two adapters retrieving for the same message) skips
    the BM25 query as well as the embedding. Entries carry the vector index's change counter and
    are ignored once anything was written.

    Example:
        >>> cache = KeywordCache(max_size=2)
        >>> cache.put(("q",), version=3, hits=KeywordHits(None, [(7, 0.9)]))
        >>> cache.get(("q",), version=3).hits, cache.get(("q",), version=4)
        ([(7, 0.9)], None)
    """

    def __init__(self, max_size: int = 1000) -> None:
        self._items: LRU[Hashable, KeywordHits] = LRU(max_size)

    def get(self, key: Hashable, version: int) -> KeywordHits | None:
        """The cached hits for ``key`` if computed at this ``version``, else None."""
        return self._items.get(key, version)

    def put(self, key: Hashable, version: int, hits: KeywordHits) -> None:
        """Remember the hits computed at ``version``."""
        self._items.put(key, hits, version)

    def clear(self) -> None:
        """Forget every entry."""
        self._items.clear()


def keyword_candidates(
    backend: MemoryBackend, r: SearchRequest, config: MemoryConfig, cache: KeywordCache | None = None
) -> KeywordHits:
    """(primary key, normalised BM25) of the best keyword matches the search may see, best first,
    and the keyword query that found them."""
    if not r.terms or not r.scope.buckets():
        return KeywordHits(None, [])
    if cache is None:
        return _keyword_candidates(backend, r, config)
    cache_key = (tuple(r.terms), r.scope, r.top_k)
    version = backend.version
    hits = cache.get(cache_key, version)
    if hits is None:
        hits = _keyword_candidates(backend, r, config)
        cache.put(cache_key, version, hits)
    return hits


def _keyword_candidates(backend: MemoryBackend, r: SearchRequest, config: MemoryConfig) -> KeywordHits:
    # A term in most memories (the user's own name, say) ranks nothing: it is left out.
    query = backend.keyword_query(r.terms, config.text_postings_budget, config.text_max_share)
    if query is None:
        return KeywordHits(None, [])
    return KeywordHits(query, backend.keyword_search(query, r.scope, r.depth))


def hybrid_search(
    backend: MemoryBackend,
    r: SearchRequest,
    vector: np.ndarray,
    text: KeywordHits,
    config: MemoryConfig,
) -> list[SearchResult]:
    """Fuse vector hits with the given keyword hits and return the final results (see module doc).

    When fewer than ``top_k`` candidates survive the final checks (repeats collapsed, rows that
    changed meanwhile) and more visible memories exist, the vector side is searched deeper.
    """
    if not r.scope.buckets():
        return []
    for _ in range(4):
        results, deeper = _search_once(backend, r, vector, text, config)
        if len(results) >= r.top_k or not deeper:
            break
        r = replace(r, min_depth=4 * r.depth)
    return results


def _search_once(
    backend: MemoryBackend,
    r: SearchRequest,
    vector: np.ndarray,
    text: KeywordHits,
    config: MemoryConfig,
) -> tuple[list[SearchResult], bool]:
    """One pass of :func:`hybrid_search` at ``r.depth``; also says whether a deeper pass could
    find more (candidates were dropped as repeats or stale rows, and not every visible vector was
    a candidate). Candidates dropped by ``min_score`` do not count: deeper ones are less similar."""
    vector_hits, found = backend.nearest(vector, r.scope, r.depth, text.query, [pk for pk, _ in text.hits])
    exhausted = len(vector_hits) < r.depth
    fusion = _fuse(backend, r, vector, vector_hits, found, text, config)
    fused = fusion.fused
    ordered = sorted(fused, key=fused.__getitem__, reverse=True)
    lifts = _Lifts.of(r, text, config)
    diverse = bool(config.diversity_weight)
    weighted = bool(config.importance_weight or config.recency_weight or lifts.active or diverse)
    # Without re-weighting the fused order is final: rows are fetched a few at a time, only as
    # needed. Re-weighting looks at the best RERANK_FACTOR * top_k fused candidates, and deeper
    # only while fewer than top_k results survive (rows gone, repeats, bounds).
    chunk = RERANK_FACTOR * r.top_k if weighted else r.top_k + 2
    candidates: list[tuple[float, SearchResult, str | None]] = []
    vectors: dict[str, np.ndarray] = {}  # by memory id: the stored vectors, for the diversity step
    results: list[SearchResult] = []
    stale = 0
    for start in range(0, len(ordered), chunk):
        pks = ordered[start : start + chunk]
        rows = backend.rows(pks)
        scored, dropped = _score(rows, pks, fusion, r, vector, config, lifts, vectors)
        candidates.extend(scored)
        stale += dropped
        candidates.sort(key=lambda item: item[0], reverse=True)
        if diverse:
            results = _diversify(_collapse_repeats(candidates, len(candidates)), vectors, r.top_k,
                                 config.diversity_weight)
        else:
            results = _collapse_repeats(candidates, r.top_k)
        if len(results) == r.top_k:
            break
    prints = [print_ for _, _, print_ in candidates if print_ is not None]
    repeats = len(prints) - len(set(prints))
    return results, not exhausted and (stale + repeats) > 0


@dataclass(frozen=True)
class _Lifts:
    """The two lifts of step 4: the query's left-out terms (as word-start patterns) and its time."""

    common: list[re.Pattern[str]]
    common_weight: float
    window: TimeWindow | None
    time_weight: float

    @classmethod
    def of(cls, r: SearchRequest, text: KeywordHits, config: MemoryConfig) -> _Lifts:
        used = set(text.query.terms) if text.query is not None else set()
        left_out = [term for term in r.terms if term not in used] if config.common_term_weight else []
        # Terms are lowercased stems: a word starting with one holds the term.
        common = [re.compile(r"\b" + re.escape(term), re.IGNORECASE) for term in left_out]
        window = r.window if config.time_weight else None
        return cls(common, config.common_term_weight, window, config.time_weight)

    @property
    def active(self) -> bool:
        """True if a lift can reorder the fused candidates."""
        return bool(self.common) or self.window is not None

    def parts(self, memory: Memory) -> tuple[float, float]:
        """(common-term lift, time lift) of one memory."""
        common = 0.0
        if self.common:
            common = self.common_weight * sum(1 for p in self.common if p.search(memory.content)) / len(self.common)
        stated = self.time_weight if self.window is not None and self.window.contains(memory.observed_at) else 0.0
        return common, stated


@dataclass(frozen=True)
class _Fusion:
    """Per candidate (by pk): the fused score and its parts, and the candidate's ranks."""

    fused: dict[int, float]
    cosine: dict[int, float]
    keyword: dict[int, float]
    relevance: dict[int, float]  # the fused score before the context lift
    vector_rank: dict[int, int]
    text_rank: dict[int, int]


def _fuse(
    backend: MemoryBackend,
    r: SearchRequest,
    vector: np.ndarray,
    vector_hits: list[tuple[int, float]],
    found: Scores,
    text: KeywordHits,
    config: MemoryConfig,
) -> _Fusion:
    """Fused score of every candidate with its parts (steps 2 and 3 of the module doc), and the
    candidates' ranks. ``found``: the scores the nearest-neighbour search gave the candidates
    of one side for the other."""
    vector_rank = {pk: rank for rank, (pk, _) in enumerate(vector_hits, start=1)}
    text_rank = {pk: rank for rank, (pk, _) in enumerate(text.hits, start=1)}
    keyword = {**found.keyword, **dict(text.hits)}
    cosine = {**found.cosine, **dict(vector_hits)}
    total = config.vector_weight + config.text_weight
    relevance = {
        pk: (config.vector_weight * cos + config.text_weight * keyword.get(pk, 0.0)) / total
        for pk, cos in cosine.items()
    }
    context = config.context_weight
    if not context:
        return _Fusion(dict(relevance), cosine, keyword, relevance, vector_rank, text_rank)
    # Only the best candidates' neighbours can reach the top: a neighbour's bonus is a share of the
    # candidate's relevance. Links go both ways, so those candidates get their neighbours' bonus too.
    best = sorted(relevance, key=relevance.__getitem__, reverse=True)[: max(2 * r.top_k, 10)]
    found_links, around = backend.neighbours(best, r.scope, vector, text.query, config.context_span)
    links: dict[int, list[int]] = {}
    for pk, others in found_links.items():
        for other in others:
            links.setdefault(pk, []).append(other)
            links.setdefault(other, []).append(pk)
    for pk in links:
        if pk not in relevance and pk in around.cosine:
            cos = around.cosine[pk]
            cosine[pk] = cos
            keyword[pk] = around.keyword.get(pk, 0.0)
            relevance[pk] = (config.vector_weight * cos + config.text_weight * keyword[pk]) / total
    fused = {}
    for pk, own in relevance.items():
        near = max((relevance[n] for n in links.get(pk, ()) if n in relevance), default=own)
        fused[pk] = own + context * max(0.0, near - own)
    return _Fusion(fused, cosine, keyword, relevance, vector_rank, text_rank)


def _score(
    rows: dict[int, StoredRow],
    pks: list[int],
    fusion: _Fusion,
    r: SearchRequest,
    vector: np.ndarray,
    config: MemoryConfig,
    lifts: _Lifts,
    vectors: dict[str, np.ndarray],
) -> tuple[list[tuple[float, SearchResult, str | None]], int]:
    """Check candidates against their rows; score and weight the ones that still match (their
    stored vectors go into ``vectors``). Also returns how many were dropped as stale (row gone or
    changed) or outside the ``observed_at`` bounds.

    A row without a stored vector (its vector could not be written yet) keeps the cosine the
    index gave it."""
    now = datetime.now(timezone.utc)
    total = config.vector_weight + config.text_weight
    cosine = fusion.cosine
    scored = []
    stale = 0
    for pk in pks:
        found = rows.get(pk)
        if found is None or (found.vector is None and pk not in cosine):
            stale += 1
            continue
        memory, stored, print_ = found
        if memory.key is not None:  # a key-value item is its own item, whatever its text repeats
            print_ = None
        if not r.scope.matches(memory) or not r.in_bounds(memory):  # changed since found, or out of bounds
            stale += 1
            continue
        similarity = float(stored @ vector) if stored is not None else cosine[pk]
        if r.min_score is not None and similarity < r.min_score:
            continue
        common, stated = lifts.parts(memory)
        final = _weighted(fusion.fused[pk], memory, config, now) + common + stated
        keyword = fusion.keyword.get(pk, 0.0)
        hit = SearchResult(
            memory=memory, score=similarity, fused_score=final,
            vector_rank=fusion.vector_rank.get(pk), text_rank=fusion.text_rank.get(pk), keyword_score=keyword,
            vector_part=config.vector_weight * cosine.get(pk, similarity) / total,
            keyword_part=config.text_weight * keyword / total,
            context_part=fusion.fused[pk] - fusion.relevance[pk], common_term_part=common, time_part=stated,
        )
        scored.append((final, hit, print_))
        if stored is not None:
            vectors[memory.id] = stored
    return scored, stale


def _weighted(relevance: float, memory: Memory, config: MemoryConfig, now: datetime) -> float:
    if not config.importance_weight and not config.recency_weight:
        return relevance
    age_days = max(0.0, (now - memory.created_at).total_seconds() / 86400)
    recency = math.pow(0.5, age_days / config.recency_half_life_days)
    rest = 1.0 - config.importance_weight - config.recency_weight
    return rest * relevance + config.importance_weight * memory.importance + config.recency_weight * recency


def _diversify(
    hits: list[SearchResult], vectors: dict[str, np.ndarray], top_k: int, weight: float
) -> list[SearchResult]:
    """Maximal marginal relevance: pick ``top_k`` hits one at a time, each by its fused score less
    ``weight`` times its highest cosine to a hit picked before it (``diversity_part``), so the
    results cover different memories rather than paraphrases of the best one."""
    if len(hits) <= 1:
        return hits[:top_k]
    dim = next(iter(vectors.values())).shape[0] if vectors else 1
    matrix = np.stack([vectors.get(h.id, np.zeros(dim, dtype=np.float32)) for h in hits]).astype(np.float32)
    score = np.array([h.fused_score for h in hits])  # -inf once picked
    closest = np.zeros(len(hits))  # highest similarity (at least 0) to a hit picked so far
    picked: list[SearchResult] = []
    for _ in range(min(top_k, len(hits))):
        penalty = weight * closest
        best = int((score - penalty).argmax())
        picked.append(replace(hits[best], diversity_part=0.0 - float(penalty[best])) if penalty[best] else hits[best])
        score[best] = -np.inf
        # One matrix-vector product per pick: a matrix-matrix product (every pair at once) is
        # threaded by BLAS and can cost milliseconds when the other cores are busy.
        closest = np.maximum(closest, matrix @ matrix[best])
    return picked


def _collapse_repeats(candidates: list[tuple[float, SearchResult, str | None]], top_k: int) -> list[SearchResult]:
    """The best ``top_k`` candidates, each wording once (a repeat of a better hit is left out)."""
    seen: set[str] = set()
    kept: list[SearchResult] = []
    for _, hit, print_ in candidates:
        if print_ is not None:
            if print_ in seen:
                continue
            seen.add(print_)
        kept.append(hit)
        if len(kept) == top_k:
            break
    return kept
