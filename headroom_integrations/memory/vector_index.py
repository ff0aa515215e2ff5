"""The vector side of search: an hnswlib HNSW index beside the database, kept as a cache of it.

* The index holds the *current* memories only; superseded and deleted ones leave it.
* Memories are grouped into visibility buckets (see :mod:`visibility`). A search looks at the
  buckets its ids may see: when they hold few vectors (``brute_force_max``), it scores them
  exactly from a per-bucket matrix; otherwise it walks the HNSW graph, restricted to those buckets.
  So recall does not collapse when one database holds many users.
* Every write carries a change number (``seq``). The index remembers up to which number it has
  pulled every change (its watermark) and, before each search, pulls what other processes wrote.
* The HNSW graph is saved atomically (temp file + rename) with its watermark; on open it is loaded
  and reconciled with the database, or rebuilt when missing, corrupt or stale.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import Connection

from headroom_integrations.memory.models import MemoryCategory
from headroom_integrations.memory.store import IndexRow, MemoryStore
from headroom_integrations.memory.visibility import BucketKey, bucket_key

__all__ = ["VectorIndex"]

logger = logging.getLogger(__name__)

_FORMAT = 1
_CATEGORY_CODE = {c.value: i for i, c in enumerate(MemoryCategory)}


@dataclass
class _Bucket:
    """Vectors of one visibility bucket, packed for exact search (swap-remove keeps them dense)."""

    dim: int
    pks: list[int] = field(default_factory=list)
    row_of: dict[int, int] = field(default_factory=dict)
    vectors: np.ndarray = field(init=False)
    categories: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.vectors = np.zeros((8, self.dim), dtype=np.float32)
        self.categories = np.zeros(8, dtype=np.int8)

    def put(self, pk: int, vector: np.ndarray, category: int) -> None:
        row = self.row_of.get(pk)
        if row is None:
            row = len(self.pks)
            if row == len(self.vectors):
                self.vectors = np.concatenate([self.vectors, np.zeros_like(self.vectors)])
                self.categories = np.concatenate([self.categories, np.zeros_like(self.categories)])
            self.pks.append(pk)
            self.row_of[pk] = row
        self.vectors[row] = vector
        self.categories[row] = category

    def remove(self, pk: int) -> None:
        row = self.row_of.pop(pk)
        last = len(self.pks) - 1
        if row != last:
            moved = self.pks[last]
            self.pks[row] = moved
            self.row_of[moved] = row
            self.vectors[row] = self.vectors[last]
            self.categories[row] = self.categories[last]
        self.pks.pop()


class VectorIndex:
    """HNSW over every current memory of one database, shared by all engines on that file.

    Example:
        >>> from headroom_integrations.memory.store import MemoryStore
        >>> index = VectorIndex(MemoryStore(None), dim=4, path=None)
        >>> index.open()
        >>> len(index)
        0
    """

    def __init__(
        self,
        store: MemoryStore,
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
        self._seq_of: dict[int, int] = {}  # pk -> change number of the version applied
        self._bucket_ids: dict[BucketKey, int] = {}
        self._buckets: list[_Bucket] = []

    def __len__(self) -> int:
        return len(self._where)

    def _bucket(self, key: BucketKey) -> int:
        bid = self._bucket_ids.get(key)
        if bid is None:
            bid = self._bucket_ids[key] = len(self._buckets)
            self._buckets.append(_Bucket(self.dim))
        return bid

    # -- applying rows ------------------------------------------------------------------------------

    def _apply(self, rows: Iterable[IndexRow], force: bool = False) -> None:
        """Bring the index in line with these rows (newer versions only, unless ``force``)."""
        add_pks: list[int] = []
        add_vectors: list[np.ndarray] = []
        for row in rows:
            if not force and self._seq_of.get(row.pk, -1) >= row.seq:
                continue
            self._seq_of[row.pk] = row.seq
            if not row.current or row.embedding is None:
                self._remove(row.pk)
                continue
            key = bucket_key(row.user_id, row.scope, row.session_id, row.agent_id, row.turn_id)
            bid, code = self._bucket(key), _CATEGORY_CODE[row.category]
            old = self._where.get(row.pk)
            if old is not None and old[0] != bid:
                self._buckets[old[0]].remove(row.pk)
            self._buckets[bid].put(row.pk, row.embedding, code)
            self._where[row.pk] = (bid, code)
            add_pks.append(row.pk)
            add_vectors.append(row.embedding)
        if add_pks:
            self._add_to_graph(add_pks, np.stack(add_vectors))
            self._dirty = True

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

    def _remove(self, pk: int) -> None:
        where = self._where.pop(pk, None)
        if where is not None:
            self._buckets[where[0]].remove(pk)
        if pk in self._in_graph:
            self._hnsw.mark_deleted(pk)
            self._in_graph.discard(pk)
            self._marked.add(pk)
            self._dirty = True

    def apply_local(self, rows: list[IndexRow], first_seq: int, last_seq: int) -> None:
        """Apply this process's own committed write (change numbers ``first_seq..last_seq``)."""
        with self._lock:
            self._apply(rows)
            if first_seq == self.watermark + 1:
                self.watermark = last_seq

    def remove_local(self, pks: Iterable[int], seq: int) -> None:
        """Drop memories this process deleted (change number ``seq``)."""
        with self._lock:
            for pk in pks:
                self._seq_of[pk] = seq
                self._remove(pk)
            if seq == self.watermark + 1:
                self.watermark = seq

    def sync(self, conn: Connection | None = None) -> None:
        """Pull every change committed since the watermark (by any process)."""
        if self.store.current_seq(conn) == self.watermark:
            return
        with self._lock:
            changes = self.store.changes_since(self.watermark)
            self._apply(changes.rows)
            for pk in changes.deleted:
                self._seq_of[pk] = changes.seq
                self._remove(pk)
            self.watermark = max(self.watermark, changes.seq)

    # -- opening, rebuilding, saving --------------------------------------------------------------------

    def open(self) -> None:
        """Load the saved graph and reconcile it with the database, or rebuild it."""
        with self._lock:
            if self.path is not None and self._load():
                return
            self.rebuild()

    def _sidecar(self) -> Path:
        assert self.path is not None
        return self.path.with_name(self.path.name + ".json")

    def _load(self) -> bool:
        import hnswlib

        assert self.path is not None
        try:
            info = json.loads(self._sidecar().read_text())
            if info.get("format") != _FORMAT or info.get("dim") != self.dim:
                logger.info("vector index %s: other format or dimension, rebuilding", self.path)
                return False
            if info.get("size") != self.path.stat().st_size:
                logger.warning("vector index %s: file does not match its sidecar, rebuilding", self.path)
                return False
            watermark = int(info["watermark"])
            if watermark > self.store.current_seq():
                logger.warning("vector index %s is newer than its database, rebuilding", self.path)
                return False
            self._reset()
            graph = hnswlib.Index(space="ip", dim=self.dim)
            graph.load_index(str(self.path))
            graph.set_ef(self.ef_search)
        except FileNotFoundError:
            return False
        except Exception as exc:  # a corrupt file can raise nearly anything from hnswlib/json
            logger.warning("vector index %s unreadable (%s), rebuilding", self.path, exc)
            return False
        self._hnsw = graph
        labels = set(int(x) for x in graph.get_ids_list())
        current: set[int] = set()
        stale: list[IndexRow] = []
        for batch in self.store.index_rows(with_embedding=True):
            for row in batch:
                current.add(row.pk)
                if row.pk in labels and row.seq <= watermark:
                    self._put_bucket_only(row)
                else:
                    stale.append(row)
        for pk in labels - current:
            with contextlib.suppress(RuntimeError):  # already marked deleted in the saved graph
                graph.mark_deleted(pk)
            self._marked.add(pk)
        self._in_graph = labels & current
        if len(stale) > max(1000, len(current) // 2):
            logger.info("vector index %s is far behind (%d rows), rebuilding", self.path, len(stale))
            return False
        self._apply(stale, force=True)
        self.watermark = watermark
        self.sync()
        return True

    def _put_bucket_only(self, row: IndexRow) -> None:
        """Register a row the loaded graph already holds (exact-search matrix and bookkeeping)."""
        assert row.embedding is not None
        key = bucket_key(row.user_id, row.scope, row.session_id, row.agent_id, row.turn_id)
        bid, code = self._bucket(key), _CATEGORY_CODE[row.category]
        self._buckets[bid].put(row.pk, row.embedding, code)
        self._where[row.pk] = (bid, code)
        self._seq_of[row.pk] = row.seq

    def rebuild(self) -> None:
        """Build the graph from scratch from the vectors stored in the database."""
        with self._lock:
            start = self.store.current_seq()
            self._reset()
            for batch in self.store.index_rows(with_embedding=True):
                self._apply(batch, force=True)
            self.watermark = start
            self._dirty = True
            self.sync()

    def save(self) -> None:
        """Write the graph and its watermark atomically (no-op when nothing changed or in RAM)."""
        if self.path is None:
            return
        with self._lock:
            self.sync()
            if not self._dirty and self.path.exists():
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            self._hnsw.save_index(str(tmp))
            size = tmp.stat().st_size
            os.replace(tmp, self.path)
            info = {"format": _FORMAT, "dim": self.dim, "watermark": self.watermark, "size": size}
            tmp_info = tmp.with_suffix(".json.tmp")
            tmp_info.write_text(json.dumps(info))
            os.replace(tmp_info, self._sidecar())
            self._dirty = False

    # -- searching --------------------------------------------------------------------------------

    def search(
        self,
        query: np.ndarray,
        keys: list[BucketKey],
        k: int,
        categories: Iterable[MemoryCategory] | None = None,
    ) -> list[tuple[int, float]]:
        """The ``k`` nearest visible memories as (primary key, cosine similarity), best first."""
        codes = None if categories is None else {_CATEGORY_CODE[c.value] for c in categories}
        with self._lock:
            bids = [self._bucket_ids[key] for key in keys if key in self._bucket_ids]
            visible = sum(len(self._buckets[b].pks) for b in bids)
            if visible == 0 or k <= 0:
                return []
            if visible <= self.brute_force_max:
                return self._exact(query, bids, k, codes)
            return self._graph(query, set(bids), visible, k, codes)

    def _exact(self, query: np.ndarray, bids: list[int], k: int, codes: set[int] | None) -> list[tuple[int, float]]:
        pks: list[int] = []
        scores: list[np.ndarray] = []
        for bid in bids:
            bucket = self._buckets[bid]
            n = len(bucket.pks)
            if n == 0:
                continue
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

        everything = visible == len(where) and codes is None
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

    def vectors(self, pks: Iterable[int]) -> dict[int, np.ndarray]:
        """Stored vectors of the given current memories (others left out)."""
        out: dict[int, np.ndarray] = {}
        with self._lock:
            for pk in pks:
                spot = self._where.get(pk)
                if spot is not None:
                    bucket = self._buckets[spot[0]]
                    out[pk] = bucket.vectors[bucket.row_of[pk]].copy()
        return out
