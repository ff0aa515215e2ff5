"""Hybrid search: vector and keyword (BM25) candidates fused by weighted reciprocal rank.

Both candidate lists are already restricted to what the caller may see (scope visibility,
validity, categories), so one database holding many users keeps its recall. Fused candidates are
then checked once more against the database rows, scored by cosine similarity, optionally
re-weighted by importance and recency, and near-duplicates are collapsed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import and_

from headroom_integrations.memory.config import MemoryConfig
from headroom_integrations.memory.models import Memory, MemoryCategory, MemoryScope, SearchResult
from headroom_integrations.memory.schema import memories
from headroom_integrations.memory.store import MemoryStore, validity_condition
from headroom_integrations.memory.vector_index import VectorIndex
from headroom_integrations.memory.visibility import bucket_key, sql_visible, visible_keys

__all__ = ["SearchRequest", "hybrid_search"]


@dataclass(frozen=True)
class SearchRequest:
    """One search, already validated."""

    vector: np.ndarray
    terms: list[str]
    user_id: str
    session_id: str | None
    agent_id: str | None
    turn_id: str | None
    top_k: int
    categories: tuple[MemoryCategory, ...] | None
    scopes: tuple[MemoryScope, ...] | None
    include_superseded: bool
    valid_at: datetime | None
    min_score: float | None

    @property
    def history(self) -> bool:
        """True when versions other than the current ones may match."""
        return self.include_superseded or self.valid_at is not None


def hybrid_search(
    store: MemoryStore, index: VectorIndex, request: SearchRequest, config: MemoryConfig
) -> list[SearchResult]:
    """Run one hybrid search; see the module docstring."""
    r = request
    keys = visible_keys(r.user_id, r.session_id, r.agent_id, r.turn_id)
    if r.scopes is not None:
        keys = [key for key in keys if key[1] in {s.value for s in r.scopes}]
    if not keys:
        return []
    depth = max(4 * r.top_k, 20)
    condition = and_(
        sql_visible(memories, r.user_id, r.session_id, r.agent_id, r.turn_id),
        validity_condition(r.include_superseded, r.valid_at),
    )
    if r.categories is not None:
        condition = and_(condition, memories.c.category.in_([c.value for c in r.categories]))
    if r.scopes is not None:
        condition = and_(condition, memories.c.scope.in_([s.value for s in r.scopes]))

    with store.connect() as conn:
        index.sync(conn)
        vector_hits = index.search(r.vector, keys, depth, r.categories)
        if r.history:  # older versions are not in the graph: score them exactly from the database
            vector_hits = _merge_history(store, r.vector, condition, vector_hits, depth)
        text_hits = store.text_search(r.terms, condition, depth, config.text_postings_budget, conn)
        fused, vector_rank, text_rank = _fuse(vector_hits, text_hits, config)
        ordered = sorted(fused, key=fused.__getitem__, reverse=True)[: max(3 * r.top_k, 10)]
        rows = store.get_by_pks(ordered, with_embedding=True, conn=conn)
    return _rank(rows, ordered, fused, vector_rank, text_rank, r, keys, config)


def _fuse(
    vector_hits: list[tuple[int, float]], text_hits: list[int], config: MemoryConfig
) -> tuple[dict[int, float], dict[int, int], dict[int, int]]:
    """Weighted reciprocal-rank fusion, normalised so rank 1 in both lists scores 1.0."""

    fused: dict[int, float] = {}
    vector_rank = {pk: rank for rank, (pk, _) in enumerate(vector_hits, start=1)}
    text_rank = {pk: rank for rank, pk in enumerate(text_hits, start=1)}
    for pk, rank in vector_rank.items():
        fused[pk] = fused.get(pk, 0.0) + config.vector_weight / (config.rrf_k + rank)
    for pk, rank in text_rank.items():
        fused[pk] = fused.get(pk, 0.0) + config.text_weight / (config.rrf_k + rank)
    best_possible = (config.vector_weight + config.text_weight) / (config.rrf_k + 1)
    return {pk: score / best_possible for pk, score in fused.items()}, vector_rank, text_rank


def _rank(
    rows: dict[int, tuple[Memory, np.ndarray | None]],
    ordered: list[int],
    fused: dict[int, float],
    vector_rank: dict[int, int],
    text_rank: dict[int, int],
    r: SearchRequest,
    keys: list[tuple[str, str, str | None, str | None, str | None]],
    config: MemoryConfig,
) -> list[SearchResult]:
    """Check candidates against their rows, score, weight, collapse near-duplicates, cut to top_k."""
    allowed_keys = set(keys)
    now = datetime.now(timezone.utc)
    candidates: list[tuple[float, SearchResult, np.ndarray]] = []
    for pk in ordered:
        found = rows.get(pk)
        if found is None or found[1] is None:
            continue
        memory, vector = found
        if not _still_matches(memory, r, allowed_keys):
            continue
        similarity = float(vector @ r.vector)
        if r.min_score is not None and similarity < r.min_score:
            continue
        final = _weighted(fused[pk], memory, config, now)
        hit = SearchResult(
            memory=memory, score=similarity, fused_score=final,
            vector_rank=vector_rank.get(pk), text_rank=text_rank.get(pk),
        )
        candidates.append((final, hit, vector))
    candidates.sort(key=lambda item: item[0], reverse=True)
    return _collapse_duplicates(candidates, r.top_k, config.dedup_threshold)


def _merge_history(
    store: MemoryStore, query: np.ndarray, condition: object, current_hits: list[tuple[int, float]], depth: int
) -> list[tuple[int, float]]:
    pks, vectors = store.vectors_where(and_(condition, memories.c.valid_to.is_not(None)))  # type: ignore[arg-type]
    merged = dict(current_hits)
    if pks:
        for pk, score in zip(pks, vectors @ query):
            merged[pk] = float(score)
    return sorted(merged.items(), key=lambda item: item[1], reverse=True)[:depth]


def _still_matches(memory: Memory, r: SearchRequest, allowed_keys: set[tuple[object, ...]]) -> bool:
    """Re-check a candidate against its database row (the index may lag a concurrent write)."""
    key = bucket_key(memory.user_id, memory.scope, memory.session_id, memory.agent_id, memory.turn_id)
    if key not in allowed_keys:
        return False
    if r.categories is not None and memory.category not in r.categories:
        return False
    if r.valid_at is not None:
        return memory.is_valid_at(r.valid_at)
    return r.include_superseded or memory.is_current


def _weighted(relevance: float, memory: Memory, config: MemoryConfig, now: datetime) -> float:
    if not config.importance_weight and not config.recency_weight:
        return relevance
    age_days = max(0.0, (now - memory.created_at).total_seconds() / 86400)
    recency = math.pow(0.5, age_days / config.recency_half_life_days)
    rest = 1.0 - config.importance_weight - config.recency_weight
    return rest * relevance + config.importance_weight * memory.importance + config.recency_weight * recency


def _collapse_duplicates(
    candidates: list[tuple[float, SearchResult, np.ndarray]], top_k: int, threshold: float
) -> list[SearchResult]:
    kept: list[SearchResult] = []
    kept_vectors: list[np.ndarray] = []
    for _, hit, vector in candidates:
        if kept_vectors and float(np.max(np.stack(kept_vectors) @ vector)) >= threshold:
            continue
        kept.append(hit)
        kept_vectors.append(vector)
        if len(kept) == top_k:
            break
    return kept
