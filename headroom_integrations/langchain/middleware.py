"""HeadroomMemoryMiddleware: inline memory for agents built with ``langchain.agents.create_agent``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Unpack

from langchain.agents.middleware.types import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from headroom_integrations.adapter_core import AdapterCore, RecallOptions, Turn, stated_at
from headroom_integrations.inline import MEMORY_INSTRUCTION
from headroom_integrations.langchain.content import remember_content
from headroom_integrations.session import InlineMemory

__all__ = ["HeadroomMemoryMiddleware"]


def _thread_id() -> str | None:
    try:
        from langgraph.config import get_config

        return get_config().get("configurable", {}).get("thread_id")
    except (ImportError, RuntimeError):
        return None


def _append(content: Any, addition: str) -> Any:
    if isinstance(content, list):
        return [*content, {"type": "text", "text": addition}]
    return f"{content}\n\n{addition}" if content else addition


class HeadroomMemoryMiddleware(AgentMiddleware):  # type: ignore[type-arg]
    """Gives a LangChain agent a persistent memory, inline, with no extra model call.

    Around every model call it appends the relevant memories to the latest human message and the
    extraction instruction to the system prompt; afterwards it stores the ``<memory>`` block of
    the reply (stated at the time the latest human message carries, else when the model was
    called) and removes it from the AI message kept in the agent's state. The session is the
    LangGraph ``thread_id`` unless ``session_id`` is given, so a user-level fact learned in one
    thread is recalled in every other thread of that user.

    Args:
        user_id: whose memories these are.
        inject: add relevant memories to the latest user message.
        instruct: add the extraction instruction to the system message (once: not when it is there).
        **options: the store (``memory``, ``db_path``, ``db_url`` or ``config``), a fixed
            ``session_id`` (default: the run's thread_id), ``agent_id``, ``top_k``,
            ``token_budget``, ``min_score``: see :class:`~headroom_integrations.adapter_core.RecallOptions`.

    Example::

        middleware = HeadroomMemoryMiddleware(user_id="alice", db_path="memory.db")
        agent = create_agent(model, tools=[], middleware=[middleware])
        agent.invoke({"messages": [{"role": "user", "content": "I prefer Go"}]},
                     config={"configurable": {"thread_id": "t1"}})
    """

    def __init__(
        self, user_id: str, *, inject: bool = True, instruct: bool = True, **options: Unpack[RecallOptions]
    ) -> None:
        super().__init__()
        self.core = AdapterCore(user_id, inject=inject, instruct=instruct, **options)
        self.engine = self.core.engine

    def _memory(self) -> InlineMemory:
        return self.core.conversation(self.core.session_id or _thread_id())

    def _prepare(self, request: ModelRequest, memory: InlineMemory) -> tuple[ModelRequest, Turn]:
        messages = list(request.messages)
        stated = stated_at(messages)  # before the model call: the human message's time, else now
        position = next((i for i in range(len(messages) - 1, -1, -1) if isinstance(messages[i], HumanMessage)), None)
        handles: dict[str, str] = {}
        if position is not None:
            injection = self.core.recall(messages[position].text, memory, now=stated)
            if injection.text:
                human = messages[position]
                messages[position] = human.model_copy(update={"content": _append(human.content, injection.text)})
                handles = injection.handles
        system = request.system_message
        if self.core.needs_instruction(system.text if system is not None else ""):
            content = _append(system.content, MEMORY_INSTRUCTION) if system is not None else MEMORY_INSTRUCTION
            system = SystemMessage(content=content)
        return request.override(messages=messages, system_message=system), Turn(handles, stated)

    @staticmethod
    def _finish(response: ModelResponse, memory: InlineMemory, turn: Turn) -> ModelResponse:
        cleaned = []
        for message in response.result:
            if isinstance(message, AIMessage) and not cleaned:
                content = remember_content(memory, message.content, turn.handles, turn.observed_at)
                message = message.model_copy(update={"content": content})
            cleaned.append(message)
        return ModelResponse(result=cleaned, structured_response=response.structured_response)

    def wrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> ModelResponse:
        """Inject, call the model, then store and strip the block."""
        memory = self._memory()
        prepared, turn = self._prepare(request, memory)
        return self._finish(handler(prepared), memory, turn)

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]
    ) -> ModelResponse:
        """Async :meth:`wrap_model_call` (memory work runs in a worker thread)."""
        memory = self._memory()
        prepared, turn = await asyncio.to_thread(self._prepare, request, memory)
        response = await handler(prepared)
        return await asyncio.to_thread(self._finish, response, memory, turn)
