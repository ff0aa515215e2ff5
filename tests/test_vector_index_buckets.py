"""The SQLite vector index keeps each vector once: small buckets in matrices of their own
(searched exactly, never in the HNSW graph), large ones in the graph only. Searches, the saved
file, reopening and the self-check all agree with brute force over what is visible."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from headroom_integrations.memory.backends.sqlite.backend import SqliteBackend
from headroom_integrations.memory.models import MemoryCategory, MemoryFilter
from headroom_integrations.memory.validation import new_memory
from headroom_integrations.memory.visibility import visible_keys

DIM = 16
LIMIT = 40  # brute_force_max: buckets past it move to the graph


def _vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _open(path: Path | None, limit: int = LIMIT) -> SqliteBackend:
    return SqliteBackend(path, "test/model", DIM, brute_force_max=limit, hnsw_ef_search=200)


def _fill(backend: SqliteBackend, owners: list[tuple[str, str | None]], seed: int = 1) -> dict[int, np.ndarray]:
    """Store one memory per (user, session) given (session None: a user-level memory); pk -> vector."""
    rng = np.random.default_rng(seed)
    vectors = _vectors(rng, len(owners))
    categories = list(MemoryCategory)
    memories = [new_memory(10_000, f"memory {i} of {user}", user, session, category=categories[i % len(categories)])
                for i, (user, session) in enumerate(owners)]
    out = backend.insert(memories, list(vectors), dedupe=False)
    return {pk: vector for (_, pk), vector in zip(out, vectors)}


def _truth(backend: SqliteBackend, stored: dict[int, np.ndarray], query: np.ndarray, user: str,
           session: str | None, k: int) -> list[int]:
    keys = set(visible_keys(user, session))
    index = backend.index
    visible = [pk for pk in stored if pk in index._where and _key_of(index, pk) in keys]
    return sorted(visible, key=lambda pk: -float(stored[pk] @ query))[:k]


def _key_of(index: object, pk: int) -> object:
    bid = index._where[pk][0]  # type: ignore[attr-defined]
    return next(key for key, b in index._bucket_ids.items() if b == bid)  # type: ignore[attr-defined]


def _owners() -> list[tuple[str, str | None]]:
    """A big user (past the limit), several small ones, and a small session bucket of the big user."""
    owners: list[tuple[str, str | None]] = [("big", None)] * 150 + [("big", "s1")] * 10
    for u in range(6):
        owners += [(f"small-{u}", None)] * 12
    return [owners[i] for i in np.random.default_rng(3).permutation(len(owners))]


def test_small_buckets_stay_out_of_the_graph_and_large_ones_keep_no_matrix() -> None:
    backend = _open(None)
    try:
        stored = _fill(backend, _owners())
        index = backend.index
        big = index._buckets[index._bucket_ids[visible_keys("big")[0]]]
        assert not big.exact and big.vectors is None
        assert index._in_graph == set(big.pks)  # only the large bucket is in the graph
        small = [b for b in index._buckets if b is not big]
        assert all(b.exact for b in small) and not any(pk in index._in_graph for b in small for pk in b.pks)
        query = _vectors(np.random.default_rng(9), 1)[0]
        for user, session in [("big", None), ("big", "s1"), ("small-2", None)]:
            hits = index.search(query, visible_keys(user, session), 5)
            assert [pk for pk, _ in hits] == _truth(backend, stored, query, user, session, 5), (user, session)
        # cosines of large-bucket memories come from the database, exact
        some = big.pks[:7]
        sims = index.similarities(query, some)
        assert sims == pytest.approx({pk: float(stored[pk] @ query) for pk in some}, abs=1e-5)
        held, vectors = index.held()
        assert vectors == set(held)
        assert backend.check_index(False) == {"index_missing": 0, "index_extra": 0, "index_stale": 0,
                                              "graph_mismatch": 0, "keyword_index": 0, "term_counts": 0,
                                              "indexes_missing": 0}
    finally:
        backend.close()


def test_category_filters_and_merging_small_and_large_buckets() -> None:
    backend = _open(None)
    try:
        stored = _fill(backend, _owners())
        query = _vectors(np.random.default_rng(5), 1)[0]
        fact = [MemoryCategory.FACT]
        hits = backend.index.search(query, visible_keys("big", "s1"), 8, fact)
        codes = backend.index._where
        expected = [pk for pk in _truth(backend, stored, query, "big", "s1", 10_000)
                    if codes[pk][1] == list(MemoryCategory).index(MemoryCategory.FACT)][:8]
        assert [pk for pk, _ in hits] == expected
        assert [score for _, score in hits] == sorted((score for _, score in hits), reverse=True)
    finally:
        backend.close()


def test_a_search_scores_at_most_the_limit_exactly() -> None:
    backend = _open(None)
    try:
        stored = _fill(backend, [("u", None)] * 30 + [("u", "s")] * 30)  # two small buckets, 60 visible together
        index = backend.index
        assert not index._in_graph
        query = _vectors(np.random.default_rng(2), 1)[0]
        hits = index.search(query, visible_keys("u", "s"), 5)
        assert sum(1 for b in index._buckets if not b.exact) == 1  # the larger moved to the graph
        assert [pk for pk, _ in hits] == _truth(backend, stored, query, "u", "s", 5)
        assert backend.check_index(False)["graph_mismatch"] == 0
    finally:
        backend.close()


def test_reopen_restores_the_same_split_and_answers(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    backend = _open(path)
    stored = _fill(backend, _owners())
    query = _vectors(np.random.default_rng(7), 1)[0]
    cases = [("big", None), ("big", "s1"), ("small-0", None), ("small-5", None)]
    before = {case: backend.index.search(query, visible_keys(*case), 6) for case in cases}
    graph_before = set(backend.index._in_graph)
    backend.close()
    backend = _open(path)
    try:
        index = backend.index
        assert index._in_graph == graph_before
        for case in cases:
            after = index.search(query, visible_keys(*case), 6)
            assert [pk for pk, _ in after] == [pk for pk, _ in before[case]], case
            assert [s for _, s in after] == pytest.approx([s for _, s in before[case]], abs=1e-5)
        # written after the save by another connection: pulled on the next search
        other = _open(path)
        more = _fill(other, [("small-0", None)] * 3 + [("big", None)] * 3, seed=11)
        other.close()
        stored.update(more)
        for case in cases:
            hits = index.search(query, visible_keys(*case), 6)
            assert [pk for pk, _ in hits] == _truth(backend, stored, query, *case, 6), case
        assert backend.check_index(False)["index_missing"] == 0
        expected = {case: index.search(query, visible_keys(*case), 6) for case in cases}
    finally:
        backend.close()
    rows = Path(f"{path}.hnsw.rows")
    assert rows.exists()  # the bookkeeping and small buckets saved beside the graph: opening reads no row
    for missing in (False, True):  # then without it: read back from the database
        if missing:
            rows.unlink()
        backend = _open(path)
        try:
            for case in cases:
                hits = backend.index.search(query, visible_keys(*case), 6)
                assert [pk for pk, _ in hits] == [pk for pk, _ in expected[case]], (missing, case)
            assert backend.check_index(False)["graph_mismatch"] == 0
        finally:
            backend.close()


def test_the_saved_rows_file_is_checked_against_the_graph(tmp_path: Path) -> None:
    """Opening from the rows file: graph labels of memories deleted before the save stay marked
    deleted, and a rows file naming a vector the graph lacks is refused (the index is rebuilt)."""
    import json

    from headroom_integrations.memory.backends.sqlite.index_saved_rows import load_rows

    path = tmp_path / "memory.db"
    backend = _open(path)
    stored = _fill(backend, _owners())
    big = backend.index._buckets[backend.index._bucket_ids[visible_keys("big")[0]]]
    gone = big.pks[3]
    backend.delete(backend.rows([gone])[gone].memory.id, all_versions=True)
    backend.close()
    backend = _open(path)
    try:
        index = backend.index
        assert gone in index._marked and gone not in index._in_graph and gone not in index._where
        query = stored[gone]
        assert gone not in [pk for pk, _ in index.search(query, visible_keys("big"), 5)]
        info = json.loads(Path(f"{path}.hnsw.json").read_text())
        labels = np.asarray(index._hnsw.get_ids_list(), dtype=np.int64)
        kept = labels[labels != big.pks[0]]  # a graph without one of the rows' vectors
        index._reset()
        index._hnsw = backend.index._hnsw
        assert not load_rows(index, info, kept) and len(index) == 0
    finally:
        backend.close()
    backend = _open(path)  # the saved files themselves were fine
    try:
        assert backend.check_index(False)["graph_mismatch"] == 0 and gone in backend.index._marked
    finally:
        backend.close()


def test_a_graph_of_every_vector_opens_and_is_slimmed(tmp_path: Path) -> None:
    """An index saved while every bucket was in the graph (an earlier version, or brute_force_max=0)."""
    path = tmp_path / "memory.db"
    backend = _open(path, limit=0)
    stored = _fill(backend, _owners())
    assert all(not b.exact for b in backend.index._buckets)
    backend.close()
    backend = _open(path)
    try:
        index = backend.index
        big = index._buckets[index._bucket_ids[visible_keys("big")[0]]]
        assert index._in_graph == set(big.pks)
        query = _vectors(np.random.default_rng(4), 1)[0]
        for case in [("big", "s1"), ("small-1", None)]:
            hits = index.search(query, visible_keys(*case), 5)
            assert [pk for pk, _ in hits] == _truth(backend, stored, query, *case, 5), case
        assert backend.check_index(False)["graph_mismatch"] == 0
    finally:
        backend.close()


@pytest.mark.parametrize("limit", [0, LIMIT], ids=["all-in-graph", "small-exact"])
def test_erased_vectors_leave_every_file(tmp_path: Path, limit: int) -> None:
    path = tmp_path / "memory.db"
    backend = _open(path, limit)
    owners = [("victim", None)] * 20 + [("keeper", None)] * 200
    stored = _fill(backend, owners)
    backend.save()
    backend.erase_user("victim")
    backend.close()
    with contextlib.closing(sqlite3.connect(path)) as raw:
        left = [blob for (blob,) in raw.execute("SELECT embedding FROM memories")]
    files = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    graph = Path(f"{path}.hnsw").read_bytes()
    victims = [v for pk, v in stored.items() if v.tobytes() not in left]
    assert len(victims) == 20 and len(left) == 200
    assert not any(v.tobytes()[:32] in files for v in victims)
    assert all(blob[:32] in graph for blob in left)  # keeper is past the limit either way: in the graph
    backend = _open(path, limit)
    try:
        assert backend.stats(None)["total"] == 200
        assert not backend.index.search(_vectors(np.random.default_rng(1), 1)[0], visible_keys("victim"), 5)
        assert backend.delete_matching(MemoryFilter(user_id="keeper")) == 200
        assert len(backend.index) == 0
    finally:
        backend.close()
