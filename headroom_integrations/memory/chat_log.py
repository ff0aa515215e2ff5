"""The conversation log of a store: chat messages per (user, session), for chat-history adapters.
Mixed into :class:`~headroom_integrations.memory.engine.MemoryEngine`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from headroom_integrations.memory.models import ChatRecord, as_count
from headroom_integrations.memory.validation import identifier, message_rows

if TYPE_CHECKING:
    from headroom_integrations.memory.engine import MemoryEngine

__all__ = ["ChatLog"]


class ChatLog:
    """Logged chat messages of a :class:`MemoryEngine`.

    Example::

        engine.append_messages("alice", "s1", [{"role": "user", "content": "Hi"}])
        [m.content for m in engine.get_messages("alice", "s1")]  # ['Hi']
    """

    def append_messages(
        self: MemoryEngine, user_id: str, session_id: str, messages: Iterable[Mapping[str, Any]]
    ) -> None:
        """Log chat messages of a session, in order (for chat-history adapters).

        Each message is a mapping with ``role`` and ``content`` (text) and optionally ``payload``,
        the framework's own JSON-compatible serialisation, returned as is by :meth:`get_messages`.

        Raises:
            InvalidInputError: missing ids, a role or content that is not a string, a payload that
                is not JSON-serialisable (nothing is logged then).
        """
        self._check_open()
        user = identifier(user_id, "user_id", required=True)
        session = identifier(session_id, "session_id", required=True)
        rows = message_rows(user, session, messages, self.config.max_content_chars)  # type: ignore[arg-type]
        self.backend.append_messages(rows)

    def get_messages(self: MemoryEngine, user_id: str, session_id: str, limit: int | None = None) -> list[ChatRecord]:
        """A session's logged messages, oldest first (only the last ``limit`` when given)."""
        self._check_open()
        if limit is not None:
            as_count(limit, "limit")
        user = identifier(user_id, "user_id", required=True)
        session = identifier(session_id, "session_id", required=True)
        return self.backend.messages(user, session, limit)  # type: ignore[arg-type]

    def clear_messages(self: MemoryEngine, user_id: str, session_id: str | None = None) -> int:
        """Delete a session's logged messages (all of the user's sessions when ``session_id`` is None)."""
        self._check_open()
        user = identifier(user_id, "user_id", required=True)
        return self.backend.delete_messages(user, identifier(session_id, "session_id"))  # type: ignore[arg-type]
