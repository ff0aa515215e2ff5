"""The embedded SQLite backend (FTS5 keyword index, hnswlib vector index beside the file)."""

from headroom_integrations.memory.backends.sqlite.backend import SqliteBackend

__all__ = ["SqliteBackend"]
