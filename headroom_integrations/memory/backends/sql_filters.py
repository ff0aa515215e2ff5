"""The SQL conditions of the value types that cross the backend seam: a :class:`MemoryFilter`
(exact id matches, validity, categories, scopes, dates stored and stated, importance) and a :class:`SearchScope`
(scope visibility built from the bucket keys a search may see, validity, categories)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Table, and_, or_, true

from headroom_integrations.memory.backends.base import SearchScope
from headroom_integrations.memory.backends.rows import naive
from headroom_integrations.memory.models import MemoryFilter, MemoryScope
from headroom_integrations.memory.namespaces import encode_namespace, prefix_bounds

__all__ = ["filter_condition", "scope_condition", "validity_condition"]


def filter_condition(table: Table, flt: MemoryFilter) -> ColumnElement[bool]:
    """The SQL condition of a :class:`MemoryFilter` (exact id matches, validity, categories…)."""
    c = table.c
    parts: list[ColumnElement[bool]] = []
    for name in ("user_id", "session_id", "agent_id", "turn_id"):
        value = getattr(flt, name)
        if value is not None:
            parts.append(c[name] == value)
    if flt.categories is not None:
        parts.append(c.category.in_([cat.value for cat in flt.categories]))
    if flt.scopes is not None:
        parts.append(c.scope.in_([scope.value for scope in flt.scopes]))
    parts.append(validity_condition(table, flt.include_superseded, flt.valid_at))
    if flt.created_after is not None:
        parts.append(c.created_at >= naive(flt.created_after))
    if flt.created_before is not None:
        parts.append(c.created_at < naive(flt.created_before))
    if flt.observed_after is not None:
        parts.append(c.observed_at >= naive(flt.observed_after))
    if flt.observed_before is not None:
        parts.append(c.observed_at < naive(flt.observed_before))
    if flt.min_importance is not None:
        parts.append(c.importance >= flt.min_importance)
    parts.extend(_item_conditions(table, flt))
    return and_(*parts)


def _item_conditions(table: Table, flt: MemoryFilter) -> list[ColumnElement[bool]]:
    """The key-value item part of a filter: namespace (exact or prefix), key, expiry."""
    c = table.c
    parts: list[ColumnElement[bool]] = []
    if flt.namespace is not None:
        parts.append(c.namespace == encode_namespace(flt.namespace))
    if flt.namespace_prefix is not None:
        bounds = prefix_bounds(flt.namespace_prefix)
        parts.append(c.namespace.is_not(None) if bounds is None else and_(c.namespace >= bounds[0],
                                                                          c.namespace < bounds[1]))
    if flt.key is not None:
        parts.append(c.item_key == flt.key)
    if flt.live_at is not None:
        parts.append(or_(c.expires_at.is_(None), c.expires_at > naive(flt.live_at)))
    if flt.expired_at is not None:
        parts.append(c.expires_at <= naive(flt.expired_at))
    return parts


def validity_condition(table: Table, include_superseded: bool, valid_at: datetime | None) -> ColumnElement[bool]:
    """Current rows only, every version, or the versions valid at a point in time."""
    c = table.c
    if valid_at is not None:
        at = naive(valid_at)
        return and_(c.valid_from <= at, or_(c.valid_to.is_(None), c.valid_to > at))
    if include_superseded:
        return true()
    return c.valid_to.is_(None)

def scope_condition(table: Table, scope: SearchScope) -> ColumnElement[bool]:
    """The SQL condition of a search scope: visibility, validity, categories and scopes."""
    c = table.c
    options = []
    for _user, kind, session, agent, turn in scope.buckets():
        parts = [c.scope == kind]
        if kind != MemoryScope.USER.value:
            parts.append(c.session_id.is_(None) if session is None else c.session_id == session)
        if kind in (MemoryScope.AGENT.value, MemoryScope.TURN.value):
            parts.append(c.agent_id.is_(None) if agent is None else c.agent_id == agent)
        if kind == MemoryScope.TURN.value:
            parts.append(c.turn_id == turn)
        options.append(and_(*parts))
    parts = [c.user_id == scope.user_id, or_(*options) if options else c.pk.is_(None),
             validity_condition(table, scope.include_superseded, scope.valid_at)]
    if scope.categories is not None:
        parts.append(c.category.in_([cat.value for cat in scope.categories]))
    return and_(*parts)
