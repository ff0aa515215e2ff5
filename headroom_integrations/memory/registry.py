"""Stores open in this process, shared by every engine on the same file or database URL, and the
small thread pool engines use for work beside the query embedding and for deferred embeddings."""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from headroom_integrations.errors import EmbedderMismatchError
from headroom_integrations.memory.backends import MemoryBackend, backend_key, open_backend, recorded_meta
from headroom_integrations.memory.config import MemoryConfig

__all__ = ["SharedStore", "acquire", "background", "recorded_embedder_name", "release"]

logger = logging.getLogger(__name__)

Embed = Callable[[list[str]], np.ndarray]
"""How an engine embeds texts (its embedder, with its length limit)."""


@dataclass
class SharedStore:
    """One store's backend, shared by every engine of this process on it, and the state of the
    embeddings this process computes after the fact (deferred ones under way, failed ones).

    Example:
        >>> from headroom_integrations.memory.config import MemoryConfig
        >>> key, shared = acquire(MemoryConfig(db_path=":memory:"), "test/model", 2)
        >>> shared.users, shared.take_failed()
        (1, [])
        >>> release(key)
    """

    backend: MemoryBackend
    embedder_name: str
    dimension: int
    users: int = 0
    pending: set[Future[None]] = field(default_factory=set)  # deferred embeddings under way
    failed: set[int] = field(default_factory=set)  # rows whose deferred embedding failed: retried by search
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_pending(self) -> None:
        """Block until every deferred embedding started so far has finished (failed ones are in ``failed``)."""
        concurrent.futures.wait(list(self.pending))

    def take_failed(self) -> list[int]:
        """The rows whose deferred embedding failed, handed over to the caller to retry."""
        with self.lock:
            taken, self.failed = sorted(self.failed), set()
        return taken

    def embed_now(self, embed: Embed, pks: list[int]) -> None:
        """Embed rows stored without a vector and store the vectors. When they cannot be stored
        (a read-only file, a full disk) the rows are remembered and retried by the next search (the
        SQLite backend still searches with them from RAM meanwhile)."""
        waiting = self.backend.without_embedding(pks)
        if not waiting:
            return
        vectors = embed([content for _, content in waiting])
        by_pk = {pk: vector for (pk, _), vector in zip(waiting, vectors)}
        if not self.backend.set_embeddings(by_pk):
            with self.lock:
                self.failed.update(by_pk)

    def embed_later(self, embed: Embed, pks: list[int]) -> None:
        """Embed rows in the background (``defer_embedding=True``); searches wait for it."""

        def run() -> None:
            try:
                self.embed_now(embed, pks)
            except Exception as exc:  # the rows are committed: the next search embeds them
                logger.warning("deferred embedding of %d memories failed (%s); the next search retries", len(pks), exc)
                with self.lock:
                    self.failed.update(pks)

        job = background().submit(run)
        self.pending.add(job)
        job.add_done_callback(self.pending.discard)

    def catch_up(self, embed: Embed, wait: bool = True) -> None:
        """Before a search: every acknowledged write, of any process, is searchable by vector.

        Deferred embeddings of this process are awaited (unless ``wait`` is False: the caller did
        it, outside the pool those embeddings run in); rows another process stored without a
        vector yet are embedded here (if that process stores its vector first, the second refresh
        brings it in), and embeddings that failed earlier are retried.
        """
        if wait:
            self.wait_pending()
        waiting = self.backend.refresh()
        retry = self.take_failed()
        if not waiting and not retry:
            return
        try:
            self.embed_now(embed, sorted({*waiting, *retry}))
        except BaseException:
            with self.lock:
                self.failed.update(retry)
            raise
        self.backend.refresh()


_OPEN: dict[str, SharedStore] = {}
_LOCK = threading.Lock()
_HERE = threading.local()  # .holding: this thread is inside _held()
_DEFERRED: list[str] = []  # releases asked for by a finalizer while this thread held the registry
_POOL: ThreadPoolExecutor | None = None


@contextlib.contextmanager
def _held() -> Iterator[None]:
    """The registry lock. A garbage-collected engine's finalizer can run on any allocation, also
    while this thread holds the lock (opening a backend allocates a lot): its release is then
    deferred (see :func:`release`) and carried out here, once the lock is free again."""
    with _LOCK:
        _HERE.holding = True
        try:
            yield
        finally:
            _HERE.holding = False
    while True:
        try:
            key = _DEFERRED.pop()
        except IndexError:
            return
        release(key)


def background() -> ThreadPoolExecutor:
    """A small shared pool for work that overlaps with embedding (keyword search, deferred embeddings)."""
    global _POOL
    with _held():
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="headroom-memory")
        return _POOL


def recorded_embedder_name(config: MemoryConfig) -> str | None:
    """The embedder name the configured store was written with (None for a new store).

    Only ``local_runtime="auto"`` looks at it (to keep a full-precision store on full precision).
    """
    if config.embedder is not None or config.local_runtime != "auto" or config.in_memory:
        return None
    key = backend_key(config)
    with _held():
        shared = _OPEN.get(key) if key is not None else None
    return shared.embedder_name if shared is not None else recorded_meta(config, "embedder_name")


def acquire(config: MemoryConfig, embedder_name: str, dimension: int) -> tuple[str, SharedStore]:
    """The shared store of this configuration (opened on first use) and its registry key.

    Raises:
        EmbedderMismatchError: the store is open in this process with another embedder.
    """
    key = backend_key(config) or f":memory:{uuid.uuid4()}"
    with _held():
        shared = _OPEN.get(key)
        if shared is None:
            backend = open_backend(config, embedder_name, dimension)
            shared = _OPEN[key] = SharedStore(backend, embedder_name, dimension)
        elif (shared.embedder_name, shared.dimension) != (embedder_name, dimension):
            raise EmbedderMismatchError(
                f"{shared.backend.location} is open in this process with embedder {shared.embedder_name!r} "
                f"({shared.dimension} dimensions); this configuration uses {embedder_name!r} "
                f"({dimension} dimensions)"
            )
        shared.users += 1
    return key, shared


def release(key: str) -> None:
    """One engine fewer on this store; the last one closes it (saving what it keeps in RAM).

    Called by an engine's finalizer while this thread holds the registry (garbage collection
    inside :func:`acquire`), it only records the release: waiting for the lock would wait forever.
    """
    if getattr(_HERE, "holding", False):
        _DEFERRED.append(key)
        return
    with _held():
        shared = _OPEN.get(key)
        if shared is None:
            return
        shared.users -= 1
        if shared.users > 0:
            return
        del _OPEN[key]
    shared.backend.close()


@atexit.register
def _save_all() -> None:
    for shared in list(_OPEN.values()):
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            shared.backend.save()
