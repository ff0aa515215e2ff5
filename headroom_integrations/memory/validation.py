"""Checks of what callers hand the engine: each bad value gets an :class:`InvalidInputError` that
names the argument and what was wrong, before anything is stored.

Text is repaired rather than refused where that loses nothing a reader could see: a lone UTF-16
surrogate (half an emoji from a JavaScript client, say) becomes U+FFFD in contents and queries.
Identifiers are never repaired: two different ids must never become one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from headroom_integrations.errors import InvalidInputError
from headroom_integrations.memory.models import Memory, MemoryCategory, MemoryScope, as_datetime, as_number
from headroom_integrations.memory.text_query import clean_text

__all__ = [
    "QUERY_MAX_CHARS",
    "batch_memories",
    "message_rows",
    "content_text",
    "identifier",
    "importance",
    "metadata_json",
    "metadata_value",
    "new_memory",
    "query_text",
]

_ADD_FIELDS = frozenset(
    {"content", "user_id", "session_id", "agent_id", "turn_id", "category", "scope", "importance", "metadata",
     "observed_at"}
)

QUERY_MAX_CHARS = 10_000
"""Only this many leading characters of a query are searched (a query never fails on its length)."""


def content_text(value: object, what: str, max_chars: int) -> str:
    """A memory's text: a non-empty string within ``max_chars``, lone surrogates repaired.

    Example:
        >>> content_text("Likes tea", "content", 100)
        'Likes tea'
    """
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidInputError(f"{what} must not be empty or whitespace")
    if len(value) > max_chars:
        raise InvalidInputError(f"{what} has {len(value)} characters; the limit is {max_chars} (max_content_chars)")
    return clean_text(value)


def query_text(value: object) -> str:
    """A search query: any string (lone surrogates repaired, cut to :data:`QUERY_MAX_CHARS`).

    Example:
        >>> query_text("  "), len(query_text("x" * 20_000))
        ('  ', 10000)
    """
    if not isinstance(value, str):
        raise InvalidInputError(f"query must be a string, got {type(value).__name__}")
    return clean_text(value[:QUERY_MAX_CHARS])


def identifier(value: object, what: str, required: bool = False) -> str | None:
    """A user, session, agent, turn or memory id: a non-empty string of at most 255 characters
    that is valid Unicode (None when not ``required``).

    Example:
        >>> identifier("alice", "user_id"), identifier(None, "session_id")
        ('alice', None)
    """
    if value is None:
        if required:
            raise InvalidInputError(f"{what} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > 255:
        raise InvalidInputError(f"{what} is longer than 255 characters")
    if clean_text(value) != value:
        raise InvalidInputError(f"{what} is not valid text (it holds a lone surrogate or a NUL): {value!r}")
    return value


def importance(value: object) -> float:
    """A number within 0..1.

    Example:
        >>> importance(0.8)
        0.8
    """
    number = as_number(value, "importance", 0.0, 1.0)
    if number is None:
        raise InvalidInputError("importance must be a number within 0..1, got None")
    return number


def metadata_json(value: Mapping[str, Any] | None) -> str:
    """Metadata as standard JSON text (NaN and infinities refused; any string kept exactly).

    Example:
        >>> metadata_json({"source": "chat", "n": 2})
        '{"source": "chat", "n": 2}'
    """
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"metadata must be a mapping, got {type(value).__name__}")
    try:
        # ASCII escapes keep every string exactly, even one a database could not store as UTF-8.
        return json.dumps(dict(value), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"metadata must be JSON-serialisable (no NaN or infinity): {exc}") from None


def metadata_value(value: Mapping[str, Any] | None) -> dict[str, Any]:
    """Metadata checked as :func:`metadata_json` does, as it will read back from the store.

    Example:
        >>> metadata_value({"n": (1, 2)})
        {'n': [1, 2]}
    """
    return json.loads(metadata_json(value))  # type: ignore[no-any-return]


_check_importance = importance  # new_memory's argument of the same name hides it


def new_memory(
    max_chars: int,
    content: object,
    user_id: object,
    session_id: object = None,
    agent_id: object = None,
    turn_id: object = None,
    category: MemoryCategory | str = MemoryCategory.FACT,
    scope: MemoryScope | str | None = None,
    importance: object = 0.5,
    metadata: Mapping[str, Any] | None = None,
    observed_at: object = None,
) -> Memory:
    """A new memory from :meth:`MemoryEngine.add`'s arguments, every one checked (a new id, now).

    ``observed_at`` (when the fact was stated: a datetime, a date or an ISO 8601 string; naive
    means UTC) defaults to now, the time it is stored.

    Example:
        >>> m = new_memory(100, "Likes tea", "bob", session_id="s1")
        >>> m.scope.value, m.chain_id == m.id, m.observed_at == m.created_at
        ('session', True, True)
        >>> new_memory(100, "Likes tea", "bob", observed_at="2023-05-08").observed_at.isoformat()
        '2023-05-08T00:00:00+00:00'
    """
    text = content_text(content, "content", max_chars)
    user = identifier(user_id, "user_id", required=True)
    session = identifier(session_id, "session_id")
    agent, turn = identifier(agent_id, "agent_id"), identifier(turn_id, "turn_id")
    resolved = MemoryScope.derive(session, agent, turn) if scope is None else MemoryScope.parse(scope)
    needs = {MemoryScope.SESSION: ("session_id", session), MemoryScope.AGENT: ("agent_id", agent),
             MemoryScope.TURN: ("turn_id", turn)}.get(resolved)
    if needs is not None and needs[1] is None:
        raise InvalidInputError(f"scope {resolved.value!r} needs {needs[0]}")
    meta = metadata_value(metadata)
    observed = as_datetime(observed_at, "observed_at")
    stamp = datetime.now(timezone.utc)
    memory_id = str(uuid.uuid4())
    return Memory(
        id=memory_id, content=text, user_id=user, session_id=session, agent_id=agent,  # type: ignore[arg-type]
        turn_id=turn, scope=resolved, category=MemoryCategory.parse(category), importance=_check_importance(importance),
        metadata=meta, created_at=stamp, updated_at=stamp, valid_from=stamp, chain_id=memory_id,
        observed_at=observed or stamp,
    )


def batch_memories(max_chars: int, items: object, defaults: Mapping[str, Any]) -> list[Memory]:
    """The memories of :meth:`MemoryEngine.add_batch`: each item a content string or a mapping
    of :meth:`MemoryEngine.add`'s arguments, ``defaults`` giving the ids. All or nothing.

    Example:
        >>> [m.content for m in batch_memories(100, ["a", {"content": "b"}], {"user_id": "u"})]
        ['a', 'b']
    """
    if isinstance(items, (str, Mapping)):
        items = [items]  # one memory, not a sequence of characters or keys
    elif not isinstance(items, Iterable):
        raise InvalidInputError(f"items must be a list of strings or mappings, got {type(items).__name__}")
    out = []
    for position, item in enumerate(items):
        if not isinstance(item, (str, Mapping)):
            raise InvalidInputError(f"item {position}: expected a string or a mapping, got {type(item).__name__}")
        fields = {"content": item} if isinstance(item, str) else dict(item)
        unknown = set(fields) - _ADD_FIELDS
        if unknown:
            raise InvalidInputError(f"item {position}: unknown fields {sorted(map(str, unknown))}")
        try:
            out.append(new_memory(max_chars, **{**defaults, **fields}))
        except InvalidInputError as exc:
            raise InvalidInputError(f"item {position}: {exc}") from None
    return out


def message_rows(user_id: str, session_id: str, messages: object, max_chars: int) -> list[dict[str, Any]]:
    """The rows of :meth:`MemoryEngine.append_messages`: each message a mapping with a ``role`` (at
    most 32 characters) and a text ``content``, and optionally a JSON-compatible ``payload``.

    Example:
        >>> [r["role"] for r in message_rows("u", "s", [{"role": "user", "content": "Hi"}], 100)]
        ['user']
    """
    if isinstance(messages, Mapping) or not isinstance(messages, Iterable):
        raise InvalidInputError("messages must be a list of mappings with role and content")
    stamp = datetime.now(timezone.utc).replace(tzinfo=None)
    rows = []
    for position, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidInputError(f"message {position}: expected a mapping, got {type(message).__name__}")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not role or not isinstance(content, str):
            raise InvalidInputError(f"message {position}: role and content must be strings")
        if len(role) > 32:
            raise InvalidInputError(f"message {position}: role is longer than 32 characters")
        if len(content) > max_chars:
            raise InvalidInputError(f"message {position} is longer than max_content_chars")
        rows.append({
            "user_id": user_id, "session_id": session_id, "role": clean_text(role), "content": clean_text(content),
            "payload": metadata_json(message.get("payload") or {}), "created_at": stamp,
        })
    return rows
