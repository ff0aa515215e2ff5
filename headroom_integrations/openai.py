"""``with_memory(client)``: persistent memory for any OpenAI-compatible chat client.

One wrapped ``chat.completions.create`` call:

1. **Retrieve** the memories relevant to the last user message (hybrid search over what this
   user, session and agent may see).
2. **Inject** them as a delimited data block with short handles at the end of the last user
   message, so the cacheable prompt prefix stays unchanged.
3. **Instruct**: a constant extraction instruction is appended to the system prompt.
4. **Call** the client with every other keyword argument untouched.
5. **Parse and strip** the ``<memory>`` block from the reply (also in flight when streaming).
6. **Store** the memories: committed before the call returns (about a millisecond), embedded in
   the background; a changed fact supersedes the injected memory it names.

No extra LLM request is ever made. The module imports no OpenAI code: it works with any client
whose ``chat.completions.create`` has OpenAI's shape (OpenAI, AzureOpenAI, their async twins,
Groq, Together, vLLM, Ollama's OpenAI endpoint, ...).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from headroom_integrations._async import async_face
from headroom_integrations.adapter_core import engine_from, stated_at
from headroom_integrations.errors import InvalidInputError, MemoryNotFoundError
from headroom_integrations.inline import (
    ExtractedMemory,
    StreamFilter,
    add_instruction,
    clean_messages,
    inject_memories,
    last_user_text,
    parse_reply,
)
from headroom_integrations.memory import (
    HierarchicalMemory,
    Memory,
    MemoryCategory,
    MemoryConfig,
    MemoryEngine,
    MemoryFilter,
    MemoryScope,
    SearchResult,
)
from headroom_integrations.session import InlineMemory

__all__ = [
    "AsyncMemoryFacade",
    "AsyncMemoryStream",
    "MemoryClient",
    "MemoryFacade",
    "MemorySession",
    "MemoryStream",
    "with_memory",
]

logger = logging.getLogger(__name__)


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _set(obj: Any, name: str, value: Any) -> None:
    if isinstance(obj, dict):
        obj[name] = value
    else:
        setattr(obj, name, value)


@dataclass
class CallState:
    """What one wrapped call needs to remember between the request and the reply (``observed_at``:
    when the call was made, the time the reply's memories were stated)."""

    handles: dict[str, str] = field(default_factory=dict)
    extract: bool = True
    turn_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    observed_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


class MemorySession(InlineMemory):
    """The memory side of a wrapped client: :class:`InlineMemory` plus OpenAI's request and reply shapes.

    All of it is blocking; the sync client calls it directly and the async client runs it in a
    worker thread. You rarely build one yourself: :func:`with_memory` does.

    Example::

        session = MemorySession(MemoryEngine(MemoryConfig(db_path="memory.db")), user_id="bob")
        kwargs, state = session.prepare({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        reply_text = session.finish_text("Hello!<memory>{...}</memory>", state)   # -> "Hello!"
    """

    def __init__(self, *ids: Any, inject: bool = True, extract: bool = True, **recall: Any) -> None:
        super().__init__(*ids, **recall)  # engine, user_id, session_id, agent_id; top_k, token_budget, min_score
        self.inject = inject
        self.extract = extract

    # -- request side ---------------------------------------------------------------------------

    def prepare(self, kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], CallState]:
        """The keyword arguments to send instead of ``kwargs`` (memories injected, instruction added)."""
        out = dict(kwargs)
        state = CallState(extract=self.extract and not _json_mode(kwargs))
        messages = kwargs.get("messages")
        if messages is None or isinstance(messages, (str, bytes)):
            return out, state
        messages = clean_messages(messages)  # a lone surrogate would make the SDK refuse the request
        state.observed_at = stated_at(messages, state.observed_at)
        if self.inject:
            injection = self.recall(last_user_text(messages), state.observed_at)
            messages = inject_memories(messages, injection)
            state.handles = injection.handles
        if state.extract:
            messages = add_instruction(messages)
        out["messages"] = messages
        return out, state

    # -- reply side -----------------------------------------------------------------------------

    def finish_response(self, response: Any, state: CallState) -> Any:
        """Strip blocks from every choice of a (non-streamed) response; store choice 0's memories."""
        found: list[ExtractedMemory] = []
        for position, choice in enumerate(_get(response, "choices") or []):
            message = _get(choice, "message")
            content = _get(message, "content") if message is not None else None
            if not isinstance(content, str):
                continue
            parsed = parse_reply(content, cut=_get(choice, "finish_reason") == "length")
            if parsed.blocks:
                _set(message, "content", parsed.text)
            if position == 0:
                found = parsed.memories
        if state.extract:
            self.store(found, state)
        return response

    def finish_text(self, text: str, state: CallState) -> str:
        """Strip blocks from a reply text and store its memories; return what the user should see."""
        parsed = parse_reply(text)
        if state.extract:
            self.store(parsed.memories, state)
        return parsed.text

    def store(self, found: list[ExtractedMemory], state: CallState) -> list[Memory]:
        """Store extracted memories for this call (see :meth:`InlineMemory.remember`)."""
        return self.remember(found, state.handles, state.observed_at)

    # -- streaming ------------------------------------------------------------------------------

    def filter_chunk(self, chunk: Any, filters: dict[int, StreamFilter]) -> Any:
        """Clean the content deltas of one streamed chunk in place (its SDK type is kept)."""
        for choice in _get(chunk, "choices") or []:
            position = _get(choice, "index") or 0
            stream_filter = filters.setdefault(position, StreamFilter())
            delta = _get(choice, "delta")
            if delta is None:
                continue
            content = _get(delta, "content")
            if isinstance(content, str) and content:
                _set(delta, "content", stream_filter.feed(content))
            reason = _get(choice, "finish_reason")
            if reason is not None:
                tail = stream_filter.finish(cut=reason == "length")
                if tail:
                    _set(delta, "content", (_get(delta, "content") or "") + tail)
        return chunk

    def finish_stream(self, filters: dict[int, StreamFilter], state: CallState, complete: bool) -> None:
        """Store the memories of choice 0 once the stream ended (or was closed early).

        A stream closed early keeps only the blocks that had closed.
        """
        if not state.extract or 0 not in filters:
            return
        stream_filter = filters[0]
        if complete:
            stream_filter.finish()  # a stream that ended without a finish_reason: close an open block
        self.store(stream_filter.memories(complete_only=not complete), state)


def _json_mode(kwargs: Mapping[str, Any]) -> bool:
    """True when the caller asked for JSON output (a memory block would break it)."""
    response_format = kwargs.get("response_format")
    kind = _get(response_format, "type") if response_format is not None else None
    return kind in ("json_object", "json_schema")


# -- streams ------------------------------------------------------------------------------------


class _StreamBase:
    def __init__(self, stream: Any, session: MemorySession, state: CallState) -> None:
        self._stream = stream
        self._session = session
        self._state = state
        self._filters: dict[int, StreamFilter] = {}
        self._finished = False

    def _finish(self, complete: bool) -> None:
        if self._finished:
            return
        self._finished = True
        self._session.finish_stream(self._filters, self._state, complete)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._stream, name)


class MemoryStream(_StreamBase):
    """A streamed reply with memory blocks removed in flight; chunks keep their SDK types.

    Iterate it like the SDK's stream, use it as a context manager, or ``close()`` it. The
    memories are stored when the stream ends, or at ``close()`` if their block had closed.
    """

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            chunk = next(self._iterator)
        except StopIteration:
            self._finish(complete=True)
            raise
        return self._session.filter_chunk(chunk, self._filters)

    @property
    def _iterator(self) -> Iterator[Any]:
        iterator = self.__dict__.get("_it")
        if iterator is None:
            iterator = self.__dict__["_it"] = iter(self._stream)
        return iterator

    def close(self) -> None:
        """Stop the stream; store memories whose block had closed."""
        self._finish(complete=False)
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> MemoryStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._finish(complete=False)
        except Exception:
            logger.debug("memory stream finaliser failed", exc_info=True)


class AsyncMemoryStream(_StreamBase):
    """The async twin of :class:`MemoryStream` (``async for``, ``async with``, ``await close()``)."""

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        iterator = self.__dict__.get("_it")
        if iterator is None:
            iterator = self.__dict__["_it"] = self._stream.__aiter__()
        try:
            chunk = await iterator.__anext__()
        except StopAsyncIteration:
            await asyncio.to_thread(self._finish, True)
            raise
        return self._session.filter_chunk(chunk, self._filters)

    async def close(self) -> None:
        """Stop the stream; store memories whose block had closed."""
        await asyncio.to_thread(self._finish, False)
        for name in ("close", "aclose"):
            method = getattr(self._stream, name, None)
            if method is not None:
                result = method()
                if inspect.isawaitable(result):
                    await result
                return

    async def aclose(self) -> None:
        """Same as :meth:`close`."""
        await self.close()

    async def __aenter__(self) -> AsyncMemoryStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# -- client proxies ----------------------------------------------------------------------------


class _Proxy:
    """Passes every attribute through to the wrapped object."""

    def __init__(self, target: Any, session: MemorySession) -> None:
        self._target = target
        self._session = session

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_target", "_session", "_is_async"):
            raise AttributeError(name)  # not set yet (or a dunder): never loop through the target
        return getattr(self._target, name)


class _Completions(_Proxy):
    def create(self, **kwargs: Any) -> Any:
        request, state = self._session.prepare(kwargs)
        response = self._target.create(**request)
        if kwargs.get("stream"):
            return MemoryStream(response, self._session, state)
        return self._session.finish_response(response, state)


class _AsyncCompletions(_Proxy):
    async def create(self, **kwargs: Any) -> Any:
        request, state = await asyncio.to_thread(self._session.prepare, kwargs)
        response = await self._target.create(**request)
        if kwargs.get("stream"):
            return AsyncMemoryStream(response, self._session, state)
        return await asyncio.to_thread(self._session.finish_response, response, state)


class _Chat(_Proxy):
    def __init__(self, target: Any, session: MemorySession, is_async: bool) -> None:
        super().__init__(target, session)
        wrapper = _AsyncCompletions if is_async else _Completions
        self.completions = wrapper(target.completions, session)


class MemoryFacade:
    """``client.memory`` on a sync client: direct access to this user's memories.

    Example::

        client = with_memory(OpenAI(), user_id="alice")
        client.memory.add("User is a senior engineer", category="fact", importance=0.9)
        for hit in client.memory.search("python preferences", top_k=5):
            print(hit.content)
        print(client.memory.stats()["total"])
    """

    def __init__(self, session: MemorySession) -> None:
        self.session = session
        self.engine = session.engine

    def search(self, query: str, top_k: int = 5) -> list[SearchResult]:
        """Hybrid search over what this user/session/agent may see."""
        s = self.session
        return self.engine.search(query, s.user_id, s.session_id, s.agent_id, top_k=top_k)

    def add(
        self,
        content: str,
        category: str = "fact",
        importance: float = 0.5,
        scope: MemoryScope | str | None = None,
        metadata: Mapping[str, Any] | None = None,
        turn_id: str | None = None,
        observed_at: datetime | date | str | None = None,
    ) -> Memory:
        """Store a memory by hand under this client's ids, by the engine's scope rules
        (``observed_at``: when the fact was stated, default now).

        Without ``scope`` the memory is user-level (``context`` memories: session-level when the
        client has a session). A scope the ids cannot carry is refused, never widened: ``"agent"``
        needs the client's ``agent_id``, ``"session"`` its ``session_id``, ``"turn"`` a ``turn_id``.

        Raises:
            InvalidInputError: as :meth:`MemoryEngine.add`.
        """
        s = self.session
        if scope is None:
            context = MemoryCategory.parse(category) is MemoryCategory.CONTEXT
            scope = MemoryScope.SESSION if context and s.session_id is not None else MemoryScope.USER
        return self.engine.add(
            content, s.user_id, session_id=s.session_id, agent_id=s.agent_id, turn_id=turn_id,
            category=category, scope=scope, importance=importance, metadata=metadata, observed_at=observed_at,
        )

    def get_all(self) -> list[Memory]:
        """Every current memory of this user."""
        return self.engine.query(MemoryFilter(user_id=self.session.user_id))

    def clear(self) -> int:
        """Delete every memory of this user; return how many rows went."""
        return self.engine.clear(self.session.user_id)

    def stats(self) -> dict[str, Any]:
        """``{'total', 'current', 'superseded', 'categories': {...}, 'scopes': {...}}`` for this user."""
        return self.engine.stats(self.session.user_id)

    def _own(self, memory_id: str) -> Memory:
        memory = self.engine.get(memory_id)
        if memory is None or memory.user_id != self.session.user_id:
            raise MemoryNotFoundError(memory_id)
        return memory

    def history(self, memory_id: str) -> list[Memory]:
        """Every version of one of this user's facts, oldest first."""
        self._own(memory_id)
        return self.engine.get_history(memory_id)

    def supersede(self, memory_id: str, new_content: str) -> Memory:
        """Replace one of this user's facts with a new version."""
        self._own(memory_id)
        return self.engine.supersede(memory_id, new_content)

    def close(self) -> None:
        """Release the engine (the store stays on disk)."""
        self.engine.close()


class AsyncMemoryFacade:
    """``client.memory`` on an async client: the same methods as :class:`MemoryFacade`, awaitable.

    Example::

        client = with_memory(AsyncOpenAI(), user_id="alice")
        hits = await client.memory.search("python preferences")
    """

    def __init__(self, facade: MemoryFacade) -> None:
        self.sync = facade

    search = async_face(MemoryFacade.search)
    add = async_face(MemoryFacade.add)
    get_all = async_face(MemoryFacade.get_all)
    clear = async_face(MemoryFacade.clear)
    stats = async_face(MemoryFacade.stats)
    history = async_face(MemoryFacade.history)
    supersede = async_face(MemoryFacade.supersede)
    close = async_face(MemoryFacade.close)


class MemoryClient(_Proxy):
    """An OpenAI-compatible client with memory; everything but ``chat.completions.create`` passes through."""

    def __init__(self, client: Any, session: MemorySession, is_async: bool) -> None:
        super().__init__(client, session)
        self._is_async = is_async
        self.chat = _Chat(client.chat, session, is_async)
        facade = MemoryFacade(session)
        self.memory: MemoryFacade | AsyncMemoryFacade = AsyncMemoryFacade(facade) if is_async else facade

    def with_options(self, **options: Any) -> MemoryClient:
        """The client's ``with_options`` result, wrapped with the same memory."""
        return MemoryClient(self._target.with_options(**options), self._session, self._is_async)

    @property
    def unwrapped(self) -> Any:
        """The original client."""
        return self._target


def _is_async(client: Any) -> bool:
    create = client.chat.completions.create
    return inspect.iscoroutinefunction(create) or type(client).__name__.startswith("Async")


def with_memory(
    client: Any,
    user_id: str,
    session_id: str | None = None,
    agent_id: str | None = None,
    *,
    memory: HierarchicalMemory | MemoryEngine | None = None,
    config: MemoryConfig | None = None,
    db_path: str | Path | None = None,
    db_url: str | None = None,
    top_k: int = 5,
    token_budget: int = 400,
    min_score: float | None = None,
    inject: bool = True,
    extract: bool = True,
) -> Any:
    """Give an OpenAI-compatible client a persistent memory.

    Args:
        client: ``OpenAI``, ``AzureOpenAI``, ``AsyncOpenAI``, ``AsyncAzureOpenAI`` or any client
            with the same ``chat.completions.create``.
        user_id: whose memory this is; memories are always stored under it.
        session_id: the conversation; session-level memories stay in it.
        agent_id: the agent; agent-level memories stay with it (within the session).
        memory: an open store to use (shared with other wrappers and adapters).
        config: how to open a store when ``memory`` is not given.
        db_path: shortcut for ``MemoryConfig(db_path=...)``.
        db_url: shortcut for ``MemoryConfig(db_url=...)`` (``postgresql://…`` for a shared store).
        top_k: memories injected at most per call.
        token_budget: approximate token budget of the injected block.
        min_score: inject only memories at least this similar to the message (cosine).
        inject: retrieve and inject memories.
        extract: ask for, parse and store ``<memory>`` blocks.

    Returns:
        A wrapped client: ``chat.completions.create`` gains memory (sync, async, streaming),
        ``client.memory`` gives direct access, every other attribute passes through.

    Example::

        from openai import OpenAI
        from headroom_integrations import with_memory

        client = with_memory(OpenAI(), user_id="bob", session_id="morning-session")
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "I prefer Go for performance-critical code"}]
        )
    """
    create = getattr(getattr(getattr(client, "chat", None), "completions", None), "create", None)
    if not callable(create):
        raise InvalidInputError(
            "with_memory() needs an OpenAI-compatible client (one with chat.completions.create), "
            f"got {type(client).__name__}"
        )
    engine = engine_from(memory, config, db_path, db_url)
    session = MemorySession(
        engine, user_id, session_id, agent_id, top_k=top_k, token_budget=token_budget, min_score=min_score,
        inject=inject, extract=extract,
    )
    return MemoryClient(client, session, _is_async(client))
