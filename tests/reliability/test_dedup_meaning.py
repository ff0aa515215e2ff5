"""Check 6: dedup keeps meaning. Generated pairs of facts that differ in a negation, a number, a
date, a name or a symbol are never merged, neither when stored (``dedupe=True``, what
``with_memory`` uses) nor when searched; true repeats (case, spacing, closing punctuation,
wrapping quotes) are merged in both places."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scale import scaled
from stores import Store

from headroom_integrations import MemoryEngine, MemoryFilter
from headroom_integrations.memory.text_query import fingerprint

NAMES = ["Alice", "Alicia", "Bob", "Rob", "Ana", "Anna", "Jon", "John", "Li", "Lee"]
SYMBOLS = ["C", "C++", "C#", "F#", "R", "Go", "$5", "€5", "5%", "-5", "+5", "v2", "v2.1", "A+", "A-", "10\u00b2", "102",
           "3\u00bd", "6'", '6"', "6"]
TEMPLATES = [
    "{name} is allergic to peanuts", "Works with {name} on {symbol}", "Prefers {symbol} for {n} services",
    "Moved to Lisbon in {year}", "Dentist appointment on {year}-{month:02d}-{day:02d}", "Owns {n} cats",
    "Meeting {name} at {hour}:00", "Pays {symbol} per month", "Likes {symbol} code",
]
NEGATE = [("is ", "is not "), ("Works", "No longer works"), ("Prefers", "Never prefers"), ("Likes", "Does not like"),
          ("Owns", "No longer owns"), ("Moved", "Never moved"), ("Pays", "Does not pay"), ("Meeting", "Not meeting"),
          ("Dentist", "No dentist")]

slots = st.fixed_dictionaries({
    "name": st.sampled_from(NAMES), "symbol": st.sampled_from(SYMBOLS), "n": st.integers(0, 999),
    "year": st.integers(1990, 2030), "month": st.integers(1, 12), "day": st.integers(1, 28),
    "hour": st.integers(0, 23),
})


def _mutations(template: str, values: dict[str, object]) -> list[str]:
    """Facts that differ from ``template.format(**values)`` in exactly one meaningful way."""
    base = template.format(**values)
    out = []
    for old, new in NEGATE:
        if base.startswith(old) or f" {old}" in base:
            out.append(base.replace(old, new, 1))
    for slot, others in (("name", NAMES), ("symbol", SYMBOLS)):
        if "{" + slot in template:
            out += [template.format(**{**values, slot: o}) for o in others if o != values[slot]][:3]
    for slot in ("n", "year", "month", "day", "hour"):
        if "{" + slot in template:
            out.append(template.format(**{**values, slot: int(values[slot]) + 1}))  # type: ignore[call-overload]
    return [m for m in out if m != base]


def _repeats(fact: str) -> list[str]:
    return [fact.lower(), fact.upper(), f"  {fact}. ", f'"{fact}"', re.sub(" ", "   ", fact), f"{fact}!", f"{fact}..."]


@settings(max_examples=scaled(3000))
@given(st.sampled_from(TEMPLATES), slots)
def test_fingerprints_keep_every_meaningful_difference(template: str, values: dict[str, object]) -> None:
    base = template.format(**values)
    for other in _mutations(template, values):
        assert fingerprint(base) != fingerprint(other), (base, other)
        PAIRS[0] += 1
    for repeat in _repeats(base):
        assert fingerprint(base) == fingerprint(repeat), (base, repeat)
        PAIRS[1] += 1


@pytest.fixture(scope="module")
def engine(module_store: Store) -> MemoryEngine:
    with MemoryEngine(module_store.config()) as opened:
        yield opened  # type: ignore[misc]


_USERS = itertools.count()
PAIRS = [0, 0, 0]  # pairs checked: differing (fingerprints), true repeats, differing (stored and searched)


@settings(max_examples=scaled(120))
@given(st.sampled_from(TEMPLATES), slots)
def test_the_engine_never_merges_different_facts(engine: MemoryEngine, template: str, values: dict[str, object]) -> None:
    base = template.format(**values)
    others = _mutations(template, values)[:3]
    user_id = f"u{next(_USERS)}"  # each example on its own
    stored = [engine.add(fact, user_id=user_id, dedupe=True) for fact in (base, *others)]
    PAIRS[2] += len(others)
    assert len({m.id for m in stored}) == len(stored), [m.content for m in stored]
    assert engine.add(_repeats(base)[2], user_id=user_id, dedupe=True).id == stored[0].id  # a true repeat merges
    hits = engine.search(base, user_id=user_id, top_k=len(stored))
    assert sorted(h.content for h in hits) == sorted(m.content for m in stored)  # none hidden by search


def test_search_shows_a_repeat_once(engine: MemoryEngine, record_property) -> None:  # type: ignore[no-untyped-def]
    record_property("different_pairs", PAIRS[0])
    record_property("repeat_pairs", PAIRS[1])
    record_property("engine_pairs", PAIRS[2])
    engine.add_batch(["Prefers dark mode", "prefers dark mode.", '"Prefers dark mode"', "Prefers light mode"],
                     user_id="repeats")
    assert len(engine.query(MemoryFilter(user_id="repeats"))) == 4  # stored without dedupe: all kept
    hits = engine.search("dark mode", user_id="repeats", top_k=4)
    assert sorted(h.content.strip('"').lower().rstrip(".") for h in hits) == ["prefers dark mode", "prefers light mode"]
