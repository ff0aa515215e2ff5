"""The document-frequency cache both backends keep: a count is read once, again once it is
STALE_AFTER changes old, and the cache starts over past its size without losing a term the
lookup serves (before, a lookup mixing cached and new terms when the cache passed its size raised
KeyError on both backends: the generated test below found it), and a lookup serves the counts it
read, whatever other threads do to the cache meanwhile."""

from __future__ import annotations

import random
import sys
import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from headroom_integrations.memory.backends.keywords import STALE_AFTER, FrequencyCache


def test_a_full_cache_starts_over_without_losing_a_term_it_serves() -> None:
    cache = FrequencyCache(max_terms=1)
    cache.get(["a", "b"], 0, lambda missing: {t: 1 for t in missing})
    assert cache.get(["a", "c"], 0, lambda missing: {t: 2 for t in missing}) == {"a": 2, "c": 2}


def test_a_count_is_read_again_only_once_it_is_stale() -> None:
    reads: list[list[str]] = []
    truth = {"hike": 3, "fjord": 1}

    def count(missing: list[str]) -> dict[str, int]:
        reads.append(sorted(missing))
        return {t: truth[t] for t in missing if t in truth}

    cache = FrequencyCache()
    assert cache.get(["hike", "fjord", "zebra"], 0, count) == {"hike": 3, "fjord": 1, "zebra": 0}
    truth["hike"] = 9
    assert cache.get(["hike"], STALE_AFTER, count) == {"hike": 3}  # exactly STALE_AFTER old: still served
    assert cache.get(["hike", "fjord"], STALE_AFTER + 1, count) == {"hike": 9, "fjord": 1}
    assert reads == [["fjord", "hike", "zebra"], ["fjord", "hike"]]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(st.sampled_from("abcdefgh"), max_size=5), st.integers(0, 40)), max_size=30),
       st.integers(0, 4))
def test_served_counts_are_never_older_than_allowed(calls: list[tuple[list[str], int]], max_terms: int) -> None:
    """Whatever the sequence of lookups (change numbers only grow), every count served was read at
    most STALE_AFTER changes earlier, the cache never holds much more than its size, and each
    lookup reads only terms it was asked for."""
    cache = FrequencyCache(max_terms=max_terms)
    version = 0
    read_at: dict[str, int] = {}
    for terms, step in calls:
        version += step * 20

        def count(missing: list[str], version: int = version, terms: list[str] = terms) -> dict[str, int]:
            assert set(missing) <= set(terms)
            read_at.update((t, version) for t in missing)
            return {t: version for t in missing}  # the "count" is the version it was read at

        served = cache.get(terms, version, count)
        assert set(served) == set(terms)
        for term, value in served.items():
            assert value == read_at[term] and version - value <= STALE_AFTER
        assert len(cache) <= max_terms + len(set(terms))


def test_threads_starting_the_cache_over_never_lose_a_served_term() -> None:
    """Searches of one process share the cache: while one thread starts it over, another's lookup
    still serves every term it asked for (it serves what it read, not the shared dict)."""
    cache = FrequencyCache(max_terms=3)
    words = [f"w{i}" for i in range(40)]
    errors: list[BaseException] = []

    def count(missing: list[str]) -> dict[str, int]:
        time.sleep(0)  # let the other threads run between the read and the serve
        return {t: int(t[1:]) for t in missing}

    def lookups(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(2000):
                terms = rng.sample(words, 3)
                assert cache.get(terms, 0, count) == {t: int(t[1:]) for t in terms}
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=lookups, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors[0]
