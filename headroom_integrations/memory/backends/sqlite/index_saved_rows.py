"""The vector index's bookkeeping and small buckets, saved beside its graph (``<index>.rows``).

With it, opening a store reads no row of the database: the memories the index held at its
watermark (primary key, change number, bucket, category), the bucket keys, and the small buckets'
vectors in one float32 block, which becomes their matrices as is (views of a copy-on-write
mapping of the file: nothing is copied, pages are read as searches touch them). What changed
after the watermark is then pulled like any other process's writes. A missing or mismatched file
only means the slower open that reads the rows from the database.

Layout: an 8-byte little-endian header length, a JSON header (``n`` rows, ``m`` small-bucket
rows, ``dim``, the ``limit`` (``brute_force_max``) it was split by, bucket ``keys``, each small
bucket's ``(bid, count)``, a ``token`` also recorded in the graph's sidecar), then the arrays:
pks int64[n], seqs int64[n], bids int32[n], codes int8[n], and for the small buckets in order
their pks int64[m], codes int8[m] and vectors float32[m, dim].
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from headroom_integrations.memory.backends.sqlite.buckets import Bucket

if TYPE_CHECKING:
    from headroom_integrations.memory.backends.sqlite.vector_index import VectorIndex

__all__ = ["load_rows", "save_rows"]

logger = logging.getLogger(__name__)


def save_rows(index: VectorIndex, path: Path, tmp: Path) -> dict[str, Any]:
    """Write the index's bookkeeping and small buckets to ``path`` (via ``tmp``, then renamed);
    the entries to record in the graph's sidecar."""
    where = index._where
    n = len(where)
    pks = np.fromiter(where.keys(), dtype=np.int64, count=n)
    spots = np.array(list(where.values()), dtype=np.int64).reshape(n, 2)
    seqs = np.fromiter((index._seq_of[pk] for pk in where), dtype=np.int64, count=n)
    small = [(bid, b) for bid, b in enumerate(index._buckets) if b.vectors is not None]
    m = sum(len(b.pks) for _, b in small)
    token = uuid.uuid4().hex
    header = json.dumps({"n": n, "m": m, "dim": index.dim, "token": token, "limit": index.brute_force_max,
                         "keys": _keys(index),
                         "small": [[bid, len(b.pks)] for bid, b in small]}).encode()
    with tmp.open("wb") as out:
        out.write(len(header).to_bytes(8, "little"))
        out.write(header)
        for array in (pks, seqs, spots[:, 0].astype(np.int32), spots[:, 1].astype(np.int8)):
            out.write(array.tobytes())
        for _, b in small:
            out.write(np.asarray(b.pks, dtype=np.int64).tobytes())
        for _, b in small:
            out.write(b.categories[: len(b.pks)].tobytes())
        for _, b in small:
            assert b.vectors is not None
            out.write(b.vectors[: len(b.pks)].tobytes())
    size = tmp.stat().st_size
    os.replace(tmp, path)
    return {"rows_token": token, "rows_size": size}


def _keys(index: VectorIndex) -> list[Any]:
    keys: list[Any] = [None] * len(index._buckets)
    for key, bid in index._bucket_ids.items():
        keys[bid] = list(key)
    return keys


def _vectors(path: Path, offset: int, m: int, dim: int) -> np.ndarray:
    """The small buckets' vectors: on POSIX a private (copy-on-write) mapping of the file, so
    opening costs no copy and pages are read as searches touch them (writes stay in this
    process); elsewhere read into memory."""
    if m == 0:
        return np.zeros((0, dim), dtype=np.float32)
    if os.name == "posix":
        return np.memmap(path, dtype=np.float32, mode="c", offset=offset, shape=(m, dim))
    with path.open("rb") as source:
        source.seek(offset)
        return np.fromfile(source, dtype=np.float32, count=m * dim).reshape(m, dim)


def _spots(index: VectorIndex, bids: np.ndarray, codes: np.ndarray) -> list[tuple[int, int]]:
    """The (bucket, category code) of each row, one tuple object per distinct pair (kept in the
    index's ``_spots`` for later writes): a million memories of one user share a handful, where one
    tuple each would be a million allocations."""
    if len(bids) == 0:
        return []
    distinct, inverse = np.unique(bids.astype(np.int64) * 256 + codes.astype(np.int64), return_inverse=True)
    shared = index._spots
    pairs = [shared.setdefault(pair, pair) for pair in ((v >> 8, v & 255) for v in distinct.tolist())]
    return [pairs[i] for i in inverse.tolist()]


def load_rows(index: VectorIndex, info: dict[str, Any], labels: np.ndarray) -> bool:
    """Fill a freshly reset index from the saved rows file; False (index untouched but for a
    reset) when there is none or it does not belong to this graph."""
    assert index.path is not None
    path = index.path.with_name(index.path.name + ".rows")
    if "rows_token" not in info:
        return False
    try:
        if path.stat().st_size != info.get("rows_size"):
            return False
        with path.open("rb") as source:
            length = int.from_bytes(source.read(8), "little")
            header = json.loads(source.read(length))
            if (header.get("token"), header.get("dim"), header.get("limit")) != (
                info["rows_token"], index.dim, index.brute_force_max
            ):  # another save's file, or another split of small and large buckets
                return False
            n, m, dim = int(header["n"]), int(header["m"]), index.dim
            pks = np.fromfile(source, dtype=np.int64, count=n)
            seqs = np.fromfile(source, dtype=np.int64, count=n)
            bids = np.fromfile(source, dtype=np.int32, count=n)
            codes = np.fromfile(source, dtype=np.int8, count=n)
            small_pks = np.fromfile(source, dtype=np.int64, count=m)
            small_codes = np.fromfile(source, dtype=np.int8, count=m)
            offset = source.tell()
        if offset + 4 * m * dim != info["rows_size"] or len(small_codes) != m or len(pks) != n:
            return False
        matrix = _vectors(path, offset, m, dim)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("vector index rows %s unreadable (%s), reading the rows from the database", path, exc)
        return False
    for bid, key in enumerate(header["keys"]):
        index._buckets.append(Bucket(dim, index.brute_force_max, exact=False))
        if key is not None:
            index._bucket_ids[tuple(key)] = bid  # type: ignore[assignment]
    pk_list = pks.tolist()
    index._where = dict(zip(pk_list, _spots(index, bids, codes)))
    index._seq_of = dict(zip(pk_list, seqs.tolist()))
    is_small = np.zeros(len(index._buckets), dtype=bool)
    at = 0
    for bid, count in header["small"]:
        bucket = index._buckets[bid]
        bucket.fill(small_pks[at : at + count].tolist(), small_codes[at : at + count].copy(), matrix[at : at + count])
        is_small[bid] = True
        at += count
    large_rows = ~is_small[bids] if n else np.zeros(0, dtype=bool)
    order = np.argsort(bids[large_rows], kind="stable")
    large_pks, large_bids, large_codes = pks[large_rows][order], bids[large_rows][order], codes[large_rows][order]
    bounds = np.flatnonzero(np.diff(large_bids)) + 1
    for lo, hi in zip([0, *bounds.tolist()], [*bounds.tolist(), len(large_bids)]):
        if hi > lo:
            bucket = index._buckets[int(large_bids[lo])]
            bucket.fill(large_pks[lo:hi].tolist(), large_codes[lo:hi].copy())
    # Every large-bucket row must have its vector in the graph; graph labels without a row are
    # vectors of memories gone since (marked deleted already, normally). Checked on sorted arrays:
    # sets of a million Python ints cost as much again as the rest of the open.
    others = np.setdiff1d(labels, large_pks, assume_unique=True)
    if len(labels) - len(others) != len(large_pks):
        index._reset()
        return False
    for pk in others.tolist():
        index._marked.add(pk)
        with contextlib.suppress(RuntimeError):
            index._hnsw.mark_deleted(pk)
    in_graph = set(itertools.compress(pk_list, large_rows.tolist()))  # the int objects of pk_list, not new ones
    index._in_graph = in_graph
    return True
