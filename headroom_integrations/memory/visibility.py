"""Scope visibility: which stored memories a (user, session, agent, turn) may see.

| Stored at | Visible to                              |
|-----------|-----------------------------------------|
| user      | every session and agent of that user    |
| session   | that session (any agent)                |
| agent     | that session + agent                    |
| turn      | that turn (same session and agent) only |

Nothing is ever visible across ``user_id``. The rule is expressed once, as *bucket keys*: the
SQLite vector index files memories by them, and the SQL condition of a search is built from the
keys a search may see (``SqlStore.scope_condition``), so the two cannot drift apart.
"""

from __future__ import annotations

from headroom_integrations.memory.models import MemoryScope

__all__ = ["BucketKey", "bucket_key", "visible_keys"]

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
