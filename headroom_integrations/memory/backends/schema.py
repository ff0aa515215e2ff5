"""The SQL tables (SQLAlchemy Core), one definition for every SQL backend.

The database is the source of truth; indexes are caches. The backends differ only in the type of
the ``embedding`` column (bytes on SQLite, a pgvector ``vector`` on PostgreSQL) and in what they
add beside it (FTS5 on SQLite, a ``tsvector`` column and an HNSW index on PostgreSQL).
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeEngine

__all__ = ["ADDED_COLUMNS", "SCHEMA_VERSION", "Tables", "build_tables"]

SCHEMA_VERSION = "3"
"""The layout this code writes; a store recording a newer one is refused (see the backends).

Version 2 added the key-value item columns (``namespace``, ``item_key``, ``expires_at``,
``searchable``), version 3 ``observed_at`` (when a fact was stated); older stores are upgraded
in place when opened (:data:`ADDED_COLUMNS`; their rows get ``observed_at = created_at``)."""

ADDED_COLUMNS = ("namespace", "item_key", "expires_at", "searchable", "observed_at")
"""Columns of ``memories`` added after version 1, in order (nullable or with a default)."""

# Integer primary keys that autoincrement on both: SQLite needs INTEGER, PostgreSQL gets BIGSERIAL.
_KEY = BigInteger().with_variant(Integer, "sqlite")
# Namespaces compare byte by byte (prefix scans are ranges): SQLite's default, "C" on PostgreSQL.
_NAMESPACE = Text().with_variant(Text(collation="C"), "postgresql")


class Tables(NamedTuple):
    """The tables of one store layout.

    Example:
        >>> [table.name for table in build_tables()[1:]]
        ['memories', 'memory_tombstones', 'counters', 'meta', 'chat_messages']
    """

    metadata: MetaData
    memories: Table
    tombstones: Table
    counters: Table
    meta: Table
    chat_messages: Table


def build_tables(embedding: TypeEngine | None = None, *extra: Column | Index) -> Tables:
    """The store's tables, with ``embedding`` as the vector column type (default: bytes) and
    ``extra`` columns or indexes added to ``memories``.

    Example:
        >>> tables = build_tables()
        >>> "embedding" in tables.memories.c, tables.meta.name
        (True, 'meta')
    """
    metadata = MetaData()
    memories = Table(
        "memories",
        metadata,
        Column("pk", _KEY, primary_key=True, autoincrement=True),
        Column("id", String(36), nullable=False, unique=True),
        Column("content", Text, nullable=False),
        Column("search_text", Text, nullable=False),  # normalised terms, what the keyword index sees
        Column("fingerprint", String(40), nullable=False),  # hash of the normalised text, for dedup
        Column("user_id", String(255), nullable=False),
        Column("session_id", String(255)),
        Column("agent_id", String(255)),
        Column("turn_id", String(255)),
        Column("scope", String(16), nullable=False),
        Column("category", String(16), nullable=False),
        Column("importance", Float, nullable=False),
        Column("meta_json", Text, nullable=False),
        Column("created_at", DateTime, nullable=False),
        Column("updated_at", DateTime, nullable=False),
        Column("valid_from", DateTime, nullable=False),
        Column("valid_to", DateTime),
        Column("supersedes", String(36)),
        Column("superseded_by", String(36)),
        Column("chain_id", String(36), nullable=False),
        Column("embedding", embedding if embedding is not None else LargeBinary),
        Column("seq", BigInteger, nullable=False),
        Column("namespace", _NAMESPACE),  # key-value items: see memory/namespaces.py
        Column("item_key", Text),
        Column("expires_at", DateTime),
        Column("searchable", Boolean, nullable=False, server_default="1"),  # False: never embedded nor searched
        Column("observed_at", DateTime),  # when the fact was stated; NULL (a row of an older store): created_at
        Index("ix_memories_user_current", "user_id", "valid_to"),
        Index("ix_memories_item", "namespace", "item_key"),
        Index("ix_memories_chain", "chain_id"),
        Index("ix_memories_seq", "seq"),
        Index("ix_memories_user_fingerprint", "user_id", "fingerprint"),
        Index("ix_memories_user_observed", "user_id", "observed_at"),
        *extra,
        sqlite_autoincrement=True,  # primary keys are HNSW labels: never reuse one
    )
    tombstones = Table(
        "memory_tombstones",
        metadata,
        Column("id", _KEY, primary_key=True, autoincrement=True),
        Column("pk", BigInteger, nullable=False),
        Column("seq", BigInteger, nullable=False, index=True),
        Column("scrub", Integer, nullable=False, server_default="0"),  # 1: erased, vectors are overwritten too
    )
    # Primary keys of deleted memories, so other processes' vector indexes drop them too (and, for an
    # erasure, overwrite their vectors).
    counters = Table(
        "counters",
        metadata,
        Column("name", String(64), primary_key=True),
        Column("value", BigInteger, nullable=False),
    )
    # ``seq``: bumped by every write that changes what a search can return.
    meta = Table(
        "meta",
        metadata,
        Column("key", String(64), primary_key=True),
        Column("value", Text, nullable=False),
    )
    # Store-wide facts: schema version, embedder name and dimension, fingerprint version.
    chat_messages = Table(
        "chat_messages",
        metadata,
        Column("pk", _KEY, primary_key=True, autoincrement=True),
        Column("user_id", String(255), nullable=False),
        Column("session_id", String(255), nullable=False),
        Column("role", String(32), nullable=False),
        Column("content", Text, nullable=False),
        Column("payload", Text, nullable=False),  # the framework's own serialisation, for a lossless round trip
        Column("created_at", DateTime, nullable=False),
        Index("ix_chat_messages_session", "user_id", "session_id", "pk"),
    )
    # The conversation log of chat-history adapters (LangChain, LlamaIndex): every message of a session.
    return Tables(metadata, memories, tombstones, counters, meta, chat_messages)
