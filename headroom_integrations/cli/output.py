"""How the command line prints: ``rich`` tables on a terminal, tab-separated text when piped (tabs,
newlines and backslashes inside a value escaped as ``\\t``, ``\\n`` and ``\\\\``, so every row stays
one line with fixed columns), or JSON with ``--json``. Errors go to stderr, one line each."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import IO, Any

from headroom_integrations.memory.jsonl import memory_line
from headroom_integrations.memory.models import Memory

__all__ = ["Output", "escaped", "memory_fields"]


def escaped(value: object) -> str:
    r"""A value as one tab-separated field: None is empty, control characters are escaped.

    Example:
        >>> escaped("two\tparts\nand a \\ backslash"), escaped(None), escaped(0.5)
        ('two\\tparts\\nand a \\\\ backslash', '', '0.5')
    """
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def memory_fields(memory: Memory) -> dict[str, Any]:
    """Every field of a memory as JSON values (the export format's memory line)."""
    return json.loads(memory_line(memory))


class Output:
    r"""Where a command's results go, and in which form.

    Example:
        >>> import io
        >>> out = Output(as_json=False, stream=io.StringIO())
        >>> out.table(["id", "content"], [["m1", "tab\there"]])
        >>> out.stream.getvalue()
        'id\tcontent\nm1\ttab\\there\n'
    """

    def __init__(self, as_json: bool, stream: IO[str] | None = None) -> None:
        self.as_json = as_json
        self.stream = stream if stream is not None else sys.stdout
        self.rich = not as_json and stream is None and self.stream.isatty()

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
        """Rows under column names (JSON: a list of objects keyed by the column names)."""
        if self.as_json:
            self.data([dict(zip(columns, row)) for row in rows])
        elif self.rich:
            from rich.console import Console
            from rich.table import Table
            from rich.text import Text

            table = Table(*columns, title=title, show_lines=False)
            for row in rows:  # Text: a memory's "[m1]" or "[bold]" is shown, never read as markup
                table.add_row(*(Text(escaped(v)) for v in row))
            Console(file=self.stream, soft_wrap=False).print(table)
        else:
            self.stream.write("\t".join(columns) + "\n")
            for row in rows:
                self.stream.write("\t".join(escaped(v) for v in row) + "\n")

    def record(self, fields: dict[str, Any]) -> None:
        """One object: ``name: value`` lines (JSON: the object)."""
        if self.as_json:
            self.data(fields)
        else:
            self.table(["field", "value"], [[name, value] for name, value in fields.items()])

    def data(self, value: Any) -> None:
        """A JSON document (in every mode: for results that have no table form)."""
        text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (kept exactly in metadata): written as an escape
            text = json.dumps(value, indent=2, ensure_ascii=True, default=str)
        self.stream.write(text + "\n")

    def line(self, text: str) -> None:
        """A message for people (left out with ``--json``, whose output is the data alone)."""
        if not self.as_json:
            self.stream.write(text + "\n")
