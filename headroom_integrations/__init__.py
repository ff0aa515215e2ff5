"""headroom_integrations: a memory layer for LLM applications.

Facts are extracted inline (the model writes a ``<memory>`` block in its normal reply), stored in
an embedded engine (SQLite + FTS5 + HNSW) and the relevant ones are injected into later requests.
"""

from importlib import metadata as _metadata

from headroom_integrations.errors import (
    EmbedderError,
    EmbedderMismatchError,
    HeadroomError,
    InvalidInputError,
    MemoryAlreadySupersededError,
    MemoryNotFoundError,
    MissingDependencyError,
    StorageError,
)
from headroom_integrations.memory import (
    EmbedderBackend,
    HierarchicalMemory,
    Memory,
    MemoryCategory,
    MemoryConfig,
    MemoryEngine,
    MemoryFilter,
    MemoryScope,
    SearchResult,
)
from headroom_integrations.openai import with_memory

try:
    __version__ = _metadata.version("headroom-integrations")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "EmbedderBackend",
    "EmbedderError",
    "EmbedderMismatchError",
    "HeadroomError",
    "HierarchicalMemory",
    "InvalidInputError",
    "Memory",
    "MemoryAlreadySupersededError",
    "MemoryCategory",
    "MemoryConfig",
    "MemoryEngine",
    "MemoryFilter",
    "MemoryNotFoundError",
    "MemoryScope",
    "MissingDependencyError",
    "SearchResult",
    "StorageError",
    "__version__",
    "with_memory",
]
