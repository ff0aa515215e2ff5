"""Opening, rebuilding and saving the SQLite vector index (a mixin of
:class:`~.vector_index.VectorIndex`).

The HNSW graph (vectors of the large buckets only) is saved atomically (temp file + rename)
with a JSON sidecar holding its watermark. On open it is loaded and reconciled with the database
in one read snapshot: the rows' bookkeeping is read without their vectors, then only the vectors
the graph does not hold (small buckets, rows newer than the watermark) are read. A missing,
corrupt, stale or mostly useless graph is rebuilt from the vectors in the database.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from headroom_integrations.memory.backends.sqlite.buckets import CATEGORY_CODE
from headroom_integrations.memory.backends.sqlite.index_reads import current_rows, current_vectors
from headroom_integrations.memory.backends.sqlite.index_saved_rows import load_rows, save_rows

if TYPE_CHECKING:
    from headroom_integrations.memory.backends.sqlite.vector_index import VectorIndex

__all__ = ["FORMAT", "IndexFile", "Placed"]

logger = logging.getLogger(__name__)

FORMAT = 1
"""Version of the saved graph's layout (recorded in its sidecar)."""

Placed = tuple[int, int, int, int]
"""A row as the index files it: (primary key, change number, bucket id, category code)."""


class IndexFile:
    """Open (load or rebuild) and save a :class:`VectorIndex`."""

    def open(self: VectorIndex) -> None:
        """Load the saved graph and reconcile it with the database, or rebuild it."""
        with self._lock:
            if self.path is not None and self._load():
                return
            self.rebuild()

    def _sidecar(self: VectorIndex) -> Path:
        assert self.path is not None
        return self.path.with_name(self.path.name + ".json")

    def _read_saved(self: VectorIndex) -> tuple[Any, int, dict[str, Any]] | None:
        """The saved graph, its watermark and sidecar, or None if missing, unreadable or not ours."""
        import hnswlib

        assert self.path is not None
        try:
            info = json.loads(self._sidecar().read_text())
            if info.get("format") != FORMAT or info.get("dim") != self.dim:
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
        return graph, watermark, info

    def _load(self: VectorIndex) -> bool:
        saved = self._read_saved()
        if saved is None:
            return False
        graph, watermark, info = saved
        self._reset()
        self._hnsw = graph
        labels = np.asarray(graph.get_ids_list(), dtype=np.int64)
        if load_rows(self, info, labels):  # the bookkeeping and small buckets saved beside the graph
            self.watermark = watermark
            self.sync()
            return True
        self._reset()
        self._hnsw = graph
        with self.store.read() as conn:
            pks: list[int] = []
            seqs: list[int] = []
            bids: list[int] = []
            codes: list[int] = []
            raw_bids, bucket_of, category_code = self._raw_bids, self._bucket_of, CATEGORY_CODE
            for batch in current_rows(conn):  # the rows' bookkeeping, no vectors; columns at C speed
                pks += [r[0] for r in batch]
                seqs += [r[1] for r in batch]
                found = [raw_bids.get(r[2:7]) for r in batch]
                bids += [bucket_of(*r[2:7], exact=False) if b is None else b for b, r in zip(found, batch)]
                codes += [category_code[r[7]] for r in batch]
            n = len(pks)
            pk_arr = np.asarray(pks, dtype=np.int64)
            bid_arr = np.asarray(bids, dtype=np.int64)
            counts = np.bincount(bid_arr, minlength=len(self._buckets)) if n else np.zeros(0, np.int64)
            small = counts <= self.brute_force_max
            known = np.isin(pk_arr, labels) & (np.asarray(seqs, dtype=np.int64) <= watermark)
            large_row = ~small[bid_arr] if n else np.zeros(0, bool)
            stale = large_row & ~known
            if int(stale.sum()) > max(1000, n // 2):
                logger.info("vector index %s is far behind (%d rows), rebuilding", self.path, int(stale.sum()))
                return False
            in_graph_arr = pk_arr[large_row & known]
            dead = np.setdiff1d(labels, in_graph_arr, assume_unique=True)
            if len(dead) > max(10_000, len(in_graph_arr)):  # e.g. saved by a version that graphed small buckets too
                logger.info("vector index %s holds %d vectors it does not need, rebuilding", self.path, len(dead))
                return False
            for pk in dead.tolist():
                with contextlib.suppress(RuntimeError):  # already marked deleted in the saved graph
                    graph.mark_deleted(pk)
                self._marked.add(pk)
            self._in_graph = set(in_graph_arr.tolist())
            self._where = dict(zip(pks, zip(bids, codes)))
            self._seq_of = dict(zip(pks, seqs))
            # Rows grouped by bucket (pk order kept inside each); small buckets' matrices are views
            # of one matrix laid out the same way, filled straight from the database.
            order = np.argsort(bid_arr, kind="stable")
            starts = np.concatenate([[0], np.cumsum(counts)])
            sorted_pks = pk_arr[order].tolist()
            code_arr = np.asarray(codes, dtype=np.int8)[order]
            small_rows = small[bid_arr]
            slot = np.full(n, -1, dtype=np.int64)  # row of each small-bucket row in the big matrix, by pk order
            small_order = order[small_rows[order]]
            slot[small_order] = np.arange(len(small_order))
            matrix = np.zeros((len(small_order), self.dim), dtype=np.float32)
            at = 0
            for bid, bucket in enumerate(self._buckets):
                lo, hi = int(starts[bid]), int(starts[bid + 1])
                if small[bid]:
                    bucket.fill(sorted_pks[lo:hi], code_arr[lo:hi].copy(), matrix[at : at + hi - lo])
                    at += hi - lo
                else:
                    bucket.fill(sorted_pks[lo:hi], code_arr[lo:hi].copy())
            need = small_rows | stale
            for found_pks, vectors in current_vectors(conn, pk_arr[need].tolist(), self.dim):
                rows = np.searchsorted(pk_arr, np.asarray(found_pks, dtype=np.int64))
                into = slot[rows]
                mine = into >= 0
                matrix[into[mine]] = vectors[mine]
                if not mine.all():
                    late = np.flatnonzero(~mine)
                    self._add_to_graph([found_pks[i] for i in late], vectors[late])
        self._dirty = bool(stale.any())
        self.watermark = watermark
        self.sync()
        return True

    def _decode(self: VectorIndex, batch: list[tuple[Any, ...]]) -> tuple[list[Placed], np.ndarray]:
        """Split raw index rows into placed rows and an (n, dim) vector matrix."""
        rows = [(r[0], r[1], self._bucket_of(r[2], r[3], r[4], r[5], r[6]), CATEGORY_CODE[r[7]]) for r in batch]
        vectors = np.frombuffer(b"".join(r[8] for r in batch), dtype=np.float32).reshape(len(batch), self.dim)
        return rows, vectors

    def rebuild(self: VectorIndex) -> None:
        """Build the index from scratch from the vectors stored in the database."""
        with self._lock:
            start = self.store.current_seq()
            self._reset(capacity=1024)
            for batch in self.store.index_rows():
                self._place(*self._decode(batch))
            self.watermark = start
            self._dirty = True
            self.sync()

    def save(self: VectorIndex) -> None:
        """Write the graph and its watermark atomically (no-op when nothing changed or in RAM)."""
        if self.path is None:
            return
        with self._lock:
            self.sync()
            if not self._dirty and self.path.exists() and self.path.with_name(self.path.name + ".rows").exists():
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            self._hnsw.save_index(str(tmp))
            size = tmp.stat().st_size
            os.replace(tmp, self.path)
            info = {"format": FORMAT, "dim": self.dim, "watermark": self.watermark, "size": size,
                    **save_rows(self, self.path.with_name(self.path.name + ".rows"), tmp.with_suffix(".rows.tmp"))}
            tmp_info = tmp.with_suffix(".json.tmp")
            tmp_info.write_text(json.dumps(info))
            os.replace(tmp_info, self._sidecar())
            self._dirty = False
