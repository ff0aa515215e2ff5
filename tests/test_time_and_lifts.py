"""Time in search: time expressions in queries, the time lift, ``observed_at`` bounds; the
common-term lift (query terms too common for the keyword ranking) and the diversity step."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headroom_integrations import InvalidInputError, MemoryConfig, MemoryEngine, MemoryFilter
from headroom_integrations.memory.time_expressions import time_window

NOW = datetime(2023, 7, 12, 15, 30, tzinfo=timezone.utc)  # a Wednesday
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]


def day(*ymd: int) -> datetime:
    return datetime(*ymd, tzinfo=timezone.utc)


@pytest.mark.parametrize(("query", "start", "end"), [
    ("What did I cook last week?", day(2023, 7, 3), day(2023, 7, 10)),
    ("anything this week", day(2023, 7, 10), day(2023, 7, 17)),
    ("plans for last weekend", day(2023, 7, 8), day(2023, 7, 10)),
    ("yesterday's run", day(2023, 7, 11), day(2023, 7, 12)),
    ("TODAY", day(2023, 7, 12), day(2023, 7, 13)),
    ("the day before yesterday", day(2023, 7, 10), day(2023, 7, 11)),
    ("camping in June", day(2023, 6, 1), day(2023, 7, 1)),
    ("what happened in December", day(2022, 12, 1), day(2023, 1, 1)),  # the latest December that began
    ("during mid-March", day(2023, 3, 1), day(2023, 4, 1)),
    ("in October 2022", day(2022, 10, 1), day(2022, 11, 1)),
    ("May 2023 trip", day(2023, 5, 1), day(2023, 6, 1)),
    ("on 8 May, 2023", day(2023, 5, 8), day(2023, 5, 9)),
    ("the 8th of May 2023", day(2023, 5, 8), day(2023, 5, 9)),
    ("what was said on October 13, 2023?", day(2023, 10, 13), day(2023, 10, 14)),
    ("on May 8", day(2023, 5, 8), day(2023, 5, 9)),
    ("on August 8", day(2022, 8, 8), day(2022, 8, 9)),  # not after the reference
    ("2023-05-08", day(2023, 5, 8), day(2023, 5, 9)),
    ("in 2021", day(2021, 1, 1), day(2022, 1, 1)),
    ("this year", day(2023, 1, 1), day(2024, 1, 1)),
    ("last year", day(2022, 1, 1), day(2023, 1, 1)),
    ("last month", day(2023, 6, 1), day(2023, 7, 1)),
    ("this month", day(2023, 7, 1), day(2023, 8, 1)),
    ("the past 3 days", NOW - timedelta(days=3), NOW),
    ("in the last week", NOW - timedelta(days=7), NOW),
    ("past two weeks", NOW - timedelta(days=14), NOW),
    ("3 days ago", NOW - timedelta(days=3.5), NOW - timedelta(days=2.5)),
    ("a couple of weeks ago", NOW - timedelta(days=17.5), NOW - timedelta(days=10.5)),
])
def test_time_expressions_name_the_expected_window(query: str, start: datetime, end: datetime) -> None:
    window = time_window(query, NOW)
    assert window is not None, query
    assert (window.start, window.end) == (start, end)
    assert window.text.lower() in query.lower()


@pytest.mark.parametrize("query", [
    "May I ask what she likes?", "What may Caroline enjoy?", "Who is March?", "on 31 February",
    "2023-02-30", "a 2000 calorie diet", "What does Bob like?", "",
])
def test_text_without_a_real_time_names_none(query: str) -> None:
    assert time_window(query, NOW) is None


def test_the_leftmost_expression_wins_and_naive_references_are_utc() -> None:
    window = time_window("in June, or maybe last week", NOW.replace(tzinfo=None))
    assert window is not None and window.start == day(2023, 6, 1)


@settings(max_examples=300, deadline=None)
@given(st.text(), st.datetimes(min_value=datetime(1950, 1, 1), max_value=datetime(2090, 1, 1)))
def test_any_text_gives_none_or_a_proper_window(text: str, now: datetime) -> None:
    window = time_window(text, now)
    if window is not None:
        assert window.start < window.end
        assert window.text in text or window.text.lower() in text.lower()


@settings(max_examples=200, deadline=None)
@given(st.dates(min_value=date(1990, 1, 1), max_value=date(2060, 12, 31)), st.integers(0, 4))
def test_every_written_form_of_a_day_names_that_day(when: date, style: int) -> None:
    month = MONTHS[when.month - 1]
    text = [f"on {when.day} {month}, {when.year}", f"{month} {when.day}, {when.year}",
            f"the {when.day}th of {month} {when.year}", when.isoformat(), f"{month[:3]} {when.day} {when.year}"][style]
    window = time_window(f"What happened {text}?", NOW)
    assert window is not None, text
    assert window.start == day(when.year, when.month, when.day)
    assert window.end - window.start == timedelta(days=1)


@pytest.mark.parametrize(("query", "now", "start"), [
    ("What did I do on Feb 29?", day(2023, 3, 1), day(2020, 2, 29)),  # the last leap day, three years back
    ("on 29 February", day(2028, 2, 28), day(2024, 2, 29)),  # this year's is still ahead
    ("What did I eat day before yesterday?", NOW, day(2023, 7, 10)),  # without "the"
    ("what happened at 2023-05-08T10:00?", NOW, day(2023, 5, 8)),  # an ISO date with a time
])
def test_a_day_is_found_where_it_hid(query: str, now: datetime, start: datetime) -> None:
    window = time_window(query, now)
    assert window is not None and (window.start, window.end) == (start, start + timedelta(days=1)), query


@pytest.mark.parametrize("query", [
    "30 February 2023", "on 31 February, 2023", "the 31st of April 2023",  # not "February 2023" instead
    "in the last 0 days", "past 0 weeks", "0 days ago",  # no time at all (an empty window, or one into the future)
    "What did I do the last week of May?",  # a week of May, not the past seven days
    "la\u017ft week", "ye\u017fterday", "in Augu\u017ft", "\u017fix days ago", "f\u0131ve weeks ago",  # not ASCII
])
def test_expressions_that_name_nothing_give_no_window(query: str) -> None:
    assert time_window(query, NOW) is None


_LOOKALIKES = {"s": "\u017f", "i": "\u0131", "k": "\u212a", "I": "\u0130"}  # equal to an ASCII letter ignoring case


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["in", "during", "last", "past", "on", "the", "of", "ago", "a", "few", "couple",
                                 "May", "August", "Sept", "April", "six", "five", "this", "yesterday", "week",
                                 "weeks", "days", "month", "year", "2023", "8th", "29", "February", ",", "0"]),
                min_size=1, max_size=6),
       st.lists(st.booleans(), min_size=60, max_size=60), st.datetimes(min_value=datetime(1990, 1, 1)))
def test_the_grammar_s_words_with_look_alike_letters_never_raise(words: list[str], swaps: list[bool],
                                                                  now: datetime) -> None:
    """Ignoring case, a regular expression over Unicode takes "\u017f" for "s": the words are
    matched in ASCII only, so such a letter neither raises (it did: KeyError) nor changes a meaning."""
    text = " ".join(words)
    text = "".join(_LOOKALIKES.get(c, c) if swap else c for c, swap in zip(text, swaps + [False] * len(text)))
    window = time_window(text, now)
    if window is not None:
        assert window.start < window.end and window.text.isascii(), text


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 12, 31)))
def test_on_feb_29_is_the_last_leap_day_not_after_the_reference(now: datetime) -> None:
    window = time_window("on Feb 29", now)
    assert window is not None
    leap = window.start.date()
    assert (leap.month, leap.day) == (2, 29) and leap <= now.date()
    later = [date(year, 2, 29) for year in range(leap.year + 1, now.year + 1) if year % 4 == 0 and
             (year % 100 != 0 or year % 400 == 0)]
    assert not [d for d in later if d <= now.date()]


# -- in search, on every backend -------------------------------------------------------------------


def _trips(engine: MemoryEngine) -> None:
    engine.add("Went hiking in the hills with Sam", "u", observed_at="2023-05-20")
    engine.add("Went hiking in the hills with Sam", "u", observed_at="2023-06-20", session_id="other")
    engine.add("Bought a new bicycle helmet", "u", observed_at="2023-06-02")
    engine.add("Planted tomatoes in the garden", "u", observed_at="2023-04-11")


def test_a_time_in_the_query_lifts_what_was_stated_then(make_engine: Callable[..., MemoryEngine]) -> None:
    engine = make_engine(time_weight=0.1)
    _trips(engine)
    for query, month in (("Where did I go hiking in May?", 5), ("Where did I go hiking in June?", 6)):
        hits = engine.search(query, "u", "other", now="2023-07-01")
        assert hits[0].memory.observed_at.month == month
        assert hits[0].time_part == pytest.approx(0.1)
        assert all(h.time_part == 0.0 for h in hits if h.memory.observed_at.month != month)
    assert all(h.time_part == 0.0 for h in engine.search("Where did I go hiking?", "u", "other"))
    # a look-alike letter in the month's name: no lift, and no error (the search raised KeyError)
    hits = engine.search("Where did I go hiking in Augu\u017ft?", "u", "other", now="2023-09-01")
    assert hits and all(h.time_part == 0.0 for h in hits)


def test_the_time_lift_is_off_by_config_and_read_against_now(make_engine: Callable[..., MemoryEngine]) -> None:
    engine = make_engine(time_weight=0.0)
    _trips(engine)
    assert all(h.time_part == 0.0 for h in engine.search("hiking in May", "u", "other", now="2023-07-01"))
    lifted = make_engine(time_weight=0.2)
    # "last month" read against 2023-06-15 is May: the May hike; against 2023-07-15, the June one.
    assert lifted.search("hiking last month", "u", "other", now="2023-06-15")[0].memory.observed_at.month == 5
    assert lifted.search("hiking last month", "u", "other", now="2023-07-15")[0].memory.observed_at.month == 6


def test_observed_bounds_keep_only_what_was_stated_within_them(make_engine: Callable[..., MemoryEngine]) -> None:
    engine = make_engine()
    start = day(2023, 1, 1)
    engine.add_batch([{"content": f"Ran {k} kilometres along the river", "observed_at": start + timedelta(days=k)}
                      for k in range(1, 121)], user_id="u")
    hits = engine.search("running by the river", "u", top_k=5, observed_after="2023-03-02",
                         observed_before=date(2023, 3, 5))
    assert sorted(h.memory.observed_at.day for h in hits) == [2, 3, 4]  # every one in bounds, none outside
    assert engine.search("running", "u", observed_after="2030-01-01") == []
    assert len(engine.search("running", "u", observed_before="2023-01-03", top_k=5)) == 1


@pytest.mark.parametrize(("field", "value"), [
    ("now", "tomorrow"), ("now", 5), ("observed_after", "soon"), ("observed_before", 3.5), ("observed_after", [])])
def test_bad_times_are_refused(engine: MemoryEngine, field: str, value: object) -> None:
    engine.add("Went hiking", "u")
    with pytest.raises(InvalidInputError, match=field):
        engine.search("hiking", "u", **{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
    "0001-01-01T00:00:00+05:00",
    datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5))),
])
def test_times_outside_utc_range_are_refused(engine: MemoryEngine, bad: object) -> None:
    """A time that falls before year 1 or after 9999 once in UTC is bad input, not an OverflowError."""
    with pytest.raises(InvalidInputError, match="valid_at"):
        engine.search("hiking", "u", valid_at=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="observed_at"):
        engine.add("Went hiking", "u", observed_at=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="observed_after"):
        MemoryFilter(user_id="u", observed_after=bad)  # type: ignore[arg-type]
    assert engine.query(MemoryFilter(user_id="u")) == []


def test_common_query_terms_lift_the_memories_holding_them(make_engine: Callable[..., MemoryEngine]) -> None:
    names = ["Caroline"] * 6 + ["Melanie"] * 4
    facts = ["went to a pottery class", "adopted a grey cat", "visited the museum", "baked bread",
             "started a new job", "sketched boats by the lake", "went camping", "painted the lake at dusk",
             "bought running shoes", "painted the lake at dawn"]
    rows = [f"{name}: {fact}" for name, fact in zip(names, facts)]
    off = make_engine(common_term_weight=0.0)
    off.add_batch(rows, user_id="u")
    query = "What did Caroline paint at the lake?"
    assert off.search(query, "u")[0].memory.content.startswith("Melanie")  # "Caroline" is left out of BM25
    on = make_engine(common_term_weight=0.3)
    hits = on.search(query, "u")
    assert hits[0].memory.content == "Caroline: sketched boats by the lake"
    assert hits[0].common_term_part == pytest.approx(0.3)
    assert all(h.common_term_part == 0.0 for h in hits if h.memory.content.startswith("Melanie"))


def test_the_score_parts_add_up_to_the_fused_score(make_engine: Callable[..., MemoryEngine]) -> None:
    engine = make_engine(time_weight=0.1, common_term_weight=0.1)
    _trips(engine)
    for hit in engine.search("hiking with Sam in May", "u", "other", now="2023-07-01"):
        parts = hit.vector_part + hit.keyword_part + hit.context_part + hit.common_term_part + hit.time_part
        assert hit.fused_score == pytest.approx(parts)


PARAPHRASES = ["Prefers Go for backend services", "Prefers Go for web services", "Prefers Go for network services",
               "Likes Rust for command-line tools", "Drinks green tea every morning", "Lives in Lisbon"]


def test_the_diversity_step_spreads_the_top_results(make_engine: Callable[..., MemoryEngine]) -> None:
    query = "which programming language should I use?"
    # Context off: the paraphrases are stored side by side, each one the others' context.
    plain, diverse = make_engine(diversity_weight=0.0, context_weight=0.0), make_engine(diversity_weight=0.3,
                                                                                       context_weight=0.0)
    plain.add_batch(PARAPHRASES, user_id="u")
    top = {name: engine.search(query, "u", top_k=3) for name, engine in (("plain", plain), ("diverse", diverse))}

    def go(hits: list) -> int:
        return sum("Go" in h.content for h in hits)

    assert go(top["plain"]) == 2 and go(top["diverse"]) == 1  # one Go paraphrase is enough
    assert top["diverse"][0].diversity_part == 0.0 and all(h.diversity_part < 0 for h in top["diverse"][1:])
    assert all(h.diversity_part == 0.0 for h in top["plain"])
    scores = {h.id: h.fused_score for h in plain.search(query, "u", top_k=6)}
    everything = diverse.search(query, "u", top_k=6)
    assert {h.id: h.fused_score for h in everything} == pytest.approx(scores)  # reordered, nothing lost or rescored


@pytest.mark.parametrize("field", ["common_term_weight", "time_weight", "diversity_weight"])
@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), "0.1"])
def test_lift_weights_are_validated(field: str, value: object) -> None:
    with pytest.raises(InvalidInputError, match=field):
        MemoryConfig(db_path=":memory:", **{field: value})  # type: ignore[arg-type]


def _mmr_reference(scores: list[float], vectors: list[list[float]], top_k: int, weight: float) -> list[int]:
    """Maximal marginal relevance written out plainly: every pair's cosine, one pick at a time."""
    picked: list[int] = []
    while len(picked) < min(top_k, len(scores)):
        def value(i: int) -> float:
            closest = max((sum(a * b for a, b in zip(vectors[i], vectors[j])) for j in picked), default=0.0)
            return scores[i] - weight * max(closest, 0.0)
        picked.append(max((i for i in range(len(scores)) if i not in picked), key=value))
    return picked


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_the_diversity_step_matches_a_plain_mmr(data: st.DataObject) -> None:
    import numpy as np

    from headroom_integrations.memory.models import Memory, SearchResult
    from headroom_integrations.memory.retrieval import _diversify

    n = data.draw(st.integers(1, 12))
    # Scores on a grid of 1/64 and vectors of small integers: no two values tie by rounding.
    scores = [i / 64 for i in data.draw(st.lists(st.integers(0, 64), min_size=n, max_size=n, unique=True))]
    rows = data.draw(st.lists(st.lists(st.integers(-2, 2), min_size=3, max_size=3), min_size=n, max_size=n))
    top_k, weight = data.draw(st.integers(1, 6)), data.draw(st.sampled_from([0.1, 0.25, 0.5, 1.0]))
    hits = [SearchResult(memory=Memory(id=f"m{i}", content=f"fact {i}", user_id="u"), score=0.0, fused_score=s)
            for i, s in enumerate(scores)]
    vectors = {f"m{i}": np.array(row, dtype=np.float32) / 4 for i, row in enumerate(rows)}
    got = _diversify(hits, vectors, top_k, weight)
    want = _mmr_reference(scores, [[x / 4 for x in row] for row in rows], top_k, weight)
    assert [h.id for h in got] == [f"m{i}" for i in want]
    assert all(h.fused_score == scores[int(h.id[1:])] for h in got)  # reordered, never rescored


def test_re_weighting_reads_a_bounded_number_of_rows(make_engine: Callable[..., MemoryEngine]) -> None:
    """With lifts and diversity on, a search reads the rows of the best 3 x top_k fused candidates,
    not of every candidate (deeper only when fewer than top_k results survive)."""
    from headroom_integrations.memory.retrieval import RERANK_FACTOR

    engine = make_engine(diversity_weight=0.1, common_term_weight=0.2, time_weight=0.1)
    engine.add_batch([{"content": f"Went hiking with Sam in the hills, trip number {i}", "observed_at": "2023-05-10"}
                      for i in range(120)], user_id="u")
    asked: list[int] = []
    rows = engine.backend.rows

    def counting(pks):  # type: ignore[no-untyped-def]
        asked.append(len(pks))
        return rows(pks)

    engine.backend.rows = counting  # type: ignore[method-assign]
    hits = engine.search("hiking trips in May", "u", top_k=5, now="2023-07-01")
    assert len(hits) == 5 and sum(asked) <= RERANK_FACTOR * 5
    asked.clear()
    narrow = engine.search("hiking trips", "u", top_k=5, observed_after="2023-05-11")  # nothing stated then
    assert narrow == [] and sum(asked) > RERANK_FACTOR * 5  # it looked deeper before giving up
