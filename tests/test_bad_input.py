"""Bad input gets a clear error and loses nothing."""

from __future__ import annotations

import pytest

from headroom_integrations import InvalidInputError, MemoryConfig, MemoryEngine, MemoryFilter


@pytest.mark.parametrize("content", ["", "   ", "\n\t"])
def test_empty_content_is_refused(engine: MemoryEngine, content: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        engine.add(content, user_id="u")
    assert engine.stats()["total"] == 0


def test_non_string_content_and_ids(engine: MemoryEngine) -> None:
    with pytest.raises(InvalidInputError, match="string"):
        engine.add(42, user_id="u")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="user_id"):
        engine.add("x", user_id="")
    with pytest.raises(InvalidInputError, match="user_id"):
        engine.add("x", user_id=None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="importance"):
        engine.add("x", user_id="u", importance=3)
    with pytest.raises(InvalidInputError, match="metadata"):
        engine.add("x", user_id="u", metadata={"bad": object()})


def test_one_megabyte_content_is_stored_whole(engine: MemoryEngine) -> None:
    big = ("The quick brown fox jumps over the lazy dog. " * 23_000)[:1_000_000] + " zebracorn"
    m = engine.add(big, user_id="u")
    assert engine.get(m.id).content == big  # type: ignore[union-attr]
    hits = engine.search("zebracorn", user_id="u")  # the tail is keyword-indexed although not embedded
    assert hits and hits[0].id == m.id


def test_too_large_content_is_refused(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(max_content_chars=1000)
    with pytest.raises(InvalidInputError, match="limit is 1000"):
        engine.add("x" * 1001, user_id="u")


def test_unknown_category_and_scope_list_valid_values(engine: MemoryEngine) -> None:
    with pytest.raises(ValueError, match="preference, fact, context, entity, decision, insight"):
        engine.add("x", user_id="u", category="opinion")
    with pytest.raises(ValueError, match="user, session, agent, turn"):
        engine.add("x", user_id="u", scope="global")
    with pytest.raises(ValueError, match="expected one of"):
        engine.search("x", user_id="u", categories=["nope"])
    with pytest.raises(ValueError, match="expected one of"):
        MemoryFilter(scopes=["planet"])
    with pytest.raises(ValueError, match="embedder_backend"):
        MemoryConfig(embedder_backend="cohere")
    assert engine.add("x", user_id="u", category="PREFERENCE", scope="User").category.value == "preference"


@pytest.mark.parametrize(
    "query",
    ['"', '""', "*", "NEAR(a b)", "a AND OR NOT b", "foo:bar", "(((", "^start", "col:*", "🚀🔥", "naïve café",
     "日本語のテキスト", "'; DROP TABLE memories; --", "a\x00b", "-", "AND", '"unterminated', "x" * 5000],
)
def test_fts_syntax_in_queries_never_raises(engine: MemoryEngine, query: str) -> None:
    engine.add("Enjoys naïve café culture and NEAR field radio", user_id="u")
    hits = engine.search(query, user_id="u")
    assert isinstance(hits, list)
    assert engine.stats()["total"] == 1


def test_search_argument_errors(engine: MemoryEngine) -> None:
    engine.add("Prefers tea", user_id="u")
    assert engine.search("", user_id="u") == [] and engine.search("  \n\t", user_id="u") == []  # one rule everywhere
    with pytest.raises(InvalidInputError, match="query"):
        engine.search(None, user_id="u")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="top_k"):
        engine.search("x", user_id="u", top_k=0)


def test_closed_engine_refuses_work(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine()
    engine.close()
    engine.close()  # idempotent
    with pytest.raises(InvalidInputError, match="closed"):
        engine.add("x", user_id="u")
