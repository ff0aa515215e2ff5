"""HeadroomStore: LangGraph's ``BaseStore`` over the memory engine, with versioned items.

Every item is a memory of a user (the namespace names the user, see ``user_label``), with the
namespace and key as its address and the value kept whole beside the text that is embedded.
Putting a key again supersedes its current version: ``get`` returns the newest value and the
engine's history and point-in-time queries show every value the item had.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Unpack

from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    validate_op_namespace,
)

from headroom_integrations.adapter_core import StoreOptions, engine_from
from headroom_integrations.errors import InvalidInputError
from headroom_integrations.langgraph.values import field_paths, matches_condition, matches_filter, value_text
from headroom_integrations.memory.models import Memory, MemoryFilter
from headroom_integrations.memory.validation import identifier

__all__ = ["HeadroomStore"]

UserOf = int | Callable[[tuple[str, ...]], str]


class HeadroomStore(BaseStore):
    """A LangGraph store (``BaseStore``) whose items are memories: one database serves LangGraph
    graphs and agents, LangMem, ``with_memory`` and the other adapters.

    Args:
        **store: the store, as for every adapter: ``memory`` (an open engine to share), or
            ``db_path``, ``db_url`` or ``config`` to open one (default: the default SQLite file).
            A new ``HeadroomStore`` on the same store sees every item.
        index: ``{"fields": [...]}``: the value fields embedded for semantic search, as LangGraph
            paths (default: the whole value: its text fields, one per line). The store's own
            embedder embeds; ``dims`` (if given) must be its dimension, ``embed`` is refused.
        ttl: LangGraph's ``TTLConfig`` (``default_ttl`` minutes, ``refresh_on_read``,
            ``sweep_interval_minutes`` starts the sweeper). Expired items are never returned.
        user_label: which namespace label names the item's user: an index (default 1, the
            ``("memories", user_id)`` layout of LangMem; a shorter namespace belongs to the user
            named by its first label) or a function of the namespace.

    Example:
        >>> store = HeadroomStore(db_path=":memory:")
        >>> store.put(("memories", "alice"), "food", {"content": "Alice likes green tea"})
        >>> store.put(("memories", "alice"), "food", {"content": "Alice now prefers coffee"})
        >>> store.get(("memories", "alice"), "food").value
        {'content': 'Alice now prefers coffee'}
        >>> [hit.key for hit in store.search(("memories", "alice"), query="what does alice drink?")]
        ['food']
        >>> [m.content for m in store.history(("memories", "alice"), "food")]
        ['Alice likes green tea', 'Alice now prefers coffee']
        >>> store.close()
    """

    supports_ttl = True

    def __init__(
        self,
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        user_label: UserOf = 1,
        **store: Unpack[StoreOptions],
    ) -> None:
        if not (callable(user_label) or (isinstance(user_label, int) and not isinstance(user_label, bool)
                                         and user_label >= 0)):
            raise InvalidInputError(f"user_label must be a label index >= 0 or a function, got {user_label!r}")
        self.engine = engine_from(**store)
        self._owns_engine = store.get("memory") is None  # an engine handed in stays open after close()
        self.index_config = dict(index) if index else None
        if self.index_config is not None:
            if self.index_config.get("embed") is not None:
                raise InvalidInputError("HeadroomStore embeds with the store's embedder (MemoryConfig.embedder); "
                                        "remove index['embed']")
            dims = self.index_config.get("dims")
            if dims is not None and dims != self.engine.embedder.dimension:
                raise InvalidInputError(f"index['dims'] is {dims}, but the store's embedder "
                                        f"{self.engine.embedder.name} has {self.engine.embedder.dimension}")
        self._fields = field_paths((self.index_config or {}).get("fields"))
        self.ttl_config = ttl
        self._user_label = user_label
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()
        if ttl and ttl.get("sweep_interval_minutes"):
            self.start_ttl_sweeper()

    # -- namespaces and users ---------------------------------------------------------------------

    def user_of(self, namespace: tuple[str, ...]) -> str:
        """The user whose memories the items of ``namespace`` are.

        Example:
            >>> HeadroomStore(db_path=":memory:").user_of(("memories", "alice", "prefs"))
            'alice'
        """
        if callable(self._user_label):
            return self._user_label(tuple(namespace))
        return _engine_user(namespace[self._user_label] if len(namespace) > self._user_label else namespace[0])

    def _prefix_user(self, prefix: tuple[str, ...]) -> str | None:
        """The one user every namespace under ``prefix`` belongs to, when the prefix says so."""
        if isinstance(self._user_label, int) and len(prefix) > self._user_label:
            return _engine_user(prefix[self._user_label])
        return None

    # -- batches ----------------------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run operations: reads first (they see the store as it was before the batch), then the
        puts (the last put of a key wins), as LangGraph's stores do."""
        ops = list(ops)
        for op in ops:
            validate_op_namespace(op)
        now = datetime.now(timezone.utc)
        results: list[Result] = [None] * len(ops)
        refresh: dict[str, float] = {}
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        for i, op in enumerate(ops):
            if isinstance(op, GetOp):
                found = self._get(tuple(op.namespace), op.key)
                results[i] = None if found is None else _item(found)
                if found is not None and op.refresh_ttl:
                    refresh.update(_ttls([found]))
            elif isinstance(op, SearchOp):
                found_items = self._search(op, now)
                results[i] = [_search_item(m, score) for m, score in found_items]
                if op.refresh_ttl:
                    refresh.update(_ttls([m for m, _ in found_items]))
            elif isinstance(op, ListNamespacesOp):
                results[i] = self._list_namespaces(op, now)
            elif isinstance(op, PutOp):
                puts[(tuple(op.namespace), op.key)] = op
            else:
                raise ValueError(f"Unknown operation type: {type(op)}")
        if refresh:
            self.engine.set_expiry({mid: now + timedelta(minutes=minutes) for mid, minutes in refresh.items()})
        self._apply_puts(list(puts.values()), now)
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """:meth:`batch` in a worker thread."""
        return await asyncio.to_thread(self.batch, list(ops))

    # -- operations -------------------------------------------------------------------------------

    def _get(self, namespace: tuple[str, ...], key: str) -> Memory | None:
        if not namespace:  # nothing can be stored there
            return None
        return self.engine.get_item(self.user_of(namespace), namespace, key)

    def _apply_puts(self, puts: list[PutOp], now: datetime) -> None:
        """Every put but the deletes in one transaction with one embedding call, then the deletes."""
        items = []
        for op in puts:
            namespace = tuple(op.namespace)
            if not namespace:
                raise InvalidNamespaceError("Namespace cannot be empty.")
            if op.value is not None:
                items.append(self._item(op, namespace, now))
        if items:  # first: put_items checks every item before storing any, so a bad one changes nothing
            self.engine.put_items(items)
        for op in puts:  # one op per key (the last put of a key wins), so the order cannot matter
            if op.value is None:
                self.engine.delete_item(self.user_of(tuple(op.namespace)), tuple(op.namespace), op.key)

    def _item(self, op: PutOp, namespace: tuple[str, ...], now: datetime) -> dict[str, Any]:
        """The engine's item of a put: the value kept whole, the text chosen by the index fields."""
        if not isinstance(op.value, Mapping):
            raise InvalidInputError(f"an item's value must be a mapping, got {type(op.value).__name__}")
        value = dict(op.value)
        paths = self._fields if op.index is None else (None if op.index is False else field_paths(op.index))
        text = value_text(value, paths) if op.index is not False else ""
        metadata: dict[str, Any] = {"value": value}
        if op.ttl is not None:
            metadata["ttl"] = op.ttl
        return {
            "user_id": self.user_of(namespace), "namespace": namespace, "key": op.key,
            "content": text or json.dumps(value, ensure_ascii=False, default=str), "metadata": metadata,
            "searchable": bool(text), "expires_at": None if op.ttl is None else now + timedelta(minutes=op.ttl),
        }

    def _items(self, prefix: tuple[str, ...], now: datetime) -> list[Memory]:
        """Every live item under a namespace prefix."""
        return self.engine.query(MemoryFilter(user_id=self._prefix_user(prefix), namespace_prefix=prefix,
                                              live_at=now))

    def _search(self, op: SearchOp, now: datetime) -> list[tuple[Memory, float | None]]:
        prefix = tuple(op.namespace_prefix)
        if op.limit <= 0:
            return []
        if not op.query:
            return [(m, None) for m in self._listed(op, prefix, now)]
        return self._semantic(op, prefix, now)

    def _listed(self, op: SearchOp, prefix: tuple[str, ...], now: datetime) -> list[Memory]:
        """A page of the items under the prefix passing the filter, newest first (as LangGraph's
        database stores order them), read from the database a chunk at a time."""
        need, position, chunk = op.offset + op.limit, 0, max(2 * (op.offset + op.limit), 64)
        matched: list[Memory] = []
        while len(matched) < need:
            rows = self.engine.query(MemoryFilter(user_id=self._prefix_user(prefix), namespace_prefix=prefix,
                                                  live_at=now, newest_first=True, limit=chunk, offset=position))
            matched.extend(m for m in rows if matches_filter(m.metadata["value"], op.filter))
            if len(rows) < chunk:
                break
            position, chunk = position + chunk, chunk * 2
        return matched[op.offset : need]

    def _wanted(self, memory: Memory, prefix: tuple[str, ...], flt: Mapping[str, Any] | None, now: datetime) -> bool:
        return (memory.namespace is not None and memory.namespace[: len(prefix)] == prefix
                and (memory.expires_at is None or memory.expires_at > now)
                and matches_filter(memory.metadata.get("value", {}), flt))

    def _semantic(self, op: SearchOp, prefix: tuple[str, ...], now: datetime) -> list[tuple[Memory, float | None]]:
        """Hybrid search of each user under the prefix; items stored without embedding fill the
        page after the scored ones (as LangGraph does)."""
        need = op.offset + op.limit
        user = self._prefix_user(prefix)
        every: list[Memory] | None = None
        if user is None:
            every = self._items(prefix, now)
            users = sorted({m.user_id for m in every})
        else:
            users = [user]
        ranked: list[tuple[Memory, float, float]] = []
        exhausted = True
        for owner in users:
            hits, complete = self._user_hits(op, owner, prefix, need, now)
            ranked.extend(hits)
            exhausted = exhausted and complete
        if len(users) > 1:  # merged by the engine's own ranking, so each user's order stays as it is alone
            ranked.sort(key=lambda hit: hit[2], reverse=True)
        scored = [(memory, score) for memory, score, _ in ranked]
        page: list[tuple[Memory, float | None]] = list(scored[op.offset : need])
        if len(page) < op.limit and exhausted:
            every = self._items(prefix, now) if every is None else every
            seen = {m.id for m, _ in scored}
            unscored = [m for m in every if m.id not in seen and matches_filter(m.metadata["value"], op.filter)]
            page.extend((m, None) for m in unscored[: op.limit - len(page)])
        return page

    def _user_hits(
        self, op: SearchOp, user: str, prefix: tuple[str, ...], need: int, now: datetime
    ) -> tuple[list[tuple[Memory, float, float]], bool]:
        """The user's best items under the prefix (at least ``need`` when there are that many),
        each with its cosine and the score the engine ranked it by (not rising down the list), and
        whether every searchable memory of the user was ranked."""
        top_k = max(need * 2, 10)
        while True:
            hits = self.engine.search(op.query, user, top_k=top_k)  # type: ignore[arg-type]
            wanted = [(h.memory, h.score, h.fused_score + h.diversity_part) for h in hits
                      if self._wanted(h.memory, prefix, op.filter, now)]
            if len(wanted) >= need or len(hits) < top_k:
                return wanted, len(hits) < top_k
            top_k *= 4

    def _list_namespaces(self, op: ListNamespacesOp, now: datetime) -> list[tuple[str, ...]]:
        conditions = tuple(op.match_conditions or ())
        prefix: tuple[str, ...] = ()
        for condition in conditions:  # the literal head of a prefix condition narrows the query
            if condition.match_type == "prefix":
                head = []
                for label in condition.path:
                    if label == "*":
                        break
                    head.append(label)
                prefix = max(prefix, tuple(head), key=len)
        namespaces = {m.namespace for m in self._items(prefix, now) if m.namespace is not None}
        found = [ns for ns in namespaces if all(matches_condition(c, ns) for c in conditions)]
        if op.max_depth is not None:
            found = list({ns[: op.max_depth] for ns in found})
        return sorted(found)[op.offset : op.offset + op.limit]

    # -- beyond BaseStore: history, TTL sweeping, lifecycle ---------------------------------------

    def history(self, namespace: tuple[str, ...], key: str) -> list[Memory]:
        """Every stored version of an item, oldest first (the memories, with the values in
        ``metadata["value"]``); empty when the key was never put."""
        namespace = tuple(namespace)
        found = self.engine.query(MemoryFilter(user_id=self.user_of(namespace), namespace=namespace, key=key,
                                               include_superseded=True))
        if not found:
            return []
        return self.engine.get_history(found[-1].id)

    def sweep_ttl(self) -> int:
        """Delete expired items (with their history); how many."""
        return self.engine.sweep_expired()

    def start_ttl_sweeper(self, sweep_interval_minutes: float | None = None) -> concurrent.futures.Future[None]:
        """Sweep expired items every ``sweep_interval_minutes`` (default: the TTL config's, else 5)
        in a daemon thread until :meth:`stop_ttl_sweeper` or :meth:`close`."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        if self._sweeper is not None and self._sweeper.is_alive():
            future.set_result(None)
            return future
        interval = float(sweep_interval_minutes or (self.ttl_config or {}).get("sweep_interval_minutes") or 5)
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval * 60):
                try:
                    self.sweep_ttl()
                except Exception:
                    continue
            future.set_result(None)

        self._sweeper = threading.Thread(target=loop, daemon=True, name="headroom-ttl-sweeper")
        self._sweeper.start()
        return future

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the sweeper thread; whether it stopped within ``timeout`` seconds."""
        self._stop.set()
        if self._sweeper is None:
            return True
        self._sweeper.join(timeout)
        return not self._sweeper.is_alive()

    def close(self) -> None:
        """Stop the sweeper and release the engine (unless it was handed in as ``memory=``)."""
        self.stop_ttl_sweeper()
        if self._owns_engine:
            self.engine.close()

    def __enter__(self) -> HeadroomStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ttls(memories: Sequence[Memory]) -> dict[str, float]:
    return {m.id: float(m.metadata["ttl"]) for m in memories if m.metadata.get("ttl") is not None}


def _item(memory: Memory) -> Item:
    return Item(value=memory.metadata.get("value", {}), key=memory.key or "", namespace=memory.namespace or (),
                created_at=memory.created_at, updated_at=memory.valid_from or memory.created_at)


def _search_item(memory: Memory, score: float | None) -> SearchItem:
    return SearchItem(namespace=memory.namespace or (), key=memory.key or "", value=memory.metadata.get("value", {}),
                      created_at=memory.created_at, updated_at=memory.valid_from or memory.created_at, score=score)


def _engine_user(label: str) -> str:
    """The engine user id of a namespace label: the label itself, or, for a label LangGraph
    accepts but a user id cannot be (blank, over 255 characters, a lone surrogate), a digest of it.
    """
    try:
        return identifier(label, "user_id", required=True)  # type: ignore[return-value]
    except InvalidInputError:
        return "langgraph-label:" + hashlib.sha256(label.encode("utf-8", "surrogatepass")).hexdigest()
