"""The conversation log of the chat-history adapters, in portable SQL (part of every SQL backend)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, delete, insert, select

from headroom_integrations.memory.backends.rows import aware
from headroom_integrations.memory.backends.schema import Tables
from headroom_integrations.memory.models import ChatRecord

__all__ = ["SqlChatLog"]


class SqlChatLog:
    """Append, read and delete a session's logged messages (mixed into :class:`SqlStore`).

    Example:
        >>> from datetime import datetime
        >>> from headroom_integrations.memory.backends.sqlite import SqliteBackend
        >>> store = SqliteBackend(None, "test/model", 2)
        >>> store.append_messages([{"user_id": "u", "session_id": "s", "role": "user", "content": "Hi",
        ...                         "payload": "{}", "created_at": datetime(2026, 1, 1)}])
        >>> [(m.role, m.content) for m in store.messages("u", "s", None)]
        [('user', 'Hi')]
        >>> store.close()
    """

    tables: Tables
    if TYPE_CHECKING:  # provided by the store

        def write(self) -> contextlib.AbstractContextManager[Connection]: ...

        def connect(self) -> contextlib.AbstractContextManager[Connection]: ...

    def append_messages(self, rows: list[dict[str, Any]]) -> None:
        """Log chat messages (rows with user_id, session_id, role, content, payload, created_at)."""
        if rows:
            with self.write() as conn:
                conn.execute(insert(self.tables.chat_messages), rows)

    def messages(self, user_id: str, session_id: str, limit: int | None) -> list[ChatRecord]:
        """A session's messages, oldest first (only the last ``limit`` when given)."""
        c = self.tables.chat_messages.c
        statement = select(c.pk, c.role, c.content, c.payload, c.created_at).where(
            c.user_id == user_id, c.session_id == session_id
        )
        statement = statement.order_by(c.pk) if limit is None else statement.order_by(c.pk.desc()).limit(limit)
        with self.connect() as conn:
            rows = conn.execute(statement).all()
        if limit is not None:
            rows.reverse()
        return [ChatRecord(r.role, r.content, json.loads(r.payload), aware(r.created_at)) for r in rows]

    def delete_messages(self, user_id: str, session_id: str | None) -> int:
        """Delete a session's messages (every session of the user when ``session_id`` is None)."""
        c = self.tables.chat_messages.c
        condition = c.user_id == user_id
        if session_id is not None:
            condition = and_(condition, c.session_id == session_id)
        with self.write() as conn:
            return int(conn.execute(delete(self.tables.chat_messages).where(condition)).rowcount or 0)

    def dump_messages(self, batch_size: int = 1000) -> Iterator[list[dict[str, Any]]]:
        """Every logged chat message, in batches, in the order they were logged."""
        table = self.tables.chat_messages
        last = 0
        while True:
            with self.connect() as conn:
                rows = conn.execute(select(table).where(table.c.pk > last).order_by(table.c.pk).limit(batch_size)).all()
            if not rows:
                return
            last = rows[-1].pk
            yield [{k: v for k, v in r._mapping.items() if k != "pk"} for r in rows]
