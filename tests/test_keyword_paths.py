"""The SQLite backend ranks keyword matches inside FTS5 and filters them in RAM when it can (no
SQL join): that must find exactly what the plain SQL join finds, for any share of the store the
caller sees, with superseded versions, rows still waiting for their vector and category filters."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headroom_integrations.memory.backends.base import Revision, SearchScope
from headroom_integrations.memory.backends.sqlite import keyword_side
from headroom_integrations.memory.backends.sqlite.backend import SqliteBackend
from headroom_integrations.memory.backends.sqlite.driver import fts_search
from headroom_integrations.memory.models import MemoryCategory
from headroom_integrations.memory.text_query import query_terms
from headroom_integrations.memory.validation import new_memory

pytestmark = pytest.mark.sqlite_only

DIM = 8
WORDS = ["garden", "tomato", "chess", "violin", "kayak", "sourdough", "Tokyo", "ferret", "hike", "opera"]
USERS = ["u0", "u1", "u2", "u3"]

rows = st.lists(
    st.tuples(
        st.sampled_from(USERS + ["u0"] * 6),  # u0 is most of the store in some draws, a sliver in others
        st.sampled_from([None, "s1"]),
        st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join),
        st.sampled_from(list(MemoryCategory)),
        st.sampled_from(["embedded", "waiting", "superseded"]),
    ),
    min_size=1, max_size=60,
)


def _store(path: Path, spec: list[tuple]) -> SqliteBackend:  # type: ignore[type-arg]
    backend = SqliteBackend(path, "test/model", DIM, brute_force_max=6)
    rng = np.random.default_rng(0)
    for user, session, text, category, state in spec:
        vector = rng.standard_normal(DIM).astype(np.float32)
        vector /= np.linalg.norm(vector)
        memory = new_memory(10_000, text, user, session, category=category)
        [(stored, _)] = backend.insert([memory], [None if state == "waiting" else vector], dedupe=False)
        if state == "superseded":
            backend.supersede(stored.id, str(uuid.uuid4()), Revision(content=f"{text} again"), vector, False)
    return backend


@pytest.mark.parametrize("rank_all", [True, False], ids=["few-matches", "deepening"])
@given(spec=rows, query=st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(" ".join),
       user=st.sampled_from(USERS), session=st.sampled_from([None, "s1"]),
       categories=st.sampled_from([None, (MemoryCategory.FACT,), (MemoryCategory.PREFERENCE, MemoryCategory.FACT)]),
       limit=st.integers(1, 6), history=st.booleans())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_in_index_ranking_finds_what_the_join_finds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rank_all: bool,
                                                    spec: list[tuple], query: str,  # type: ignore[type-arg]
                                                    user: str, session: str | None,
                                                    categories: tuple[MemoryCategory, ...] | None,
                                                    limit: int, history: bool) -> None:
    """``deepening``: as if the terms matched many rows (ranked only as deep as the visible share
    suggests, deeper while the filters leave fewer than asked for)."""
    monkeypatch.setattr(keyword_side, "RANK_EVERY_MATCH_MAX", 5000 if rank_all else 0)
    backend = _store(tmp_path / f"{uuid.uuid4().hex}.db", spec)
    try:
        keyword = backend.keyword_query(query_terms(query), 10_000, 1.0)
        if keyword is None:
            return
        scope = SearchScope(user, session_id=session, categories=categories, include_superseded=history)
        found = backend.keyword_search(keyword, scope, limit)
        with backend.connect() as conn:
            expected = [(pk, score / keyword.scale)
                        for pk, score in fts_search(conn, keyword.terms, backend.scope_condition(scope), limit)]
        assert [s for _, s in found] == pytest.approx([s for _, s in expected])
        cut = expected[-1][1] if len(expected) == limit else None  # ties at the cut may be either
        assert {pk for pk, s in found if s != cut} == {pk for pk, s in expected if s != cut}
    finally:
        backend.close()


def test_ranking_goes_deeper_while_filters_leave_too_few(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller sees most rows, but the category filter keeps only the last-ranked one."""
    monkeypatch.setattr(keyword_side, "RANK_EVERY_MATCH_MAX", 0)
    spec = [("u0", None, "garden", MemoryCategory.CONTEXT, "embedded")] + [
        ("u0", "s1", "garden", MemoryCategory.PREFERENCE, "embedded")] * 2 + [
        ("u0", None, "garden", MemoryCategory.PREFERENCE, "embedded")] * 2
    backend = _store(tmp_path / "m.db", spec)
    try:
        keyword = backend.keyword_query(["garden"], 10_000, 1.0)
        assert keyword is not None
        found = backend.keyword_search(keyword, SearchScope("u0", categories=(MemoryCategory.PREFERENCE,)), 1)
        assert len(found) == 1 and backend.rows([found[0][0]])[found[0][0]].memory.session_id is None
    finally:
        backend.close()


def test_a_sliver_of_a_large_store_is_ranked_without_a_join(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user owning a few rows of many: the matches are ranked in FTS5 alone (no row is read per match)."""
    spec = [(f"other-{i % 50}", None, "garden tomato" if i % 3 == 0 else "chess opera", MemoryCategory.FACT, "embedded")
            for i in range(300)]
    spec += [("me", None, "my garden has tomato plants", MemoryCategory.FACT, "embedded"),
             ("me", None, "waiting garden note", MemoryCategory.FACT, "waiting")]
    backend = _store(tmp_path / "m.db", spec)
    joins: list[int] = []
    monkeypatch.setattr(keyword_side, "fts_search", lambda *args: joins.append(1) or [])
    try:
        keyword = backend.keyword_query(query_terms("garden tomato"), 10_000, 1.0)
        assert keyword is not None and keyword.postings == 2 * 100 + 2 + 1  # garden 102, tomato 101
        found = backend.keyword_search(keyword, SearchScope("me"), 5)
        contents = [m.content for m in (backend.rows([pk for pk, _ in found])[pk].memory for pk, _ in found)]
        assert sorted(contents) == ["my garden has tomato plants", "waiting garden note"] and not joins
    finally:
        backend.close()
