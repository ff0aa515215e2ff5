"""A griffe extension for the API reference: the package's docstring conventions, read as griffe's Google style.

The docstrings (also run by ``tests/test_doctests.py``) write ``Example:`` above ``>>>`` examples
and ``Example::`` (reST) above literal code. Griffe's Google parser knows neither: ``Example:``
becomes an admonition whose ``>>>`` lines render as Markdown (block quotes, and ``['x']`` read as a
link), and ``Example::`` keeps its double colon. This extension rewrites, before parsing:

* ``Example:`` (or ``Examples:``) whose block holds ``>>>`` -> ``Examples:`` (rendered as code);
* ``Title::`` followed by an indented block -> ``Title:`` and the block as a fenced ``python`` block;
* Sphinx roles (``:class:`~pkg.mod.Name```, ``:meth:`name```) -> inline code (``Name``, ``name``).

Docstrings themselves are left as they are (doctest reads them unchanged).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_LITERAL = re.compile(r"^(?P<indent>\s*)(?P<title>\S.*?)::\s*$")
_EXAMPLE = re.compile(r"^(?P<indent>\s*)Examples?:\s*$")
_ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|obj|exc):`~?(?P<target>[^`]+)`")
_ADMONITION = re.compile(r"^[\w][\s\w-]*$")  # what griffe reads as an admonition title


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block(lines: list[str], start: int, indent: int) -> int:
    """The end (exclusive) of the block indented deeper than ``indent`` that starts after line ``start``."""
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return end


def rewrite(text: str) -> str:
    """``text`` (a docstring) with its ``Example:`` and ``Title::`` blocks in griffe's terms."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        example, literal = _EXAMPLE.match(line), _LITERAL.match(line)
        if example:
            end = _block(lines, i, _indent(line))
            if any(x.lstrip().startswith(">>>") for x in lines[i + 1 : end]):
                out.append(f"{example['indent']}Examples:")
                out.extend(lines[i + 1 : end])
                i = end
                continue
        elif literal and i + 1 < len(lines):
            indent = _indent(line)
            end = _block(lines, i, indent)
            body = lines[i + 1 : end]
            while body and not body[0].strip():
                body = body[1:]
            code = [x for x in body if x.strip()]
            if code:
                depth = min(_indent(x) for x in code)
                title = literal["title"]
                fence_indent = " " * (indent + 4) if _ADMONITION.match(title) else " " * indent
                out.append(f"{literal['indent']}{title}:")
                if not _ADMONITION.match(title):
                    out.append("")
                out.append(f"{fence_indent}```python")
                out.extend(f"{fence_indent}{x[depth:]}" if x.strip() else "" for x in body)
                out.append(f"{fence_indent}```")
                i = end
                continue
        out.append(line)
        i += 1
    return _ROLE.sub(_role, "\n".join(out))


def _role(match: re.Match[str]) -> str:
    target = match["target"]
    return f"`{target.rsplit('.', 1)[-1] if match[0].count('~') else target}`"


class DocstringSections(griffe.Extension):
    """Rewrite every docstring as it is loaded (see the module docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
