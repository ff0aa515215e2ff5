"""What every adapter shares: which store it uses, whose memories they are, and how memories and
the extraction instruction reach the prompt.

An adapter builds one :class:`AdapterCore` from its constructor's keywords (``memory=`` /
``db_path=`` / ``db_url=`` / ``config=``, the scope ids, ``top_k``, ``token_budget``, ``inject``,
``instruct``) and asks it for the conversation service (:class:`~headroom_integrations.session.InlineMemory`),
the memories to inject and the system text with the instruction. The policy is the same
everywhere: memories are injected only when ``inject`` is on and something relevant was found;
the instruction is added only when ``instruct`` is on and the system text does not hold it yet.

Memories extracted from a reply were stated in that turn: :func:`stated_at` is the time of the
user's message when the framework message carries one (see :func:`message_time`), else the time
the request was made; an adapter takes it before calling the model and stores the reply's
memories with it (:class:`Turn`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypedDict, Unpack

from headroom_integrations.errors import InvalidInputError
from headroom_integrations.inline import MEMORY_INSTRUCTION, Injection
from headroom_integrations.memory.config import MemoryConfig
from headroom_integrations.memory.core import HierarchicalMemory, MemoryEngine
from headroom_integrations.memory.models import as_datetime
from headroom_integrations.session import InlineMemory

__all__ = [
    "STORE_OPTIONS",
    "TIME_KEYS",
    "AdapterCore",
    "RecallOptions",
    "StoreOptions",
    "Turn",
    "engine_from",
    "engine_of",
    "message_time",
    "stated_at",
]


STORE_OPTIONS = ("memory", "config", "db_path", "db_url")
"""The keywords naming an adapter's store (at most one of them; none: the default file)."""


class StoreOptions(TypedDict, total=False):
    """Which store an adapter uses: an open one (``memory``), or one to open from a full
    ``config``, a SQLite file (``db_path``) or a database URL (``db_url``)."""

    memory: HierarchicalMemory | MemoryEngine | None
    config: MemoryConfig | None
    db_path: str | Path | None
    db_url: str | None


class RecallOptions(StoreOptions, total=False):
    """The store, the scope ids besides the user, and how many memories are recalled.

    ``session_id``: the conversation (session-level memories stay in it); ``agent_id``: the
    agent, for agent-level memories; ``top_k``: memories recalled at most (5);
    ``token_budget``: approximate tokens of recalled memories (400); ``min_score``: recall
    only memories at least this similar to the message (cosine; default none).
    """

    session_id: str | None
    agent_id: str | None
    top_k: int
    token_budget: int
    min_score: float | None


def engine_of(options: dict[str, Any]) -> MemoryEngine:
    """The engine the store options among ``options`` name; they are taken out of the dict (an
    adapter passes the rest on to its own fields).

    Example:
        >>> fields = {"db_path": ":memory:", "k": 3}
        >>> isinstance(engine_of(fields), MemoryEngine), fields
        (True, {'k': 3})
    """
    return engine_from(**{name: options.pop(name) for name in STORE_OPTIONS if name in options})


def engine_from(
    memory: HierarchicalMemory | MemoryEngine | None = None,
    config: MemoryConfig | None = None,
    db_path: str | Path | None = None,
    db_url: str | None = None,
) -> MemoryEngine:
    """The engine an adapter should use: the given store, or one opened from ``config``, ``db_path``
    (a SQLite file) or ``db_url`` (``postgresql://…`` or ``sqlite:///…``).

    Raises:
        InvalidInputError: both a store and a way to open one were given, or ``memory`` is not a store.
    """
    options = (("config", config), ("db_path", db_path), ("db_url", db_url))
    given = [name for name, value in options if value is not None]
    if memory is not None and given:
        raise InvalidInputError(f"pass either memory= or {'/'.join(given)}=, not both")
    if len(given) > 1:
        raise InvalidInputError(f"pass one of config=, db_path= and db_url=, not {' and '.join(given)}")
    if isinstance(memory, HierarchicalMemory):
        return memory.sync
    if isinstance(memory, MemoryEngine):
        return memory
    if memory is not None:
        raise InvalidInputError(f"memory must be a HierarchicalMemory or MemoryEngine, got {type(memory).__name__}")
    if config is not None:
        return MemoryEngine(config)
    if db_url is not None:
        return MemoryEngine(MemoryConfig(db_url=db_url))
    return MemoryEngine(MemoryConfig(db_path=db_path) if db_path is not None else MemoryConfig())


TIME_KEYS = ("observed_at", "timestamp", "created_at")
"""The keys of a message's ``additional_kwargs`` (LangChain, LlamaIndex) or ``response_metadata``
(LangChain) that may say when it was written, first found first."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def message_time(message: Any) -> datetime | None:
    """When a framework message says it was written, or None.

    Neither LangChain's ``BaseMessage`` nor LlamaIndex's ``ChatMessage`` has a time field, so an
    application that knows it (a chat log, a LoCoMo session date) puts it under one of
    :data:`TIME_KEYS` in the message's ``additional_kwargs`` (or a LangChain message's
    ``response_metadata``): a datetime (naive means UTC), a date or an ISO 8601 string. Anything
    else there is ignored.

    Example:
        >>> from types import SimpleNamespace
        >>> message_time(SimpleNamespace(additional_kwargs={"timestamp": "2023-05-08T13:56:00Z"}))
        datetime.datetime(2023, 5, 8, 13, 56, tzinfo=datetime.timezone.utc)
        >>> message_time({"role": "user", "content": "hi"}) is None
        True
    """
    for container in ("additional_kwargs", "response_metadata"):
        extra = message.get(container) if isinstance(message, Mapping) else getattr(message, container, None)
        if not isinstance(extra, Mapping):
            continue
        for key in TIME_KEYS:
            value = extra.get(key)
            if value is None:
                continue
            try:
                return as_datetime(value, key)
            except InvalidInputError:
                continue
    return None


def _is_user(message: Any) -> bool:
    role = message.get("role") if isinstance(message, Mapping) else getattr(message, "role", None)
    if role is None and not isinstance(message, Mapping):
        role = getattr(message, "type", None)  # LangChain: "human"
    return getattr(role, "value", role) in ("user", "human")


def stated_at(messages: Sequence[Any] = (), default: datetime | None = None) -> datetime:
    """When the facts of this turn were stated: the time the last user message among ``messages``
    carries (:func:`message_time`), else ``default``, else now. Call it before the model is
    called, so a slow reply does not move the time.

    Example:
        >>> from types import SimpleNamespace
        >>> said = SimpleNamespace(role="user", additional_kwargs={"created_at": "2023-05-08"})
        >>> stated_at([said]).date().isoformat()
        '2023-05-08'
        >>> stated_at([{"role": "user", "content": "hi"}]).tzinfo
        datetime.timezone.utc
    """
    for message in reversed(list(messages)):
        if _is_user(message):
            found = message_time(message)
            if found is not None:
                return found
            break
    return default or _now()


@dataclass
class Turn:
    """What an adapter keeps between a model call's request and its reply: the handles of the
    injected memories (for ``supersedes``) and when the turn's facts were stated.

    Example:
        >>> turn = Turn({"m1": "id-1"})
        >>> turn.handles, turn.observed_at.tzinfo
        ({'m1': 'id-1'}, datetime.timezone.utc)
    """

    handles: dict[str, str] = field(default_factory=dict)
    observed_at: datetime = field(default_factory=_now)


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be True or False, got {value!r}")
    return value


class AdapterCore:
    """One adapter's memory: its engine, its scope ids and options, and the inject/instruct policy.

    Every value is checked when the adapter is built (a bad ``user_id`` fails there, not at the
    first model call).

    Example:
        >>> core = AdapterCore("alice", db_path=":memory:", session_id="s1")
        >>> core.user_id, core.conversation().session_id, core.conversation("t2").session_id
        ('alice', 's1', 't2')
        >>> system = core.instructed("You are helpful.")
        >>> system.endswith(MEMORY_INSTRUCTION), core.instructed(system) == system
        (True, True)
        >>> AdapterCore("alice", db_path=":memory:", instruct=False).instructed("Hi") == "Hi"
        True
    """

    def __init__(
        self, user_id: str, *, inject: bool = True, instruct: bool = True, **options: Unpack[RecallOptions]
    ) -> None:
        self.inject = _flag(inject, "inject")
        self.instruct = _flag(instruct, "instruct")
        recall = {name: value for name, value in options.items() if name not in STORE_OPTIONS}
        self.engine = engine_of(dict(options))
        self.memory = InlineMemory(self.engine, user_id, **recall)  # type: ignore[arg-type]  # checks them all

    @classmethod
    def of(cls, adapter: Any, engine: MemoryEngine, **policy: bool) -> AdapterCore:
        """The core of an adapter whose own fields hold ``user_id`` and the recall options it
        has (the pydantic adapters of LlamaIndex): those fields, on ``engine``.

        Example:
            >>> from types import SimpleNamespace
            >>> fields = SimpleNamespace(user_id="alice", session_id="s1", top_k=3)
            >>> core = AdapterCore.of(fields, MemoryEngine(MemoryConfig(db_path=":memory:")))
            >>> core.session_id, core.memory.top_k, core.memory.token_budget
            ('s1', 3, 400)
        """
        recall = {name: getattr(adapter, name) for name in RecallOptions.__optional_keys__
                  if name not in STORE_OPTIONS and hasattr(adapter, name)}
        return cls(adapter.user_id, memory=engine, **policy, **recall)

    @property
    def user_id(self) -> str:
        """Whose memories these are."""
        return self.memory.user_id

    @property
    def session_id(self) -> str | None:
        """The fixed session id (None: the adapter takes one per run, or none)."""
        return self.memory.session_id

    @property
    def agent_id(self) -> str | None:
        """The agent, for agent-level memories."""
        return self.memory.agent_id

    def conversation(self, session_id: str | None = None) -> InlineMemory:
        """The conversation service for a session (default: the fixed one)."""
        if session_id is None or session_id == self.memory.session_id:
            return self.memory
        m = self.memory
        return InlineMemory(self.engine, m.user_id, session_id, m.agent_id, top_k=m.top_k,
                            token_budget=m.token_budget, min_score=m.min_score)

    def recall(self, query: str, memory: InlineMemory | None = None, now: datetime | None = None) -> Injection:
        """The memories to inject for ``query`` (empty when ``inject`` is off or nothing is relevant);
        ``now``: the time "last week" in the query is read against (the turn's :func:`stated_at`)."""
        if not self.inject:
            return Injection()
        return (memory or self.memory).recall(query, now)

    def needs_instruction(self, system_text: str) -> bool:
        """Whether the instruction should be added to this system text."""
        return self.instruct and MEMORY_INSTRUCTION not in system_text

    def instructed(self, system_text: str | None) -> str:
        """The system text with the extraction instruction at its end (once; unchanged when
        ``instruct`` is off or it is there already)."""
        text = system_text or ""
        if not self.needs_instruction(text):
            return text
        return f"{text}\n\n{MEMORY_INSTRUCTION}" if text else MEMORY_INSTRUCTION
