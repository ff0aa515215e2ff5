"""HierarchicalMemory: one blocking, thread-safe engine with a thin async face.

SQLite, hnswlib and the embedders all block, so the engine (:class:`MemoryEngine`) is plain
blocking code that is safe to call from several threads. :class:`HierarchicalMemory` exposes the
same methods as coroutines that run the engine in a worker thread (``asyncio.to_thread``), so it
works in scripts, in Jupyter and inside FastAPI alike; ``memory.sync`` is the engine itself.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import threading
import uuid
import weakref
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

import numpy as np

from headroom_integrations._async import async_face
from headroom_integrations.errors import EmbedderMismatchError, InvalidInputError, MemoryNotFoundError
from headroom_integrations.memory.config import MemoryConfig
from headroom_integrations.memory.embedders import Embedder, LocalEmbedder, QueryCache, build_embedder
from headroom_integrations.memory.models import (
    ChatRecord,
    Memory,
    MemoryCategory,
    MemoryFilter,
    MemoryScope,
    SearchResult,
)
from headroom_integrations.memory.retrieval import KeywordCache, SearchRequest, hybrid_search, keyword_candidates
from headroom_integrations.memory.schema import memories
from headroom_integrations.memory.sqlite import recorded_meta
from headroom_integrations.memory.store import IndexRow, MemoryStore, filter_condition, now_utc, row_to_memory
from headroom_integrations.memory.text_query import fingerprint, query_terms
from headroom_integrations.memory.vector_index import VectorIndex
from headroom_integrations.memory.visibility import bucket_key

__all__ = ["HierarchicalMemory", "MemoryEngine"]


@dataclass
class _SharedStore:
    """One database file's store and vector index, shared by every engine of this process on it."""

    store: MemoryStore
    index: VectorIndex
    embedder_name: str
    dimension: int
    users: int = 0
    pending: set[Future[None]] = field(default_factory=set)  # deferred embeddings under way

    def wait_pending(self) -> None:
        """Block until every deferred embedding started so far is stored and indexed."""
        for job in list(self.pending):
            job.result()


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
    finally:
        shared.store.close()


@atexit.register
def _save_all_indexes() -> None:
    for shared in list(_OPEN.values()):
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            shared.index.save()


def _text(value: object, what: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidInputError(f"{what} must not be empty or whitespace")
    if len(value) > max_chars:
        raise InvalidInputError(f"{what} has {len(value)} characters; the limit is {max_chars} (max_content_chars)")
    return value


def _id(value: object, what: str, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise InvalidInputError(f"{what} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > 255:
        raise InvalidInputError(f"{what} is longer than 255 characters")
    return value


def _importance(value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInputError(f"importance must be a number within 0..1, got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise InvalidInputError(f"importance must be within 0..1, got {number}")
    return number


def _metadata_json(value: Mapping[str, Any] | None) -> str:
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"metadata must be a mapping, got {type(value).__name__}")
    try:
        return json.dumps(dict(value), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"metadata must be JSON-serialisable: {exc}") from None


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

    def __init__(self, config: MemoryConfig | None = None) -> None:
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
        if shared.users == 1:  # first engine on this file here: finish embeddings a crash left undone
            self._embed_now([pk for pk, _ in self._store.without_embedding()])
        self._closed = False
        self._finalizer = weakref.finalize(self, _release, self._key, owned)

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
        text = _text(content, "content", self.config.max_content_chars)
        user = _id(user_id, "user_id", required=True)
        session, agent, turn = _id(session_id, "session_id"), _id(agent_id, "agent_id"), _id(turn_id, "turn_id")
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
            "importance": _importance(importance), "meta_json": _metadata_json(metadata),
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
        """Embed rows stored without a vector, store the vectors and index them."""
        waiting = self._store.without_embedding(pks)
        if not waiting:
            return
        vectors = self._embed([content for _, content in waiting])
        ready = self._store.set_embeddings({pk: v.tobytes() for (pk, _), v in zip(waiting, vectors)})
        if ready:
            seqs = [seq for _, seq in ready]
            self._index.apply_local([row for row, _ in ready], min(seqs), max(seqs))

    def _embed_later(self, pks: list[int]) -> None:
        job = _background().submit(self._embed_now, pks)
        pending = self._shared.pending
        pending.add(job)
        job.add_done_callback(pending.discard)

    def flush(self) -> None:
        """Wait until memories stored with ``defer_embedding=True`` are embedded and indexed.

        Searches do this by themselves; call it before measuring or shutting down.
        """
        self._shared.wait_pending()

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
        defaults = {"user_id": user_id, "session_id": session_id, "agent_id": agent_id, "turn_id": turn_id}
        rows = []
        for position, item in enumerate(items):
            fields = {"content": item} if isinstance(item, str) else dict(item)
            unknown = set(fields) - {"content", "user_id", "session_id", "agent_id", "turn_id",
                                     "category", "scope", "importance", "metadata"}
            if unknown:
                raise InvalidInputError(f"item {position}: unknown fields {sorted(unknown)}")
            try:
                rows.append(self._new_row(**{**defaults, **{k: v for k, v in fields.items()}}))
            except InvalidInputError as exc:
                raise InvalidInputError(f"item {position}: {exc}") from None
            except TypeError as exc:
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
        text = _text(new_content, "new_content", self.config.max_content_chars)
        new_category = None if category is None else MemoryCategory.parse(category).value
        new_importance = None if importance is None else _importance(importance)
        meta_json = None if metadata is None else _metadata_json(metadata)
        vector = None if defer_embedding else self._embed([text])[0]
        new_id = str(uuid.uuid4())

        def build(old: Memory) -> dict[str, Any]:
            return {
                "id": new_id, "content": text, "user_id": old.user_id, "session_id": old.session_id,
                "agent_id": old.agent_id, "turn_id": old.turn_id, "scope": old.scope.value,
                "category": new_category or old.category.value,
                "importance": old.importance if new_importance is None else new_importance,
                "meta_json": meta_json if meta_json is not None else json.dumps(old.metadata, ensure_ascii=False),
                "embedding": None if vector is None else vector.tobytes(),
            }

        old, old_pk, new = self._store.supersede(old_memory_id, build)
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
        values: dict[str, Any] = {}
        if content is not None:
            values["content"] = _text(content, "content", self.config.max_content_chars)
            values["embedding"] = self._embed([values["content"]])[0].tobytes()
        if category is not None:
            values["category"] = MemoryCategory.parse(category).value
        if importance is not None:
            values["importance"] = _importance(importance)
        if metadata is not None:
            values["meta_json"] = _metadata_json(metadata)
        if not values:
            memory = self._store.get(memory_id)
            if memory is None:
                raise MemoryNotFoundError(memory_id)
            return memory
        pk, seq = self._store.update(memory_id, values)
        memory, vector = self._store.get_by_pks([pk], with_embedding=True)[pk]
        self._index.apply_local([_memory_index_row(pk, seq, memory, vector, memory.is_current)], seq, seq)
        return memory

    def rollback(self, memory_id: str) -> Memory:
        """Make an older version of a fact current again.

        The rollback is itself recorded: the current version is superseded by a new version
        carrying the old content (``metadata["rolled_back_to"]`` names the restored version), so
        the history and point-in-time queries stay truthful.

        Raises:
            MemoryNotFoundError: no such memory.
            InvalidInputError: the memory is already current, or its fact has no current version.
        """
        self._check_open()
        chain = self.get_history(memory_id)
        target = next(m for m in chain if m.id == memory_id)
        if target.is_current:
            raise InvalidInputError(f"memory {memory_id!r} is already the current version")
        head = next((m for m in chain if m.is_current), None)
        if head is None:
            raise InvalidInputError(f"the fact of memory {memory_id!r} has no current version to roll back")
        return self.supersede(
            head.id, target.content, category=target.category, importance=target.importance,
            metadata={**target.metadata, "rolled_back_to": target.id},
        )

    def delete(self, memory_id: str) -> bool:
        """Delete one memory (only this version). Returns False if it did not exist."""
        self._check_open()
        pks, seq = self._store.delete_where(memories.c.id == memory_id)
        if pks:
            self._index.remove_local(pks, seq)
        return bool(pks)

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
        were deleted.
        """
        self._check_open()
        flt = MemoryFilter(
            user_id=_id(user_id, "user_id", required=True), session_id=session_id, agent_id=agent_id,
            turn_id=turn_id, scopes=None if scope is None else [scope], include_superseded=True,
        )
        pks, seq = self._store.delete_where(filter_condition(flt))
        if pks:
            self._index.remove_local(pks, seq)
        return len(pks)

    # -- reading --------------------------------------------------------------------------------

    def get(self, memory_id: str) -> Memory | None:
        """The memory with this id, or None."""
        self._check_open()
        return self._store.get(memory_id)

    def query(self, flt: MemoryFilter | None = None) -> list[Memory]:
        """Memories matching a :class:`MemoryFilter` (exact id matches), oldest first."""
        self._check_open()
        return self._store.query(flt or MemoryFilter())

    def get_history(self, memory_id: str) -> list[Memory]:
        """Every version of this memory's fact, oldest first (``is_current`` marks the live one).

        Raises:
            MemoryNotFoundError: no such memory.
        """
        self._check_open()
        return self._store.history(memory_id)

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
        valid_at: datetime | None = None,
        min_score: float | None = None,
    ) -> list[SearchResult]:
        """Hybrid (vector + keyword) search over what these ids may see; best first.

        Args:
            query: free text; any characters are safe (operators and quotes are plain text).
            user_id: whose memories to search.
            session_id: also see this session's session-level memories.
            agent_id: also see this (session, agent)'s agent-level memories.
            turn_id: also see this turn's turn-level memories.
            top_k: how many hits at most.
            categories: only these categories.
            scopes: only memories stored at these scopes.
            include_superseded: also search older versions.
            valid_at: search the versions that were valid at this time instead of the current ones.
            min_score: drop hits whose cosine similarity is below this.

        Raises:
            InvalidInputError: empty query, bad ``top_k`` or unknown category/scope.
        """
        self._check_open()
        text = _text(query, "query", self.config.max_content_chars)
        user = _id(user_id, "user_id", required=True)
        if not isinstance(top_k, int) or top_k < 1:
            raise InvalidInputError(f"top_k must be a positive integer, got {top_k!r}")
        flt = MemoryFilter(categories=categories, scopes=scopes)  # parses and validates both
        request = SearchRequest(
            terms=query_terms(text), user_id=user, session_id=_id(session_id, "session_id"),  # type: ignore[arg-type]
            agent_id=_id(agent_id, "agent_id"), turn_id=_id(turn_id, "turn_id"), top_k=top_k,
            categories=flt.categories, scopes=flt.scopes,  # type: ignore[arg-type]
            include_superseded=include_superseded, valid_at=valid_at, min_score=min_score,
        )
        self._shared.wait_pending()
        waiting = self._index.sync()
        if waiting:  # another process stored these without a vector yet: do not miss them
            self._embed_now(waiting)
        text = text[: self.config.embed_max_chars]
        vector = None if self._cache is None else self._cache.get(text)
        if vector is None:
            # Embedding the query is the slow part: run the keyword search beside it.
            keyword_job = _background().submit(
                keyword_candidates, self._store, self._index, request, self.config, self._keywords
            )
            vector = self.embedder.embed_one(text)
            if self._cache is not None:
                self._cache.put(text, vector)
            text_hits = keyword_job.result()
        else:
            text_hits = keyword_candidates(self._store, self._index, request, self.config, self._keywords)
        return hybrid_search(self._store, self._index, request, vector, text_hits, self.config)

    def stats(self, user_id: str | None = None) -> dict[str, Any]:
        """Counts for one user (or the whole store): ``total``, ``current``, ``superseded``,
        ``categories`` and ``scopes`` (the last two over current memories)."""
        self._check_open()
        return self._store.stats(user_id)

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
        user = _id(user_id, "user_id", required=True)
        session = _id(session_id, "session_id", required=True)
        stamp = now_utc()
        rows = []
        for position, message in enumerate(messages):
            role, content = message.get("role"), message.get("content")
            if not isinstance(role, str) or not role or not isinstance(content, str):
                raise InvalidInputError(f"message {position}: role and content must be strings")
            if len(content) > self.config.max_content_chars:
                raise InvalidInputError(f"message {position} is longer than max_content_chars")
            rows.append({
                "user_id": user, "session_id": session, "role": role, "content": content,
                "payload": _metadata_json(message.get("payload") or {}), "created_at": stamp,
            })
        self._store.append_messages(rows)

    def get_messages(self, user_id: str, session_id: str, limit: int | None = None) -> list[ChatRecord]:
        """A session's logged messages, oldest first (only the last ``limit`` when given)."""
        self._check_open()
        if limit is not None and limit < 0:
            raise InvalidInputError(f"limit must be >= 0, got {limit}")
        user = _id(user_id, "user_id", required=True)
        session = _id(session_id, "session_id", required=True)
        return self._store.messages(user, session, limit)  # type: ignore[arg-type]

    def clear_messages(self, user_id: str, session_id: str | None = None) -> int:
        """Delete a session's logged messages (all of the user's sessions when ``session_id`` is None)."""
        self._check_open()
        return self._store.delete_messages(_id(user_id, "user_id", required=True), session_id)  # type: ignore[arg-type]

    # -- lifecycle ------------------------------------------------------------------------------

    def save_index(self) -> None:
        """Write the vector index sidecar now (it is also written on close and at exit)."""
        self._check_open()
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
            config: a :class:`MemoryConfig`; or pass its fields as keyword arguments.
        """
        return cls(await asyncio.to_thread(MemoryEngine, config or MemoryConfig(**options)))

    @classmethod
    def open(cls, config: MemoryConfig | None = None, **options: Any) -> HierarchicalMemory:
        """Open (or create) a memory store from sync code."""
        return cls(MemoryEngine(config or MemoryConfig(**options)))

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
