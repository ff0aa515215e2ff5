"""Naming a PostgreSQL store: its URL (with the password masked for messages), its identity within
a process, and what an existing store recorded, read before it is opened."""

from __future__ import annotations

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from headroom_integrations.errors import MissingDependencyError

__all__ = ["driver_installed", "masked", "recorded_meta", "url_key"]


def driver_installed() -> None:
    """Raise :class:`MissingDependencyError` unless psycopg and pgvector are installed."""
    try:
        import pgvector  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "psycopg", "postgres", "a PostgreSQL memory store") from None


def masked(url: str) -> str:
    """A database URL with its password hidden, for messages.

    Example:
        >>> masked("postgresql+psycopg://bob:secret@db:5432/app")
        'postgresql+psycopg://bob:***@db:5432/app'
    """
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: show nothing after the scheme
        return url.split("://", 1)[0] + "://…"


def url_key(url: str) -> str:
    """The identity of a database within one process (its URL, normalised)."""
    return make_url(url).render_as_string(hide_password=False)


def recorded_meta(url: str, key: str) -> str | None:
    """A value of an existing store's ``meta`` table, read without creating anything; None if absent."""
    driver_installed()
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            if conn.execute(text("SELECT to_regclass('meta')")).scalar() is None:
                return None
            return conn.execute(text("SELECT value FROM meta WHERE key = :key"), {"key": key}).scalar()
    except SQLAlchemyError:  # unreachable or not a store: opening it reports the real problem
        return None
    finally:
        engine.dispose()
