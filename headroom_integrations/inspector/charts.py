"""Small bar charts as inline SVG, drawn on the server (no JavaScript, no plotting library).

The charts use SVG presentation attributes only (no ``style``), so they render under the
inspector's strict Content-Security-Policy. Every label is escaped here: the returned string is
safe to insert into a page as markup.

Example:
    >>> svg = bar_chart([("fact", 3), ("preference", 1)], title="Memories per category")
    >>> svg.startswith("<svg") and "fact" in svg and svg.count("<rect") == 2
    True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from html import escape

__all__ = ["bar_chart", "column_chart", "time_buckets"]

_BAR = "#4f6bed"
_MUTED = "#6b7280"
_GRID = "#e5e7eb"
_FONT = 'font-family="system-ui, sans-serif"'


def _empty(title: str, width: int, height: int) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
        f'<text x="{width // 2}" y="{height // 2}" text-anchor="middle" fill="{_MUTED}" font-size="13" {_FONT}>'
        "nothing to show</text></svg>"
    )


def bar_chart(items: Sequence[tuple[str, int]], *, title: str, width: int = 420, label_width: int = 96) -> str:
    """Horizontal bars, one per ``(label, count)``, with the count at the end of each bar.

    Args:
        items: the bars, top to bottom.
        title: what the chart shows (its accessible name and tooltip).
        width: the drawing's width in pixels (it scales down with the page).
        label_width: room for the labels on the left.

    Returns:
        An ``<svg>`` element as a string; labels are escaped.

    Example:
        >>> svg = bar_chart([("a<b", 2)], title="t")
        >>> "a&lt;b" in svg and "a<b" not in svg
        True
    """
    row, top = 24, 6
    height = top * 2 + row * max(len(items), 1)
    if not items or not any(count for _, count in items):
        return _empty(title, width, max(height, 60))
    peak = max(count for _, count in items)
    room = width - label_width - 44  # the count is written after the bar
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
    ]
    for i, (label, count) in enumerate(items):
        y = top + i * row
        bar = round(room * count / peak) if peak else 0
        parts.append(
            f'<text x="{label_width - 8}" y="{y + 16}" text-anchor="end" font-size="13" fill="#111827" {_FONT}>'
            f"{escape(str(label))}</text>"
            f'<rect x="{label_width}" y="{y + 4}" width="{max(bar, 1 if count else 0)}" height="16" rx="3" '
            f'fill="{_BAR}"><title>{escape(str(label))}: {count}</title></rect>'
            f'<text x="{label_width + bar + 6}" y="{y + 16}" font-size="12" fill="{_MUTED}" {_FONT}>{count}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def column_chart(
    items: Sequence[tuple[str, int]], *, title: str, width: int = 640, height: int = 200, max_labels: int = 8
) -> str:
    """Vertical bars over time (or any ordered axis), with a few of the labels written below.

    Args:
        items: ``(label, count)`` in axis order (see :func:`time_buckets`).
        title: what the chart shows.
        width: the drawing's width in pixels (it scales down with the page).
        height: the drawing's height in pixels.
        max_labels: at most this many axis labels are written (every bar has a tooltip).

    Returns:
        An ``<svg>`` element as a string; labels are escaped.

    Example:
        >>> svg = column_chart([("2024-01", 2), ("2024-02", 0), ("2024-03", 5)], title="per month")
        >>> svg.count("<rect"), "2024-03: 5" in svg
        (3, True)
    """
    if not items or not any(count for _, count in items):
        return _empty(title, width, height)
    left, right, top, bottom = 34, 8, 10, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(count for _, count in items)
    slot = plot_w / len(items)
    gap = min(4.0, slot * 0.2)
    every = max(1, -(-len(items) // max_labels))  # ceil: label every n-th bar
    parts = [
        f'<svg class="chart wide" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" stroke="{_GRID}"/>',
        f'<line x1="{left}" y1="{top}" x2="{width - right}" y2="{top}" stroke="{_GRID}" stroke-dasharray="3 3"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" font-size="11" fill="{_MUTED}" {_FONT}>{peak}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" font-size="11" fill="{_MUTED}" {_FONT}>0</text>',
    ]
    for i, (label, count) in enumerate(items):
        x = left + i * slot + gap / 2
        bar_h = plot_h * count / peak
        tip = f"{escape(str(label))}: {count}"
        parts.append(
            f'<rect x="{x:.1f}" y="{top + plot_h - bar_h:.1f}" width="{max(slot - gap, 1):.1f}" '
            f'height="{bar_h:.1f}" rx="2" fill="{_BAR}"><title>{tip}</title></rect>'
        )
        if i % every == 0:
            parts.append(
                f'<text x="{x + (slot - gap) / 2:.1f}" y="{height - 8}" text-anchor="middle" font-size="11" '
                f'fill="{_MUTED}" {_FONT}>{escape(str(label))}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _months(first: date, last: date) -> list[str]:
    out, year, month = [], first.year, first.month
    while (year, month) <= (last.year, last.month):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def time_buckets(times: Iterable[datetime], *, max_days: int = 62) -> tuple[str, list[tuple[str, int]]]:
    """Count points in time per day, or per month when they span more than ``max_days`` days.

    Every day (or month) between the first and the last is present, with 0 when nothing fell in
    it, so the bars form a true time axis.

    Args:
        times: the points in time (e.g. memories' ``created_at``).
        max_days: the longest span still counted per day.

    Returns:
        ``("day" | "month", [(label, count), ...])`` in time order; ``("day", [])`` for no times.

    Example:
        >>> from datetime import datetime
        >>> time_buckets([datetime(2024, 1, 1), datetime(2024, 1, 3), datetime(2024, 1, 3)])
        ('day', [('2024-01-01', 1), ('2024-01-02', 0), ('2024-01-03', 2)])
        >>> time_buckets([datetime(2023, 11, 5), datetime(2024, 2, 1)])[1]
        [('2023-11', 1), ('2023-12', 0), ('2024-01', 0), ('2024-02', 1)]
    """
    days = [t.date() for t in times]
    if not days:
        return "day", []
    first, last = min(days), max(days)
    if (last - first).days <= max_days:
        per_day = Counter(d.isoformat() for d in days)
        span = [date.fromordinal(n).isoformat() for n in range(first.toordinal(), last.toordinal() + 1)]
        return "day", [(label, per_day.get(label, 0)) for label in span]
    per_month = Counter(f"{d.year:04d}-{d.month:02d}" for d in days)
    return "month", [(label, per_month.get(label, 0)) for label in _months(first, last)]
