"""HierarchicalMemory: one blocking, thread-safe engine with a thin async face.

SQLite, hnswlib and the embedders all block, so the engine (:class:`MemoryEngine`) is plain
blocking code that is safe to call from several threads. :class:`HierarchicalMemory` exposes the
same methods as coroutines that run the engine in a worker thread (``asyncio.to_thread``), so it
works in scripts, in Jupyter and inside FastAPI alike; ``memory.sync`` is the engine itself.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import threading
import uuid
import weakref
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from types import TracebackType
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, select

from headroom_integrations._async import async_face
from headroom_integrations.errors import EmbedderMismatchError, InvalidInputError, MemoryNotFoundError, StorageError
from headroom_integrations.memory.config import MemoryConfig
from headroom_integrations.memory.embedders import Embedder, LocalEmbedder, QueryCache, build_embedder
from headroom_integrations.memory.models import (
    ChatRecord,
    Memory,
    MemoryCategory,
    MemoryFilter,
    MemoryScope,
    SearchResult,
    as_count,
    as_number,
)
from headroom_integrations.memory.retrieval import KeywordCache, SearchRequest, hybrid_search, keyword_candidates
from headroom_integrations.memory.schema import memories
from headroom_integrations.memory.sqlite import recorded_meta, storage_errors
from headroom_integrations.memory.store import IndexRow, MemoryStore, filter_condition, now_utc, row_to_memory
from headroom_integrations.memory.text_query import clean_text, fingerprint, query_terms
from headroom_integrations.memory.validation import content_text, identifier, metadata_json, query_text
from headroom_integrations.memory.validation import importance as _importance
from headroom_integrations.memory.vector_index import VectorIndex
from headroom_integrations.memory.visibility import bucket_key

__all__ = ["HierarchicalMemory", "MemoryEngine"]

logger = logging.getLogger(__name__)


@dataclass
class _SharedStore:
    """One database file's store and vector index, shared by every engine of this process on it."""

    store: MemoryStore
    index: VectorIndex
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


_OPEN: dict[str, _SharedStore] = {}
_OPEN_LOCK = threading.Lock()
_BACKGROUND: ThreadPoolExecutor | None = None


def _background() -> ThreadPoolExecutor:
    """A small shared pool for work that overlaps with embedding (keyword search)."""
    global _BACKGROUND
    with _OPEN_LOCK:
        if _BACKGROUND is None:
            _BACKGROUND = ThreadPoolExecutor(max_workers=4, thread_name_prefix="headroom-memory")
        return _BACKGROUND


def _recorded_embedder(config: MemoryConfig) -> str | None:
    """The embedder name the configured database was written with (None for a new database).

    Only ``local_runtime="auto"`` looks at it (to keep a full-precision store on full precision).
    """
    path = config.resolved_db_path
    if path is None or config.embedder is not None or config.local_runtime != "auto":
        return None
    with _OPEN_LOCK:
        shared = _OPEN.get(str(path))
    return shared.embedder_name if shared is not None else recorded_meta(path, "embedder_name")


def _acquire(config: MemoryConfig, embedder: Embedder) -> tuple[str, _SharedStore]:
    path = config.resolved_db_path
    key = str(path) if path is not None else f":memory:{uuid.uuid4()}"
    with _OPEN_LOCK:
        shared = _OPEN.get(key)
        if shared is None:
            store = MemoryStore(path, config.busy_timeout_ms)
            try:
                store.check_embedder(embedder.name, embedder.dimension)
                index = VectorIndex(
                    store, embedder.dimension, config.resolved_index_path, m=config.hnsw_m,
                    ef_construction=config.hnsw_ef_construction, ef_search=config.hnsw_ef_search,
                    brute_force_max=config.brute_force_max,
                )
                index.open()
            except BaseException:
                store.close()
                raise
            shared = _OPEN[key] = _SharedStore(store, index, embedder.name, embedder.dimension)
        elif (shared.embedder_name, shared.dimension) != (embedder.name, embedder.dimension):
            raise EmbedderMismatchError(
                f"{path} is open in this process with embedder {shared.embedder_name!r} "
                f"({shared.dimension} dimensions); this configuration uses {embedder.name!r} "
                f"({embedder.dimension} dimensions)"
            )
        shared.users += 1
    return key, shared


def _release(key: str, owned_embedder: Embedder | None = None) -> None:
    if owned_embedder is not None:
        owned_embedder.close()
    with _OPEN_LOCK:
        shared = _OPEN.get(key)
        if shared is None:
            return
        shared.users -= 1
        if shared.users > 0:
            return
        del _OPEN[key]
    try:
        shared.index.save()
    except Exception as exc:  # the index is a cache: the next open rebuilds what it lacks
        logger.warning("could not save the vector index %s (%s); it will be rebuilt on the next open",
                       shared.index.path, exc)
    finally:
        shared.store.close()


@atexit.register
def _save_all_indexes() -> None:
    for shared in list(_OPEN.values()):
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            shared.index.save()


_ADD_FIELDS = frozenset(
    {"content", "user_id", "session_id", "agent_id", "turn_id", "category", "scope", "importance", "metadata"}
)


def _index_row(pk: int, seq: int, row: Mapping[str, Any], vector: np.ndarray | None) -> IndexRow:
    return IndexRow(
        pk=pk, seq=seq, current=row.get("valid_to") is None, user_id=row["user_id"], scope=row["scope"],
        session_id=row["session_id"], agent_id=row["agent_id"], turn_id=row["turn_id"],
        category=row["category"], embedding=vector,
    )


def _same_memory(row: Mapping[str, Any], memory: Memory) -> bool:
    """Whether a new row repeats an existing memory: same wording, same visibility bucket."""
    return row["fingerprint"] == fingerprint(memory.content) and bucket_key(
        row["user_id"], row["scope"], row["session_id"], row["agent_id"], row["turn_id"]
    ) == bucket_key(memory.user_id, memory.scope, memory.session_id, memory.agent_id, memory.turn_id)


def _memory_index_row(pk: int, seq: int, memory: Memory, vector: np.ndarray | None, current: bool) -> IndexRow:
    return IndexRow(
        pk=pk, seq=seq, current=current, user_id=memory.user_id, scope=memory.scope.value,
        session_id=memory.session_id, agent_id=memory.agent_id, turn_id=memory.turn_id,
        category=memory.category.value, embedding=vector,
    )


class MemoryEngine:
    """The blocking memory engine. Thread-safe; every public method may be called from any thread.

    Prefer :class:`HierarchicalMemory` in async code; in plain sync code use this class directly
    (or ``HierarchicalMemory.open(...).sync``).

    Args:
        config: the configuration (defaults: ``headroom_memory.db`` and local MiniLM).

    Example::

        with MemoryEngine(MemoryConfig(db_path="memory.db")) as engine:
            engine.add("Prefers Go for performance-critical code", user_id="bob", category="preference")
            hits = engine.search("which language?", user_id="bob")
            print(hits[0].content)  # Prefers Go for performance-critical code
    """

    def __init__(self, config: MemoryConfig | str | os.PathLike[str] | None = None) -> None:
        if isinstance(config, (str, os.PathLike)):
            config = MemoryConfig(db_path=config)  # MemoryEngine("memory.db"): the path is the config
        elif config is not None and not isinstance(config, MemoryConfig):
            raise InvalidInputError(f"config must be a MemoryConfig or a database path, got {type(config).__name__}")
        self.config = config or MemoryConfig()
        self.embedder = build_embedder(self.config, _recorded_embedder(self.config))
        # HTTP embedders are built for this engine and closed with it; local models are shared.
        owned = None if self.config.embedder is not None or isinstance(self.embedder, LocalEmbedder) else self.embedder
        self._cache = QueryCache(self.config.cache_max_size) if self.config.cache_enabled else None
        self._keywords = KeywordCache(self.config.cache_max_size) if self.config.cache_enabled else None
        try:
            self._key, shared = _acquire(self.config, self.embedder)
        except BaseException:
            if owned is not None:
                owned.close()
            raise
        self._shared = shared
        self._store = shared.store
        self._index = shared.index
        self._closed = False
        self._finalizer = weakref.finalize(self, _release, self._key, owned)
        if shared.users == 1:  # first engine on this file here: finish embeddings a crash left undone
            self._embed_now([pk for pk, _ in self._store.without_embedding()])

    # -- helpers --------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInputError("this memory engine is closed")

    def _embed(self, texts: list[str]) -> np.ndarray:
        limit = self.config.embed_max_chars
        return self.embedder.embed([text[:limit] for text in texts])

    def _new_row(
        self,
        content: object,
        user_id: object,
        session_id: object = None,
        agent_id: object = None,
        turn_id: object = None,
        category: MemoryCategory | str = MemoryCategory.FACT,
        scope: MemoryScope | str | None = None,
        importance: object = 0.5,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Validate one memory's fields and build its row (without embedding, pk and seq)."""
        text = content_text(content, "content", self.config.max_content_chars)
        user = identifier(user_id, "user_id", required=True)
        session = identifier(session_id, "session_id")
        agent, turn = identifier(agent_id, "agent_id"), identifier(turn_id, "turn_id")
        resolved = MemoryScope.derive(session, agent, turn) if scope is None else MemoryScope.parse(scope)
        needs = {MemoryScope.SESSION: ("session_id", session), MemoryScope.AGENT: ("agent_id", agent),
                 MemoryScope.TURN: ("turn_id", turn)}.get(resolved)
        if needs is not None and needs[1] is None:
            raise InvalidInputError(f"scope {resolved.value!r} needs {needs[0]}")
        stamp = now_utc()
        memory_id = str(uuid.uuid4())
        return {
            "id": memory_id, "content": text, "user_id": user, "session_id": session, "agent_id": agent,
            "turn_id": turn, "scope": resolved.value, "category": MemoryCategory.parse(category).value,
            "importance": _importance(importance), "meta_json": metadata_json(metadata),
            "created_at": stamp, "updated_at": stamp, "valid_from": stamp, "valid_to": None,
            "supersedes": None, "superseded_by": None, "chain_id": memory_id,
        }

    def _insert(self, rows: list[dict[str, Any]], dedupe: bool, defer_embedding: bool) -> list[Memory]:
        if defer_embedding:
            vectors = [None] * len(rows)
        else:
            vectors = list(self._embed([row["content"] for row in rows]))
            for row, vector in zip(rows, vectors):
                row["embedding"] = vector.tobytes()
        outcome = self._store.insert(rows, _same_memory if dedupe else None)
        stored = [(place, row, vec) for place, row, vec in zip(outcome, rows, vectors) if isinstance(place, tuple)]
        if stored:
            # Applied at once even without vectors: the index's watermark moves on, so the next
            # search does not re-read these rows; their vectors follow as the next change.
            self._index.apply_local(
                [_index_row(pk, seq, row, vector) for (pk, seq), row, vector in stored],
                stored[0][0][1], stored[-1][0][1],
            )
        result = [place if isinstance(place, Memory) else row_to_memory(row) for place, row in zip(outcome, rows)]
        if stored and defer_embedding:  # the background embedding starts once this call's own work is done
            self._embed_later([place[0] for place, _, _ in stored])
        return result

    def _embed_now(self, pks: list[int]) -> None:
        """Embed rows stored without a vector, store the vectors and index them.

        When the vectors cannot be stored (a read-only file, a full disk), the index still gets
        them, so searches in this process find the rows; storing is retried by the next search.
        """
        waiting = self._store.without_embedding(pks)
        if not waiting:
            return
        vectors = self._embed([content for _, content in waiting])
        by_pk = {pk: vector for (pk, _), vector in zip(waiting, vectors)}
        try:
            ready = self._store.set_embeddings({pk: v.tobytes() for pk, v in by_pk.items()})
        except StorageError as exc:
            logger.warning("could not store %d vector(s), searching with them from memory: %s", len(by_pk), exc)
            self._index.apply_unsaved(self._store.index_rows_of(by_pk))
            with self._shared.lock:
                self._shared.failed.update(by_pk)
            return
        if ready:
            seqs = [seq for _, seq in ready]
            self._index.apply_local([row for row, _ in ready], min(seqs), max(seqs))

    def _embed_later(self, pks: list[int]) -> None:
        shared = self._shared

        def run() -> None:
            try:
                self._embed_now(pks)
            except Exception as exc:  # the rows are committed: the next search embeds them
                logger.warning("deferred embedding of %d memories failed (%s); the next search retries", len(pks), exc)
                with shared.lock:
                    shared.failed.update(pks)

        job = _background().submit(run)
        shared.pending.add(job)
        job.add_done_callback(shared.pending.discard)

    def _catch_up(self) -> None:
        """Before a search: every acknowledged write, of any process, is searchable by vector.

        Deferred embeddings of this process are awaited; rows another process stored without a
        vector yet are embedded here (if that process stores its vector first, the second pull
        brings it in), and embeddings that failed earlier are retried.
        """
        self._shared.wait_pending()
        waiting = self._index.sync()
        retry = self._shared.take_failed()
        if not waiting and not retry:
            return
        try:
            self._embed_now(sorted({*waiting, *retry}))
        except BaseException:
            with self._shared.lock:
                self._shared.failed.update(retry)
            raise
        self._index.sync()

    def flush(self) -> None:
        """Wait until memories stored with ``defer_embedding=True`` are embedded and indexed.

        Searches do this by themselves; call it before measuring or shutting down.
        """
        self._check_open()
        self._catch_up()

    # -- writing --------------------------------------------------------------------------------

    def add(
        self,
        content: str,
        user_id: str,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        turn_id: str | None = None,
        category: MemoryCategory | str = MemoryCategory.FACT,
        scope: MemoryScope | str | None = None,
        importance: float = 0.5,
        metadata: Mapping[str, Any] | None = None,
        dedupe: bool = False,
        defer_embedding: bool = False,
    ) -> Memory:
        """Store one memory (durable when this returns) and index it.

        Args:
            content: the fact, stored whole (only the first ``embed_max_chars`` are embedded).
            user_id: owner; nothing is ever visible to another user.
            session_id: session it was learned in.
            agent_id: agent it was learned by.
            turn_id: turn it was learned in.
            category: a :class:`MemoryCategory` or its name.
            scope: visibility; by default the narrowest scope the given ids allow.
            importance: 0..1.
            metadata: JSON-serialisable extra data.
            dedupe: if a current memory with the same wording (case, punctuation, stop words and
                word endings aside) is visible in the same scope, return it instead of storing a copy.
            defer_embedding: return as soon as the row is committed (about a millisecond) and embed
                it in a background thread; keyword search sees it at once, and every search, in
                this process or another, waits for or computes its vector first.

        Raises:
            InvalidInputError: empty or oversized content, unknown category/scope, bad ids or importance.
        """
        self._check_open()
        row = self._new_row(content, user_id, session_id, agent_id, turn_id, category, scope, importance, metadata)
        return self._insert([row], dedupe, defer_embedding)[0]

    def add_batch(
        self,
        items: Iterable[str | Mapping[str, Any]],
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        agent_id: str | None = None,
        turn_id: str | None = None,
        dedupe: bool = False,
        defer_embedding: bool = False,
    ) -> list[Memory]:
        """Store many memories in one transaction with one batched embedding call.

        Each item is a content string or a mapping with :meth:`add`'s arguments; the keyword
        arguments give defaults for the ids. Every item is validated before anything is stored.
        ``dedupe`` and ``defer_embedding`` work as in :meth:`add`.

        Raises:
            InvalidInputError: any item is invalid (nothing is stored then).
        """
        self._check_open()
        if isinstance(items, (str, Mapping)):
            items = [items]  # one memory, not a sequence of characters or keys
        elif not isinstance(items, Iterable):
            raise InvalidInputError(f"items must be a list of strings or mappings, got {type(items).__name__}")
        defaults = {"user_id": user_id, "session_id": session_id, "agent_id": agent_id, "turn_id": turn_id}
        rows = []
        for position, item in enumerate(items):
            if not isinstance(item, (str, Mapping)):
                raise InvalidInputError(f"item {position}: expected a string or a mapping, got {type(item).__name__}")
            fields = {"content": item} if isinstance(item, str) else dict(item)
            unknown = set(fields) - _ADD_FIELDS
            if unknown:
                raise InvalidInputError(f"item {position}: unknown fields {sorted(map(str, unknown))}")
            try:
                rows.append(self._new_row(**{**defaults, **fields}))
            except InvalidInputError as exc:
                raise InvalidInputError(f"item {position}: {exc}") from None
        if not rows:
            return []
        return self._insert(rows, dedupe, defer_embedding)

    def supersede(
        self,
        old_memory_id: str,
        new_content: str,
        *,
        category: MemoryCategory | str | None = None,
        importance: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        defer_embedding: bool = False,
    ) -> Memory:
        """Replace a fact with a new version; the old one stays in the history, no longer current.

        The new version inherits owner, scope ids, category and importance unless given.
        ``defer_embedding`` works as in :meth:`add`.

        Raises:
            MemoryNotFoundError: no such memory.
            MemoryAlreadySupersededError: the memory was superseded already (supersede the current one).
            InvalidInputError: empty or oversized content, unknown category, bad importance.
        """
        self._check_open()
        return self._new_version(
            identifier(old_memory_id, "old_memory_id", required=True), new_content,  # type: ignore[arg-type]
            category, importance, metadata, defer_embedding,
        )

    def _new_version(
        self,
        old_id: str,
        new_content: object,
        category: MemoryCategory | str | None,
        importance: object,
        metadata: Mapping[str, Any] | None,
        defer_embedding: bool = False,
        revive: bool = False,
    ) -> Memory:
        """Supersede ``old_id`` (with ``revive``, also the last version of a fact without a current one)."""
        text = content_text(new_content, "new_content", self.config.max_content_chars)
        new_category = None if category is None else MemoryCategory.parse(category).value
        new_importance = None if importance is None else _importance(importance)
        meta_json = None if metadata is None else metadata_json(metadata)
        vector = None if defer_embedding else self._embed([text])[0]
        new_id = str(uuid.uuid4())

        def build(old: Memory) -> dict[str, Any]:
            return {
                "id": new_id, "content": text, "user_id": old.user_id, "session_id": old.session_id,
                "agent_id": old.agent_id, "turn_id": old.turn_id, "scope": old.scope.value,
                "category": new_category or old.category.value,
                "importance": old.importance if new_importance is None else new_importance,
                "meta_json": meta_json if meta_json is not None else metadata_json(old.metadata),
                "embedding": None if vector is None else vector.tobytes(),
            }

        old, old_pk, new = self._store.supersede(old_id, build, revive=revive)
        seq = new["seq"]
        self._index.apply_local(
            [_memory_index_row(old_pk, seq - 1, old, None, current=False), _index_row(new["pk"], seq, new, vector)],
            seq - 1, seq,
        )
        if vector is None:
            self._embed_later([new["pk"]])
        return row_to_memory(new)

    def update(
        self,
        memory_id: str,
        *,
        content: str | None = None,
        category: MemoryCategory | str | None = None,
        importance: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Memory:
        """Edit a memory in place (no new version); new content is re-embedded and re-indexed.

        Use :meth:`supersede` instead when a fact *changed* and its history matters.

        Raises:
            MemoryNotFoundError: no such memory.
            InvalidInputError: invalid new values.
        """
        self._check_open()
        memory_id = identifier(memory_id, "memory_id", required=True)  # type: ignore[assignment]
        values: dict[str, Any] = {}
        if content is not None:
            values["content"] = content_text(content, "content", self.config.max_content_chars)
        if category is not None:
            values["category"] = MemoryCategory.parse(category).value
        if importance is not None:
            values["importance"] = _importance(importance)
        if metadata is not None:
            values["meta_json"] = metadata_json(metadata)
        if not values:
            memory = self._store.get(memory_id)
            if memory is None:
                raise MemoryNotFoundError(memory_id)
            return memory
        if "content" in values:
            values["embedding"] = self._embed([values["content"]])[0].tobytes()
        pk, seq = self._store.update(memory_id, values)
        memory, vector, _ = self._store.get_by_pks([pk], with_embedding=True)[pk]
        self._index.apply_local([_memory_index_row(pk, seq, memory, vector, memory.is_current)], seq, seq)
        return memory

    def rollback(self, memory_id: str) -> Memory:
        """Make an older version of a fact current again.

        The rollback is itself recorded: the current version is superseded by a new version
        carrying the old content (``metadata["rolled_back_to"]`` names the restored version), so
        the history and point-in-time queries stay truthful. A fact whose current version was
        deleted can be rolled back too: the restored version becomes its new current version.

        Raises:
            MemoryNotFoundError: no such memory.
            InvalidInputError: the memory is already current.
        """
        self._check_open()
        chain = self.get_history(memory_id)
        target = next(m for m in chain if m.id == memory_id)
        if target.is_current:
            raise InvalidInputError(f"memory {memory_id!r} is already the current version")
        head = next((m for m in chain if m.is_current), None)
        metadata = {**target.metadata, "rolled_back_to": target.id}
        base = head if head is not None else chain[-1]  # headless: continue from the latest version
        return self._new_version(
            base.id, target.content, target.category, target.importance, metadata, revive=head is None
        )

    def delete(self, memory_id: str, *, all_versions: bool = False) -> bool:
        """Delete one version of a fact, or with ``all_versions=True`` the fact's whole history.

        Deleting the current version does not bring an older one back: the fact is no longer
        found by searches (it was deleted), while its older versions stay in :meth:`get_history`,
        in point-in-time queries and can be restored with :meth:`rollback`. Returns False if
        there was no such memory.
        """
        self._check_open()
        memory_id = identifier(memory_id, "memory_id", required=True)  # type: ignore[assignment]
        if not isinstance(all_versions, bool):
            raise InvalidInputError(f"all_versions must be True or False, got {all_versions!r}")
        condition = memories.c.id == memory_id
        if all_versions:
            chain = select(memories.c.chain_id).where(memories.c.id == memory_id).scalar_subquery()
            condition = memories.c.chain_id == chain
        return self._delete(condition) > 0

    def clear(
        self,
        user_id: str,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        turn_id: str | None = None,
        scope: MemoryScope | str | None = None,
    ) -> int:
        """Delete a user's memories (every version), optionally only those recorded with the given ids.

        ``clear("alice", session_id="s1")`` deletes what was recorded in session ``s1`` (any scope);
        add ``scope="session"`` to keep the user-level facts learned there. Returns how many rows
        were deleted. Deleted rows are overwritten in the database file; copies may remain in the
        write-ahead log, the full-text index's older segments and the vector index until they are
        rewritten: :meth:`purge` erases a user from all of them (and their logged messages).
        """
        self._check_open()
        flt = MemoryFilter(
            user_id=identifier(user_id, "user_id", required=True), session_id=identifier(session_id, "session_id"),
            agent_id=identifier(agent_id, "agent_id"), turn_id=identifier(turn_id, "turn_id"),
            scopes=None if scope is None else [scope], include_superseded=True,
        )
        return self._delete(filter_condition(flt))

    def _delete(self, condition: ColumnElement[bool], erase: bool = False) -> int:
        pks, seq = self._store.delete_where(condition, erase)
        if pks:
            self._index.remove_local(pks, seq, erase)
        return len(pks)

    def purge(self, user_id: str) -> dict[str, int]:
        """Erase a user (the right to erasure): every memory and version, every logged message,
        and every copy of them left in the store's files.

        Deleted rows are overwritten in the database file (SQLite ``secure_delete``), the
        full-text index is merged so deleted terms leave its older segments, the write-ahead log
        is copied in and truncated, and the user's vectors are overwritten in the vector index
        and its saved file. Other processes drop the vectors too on their next search.

        Returns:
            ``{"memories": n, "messages": m}``: how many rows were deleted.

        Raises:
            StorageError: the store could not be written (what was deleted by then stays deleted;
                call it again to finish the erasure).
        """
        self._check_open()
        user = identifier(user_id, "user_id", required=True)
        self._shared.wait_pending()
        removed = self._delete(filter_condition(MemoryFilter(user_id=user, include_superseded=True)), erase=True)
        messages = self._store.delete_messages(user, None)  # type: ignore[arg-type]
        if self._cache is not None:
            self._cache.clear()
        if self._keywords is not None:
            self._keywords.clear()
        if not self._store.erase_traces():
            logger.warning("another connection kept the write-ahead log of %s from being truncated; "
                           "it is truncated at its next checkpoint", self._store.path)
        self._index.scrub_missing()
        self.save_index()
        return {"memories": removed, "messages": messages}

    # -- reading --------------------------------------------------------------------------------

    def get(self, memory_id: str) -> Memory | None:
        """The memory with this id, or None."""
        self._check_open()
        return self._store.get(identifier(memory_id, "memory_id", required=True))  # type: ignore[arg-type]

    def query(self, flt: MemoryFilter | None = None) -> list[Memory]:
        """Memories matching a :class:`MemoryFilter` (exact id matches), oldest first."""
        self._check_open()
        if flt is not None and not isinstance(flt, MemoryFilter):
            raise InvalidInputError(f"query() takes a MemoryFilter, got {type(flt).__name__}")
        return self._store.query(flt or MemoryFilter())

    def get_history(self, memory_id: str) -> list[Memory]:
        """Every version of this memory's fact, oldest first (``is_current`` marks the live one).

        Raises:
            MemoryNotFoundError: no such memory.
        """
        self._check_open()
        return self._store.history(identifier(memory_id, "memory_id", required=True))  # type: ignore[arg-type]

    def search(
        self,
        query: str,
        user_id: str,
        session_id: str | None = None,
        agent_id: str | None = None,
        turn_id: str | None = None,
        *,
        top_k: int = 5,
        categories: Iterable[MemoryCategory | str] | None = None,
        scopes: Iterable[MemoryScope | str] | None = None,
        include_superseded: bool = False,
        valid_at: datetime | date | str | None = None,
        min_score: float | None = None,
    ) -> list[SearchResult]:
        """Hybrid (vector + keyword) search over what these ids may see; best first.

        Args:
            query: free text; any characters are safe (operators, quotes, control characters and
                broken surrogates are plain text; only the first 10,000 characters are used). An
                empty or whitespace-only query finds nothing.
            user_id: whose memories to search.
            session_id: also see this session's session-level memories.
            agent_id: also see this (session, agent)'s agent-level memories.
            turn_id: also see this turn's turn-level memories.
            top_k: how many hits at most (as many as that when that many memories are visible).
            categories: only these categories (one name or a list).
            scopes: only memories stored at these scopes (one name or a list).
            include_superseded: also search older versions.
            valid_at: search the versions that were valid at this time (a datetime, a date or an
                ISO 8601 string) instead of the current ones.
            min_score: drop hits whose cosine similarity is below this (-1..1).

        Raises:
            InvalidInputError: a query that is not a string, bad ids, ``top_k``, ``min_score`` or
                ``valid_at``, an unknown category or scope.
        """
        self._check_open()
        text = query_text(query)
        user = identifier(user_id, "user_id", required=True)
        session, agent = identifier(session_id, "session_id"), identifier(agent_id, "agent_id")
        turn = identifier(turn_id, "turn_id")
        as_count(top_k, "top_k", minimum=1)
        flt = MemoryFilter(categories=categories, scopes=scopes, include_superseded=include_superseded,
                           valid_at=valid_at)  # parses and validates these
        request = SearchRequest(
            terms=query_terms(text), user_id=user, session_id=session, agent_id=agent,  # type: ignore[arg-type]
            turn_id=turn, top_k=top_k, categories=flt.categories, scopes=flt.scopes,  # type: ignore[arg-type]
            include_superseded=include_superseded, valid_at=flt.valid_at,
            min_score=as_number(min_score, "min_score", -1.0, 1.0),
        )
        if not text.strip():
            return []
        self._catch_up()
        text = text[: self.config.embed_max_chars]
        vector = None if self._cache is None else self._cache.get(text)
        if vector is None:
            # Embedding the query is the slow part: run the keyword search beside it.
            keyword_job = _background().submit(
                keyword_candidates, self._store, self._index, request, self.config, self._keywords
            )
            try:
                vector = self.embedder.embed_one(text)
            finally:
                text_hits = keyword_job.result()
            if self._cache is not None:
                self._cache.put(text, vector)
        else:
            text_hits = keyword_candidates(self._store, self._index, request, self.config, self._keywords)
        return hybrid_search(self._store, self._index, request, vector, text_hits, self.config)

    def stats(self, user_id: str | None = None) -> dict[str, Any]:
        """Counts for one user (or the whole store): ``total``, ``current``, ``superseded``,
        ``categories`` and ``scopes`` (the last two over current memories)."""
        self._check_open()
        return self._store.stats(identifier(user_id, "user_id"))

    # -- conversation log -------------------------------------------------------------------------

    def append_messages(self, user_id: str, session_id: str, messages: Iterable[Mapping[str, Any]]) -> None:
        """Log chat messages of a session, in order (for chat-history adapters).

        Each message is a mapping with ``role`` and ``content`` (text) and optionally ``payload``,
        the framework's own JSON-compatible serialisation, returned as is by :meth:`get_messages`.

        Raises:
            InvalidInputError: missing ids, a role or content that is not a string, a payload that
                is not JSON-serialisable (nothing is logged then).
        """
        self._check_open()
        user = identifier(user_id, "user_id", required=True)
        session = identifier(session_id, "session_id", required=True)
        if isinstance(messages, Mapping) or not isinstance(messages, Iterable):
            raise InvalidInputError("messages must be a list of mappings with role and content")
        stamp = now_utc()
        rows = []
        for position, message in enumerate(messages):
            if not isinstance(message, Mapping):
                raise InvalidInputError(f"message {position}: expected a mapping, got {type(message).__name__}")
            role, content = message.get("role"), message.get("content")
            if not isinstance(role, str) or not role or not isinstance(content, str):
                raise InvalidInputError(f"message {position}: role and content must be strings")
            if len(content) > self.config.max_content_chars:
                raise InvalidInputError(f"message {position} is longer than max_content_chars")
            rows.append({
                "user_id": user, "session_id": session, "role": clean_text(role), "content": clean_text(content),
                "payload": metadata_json(message.get("payload") or {}), "created_at": stamp,
            })
        self._store.append_messages(rows)

    def get_messages(self, user_id: str, session_id: str, limit: int | None = None) -> list[ChatRecord]:
        """A session's logged messages, oldest first (only the last ``limit`` when given)."""
        self._check_open()
        if limit is not None:
            as_count(limit, "limit")
        user = identifier(user_id, "user_id", required=True)
        session = identifier(session_id, "session_id", required=True)
        return self._store.messages(user, session, limit)  # type: ignore[arg-type]

    def clear_messages(self, user_id: str, session_id: str | None = None) -> int:
        """Delete a session's logged messages (all of the user's sessions when ``session_id`` is None)."""
        self._check_open()
        user = identifier(user_id, "user_id", required=True)
        return self._store.delete_messages(user, identifier(session_id, "session_id"))  # type: ignore[arg-type]

    # -- lifecycle ------------------------------------------------------------------------------

    def save_index(self) -> None:
        """Write the vector index sidecar now (it is also written on close and at exit).

        Raises:
            StorageError: the file could not be written.
        """
        self._check_open()
        with storage_errors(self._index.path, "save the vector index of"):
            self._index.save()

    def close(self) -> None:
        """Release this engine; the last engine on a file saves the index and closes the database."""
        if not self._closed:
            self._closed = True
            self._shared.wait_pending()  # deferred embeddings land before the store is released
            self._finalizer()

    def __enter__(self) -> MemoryEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _config_from(config: MemoryConfig | str | os.PathLike[str] | None, options: dict[str, Any]) -> Any:
    """The configuration :meth:`HierarchicalMemory.create` was given: a config or its fields, not both."""
    if config is not None and options:
        raise InvalidInputError(
            f"pass either a MemoryConfig or its fields as keywords, not both (got config and {sorted(options)})"
        )
    if config is not None:
        return config
    unknown = set(options) - {f.name for f in fields(MemoryConfig)}
    if unknown:
        raise InvalidInputError(f"unknown MemoryConfig fields {sorted(unknown)}")
    return MemoryConfig(**options)


class HierarchicalMemory:
    """Hierarchical, temporal memory for LLM applications (async face of :class:`MemoryEngine`).

    Every method of the engine is available as a coroutine; ``memory.sync`` is the blocking engine
    for plain sync code. Nothing here runs an event loop of its own, so it works inside Jupyter,
    FastAPI or any running loop.

    Example::

        memory = await HierarchicalMemory.create(MemoryConfig(db_path="memory.db"))
        m = await memory.add("User works at Google", user_id="alice", category=MemoryCategory.FACT)
        new = await memory.supersede(old_memory_id=m.id, new_content="User now works at Anthropic")
        [v.is_current for v in await memory.get_history(new.id)]  # [False, True]
        memory.sync.search("where does alice work", user_id="alice")[0].content  # from sync code
        await memory.close()
    """

    def __init__(self, engine: MemoryEngine) -> None:
        self.sync = engine

    @classmethod
    async def create(cls, config: MemoryConfig | None = None, **options: Any) -> HierarchicalMemory:
        """Open (or create) a memory store without blocking the event loop.

        Args:
            config: a :class:`MemoryConfig` (or a database path); or pass its fields as keyword arguments.

        Raises:
            InvalidInputError: both a config and keyword arguments, or an unknown keyword.
        """
        return cls(await asyncio.to_thread(MemoryEngine, _config_from(config, options)))

    @classmethod
    def open(cls, config: MemoryConfig | None = None, **options: Any) -> HierarchicalMemory:
        """Open (or create) a memory store from sync code (arguments as for :meth:`create`)."""
        return cls(MemoryEngine(_config_from(config, options)))

    @property
    def config(self) -> MemoryConfig:
        """The engine's configuration."""
        return self.sync.config

    add = async_face(MemoryEngine.add)
    add_batch = async_face(MemoryEngine.add_batch)
    supersede = async_face(MemoryEngine.supersede)
    update = async_face(MemoryEngine.update)
    rollback = async_face(MemoryEngine.rollback)
    delete = async_face(MemoryEngine.delete)
    clear = async_face(MemoryEngine.clear)
    purge = async_face(MemoryEngine.purge)
    get = async_face(MemoryEngine.get)
    query = async_face(MemoryEngine.query)
    get_history = async_face(MemoryEngine.get_history)
    search = async_face(MemoryEngine.search)
    stats = async_face(MemoryEngine.stats)
    save_index = async_face(MemoryEngine.save_index)
    flush = async_face(MemoryEngine.flush)
    append_messages = async_face(MemoryEngine.append_messages)
    get_messages = async_face(MemoryEngine.get_messages)
    clear_messages = async_face(MemoryEngine.clear_messages)
    close = async_face(MemoryEngine.close)

    async def __aenter__(self) -> HierarchicalMemory:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
