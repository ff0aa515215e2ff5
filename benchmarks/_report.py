"""Writing a benchmark's section into a markdown page, shared by every benchmark script."""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["publish", "write_section"]


def write_section(path: Path, section: str, start_marker: str, end_marker: str) -> None:
    """Put ``section`` between the markers in ``path``, leaving the rest of the file byte for byte.

    An existing marked section is replaced; without markers the section is appended at the end
    (a missing file is created). Markers out of order are an error and the file is not touched.
    """
    block = f"{start_marker}\n{section.rstrip()}\n{end_marker}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Benchmarks\n\n{block}\n")
        return
    text = path.read_text()
    start, end = text.find(start_marker), text.find(end_marker)
    if start != -1 and end > start:
        text = text[:start] + block + text[end + len(end_marker) :]
    elif start == -1 and end == -1:
        if text and not text.endswith("\n"):
            text += "\n"
        text += f"\n{block}\n" if text else f"{block}\n"
    else:
        raise SystemExit(f"{path}: the {start_marker} / {end_marker} markers are incomplete or out of order; "
                         "fix them by hand")
    path.write_text(text)


def publish(
    report: str, results: object, out: Path | None, json_path: Path | None, start_marker: str, end_marker: str
) -> None:
    """Print a benchmark's markdown report, then write its raw results and its page section if asked."""
    print(report)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {json_path}", file=sys.stderr)
    if out is not None:
        write_section(out, report, start_marker, end_marker)
        print(f"wrote {out}", file=sys.stderr)
