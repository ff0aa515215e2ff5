"""with_memory_llm: any LlamaIndex LLM, with inline memory around every call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Unpack

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import PrivateAttr, SerializeAsAny
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection

from headroom_integrations.adapter_core import AdapterCore, RecallOptions, Turn, engine_of, stated_at
from headroom_integrations.inline import MEMORY_INSTRUCTION, ExtractedMemory, Injection, StreamFilter, parse_reply
from headroom_integrations.llama_index.memory import append_text, message_text, query_of, strip_blocks, with_text
from headroom_integrations.memory import MemoryEngine

__all__ = ["HeadroomFunctionCallingLLM", "HeadroomLLM", "with_memory_llm"]


def _delta(piece: str | None, content: str | None, seen: str) -> str:
    """The new text of a stream chunk: its delta, or what its accumulated content added."""
    if piece is not None:
        return piece
    content = content or ""
    return content[len(seen) :] if content.startswith(seen) else ""


class _Cleaner:
    """One stream's filtering state, shared by the four streaming methods (sync/async, chat/completion):
    each chunk's text goes through a :class:`StreamFilter`; held text is released as a last chunk."""

    def __init__(self, text_of: Callable[[Any], str | None], rebuild: Callable[[Any, str, str], Any]) -> None:
        self.stream = StreamFilter()
        self.visible = ""
        self.last: Any = None
        self._text_of = text_of
        self._rebuild = rebuild

    def step(self, chunk: Any) -> Any:
        """The chunk with its delta and accumulated text cleaned."""
        shown = self.stream.feed(_delta(chunk.delta, self._text_of(chunk), self.stream.text))
        self.visible += shown
        self.last = chunk
        return self._rebuild(chunk, self.visible, shown)

    def tail(self) -> list[Any]:
        """A final chunk with text that was held back and turned out not to be a block (or none)."""
        tail = self.stream.finish()
        if not tail or self.last is None:
            return []
        self.visible += tail
        return [self._rebuild(self.last, self.visible, tail)]


class HeadroomLLM(LLM):
    """A LlamaIndex LLM that wraps another one with inline memory (build it with :func:`with_memory_llm`).

    Every call gets the memories relevant to the latest user message appended to that message
    (``inject``) and the extraction instruction appended to the system message, or a system
    message inserted (``instruct``). The ``<memory>`` block of the reply is stored for this
    user/session and removed from what is returned; streams are filtered in flight, so neither
    the deltas nor the accumulated ``message.content`` / ``text`` of any chunk ever show it.
    Memories of a stream are stored when it is consumed to the end.

    Completion calls (``complete``/``stream_complete``) get the instruction before the prompt
    and the memories after it. Metadata, tool calling and prompt settings are the inner LLM's.

    Example::

        llm = with_memory_llm(OpenAI(model="gpt-4o-mini"), user_id="alice", session_id="s1", db_path="memory.db")
        print(llm.chat([ChatMessage(role="user", content="I prefer Go for fast services")]).message.content)
    """

    llm: SerializeAsAny[LLM]
    user_id: str
    session_id: str | None = None
    agent_id: str | None = None
    inject: bool = True
    instruct: bool = True
    top_k: int = 5
    token_budget: int = 400
    min_score: float | None = None

    _core: AdapterCore = PrivateAttr()
    _last: tuple[str, Injection] | None = PrivateAttr(default=None)

    def __init__(self, **data: Any) -> None:
        engine = engine_of(data)
        inner = data.get("llm")
        if isinstance(inner, LLM):  # keep the inner LLM's prompt settings and callbacks
            for name in ("system_prompt", "messages_to_prompt", "completion_to_prompt", "output_parser",
                         "pydantic_program_mode", "callback_manager"):
                data.setdefault(name, getattr(inner, name))
        super().__init__(**data)
        self._core = AdapterCore.of(self, engine, inject=self.inject, instruct=self.instruct)

    @classmethod
    def class_name(cls) -> str:
        """Class name."""
        return "HeadroomLLM"

    @property
    def metadata(self) -> LLMMetadata:
        """The inner LLM's metadata."""
        return self.llm.metadata

    @property
    def engine(self) -> MemoryEngine:
        """The store memories are read from and written to."""
        return self._core.engine

    @property
    def _policy(self) -> AdapterCore:
        """The core with ``inject``/``instruct`` as the fields are now (they may change after construction)."""
        self._core.inject, self._core.instruct = self.inject, self.instruct
        return self._core

    # -- the memory side ------------------------------------------------------------------------

    def _recall(self, query: str) -> Injection:
        # an agent calls the model several times per user message: recall once per message
        if self._last is not None and self._last[0] == query:
            return self._last[1]
        injection = self._policy.recall(query)
        self._last = (query, injection)
        return injection

    def _prepare(self, messages: Sequence[ChatMessage]) -> tuple[list[ChatMessage], Turn]:
        out = list(messages)
        stated = stated_at(out)  # before the model call: the user message's time, else now
        handles: dict[str, str] = {}
        if self.inject:
            position = next((i for i in range(len(out) - 1, -1, -1) if out[i].role == MessageRole.USER), None)
            if position is not None:
                injection = self._recall(query_of(out[position], ()))
                if injection.text:
                    out[position] = append_text(out[position], injection.text)
                    handles = dict(injection.handles)
        if self._policy.needs_instruction("\n".join(message_text(m) for m in out if m.role == MessageRole.SYSTEM)):
            if out and out[0].role in (MessageRole.SYSTEM, MessageRole.DEVELOPER):
                out[0] = append_text(out[0], MEMORY_INSTRUCTION)
            else:
                out.insert(0, ChatMessage(role=MessageRole.SYSTEM, content=MEMORY_INSTRUCTION))
        return out, Turn(handles, stated)

    def _prepare_prompt(self, prompt: str) -> tuple[str, Turn]:
        parts, handles, stated = [prompt], {}, stated_at()
        if self.inject:
            injection = self._recall(prompt.strip())
            if injection.text:
                parts.append(injection.text)
                handles = dict(injection.handles)
        if self._policy.needs_instruction(prompt):
            parts.insert(0, MEMORY_INSTRUCTION)
        return "\n\n".join(parts), Turn(handles, stated)

    def _store(self, found: list[ExtractedMemory], turn: Turn) -> None:
        if found:
            self._core.memory.remember(found, turn.handles, turn.observed_at)
            self._last = None  # what is remembered changed: recall afresh

    def _finish_chat(self, response: ChatResponse, turn: Turn) -> ChatResponse:
        message, found = strip_blocks(response.message)
        if message is response.message:
            return response
        self._store(found, turn)
        return response.model_copy(update={"message": message})

    def _finish_completion(self, response: CompletionResponse, turn: Turn) -> CompletionResponse:
        parsed = parse_reply(response.text)
        if not parsed.blocks:
            return response
        self._store(parsed.memories, turn)
        return response.model_copy(update={"text": parsed.text})

    def _remember_stream(self, stream: StreamFilter, turn: Turn) -> None:
        self._store(parse_reply(stream.text).memories, turn)

    @staticmethod
    def _chat_chunk(chunk: ChatResponse, visible: str, shown: str) -> ChatResponse:
        return chunk.model_copy(update={"message": with_text(chunk.message, visible), "delta": shown})

    @staticmethod
    def _completion_chunk(chunk: CompletionResponse, visible: str, shown: str) -> CompletionResponse:
        return chunk.model_copy(update={"text": visible, "delta": shown})

    # -- chat -----------------------------------------------------------------------------------

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Chat with memories injected; the reply's block is stored and removed."""
        prepared, turn = self._prepare(messages)
        return self._finish_chat(self.llm.chat(prepared, **kwargs), turn)

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async :meth:`chat` (memory work runs in a worker thread)."""
        prepared, turn = await asyncio.to_thread(self._prepare, messages)
        response = await self.llm.achat(prepared, **kwargs)
        return await asyncio.to_thread(self._finish_chat, response, turn)

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Stream a chat; blocks are removed in flight and stored when the stream ends."""
        prepared, turn = self._prepare(messages)
        inner = self.llm.stream_chat(prepared, **kwargs)

        def gen() -> ChatResponseGen:
            cleaner = _Cleaner(lambda c: c.message.content, self._chat_chunk)
            for chunk in inner:
                yield cleaner.step(chunk)
            yield from cleaner.tail()
            self._remember_stream(cleaner.stream, turn)

        return gen()

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """Async :meth:`stream_chat`."""
        prepared, turn = await asyncio.to_thread(self._prepare, messages)
        inner = await self.llm.astream_chat(prepared, **kwargs)

        async def gen() -> ChatResponseAsyncGen:
            cleaner = _Cleaner(lambda c: c.message.content, self._chat_chunk)
            async for chunk in inner:
                yield cleaner.step(chunk)
            for tail in cleaner.tail():
                yield tail
            await asyncio.to_thread(self._remember_stream, cleaner.stream, turn)

        return gen()

    # -- completion -----------------------------------------------------------------------------

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Complete with the instruction and memories added; the block is stored and removed."""
        prepared, turn = self._prepare_prompt(prompt)
        return self._finish_completion(self.llm.complete(prepared, formatted=formatted, **kwargs), turn)

    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Async :meth:`complete`."""
        prepared, turn = await asyncio.to_thread(self._prepare_prompt, prompt)
        response = await self.llm.acomplete(prepared, formatted=formatted, **kwargs)
        return await asyncio.to_thread(self._finish_completion, response, turn)

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """Stream a completion; blocks are removed in flight and stored when the stream ends."""
        prepared, turn = self._prepare_prompt(prompt)
        inner = self.llm.stream_complete(prepared, formatted=formatted, **kwargs)

        def gen() -> CompletionResponseGen:
            cleaner = _Cleaner(lambda c: c.text, self._completion_chunk)
            for chunk in inner:
                yield cleaner.step(chunk)
            yield from cleaner.tail()
            self._remember_stream(cleaner.stream, turn)

        return gen()

    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """Async :meth:`stream_complete`."""
        prepared, turn = await asyncio.to_thread(self._prepare_prompt, prompt)
        inner = await self.llm.astream_complete(prepared, formatted=formatted, **kwargs)

        async def gen() -> CompletionResponseAsyncGen:
            cleaner = _Cleaner(lambda c: c.text, self._completion_chunk)
            async for chunk in inner:
                yield cleaner.step(chunk)
            for tail in cleaner.tail():
                yield tail
            await asyncio.to_thread(self._remember_stream, cleaner.stream, turn)

        return gen()


class HeadroomFunctionCallingLLM(HeadroomLLM, FunctionCallingLLM):
    """:class:`HeadroomLLM` over a function-calling LLM: tool calling is delegated to the inner LLM,
    so it works with ``FunctionAgent`` and ``predict_and_call`` (what :func:`with_memory_llm`
    returns for a ``FunctionCallingLLM``).

    Example::

        agent = FunctionAgent(tools=[...], llm=with_memory_llm(OpenAI(model="gpt-4o-mini"), "alice", "s1",
                                                               db_path="memory.db"))
    """

    @classmethod
    def class_name(cls) -> str:
        """Class name."""
        return "HeadroomFunctionCallingLLM"

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        inner: FunctionCallingLLM = self.llm  # type: ignore[assignment]
        return inner._prepare_chat_with_tools_compat(
            tools, user_msg=user_msg, chat_history=chat_history, verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls, tool_required=tool_required, **kwargs,
        )

    def _validate_chat_with_tools_response(
        self, response: ChatResponse, tools: Sequence[Any], allow_parallel_tool_calls: bool = False, **kwargs: Any
    ) -> ChatResponse:
        inner: FunctionCallingLLM = self.llm  # type: ignore[assignment]
        return inner._validate_chat_with_tools_response(
            response, tools, allow_parallel_tool_calls=allow_parallel_tool_calls, **kwargs
        )

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The inner LLM's tool calls of ``response``."""
        inner: FunctionCallingLLM = self.llm  # type: ignore[assignment]
        return inner.get_tool_calls_from_response(response, error_on_no_tool_call=error_on_no_tool_call, **kwargs)


def with_memory_llm(
    llm: LLM,
    user_id: str,
    session_id: str | None = None,
    *,
    inject: bool = True,
    instruct: bool = True,
    **options: Unpack[RecallOptions],
) -> HeadroomLLM:
    """Wrap any LlamaIndex LLM with inline memory for one user (and session).

    The result is an LLM (a :class:`HeadroomFunctionCallingLLM` when ``llm`` calls functions) that
    drops into chat engines, query engines and agents: see :class:`HeadroomLLM`.

    Args:
        llm: the LLM to wrap.
        user_id: whose memories these are.
        session_id: the conversation (session-level memories stay in it).
        inject: add relevant memories to the latest user message (turn off when a
            :class:`~headroom_integrations.llama_index.HeadroomMemory` already recalls them).
        instruct: add the extraction instruction to the system message.
        **options: the store (``memory``, ``db_path``, ``db_url`` or ``config``), ``agent_id``,
            ``top_k``, ``token_budget``, ``min_score``: see
            :class:`~headroom_integrations.adapter_core.RecallOptions`.

    Example::

        llm = with_memory_llm(OpenAI(model="gpt-4o-mini"), "alice", "s1", db_path="memory.db")
        chat_engine = SimpleChatEngine.from_defaults(llm=llm)
        for token in chat_engine.stream_chat("I prefer Go for fast services").response_gen:
            print(token, end="")      # never shows the <memory> block
    """
    cls = HeadroomFunctionCallingLLM if isinstance(llm, FunctionCallingLLM) else HeadroomLLM
    return cls(llm=llm, user_id=user_id, session_id=session_id, inject=inject, instruct=instruct, **options)
