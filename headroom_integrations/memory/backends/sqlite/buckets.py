"""One visibility bucket of the vector index: the memories a group of callers may see, as a dense matrix."""

from __future__ import annotations

import numpy as np

from headroom_integrations.memory.models import MemoryCategory

__all__ = ["CATEGORY_CODE", "Bucket"]

CATEGORY_CODE = {c.value: i for i, c in enumerate(MemoryCategory)}
"""Each category's small integer code, kept per vector for category filters."""


class Bucket:
    """Memories of one visibility bucket: their keys and a dense matrix of their vectors (swap-remove
    keeps it dense).

    While the bucket is small the matrix is float32 and serves exact search. A bucket that grows
    past ``limit`` is searched through the HNSW graph from then on, and its matrix is halved to
    float16: it then only serves the cosine of a few extra candidates per search (keyword-only hits,
    neighbouring memories), for which reading vectors back from the graph or the database is slower.

    Example:
        >>> bucket = Bucket(dim=2, limit=10)
        >>> bucket.put_many([7, 9], np.eye(2, dtype=np.float32), np.zeros(2, dtype=np.int8))
        >>> bucket.remove(7); bucket.pks, bucket.exact
        ([9], True)
    """

    def __init__(self, dim: int, limit: int) -> None:
        self.limit = limit
        self.pks: list[int] = []
        self.row_of: dict[int, int] = {}
        self.vectors: np.ndarray = np.zeros((8, dim), dtype=np.float32)
        self.categories: np.ndarray = np.zeros(8, dtype=np.int8)

    @property
    def exact(self) -> bool:
        """True while the bucket is searched exactly (its matrix is float32)."""
        return self.vectors.dtype == np.float32

    def put_many(self, pks: list[int], vectors: np.ndarray, categories: np.ndarray) -> None:
        """Add or replace memories (vectors as an (n, dim) array)."""
        rows = []
        for pk in pks:
            row = self.row_of.get(pk)
            if row is None:
                row = self.row_of[pk] = len(self.pks)
                self.pks.append(pk)
            rows.append(row)
        if self.exact and len(self.pks) > self.limit:
            self.vectors = self.vectors.astype(np.float16)
        if len(self.pks) > len(self.vectors):
            grow = max(len(self.pks), 2 * len(self.vectors)) - len(self.vectors)
            self.vectors = np.concatenate([self.vectors, np.zeros((grow, self.vectors.shape[1]), self.vectors.dtype)])
            self.categories = np.concatenate([self.categories, np.zeros(grow, np.int8)])
        self.vectors[rows] = vectors
        self.categories[rows] = categories

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
