"""The versions of a fact: supersede it with a new version, edit one in place, roll back to an
older one. Mixed into :class:`~headroom_integrations.memory.engine.MemoryEngine`.

Each version records when it was stated (``observed_at``): a new version (:meth:`supersede`) is
stated now unless told otherwise, an edit in place (:meth:`update`) keeps the time unless given
one, and a rollback restores the old version's time with its content (the fact it brings back
was stated then).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from headroom_integrations.errors import InvalidInputError, MemoryNotFoundError
from headroom_integrations.memory.backends import ROLLED_BACK_TO, Revision
from headroom_integrations.memory.models import Memory, MemoryCategory, as_datetime
from headroom_integrations.memory.validation import content_text, identifier, metadata_value
from headroom_integrations.memory.validation import importance as _importance

if TYPE_CHECKING:
    from headroom_integrations.memory.engine import MemoryEngine

__all__ = ["Versioning"]

When = datetime | date | str
"""A point in time as callers give it: a datetime (naive means UTC), a date or an ISO 8601 string."""


class Versioning:
    """The versioning methods of :class:`MemoryEngine`.

    Example:
        >>> from headroom_integrations.memory import MemoryConfig, MemoryEngine
        >>> engine = MemoryEngine(MemoryConfig(db_path=":memory:"))
        >>> old = engine.add("Works at Google", user_id="alice", observed_at="2023-05-08")
        >>> new = engine.supersede(old.id, "Works at Anthropic", observed_at="2024-02-01")
        >>> [(m.content, m.observed_at.date().isoformat(), m.is_current) for m in engine.get_history(new.id)]
        [('Works at Google', '2023-05-08', False), ('Works at Anthropic', '2024-02-01', True)]
        >>> engine.rollback(old.id).observed_at.date().isoformat()  # the restored fact's own date
        '2023-05-08'
        >>> engine.close()
    """

    def _revision(
        self: MemoryEngine, content: object, what: str, category: object, importance: object,
        metadata: Mapping[str, Any] | None, observed_at: object = None,
    ) -> Revision:
        """New values for a memory, each checked (None: keep the old one)."""
        return Revision(
            content=None if content is None else content_text(content, what, self.config.max_content_chars),
            category=None if category is None else MemoryCategory.parse(category),  # type: ignore[arg-type]
            importance=None if importance is None else _importance(importance),
            metadata=None if metadata is None else metadata_value(metadata),
            observed_at=as_datetime(observed_at, "observed_at"),
        )

    def supersede(
        self: MemoryEngine,
        old_memory_id: str,
        new_content: str,
        *,
        category: MemoryCategory | str | None = None,
        importance: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        observed_at: When | None = None,
        defer_embedding: bool = False,
    ) -> Memory:
        """Replace a fact with a new version; the old one stays in the history, no longer current.

        The new version inherits owner, scope ids, category, importance and metadata unless given
        (not a rollback's ``rolled_back_to``: only the version :meth:`rollback` created is one).
        ``observed_at`` is when the new version was stated (default: now). ``defer_embedding``
        works as in :meth:`add`.

        Raises:
            MemoryNotFoundError: no such memory.
            MemoryAlreadySupersededError: the memory was superseded already (supersede the current one).
            InvalidInputError: empty or oversized content, unknown category, bad importance or
                ``observed_at``.
        """
        self._check_open()
        old_id = identifier(old_memory_id, "old_memory_id", required=True)
        text = content_text(new_content, "new_content", self.config.max_content_chars)  # required here
        revision = self._revision(text, "new_content", category, importance, metadata, observed_at)
        return self._new_version(old_id, revision, defer_embedding)  # type: ignore[arg-type]

    def _new_version(
        self: MemoryEngine,
        old_id: str,
        revision: Revision,
        defer_embedding: bool = False,
        revive: bool = False,
    ) -> Memory:
        """Supersede ``old_id`` with ``revision`` (its content given) (with ``revive``, also the last
        version of a fact without a current one)."""
        vector = None if defer_embedding else self._embed([revision.content])[0]  # type: ignore[list-item]
        new, pk = self.backend.supersede(old_id, str(uuid.uuid4()), revision, vector, revive)
        if vector is None:
            self._shared.embed_later(self._embed, [pk])
        return new

    def update(
        self: MemoryEngine,
        memory_id: str,
        *,
        content: str | None = None,
        category: MemoryCategory | str | None = None,
        importance: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        observed_at: When | None = None,
    ) -> Memory:
        """Edit a memory in place (no new version); new content is re-embedded and re-indexed.

        Use :meth:`supersede` instead when a fact *changed* and its history matters. An edit is
        a correction of the same statement, so ``observed_at`` stays as it was unless given.

        Raises:
            MemoryNotFoundError: no such memory.
            InvalidInputError: invalid new values.
        """
        self._check_open()
        memory_id = identifier(memory_id, "memory_id", required=True)  # type: ignore[assignment]
        revision = self._revision(content, "content", category, importance, metadata, observed_at)
        if revision == Revision():
            memory = self.backend.get(memory_id)
            if memory is None:
                raise MemoryNotFoundError(memory_id)
            return memory
        vector = None if revision.content is None else self._embed([revision.content])[0]
        return self.backend.update(memory_id, revision, vector)

    def rollback(self: MemoryEngine, memory_id: str, *, observed_at: When | None = None) -> Memory:
        """Make an older version of a fact current again.

        The rollback is itself recorded: the current version is superseded by a new version
        carrying the old content (``metadata["rolled_back_to"]`` names the restored version), so
        the history and point-in-time queries stay truthful. A fact whose current version was
        deleted can be rolled back too: the restored version becomes its new current version.
        The new version keeps the restored version's ``observed_at`` (the fact it brings back was
        stated then) unless ``observed_at`` is given.

        Raises:
            MemoryNotFoundError: no such memory.
            InvalidInputError: the memory is already current, or a bad ``observed_at``.
        """
        self._check_open()
        chain = self.get_history(memory_id)
        target = next(m for m in chain if m.id == memory_id)
        if target.is_current:
            raise InvalidInputError(f"memory {memory_id!r} is already the current version")
        head = next((m for m in chain if m.is_current), None)
        metadata = {**target.metadata, ROLLED_BACK_TO: target.id}
        base = head if head is not None else chain[-1]  # headless: continue from the latest version
        revision = self._revision(target.content, "new_content", target.category, target.importance, metadata,
                                  target.observed_at if observed_at is None else observed_at)
        return self._new_version(base.id, revision, revive=head is None)
