"""How :class:`~headroom_integrations.langgraph.HeadroomStore` turns LangGraph item values into
memories and matches them: the text embedded from a value, the ``filter`` of a search and the
match conditions of a namespace listing (with LangGraph's own semantics)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langgraph.store.base import MatchCondition
from langgraph.store.base.embed import get_text_at_path, tokenize_path

__all__ = ["FieldPaths", "field_paths", "matches_condition", "matches_filter", "value_text"]

FieldPaths = list[tuple[str, list[str]]]
"""Index fields as LangGraph paths and their tokens (``[("facts[*].text", [...]), ...]``)."""


def field_paths(fields: Sequence[str] | None) -> FieldPaths | None:
    """Tokenised field paths (None: embed the whole value).

    Example:
        >>> field_paths(["text", "tags[*]"])[1]
        ('tags[*]', ['tags', '[*]'])
    """
    if fields is None:
        return None
    if isinstance(fields, str) or not all(isinstance(f, str) and f for f in fields):
        raise ValueError(f"index fields must be a list of field paths, got {fields!r}")
    return [(path, tokenize_path(path)) for path in fields]


def _leaves(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, Mapping):
        return [leaf for key, item in value.items() for leaf in _leaves(item, f"{path}.{key}" if path else str(key))]
    if isinstance(value, (list, tuple)):
        return [leaf for i, item in enumerate(value) for leaf in _leaves(item, f"{path}[{i}]")]
    if value is None:
        return []
    return [(path, value if isinstance(value, str) else json.dumps(value, default=str))]


def value_text(value: Mapping[str, Any], paths: FieldPaths | None) -> str:
    """The text a value is embedded (and injected) as: the texts at ``paths`` one per line, or
    for the whole value its fields as ``name: text`` lines (a value with one field: that text).

    Example:
        >>> value_text({"content": "Likes tea"}, None)
        'Likes tea'
        >>> value_text({"food": "pizza", "likes": {"n": 3}}, None)
        'food: pizza\\nlikes.n: 3'
        >>> value_text({"text": "Likes tea", "n": 3}, field_paths(["text"]))
        'Likes tea'
    """
    if paths is not None:
        texts = [text for _, tokens in paths for text in get_text_at_path(value, tokens)]
        return "\n".join(text for text in texts if text.strip())
    leaves = [(path, text) for path, text in _leaves(value, "") if text.strip()]
    if len(leaves) == 1:
        return leaves[0][1]
    return "\n".join(f"{path}: {text}" for path, text in leaves)


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


_ORDER = {"$gt": float.__gt__, "$gte": float.__ge__, "$lt": float.__lt__, "$lte": float.__le__}


def _operator(value: Any, operator: str, operand: Any) -> bool:
    if operator == "$eq":
        return bool(value == operand)
    if operator == "$ne":
        return bool(value != operand)
    if operator in _ORDER:
        left, right = _number(value), _number(operand)
        return left is not None and right is not None and _ORDER[operator](left, right)
    raise ValueError(f"Unsupported operator: {operator}")


def _matches(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict):
        if any(str(k).startswith("$") for k in wanted):
            return all(_operator(value, op, operand) for op, operand in wanted.items())
        return isinstance(value, dict) and all(_matches(value.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, (list, tuple)):
        return (isinstance(value, (list, tuple)) and len(value) == len(wanted)
                and all(_matches(v, w) for v, w in zip(value, wanted, strict=True)))
    return bool(value == wanted)


def matches_filter(value: Mapping[str, Any], flt: Mapping[str, Any] | None) -> bool:
    """Whether an item's value satisfies a search ``filter``: exact values (nested mappings and
    lists compared as JSON) or operators ``$eq``, ``$ne``, ``$gt``, ``$gte``, ``$lt``, ``$lte``.
    An order operator on a value that is not a number never matches.

    Example:
        >>> matches_filter({"kind": "pref", "n": 3}, {"kind": "pref", "n": {"$gte": 2}})
        True
        >>> matches_filter({"n": "three"}, {"n": {"$gt": 1}})
        False
    """
    return not flt or all(_matches(value.get(key), wanted) for key, wanted in flt.items())


def matches_condition(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    """Whether a namespace matches a listing condition (``prefix`` or ``suffix``; ``*`` matches any label).

    Example:
        >>> matches_condition(MatchCondition("suffix", ("*", "prefs")), ("memories", "alice", "prefs"))
        True
    """
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    if condition.match_type == "prefix":
        pairs = zip(namespace, path, strict=False)
    elif condition.match_type == "suffix":
        pairs = zip(reversed(namespace), reversed(path), strict=False)
    else:
        raise ValueError(f"Unsupported match type: {condition.match_type}")
    return all(wanted == "*" or label == wanted for label, wanted in pairs)
