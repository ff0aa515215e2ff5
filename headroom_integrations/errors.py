"""Exceptions raised by headroom_integrations.

Every error the package raises on purpose derives from :class:`HeadroomError`, so callers can
catch them all at once, and most also derive from the built-in exception a Python user would
expect (``ValueError``, ``KeyError``, ``ImportError``).

Example:
    >>> from headroom_integrations.errors import HeadroomError, InvalidInputError
    >>> try:
    ...     raise InvalidInputError("content must not be empty")
    ... except HeadroomError as exc:
    ...     print(type(exc).__name__, exc)
    InvalidInputError content must not be empty
"""

from __future__ import annotations

__all__ = [
    "EmbedderError",
    "EmbedderMismatchError",
    "HeadroomError",
    "InvalidInputError",
    "MemoryAlreadySupersededError",
    "MemoryNotFoundError",
    "MissingDependencyError",
    "StorageError",
]


class HeadroomError(Exception):
    """Base class of every error raised by headroom_integrations."""


class InvalidInputError(HeadroomError, ValueError):
    """An argument is empty, too large, of the wrong kind or not one of the allowed values."""


class MemoryNotFoundError(HeadroomError, KeyError):
    """No memory with the given id exists in the store."""

    def __init__(self, memory_id: str) -> None:
        super().__init__(memory_id)
        self.memory_id = memory_id

    def __str__(self) -> str:
        return f"no memory with id {self.memory_id!r}"


class MemoryAlreadySupersededError(HeadroomError, ValueError):
    """A memory that is no longer current was asked to be superseded again."""

    def __init__(self, memory_id: str, superseded_by: str | None, successor_deleted: bool = False) -> None:
        super().__init__(memory_id, superseded_by)
        self.memory_id = memory_id
        self.superseded_by = superseded_by
        self.successor_deleted = successor_deleted

    def __str__(self) -> str:
        if self.successor_deleted:
            return (
                f"memory {self.memory_id!r} is not current and its fact has no current version (its "
                f"successor {self.superseded_by!r} was deleted); rollback({self.memory_id!r}) makes it current again"
            )
        return (
            f"memory {self.memory_id!r} is not current: it was superseded by "
            f"{self.superseded_by!r}; supersede the current version instead"
        )


class StorageError(HeadroomError, OSError):
    """The database (or a file beside it) cannot be opened, read or written: the message names the
    path and what is wrong with it (read-only, not a memory store, a directory, disk full...)."""


class EmbedderError(HeadroomError, RuntimeError):
    """An embedding backend failed or answered with something unusable."""


class EmbedderMismatchError(HeadroomError, ValueError):
    """The database was written with another embedder (name or dimension) than the one configured."""


class MissingDependencyError(HeadroomError, ImportError):
    """An optional dependency (an extra) is needed for this feature but is not installed."""

    def __init__(self, package: str, extra: str, feature: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{feature} needs the {package!r} package: pip install 'headroom-integrations[{extra}]'"
        )
