"""The storage seam: what the engine and retrieval need from a backend, as one protocol.

Only value types cross it (:class:`~headroom_integrations.memory.models.Memory`,
:class:`~headroom_integrations.memory.models.MemoryFilter`, :class:`SearchScope`,
:class:`KeywordQuery`, :class:`StoredRow`, :class:`Revision`, numpy vectors and primary keys);
never SQL, a connection or an index object. Two backends implement it:

* ``backends/sqlite``: one SQLite file (FTS5 keyword index) with an hnswlib graph beside it, kept
  in each process's RAM and caught up from the file's change log (the embedded default);
* ``backends/postgres``: PostgreSQL with pgvector (HNSW) and a ``tsvector`` GIN index; nothing is
  held in process RAM, so any number of processes on any number of hosts share one database.

Primary keys (``pk``) are the backend's own integer row ids: opaque to the engine, stable for a
row's life and never reused.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, NamedTuple, Protocol

import numpy as np

from headroom_integrations.memory.models import (
    ChatRecord,
    Memory,
    MemoryCategory,
    MemoryFilter,
    MemoryScope,
    UserCounts,
)
from headroom_integrations.memory.visibility import BucketKey, bucket_key, visible_keys

__all__ = ["META_MESSAGES_COPIED", "ROLLED_BACK_TO", "KeywordQuery", "MemoryBackend", "Revision", "Scores",
           "SearchScope", "StoredRow"]

META_MESSAGES_COPIED = "migrated_messages"
"""Meta key prefix: how many chat messages a migration copied from a source (``<prefix>:<hash of the source>``)."""

ROLLED_BACK_TO = "rolled_back_to"
"""Metadata key of the version a rollback created: the id of the version it restored. Only that
version carries it: a later version inheriting its metadata leaves it out."""


@dataclass(frozen=True)
class SearchScope:
    """What one search may see: the caller's ids (scope visibility), validity and filters.

    Example:
        >>> scope = SearchScope("alice", session_id="s1")
        >>> [key[1] for key in scope.buckets()], scope.history
        (['user', 'session'], False)
    """

    user_id: str
    session_id: str | None = None
    agent_id: str | None = None
    turn_id: str | None = None
    categories: tuple[MemoryCategory, ...] | None = None
    scopes: tuple[MemoryScope, ...] | None = None
    include_superseded: bool = False
    valid_at: datetime | None = None

    @property
    def history(self) -> bool:
        """True when versions other than the current ones may match."""
        return self.include_superseded or self.valid_at is not None

    def buckets(self) -> list[BucketKey]:
        """The visibility buckets this search may see (narrowed by ``scopes``)."""
        keys = visible_keys(self.user_id, self.session_id, self.agent_id, self.turn_id)
        if self.scopes is not None:
            allowed = {s.value for s in self.scopes}
            keys = [key for key in keys if key[1] in allowed]
        return keys

    @cached_property
    def _key_set(self) -> frozenset[BucketKey]:
        return frozenset(self.buckets())

    def matches(self, memory: Memory) -> bool:
        """Whether a memory (as read from the database) is visible and valid for this search."""
        key = bucket_key(memory.user_id, memory.scope, memory.session_id, memory.agent_id, memory.turn_id)
        if key not in self._key_set:
            return False
        if self.categories is not None and memory.category not in self.categories:
            return False
        if self.valid_at is not None:
            return memory.is_valid_at(self.valid_at)
        return self.include_superseded or memory.is_current


@dataclass(frozen=True)
class KeywordQuery:
    """The full-text terms a search uses with their IDFs, the divisor that normalises their BM25
    scores and the index's average document length.

    Example:
        >>> KeywordQuery((("alic", 3.1), ("googl", 4.4)), scale=7.5, average_length=6.0).terms
        ['alic', 'googl']
    """

    weights: tuple[tuple[str, float], ...]
    scale: float
    average_length: float
    postings: int = 0
    """Rows holding any of the terms, at most (the sum of their counts when they were read; 0 if unknown)."""

    @property
    def terms(self) -> list[str]:
        """The terms searched."""
        return [term for term, _ in self.weights]


class Scores(NamedTuple):
    """The two scores fusion combines, for some candidates: cosine similarity to the query vector
    and normalised BM25 under the keyword query (a memory matching no query term has none).

    Example:
        >>> Scores({7: 0.81}, {}).cosine[7]
        0.81
    """

    cosine: dict[int, float]
    keyword: dict[int, float]


class StoredRow(NamedTuple):
    """A memory as read back for a search: the value, its vector (None when not embedded yet)
    and its fingerprint (the key true repeats share).

    Example:
        >>> row = StoredRow(Memory(id="1", content="Likes tea", user_id="u"), None, "ab12")
        >>> row.memory.content, row.vector is None
        ('Likes tea', True)
    """

    memory: Memory
    vector: np.ndarray | None
    fingerprint: str | None


@dataclass(frozen=True)
class Revision:
    """New values for a memory (``None``: keep the old one), for a new version or an edit in place.

    Example:
        >>> Revision(content="Works at Anthropic").category is None
        True
    """

    content: str | None = None
    category: MemoryCategory | None = None
    importance: float | None = None
    metadata: Mapping[str, Any] | None = None
    """New metadata (None: a new version inherits the old one's, less :data:`ROLLED_BACK_TO`)."""
    observed_at: datetime | None = None
    """When the fact was stated (a new version: None means now; an edit: None keeps it)."""


class MemoryBackend(Protocol):
    """One database of memories, as the engine sees it. Blocking and thread-safe.

    Errors: storage failures raise :class:`~headroom_integrations.errors.StorageError` naming
    :attr:`location`; missing memories :class:`~headroom_integrations.errors.MemoryNotFoundError`.

    Example (what the engine does with one; ``open_backend`` picks the implementation):
        >>> from headroom_integrations.memory.backends import open_backend
        >>> from headroom_integrations.memory.config import MemoryConfig
        >>> from headroom_integrations.memory.validation import new_memory
        >>> backend = open_backend(MemoryConfig(db_path=":memory:"), "test/model", 2)
        >>> [(m.content, pk) for m, pk in backend.insert([new_memory(100, "Likes tea", "u")], [None], dedupe=False)]
        [('Likes tea', 1)]
        >>> backend.without_embedding(), backend.stats("u")["current"]
        ([(1, 'Likes tea')], 1)
        >>> backend.close()
    """

    location: str
    """The store for messages: a file path, or a database URL with its password masked."""

    write_chunk: int | None
    """Rows per statement of a batch insert, read chunk by chunk from ``vectors`` inside the
    transaction (None: all at once). A backend whose writes cost more than embedding sets it, so
    the engine embeds the next chunk while the server writes the previous one."""

    # -- memories ---------------------------------------------------------------------------------

    def insert(
        self, new: Sequence[Memory], vectors: Sequence[np.ndarray | None], dedupe: bool
    ) -> list[tuple[Memory, int | None]]:
        """Store new memories in one transaction; per memory, the stored value and its primary key.

        With ``dedupe`` a memory repeating a current one (same fingerprint, same visibility
        bucket; repeats within the batch too) is not stored: that one is returned with pk None.
        """

    def supersede(self, old_id: str, new_id: str, revision: Revision, vector: np.ndarray | None,
                  revive: bool) -> tuple[Memory, int]:
        """Close ``old_id``'s validity and store its successor atomically; the new version and its pk.

        With ``revive`` the old memory may be the last version of a fact whose head was deleted.
        """

    def update(self, memory_id: str, revision: Revision, vector: np.ndarray | None) -> Memory:
        """Change a memory in place (``vector``: the new content's embedding)."""

    def put(self, memories: Sequence[Memory], vectors: Sequence[np.ndarray | None]) -> list[tuple[Memory, int]]:
        """Store a new version of each key-value item (memories with ``namespace`` and ``key``), in
        order, in one transaction: each supersedes the item's current version of the same user, or
        continues the history of one whose current version was deleted, or starts a new item. Per
        memory the stored value and its pk. A ``searchable=False`` memory is stored without a vector."""

    def set_expiry(self, expiries: Mapping[str, datetime | None]) -> None:
        """Set when memories (by id) expire; nothing else about them changes."""

    def delete(self, memory_id: str, all_versions: bool) -> int:
        """Delete one version (or every version of its fact); how many rows were deleted."""

    def delete_matching(self, flt: MemoryFilter) -> int:
        """Delete every memory matching the filter; how many."""

    def erase_user(self, user_id: str) -> tuple[int, int]:
        """Delete every memory and logged message of a user, and every trace of them the backend's
        files or indexes keep (deleted pages, index segments, logs, vectors); how many of each."""

    def get(self, memory_id: str) -> Memory | None:
        """The memory with this id, or None."""

    def query(self, flt: MemoryFilter) -> list[Memory]:
        """Memories matching a filter, oldest first (``newest_first``: latest ``valid_from`` first), paged."""

    def history(self, memory_id: str) -> list[Memory]:
        """Every version of the fact ``memory_id`` belongs to, oldest first."""

    def stats(self, user_id: str | None) -> dict[str, Any]:
        """Counts: total, current, superseded, current ones per category and per scope."""

    def users(self) -> list[UserCounts]:
        """Every user with memories and their counts, by user id."""

    # -- vectors computed after the fact ----------------------------------------------------------------

    def without_embedding(self, pks: Sequence[int] | None = None) -> list[tuple[int, str]]:
        """(pk, content) of rows still waiting for their vector, any version (all, or among ``pks``)."""

    def set_embeddings(self, vectors: Mapping[int, np.ndarray]) -> bool:
        """Store vectors of rows that had none. False when they could not be written: the backend
        may still search with them in this process (SQLite does), and the caller retries later."""

    # -- change detection -------------------------------------------------------------------------

    def refresh(self) -> list[int]:
        """Before a search: see what other processes wrote. Returns the pks of rows (any version)
        that still wait for their vector (so the caller can embed them)."""

    @property
    def version(self) -> int:
        """A number that changes whenever something searchable changed (as of the last refresh)."""

    # -- keyword side -----------------------------------------------------------------------------

    def keyword_query(self, terms: list[str], postings_budget: int, max_share: float) -> KeywordQuery | None:
        """The terms keyword search uses (the rarest, up to ``postings_budget`` matching rows; none
        found in more than ``max_share`` of the memories) and their IDFs; None: no usable term."""

    def keyword_search(self, query: KeywordQuery, scope: SearchScope, limit: int) -> list[tuple[int, float]]:
        """(pk, normalised BM25) of the best visible matches, best first."""

    # -- vector side ------------------------------------------------------------------------------

    def nearest(
        self, vector: np.ndarray, scope: SearchScope, k: int, query: KeywordQuery | None = None,
        known: Sequence[int] = (),
    ) -> tuple[list[tuple[int, float]], Scores]:
        """The ``k`` visible memories nearest to ``vector`` as (pk, cosine), best first; the
        restriction is applied inside the search, so recall holds however many users share the store.

        In the same call (one round trip to a database server), the scores fusion lacks: the
        cosine of each memory of ``known`` (the keyword side's hits) that is not a hit, and the
        BM25 under ``query`` of each hit not in ``known``."""

    def candidate_scores(
        self, vector: np.ndarray, query: KeywordQuery | None, need_cosine: Sequence[int], need_keyword: Sequence[int]
    ) -> Scores:
        """The scores a candidate found by one side lacks from the other: the cosine of ``vector``
        to each memory of ``need_cosine`` that has a vector, and the normalised BM25 of each
        memory of ``need_keyword`` that matches a term of ``query`` (none without a query)."""

    def neighbours(
        self, pks: Iterable[int], scope: SearchScope, vector: np.ndarray, query: KeywordQuery | None, span: int = 1
    ) -> tuple[dict[int, list[int]], Scores]:
        """For each given memory, the visible current memories of its own bucket stored right before
        and right after it (the context of a conversation turn: the nearest ``span`` on each side,
        within 8 primary keys); and the scores of every such neighbour that is not itself among
        ``pks`` (as :meth:`candidate_scores` gives them)."""

    def rows(self, pks: Sequence[int]) -> dict[int, StoredRow]:
        """The given memories with vectors and fingerprints (missing ones left out)."""

    # -- conversation log -------------------------------------------------------------------------

    def append_messages(self, rows: list[dict[str, Any]]) -> None:
        """Log chat messages (mappings with user_id, session_id, role, content, payload, created_at)."""

    def messages(self, user_id: str, session_id: str, limit: int | None) -> list[ChatRecord]:
        """A session's messages, oldest first (only the last ``limit``)."""

    def delete_messages(self, user_id: str, session_id: str | None) -> int:
        """Delete a session's messages (every session of the user when None); how many."""

    # -- copying (migration) ----------------------------------------------------------------------

    def dump(
        self, batch_size: int = 1000, user_id: str | None = None
    ) -> Iterator[list[tuple[Memory, np.ndarray | None]]]:
        """Every memory (all versions; of one user when given) with its vector, in batches, in
        the order they were stored."""

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of these memory ids are stored."""

    def load(self, rows: Sequence[tuple[Memory, np.ndarray | None]]) -> int:
        """Store memories exactly as given (ids, chains, timestamps); ids already present are
        skipped. How many were stored."""

    def dump_messages(self, batch_size: int = 1000) -> Iterator[list[dict[str, Any]]]:
        """Every logged chat message (mappings as for :meth:`append_messages`), in batches."""

    def meta(self) -> dict[str, str]:
        """Store-wide facts (schema version, embedder name and dimension, ...)."""

    def set_meta(self, key: str, value: str) -> None:
        """Record a store-wide fact (for tools such as migration; the engine's own keys are managed)."""

    # -- consistency ------------------------------------------------------------------------------

    def chain_problems(self) -> dict[str, int]:
        """Counts of malformed version chains: ``chains_with_several_current``."""

    def check_index(self, repair: bool) -> dict[str, int]:
        """Compare what the backend keeps beside the rows (SQLite: the vector index and the FTS5
        table; PostgreSQL: nothing, its indexes are the database's own) with the rows; counts
        of what disagrees, by kind. ``repair``: rebuild what disagrees (the counts are of before)."""

    # -- lifecycle --------------------------------------------------------------------------------

    def save(self) -> None:
        """Persist what the backend keeps in RAM (the SQLite vector index); no-op elsewhere."""

    def close(self) -> None:
        """Release connections and files."""
