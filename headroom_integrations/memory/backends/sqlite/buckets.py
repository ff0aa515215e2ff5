"""One visibility bucket of the vector index: the memories a group of callers may see."""

from __future__ import annotations

import numpy as np

from headroom_integrations.memory.models import MemoryCategory

__all__ = ["CATEGORY_CODE", "Bucket"]

CATEGORY_CODE = {c.value: i for i, c in enumerate(MemoryCategory)}
"""Each category's small integer code, kept per vector for category filters."""


class Bucket:
    """Memories of one visibility bucket: their keys, category codes and, while the bucket is
    small, a dense float32 matrix of their vectors (swap-remove keeps it dense).

    A small bucket is searched exactly from its matrix and its vectors are nowhere else. A bucket
    that grows past ``limit`` moves to the HNSW graph (:meth:`to_graph` hands its matrix over
    once and drops it): from then on its vectors live in the graph only, so every vector is held
    once in RAM.

    Example:
        >>> bucket = Bucket(dim=2, limit=10)
        >>> bucket.put_many([7, 9], np.eye(2, dtype=np.float32), np.zeros(2, dtype=np.int8))
        >>> bucket.remove(7); bucket.pks, bucket.exact
        ([9], True)
        >>> bucket.to_graph().shape, bucket.exact
        ((1, 2), False)
    """

    def __init__(self, dim: int, limit: int, exact: bool = True) -> None:
        self.limit = limit
        self.dim = dim
        self.pks: list[int] = []
        self._row_of: dict[int, int] | None = {}
        self.vectors: np.ndarray | None = np.zeros((8, dim), dtype=np.float32) if exact else None
        self.categories: np.ndarray = np.zeros(8, dtype=np.int8)

    def fill(self, pks: list[int], categories: np.ndarray, vectors: np.ndarray | None = None) -> None:
        """Set the bucket's memories at once (a store being opened): with ``vectors`` it is an exact
        bucket, without them a graph one. The row of each memory is looked up again only when a
        write first needs it."""
        self.pks = pks
        self._row_of = None
        self.categories = categories
        self.vectors = vectors

    @property
    def row_of(self) -> dict[int, int]:
        """The row of each memory in :attr:`pks` (built on first use after :meth:`fill`: a search
        needs none, and for a million memories it costs a tenth of a second)."""
        if self._row_of is None:
            self._row_of = dict(zip(self.pks, range(len(self.pks))))
        return self._row_of

    @property
    def exact(self) -> bool:
        """True while the bucket is searched exactly (it keeps its own matrix)."""
        return self.vectors is not None

    @property
    def full(self) -> bool:
        """True when an exact bucket holds more than ``limit`` vectors (it should move to the graph)."""
        return self.vectors is not None and len(self.pks) > self.limit

    def reserve(self, n: int) -> None:
        """Make room for ``n`` memories in all (a store being opened knows each bucket's size)."""
        if n > len(self.categories):
            grow = n - len(self.categories)
            self.categories = np.concatenate([self.categories, np.zeros(grow, np.int8)])
            if self.vectors is not None:
                self.vectors = np.concatenate([self.vectors, np.zeros((grow, self.vectors.shape[1]), np.float32)])

    def append(self, pk: int, code: int) -> int:
        """Add a memory not in the bucket yet (its vector, if exact, is set by the caller); its row."""
        row = self.row_of[pk] = len(self.pks)
        self.pks.append(pk)
        if row >= len(self.categories):
            self.reserve(row + 1 + row // 4 + 8)
        self.categories[row] = code
        return row

    def put_many(self, pks: list[int], vectors: np.ndarray | None, categories: np.ndarray) -> None:
        """Add or replace memories (vectors as an (n, dim) array; ignored, and may be None, once
        the bucket lives in the graph)."""
        rows = []
        row_of = self.row_of
        for pk in pks:
            row = row_of.get(pk)
            if row is None:
                row = row_of[pk] = len(self.pks)
                self.pks.append(pk)
            rows.append(row)
        if len(self.pks) > len(self.categories):  # grown by a quarter: little idle room in a million rows
            self.reserve(max(len(self.pks), len(self.categories) + len(self.categories) // 4 + 8))
        self.categories[rows] = categories
        if self.vectors is not None:
            assert vectors is not None, "an exact bucket needs the vectors"
            self.vectors[rows] = vectors

    def to_graph(self) -> np.ndarray:
        """Stop keeping a matrix; return the vectors of :attr:`pks` (in that order) for the graph."""
        assert self.vectors is not None
        matrix = self.vectors[: len(self.pks)].copy()
        self.vectors = None
        return matrix

    def remove(self, pk: int) -> None:
        row_of = self.row_of
        row = row_of.pop(pk)
        last = len(self.pks) - 1
        if row != last:
            moved = self.pks[last]
            self.pks[row] = moved
            row_of[moved] = row
            self.categories[row] = self.categories[last]
            if self.vectors is not None:
                self.vectors[row] = self.vectors[last]
        if self.vectors is not None:
            self.vectors[last] = 0.0  # no copy of a removed (perhaps erased) vector stays behind
        self.pks.pop()
