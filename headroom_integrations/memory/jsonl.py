"""The export file: JSON Lines, a header line and then one memory per line.

Header (first line)::

    {"format": "headroom-memory", "version": 2, "embedder": "local/all-MiniLM-L6-v2-int8",
     "dimension": 384, "vectors": true, "user_id": null}

Each memory line holds every field of :class:`~headroom_integrations.memory.models.Memory`
(keys sorted, so a store exports the same bytes on every backend; times in ISO 8601 UTC) and,
in an export made with vectors, ``vector``: the float32 embedding, little-endian, base64-encoded.

Version 2 added ``observed_at`` (when the fact was stated) to the memory lines; it is the only
difference, so files of version 1 are read as well (their memories were stated when stored:
``observed_at`` is ``created_at``). The version was raised because readers of version 1 refuse a
line with a field they do not know: such a reader now says the file is too new, once, instead
of failing on every line.

Lines from elsewhere may be minimal: ``content`` and ``user_id`` are enough (everything else is
defaulted and the id derived from the text, so importing them twice adds nothing). A line in
mem0's shape (``memory`` instead of ``content``) is mapped by :func:`from_mem0`.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np

from headroom_integrations.errors import InvalidInputError
from headroom_integrations.memory.items import checked_key
from headroom_integrations.memory.models import Memory, MemoryCategory, as_datetime
from headroom_integrations.memory.namespaces import namespace_labels
from headroom_integrations.memory.validation import identifier, new_memory

__all__ = ["FORMAT", "FORMAT_VERSION", "MEMORY_ID_MAX", "Header", "from_mem0", "header_line", "memory_line",
           "parse_header", "parse_memory"]

FORMAT = "headroom-memory"
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
"""The format versions :func:`parse_header` accepts (every one this library ever wrote)."""
MEMORY_ID_MAX = 36
"""The longest memory id a line may carry (the id columns hold a UUID: 36 characters)."""
_IDS = uuid.UUID("6f1d3c52-8a0e-4f4e-9a57-2f3b8d0c1e11")  # namespace of ids derived from a minimal line
_FIELDS = ("id", "user_id", "session_id", "agent_id", "turn_id", "scope", "category", "content", "importance",
           "metadata", "created_at", "updated_at", "valid_from", "valid_to", "supersedes", "superseded_by",
           "chain_id", "namespace", "key", "expires_at", "searchable", "observed_at")
_MEM0_CATEGORIES = {"preferences": MemoryCategory.PREFERENCE, "preference": MemoryCategory.PREFERENCE}


@dataclass(frozen=True)
class Header:
    """What an export's first line says about the file.

    Example:
        >>> parse_header({"format": "headroom-memory", "version": 2, "embedder": "e", "dimension": 8})
        Header(version=2, embedder='e', dimension=8, vectors=False, user_id=None)
    """

    version: int
    embedder: str | None
    dimension: int | None
    vectors: bool = False
    user_id: str | None = None


def header_line(embedder: str, dimension: int, vectors: bool, user_id: str | None = None) -> str:
    """The first line of an export (with its newline).

    Example:
        >>> header_line("local/x", 8, False)
        '{"format":"headroom-memory","version":2,"embedder":"local/x","dimension":8,"vectors":false,"user_id":null}\\n'
    """
    fields = {"format": FORMAT, "version": FORMAT_VERSION, "embedder": embedder, "dimension": dimension,
              "vectors": vectors, "user_id": user_id}
    return json.dumps(fields, separators=(",", ":")) + "\n"


def parse_header(obj: Any) -> Header | None:
    """The header, if this parsed line is one (None: it is a memory line).

    Raises:
        InvalidInputError: a header of another format version.
    """
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        return None
    version = obj.get("version")
    if isinstance(version, bool) or version not in READ_VERSIONS:
        raise InvalidInputError(
            f"export format version {version!r} is not supported (this library reads versions 1 and 2)"
        )
    dimension = obj.get("dimension")
    return Header(version, obj.get("embedder"), dimension if isinstance(dimension, int) else None,
                  obj.get("vectors") is True, obj.get("user_id"))


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def memory_line(memory: Memory, vector: np.ndarray | None = None) -> str:
    """One memory as a line (with its newline); ``vector`` is written when given.

    Example:
        >>> from datetime import datetime, timezone
        >>> at = datetime(2024, 5, 8, tzinfo=timezone.utc)
        >>> line = memory_line(Memory(id="m1", content="Likes tea", user_id="bob", created_at=at))
        >>> line[:60]
        '{"agent_id":null,"category":"fact","chain_id":null,"content"'
        >>> parse_memory(json.loads(line), 1000)[0].content
        'Likes tea'
    """
    fields: dict[str, Any] = {
        "id": memory.id, "user_id": memory.user_id, "session_id": memory.session_id, "agent_id": memory.agent_id,
        "turn_id": memory.turn_id, "scope": memory.scope.value, "category": memory.category.value,
        "content": memory.content, "importance": memory.importance, "metadata": memory.metadata,
        "created_at": _time(memory.created_at), "updated_at": _time(memory.updated_at),
        "valid_from": _time(memory.valid_from), "valid_to": _time(memory.valid_to),
        "supersedes": memory.supersedes, "superseded_by": memory.superseded_by, "chain_id": memory.chain_id,
        "namespace": None if memory.namespace is None else list(memory.namespace), "key": memory.key,
        "expires_at": _time(memory.expires_at), "searchable": memory.searchable,
        "observed_at": _time(memory.observed_at),
    }
    if vector is not None:
        fields["vector"] = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    line = json.dumps(fields, ensure_ascii=False, separators=(",", ":"), sort_keys=True) + "\n"
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in metadata (kept exactly by add): written as an escape
        line = json.dumps(fields, ensure_ascii=True, separators=(",", ":"), sort_keys=True) + "\n"
    return line


def from_mem0(obj: dict[str, Any]) -> dict[str, Any]:
    """A memory line from one memory of a mem0 export (``memory.get_all(...)["results"]`` items).

    ``memory`` becomes ``content``; ``run_id`` the session; ``agent_id`` the agent when there is a
    run (else it is kept in metadata, as our agent scope lives inside a session); mem0's
    ``categories`` and ``hash`` go into metadata (a ``preferences`` category maps to ours).

    Example:
        >>> from_mem0({"id": "x1", "memory": "Likes tea", "user_id": "bob", "categories": ["food"]})["metadata"]
        {'mem0_categories': ['food']}
    """
    metadata = dict(obj.get("metadata") or {})
    categories = obj.get("categories") or []
    if categories:
        metadata["mem0_categories"] = categories
    if obj.get("hash"):
        metadata["mem0_hash"] = obj["hash"]
    session, agent = obj.get("run_id"), obj.get("agent_id")
    if agent is not None and session is None:
        metadata["mem0_agent_id"], agent = agent, None
    mapped = [_MEM0_CATEGORIES[c] for c in categories if isinstance(c, str) and c in _MEM0_CATEGORIES]
    line = {"id": obj.get("id"), "content": obj.get("memory"), "user_id": obj.get("user_id"), "session_id": session,
            "agent_id": agent, "category": mapped[0].value if mapped else "fact", "metadata": metadata,
            "created_at": obj.get("created_at"), "updated_at": obj.get("updated_at"),
            "observed_at": obj.get("created_at")}  # mem0 knows no event time: stated when stored
    return {name: value for name, value in line.items() if value is not None}


def parse_memory(obj: Any, max_chars: int, dimension: int | None = None) -> tuple[Memory, np.ndarray | None]:
    """A memory (and its vector, when the line has one and ``dimension`` is given) from a parsed line.

    Every field is checked as :meth:`MemoryEngine.add` checks it; missing fields get the defaults
    of a new memory (a minimal line's id is derived from its user, ids and text; a line without
    ``observed_at``, as every line of a version 1 file, was stated at its ``created_at``).

    Raises:
        InvalidInputError: not an object, unknown fields, a missing or bad value (the message says which).
    """
    if not isinstance(obj, dict):
        raise InvalidInputError(f"a memory line is a JSON object, got {type(obj).__name__}")
    if "content" not in obj and isinstance(obj.get("memory"), str):
        obj = from_mem0(obj)
    unknown = sorted(set(obj) - set(_FIELDS) - {"vector"})
    if unknown:
        raise InvalidInputError(f"unknown field(s) {', '.join(map(repr, unknown))}")
    for required in ("content", "user_id"):
        if obj.get(required) is None:
            raise InvalidInputError(f"{required} is required")
    base = new_memory(max_chars, obj.get("content"), obj.get("user_id"), obj.get("session_id"), obj.get("agent_id"),
                      obj.get("turn_id"), obj.get("category") or MemoryCategory.FACT, obj.get("scope"),
                      obj.get("importance", 0.5), obj.get("metadata"))
    memory_id = _memory_id(obj.get("id"), "id") or str(
        uuid.uuid5(_IDS, json.dumps([base.user_id, base.session_id, base.agent_id, base.turn_id, base.content]))
    )
    created = as_datetime(obj.get("created_at"), "created_at") or base.created_at
    searchable = obj.get("searchable", True)
    if not isinstance(searchable, bool):
        raise InvalidInputError(f"searchable must be true or false, got {searchable!r}")
    namespace = obj.get("namespace")
    memory = replace(
        base, id=memory_id, created_at=created,
        updated_at=as_datetime(obj.get("updated_at"), "updated_at") or created,
        valid_from=as_datetime(obj.get("valid_from"), "valid_from") or created,
        valid_to=as_datetime(obj.get("valid_to"), "valid_to"),
        supersedes=_memory_id(obj.get("supersedes"), "supersedes"),
        superseded_by=_memory_id(obj.get("superseded_by"), "superseded_by"),
        chain_id=_memory_id(obj.get("chain_id"), "chain_id") or memory_id,
        namespace=None if namespace is None else namespace_labels(namespace),
        key=None if obj.get("key") is None else checked_key(obj["key"]),
        expires_at=as_datetime(obj.get("expires_at"), "expires_at"), searchable=searchable,
        observed_at=as_datetime(obj.get("observed_at"), "observed_at") or created,
    )
    if (memory.namespace is None) != (memory.key is None):
        raise InvalidInputError("namespace and key go together (a key-value item has both)")
    return memory, _vector(obj.get("vector"), dimension) if searchable else None


def _memory_id(value: Any, what: str) -> str | None:
    """A memory id of a line: at most 36 characters (a UUID's length, what both backends store)."""
    found = identifier(value, what)
    if found is not None and len(found) > MEMORY_ID_MAX:
        raise InvalidInputError(f"{what} is longer than {MEMORY_ID_MAX} characters: {found[:40]!r}...")
    return found


def _vector(value: Any, dimension: int | None) -> np.ndarray | None:
    if value is None or dimension is None:
        return None
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    vector = np.frombuffer(raw, dtype="<f4").astype(np.float32) if len(raw) == 4 * dimension else None
    if vector is None or not np.isfinite(vector).all():
        raise InvalidInputError(f"vector must be {dimension} base64-encoded little-endian float32 values")
    return vector
