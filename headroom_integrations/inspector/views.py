"""What the inspector's pages show, gathered from the engine (plain blocking code: the app runs
these functions in a worker thread) and the links between the pages.

Example:
    >>> links = Links("")
    >>> links.user("eve/x y"), links.user("alice", category="fact")
    ('/users/eve%2Fx%20y', '/users/alice?category=fact')
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from headroom_integrations.errors import MemoryNotFoundError
from headroom_integrations.inspector.charts import bar_chart, column_chart, time_buckets
from headroom_integrations.memory import MemoryCategory, MemoryEngine, MemoryFilter, MemoryScope, SearchResult

__all__ = ["MISSING", "PAGE_SIZE", "Links", "UserQuery", "forget", "index_page", "memory_page", "score", "user_page",
           "when"]

PAGE_SIZE = 100
TOP_K = 10
MISSING = "\u2013"  # an en dash: what the pages show for a missing value
_SCORE_PARTS = ("score", "fused_score", "vector_rank", "text_rank", "vector_part", "keyword_part", "context_part")


class Links:
    """The inspector's URLs under a root path (where the app is mounted; ``""`` at the top).

    Args:
        root: the ASGI ``root_path``.

    Example:
        >>> Links("/inspect").memory("m 1"), Links("").forget("m1")
        ('/inspect/memories/m%201', '/memories/m1/forget')
    """

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")

    def home(self) -> str:
        """The users page."""
        return f"{self.root}/"

    def css(self) -> str:
        """The stylesheet."""
        return f"{self.root}/static/inspector.css"

    def user(self, user_id: str, **params: Any) -> str:
        """A user's page, with query parameters (None and empty values are left out)."""
        query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
        return f"{self.root}/users/{quote(user_id, safe='')}" + (f"?{query}" if query else "")

    def memory(self, memory_id: str, **params: Any) -> str:
        """A memory's page (with its chain)."""
        query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
        return f"{self.root}/memories/{quote(memory_id, safe='')}" + (f"?{query}" if query else "")

    def forget(self, memory_id: str) -> str:
        """Where the Forget form posts."""
        return f"{self.root}/memories/{quote(memory_id, safe='')}/forget"

    def rollback(self, memory_id: str) -> str:
        """Where the Roll back form posts."""
        return f"{self.root}/memories/{quote(memory_id, safe='')}/rollback"


@dataclass(frozen=True)
class UserQuery:
    """The filters of a user's page, read from its query string.

    Example:
        >>> q = UserQuery.parse({"category": "fact", "versions": "all", "page": "2"})
        >>> q.category, q.include_superseded, q.page
        ('fact', True, 2)
        >>> q.params(page=1)
        {'category': 'fact', 'versions': 'all'}
    """

    scope: str = ""
    session: str = ""
    category: str = ""
    versions: str = "current"
    q: str = ""
    page: int = 1

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> UserQuery:
        """The filters in ``params`` (unknown keys are ignored; values are checked by the engine)."""
        try:
            page = max(1, int(params.get("page", "1")))
        except ValueError:
            page = 1
        versions = "all" if params.get("versions") == "all" else "current"
        return cls(scope=params.get("scope", "").strip(), session=params.get("session", ""),
                   category=params.get("category", "").strip(), versions=versions,
                   q=params.get("q", "")[:2000], page=page)

    @property
    def include_superseded(self) -> bool:
        """True when every version is shown, not only the current ones."""
        return self.versions == "all"

    def params(self, **changes: Any) -> dict[str, Any]:
        """The query parameters of this view with ``changes`` applied, defaults left out."""
        view = replace(self, **changes)
        out = {"scope": view.scope, "session": view.session, "category": view.category, "q": view.q,
               "versions": "all" if view.include_superseded else "", "page": view.page if view.page > 1 else ""}
        return {k: v for k, v in out.items() if v != ""}

    def memory_filter(self, user_id: str) -> MemoryFilter:
        """The engine filter for this view.

        Raises:
            InvalidInputError: an unknown scope or category.
        """
        return MemoryFilter(user_id=user_id, session_id=self.session or None,
                            categories=self.category or None, scopes=self.scope or None,
                            include_superseded=self.include_superseded)


def _category_chart(counts: Mapping[str, int], title: str) -> str:
    return bar_chart([(c.value, int(counts.get(c.value, 0))) for c in MemoryCategory], title=title)


def _hit_row(hit: SearchResult) -> dict[str, Any]:
    """A search hit with its score parts; a part this engine does not report is None (shown as a dash)."""
    row = {name: getattr(hit, name, None) for name in _SCORE_PARTS}
    return {"memory": hit.memory, **row}


def index_page(engine: MemoryEngine) -> dict[str, Any]:
    """The users page: every user with counts, the store's stats and its charts.

    Example::

        index_page(engine)["users"]  # [UserCounts(user_id='alice', total=3, current=2), ...]
    """
    users = engine.users()
    stats = engine.stats()
    return {
        "users": users,
        "stats": stats,
        "category_chart": _category_chart(stats["categories"], "Current memories per category"),
        "scope_chart": bar_chart([(s.value, int(stats["scopes"].get(s.value, 0))) for s in MemoryScope],
                                 title="Current memories per scope"),
    }


def user_page(engine: MemoryEngine, user_id: str, view: UserQuery) -> dict[str, Any]:
    """A user's page: their memories under the view's filters (newest first, one page of them),
    the charts of the filtered set, the sessions to filter by, and the search hits of ``view.q``.

    Raises:
        InvalidInputError: an unknown scope or category in the filters.

    Example::

        user_page(engine, "alice", UserQuery(category="fact"))["matched"]  # 12
    """
    flt = view.memory_filter(user_id)
    every = engine.query(MemoryFilter(user_id=user_id, include_superseded=True))
    sessions = sorted({m.session_id for m in every if m.session_id is not None})
    matched = engine.query(flt)
    matched.reverse()  # newest first
    pages = max(1, -(-len(matched) // PAGE_SIZE))
    page = min(view.page, pages)
    shown = matched[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    unit, buckets = time_buckets(m.created_at for m in matched)
    per_category = Counter(m.category.value for m in matched)
    hits = None
    if view.q.strip():
        found = engine.search(view.q, user_id, session_id=view.session or None, top_k=TOP_K,
                              categories=flt.categories, scopes=flt.scopes,
                              include_superseded=view.include_superseded)
        hits = [_hit_row(hit) for hit in found]
    return {
        "user_id": user_id,
        "known": bool(every),
        "total": len(every),
        "current": sum(1 for m in every if m.is_current),
        "view": view,
        "sessions": sessions,
        "memories": shown,
        "matched": len(matched),
        "page": page,
        "pages": pages,
        "category_chart": _category_chart(per_category, "Memories per category (filtered)"),
        "time_chart": column_chart(buckets, title=f"Memories created per {unit} (filtered)"),
        "time_unit": unit,
        "hits": hits,
        "categories": [c.value for c in MemoryCategory],
        "scopes": [s.value for s in MemoryScope],
    }


def memory_page(engine: MemoryEngine, memory_id: str) -> dict[str, Any]:
    """A memory's page: the memory and every version of its fact, oldest first.

    Raises:
        MemoryNotFoundError: no memory with this id.

    Example::

        [v.is_current for v in memory_page(engine, new.id)["history"]]  # [False, False, True]
    """
    memory = engine.get(memory_id)
    if memory is None:
        raise MemoryNotFoundError(memory_id)
    history = engine.get_history(memory_id)
    return {"memory": memory, "history": history, "has_current": any(m.is_current for m in history)}


def forget(engine: MemoryEngine, memory_id: str, all_versions: bool) -> tuple[str, str | None]:
    """Delete a version (or the whole fact); return its user and a version of the fact that is left.

    Raises:
        MemoryNotFoundError: no memory with this id.

    Example::

        user_id, left = forget(engine, memory.id, all_versions=False)
    """
    memory = engine.get(memory_id)
    if memory is None:
        raise MemoryNotFoundError(memory_id)
    history = [] if all_versions else [m for m in engine.get_history(memory_id) if m.id != memory_id]
    if not engine.delete(memory_id, all_versions=all_versions):
        raise MemoryNotFoundError(memory_id)  # deleted meanwhile by someone else
    left = next((m for m in history if m.is_current), history[-1] if history else None)
    return memory.user_id, None if left is None else left.id


def when(value: datetime | None) -> str:
    """A point in time as the pages show it (UTC, to the second); :data:`MISSING` for None.

    Example:
        >>> from datetime import datetime, timezone
        >>> when(datetime(2024, 5, 1, 9, 30, tzinfo=timezone.utc)), when(None) == MISSING
        ('2024-05-01 09:30:00', True)
    """
    if value is None:
        return MISSING
    return value.strftime("%Y-%m-%d %H:%M:%S")


def score(value: object, digits: int = 3) -> str:
    """A score part as the search table shows it: :data:`MISSING` when missing.

    Example:
        >>> score(0.12345), score(None) == MISSING, score(3)
        ('0.123', True, '3')
    """
    if value is None:
        return MISSING
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return MISSING
