"""The memory side of one conversation: recall memories for a message, remember what a reply's
``<memory>`` blocks hold.

Every adapter talks to the engine through :class:`InlineMemory`; the protocol it speaks (the
instruction, the injected block, the reply blocks) is :mod:`headroom_integrations.inline`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime

from headroom_integrations.blocks import ExtractedMemory, parse_parts, parse_reply
from headroom_integrations.errors import HeadroomError, MemoryAlreadySupersededError, MemoryNotFoundError
from headroom_integrations.inline import Injection, format_memories
from headroom_integrations.memory.core import MemoryEngine
from headroom_integrations.memory.models import Memory, MemoryScope, SearchResult, as_count, as_number
from headroom_integrations.memory.validation import identifier

__all__ = ["InlineMemory"]

logger = logging.getLogger(__name__)


class InlineMemory:
    """One conversation's memory: recall memories for a message, remember what a reply's blocks hold.

    Shared by every adapter: it knows the scope ids (user, session, agent) and turns the protocol
    into engine calls. Blocking; async adapters run it in a worker thread.

    Example::

        memory = InlineMemory(engine, user_id="bob", session_id="s1")
        injection = memory.recall("What language for my new service?")    # .text, .handles
        visible = memory.remember_reply(model_reply, injection.handles)    # block removed, memories stored
    """

    def __init__(
        self,
        engine: MemoryEngine,
        user_id: str,
        session_id: str | None = None,
        agent_id: str | None = None,
        *,
        top_k: int = 5,
        token_budget: int = 400,
        min_score: float | None = None,
    ) -> None:
        self.engine = engine
        self.user_id: str = identifier(user_id, "user_id", required=True)  # type: ignore[assignment]
        self.session_id = identifier(session_id, "session_id")
        self.agent_id = identifier(agent_id, "agent_id")
        self.top_k = as_count(top_k, "top_k", minimum=1)
        self.token_budget = as_count(token_budget, "token_budget", minimum=1)
        self.min_score = as_number(min_score, "min_score", -1.0, 1.0)

    def retrieve(self, query: str, now: datetime | None = None) -> list[SearchResult]:
        """Memories relevant to ``query`` that these ids may see (a time the query names, such as
        "last week", read against ``now``: by default the current time)."""
        return self.engine.search(
            query, user_id=self.user_id, session_id=self.session_id, agent_id=self.agent_id,
            top_k=self.top_k, min_score=self.min_score, now=now,
        )

    def recall(self, query: str, now: datetime | None = None) -> Injection:
        """The injection block for ``query`` (empty for an empty query; a failure is logged, not raised)."""
        try:
            if not query.strip():
                return Injection()
            return format_memories(self.retrieve(query, now), self.token_budget)
        except Exception as exc:  # never let the memory layer break the conversation
            logger.error("memory retrieval failed, going on without memories: %s", exc, exc_info=True)
            return Injection()

    def scope_for(self, wanted: MemoryScope) -> MemoryScope | None:
        """The scope a block's memory can really have with these ids (None: not kept, turn scope)."""
        if wanted is MemoryScope.TURN:
            return None
        if wanted is MemoryScope.AGENT and self.agent_id is None:
            wanted = MemoryScope.SESSION
        if wanted is MemoryScope.SESSION and self.session_id is None:
            wanted = MemoryScope.USER
        return wanted

    def remember(
        self, found: Iterable[ExtractedMemory], handles: Mapping[str, str] | None = None,
        observed_at: datetime | None = None,
    ) -> list[Memory]:
        """Store extracted memories under these ids (never another user's).

        A memory naming an injected handle in ``supersedes`` replaces that memory; a memory that
        repeats a current one in the same scope is not stored twice. ``observed_at`` is when they
        were stated (the turn's time, see :func:`~headroom_integrations.adapter_core.stated_at`;
        default: now). Rows are committed before this returns and embedded in the background.
        Failures are logged, never raised.
        """
        handles = handles or {}
        stored: list[Memory] = []
        for item in found:
            scope = self.scope_for(item.scope)
            if scope is None:
                logger.debug("turn-scoped memory not kept beyond its turn: %s", item.content)
                continue
            try:
                target = handles.get(item.supersedes or "")
                if target is not None:
                    try:
                        stored.append(self.engine.supersede(
                            target, item.content, category=item.category, importance=item.importance,
                            observed_at=observed_at, defer_embedding=True,
                        ))
                        continue
                    except (MemoryAlreadySupersededError, MemoryNotFoundError) as exc:
                        logger.info("cannot supersede %s (%s); storing as a new memory", item.supersedes, exc)
                elif item.supersedes:
                    logger.warning("memory names unknown handle %r in 'supersedes'; stored as new", item.supersedes)
                stored.append(self.engine.add(
                    item.content, self.user_id, session_id=self.session_id, agent_id=self.agent_id,
                    category=item.category, scope=scope, importance=item.importance,
                    metadata={"source": "inline"}, observed_at=observed_at, dedupe=True, defer_embedding=True,
                ))
            except HeadroomError as exc:
                logger.error("could not store memory %r: %s", item.content, exc)
        return stored

    def remember_reply(
        self, text: str, handles: Mapping[str, str] | None = None, observed_at: datetime | None = None
    ) -> str:
        """Parse a whole reply, store its memories (stated at ``observed_at``, default now) and
        return it without blocks."""
        parsed = parse_reply(text)
        self.remember(parsed.memories, handles, observed_at)
        return parsed.text

    def remember_parts(
        self, parts: list[str], handles: Mapping[str, str] | None = None, observed_at: datetime | None = None
    ) -> list[str]:
        """:meth:`remember_reply` for a reply in several text parts (a message's text blocks):
        each part returned without blocks, in its place."""
        shown, found = parse_parts(parts)
        self.remember(found, handles, observed_at)
        return shown
