"""Embeddings computed ahead, chunk by chunk, while the first chunks are being written."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import overload

import numpy as np

__all__ = ["EmbeddingsAhead"]


class EmbeddingsAhead(Sequence[np.ndarray]):
    """The vectors of ``texts``, computed in order, ``chunk`` texts at a time, in a thread of their
    own; reading one waits only for its chunk. A backend that writes a batch chunk by chunk
    (``write_chunk``) then writes chunk *k* while chunk *k + 1* is embedded.

    An embedding failure is raised where its vectors are read (the write's transaction then rolls
    back); the chunks after it are not computed.

    Example:
        >>> vectors = EmbeddingsAhead(lambda texts: np.ones((len(texts), 2)), ["a", "b", "c"], chunk=2)
        >>> len(vectors), vectors[2].tolist(), [v.tolist() for v in vectors[:2]]
        (3, [1.0, 1.0], [[1.0, 1.0], [1.0, 1.0]])
    """

    def __init__(self, embed: Callable[[list[str]], np.ndarray], texts: Sequence[str], chunk: int) -> None:
        self._chunk = max(1, chunk)
        self._size = len(texts)
        self._parts: list[Future[np.ndarray]] = [Future() for _ in range(0, self._size, self._chunk)]

        def run() -> None:
            for number, part in enumerate(self._parts):
                first = number * self._chunk
                try:
                    part.set_result(np.asarray(embed(list(texts[first : first + self._chunk]))))
                except BaseException as exc:  # handed to the reader; nothing after it is computed
                    for rest in self._parts[number:]:
                        rest.set_exception(exc)
                    return

        threading.Thread(target=run, name="headroom-embed-ahead", daemon=True).start()

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._size))]
        if not -self._size <= index < self._size:
            raise IndexError(index)
        index %= self._size
        return self._parts[index // self._chunk].result()[index % self._chunk]
