"""Value types of the memory engine: categories, scopes, memories, filters and search hits."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from headroom_integrations.errors import InvalidInputError

__all__ = [
    "ChatRecord",
    "Memory",
    "MemoryCategory",
    "MemoryFilter",
    "MemoryScope",
    "SearchResult",
]


class _ParseableEnum(str, enum.Enum):
    """A string enum that parses its values case-insensitively with a helpful error."""

    @classmethod
    def parse(cls, value: Any) -> Any:
        """Return the member for ``value`` (a member or its name/value in any case).

        Raises:
            InvalidInputError: ``value`` names no member; the message lists the valid values.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            key = value.strip().lower()
            for member in cls:
                if member.value == key:
                    return member
        valid = ", ".join(member.value for member in cls)
        raise InvalidInputError(f"unknown {cls._label()} {value!r}; expected one of: {valid}")

    @classmethod
    def _label(cls) -> str:
        return cls.__name__.removeprefix("Memory").lower()

    def __str__(self) -> str:
        return self.value


class MemoryCategory(_ParseableEnum):
    """What kind of fact a memory holds.

    Example:
        >>> MemoryCategory.parse("Preference") is MemoryCategory.PREFERENCE
        True
    """

    PREFERENCE = "preference"
    FACT = "fact"
    CONTEXT = "context"
    ENTITY = "entity"
    DECISION = "decision"
    INSIGHT = "insight"


class MemoryScope(_ParseableEnum):
    """How widely a memory is visible, from broadest to narrowest.

    ``USER``: every session and agent of the user. ``SESSION``: that session (any agent).
    ``AGENT``: that session and agent. ``TURN``: that turn only.

    Example:
        >>> MemoryScope.derive(session_id="s1")
        <MemoryScope.SESSION: 'session'>
    """

    USER = "user"
    SESSION = "session"
    AGENT = "agent"
    TURN = "turn"

    @classmethod
    def derive(
        cls,
        session_id: str | None = None,
        agent_id: str | None = None,
        turn_id: str | None = None,
    ) -> MemoryScope:
        """The narrowest scope the given ids allow (turn, then agent, then session, else user)."""
        if turn_id is not None:
            return cls.TURN
        if agent_id is not None:
            return cls.AGENT
        if session_id is not None:
            return cls.SESSION
        return cls.USER


def utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime (naive values are taken to be UTC already)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


@dataclass(frozen=True)
class Memory:
    """One stored memory: a short fact plus where it is visible and when it was valid.

    A memory is *current* until it is superseded; superseding closes its validity window
    (``valid_to``) and links it to its successor (``superseded_by``), so the history of a fact
    is a chain sharing one ``chain_id``.

    Example:
        >>> m = Memory(id="1", content="Prefers Go", user_id="bob")
        >>> m.is_current, m.scope, m.category
        (True, <MemoryScope.USER: 'user'>, <MemoryCategory.FACT: 'fact'>)
    """

    id: str
    content: str
    user_id: str
    session_id: str | None = None
    agent_id: str | None = None
    turn_id: str | None = None
    scope: MemoryScope = MemoryScope.USER
    category: MemoryCategory = MemoryCategory.FACT
    importance: float = 0.5
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    updated_at: datetime | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    supersedes: str | None = None
    superseded_by: str | None = None
    chain_id: str | None = None

    @property
    def is_current(self) -> bool:
        """True while the memory has not been superseded."""
        return self.valid_to is None

    def is_valid_at(self, when: datetime) -> bool:
        """True if the memory was the valid version of its fact at ``when``."""
        when = utc(when)
        start = self.valid_from or self.created_at
        return start <= when and (self.valid_to is None or when < self.valid_to)


@dataclass(frozen=True)
class SearchResult:
    """A memory returned by a search, with how it matched.

    Attributes:
        memory: the memory itself.
        score: cosine similarity between the query and the memory (-1..1; higher is closer).
            ``min_score`` filters on it. Results are ordered by the fused rank, not by this alone.
        fused_score: the rank-fusion score used for ordering (vector and keyword ranks combined).
        vector_rank: 1-based rank among the vector candidates, or None if not among them.
        text_rank: 1-based rank among the keyword (BM25) candidates, or None.

    Example:
        >>> hit = SearchResult(memory=Memory(id="1", content="Prefers Go", user_id="bob"), score=0.8)
        >>> hit.content, hit.id
        ('Prefers Go', '1')
    """

    memory: Memory
    score: float
    fused_score: float = 0.0
    vector_rank: int | None = None
    text_rank: int | None = None

    @property
    def content(self) -> str:
        """The memory's text."""
        return self.memory.content

    @property
    def id(self) -> str:
        """The memory's id."""
        return self.memory.id


def _parse_many(enum_cls: type[_ParseableEnum], values: Iterable[Any] | None) -> tuple[Any, ...] | None:
    if values is None:
        return None
    if isinstance(values, (str, enum.Enum)):
        values = [values]
    return tuple(enum_cls.parse(v) for v in values)


@dataclass
class MemoryFilter:
    """Which memories :meth:`HierarchicalMemory.query` returns.

    Ids match exactly (``session_id="s1"`` means memories recorded in session ``s1``); ``None``
    means "any". By default only current versions are returned; ``valid_at`` selects the versions
    that were valid at a point in time instead.

    Example:
        >>> f = MemoryFilter(user_id="alice", categories=["fact"], include_superseded=False)
        >>> f.categories
        (<MemoryCategory.FACT: 'fact'>,)
    """

    user_id: str | None = None
    session_id: str | None = None
    agent_id: str | None = None
    turn_id: str | None = None
    categories: Iterable[MemoryCategory | str] | None = None
    scopes: Iterable[MemoryScope | str] | None = None
    include_superseded: bool = False
    valid_at: datetime | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    min_importance: float | None = None
    limit: int | None = None
    offset: int = 0

    def __post_init__(self) -> None:
        self.categories = _parse_many(MemoryCategory, self.categories)
        self.scopes = _parse_many(MemoryScope, self.scopes)
        if self.limit is not None and self.limit < 0:
            raise InvalidInputError(f"limit must be >= 0, got {self.limit}")
        if self.offset < 0:
            raise InvalidInputError(f"offset must be >= 0, got {self.offset}")


@dataclass(frozen=True)
class ChatRecord:
    """One logged chat message of a session (see :meth:`MemoryEngine.append_messages`).

    Attributes:
        role: who spoke ("user", "assistant", "system", "tool", or a framework's own name).
        content: the message text.
        payload: the framework's own serialisation of the message (JSON-compatible).
        created_at: when it was logged.

    Example:
        >>> ChatRecord(role="user", content="hi").payload
        {}
    """

    role: str
    content: str
    payload: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
