"""Check 4: generated queries and contents (control characters, NUL, surrogates, emoji, RTL marks,
FTS syntax, 1 MB strings) never raise anything but a deliberate InvalidInputError for a blank
content, and what is stored comes back (lone surrogates repaired, nothing else changed)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hostile import hostile_text
from hypothesis import given, settings
from hypothesis import strategies as st
from scale import scaled
from stores import Store

from headroom_integrations import InvalidInputError, MemoryEngine
from headroom_integrations.memory.text_query import clean_text

EXAMPLES = scaled(800)  # x 4..16 texts each, every text stored and searched for: over 10,000 inputs
HUGE = ["x" * 1_000_000, "\ud800" * 300_000 + "tail", ("NEAR(" + '"' * 7 + " 🚀\x00") * 80_000,
        "word " * 200_000, "\u202e" * 500_000]


@pytest.fixture(scope="module")
def engine(module_store: Store) -> MemoryEngine:
    with MemoryEngine(module_store.config()) as opened:
        yield opened  # type: ignore[misc]


def _exercise(engine: MemoryEngine, texts: list[str], count: Callable[[int], None]) -> None:
    storable = [t for t in texts if t.strip()]
    for blank in (t for t in texts if not t.strip()):
        with pytest.raises(InvalidInputError, match="empty"):
            engine.add(blank, user_id="hostile")
    stored = engine.add_batch(storable, user_id="hostile", defer_embedding=len(storable) % 2 == 0)
    assert [m.content for m in stored] == [clean_text(t) for t in storable]
    for text in texts:
        assert isinstance(engine.search(text, user_id="hostile", top_k=3), list)
    if stored:
        assert engine.supersede(stored[0].id, texts[-1] if texts[-1].strip() else "fine").is_current
        assert engine.get(stored[-1].id) is not None
    count(2 * len(texts))  # each text was a content and a query


def test_generated_text_never_raises_unexpectedly(engine: MemoryEngine, record_property) -> None:  # type: ignore[no-untyped-def]
    seen = [0]

    @settings(max_examples=EXAMPLES)
    @given(st.lists(hostile_text, min_size=4, max_size=16))
    def check(texts: list[str]) -> None:
        _exercise(engine, texts, lambda n: seen.__setitem__(0, seen[0] + n))

    check()
    record_property("inputs", seen[0])
    assert seen[0] >= 10_000


def test_megabyte_strings(engine: MemoryEngine) -> None:
    _exercise(engine, HUGE, lambda n: None)
    for text in HUGE:
        assert isinstance(engine.search(text, user_id="hostile"), list)
