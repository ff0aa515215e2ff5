"""A one-line progress bar on stderr: done/total, rate and time left."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """Call it with (done, total); ``total`` 0 means unknown (a pipe): then only the count and rate show.

    Example:
        >>> bar = Progress("memories")
        >>> bar.what, bar.shown
        ('memories', False)
    """

    def __init__(self, what: str) -> None:
        self.what, self.started, self.shown = what, time.perf_counter(), False

    def __call__(self, done: int, total: int) -> None:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = done / elapsed
        if total:
            left = (total - done) / rate if rate and total > done else 0.0
            width = 30
            filled = min(width, int(width * done / total))
            bar = "[" + "#" * filled + "." * (width - filled) + "] "
            text = f"\r{bar}{done:,}/{total:,} {self.what}  {rate:,.0f}/s  ETA {left:,.0f}s"
        else:
            text = f"\r{done:,} {self.what}  {rate:,.0f}/s"
        print(text, end="", file=sys.stderr, flush=True)
        self.shown = True

    def close(self) -> None:
        """End the bar's line."""
        if self.shown:
            print(file=sys.stderr)
