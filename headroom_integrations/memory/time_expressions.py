"""Time expressions in a query ("last week", "in May", "on 8 May, 2023", "two days ago") as a window.

A search reads the first such expression of its query against a reference time (by default now)
and gives memories stated within the window a small lift (``MemoryConfig.time_weight``): "what did
I cook last week" prefers what was said last week, without hiding anything else.

Recognised (case does not matter, all times UTC, a window is ``start <= t < end``):

* a day: ``8 May 2023``, ``8th of May, 2023``, ``May 8, 2023``, ``2023-05-08`` (also with a time,
  ``2023-05-08T10:00``), ``on May 8`` (the latest May 8 not after the reference, so ``on Feb 29``
  is the last leap day), ``today``, ``yesterday``, ``the day before yesterday``;
* a month: ``May 2023``, ``in May`` / ``during May`` (the latest May that has begun);
* a year: ``in 2023``, ``during 2023``, ``this year``, ``last year``;
* a week or weekend: ``this week``, ``last week``, ``last weekend``, ``this month``, ``last month``;
* a span back from the reference: ``last 3 days``, ``past two weeks``, ``in the past month``;
* a time ago: ``3 days ago``, ``a week ago``, ``two months ago`` (the unit's width centred there).

A month name needs a day, a year or ``in``/``during`` before it, so the verb "may" is never a month.
Only ASCII letters spell these words (a long s, U+017F, does not make "last week").
Expressions that name nothing (an impossible date such as 30 February 2023, a count of zero) give
no window, and the part of the query they cover is not read again as a shorter one ("February
2023"); neither is "the last week of May" read as the past seven days.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache

__all__ = ["TimeWindow", "time_window"]

_MONTHS = {
    name: number
    for number, names in enumerate(
        ("january jan", "february feb", "march mar", "april apr", "may", "june jun", "july jul",
         "august aug", "september sep sept", "october oct", "november nov", "december dec"),
        start=1,
    )
    for name in names.split()
}
_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
            "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "a couple of": 2, "a few": 3}
_UNIT_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}

_MONTH = r"(?P<month>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d\d)"
_OPTIONAL_YEAR = r"(?:,?\s+" + _YEAR + ")?"
_COUNT = r"(?P<count>\d{1,3}|" + "|".join(sorted(_NUMBERS, key=len, reverse=True)) + ")"
_UNIT = r"(?P<unit>day|week|month|year)s?"
_NOT_OF = r"(?!\s+of\b)"  # "the last week of May" is a week of May, not the past seven days

# (kind, pattern), tried in this order at every position; the leftmost match wins.
_PATTERNS = [
    ("iso", r"(?P<year>(?:19|20)\d\d)-(?P<month>[01]\d)-(?P<day>[0-3]\d)(?:T[\d:.]+(?:Z|[+-]\d\d:?\d\d)?)?"),
    ("day", _DAY + r"\s+(?:of\s+)?" + _MONTH + r",?\s+" + _YEAR),
    ("day", _MONTH + r"\s+" + _DAY + r",?\s+" + _YEAR),
    ("month", _MONTH + r",?\s+" + _YEAR),
    ("day", r"on\s+(?:the\s+)?" + _DAY + r"\s+(?:of\s+)?" + _MONTH + _OPTIONAL_YEAR),
    ("day", r"on\s+" + _MONTH + r"\s+" + _DAY + _OPTIONAL_YEAR),
    ("month", r"(?:in|during)\s+(?:early\s+|late\s+|mid-?\s*)?" + _MONTH + _OPTIONAL_YEAR),
    ("year", r"(?:in|during)\s+" + _YEAR),
    ("relative", r"(?P<relative>(?:the\s+)?day\s+before\s+yesterday|yesterday|today)"),
    ("period", r"(?P<which>this|last)\s+(?P<period>weekend|week|month|year)" + _NOT_OF),
    ("back", r"(?:last|past)\s+" + _COUNT + r"\s+" + _UNIT + _NOT_OF),
    ("back", r"(?:in\s+)?the\s+(?:last|past)\s+(?P<unit>day|week|month|year)" + _NOT_OF),
    ("ago", _COUNT + r"\s+" + _UNIT + r"\s+ago"),
]
# ASCII: ignoring case, Unicode would also let a long s (U+017F) stand for "s", a dotless i for "i".
_COMPILED = [(kind, re.compile(rf"\b(?:{pattern})\b", re.IGNORECASE | re.ASCII)) for kind, pattern in _PATTERNS]


@dataclass(frozen=True)
class TimeWindow:
    """A span of time a query names: ``start`` (included) to ``end`` (excluded), and its words.

    Example:
        >>> may, june = (datetime(2023, month, 1, tzinfo=timezone.utc) for month in (5, 6))
        >>> w = TimeWindow(may, june, "in May")
        >>> w.contains(datetime(2023, 5, 8, tzinfo=timezone.utc)), w.contains(w.end)
        (True, False)
    """

    start: datetime
    end: datetime
    text: str

    def contains(self, when: datetime) -> bool:
        """True if ``when`` (aware) lies in the window."""
        return self.start <= when < self.end


def time_window(query: str, now: datetime) -> TimeWindow | None:
    """The window named by the first time expression of ``query``, read against ``now`` (aware, or
    naive UTC); None when the query names no time (or an impossible date such as 31 February).

    Example:
        >>> now = datetime(2023, 7, 12, 15, 0, tzinfo=timezone.utc)
        >>> w = time_window("What did I cook last week?", now)
        >>> w.start.date(), w.end.date(), w.text
        (datetime.date(2023, 7, 3), datetime.date(2023, 7, 10), 'last week')
        >>> time_window("When did Sam go camping in June?", now).start.date()
        datetime.date(2023, 6, 1)
        >>> time_window("May I ask what she likes?", now) is None
        True
    """
    now = now.replace(tzinfo=timezone.utc) if now.tzinfo is None else now.astimezone(timezone.utc)
    covered = -1  # where the last expression that named nothing ends: nothing inside it is read again
    for kind, groups, text, start, end in _expressions(query):
        if start < covered:
            continue
        try:
            span = _window(kind, dict(groups), now)
        except (ValueError, OverflowError):  # 31 February, a year past 9999 and the like
            span = None
        if span is not None:
            return TimeWindow(span[0], span[1], text)
        covered = max(covered, end)
    return None


@lru_cache(maxsize=1024)
def _expressions(query: str) -> tuple[tuple[str, tuple[tuple[str, str], ...], str, int, int], ...]:
    """Every time expression of ``query`` as (kind, its named groups lower-cased, its text, where it
    starts and ends), leftmost first (the same query asked again, by a retry or a second adapter,
    is matched once)."""
    found = []
    for order, (kind, pattern) in enumerate(_COMPILED):
        for match in pattern.finditer(query):
            found.append((match.start(), order, kind, match))
    return tuple(
        (kind, tuple((name, value.lower()) for name, value in match.groupdict().items() if value is not None),
         match.group(0), match.start(), match.end())
        for _, _, kind, match in sorted(found, key=lambda item: item[:2])
    )


def _window(kind: str, g: dict[str, str], now: datetime) -> tuple[datetime, datetime] | None:
    """The window of one expression (None: it names no time); raises ValueError for an impossible date."""
    today = now.date()
    if kind in ("iso", "day"):
        month = int(g["month"]) if g["month"].isdigit() else _MONTHS[g["month"]]
        if "year" in g:
            return _days(date(int(g["year"]), month, int(g["day"])), 1)
        return _days(_latest(month, int(g["day"]), today), 1)
    if kind == "month":
        year, month = int(g.get("year", today.year)), _MONTHS[g["month"]]
        if "year" not in g and (year, month) > (today.year, today.month):
            year -= 1
        return _midnight(date(year, month, 1)), _midnight(_add_months(date(year, month, 1), 1))
    if kind == "year":
        return _midnight(date(int(g["year"]), 1, 1)), _midnight(date(int(g["year"]) + 1, 1, 1))
    if kind == "relative":
        back = 0 if g["relative"] == "today" else 1 if g["relative"] == "yesterday" else 2
        return _days(today - timedelta(days=back), 1)
    if kind == "period":
        return _period(g["which"], g["period"], today)
    count = _count(g.get("count", "1"))
    if count < 1:  # "0 days ago", "the last 0 weeks": no time at all
        return None
    width = timedelta(days=_UNIT_DAYS[g["unit"]])
    if kind == "back":
        return now - count * width, now
    centre = now - count * width
    return centre - width / 2, centre + width / 2


def _period(which: str, period: str, today: date) -> tuple[datetime, datetime]:
    shift = 1 if which == "last" else 0
    if period == "year":
        return _midnight(date(today.year - shift, 1, 1)), _midnight(date(today.year - shift + 1, 1, 1))
    if period == "month":
        first = _add_months(today.replace(day=1), -shift)
        return _midnight(first), _midnight(_add_months(first, 1))
    monday = today - timedelta(days=today.weekday()) - timedelta(weeks=shift)
    if period == "week":
        return _days(monday, 7)
    return _days(monday + timedelta(days=5), 2)  # the weekend of that week: Saturday and Sunday


def _latest(month: int, day: int, today: date) -> date:
    """The latest ``month``/``day`` not after ``today`` (29 February: the last leap day, at most
    eight years back); ValueError if there is none."""
    for year in range(today.year, today.year - 9, -1):
        try:
            found = date(year, month, day)
        except ValueError:
            continue
        if found <= today:
            return found
    raise ValueError(f"no {month}/{day} in the nine years up to {today}")


def _count(word: str) -> int:
    return int(word) if word.isdigit() else _NUMBERS[" ".join(word.split())]


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=timezone.utc)


def _days(first: date, count: int) -> tuple[datetime, datetime]:
    return _midnight(first), _midnight(first + timedelta(days=count))


def _add_months(first: date, months: int) -> date:
    index = first.year * 12 + first.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)
