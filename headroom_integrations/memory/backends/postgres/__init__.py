"""The PostgreSQL + pgvector backend (``pip install "headroom-integrations[postgres]"``)."""

from headroom_integrations.memory.backends.postgres.backend import PostgresBackend
from headroom_integrations.memory.backends.postgres.urls import masked, recorded_meta, url_key

__all__ = ["PostgresBackend", "masked", "recorded_meta", "url_key"]
