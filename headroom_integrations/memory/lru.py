"""One small thread-safe LRU mapping, behind every cache of the engine (query vectors, keyword
candidates, rows recently read by searches)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["LRU"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A bounded mapping that forgets the least recently used entry first. Thread-safe.

    ``get`` with a ``version`` only returns an entry stored with that same version (a cache
    entry computed before the store changed is ignored).

    Example:
        >>> cache = LRU(max_size=2)
        >>> cache.put("a", 1); cache.put("b", 2); cache.get("a"); cache.put("c", 3)
        1
        >>> cache.get("b") is None, len(cache)
        (True, 2)
        >>> cache.put("q", [7], version=3)
        >>> cache.get("q", version=3), cache.get("q", version=4)
        ([7], None)
    """

    def __init__(self, max_size: int = 1000) -> None:
        self.max_size = max_size
        self._items: OrderedDict[K, tuple[object, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, version: object = None) -> V | None:
        """The value stored under ``key`` (and ``version``), or None; marks it recently used."""
        with self._lock:
            found = self._items.get(key)
            if found is None or found[0] != version:
                return None
            self._items.move_to_end(key)
            return found[1]

    def put(self, key: K, value: V, version: object = None) -> None:
        """Store ``value`` under ``key`` (computed at ``version``), forgetting the oldest entries."""
        with self._lock:
            self._items[key] = (version, value)
            self._items.move_to_end(key)
            while len(self._items) > self.max_size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
