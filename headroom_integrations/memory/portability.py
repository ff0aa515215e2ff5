"""Moving memories in and out of a store: JSON Lines export and import (format in :mod:`.jsonl`),
and what an operator asks of a store (its users, a self-check). Mixed into
:class:`~headroom_integrations.memory.engine.MemoryEngine`.

Both directions stream: an export holds one batch of rows in memory, an import one batch of lines.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from headroom_integrations.errors import InvalidInputError, StorageError
from headroom_integrations.memory.jsonl import header_line, memory_line, parse_header, parse_memory
from headroom_integrations.memory.models import Memory, UserCounts, as_count
from headroom_integrations.memory.validation import identifier

if TYPE_CHECKING:
    from headroom_integrations.memory.engine import MemoryEngine

__all__ = ["ExportReport", "ImportReport", "Portability"]

Progress = Callable[[int, int], None]
"""Called with (lines done, lines in the file; 0 when unknown, as for a pipe)."""


@dataclass(frozen=True)
class ExportReport:
    """What :meth:`MemoryEngine.export` wrote.

    Example:
        >>> ExportReport(memories=3, vectors=True).memories
        3
    """

    memories: int
    vectors: bool


@dataclass(frozen=True)
class ImportReport:
    """What :meth:`MemoryEngine.import_` did: memories ``added``, ``skipped`` (their id was already
    stored), ``failed`` lines with ``(line number, reason)`` in ``errors``, and how many memories
    were embedded here (``embedded``: the file had no vectors, or vectors of another embedder).

    Example:
        >>> ImportReport(added=2, skipped=1, errors=((4, "content is required"),)).failed
        1
    """

    added: int = 0
    skipped: int = 0
    errors: tuple[tuple[int, str], ...] = ()
    embedded: int = 0

    @property
    def failed(self) -> int:
        """Lines that could not be imported."""
        return len(self.errors)


@dataclass
class _Batch:
    """Lines parsed but not stored yet, and the running totals."""

    rows: list[tuple[Memory, np.ndarray | None]] = field(default_factory=list)
    added: int = 0
    skipped: int = 0
    embedded: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


@contextlib.contextmanager
def _lines(source: str | os.PathLike[str] | IO[str] | Iterable[str]) -> Iterator[tuple[Iterable[str], int]]:
    """The lines of a file path, an open text file or any iterable of strings, and their count (0: unknown)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InvalidInputError(f"there is no file {str(path)!r} to import")
        with path.open("rb") as counting:
            total = sum(1 for _ in counting)
        # utf-8-sig: a byte-order mark is not part of the first line; surrogateescape: a line with
        # bytes that are not UTF-8 is reported as a bad line, not imported with replaced characters
        with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
            yield handle, total
    elif isinstance(source, (str, bytes)) or not isinstance(source, Iterable):
        raise InvalidInputError(f"import_ takes a file path, a text file or lines, got {type(source).__name__}")
    else:
        yield source, len(source) if isinstance(source, list) else 0


@contextlib.contextmanager
def _sink(target: str | os.PathLike[str] | IO[str]) -> Iterator[IO[str]]:
    """A text stream to write an export to (a path is written next to itself, then renamed)."""
    if isinstance(target, (str, os.PathLike)):
        path = Path(target)
        partial = path.with_name(path.name + ".partial")
        try:
            with partial.open("w", encoding="utf-8", newline="\n") as handle:
                yield handle
            partial.replace(path)
        except OSError as exc:  # a missing folder, a directory, a full disk: nothing is left behind
            if partial.is_file():
                partial.unlink()
            raise StorageError(f"cannot write the export to {path}: {exc.strerror or exc}") from exc
        except BaseException:
            if partial.is_file():
                partial.unlink()
            raise
    elif isinstance(target, io.TextIOBase) or hasattr(target, "write"):
        yield target
    else:
        raise InvalidInputError(f"export takes a file path or a text file, got {type(target).__name__}")


class Portability:
    """Export, import, users and the self-check of a :class:`MemoryEngine`."""

    def export(
        self: MemoryEngine,
        target: str | os.PathLike[str] | IO[str],
        *,
        user_id: str | None = None,
        with_vectors: bool = False,
        batch_size: int = 1000,
    ) -> ExportReport:
        """Write every memory (all versions, in the order they were stored) as JSON Lines.

        Args:
            target: a file path (written whole or not at all) or an open text file such as ``sys.stdout``.
            user_id: only this user's memories.
            with_vectors: also write each memory's embedding, so an import into a store with the
                same embedder needs no embedding.
            batch_size: rows read per query (memory use is one batch).

        Raises:
            StorageError: the file cannot be written (a missing folder, a directory, a full disk);
                no file, and no partial file, is left.

        Example::

            engine.export("memories.jsonl", user_id="alice")
            report = other_engine.import_("memories.jsonl")
        """
        self._check_open()
        user = identifier(user_id, "user_id")
        as_count(batch_size, "batch_size", minimum=1)
        count = 0
        with _sink(target) as out:
            out.write(header_line(self.embedder.name, self.embedder.dimension, bool(with_vectors), user))
            for batch in self.backend.dump(batch_size, user):
                out.write("".join(memory_line(m, v if with_vectors else None) for m, v in batch))
                count += len(batch)
        return ExportReport(memories=count, vectors=bool(with_vectors))

    def import_(
        self: MemoryEngine,
        source: str | os.PathLike[str] | IO[str] | Iterable[str],
        *,
        batch_size: int = 500,
        progress: Progress | None = None,
    ) -> ImportReport:
        """Store the memories of a JSON Lines file as they are (ids, version chains, times).

        Lines whose id is already stored are skipped, so importing a file twice adds nothing. A
        bad line is reported with its number and never stops the others. The file's vectors are
        used when its header names this store's embedder; otherwise memories are embedded here.
        Minimal lines (``content`` and ``user_id``) and mem0 exports are accepted (see :mod:`.jsonl`).

        Args:
            source: a file path, an open text file (``sys.stdin``) or an iterable of lines.
            batch_size: memories per transaction (and per embedding call).
            progress: called after each batch with (lines done, lines in the file or 0).

        Raises:
            InvalidInputError: no such file, bad ``batch_size``, a header of an unknown format version.
            EmbedderError: the embedder failed (what was stored so far stays; run the import again).

        Example::

            report = engine.import_("memories.jsonl")
            print(report.added, "added,", report.skipped, "already there,", report.failed, "bad lines")
        """
        self._check_open()
        as_count(batch_size, "batch_size", minimum=1)
        batch = _Batch()
        dimension: int | None = None
        number = 0
        with _lines(source) as (lines, total):
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    line.encode("utf-8")
                except UnicodeEncodeError:
                    batch.errors.append((number, "not UTF-8 text"))
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    batch.errors.append((number, f"not JSON ({' '.join(str(exc).split())})"))
                    continue
                header = parse_header(obj) if number == 1 else None  # raises for an unknown format version
                if header is not None:
                    same = (header.embedder, header.dimension) == (self.embedder.name, self.embedder.dimension)
                    dimension = self.embedder.dimension if same and header.vectors else None
                    continue
                try:
                    batch.rows.append(parse_memory(obj, self.config.max_content_chars, dimension))
                except InvalidInputError as exc:
                    batch.errors.append((number, " ".join(str(exc).split())))
                    continue
                if len(batch.rows) >= batch_size:
                    self._store_batch(batch)
                    if progress is not None:
                        progress(number, total)
            self._store_batch(batch)
            if progress is not None:
                progress(number, total)
        return ImportReport(batch.added, batch.skipped, tuple(batch.errors), batch.embedded)

    def _store_batch(self: MemoryEngine, batch: _Batch) -> None:
        """Embed what needs it (not the memories already stored) and store a batch."""
        rows, batch.rows = batch.rows, []
        if not rows:
            return
        present = self.backend.existing_ids([m.id for m, _ in rows])
        fresh = [(m, v) for m, v in rows if m.id not in present]
        need = [i for i, (m, v) in enumerate(fresh) if v is None and m.searchable]
        if need:
            vectors = self._embed([fresh[i][0].content for i in need])
            for i, vector in zip(need, vectors):
                fresh[i] = (fresh[i][0], vector)
            batch.embedded += len(need)
        added = self.backend.load(fresh)
        batch.added += added
        batch.skipped += len(rows) - added
        if self._keywords is not None:
            self._keywords.clear()

    def users(self: MemoryEngine) -> list[UserCounts]:
        """Every user with memories, by id, with how many they have (all versions and current).

        Example::

            [(u.user_id, u.current) for u in engine.users()]  # [('alice', 12), ('bob', 3)]
        """
        self._check_open()
        return self.backend.users()

    def doctor(self: MemoryEngine, repair: bool = False) -> dict[str, int]:
        """Check the store: rows still waiting for their vector, malformed version chains, and
        whatever the backend keeps beside the rows (SQLite: the vector index and the FTS5 table;
        PostgreSQL: its indexes). Counts of each problem, as found before any repair.

        Args:
            repair: embed the waiting rows and rebuild what disagrees with the rows (chains are
                only reported: which version should be current is the user's call).

        Example::

            problems = engine.doctor()
            if any(problems.values()):
                engine.doctor(repair=True)
        """
        self._check_open()
        waiting = self.backend.without_embedding()
        found = {"rows_without_vector": len(waiting), **self.backend.chain_problems(),
                 **self.backend.check_index(repair)}
        if repair and waiting:
            self._shared.embed_now(self._embed, [pk for pk, _ in waiting])
        return found

