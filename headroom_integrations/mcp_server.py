"""An MCP server over a memory store: ``headroom-memory mcp``.

Desktop assistants, IDEs and agent runtimes that speak the Model Context Protocol reach one
user's memories through six tools: ``add_memory``, ``search_memories``, ``list_memories``,
``memory_history``, ``supersede_memory`` and ``delete_memory``. Every result is structured
(id, content, category, scope, score, valid_from, is_current).

The user (and the session and agent, when given) come from the server's own configuration,
never from a tool argument: a model cannot read or write another user's memories through it.
A memory id of someone else (or of a session this server does not see) is "not found".

Needs the ``mcp`` extra (``pip install "headroom-integrations[mcp]"``, the MCP Python SDK 2).

Example::

    headroom-memory mcp --db memory.db --user alice              # stdio (what MCP clients launch)
    headroom-memory mcp --db memory.db --user alice --http 8765  # streamable HTTP on 127.0.0.1
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from typing_extensions import TypedDict  # pydantic (which builds the tool schemas) needs it on Python < 3.12

from headroom_integrations.errors import HeadroomError, InvalidInputError, MemoryNotFoundError
from headroom_integrations.memory import Memory, MemoryEngine, MemoryFilter, MemoryScope, SearchResult
from headroom_integrations.memory.validation import identifier
from headroom_integrations.memory.visibility import bucket_key, visible_keys

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

__all__ = ["TOOL_NAMES", "Deletion", "MemoryRecord", "MemoryTools", "build_server"]

TOOL_NAMES = ("add_memory", "search_memories", "list_memories", "memory_history", "supersede_memory", "delete_memory")

INSTRUCTIONS = (
    "Long-term memory of one user. Search it before answering questions about the user; add a "
    "memory when you learn a lasting preference, fact, goal, decision or insight; when a remembered "
    "fact changes, supersede it (its history is kept) instead of adding a contradicting one."
)


class Deletion(TypedDict):
    """What ``delete_memory`` did."""

    id: str
    deleted: bool


class MemoryRecord(TypedDict):
    """A memory as the tools return it (``score``: the search similarity, None outside searches;
    ``observed_at``: when the fact was stated, ISO 8601 UTC)."""

    id: str
    content: str
    category: str
    scope: str
    score: float | None
    valid_from: str | None
    is_current: bool
    observed_at: str


def _record(memory: Memory, score: float | None = None) -> MemoryRecord:
    valid_from: datetime | None = memory.valid_from or memory.created_at
    return MemoryRecord(
        id=memory.id, content=memory.content, category=memory.category.value, scope=memory.scope.value,
        score=score, valid_from=valid_from.isoformat() if valid_from else None, is_current=memory.is_current,
        observed_at=memory.observed_at.isoformat(),
    )


class MemoryTools:
    """The six tools, bound to one engine and one user's ids (plain methods: testable without MCP).

    Example:
        >>> from headroom_integrations.memory import MemoryConfig
        >>> tools = MemoryTools(MemoryEngine(MemoryConfig(db_path=":memory:")), "alice")
        >>> added = tools.add_memory("Prefers Go for services", category="preference")
        >>> [r["content"] for r in tools.search_memories("which language?")]
        ['Prefers Go for services']
        >>> tools.delete_memory(added["id"])["deleted"], tools.list_memories()
        (True, [])
    """

    def __init__(self, engine: MemoryEngine, user_id: str, session_id: str | None = None,
                 agent_id: str | None = None) -> None:
        self.engine = engine
        self.user_id: str = identifier(user_id, "user_id", required=True)  # type: ignore[assignment]
        self.session_id = identifier(session_id, "session_id")
        self.agent_id = identifier(agent_id, "agent_id")
        if self.agent_id is not None and self.session_id is None:
            raise InvalidInputError("an agent's memories live in a session: give session_id with agent_id")
        self._visible = set(visible_keys(self.user_id, self.session_id, self.agent_id))

    def _own(self, memory_id: str) -> Memory:
        """The memory if this server may see it; else "not found" (whoever else it belongs to)."""
        if not isinstance(memory_id, str):
            raise InvalidInputError(f"memory_id must be a string, got {type(memory_id).__name__}")
        memory = self.engine.get(memory_id)
        if memory is None or bucket_key(memory.user_id, memory.scope, memory.session_id, memory.agent_id,
                                        memory.turn_id) not in self._visible:
            raise MemoryNotFoundError(memory_id)
        return memory

    def add_memory(self, content: str, category: str = "fact", importance: float = 0.5,
                   scope: str = "user", observed_at: str | None = None) -> MemoryRecord:
        """Remember a short self-contained fact about the user (a repeat of a current memory is not
        stored twice). ``scope``: "user" (every conversation), "session" or "agent" (this server's
        session / agent, when it has one). ``observed_at``: when the user stated it, an ISO 8601
        date or time such as "2023-05-08" (default: now)."""
        wanted = MemoryScope.parse(scope)
        if wanted is MemoryScope.TURN:
            raise InvalidInputError("turn-scoped memories are not kept beyond their turn: use user or session")
        if wanted is not MemoryScope.USER and self.session_id is None:
            raise InvalidInputError(f"this server has no session: a {wanted.value}-scoped memory needs one")
        if wanted is MemoryScope.AGENT and self.agent_id is None:
            raise InvalidInputError("this server has no agent: an agent-scoped memory needs one")
        memory = self.engine.add(
            content, self.user_id, session_id=self.session_id, agent_id=self.agent_id, scope=wanted,
            category=category, importance=importance, metadata={"source": "mcp"}, observed_at=observed_at,
            dedupe=True,
        )
        return _record(memory)

    def search_memories(self, query: str, top_k: int = 5, category: str | None = None) -> list[MemoryRecord]:
        """The memories most relevant to ``query`` (hybrid vector + keyword search), best first."""
        hits: list[SearchResult] = self.engine.search(
            query, self.user_id, self.session_id, self.agent_id, top_k=top_k, categories=category,
        )
        return [_record(hit.memory, hit.score) for hit in hits]

    def list_memories(self, category: str | None = None, include_superseded: bool = False) -> list[MemoryRecord]:
        """Every memory this server sees, oldest first (with ``include_superseded``: older versions too)."""
        found = self.engine.query(MemoryFilter(user_id=self.user_id, categories=category,
                                               include_superseded=include_superseded))
        return [_record(m) for m in found
                if bucket_key(m.user_id, m.scope, m.session_id, m.agent_id, m.turn_id) in self._visible]

    def memory_history(self, memory_id: str) -> list[MemoryRecord]:
        """Every version of the fact a memory belongs to, oldest first."""
        self._own(memory_id)
        return [_record(m) for m in self.engine.get_history(memory_id)]

    def supersede_memory(self, memory_id: str, new_content: str, observed_at: str | None = None) -> MemoryRecord:
        """Replace a remembered fact that is no longer true; the old version stays in its history.
        ``observed_at``: when the user stated the new version (ISO 8601; default: now)."""
        self._own(memory_id)
        return _record(self.engine.supersede(memory_id, new_content, observed_at=observed_at))

    def delete_memory(self, memory_id: str) -> Deletion:
        """Forget one memory (older versions of its fact stay in its history)."""
        self._own(memory_id)
        return Deletion(id=memory_id, deleted=self.engine.delete(memory_id))


def build_server(tools: MemoryTools) -> MCPServer:
    """An MCP server (SDK 2 ``MCPServer``) exposing the tools.

    Raises:
        ImportError: the ``mcp`` package is not installed (the message says how to install it).
    """
    try:
        from mcp.server.mcpserver import MCPServer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError('the MCP server needs the mcp extra: pip install "headroom-integrations[mcp]"') from exc

    from mcp.server.mcpserver.exceptions import ToolError

    def reported(tool: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(tool)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return tool(*args, **kwargs)
            except HeadroomError as exc:  # bad input, not found, ...: the model reads why
                raise ToolError(str(exc)) from exc

        return call

    server = MCPServer("headroom-memory", instructions=INSTRUCTIONS)
    for name in TOOL_NAMES:
        server.add_tool(reported(getattr(tools, name)), name=name, structured_output=True)
    return server
