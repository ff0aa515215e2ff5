"""Scope visibility: which stored memories a (user, session, agent, turn) may see.

| Stored at | Visible to                              |
|-----------|-----------------------------------------|
| user      | every session and agent of that user    |
| session   | that session (any agent)                |
| agent     | that session + agent                    |
| turn      | that turn (same session and agent) only |

Nothing is ever visible across ``user_id``. The same rule is expressed twice, once as
*bucket keys* (used by the in-memory vector index) and once as a SQL condition; both come from
this module so they cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Table, and_, or_

from headroom_integrations.memory.models import MemoryScope

__all__ = ["BucketKey", "bucket_key", "sql_visible", "visible_keys"]

BucketKey = tuple[str, str, str | None, str | None, str | None]


def bucket_key(
    user_id: str, scope: MemoryScope | str, session_id: str | None, agent_id: str | None, turn_id: str | None
) -> BucketKey:
    """The visibility bucket of a stored memory: the ids that matter for its scope, others dropped."""
    scope = MemoryScope.parse(scope)
    if scope is MemoryScope.USER:
        return (user_id, scope.value, None, None, None)
    if scope is MemoryScope.SESSION:
        return (user_id, scope.value, session_id, None, None)
    if scope is MemoryScope.AGENT:
        return (user_id, scope.value, session_id, agent_id, None)
    return (user_id, scope.value, session_id, agent_id, turn_id)


def visible_keys(
    user_id: str, session_id: str | None = None, agent_id: str | None = None, turn_id: str | None = None
) -> list[BucketKey]:
    """The buckets a search from these ids may see (at most four)."""
    keys = [bucket_key(user_id, MemoryScope.USER, None, None, None)]
    if session_id is not None:
        keys.append(bucket_key(user_id, MemoryScope.SESSION, session_id, None, None))
    if agent_id is not None:
        keys.append(bucket_key(user_id, MemoryScope.AGENT, session_id, agent_id, None))
    if turn_id is not None:
        keys.append(bucket_key(user_id, MemoryScope.TURN, session_id, agent_id, turn_id))
    return keys


def sql_visible(
    table: Table | Any,
    user_id: str,
    session_id: str | None = None,
    agent_id: str | None = None,
    turn_id: str | None = None,
) -> ColumnElement[bool]:
    """SQL condition equivalent to :func:`visible_keys` over a table with the memory columns."""
    c = table.c
    options = [c.scope == MemoryScope.USER.value]
    if session_id is not None:
        options.append(and_(c.scope == MemoryScope.SESSION.value, c.session_id == session_id))
    if agent_id is not None:
        options.append(
            and_(
                c.scope == MemoryScope.AGENT.value,
                c.session_id.is_not_distinct_from(session_id),
                c.agent_id == agent_id,
            )
        )
    if turn_id is not None:
        options.append(
            and_(
                c.scope == MemoryScope.TURN.value,
                c.session_id.is_not_distinct_from(session_id),
                c.agent_id.is_not_distinct_from(agent_id),
                c.turn_id == turn_id,
            )
        )
    return and_(c.user_id == user_id, or_(*options))
