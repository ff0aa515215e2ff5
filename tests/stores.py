"""The stores a test can run on (see the ``store`` fixture in conftest.py)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from headroom_integrations import MemoryConfig

__all__ = ["Store", "pg_schema_url"]


def pg_schema_url(server_url: str, schema: str) -> str:
    """``server_url`` with every connection's search path set to ``schema`` (then ``public``, for pgvector)."""
    options = quote(f"-csearch_path={schema},public")
    return f"{server_url}{'&' if '?' in server_url else '?'}options={options}"


@dataclass
class Store:
    """Where a test's memories live: a SQLite file or a PostgreSQL schema of its own."""

    kind: str
    spec: str  # the file path or the database URL (what a worker process is given)

    @property
    def where(self) -> dict[str, str]:
        """The keyword an adapter or config is given to open this store: ``db_path`` or ``db_url``."""
        return {"db_url": self.spec} if self.kind == "postgres" else {"db_path": self.spec}

    def config(self, **options: Any) -> MemoryConfig:
        """A configuration on this store (``options`` are other MemoryConfig fields)."""
        return MemoryConfig(**self.where, **options)

    def execute(self, *statements: str) -> None:
        """Run SQL on the store with the database's own client, behind every engine's back."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.spec) as conn:
                for statement in statements:
                    conn.execute(statement)
            conn.close()
            return
        from sqlalchemy import create_engine, text

        db = create_engine(self.config().postgres_url)  # type: ignore[arg-type]
        try:
            with db.begin() as conn:
                for statement in statements:
                    conn.execute(text(statement))
        finally:
            db.dispose()
