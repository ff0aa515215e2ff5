"""Checks of what callers hand the engine: each bad value gets an :class:`InvalidInputError` that
names the argument and what was wrong, before anything is stored.

Text is repaired rather than refused where that loses nothing a reader could see: a lone UTF-16
surrogate (half an emoji from a JavaScript client, say) becomes U+FFFD in contents and queries.
Identifiers are never repaired: two different ids must never become one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from headroom_integrations.errors import InvalidInputError
from headroom_integrations.memory.models import as_number
from headroom_integrations.memory.text_query import clean_text

__all__ = ["QUERY_MAX_CHARS", "content_text", "identifier", "importance", "metadata_json", "query_text"]

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
        raise InvalidInputError(f"{what} is not valid Unicode (it holds a lone surrogate): {value!r}")
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
