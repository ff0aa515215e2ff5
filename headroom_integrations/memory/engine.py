"""MemoryEngine: the blocking, thread-safe memory engine over one storage backend.

The engine validates what callers hand it, embeds, and asks the backend (see
:mod:`.backends.base`) to store and search; it never sees SQL or an index. Stores are shared by
every engine of a process on the same file or URL (:mod:`.registry`).
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timezone
from typing import Any

import numpy as np

from headroom_integrations.errors import EmbedderError, InvalidInputError
from headroom_integrations.memory.ahead import EmbeddingsAhead
from headroom_integrations.memory.backends import SearchScope
from headroom_integrations.memory.chat_log import ChatLog
from headroom_integrations.memory.config import MemoryConfig
from headroom_integrations.memory.embedders import Embedder, LocalEmbedder, QueryCache, build_embedder
from headroom_integrations.memory.items import KeyValueItems
from headroom_integrations.memory.models import (
    Memory,
    MemoryCategory,
    MemoryFilter,
    MemoryScope,
    SearchResult,
    as_count,
    as_datetime,
    as_number,
)
from headroom_integrations.memory.portability import Portability
from headroom_integrations.memory.registry import acquire, background, recorded_embedder_name, release
from headroom_integrations.memory.retrieval import (
    KeywordCache,
    KeywordHits,
    SearchRequest,
    hybrid_search,
    keyword_candidates,
)
from headroom_integrations.memory.text_query import query_terms
from headroom_integrations.memory.time_expressions import time_window
from headroom_integrations.memory.validation import (
    batch_memories,
    identifier,
    new_memory,
    query_text,
)
from headroom_integrations.memory.versions import Versioning, When

__all__ = ["MemoryEngine"]

logger = logging.getLogger(__name__)


def _release(key: str, owned_embedder: Embedder | None = None) -> None:
    if owned_embedder is not None:
        owned_embedder.close()
    release(key)


class MemoryEngine(Versioning, KeyValueItems, Portability, ChatLog):
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
        self.embedder = build_embedder(self.config, recorded_embedder_name(self.config))
        # HTTP embedders are built for this engine and closed with it; local models are shared.
        owned = None if self.config.embedder is not None or isinstance(self.embedder, LocalEmbedder) else self.embedder
        self._cache = QueryCache(self.config.cache_max_size) if self.config.cache_enabled else None
        self._keywords = KeywordCache(self.config.cache_max_size) if self.config.cache_enabled else None
        try:
            self._key, shared = acquire(self.config, self.embedder.name, self.embedder.dimension)
        except BaseException:
            if owned is not None:
                owned.close()
            raise
        self._shared = shared
        self.backend = shared.backend
        self._closed = False
        self._finalizer = weakref.finalize(self, _release, self._key, owned)
        if shared.users == 1:  # first engine on this store here: finish embeddings a crash left undone
            try:
                self._shared.embed_now(self._embed, [pk for pk, _ in self.backend.without_embedding()])
            except EmbedderError as exc:  # the store still opens; the next search embeds them
                logger.warning("could not embed memories still waiting for their vector (%s)", exc)

    # -- helpers --------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInputError("this memory engine is closed")

    def _embed(self, texts: list[str]) -> np.ndarray:
        limit = self.config.embed_max_chars
        return self.embedder.embed([text[:limit] for text in texts])

    def _insert(self, new: list[Memory], dedupe: bool, defer_embedding: bool) -> list[Memory]:
        vectors: Sequence[np.ndarray | None]
        chunk = self.backend.write_chunk
        if defer_embedding:
            vectors = [None] * len(new)
        elif chunk is not None and len(new) > chunk:  # embed the next rows while the first are written
            vectors = EmbeddingsAhead(self._embed, [m.content for m in new], chunk)
        else:
            vectors = list(self._embed([m.content for m in new]))
        outcome = self.backend.insert(new, vectors, dedupe)
        fresh = [pk for _, pk in outcome if pk is not None]
        if fresh and defer_embedding:  # the background embedding starts once this call's own work is done
            self._shared.embed_later(self._embed, fresh)
        return [memory for memory, _ in outcome]

    def flush(self) -> None:
        """Wait until memories stored with ``defer_embedding=True`` are embedded and indexed.

        Searches do this by themselves; call it before measuring or shutting down.
        """
        self._check_open()
        self._shared.catch_up(self._embed)

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
        observed_at: When | None = None,
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
            observed_at: when the fact was stated (a datetime, naive meaning UTC; a date; an ISO
                8601 string), e.g. the time of the conversation it comes from; default: now.
            dedupe: if a current memory with the same wording (case, spacing, wrapping quotes and
                closing punctuation aside: see :func:`~.text_query.canonical_text`) is visible in the
                same scope, return it instead of storing a copy.
            defer_embedding: return as soon as the row is committed (about a millisecond) and embed
                it in a background thread; keyword search sees it at once, and every search, in
                this process or another, waits for or computes its vector first.

        Raises:
            InvalidInputError: empty or oversized content, unknown category/scope, bad ids, importance
                or ``observed_at``.
        """
        self._check_open()
        memory = new_memory(self.config.max_content_chars, content, user_id, session_id, agent_id, turn_id,
                            category, scope, importance, metadata, observed_at)
        return self._insert([memory], dedupe, defer_embedding)[0]

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
        ``dedupe`` and ``defer_embedding`` work as in :meth:`add` (an item's ``observed_at`` too).

        Raises:
            InvalidInputError: any item is invalid (nothing is stored then).
        """
        self._check_open()
        defaults = {"user_id": user_id, "session_id": session_id, "agent_id": agent_id, "turn_id": turn_id}
        new = batch_memories(self.config.max_content_chars, items, defaults)
        if not new:
            return []
        return self._insert(new, dedupe, defer_embedding)

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
        return self.backend.delete(memory_id, all_versions) > 0

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
        return self.backend.delete_matching(flt)

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
        removed, messages = self.backend.erase_user(user)  # type: ignore[arg-type]
        if self._cache is not None:
            self._cache.clear()
        if self._keywords is not None:
            self._keywords.clear()
        return {"memories": removed, "messages": messages}

    # -- reading --------------------------------------------------------------------------------

    def get(self, memory_id: str) -> Memory | None:
        """The memory with this id, or None."""
        self._check_open()
        return self.backend.get(identifier(memory_id, "memory_id", required=True))  # type: ignore[arg-type]

    def query(self, flt: MemoryFilter | None = None) -> list[Memory]:
        """Memories matching a :class:`MemoryFilter` (exact id matches), oldest first."""
        self._check_open()
        if flt is not None and not isinstance(flt, MemoryFilter):
            raise InvalidInputError(f"query() takes a MemoryFilter, got {type(flt).__name__}")
        return self.backend.query(flt or MemoryFilter())

    def get_history(self, memory_id: str) -> list[Memory]:
        """Every version of this memory's fact, oldest first (``is_current`` marks the live one).

        Raises:
            MemoryNotFoundError: no such memory.
        """
        self._check_open()
        return self.backend.history(identifier(memory_id, "memory_id", required=True))  # type: ignore[arg-type]

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
        observed_after: datetime | date | str | None = None,
        observed_before: datetime | date | str | None = None,
        now: datetime | date | str | None = None,
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
            observed_after: only memories stated (``observed_at``) at or after this time.
            observed_before: only memories stated before this time.
            now: the time a time named in the query ("last week", "in May") is read against
                (default: the current time); see ``MemoryConfig.time_weight``.

        Raises:
            InvalidInputError: a query that is not a string, bad ids, ``top_k``, ``min_score``,
                ``valid_at``, ``observed_after``/``observed_before`` or ``now``, an unknown category or scope.
        """
        self._check_open()
        text = query_text(query)
        user = identifier(user_id, "user_id", required=True)
        session, agent = identifier(session_id, "session_id"), identifier(agent_id, "agent_id")
        turn = identifier(turn_id, "turn_id")
        as_count(top_k, "top_k", minimum=1)
        flt = MemoryFilter(categories=categories, scopes=scopes, include_superseded=include_superseded,
                           valid_at=valid_at, observed_after=observed_after,
                           observed_before=observed_before)  # parses and validates these
        reference = as_datetime(now, "now") or datetime.now(timezone.utc)
        scope = SearchScope(
            user_id=user, session_id=session, agent_id=agent, turn_id=turn,  # type: ignore[arg-type]
            categories=flt.categories, scopes=flt.scopes,  # type: ignore[arg-type]
            include_superseded=include_superseded, valid_at=flt.valid_at,
        )
        request = SearchRequest(
            terms=query_terms(text), scope=scope, top_k=top_k, min_score=as_number(min_score, "min_score", -1.0, 1.0),
            window=time_window(text, reference) if self.config.time_weight else None,
            observed_after=flt.observed_after, observed_before=flt.observed_before,
        )
        if not text.strip():
            return []
        self._shared.wait_pending()  # this process's deferred embeddings land first (never inside the pool)
        text = text[: self.config.embed_max_chars]
        vector = None if self._cache is None else self._cache.get(text)
        if vector is None:
            # Embedding the query is the slow part: catching up with other processes' writes and
            # the keyword search run beside it (both finish before the vector side starts).
            keyword_job = background().submit(self._keyword_side, request)
            try:
                vector = self.embedder.embed_one(text)
            finally:
                text_hits = keyword_job.result()
            if self._cache is not None:
                self._cache.put(text, vector)
        else:
            text_hits = self._keyword_side(request)
        return hybrid_search(self.backend, request, vector, text_hits, self.config)

    def _keyword_side(self, request: SearchRequest) -> KeywordHits:
        """Catch up with every acknowledged write, then find the keyword candidates."""
        self._shared.catch_up(self._embed, wait=False)
        return keyword_candidates(self.backend, request, self.config, self._keywords)

    def stats(self, user_id: str | None = None) -> dict[str, Any]:
        """Counts for one user (or the whole store): ``total``, ``current``, ``superseded``,
        ``categories`` and ``scopes`` (the last two over current memories)."""
        self._check_open()
        return self.backend.stats(identifier(user_id, "user_id"))

    # -- lifecycle ------------------------------------------------------------------------------

    def save_index(self) -> None:
        """Write what the backend keeps in RAM now: the SQLite vector index sidecar (it is also
        written on close and at exit); nothing to do on PostgreSQL.

        Raises:
            StorageError: the file could not be written.
        """
        self._check_open()
        self.backend.save()

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


