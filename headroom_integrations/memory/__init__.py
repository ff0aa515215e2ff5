"""The memory engine: SQLite (+FTS5) as the source of truth, an HNSW index beside it, embedders.

This package imports no LLM framework.
"""

from headroom_integrations.memory.config import EmbedderBackend, MemoryConfig
from headroom_integrations.memory.core import HierarchicalMemory, MemoryEngine
from headroom_integrations.memory.embedders import Embedder, LocalEmbedder, OllamaEmbedder, OpenAIEmbedder
from headroom_integrations.memory.models import (
    ChatRecord,
    Memory,
    MemoryCategory,
    MemoryFilter,
    MemoryScope,
    SearchResult,
    UserCounts,
)

__all__ = [
    "ChatRecord",
    "Embedder",
    "EmbedderBackend",
    "HierarchicalMemory",
    "LocalEmbedder",
    "Memory",
    "MemoryCategory",
    "MemoryConfig",
    "MemoryEngine",
    "MemoryFilter",
    "MemoryScope",
    "OllamaEmbedder",
    "OpenAIEmbedder",
    "SearchResult",
    "UserCounts",
]
