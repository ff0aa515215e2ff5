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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from headroom_integrations.memory.backends.sqlite.buckets import CATEGORY_CODE, Bucket
from headroom_integrations.memory.backends.sqlite.index_rows import IndexRow
from headroom_integrations.memory.models import MemoryCategory
from headroom_integrations.memory.visibility import BucketKey, bucket_key

if TYPE_CHECKING:
    from headroom_integrations.memory.backends.sqlite.backend import SqliteBackend

__all__ = ["VectorIndex"]

logger = logging.getLogger(__name__)

_FORMAT = 1


class VectorIndex:
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
        self._seq_of: dict[int, int] = {}  # pk -> change number of the version applied
        self._bucket_ids: dict[BucketKey, int] = {}
        self._buckets: list[Bucket] = []

    def __len__(self) -> int:
        return len(self._where)

    def held(self) -> tuple[dict[int, int], set[int]]:
        """After pulling every change: the change number of each memory held (pk -> seq) and the
        graph's live labels (for :func:`.doctor.check_sqlite`)."""
        with self._lock:
            self.sync()
            return {pk: self._seq_of[pk] for pk in self._where}, set(self._in_graph)

    def _bucket(self, key: BucketKey) -> int:
        bid = self._bucket_ids.get(key)
        if bid is None:
            bid = self._bucket_ids[key] = len(self._buckets)
            self._buckets.append(Bucket(self.dim, self.brute_force_max))
        return bid

    # -- applying rows ------------------------------------------------------------------------------

    def _place(self, rows: list[tuple[int, int, BucketKey, str]], vectors: np.ndarray) -> None:
        """File rows (pk, seq, bucket key, category) with their vectors into buckets and bookkeeping."""
        by_bucket: dict[int, list[int]] = {}
        for position, (pk, seq, key, category) in enumerate(rows):
            bid, code = self._bucket(key), CATEGORY_CODE[category]
            old = self._where.get(pk)
            if old is not None and old[0] != bid:
                self._buckets[old[0]].remove(pk)
            self._where[pk] = (bid, code)
            self._seq_of[pk] = seq
            by_bucket.setdefault(bid, []).append(position)
        for bid, positions in by_bucket.items():
            pks = [rows[i][0] for i in positions]
            codes = np.fromiter((CATEGORY_CODE[rows[i][3]] for i in positions), dtype=np.int8, count=len(positions))
            self._buckets[bid].put_many(pks, vectors[positions], codes)

    def _apply(self, rows: Iterable[IndexRow], force: bool = False) -> list[int]:
        """Bring the index in line with these rows (newer versions only, unless ``force``).

        Returns the primary keys of rows (any version) that have no vector yet (their embedding
        is being computed, here or by another process).
        """
        placed: list[tuple[int, int, BucketKey, str]] = []
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
            key = bucket_key(row.user_id, row.scope, row.session_id, row.agent_id, row.turn_id)
            placed.append((row.pk, row.seq, key, row.category))
            vectors.append(row.embedding)
        if placed:
            matrix = np.stack(vectors)
            self._place(placed, matrix)
            self._add_to_graph([p[0] for p in placed], matrix)
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

    def _remove(self, pk: int) -> None:
        self.version += 1
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

    def _read_saved(self) -> tuple[Any, int] | None:
        """The saved graph and its watermark, or None if missing, unreadable or not ours."""
        import hnswlib

        assert self.path is not None
        try:
            info = json.loads(self._sidecar().read_text())
            if info.get("format") != _FORMAT or info.get("dim") != self.dim:
                logger.info("vector index %s: other format or dimension, rebuilding", self.path)
                return None
            if info.get("size") != self.path.stat().st_size:
                logger.warning("vector index %s: file does not match its sidecar, rebuilding", self.path)
                return None
            watermark = int(info["watermark"])
            if watermark > self.store.current_seq():
                logger.warning("vector index %s is newer than its database, rebuilding", self.path)
                return None
            graph = hnswlib.Index(space="ip", dim=self.dim)
            graph.load_index(str(self.path))
            graph.set_ef(self.ef_search)
        except FileNotFoundError:
            return None
        except Exception as exc:  # a corrupt file can raise nearly anything from hnswlib/json
            logger.warning("vector index %s unreadable (%s), rebuilding", self.path, exc)
            return None
        return graph, watermark

    def _load(self) -> bool:
        saved = self._read_saved()
        if saved is None:
            return False
        graph, watermark = saved
        self._reset()
        self._hnsw = graph
        labels = {int(x) for x in graph.get_ids_list()}
        current: set[int] = set()
        stale_rows: list[tuple[int, int, BucketKey, str]] = []
        stale_vectors: list[np.ndarray] = []
        for batch in self.store.index_rows():
            rows, vectors = self._decode(batch)
            known = []
            for position, row in enumerate(rows):
                current.add(row[0])
                if row[0] in labels and row[1] <= watermark:
                    known.append(position)
                else:
                    stale_rows.append(row)
                    stale_vectors.append(vectors[position])
            self._place([rows[i] for i in known], vectors[known])
        for pk in labels - current:
            with contextlib.suppress(RuntimeError):  # already marked deleted in the saved graph
                graph.mark_deleted(pk)
            self._marked.add(pk)
        self._in_graph = labels & current
        if len(stale_rows) > max(1000, len(current) // 2):
            logger.info("vector index %s is far behind (%d rows), rebuilding", self.path, len(stale_rows))
            return False
        if stale_rows:
            matrix = np.stack(stale_vectors)
            self._place(stale_rows, matrix)
            self._add_to_graph([row[0] for row in stale_rows], matrix)
            self._dirty = True
        self.watermark = watermark
        self.sync()
        return True

    def _decode(self, batch: list[tuple[Any, ...]]) -> tuple[list[tuple[int, int, BucketKey, str]], np.ndarray]:
        """Split raw index rows into (pk, seq, bucket key, category) and an (n, dim) vector matrix."""
        rows = [(r[0], r[1], bucket_key(r[2], r[3], r[4], r[5], r[6]), r[7]) for r in batch]
        vectors = np.frombuffer(b"".join(r[8] for r in batch), dtype=np.float32).reshape(len(batch), self.dim)
        return rows, vectors

    def rebuild(self) -> None:
        """Build the graph from scratch from the vectors stored in the database."""
        with self._lock:
            start = self.store.current_seq()
            self._reset(capacity=1024)
            for batch in self.store.index_rows():
                rows, vectors = self._decode(batch)
                self._place(rows, vectors)
                self._add_to_graph([row[0] for row in rows], vectors)
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
        """The ``k`` nearest visible memories as (primary key, cosine similarity), best first."""
        codes = None if categories is None else {CATEGORY_CODE[c.value] for c in categories}
        with self._lock:
            bids, visible = self._visible(keys)
            if visible == 0 or k <= 0:
                return []
            if visible <= self.brute_force_max and all(self._buckets[b].exact for b in bids):
                return self._exact(query, bids, k, codes)
            return self._graph(query, set(bids), visible, k, codes)

    def versions(self, pks: Iterable[int]) -> dict[int, int]:
        """Change number of the version the index holds for each known primary key."""
        with self._lock:
            seq_of = self._seq_of
            return {pk: seq_of[pk] for pk in pks if pk in seq_of}

    def keep_visible(
        self, pks: Iterable[int], keys: list[BucketKey], categories: Iterable[MemoryCategory] | None = None
    ) -> list[int]:
        """The given primary keys that are current and visible from ``keys``, order kept."""
        codes = None if categories is None else {CATEGORY_CODE[c.value] for c in categories}
        with self._lock:
            bids = {self._bucket_ids[key] for key in keys if key in self._bucket_ids}
            out = []
            for pk in pks:
                spot = self._where.get(pk)
                if spot is not None and spot[0] in bids and (codes is None or spot[1] in codes):
                    out.append(pk)
            return out

    def similarities(self, query: np.ndarray, pks: Iterable[int]) -> dict[int, float]:
        """Cosine similarity of the query to each given memory the index holds (others left out).

        Served from the buckets' matrices (float16 in buckets past ``brute_force_max``: about 1e-3
        off, plenty to rank a few extra candidates); reading vectors back from the HNSW graph
        would cost ~14 µs each.
        """
        by_bucket: dict[int, list[int]] = {}
        out: dict[int, float] = {}
        with self._lock:
            for pk in pks:
                spot = self._where.get(pk)
                if spot is not None:
                    by_bucket.setdefault(spot[0], []).append(pk)
            for bid, found in by_bucket.items():
                bucket = self._buckets[bid]
                rows = bucket.vectors[[bucket.row_of[pk] for pk in found]]
                out.update(zip(found, (rows.astype(np.float32, copy=False) @ query).tolist()))
        return out

    def neighbours(
        self,
        pks: Iterable[int],
        keys: list[BucketKey],
        categories: Iterable[MemoryCategory] | None = None,
        reach: int = 8,
    ) -> dict[int, list[int]]:
        """For each given memory, the visible memories of its own bucket stored just before and just
        after it (the nearest primary key on each side, looking at most ``reach`` keys away)."""
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
                    for distance in range(1, reach + 1):
                        other = where.get(pk + step * distance)
                        if other is not None and other[0] == spot[0]:
                            if codes is None or other[1] in codes:
                                found.append(pk + step * distance)
                            break
                out[pk] = found
            return out

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
