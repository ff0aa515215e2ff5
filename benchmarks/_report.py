"""Writing a benchmark's section into a markdown page, shared by every benchmark script."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import psutil

__all__ = ["OtherLoad", "publish", "write_section"]


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


class OtherLoad:
    """CPU time used by *other* processes since construction: all CPUs' busy time minus this process's."""

    def __init__(self) -> None:
        self._start = (self._busy(), self._own(), time.perf_counter())

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        total = sum(t)
        # guest time is counted in user time already; idle and iowait are not work
        for name in ("idle", "iowait", "guest", "guest_nice"):
            total -= getattr(t, name, 0.0)
        return total

    @staticmethod
    def _own() -> float:
        t = psutil.Process().cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def cores(self) -> float:
        """Average number of cores the other processes kept busy (0 on an otherwise idle machine)."""
        busy, own, start = self._start
        wall = time.perf_counter() - start
        if wall <= 0:
            return 0.0
        return round(max(0.0, (self._busy() - busy) - (self._own() - own)) / wall, 2)
