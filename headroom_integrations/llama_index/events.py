"""HeadroomMemoryEventHandler: store the memories any LlamaIndex LLM call writes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionStartEvent,
)

from headroom_integrations.adapter_core import AdapterCore, engine_of, stated_at
from headroom_integrations.inline import parse_reply
from headroom_integrations.memory import MemoryEngine
from headroom_integrations.session import InlineMemory

__all__ = ["HeadroomMemoryEventHandler"]

_MAX_OPEN_CALLS = 1024
"""Start times kept for calls whose end event has not come yet (the oldest are dropped)."""


def _reply_text(event: BaseEvent) -> str:
    if isinstance(event, LLMChatEndEvent):
        return (event.response.message.content or "") if event.response is not None else ""
    if isinstance(event, LLMCompletionEndEvent):
        return event.response.text or ""
    return ""


class HeadroomMemoryEventHandler(BaseEventHandler):
    """Stores the memories written in ``<memory>`` blocks of LLM replies, for one user/session.

    Registered on a dispatcher (the root one sees every LLM in the process), it reads the reply
    of each ``LLMChatEndEvent`` (also sent at the end of a stream, with the whole message) and
    ``LLMCompletionEndEvent``. It only observes: the prompt needs the extraction instruction and
    the reply keeps its block, so it suits pipelines that already strip blocks or never show
    replies; :func:`~headroom_integrations.llama_index.with_memory_llm` does all three. A memory
    seen twice (a chat model answering through ``complete`` sends both events) is stored once.
    Its scope is fixed, so in a process serving several users prefer ``with_memory_llm``.

    Attributes:
        user_id: whose memories these are.
        memory (MemoryEngine | HierarchicalMemory | None): an open store to share; or ``db_path``, ``db_url`` or
            ``config`` to open one.
        session_id: the conversation (session-level memories stay in it).
        agent_id: the agent.

    Example::

        from llama_index.core.instrumentation import get_dispatcher

        handler = HeadroomMemoryEventHandler(user_id="alice", db_path="memory.db", session_id="s1")
        get_dispatcher().add_event_handler(handler)
        llm.complete(MEMORY_INSTRUCTION + "\\n\\nI prefer Go for performance-critical code.")
    """

    user_id: str
    session_id: str | None = None
    agent_id: str | None = None

    _memory: InlineMemory = PrivateAttr()
    _started: dict[str | None, datetime] = PrivateAttr(default_factory=dict)  # span id -> when stated

    def __init__(self, **data: Any) -> None:
        engine = engine_of(data)
        super().__init__(**data)
        self._memory = AdapterCore.of(self, engine).memory

    @classmethod
    def class_name(cls) -> str:
        """Class name."""
        return "HeadroomMemoryEventHandler"

    @property
    def engine(self) -> MemoryEngine:
        """The store memories are written to."""
        return self._memory.engine

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        """Store the memories of a finished chat or completion, stated when the call started (the
        user message's time, else the start event's); other events are ignored."""
        if isinstance(event, (LLMChatStartEvent, LLMCompletionStartEvent)):
            messages = event.messages if isinstance(event, LLMChatStartEvent) else ()
            self._started[event.span_id] = stated_at(messages)
            while len(self._started) > _MAX_OPEN_CALLS:  # starts whose end never came
                self._started.pop(next(iter(self._started)))
            return
        if not isinstance(event, (LLMChatEndEvent, LLMCompletionEndEvent)):
            return
        started = self._started.pop(event.span_id, None)
        text = _reply_text(event)
        if "<" not in text:
            return
        found = parse_reply(text).memories
        if found:
            messages = event.messages if isinstance(event, LLMChatEndEvent) else ()
            self._memory.remember(found, observed_at=stated_at(messages, started))
