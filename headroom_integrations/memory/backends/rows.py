"""Between ``memories`` rows and :class:`~headroom_integrations.memory.models.Memory` values.

Date-times are stored as naive UTC; a :class:`Memory` carries them timezone-aware.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from headroom_integrations.memory.models import Memory, MemoryCategory, MemoryScope, utc
from headroom_integrations.memory.namespaces import decode_namespace, encode_namespace
from headroom_integrations.memory.text_query import fingerprint, index_text
from headroom_integrations.memory.validation import metadata_json

__all__ = ["aware", "memory_row", "naive", "now_utc", "row_to_memory"]


def now_utc() -> datetime:
    """The current time as naive UTC, the form stored in SQL."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def naive(value: datetime | None) -> datetime | None:
    """A date-time as stored: naive UTC (None stays None)."""
    return None if value is None else utc(value).replace(tzinfo=None)


def aware(value: datetime | None) -> datetime | None:
    """A stored date-time as timezone-aware UTC (None stays None)."""
    return None if value is None else value.replace(tzinfo=timezone.utc)


def row_to_memory(m: Mapping[str, Any]) -> Memory:
    """Build a :class:`Memory` from a mapping with the ``memories`` columns."""
    return Memory(
        id=m["id"], content=m["content"], user_id=m["user_id"], session_id=m["session_id"],
        agent_id=m["agent_id"], turn_id=m["turn_id"], scope=MemoryScope(m["scope"]),
        category=MemoryCategory(m["category"]), importance=float(m["importance"]),
        metadata=json.loads(m["meta_json"]), created_at=aware(m["created_at"]),  # type: ignore[arg-type]
        updated_at=aware(m["updated_at"]), valid_from=aware(m["valid_from"]), valid_to=aware(m["valid_to"]),
        supersedes=m["supersedes"], superseded_by=m["superseded_by"], chain_id=m["chain_id"],
        namespace=None if m["namespace"] is None else decode_namespace(m["namespace"]), key=m["item_key"],
        expires_at=aware(m["expires_at"]), searchable=bool(m["searchable"]),
        observed_at=aware(m.get("observed_at") or m["created_at"]),  # type: ignore[arg-type]  # NULL: created_at
    )


def memory_row(memory: Memory) -> dict[str, Any]:
    """The ``memories`` columns of a memory (without embedding, pk and seq)."""
    return {
        "id": memory.id, "content": memory.content, "user_id": memory.user_id, "session_id": memory.session_id,
        "agent_id": memory.agent_id, "turn_id": memory.turn_id, "scope": memory.scope.value,
        "category": memory.category.value, "importance": memory.importance,
        "meta_json": metadata_json(memory.metadata), "created_at": naive(memory.created_at),
        "updated_at": naive(memory.updated_at or memory.created_at),
        "valid_from": naive(memory.valid_from or memory.created_at), "valid_to": naive(memory.valid_to),
        "supersedes": memory.supersedes, "superseded_by": memory.superseded_by,
        "chain_id": memory.chain_id or memory.id,
        "search_text": index_text(memory.content) if memory.searchable else "",
        "fingerprint": fingerprint(memory.content),
        "namespace": None if memory.namespace is None else encode_namespace(memory.namespace),
        "item_key": memory.key, "expires_at": naive(memory.expires_at), "searchable": memory.searchable,
        "observed_at": naive(memory.observed_at or memory.created_at),
    }
