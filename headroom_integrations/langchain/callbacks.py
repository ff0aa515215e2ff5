"""HeadroomMemoryCallbackHandler: store the memories a LangChain model writes, plus its two companions.

A callback can observe a run but not change its prompt or output, so a chain that wants inline
memory needs three pieces, all sharing one handler::

    handler = HeadroomMemoryCallbackHandler(user_id="alice", db_path="memory.db")
    chain = handler.injector() | prompt | model.with_config(callbacks=[handler]) | handler.stripper()

* :meth:`HeadroomMemoryCallbackHandler.injector` fills the prompt variables ``memories`` (the
  relevant memories) and ``memory_instruction`` (the extraction instruction);
* the handler's ``on_llm_end`` parses the ``<memory>`` block of the generation and stores it
  (stated at the time the latest human message carries, else when the model call started);
* :meth:`HeadroomMemoryCallbackHandler.stripper` removes the block from what the user sees, also
  when streaming.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import datetime
from typing import Any, Unpack
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import LLMResult
from langchain_core.runnables import Runnable, RunnableGenerator, RunnableLambda

from headroom_integrations._async import async_face
from headroom_integrations.adapter_core import AdapterCore, RecallOptions, stated_at
from headroom_integrations.inline import MEMORY_INSTRUCTION, StreamFilter, parse_reply
from headroom_integrations.langchain.content import feed_content, strip_content

__all__ = ["AsyncHeadroomMemoryCallbackHandler", "HeadroomMemoryCallbackHandler"]

NO_MEMORIES = "(nothing remembered yet)"


def _generation_text(response: LLMResult) -> str:
    if not response.generations or not response.generations[0]:
        return ""
    generation = response.generations[0][0]
    message = getattr(generation, "message", None)
    if isinstance(message, BaseMessage) and isinstance(message.content, str) and message.content:
        return message.content
    return generation.text or ""


def _query_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseMessage):
        return value.text
    if isinstance(value, list) and value and isinstance(value[-1], BaseMessage):
        return value[-1].text
    return "" if value is None else str(value)


class HeadroomMemoryCallbackHandler(BaseCallbackHandler):
    """Stores the memories a model writes in its ``<memory>`` block (chat and completion models,
    streamed or not) for one user/session. See the module docstring for the whole chain.

    Args:
        user_id: whose memories these are.
        **options: the store (``memory``, ``db_path``, ``db_url`` or ``config``), ``session_id``,
            ``agent_id``, ``top_k``, ``token_budget``, ``min_score``: see
            :class:`~headroom_integrations.adapter_core.RecallOptions`.

    Example::

        handler = HeadroomMemoryCallbackHandler(user_id="alice", db_path="memory.db", session_id="s1")
        chain = handler.injector() | prompt | model | handler.stripper()
        chain.invoke({"question": "I prefer Go"}, config={"callbacks": [handler]})
    """

    raise_error = False

    def __init__(self, user_id: str, **options: Unpack[RecallOptions]) -> None:
        self.core = AdapterCore(user_id, **options)
        self.memory = self.core.memory
        self.handles: dict[str, str] = {}  # handles of the latest injection, for "supersedes"
        self._started: dict[Any, datetime] = {}  # run id -> when its facts were stated

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], *, run_id: UUID, **kwargs: Any
    ) -> None:
        """Note when the run's facts are stated: the latest human message's time, else now."""
        self._started[run_id] = stated_at(messages[0] if messages else [])

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID, **kwargs: Any) -> None:
        """Note when the run's facts are stated (a completion model: now)."""
        self._started[run_id] = stated_at()

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        """Parse the block of the first generation and store its memories, stated when the run started."""
        observed = self._started.pop(kwargs.get("run_id"), None)
        self.memory.remember(parse_reply(_generation_text(response)).memories, self.handles, observed)

    def on_llm_error(self, error: BaseException, **kwargs: Any) -> None:
        """Forget a failed run's start time."""
        self._started.pop(kwargs.get("run_id"), None)

    # -- companions -------------------------------------------------------------------------------

    def recall(self, inputs: Mapping[str, Any], query_key: str = "question") -> dict[str, Any]:
        """``inputs`` plus ``memories`` and ``memory_instruction`` (what :meth:`injector` does)."""
        injection = self.memory.recall(_query_text(inputs.get(query_key)))
        self.handles = dict(injection.handles)
        return {**inputs, "memories": injection.text or NO_MEMORIES, "memory_instruction": MEMORY_INSTRUCTION}

    def injector(self, query_key: str = "question") -> Runnable[dict[str, Any], dict[str, Any]]:
        """A Runnable that adds ``memories`` and ``memory_instruction`` to a dict of prompt inputs."""

        async def arecall(inputs: dict[str, Any]) -> dict[str, Any]:
            return await asyncio.to_thread(self.recall, inputs, query_key)

        return RunnableLambda(
            lambda inputs: self.recall(inputs, query_key), afunc=arecall, name="HeadroomMemoryInjector"
        )

    @staticmethod
    def stripper() -> Runnable[Any, Any]:
        """A Runnable that removes ``<memory>`` blocks from model output (messages, chunks or text),
        in flight when streaming."""
        return RunnableGenerator(_strip, _astrip, name="HeadroomMemoryStripper")


def _clean_one(item: Any, stream: StreamFilter) -> Any:
    if isinstance(item, AIMessageChunk):
        return item.model_copy(update={"content": feed_content(stream, item.content)})
    if isinstance(item, AIMessage):
        return item.model_copy(update={"content": strip_content(item.content)})
    if isinstance(item, str):
        return stream.feed(item)
    return item


def _tail(stream: StreamFilter, last: Any) -> Any:
    tail = stream.finish()
    if not tail:
        return None
    return AIMessageChunk(content=tail) if isinstance(last, AIMessageChunk) else tail if isinstance(last, str) else None


def _strip(chunks: Iterator[Any]) -> Iterator[Any]:
    stream, last = StreamFilter(), None
    for item in chunks:
        last = item
        yield _clean_one(item, stream)
    tail = _tail(stream, last)
    if tail is not None:
        yield tail


async def _astrip(chunks: AsyncIterator[Any]) -> AsyncIterator[Any]:
    stream, last = StreamFilter(), None
    async for item in chunks:
        last = item
        yield _clean_one(item, stream)
    tail = _tail(stream, last)
    if tail is not None:
        yield tail


class AsyncHeadroomMemoryCallbackHandler(AsyncCallbackHandler):
    """The async twin of :class:`HeadroomMemoryCallbackHandler` (storage runs in a worker thread).

    Example::

        handler = AsyncHeadroomMemoryCallbackHandler(user_id="alice", db_path="memory.db")
        await (handler.sync.injector() | prompt | model | handler.sync.stripper()).ainvoke(
            {"question": "I prefer Go"}, config={"callbacks": [handler]})
    """

    def __init__(self, user_id: str, **options: Any) -> None:
        self.sync = HeadroomMemoryCallbackHandler(user_id, **options)

    on_chat_model_start = async_face(HeadroomMemoryCallbackHandler.on_chat_model_start)
    on_llm_start = async_face(HeadroomMemoryCallbackHandler.on_llm_start)
    on_llm_end = async_face(HeadroomMemoryCallbackHandler.on_llm_end)
    on_llm_error = async_face(HeadroomMemoryCallbackHandler.on_llm_error)
