"""HeadroomMemoryMiddleware: inline memory for agents built with ``langchain.agents.create_agent``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from langchain.agents.middleware.types import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from headroom_integrations.inline import MEMORY_INSTRUCTION, InlineMemory, engine_from
from headroom_integrations.memory import HierarchicalMemory, MemoryConfig, MemoryEngine

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
    the reply and removes it from the AI message kept in the agent's state. The session is the
    LangGraph ``thread_id`` unless ``session_id`` is given, so a user-level fact learned in one
    thread is recalled in every other thread of that user.

    Args:
        user_id: whose memories these are.
        memory: an open store to share; or ``db_path``, ``db_url`` or ``config`` to open one.
        session_id: fixed session id (default: the run's thread_id).
        agent_id: the agent, for agent-level memories.
        top_k: memories injected at most.
        token_budget: approximate tokens of injected memories.

    Example::

        middleware = HeadroomMemoryMiddleware(user_id="alice", db_path="memory.db")
        agent = create_agent(model, tools=[], middleware=[middleware])
        agent.invoke({"messages": [{"role": "user", "content": "I prefer Go"}]},
                     config={"configurable": {"thread_id": "t1"}})
    """

    def __init__(
        self,
        user_id: str,
        *,
        memory: HierarchicalMemory | MemoryEngine | None = None,
        db_path: str | Path | None = None,
        db_url: str | None = None,
        config: MemoryConfig | None = None,
        session_id: str | None = None,
        agent_id: str | None = None,
        top_k: int = 5,
        token_budget: int = 400,
    ) -> None:
        super().__init__()
        self.engine = engine_from(memory, config, db_path, db_url)
        self.user_id = user_id
        self.session_id = session_id
        self.agent_id = agent_id
        self.top_k = top_k
        self.token_budget = token_budget
        InlineMemory(self.engine, user_id)  # validates user_id now rather than at the first call

    def _memory(self) -> InlineMemory:
        return InlineMemory(
            self.engine, self.user_id, self.session_id or _thread_id(), self.agent_id,
            top_k=self.top_k, token_budget=self.token_budget,
        )

    def _prepare(self, request: ModelRequest, memory: InlineMemory) -> tuple[ModelRequest, dict[str, str]]:
        messages = list(request.messages)
        position = next((i for i in range(len(messages) - 1, -1, -1) if isinstance(messages[i], HumanMessage)), None)
        handles: dict[str, str] = {}
        if position is not None:
            injection = memory.recall(messages[position].text)
            if injection.text:
                human = messages[position]
                messages[position] = human.model_copy(update={"content": _append(human.content, injection.text)})
                handles = injection.handles
        system = request.system_message
        content = _append(system.content, MEMORY_INSTRUCTION) if system is not None else MEMORY_INSTRUCTION
        return request.override(messages=messages, system_message=SystemMessage(content=content)), handles

    @staticmethod
    def _finish(response: ModelResponse, memory: InlineMemory, handles: dict[str, str]) -> ModelResponse:
        cleaned = []
        for message in response.result:
            if isinstance(message, AIMessage) and isinstance(message.content, str):
                text = memory.remember_reply(message.content, handles) if not cleaned else message.content
                message = message.model_copy(update={"content": text})
            cleaned.append(message)
        return ModelResponse(result=cleaned, structured_response=response.structured_response)

    def wrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> ModelResponse:
        """Inject, call the model, then store and strip the block."""
        memory = self._memory()
        prepared, handles = self._prepare(request, memory)
        return self._finish(handler(prepared), memory, handles)

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]
    ) -> ModelResponse:
        """Async :meth:`wrap_model_call` (memory work runs in a worker thread)."""
        memory = self._memory()
        prepared, handles = await asyncio.to_thread(self._prepare, request, memory)
        response = await handler(prepared)
        return await asyncio.to_thread(self._finish, response, memory, handles)
