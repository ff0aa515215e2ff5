"""Key-value items: memories addressed by (user, namespace, key), for key-value store adapters
(LangGraph's ``BaseStore``). Mixed into :class:`~headroom_integrations.memory.engine.MemoryEngine`.

An item is a fact like any other (the user's searches and ``with_memory`` see it), with a
namespace and a key shared by all its versions: putting a key again supersedes its current
version, so :meth:`MemoryEngine.get_history` and point-in-time queries show every value it had.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from headroom_integrations.errors import InvalidInputError
from headroom_integrations.memory.models import Memory, MemoryCategory, MemoryFilter, as_datetime
from headroom_integrations.memory.namespaces import namespace_labels
from headroom_integrations.memory.validation import identifier, new_memory

if TYPE_CHECKING:
    from headroom_integrations.memory.engine import MemoryEngine

__all__ = ["KeyValueItems"]


def _key(value: object) -> str:
    if not isinstance(value, str) or "\x00" in value:
        raise InvalidInputError(f"key must be a string without NUL, got {value!r}")
    return value


class KeyValueItems:
    """The item methods of :class:`MemoryEngine`.

    Example:
        >>> from headroom_integrations.memory import MemoryConfig, MemoryEngine
        >>> engine = MemoryEngine(MemoryConfig(db_path=":memory:"))
        >>> first = engine.put_item("alice", ("memories", "alice"), "food", "Likes tea", metadata={"v": 1})
        >>> second = engine.put_item("alice", ("memories", "alice"), "food", "Likes coffee now")
        >>> engine.get_item("alice", ("memories", "alice"), "food").content
        'Likes coffee now'
        >>> [m.content for m in engine.get_history(second.id)]
        ['Likes tea', 'Likes coffee now']
        >>> engine.close()
    """

    def put_item(
        self: MemoryEngine,
        user_id: str,
        namespace: Sequence[str],
        key: str,
        content: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        category: MemoryCategory | str = MemoryCategory.FACT,
        importance: float = 0.5,
        searchable: bool = True,
        expires_at: datetime | str | None = None,
    ) -> Memory:
        """Store a value under (user, namespace, key): a new version of the item when the key
        exists (or existed: a deleted item's history continues), a new item otherwise.

        Args:
            user_id: owner (the item is a user-level memory of this user).
            namespace: the item's namespace, a tuple of non-empty labels.
            key: its key within the namespace.
            content: the text stored and embedded (what searches match and adapters inject).
            metadata: JSON-serialisable data kept with this version.
            category: a :class:`MemoryCategory` or its name.
            importance: 0..1.
            searchable: False stores the item for lookup only (never embedded nor searched).
            expires_at: when the item expires (:meth:`sweep_expired` deletes it after that).

        Raises:
            InvalidInputError: bad ids, namespace, key, content or metadata.
        """
        self._check_open()
        labels = namespace_labels(namespace)
        if not isinstance(searchable, bool):
            raise InvalidInputError(f"searchable must be True or False, got {searchable!r}")
        memory = dataclasses.replace(
            new_memory(self.config.max_content_chars, content, user_id, category=category, importance=importance,
                       metadata=metadata),
            namespace=labels, key=_key(key), searchable=searchable, expires_at=as_datetime(expires_at, "expires_at"),
        )
        vector = self._embed([memory.content])[0] if searchable else None
        return self.backend.put(memory, vector)[0]

    def get_item(self: MemoryEngine, user_id: str, namespace: Sequence[str], key: str) -> Memory | None:
        """The current, unexpired version of an item, or None."""
        self._check_open()
        found = self.backend.query(MemoryFilter(
            user_id=identifier(user_id, "user_id", required=True), namespace=namespace, key=_key(key),
            live_at=datetime.now(timezone.utc), limit=1,
        ))
        return found[0] if found else None

    def delete_item(self: MemoryEngine, user_id: str, namespace: Sequence[str], key: str) -> bool:
        """Delete an item's current version (its older versions stay in the history, as with
        :meth:`delete`); False when there was none."""
        self._check_open()
        found = self.backend.query(MemoryFilter(
            user_id=identifier(user_id, "user_id", required=True), namespace=namespace, key=_key(key)))
        return any(self.backend.delete(memory.id, all_versions=False) for memory in found)

    def set_expiry(self: MemoryEngine, expiries: Mapping[str, datetime | None]) -> None:
        """Set when memories (by id) expire (None: never); their content and versions stay as they are."""
        self._check_open()
        if not isinstance(expiries, Mapping):
            raise InvalidInputError(f"expiries must be a mapping of memory ids to times, got {expiries!r}")
        self.backend.set_expiry({
            identifier(memory_id, "memory_id", required=True): as_datetime(when, "expiry")  # type: ignore[misc]
            for memory_id, when in expiries.items()
        })

    def sweep_expired(self: MemoryEngine, now: datetime | None = None) -> int:
        """Delete every item whose current version expired by ``now`` (default: now), with its
        whole history; how many items."""
        self._check_open()
        expired = self.backend.query(MemoryFilter(namespace_prefix=(), expired_at=now or datetime.now(timezone.utc)))
        return sum(self.backend.delete(memory.id, all_versions=True) > 0 for memory in expired)
