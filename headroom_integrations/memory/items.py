"""Key-value items: memories addressed by (user, namespace, key), for key-value store adapters
(LangGraph's ``BaseStore``). Mixed into :class:`~headroom_integrations.memory.engine.MemoryEngine`.

An item is a fact like any other (the user's searches and ``with_memory`` see it), with a
namespace and a key shared by all its versions: putting a key again supersedes its current
version, so :meth:`MemoryEngine.get_history` and point-in-time queries show every value it had.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from headroom_integrations.errors import InvalidInputError
from headroom_integrations.memory.models import Memory, MemoryCategory, MemoryFilter, as_datetime
from headroom_integrations.memory.namespaces import namespace_labels
from headroom_integrations.memory.validation import identifier, new_memory

if TYPE_CHECKING:
    from headroom_integrations.memory.engine import MemoryEngine

__all__ = ["KeyValueItems"]


_ITEM_FIELDS = frozenset({"user_id", "namespace", "key", "content", "metadata", "category", "importance",
                          "searchable", "expires_at"})


def checked_key(value: object) -> str:
    """An item key: any string without NUL."""
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
        return self.put_items([{
            "user_id": user_id, "namespace": namespace, "key": key, "content": content, "metadata": metadata,
            "category": category, "importance": importance, "searchable": searchable, "expires_at": expires_at,
        }])[0]

    def put_items(self: MemoryEngine, items: Iterable[Mapping[str, Any]]) -> list[Memory]:
        """Store many items in one transaction with one embedding call, in order (a key given
        twice gets two versions). Each item is a mapping of :meth:`put_item`'s arguments; all
        are checked before anything is stored.

        Raises:
            InvalidInputError: an item is invalid (``item N: ...``); nothing is stored then.
        """
        self._check_open()
        if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
            raise InvalidInputError(f"items must be a list of mappings, got {type(items).__name__}")
        memories = []
        for position, item in enumerate(items):
            try:
                memories.append(self._item_memory(item))
            except InvalidInputError as exc:
                raise InvalidInputError(f"item {position}: {exc}") from None
        if not memories:
            return []
        searchable = [m for m in memories if m.searchable]
        embedded = iter(self._embed([m.content for m in searchable]) if searchable else [])
        vectors = [next(embedded) if m.searchable else None for m in memories]
        return [memory for memory, _ in self.backend.put(memories, vectors)]

    def _item_memory(self: MemoryEngine, item: object) -> Memory:
        if not isinstance(item, Mapping):
            raise InvalidInputError(f"expected a mapping, got {type(item).__name__}")
        unknown = set(item) - _ITEM_FIELDS
        if unknown:
            raise InvalidInputError(f"unknown fields {sorted(map(str, unknown))}")
        for required in ("user_id", "namespace", "key", "content"):
            if required not in item:
                raise InvalidInputError(f"{required} is required")
        searchable = item.get("searchable", True)
        if not isinstance(searchable, bool):
            raise InvalidInputError(f"searchable must be True or False, got {searchable!r}")
        memory = new_memory(self.config.max_content_chars, item["content"], item["user_id"],
                            category=item.get("category", MemoryCategory.FACT), importance=item.get("importance", 0.5),
                            metadata=item.get("metadata"))
        return dataclasses.replace(
            memory, namespace=namespace_labels(item["namespace"]), key=checked_key(item["key"]), searchable=searchable,
            expires_at=as_datetime(item.get("expires_at"), "expires_at"),
        )

    def get_item(self: MemoryEngine, user_id: str, namespace: Sequence[str], key: str) -> Memory | None:
        """The current, unexpired version of an item, or None."""
        self._check_open()
        found = self.backend.query(MemoryFilter(
            user_id=identifier(user_id, "user_id", required=True), namespace=namespace, key=checked_key(key),
            live_at=datetime.now(timezone.utc), limit=1,
        ))
        return found[0] if found else None

    def delete_item(self: MemoryEngine, user_id: str, namespace: Sequence[str], key: str) -> bool:
        """Delete an item's current version (its older versions stay in the history, as with
        :meth:`delete`); False when there was none."""
        self._check_open()
        found = self.backend.query(MemoryFilter(
            user_id=identifier(user_id, "user_id", required=True), namespace=namespace, key=checked_key(key)))
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
