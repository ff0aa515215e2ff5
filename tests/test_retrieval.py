"""How hybrid search ranks: normalised keyword scores, score fusion and neighbouring-memory context."""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from headroom_integrations import InvalidInputError, MemoryConfig, MemoryEngine
from headroom_integrations.memory.backends import SearchScope, StoredRow
from headroom_integrations.memory.models import MemoryCategory, MemoryScope
from headroom_integrations.memory.text_query import idf, query_terms
from headroom_integrations.memory.visibility import bucket_key

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_engine import Corpus

FILLER = [
    "Caroline went hiking in the mountains last weekend",
    "Melanie painted a sunset over the lake",
    "Caroline joined a support group on Tuesday",
    "Melanie's kids love the beach in summer",
    "Caroline is reading a book about adoption",
    "Melanie signed up for a pottery class",
    "Caroline gave a talk at the school about her journey",
    "Melanie camped with her family in the forest",
]
QUESTION_TURN = "Caroline: Did you end up picking a name for the puppy?"
ANSWER_TURN = "Melanie: Yes! We called her Biscuit, after the cookies."


def test_idf_matches_sqlite_fts5() -> None:
    assert idf(1, 100) == pytest.approx(np.log(99.5 / 1.5))
    assert idf(60, 100) == 1e-6  # FTS5 clamps a negative IDF
    assert idf(5, 3) == 1e-6  # a stale row count never makes the logarithm fail


def test_keyword_scores_are_normalised_by_the_query(engine: MemoryEngine) -> None:
    engine.add_batch(["Bob adopted a greyhound named Pixel", "Bob went to the bakery", "Alice likes tea",
                      "Carol plays chess", "Dan swims at dawn"], user_id="u")
    store = engine.backend

    def ranked(query: str) -> dict[int, float]:
        keyword_query = store.keyword_query(query_terms(query), 1000, 1.0)
        assert keyword_query is not None
        hits = dict(store.keyword_search(keyword_query, SearchScope("u"), 10))
        # Scoring given memories (candidates the ranking did not reach) gives the same scores.
        assert store.candidate_scores(np.zeros(384, np.float32), keyword_query, [], [*hits, 10**6])[1] == pytest.approx(hits)
        return hits

    hits = ranked("greyhound named Pixel?")
    assert len(hits) == 1
    assert 0.5 < max(hits.values()) < 2.0  # every query term matched once: about 1
    partial = ranked("Bob's greyhound")
    # The memory sharing only the more common word scores well below the one sharing both.
    assert len(partial) == 2
    assert min(partial.values()) < 0.6 * max(partial.values())
    assert store.keyword_query(query_terms("the and of"), 1000, 1.0) is None  # no usable term


def test_a_weak_keyword_match_does_not_beat_a_clear_meaning_match(engine: MemoryEngine) -> None:
    bob = ["Bob went to the bakery on Monday", "Bob fixed his bike", "Bob's favourite drink is green tea"]
    others = ["Alice moved to Lisbon", "Alice writes Go at work", "Carol plays chess on Sundays",
              "Dan swims at dawn", "Erin collects vinyl records"]
    engine.add_batch(bob + others, user_id="u")
    hits = engine.search("Which beverage does Bob enjoy?", user_id="u", top_k=3)
    assert hits[0].memory.content == "Bob's favourite drink is green tea"


def _search_answer(
    make_engine: Callable[..., MemoryEngine], context_weight: float, tmp: str, brute_force_max: int
) -> list[str]:
    # The diversity step off: it reorders the near-equal filler, which this test is not about.
    engine = make_engine(db_path=tmp, context_weight=context_weight, brute_force_max=brute_force_max,
                         diversity_weight=0.0)
    if not engine.stats("u")["total"]:
        engine.add_batch([*FILLER, QUESTION_TURN, ANSWER_TURN], user_id="u")
    hits = engine.search("What is the name of Melanie's puppy?", user_id="u", top_k=3)
    return [h.memory.content for h in hits]


@pytest.mark.parametrize("brute_force_max", [8192, 0], ids=["exact", "hnsw"])
def test_context_brings_up_the_reply_next_to_a_matching_turn(
    make_engine: Callable[..., MemoryEngine], tmp_path: Path, brute_force_max: int
) -> None:
    db = str(tmp_path / "context.db")
    # Top 3: with two neighbours on each side, the filler stored just before the question is
    # lifted as much as the reply after it, and on some CPUs the int8 model gives both the same
    # cosine (a tie for second place).
    without = _search_answer(make_engine, 0.0, db, brute_force_max)
    with_context = _search_answer(make_engine, 0.5, db, brute_force_max)
    assert QUESTION_TURN in without and QUESTION_TURN in with_context
    assert ANSWER_TURN not in without
    assert ANSWER_TURN in with_context
    assert MemoryConfig().context_weight > 0  # on by default


def test_a_memory_searched_by_its_own_words_comes_first_despite_context(engine: MemoryEngine) -> None:
    # The benchmark's synthetic memories: templated, so neighbours are often near-twins.
    corpus = Corpus(seed=11).memories(600)
    engine.add_batch(corpus, user_id="u")
    for item in corpus[::6]:
        assert engine.search(item["content"], user_id="u", top_k=5)[0].memory.content == item["content"]


def test_context_never_ranks_a_memory_above_the_neighbour_that_lifts_it(engine: MemoryEngine) -> None:
    engine.add_batch([*FILLER, QUESTION_TURN, ANSWER_TURN], user_id="u")
    hits = [h.memory.content for h in engine.search("What is the name of Melanie's puppy?", user_id="u", top_k=5)]
    assert hits.index(QUESTION_TURN) < hits.index(ANSWER_TURN)


def test_context_only_links_memories_of_the_same_owner(engine: MemoryEngine) -> None:
    engine.add(QUESTION_TURN, user_id="a")
    engine.add(ANSWER_TURN, user_id="b")  # stored right after, but by someone else
    engine.add(FILLER[0], user_id="a")
    query = engine.embedder.embed_one("puppy")
    first, last = sorted(pk for pk, _ in engine.backend.nearest(query, SearchScope("a"), 10)[0])
    [(middle, _)] = engine.backend.nearest(query, SearchScope("b"), 10)[0]
    assert first < middle < last
    neighbours, scores = engine.backend.neighbours([first, middle], SearchScope("a"), query, None)
    assert neighbours[first] == [last]  # skips b's memory in between
    assert middle not in neighbours  # b's memory is not visible to a
    assert set(scores.cosine) == {last} and scores.keyword == {}  # the neighbour's scores come along


def _reference_neighbours(
    rows: dict[int, StoredRow], given: list[int], scope: SearchScope, span: int = 1, reach: int = 8
) -> dict[int, list[int]]:
    """The rule ``neighbours`` implements, over every stored row: for each given row that the scope
    sees (categories aside), the nearest ``span`` current, embedded rows of its own bucket on each
    side within ``reach`` primary keys, kept when their category is searched; in key order."""
    def key(row: StoredRow) -> tuple[object, ...]:
        m = row.memory
        return bucket_key(m.user_id, m.scope, m.session_id, m.agent_id, m.turn_id)

    live = {pk: row for pk, row in rows.items() if row.memory.is_current and row.vector is not None}
    out: dict[int, list[int]] = {}
    for pk in given:
        row = live.get(pk)
        if row is None or key(row) not in scope.buckets():
            continue
        found = []
        for step in (-1, 1):
            near = [pk + step * d for d in range(1, reach + 1)
                    if pk + step * d in live and key(live[pk + step * d]) == key(row)][:span]
            found += [other for other in near
                      if scope.categories is None or live[other].memory.category in scope.categories]
        out[pk] = sorted(found)
    return out


def test_neighbours_follow_the_bucket_rule_on_generated_stores(engine: MemoryEngine) -> None:
    """Seeded fuzz: two users, every scope, several sessions/agents/turns, categories, superseded and
    deleted rows; each backend's ``neighbours`` equals the rule computed from the stored rows."""
    rng = random.Random(7)
    texts = [item["content"] for item in Corpus(seed=11).memories(160)]
    added = []
    for text in texts:  # ids a row's scope ignores are stored too (a user-level memory learned in s1)
        added.append(engine.add(
            text, user_id=rng.choice(["u", "v"]), session_id=rng.choice(["s1", "s2"]),
            agent_id=rng.choice(["a1", "a2"]), turn_id=rng.choice(["t1", "t2"]),
            scope=rng.choice(list(MemoryScope)), category=rng.choice(list(MemoryCategory)),
        ))
    for memory in rng.sample(added, 20):
        engine.supersede(memory.id, memory.content + " (changed)")
    for memory in rng.sample(added, 10):
        engine.delete(memory.id)
    store = engine.backend
    store.refresh()
    rows = store.rows(list(range(1, len(texts) + 40)))
    vector = engine.embedder.embed_one("hiking")
    found_links = 0
    for _ in range(40):
        scope = SearchScope(
            rng.choice(["u", "v"]), session_id=rng.choice(["s1", "s2", None]), agent_id=rng.choice(["a1", None]),
            turn_id=rng.choice(["t1", None]),
            categories=rng.choice([None, tuple(rng.sample(list(MemoryCategory), 3))]),
            scopes=rng.choice([None, (MemoryScope.USER, MemoryScope.SESSION)]),
        )
        given, span = rng.sample(sorted(rows), 12), rng.choice([1, 2, 3])
        links, scores = store.neighbours(given, scope, vector, None, span)
        assert links == _reference_neighbours(rows, given, scope, span)
        linked = {other for found in links.values() for other in found if other not in given}
        assert set(scores.cosine) == linked
        found_links += len(linked)
    assert found_links >= 20  # the comparisons above were about real links


@pytest.mark.sqlite_only  # the SQLite index's float16 matrices
def test_similarities_of_large_buckets_are_close_to_exact(make_engine: Callable[..., MemoryEngine]) -> None:
    small = make_engine(db_path=":memory:")
    large = make_engine(db_path=":memory:", brute_force_max=0)  # every bucket past the limit: float16
    texts = [*FILLER, QUESTION_TURN, ANSWER_TURN]
    for engine in (small, large):
        engine.add_batch(texts, user_id="u")
    query = small.embedder.embed_one("a puppy called Biscuit")
    exact = small.backend.index.similarities(query, sorted(small.backend.index._where))
    halved = large.backend.index.similarities(query, sorted(large.backend.index._where))
    assert list(exact.values()) == pytest.approx(list(halved.values()), abs=3e-3)
    assert not large.backend.index._buckets[0].exact and small.backend.index._buckets[0].exact


@pytest.mark.parametrize("field", ["vector_weight", "text_weight", "context_weight"])
@pytest.mark.parametrize("value", [-0.1, float("inf"), float("nan")])
def test_fusion_weights_are_validated(field: str, value: float) -> None:
    with pytest.raises(InvalidInputError, match=field):
        MemoryConfig(db_path=":memory:", **{field: value})


def test_context_weight_is_a_share() -> None:
    with pytest.raises(InvalidInputError, match=r"context_weight must be within 0\.\.1"):
        MemoryConfig(db_path=":memory:", context_weight=1.5)
    assert MemoryConfig(db_path=":memory:", context_weight=1.0).context_weight == 1.0


def test_vector_and_text_weight_cannot_both_be_zero() -> None:
    with pytest.raises(InvalidInputError, match="both be 0"):
        MemoryConfig(db_path=":memory:", vector_weight=0, text_weight=0)


def test_keyword_only_and_vector_only_weights_still_search(make_engine: Callable[..., MemoryEngine]) -> None:
    for vector_weight, text_weight in ((0.0, 1.0), (1.0, 0.0)):
        engine = make_engine(db_path=":memory:", vector_weight=vector_weight, text_weight=text_weight)
        engine.add_batch(["Alice adopted a greyhound named Pixel", "Carol plays chess"], user_id="u")
        hits = engine.search("greyhound Pixel", user_id="u", top_k=1)
        assert hits[0].memory.content == "Alice adopted a greyhound named Pixel"


def test_a_memory_the_keyword_ranking_cut_off_keeps_its_keyword_score(engine: MemoryEngine) -> None:
    """Many memories tie on the keyword side and the ranking stops before the searched one: the
    vector side finds it, and it must still get its keyword score (it matches every used term)."""
    names = ["Chloe", "Greta", "Maya", "Omar", "Priya", "Rosa", "Sanjay", "Tomas", "Wen", "Zofia", "Ava", "Ben",
             "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jae", "Kai", "Lea", "Milo", "Nia", "Oto", "Pia",
             "Rex", "Sol", "Tao", "Uma"]
    engine.add_batch([f"{name} works at Cyberdyne as a designer." for name in names], user_id="u")
    # "Quinn" is in most memories, so keyword search leaves it out: every designer ties on BM25.
    engine.add_batch([f"Quinn went hiking on day {day}." for day in range(40)], user_id="u")
    target = engine.add("Quinn works at Cyberdyne as a designer.", user_id="u")  # the last of the ties
    hits = engine.search("Quinn works at Cyberdyne as a designer.", user_id="u", top_k=5)
    assert hits[0].memory.id == target.id
    assert hits[0].text_rank is None  # found by the vector side alone, yet ranked first


def test_keyword_scores_of_given_memories_equal_sqlite_bm25(engine: MemoryEngine) -> None:
    """candidate_scores (BM25 computed from the indexed text) gives exactly the scores the keyword ranking gives
    (on SQLite: FTS5's own bm25)."""
    engine.add_batch([
        "Bob adopted a greyhound named Pixel; Pixel the greyhound loves Pixel treats",
        "Naïve café owner in Zürich serves crème brûlée", "東京 で ラーメン を 食べた greyhound",
        "greyhound", "A very long note " + "about many unrelated things " * 30 + "and one greyhound",
        "Carol plays chess", "Pixel art is Bob's hobby",
    ], user_id="u")
    store = engine.backend
    for question in ("greyhound Pixel", "café Zürich brûlée", "東京 greyhound", "Bob chess Pixel art"):
        query = store.keyword_query(query_terms(question), 1000, 1.0)
        assert query is not None
        ranked = dict(store.keyword_search(query, SearchScope("u"), 100))
        assert ranked and store.candidate_scores(np.zeros(384, np.float32), query, [], list(ranked))[1] == pytest.approx(
            ranked, rel=1e-9)


@pytest.mark.parametrize("brute_force_max", [0, 8192])  # 0: every search walks the HNSW graph
def test_nearest_gives_the_scores_candidate_scores_gives(
    make_engine: Callable[..., MemoryEngine], brute_force_max: int
) -> None:
    """The scores the nearest-neighbour search returns in the same round trip (cosines of the
    keyword side's hits, BM25 of its own hits) are exactly what ``candidate_scores`` computes."""
    engine = make_engine(brute_force_max=brute_force_max)
    engine.add_batch([*FILLER, QUESTION_TURN, ANSWER_TURN, *Corpus(seed=3).memories(60)], user_id="u")
    store = engine.backend
    one_sided = 0
    for question in ("puppy name", "Melanie dog", "hiking on the weekend", "coffee preferences"):
        vector = engine.embedder.embed_one(question)
        query = store.keyword_query(query_terms(question), 1000, 1.0)
        known = [pk for pk, _ in store.keyword_search(query, SearchScope("u"), 20)] if query is not None else []
        hits, found = store.nearest(vector, SearchScope("u"), 10, query, known)
        assert len(hits) == 10 and [cos for _, cos in hits] == sorted((cos for _, cos in hits), reverse=True)
        keyword_only = [pk for pk in known if pk not in dict(hits)]
        vector_only = [pk for pk, _ in hits if pk not in known]
        expected = store.candidate_scores(vector, query, keyword_only, vector_only)
        one_sided += bool(keyword_only) + bool(vector_only)
        assert found.cosine == pytest.approx(expected.cosine) and set(found.cosine) == set(keyword_only)
        assert found.keyword == pytest.approx(expected.keyword)
    assert one_sided >= 4  # the checks above compared something


@pytest.mark.parametrize("brute_force_max", [0, 8192])  # 0: every search walks the HNSW graph
def test_a_user_owning_a_tiny_share_finds_all_of_their_memories(
    make_engine: Callable[..., MemoryEngine], brute_force_max: int
) -> None:
    """Visibility is applied inside the nearest-neighbour search, not after a fixed top-k: a user
    with 5 of 1,505 memories gets all 5 (and nobody else's), ranked by similarity."""
    engine = make_engine(brute_force_max=brute_force_max)
    engine.add_batch(Corpus(seed=5).memories(1500), user_id="big")
    small = engine.add_batch(["Keeps bees on the roof", "Plays the cello", "Allergic to peanuts",
                              "Drives a green van", "Grew up in Porto"], user_id="small")
    for query in ("beekeeping", "musical instrument", "food allergy", "car", "childhood city"):
        hits = engine.search(query, user_id="small", top_k=5)
        assert sorted(h.id for h in hits) == sorted(m.id for m in small)
    assert engine.search("cello", user_id="small", top_k=1)[0].content == "Plays the cello"


@pytest.mark.parametrize("value", [0, 5, 1.5, "2", True, None])
def test_context_span_is_validated(value: object) -> None:
    with pytest.raises(InvalidInputError, match="context_span"):
        MemoryConfig(db_path=":memory:", context_span=value)  # type: ignore[arg-type]


def test_a_wider_context_span_reaches_the_reply_two_turns_away(make_engine: Callable[..., MemoryEngine]) -> None:
    """The answer two turns after the matching question (a reply in between) is lifted only when
    two neighbours on each side count as context."""
    turns = [*FILLER, QUESTION_TURN, "Caroline: Oh wait, let me guess first!", ANSWER_TURN, *FILLER[:2]]
    ranks = {}
    for span in (1, 2):
        engine = make_engine(context_span=span, diversity_weight=0.0)
        engine.add_batch(turns, user_id="u")
        hits = engine.search("What is the name of Melanie's puppy?", user_id="u", top_k=3)
        ranks[span] = [h.memory.content for h in hits]
    assert ANSWER_TURN not in ranks[1] and ANSWER_TURN in ranks[2]
    assert MemoryConfig().context_span == 2


def test_searches_go_on_when_the_term_cache_starts_over(
    make_engine: Callable[..., MemoryEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long-lived process meets more distinct query terms than its cache of their counts keeps
    (50,000; here 2): the cache starts over, and a search mixing a cached term with a new one
    still finds what it should (both backends raised KeyError there)."""
    from headroom_integrations.memory.backends import keywords

    monkeypatch.setattr(keywords, "MAX_CACHED_TERMS", 2)
    engine = make_engine()
    engine.add_batch(["Sam went hiking near a fjord", "Sam plays chess with Ana", "Ana keeps bees in Lisbon"],
                     user_id="u")
    for query, expected in [("hiking fjord", "Sam went hiking near a fjord"), ("chess bees", None),
                            ("hiking chess", None), ("fjord bees Lisbon", None), ("chess Ana", "Sam plays chess with Ana")]:
        hits = engine.search(query, user_id="u", top_k=3)
        assert hits, query
        if expected is not None:
            assert hits[0].memory.content == expected, query


@pytest.mark.sqlite_only  # the SQLite backend's cache of its term counts
def test_term_counts_are_cached_and_reread_after_256_changes(
    make_engine: Callable[..., MemoryEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Term counts are read once, then again after 256 changes to the store (a stale count only
    shifts the BM25 statistics a little)."""
    from headroom_integrations.memory.backends.sqlite import keyword_side

    engine = make_engine()
    engine.add_batch([f"Sam went hiking, trip {i}" for i in range(500)] + ["a rare fjord"], user_id="u")
    counted: list[list[str]] = []
    real = keyword_side.document_frequencies

    def counting(conn, terms, counts_terms):  # type: ignore[no-untyped-def]
        counted.append(sorted(terms))
        return real(conn, terms, counts_terms)

    monkeypatch.setattr(keyword_side, "document_frequencies", counting)
    store = engine.backend
    assert store.keyword_query(["hike", "fjord"], 1000, 1.0) is not None
    assert counted == [["fjord", "hike"]]
    engine.add_batch([f"a note {i}" for i in range(200)], user_id="u")  # 200 changes: still cached
    store.keyword_query(["hike", "fjord"], 1000, 1.0)
    assert len(counted) == 1
    engine.add_batch([f"another hike {i}" for i in range(100)], user_id="u")  # 300 in all
    query = store.keyword_query(["hike", "fjord"], 10_000, 1.0)
    assert counted[-1] == ["fjord", "hike"] and query is not None
    assert dict(query.weights)["hike"] < dict(query.weights)["fjord"]
