"""The vector side of search: an hnswlib HNSW index beside the database, kept as a cache of it.

* The index holds the *current* memories only; superseded and deleted ones leave it.
* Memories are grouped into visibility buckets (see :mod:`visibility`). A small bucket (at most
  ``brute_force_max`` vectors) keeps its vectors in a matrix of its own and is scored exactly; a
  bucket that grows past that moves to the HNSW graph, which holds the large buckets' vectors
  only. So each vector is held once in RAM, a store of many small users builds no graph at all,
  and a search of a few users among many never filters the graph candidate by candidate.
  A search scores its visible small buckets exactly (at most ``brute_force_max`` vectors: past
  that, the largest of them moves to the graph) and walks the graph for its large ones,
  restricted to them only when the graph holds other buckets too.
* Every write carries a change number (``seq``). The index remembers up to which number it has
  pulled every change (its watermark) and, before each search, pulls what other processes wrote.
* The HNSW graph is saved atomically with its watermark; on open it is loaded and reconciled with
  the database, or rebuilt when missing, corrupt or stale (see :mod:`.index_file`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from headroom_integrations.memory.backends.sqlite.buckets import CATEGORY_CODE, Bucket
from headroom_integrations.memory.backends.sqlite.driver import vectors_by_pk
from headroom_integrations.memory.backends.sqlite.index_file import IndexFile, Placed
from headroom_integrations.memory.backends.sqlite.index_rows import IndexRow
from headroom_integrations.memory.models import MemoryCategory
from headroom_integrations.memory.visibility import BucketKey, bucket_key

if TYPE_CHECKING:
    from headroom_integrations.memory.backends.sqlite.backend import SqliteBackend

__all__ = ["VectorIndex"]

logger = logging.getLogger(__name__)


class VectorIndex(IndexFile):
    """HNSW over every current memory of one database, shared by all engines on that file.

    Example:
        >>> from headroom_integrations.memory.backends.sqlite.backend import SqliteBackend
        >>> backend = SqliteBackend(None, "test/model", 4)  # it opens its own index
        >>> len(backend.index), backend.index.dim
        (0, 4)
    """

    def __init__(
        self,
        store: SqliteBackend,
        dim: int,
        path: Path | None,
        m: int = 16,
        ef_construction: int = 200,
        ef_search: int = 50,
        brute_force_max: int = 8192,
    ) -> None:
        self.store = store
        self.dim = dim
        self.path = path
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.brute_force_max = brute_force_max
        self.watermark = 0
        self.version = 0  # bumped by every change the index sees (own writes and pulled ones)
        self._lock = threading.RLock()
        self._dirty = False
        self._reset()

    # -- state ----------------------------------------------------------------------------------

    def _reset(self, capacity: int = 1024) -> None:
        import hnswlib

        self._hnsw = hnswlib.Index(space="ip", dim=self.dim)  # unit vectors: inner product = cosine
        self._hnsw.init_index(max_elements=capacity, ef_construction=self.ef_construction, M=self.m)
        self._hnsw.set_ef(self.ef_search)
        self._in_graph: set[int] = set()  # labels present (and not marked deleted) in the graph
        self._marked: set[int] = set()  # labels marked deleted in the graph
        self._where: dict[int, tuple[int, int]] = {}  # pk -> (bucket id, category code)
        self._spots: dict[tuple[int, int], tuple[int, int]] = {}  # one shared tuple per (bucket, category)
        self._seq_of: dict[int, int] = {}  # pk -> change number of the version applied
        self._bucket_ids: dict[BucketKey, int] = {}
        self._buckets: list[Bucket] = []
        self._raw_bids: dict[tuple[str, str, str | None, str | None, str | None], int] = {}

    def __len__(self) -> int:
        return len(self._where)

    def held(self) -> tuple[dict[int, int], set[int]]:
        """After pulling every change: the change number of each memory held (pk -> seq) and the
        memories whose vector the index holds for search (live graph labels and the small
        buckets' rows; for :func:`.doctor.check_sqlite`)."""
        with self._lock:
            self.sync()
            vectors = set(self._in_graph)
            for bucket in self._buckets:
                if bucket.exact:
                    vectors.update(bucket.pks)
            return {pk: self._seq_of[pk] for pk in self._where}, vectors

    def _bucket(self, key: BucketKey, exact: bool = True) -> int:
        bid = self._bucket_ids.get(key)
        if bid is None:
            bid = self._bucket_ids[key] = len(self._buckets)
            self._buckets.append(Bucket(self.dim, self.brute_force_max, exact))
        return bid

    def _bucket_of(self, user_id: str, scope: str, session_id: str | None, agent_id: str | None,
                   turn_id: str | None, exact: bool = True) -> int:
        """The bucket id of a row's ids (cached: :func:`bucket_key` costs a scope parse per row);
        a new bucket is made without a matrix unless ``exact``."""
        raw = (user_id, scope, session_id, agent_id, turn_id)
        bid = self._raw_bids.get(raw)
        if bid is None:
            bid = self._raw_bids[raw] = self._bucket(bucket_key(*raw), exact)
        return bid

    # -- applying rows ------------------------------------------------------------------------------

    def _place(self, rows: list[Placed], vectors: np.ndarray | None) -> None:
        """File rows with their vectors into buckets, the bookkeeping and (large buckets) the graph.

        ``vectors`` None: the rows belong to large buckets and the graph holds them already.
        """
        by_bucket: dict[int, list[int]] = {}
        where, seq_of, buckets, spots = self._where, self._seq_of, self._buckets, self._spots
        for position, (pk, seq, bid, code) in enumerate(rows):
            old = where.get(pk)
            if old is not None and old[0] != bid:
                buckets[old[0]].remove(pk)
            spot = (bid, code)
            where[pk] = spots.setdefault(spot, spot)  # a million rows of one user hold six tuples, not a million
            seq_of[pk] = seq
            by_bucket.setdefault(bid, []).append(position)
        graph_pks: list[int] = []
        graph_vectors: list[np.ndarray] = []
        for bid, positions in by_bucket.items():
            bucket = buckets[bid]
            pks = [rows[i][0] for i in positions]
            codes = np.fromiter((rows[i][3] for i in positions), dtype=np.int8, count=len(positions))
            if bucket.exact:
                assert vectors is not None
                bucket.put_many(pks, vectors[positions], codes)
                for pk in pks:
                    if pk in self._in_graph:  # moved here from a large bucket
                        self._unlink(pk)
                if bucket.full:
                    graph_pks += bucket.pks
                    graph_vectors.append(bucket.to_graph())
            else:
                bucket.put_many(pks, None, codes)
                if vectors is not None:
                    graph_pks += pks
                    graph_vectors.append(vectors[positions])
        if graph_pks:
            self._add_to_graph(graph_pks, np.concatenate(graph_vectors))

    def _to_graph(self, bid: int) -> None:
        """Move a small bucket's vectors into the graph (it is searched through the graph from then on)."""
        bucket = self._buckets[bid]
        pks = list(bucket.pks)
        matrix = bucket.to_graph()
        if pks:
            self._add_to_graph(pks, matrix)

    def _apply(self, rows: Iterable[IndexRow], force: bool = False) -> list[int]:
        """Bring the index in line with these rows (newer versions only, unless ``force``).

        Returns the primary keys of rows (any version) that have no vector yet (their embedding
        is being computed, here or by another process).
        """
        placed: list[Placed] = []
        vectors: list[np.ndarray] = []
        waiting: list[int] = []
        for row in rows:
            if not force and self._seq_of.get(row.pk, -1) >= row.seq:
                continue
            if not row.current or row.embedding is None:
                self._seq_of[row.pk] = row.seq
                self._remove(row.pk)
                if row.embedding is None and row.searchable:  # older versions need one too (point-in-time search)
                    waiting.append(row.pk)
                continue
            bid = self._bucket_of(row.user_id, row.scope, row.session_id, row.agent_id, row.turn_id)
            placed.append((row.pk, row.seq, bid, CATEGORY_CODE[row.category]))
            vectors.append(row.embedding)
        if placed:
            self._place(placed, np.stack(vectors))
            self._dirty = True
        self.version += 1
        return waiting

    def _add_to_graph(self, pks: list[int], vectors: np.ndarray) -> None:
        for pk in pks:
            if pk in self._marked:
                self._hnsw.unmark_deleted(pk)
                self._marked.discard(pk)
        needed = self._hnsw.get_current_count() + len(pks)
        capacity = self._hnsw.get_max_elements()
        if needed > capacity:
            self._hnsw.resize_index(max(needed, capacity * 2))
        self._hnsw.add_items(vectors, np.asarray(pks, dtype=np.int64), num_threads=min(2, os.cpu_count() or 1))
        self._in_graph.update(pks)
        self._dirty = True

    def _unlink(self, pk: int) -> None:
        """Mark a memory's vector deleted in the graph."""
        self._hnsw.mark_deleted(pk)
        self._in_graph.discard(pk)
        self._marked.add(pk)
        self._dirty = True

    def _remove(self, pk: int) -> None:
        self.version += 1
        where = self._where.pop(pk, None)
        if where is not None:
            self._buckets[where[0]].remove(pk)
            self._dirty = True
        if pk in self._in_graph:
            self._unlink(pk)

    def apply_local(self, rows: list[IndexRow], first_seq: int, last_seq: int) -> None:
        """Apply this process's own committed write (change numbers ``first_seq..last_seq``)."""
        with self._lock:
            self._apply(rows)
            if first_seq == self.watermark + 1:
                self.watermark = last_seq

    def apply_unsaved(self, rows: list[IndexRow]) -> None:
        """Index rows with vectors that could not be stored (a read-only or full disk): searches
        of this process find them; the database is unchanged, so the watermark stays."""
        with self._lock:
            self._apply(rows, force=True)

    def remove_local(self, pks: Iterable[int], seq: int, erase: bool = False) -> None:
        """Drop memories this process deleted (change number ``seq``); with ``erase`` their
        vectors are overwritten too (a few milliseconds each)."""
        with self._lock:
            pks = list(pks)
            for pk in pks:
                self._seq_of[pk] = seq
                self._remove(pk)
            if erase:
                self._scrub(pks)
            if seq == self.watermark + 1:
                self.watermark = seq

    def _scrub(self, pks: Iterable[int]) -> None:
        """Overwrite the graph's copy of erased memories' vectors with random unit vectors, so no
        trace of them stays in RAM or in the saved file (hnswlib keeps a deleted element's data).
        Each costs about ten insertions (the graph is repaired around it), so only erasures do this,
        and when they are more than a tenth of the index it is rebuilt instead."""
        labels = [pk for pk in pks if pk in self._marked or pk in self._in_graph]
        if not labels:
            return
        if 10 * len(labels) > len(self._where):  # many: building the graph anew costs less
            self.rebuild()  # from the database, which no longer holds them
            return
        noise = np.random.default_rng().standard_normal((len(labels), self.dim)).astype(np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        self._hnsw.add_items(noise, np.asarray(labels, dtype=np.int64), num_threads=1)  # updates in place
        for pk in labels:
            self._hnsw.mark_deleted(pk)
            self._in_graph.discard(pk)
            self._marked.add(pk)
        self._dirty = True

    def scrub_missing(self) -> int:
        """Scrub the vectors of every graph element whose memory is no longer in the database
        (deleted before this process opened the index); returns how many were scrubbed."""
        with self._lock:
            existing = self.store.all_pks()
            missing = [pk for pk in self._marked if pk not in existing]
            self._scrub(missing)
            return len(missing)

    def sync(self) -> list[int]:
        """Pull every change committed since the watermark (by any process).

        Costs one ``PRAGMA`` when nothing was committed since the last call. Returns the primary
        keys of new rows (any version) that are still waiting for their vector.
        """
        with self._lock:
            if not self.store.maybe_changed():
                return []
            if self.store.current_seq() == self.watermark:
                return []
            changes = self.store.changes_since(self.watermark)
            waiting = self._apply(changes.rows)
            for pk in changes.deleted:
                self._seq_of[pk] = changes.seq
                self._remove(pk)
            self._scrub(changes.erased)
            self.watermark = max(self.watermark, changes.seq)
            return waiting

    # -- searching --------------------------------------------------------------------------------

    def _visible(self, keys: list[BucketKey]) -> tuple[list[int], int]:
        bids = [self._bucket_ids[key] for key in keys if key in self._bucket_ids]
        return bids, sum(len(self._buckets[b].pks) for b in bids)

    def visible_share(self, keys: list[BucketKey]) -> float:
        """Fraction of the indexed memories that these buckets hold (0 when the index is empty)."""
        with self._lock:
            total = len(self._where)
            return self._visible(keys)[1] / total if total else 0.0

    def search(
        self,
        query: np.ndarray,
        keys: list[BucketKey],
        k: int,
        categories: Iterable[MemoryCategory] | None = None,
    ) -> list[tuple[int, float]]:
        """The ``k`` nearest visible memories as (primary key, cosine similarity), best first.

        Small buckets are scored exactly, large ones through the graph, and the two merged. At most
        ``brute_force_max`` vectors are scored exactly per search: past that, the largest visible
        small bucket moves to the graph for good (once; this search pays for the move).
        """
        codes = None if categories is None else {CATEGORY_CODE[c.value] for c in categories}
        with self._lock:
            bids, visible = self._visible(keys)
            if visible == 0 or k <= 0:
                return []
            buckets = self._buckets
            exact = [b for b in bids if buckets[b].exact and buckets[b].pks]
            while exact and sum(len(buckets[b].pks) for b in exact) > self.brute_force_max:
                largest = max(exact, key=lambda b: len(buckets[b].pks))
                self._to_graph(largest)
                exact.remove(largest)
            graph = {b for b in bids if not buckets[b].exact and buckets[b].pks}
            hits = self._exact(query, exact, k, codes) if exact else []
            if graph:
                hits += self._graph(query, graph, sum(len(buckets[b].pks) for b in graph), k, codes)
                if exact:
                    hits = sorted(hits, key=lambda hit: hit[1], reverse=True)[:k]
            return hits

    def versions(self, pks: Iterable[int]) -> dict[int, int]:
        """Change number of the version the index holds for each known primary key."""
        with self._lock:
            seq_of = self._seq_of
            return {pk: seq_of[pk] for pk in pks if pk in seq_of}

    def keep_visible(
        self, pks: Iterable[int], keys: list[BucketKey], categories: Iterable[MemoryCategory] | None = None,
        unknown: list[int] | None = None,
    ) -> list[int]:
        """The given primary keys that are current and visible from ``keys``, order kept; those
        the index does not hold (older versions, rows waiting for a vector) are appended to
        ``unknown`` when it is given."""
        codes = None if categories is None else {CATEGORY_CODE[c.value] for c in categories}
        with self._lock:
            bids = {self._bucket_ids[key] for key in keys if key in self._bucket_ids}
            out = []
            for pk in pks:
                spot = self._where.get(pk)
                if spot is None:
                    if unknown is not None:
                        unknown.append(pk)
                elif spot[0] in bids and (codes is None or spot[1] in codes):
                    out.append(pk)
            return out

    def similarities(self, query: np.ndarray, pks: Iterable[int]) -> dict[int, float]:
        """Cosine similarity of the query to each given memory the index holds (others left out).

        Served from the small buckets' matrices; large buckets keep no matrix (their vectors are
        in the graph, and reading them back from hnswlib costs tens of microseconds each), so
        theirs are read from the database by primary key, and from the graph only when the
        database lacks them (vectors that could not be stored).
        """
        by_bucket: dict[int, list[int]] = {}
        out: dict[int, float] = {}
        with self._lock:
            for pk in pks:
                spot = self._where.get(pk)
                if spot is not None:
                    by_bucket.setdefault(spot[0], []).append(pk)
            elsewhere: list[int] = []
            for bid, found in by_bucket.items():
                bucket = self._buckets[bid]
                if bucket.vectors is None:
                    elsewhere += found
                    continue
                rows = bucket.vectors[[bucket.row_of[pk] for pk in found]]
                out.update(zip(found, (rows @ query).tolist()))
            if elsewhere:
                out.update(self._stored_similarities(query, elsewhere))
        return out

    def _stored_similarities(self, query: np.ndarray, pks: list[int]) -> dict[int, float]:
        with self.store.connect() as conn:
            rows = vectors_by_pk(conn, pks)
        out: dict[int, float] = {}
        if rows:
            matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
            out.update(zip([r[0] for r in rows], (matrix @ query).tolist()))
        missing = [pk for pk in pks if pk not in out and pk in self._in_graph]
        if missing:
            matrix = np.asarray(self._hnsw.get_items(missing, return_type="numpy"), dtype=np.float32)
            out.update(zip(missing, (matrix @ query).tolist()))
        return out

    def neighbours(
        self,
        pks: Iterable[int],
        keys: list[BucketKey],
        categories: Iterable[MemoryCategory] | None = None,
        reach: int = 8,
        span: int = 1,
    ) -> dict[int, list[int]]:
        """For each given memory, the visible memories of its own bucket stored just before and just
        after it (the nearest ``span`` primary keys of that bucket on each side, looking at most
        ``reach`` keys away; those of another category than ``categories`` are left out)."""
        codes = None if categories is None else {CATEGORY_CODE[c.value] for c in categories}
        with self._lock:
            where = self._where
            bids = {self._bucket_ids[key] for key in keys if key in self._bucket_ids}
            out: dict[int, list[int]] = {}
            for pk in pks:
                spot = where.get(pk)
                if spot is None or spot[0] not in bids:
                    continue
                found = []
                for step in (-1, 1):
                    seen = 0
                    for distance in range(1, reach + 1):
                        other = where.get(pk + step * distance)
                        if other is not None and other[0] == spot[0]:
                            if codes is None or other[1] in codes:
                                found.append(pk + step * distance)
                            seen += 1
                            if seen == span:
                                break
                out[pk] = sorted(found)
            return out

    def _exact(self, query: np.ndarray, bids: list[int], k: int, codes: set[int] | None) -> list[tuple[int, float]]:
        pks: list[int] = []
        scores: list[np.ndarray] = []
        for bid in bids:
            bucket = self._buckets[bid]
            n = len(bucket.pks)
            if n == 0:
                continue
            assert bucket.vectors is not None
            sims = bucket.vectors[:n] @ query
            if codes is not None:
                keep = np.isin(bucket.categories[:n], list(codes))
                sims = np.where(keep, sims, -np.inf)
            pks.extend(bucket.pks)
            scores.append(sims)
        if not pks:
            return []
        all_scores = np.concatenate(scores)
        k = min(k, len(pks))
        top = np.argpartition(-all_scores, k - 1)[:k]
        top = top[np.argsort(-all_scores[top])]
        return [(pks[i], float(all_scores[i])) for i in top if np.isfinite(all_scores[i])]

    def _graph(
        self, query: np.ndarray, bids: set[int], visible: int, k: int, codes: set[int] | None
    ) -> list[tuple[int, float]]:
        where = self._where

        def allowed(label: int) -> bool:
            spot = where.get(label)
            return spot is not None and spot[0] in bids and (codes is None or spot[1] in codes)

        everything = visible == len(self._in_graph) and codes is None  # the graph holds these buckets only
        k = min(k, visible)
        self._hnsw.set_ef(max(self.ef_search, k))
        try:
            labels, distances = self._hnsw.knn_query(
                query, k=k, num_threads=1, filter=None if everything else allowed
            )
        except RuntimeError:  # fewer than k reachable matches: ask for what exists
            labels, distances = self._fewer(query, k, None if everything else allowed)
        return [(int(label), 1.0 - float(dist)) for label, dist in zip(labels[0], distances[0])]

    def _fewer(self, query: np.ndarray, k: int, predicate: object) -> tuple[np.ndarray, np.ndarray]:
        while k > 1:
            k //= 2
            try:
                return self._hnsw.knn_query(query, k=k, num_threads=1, filter=predicate)
            except RuntimeError:
                continue
        return np.zeros((1, 0), dtype=np.int64), np.zeros((1, 0), dtype=np.float32)
