"""Item keys: memories addressable by a hierarchical namespace and a key (as key-value stores such
as LangGraph's address their items), stored in two text columns.

A namespace is a tuple of labels, stored as one string: each label escaped (backslash, the unit
separator ``\\x1f``) and followed by ``\\x1f``. Every namespace starting with a prefix then starts
with the prefix's encoding, and the encodings of a prefix's namespaces sort between
:func:`prefix_bounds` (byte order), so an index on the column serves prefix scans.
"""

from __future__ import annotations

from collections.abc import Sequence

from headroom_integrations.errors import InvalidInputError

__all__ = ["decode_namespace", "encode_namespace", "namespace_labels", "prefix_bounds"]

_SEP = "\x1f"


def namespace_labels(value: object, what: str = "namespace", allow_empty: bool = False) -> tuple[str, ...]:
    """A namespace as a tuple of labels: non-empty strings without NUL.

    Example:
        >>> namespace_labels(["memories", "alice"])
        ('memories', 'alice')

    Raises:
        InvalidInputError: not a sequence of such strings (or empty, unless ``allow_empty``).
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidInputError(f"{what} must be a tuple of strings, got {value!r}")
    labels = tuple(value)
    if not labels and not allow_empty:
        raise InvalidInputError(f"{what} must not be empty")
    for label in labels:
        if not isinstance(label, str) or not label or "\x00" in label:
            raise InvalidInputError(f"{what} labels must be non-empty strings without NUL, got {label!r} in {labels!r}")
    return labels


def encode_namespace(labels: Sequence[str]) -> str:
    """The stored form of a namespace (or of a namespace prefix).

    Example:
        >>> encode_namespace(("a", "b\\x1fc"))
        'a\\x1fb\\\\sc\\x1f'
    """
    return "".join(label.replace("\\", "\\\\").replace(_SEP, "\\s") + _SEP for label in labels)


def decode_namespace(text: str) -> tuple[str, ...]:
    """The labels of a stored namespace (:func:`encode_namespace` reversed).

    Example:
        >>> decode_namespace(encode_namespace(("memories", "a\\\\b", "x\\x1fy")))
        ('memories', 'a\\\\b', 'x\\x1fy')
    """
    labels: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(_SEP if char == "s" else char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == _SEP:
            labels.append("".join(current))
            current = []
        else:
            current.append(char)
    return tuple(labels)


def prefix_bounds(labels: Sequence[str]) -> tuple[str, str] | None:
    """``(low, high)``: the stored namespaces starting with ``labels`` are exactly those ``>= low``
    and ``< high`` in byte order (None for the empty prefix: every namespace).

    Example:
        >>> prefix_bounds(("a",))
        ('a\\x1f', 'a ')
    """
    if not labels:
        return None
    low = encode_namespace(labels)
    return low, low[:-1] + chr(ord(_SEP) + 1)
