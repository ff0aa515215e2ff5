"""The SQL tables (SQLAlchemy Core). The database is the source of truth; indexes are caches."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Float, Index, Integer, LargeBinary, MetaData, String, Table, Text

__all__ = ["chat_messages", "counters", "memories", "meta", "metadata_obj", "tombstones"]

metadata_obj = MetaData()

memories = Table(
    "memories",
    metadata_obj,
    Column("pk", Integer, primary_key=True, autoincrement=True),
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
    Column("embedding", LargeBinary),
    Column("seq", BigInteger, nullable=False),
    Index("ix_memories_user_current", "user_id", "valid_to"),
    Index("ix_memories_chain", "chain_id"),
    Index("ix_memories_seq", "seq"),
    Index("ix_memories_user_fingerprint", "user_id", "fingerprint"),
    sqlite_autoincrement=True,  # primary keys are HNSW labels: never reuse one
)

tombstones = Table(
    "memory_tombstones",
    metadata_obj,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pk", Integer, nullable=False),
    Column("seq", BigInteger, nullable=False, index=True),
    Column("scrub", Integer, nullable=False, server_default="0"),  # 1: erased, vectors are overwritten too
)
"""Primary keys of deleted memories, so other processes' vector indexes drop them too (and, for an
erasure, overwrite their vectors)."""

counters = Table(
    "counters",
    metadata_obj,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)
"""``seq``: bumped by every write that changes what a search can return."""

meta = Table(
    "meta",
    metadata_obj,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
"""Store-wide facts: schema version, embedder name and dimension."""

chat_messages = Table(
    "chat_messages",
    metadata_obj,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("user_id", String(255), nullable=False),
    Column("session_id", String(255), nullable=False),
    Column("role", String(32), nullable=False),
    Column("content", Text, nullable=False),
    Column("payload", Text, nullable=False),  # the framework's own serialisation, for a lossless round trip
    Column("created_at", DateTime, nullable=False),
    Index("ix_chat_messages_session", "user_id", "session_id", "pk"),
)
"""The conversation log of chat-history adapters (LangChain, LlamaIndex): every message of a session."""
