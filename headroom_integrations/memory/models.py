"""Value types of the memory engine: categories, scopes, memories, filters and search hits."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from headroom_integrations.errors import InvalidInputError
from headroom_integrations.memory.namespaces import namespace_labels

__all__ = [
    "ChatRecord",
    "as_count",
    "as_datetime",
    "as_number",
    "Memory",
    "MemoryCategory",
    "MemoryFilter",
    "MemoryScope",
    "SearchResult",
    "UserCounts",
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
    def parse_many(cls, values: Any) -> tuple[Any, ...] | None:
        """Members for one value or an iterable of values (None stays None; a string is one value).

        Raises:
            InvalidInputError: a value names no member, or ``values`` is neither a value nor an iterable.
        """
        if values is None:
            return None
        if isinstance(values, (str, enum.Enum)):
            values = [values]
        elif not isinstance(values, Iterable) or isinstance(values, (bytes, dict)):
            raise InvalidInputError(f"expected a {cls._label()} or a list of them, got {values!r}")
        return tuple(cls.parse(v) for v in values)

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


def as_datetime(value: Any, what: str) -> datetime | None:
    """A point in time from a ``datetime``, a ``date`` (its midnight, UTC) or an ISO 8601 string
    (``"2024-01-01"``, ``"2024-01-01T09:30:00Z"``); None stays None. Naive values are UTC.

    Example:
        >>> as_datetime("2024-01-01", "valid_at")
        datetime.datetime(2024, 1, 1, 0, 0, tzinfo=datetime.timezone.utc)

    Raises:
        InvalidInputError: anything else, a string that is not an ISO date, or a time that falls
            outside the years 1..9999 once expressed in UTC (``0001-01-01T00:00+05:00``).
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return _in_utc(value, what)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    if isinstance(value, str):
        text = value.strip()
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            return _in_utc(parsed, what)
    raise InvalidInputError(f"{what} must be a datetime, a date or an ISO 8601 string, got {value!r}")


def _in_utc(value: datetime, what: str) -> datetime:
    """``value`` in UTC, refusing a time UTC cannot express (before year 1 or after year 9999)."""
    try:
        return utc(value)
    except OverflowError:
        raise InvalidInputError(f"{what} is outside the years 1..9999 in UTC, got {value.isoformat()}") from None


def as_number(value: Any, what: str, low: float | None = None, high: float | None = None) -> float | None:
    """A finite real number (not a bool) within ``low..high``; None stays None.

    Example:
        >>> as_number(0.5, "min_score", -1, 1)
        0.5

    Raises:
        InvalidInputError: not a number, NaN or infinite, or out of range.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInputError(f"{what} must be a finite number, got {value!r}")
    if (low is not None and number < low) or (high is not None and number > high):
        bounds = f"within {low:g}..{high:g}" if low is not None and high is not None else (
            f">= {low:g}" if low is not None else f"<= {high:g}")
        raise InvalidInputError(f"{what} must be {bounds}, got {value!r}")
    return number


def as_count(value: Any, what: str, minimum: int = 0) -> int:
    """An ``int`` (not a bool) of at least ``minimum``.

    Raises:
        InvalidInputError: anything else.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class Memory:
    """One stored memory: a short fact plus where it is visible and when it was valid.

    A memory is *current* until it is superseded; superseding closes its validity window
    (``valid_to``) and links it to its successor (``superseded_by``), so the history of a fact
    is a chain sharing one ``chain_id``.

    ``observed_at`` is when the fact was stated (the conversation's time, an event time given to
    :meth:`MemoryEngine.add`); it defaults to the time the memory was stored (``created_at``).

    A memory stored as a key-value item (:meth:`MemoryEngine.put_item`) also has a ``namespace``
    and a ``key`` (shared by every version), may expire (``expires_at``) and may be stored for
    lookup only (``searchable=False``: never embedded, never found by a search).

    Example:
        >>> m = Memory(id="1", content="Prefers Go", user_id="bob")
        >>> m.is_current, m.scope, m.category, m.observed_at == m.created_at
        (True, <MemoryScope.USER: 'user'>, <MemoryCategory.FACT: 'fact'>, True)
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
    namespace: tuple[str, ...] | None = None
    key: str | None = None
    expires_at: datetime | None = None
    searchable: bool = True
    observed_at: datetime = None  # type: ignore[assignment]  # None: the same as created_at

    def __post_init__(self) -> None:
        if self.observed_at is None:
            object.__setattr__(self, "observed_at", self.created_at)

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
        fused_score: the score used for ordering: ``vector_part + keyword_part + context_part``,
            re-weighted by importance and recency when the config asks for it, plus
            ``common_term_part + time_part``.
        vector_rank: 1-based rank among the vector candidates, or None if not among them.
        text_rank: 1-based rank among the keyword (BM25) candidates, or None.
        keyword_score: normalised BM25 under the query's terms (about 1 when the memory holds every
            term, 0 when it holds none).
        vector_part: the cosine's share of the fused score (``vector_weight`` of the two weights).
        keyword_part: the keyword score's share of the fused score (``text_weight`` of the two).
        context_part: what a more relevant neighbour (a memory stored right next to this one) added.
        common_term_part: what holding the query's too-common terms added (``common_term_weight``).
        time_part: what being stated within the time the query names added (``time_weight``).
        diversity_part: what the diversity step took off when the hit was picked (0 or less:
            ``diversity_weight`` times its highest similarity to a better result); results are in
            the order ``fused_score + diversity_part`` picked them.

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
    keyword_score: float = 0.0
    vector_part: float = 0.0
    keyword_part: float = 0.0
    context_part: float = 0.0
    common_term_part: float = 0.0
    time_part: float = 0.0
    diversity_part: float = 0.0

    @property
    def content(self) -> str:
        """The memory's text."""
        return self.memory.content

    @property
    def id(self) -> str:
        """The memory's id."""
        return self.memory.id


@dataclass(frozen=True)
class UserCounts:
    """How many memories one user has: every version (``total``) and the current ones.

    Example:
        >>> UserCounts("alice", total=3, current=2).superseded
        1
    """

    user_id: str
    total: int
    current: int

    @property
    def superseded(self) -> int:
        """Versions that are no longer current."""
        return self.total - self.current


@dataclass
class MemoryFilter:
    """Which memories :meth:`HierarchicalMemory.query` returns.

    Ids match exactly (``session_id="s1"`` means memories recorded in session ``s1``); ``None``
    means "any". By default only current versions are returned; ``valid_at`` selects the versions
    that were valid at a point in time instead.

    Key-value items (:meth:`MemoryEngine.put_item`): ``namespace`` matches exactly,
    ``namespace_prefix`` matches every namespace starting with these labels (``()``: every item),
    ``key`` an item's key; ``live_at`` leaves out items expired by then, ``expired_at`` keeps only those.
    ``observed_after`` / ``observed_before`` bound when the facts were stated (``observed_at``:
    at or after, strictly before), as ``created_after`` / ``created_before`` bound when they were stored.
    Results come oldest first (by ``created_at``), or with ``newest_first`` latest version first
    (by ``valid_from``); ``limit`` and ``offset`` page through them.

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
    observed_after: datetime | None = None
    observed_before: datetime | None = None
    min_importance: float | None = None
    namespace: Sequence[str] | None = None
    namespace_prefix: Sequence[str] | None = None
    key: str | None = None
    live_at: datetime | None = None
    expired_at: datetime | None = None
    newest_first: bool = False
    limit: int | None = None
    offset: int = 0

    def __post_init__(self) -> None:
        for name in ("user_id", "session_id", "agent_id", "turn_id"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InvalidInputError(f"{name} must be a string or None, got {value!r}")
        self.categories = MemoryCategory.parse_many(self.categories)
        self.scopes = MemoryScope.parse_many(self.scopes)
        if not isinstance(self.include_superseded, bool):
            raise InvalidInputError(f"include_superseded must be True or False, got {self.include_superseded!r}")
        self.valid_at = as_datetime(self.valid_at, "valid_at")
        self.created_after = as_datetime(self.created_after, "created_after")
        self.created_before = as_datetime(self.created_before, "created_before")
        self.observed_after = as_datetime(self.observed_after, "observed_after")
        self.observed_before = as_datetime(self.observed_before, "observed_before")
        self.min_importance = as_number(self.min_importance, "min_importance")
        if self.namespace is not None:
            self.namespace = namespace_labels(self.namespace)
        if self.namespace_prefix is not None:
            self.namespace_prefix = namespace_labels(self.namespace_prefix, "namespace_prefix", allow_empty=True)
        if self.key is not None and not isinstance(self.key, str):
            raise InvalidInputError(f"key must be a string or None, got {self.key!r}")
        if not isinstance(self.newest_first, bool):
            raise InvalidInputError(f"newest_first must be True or False, got {self.newest_first!r}")
        self.live_at = as_datetime(self.live_at, "live_at")
        self.expired_at = as_datetime(self.expired_at, "expired_at")
        if self.limit is not None:
            as_count(self.limit, "limit")
        as_count(self.offset, "offset")


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
