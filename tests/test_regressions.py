"""One regression test per defect a new user found (issue 13), each reproduced before its fix."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from openai import OpenAI
from openai_stub import StubLLM

from headroom_integrations import (
    HeadroomError,
    HierarchicalMemory,
    InvalidInputError,
    MemoryAlreadySupersededError,
    MemoryConfig,
    MemoryEngine,
    MemoryFilter,
    with_memory,
)
from headroom_integrations.blocks import StreamFilter, parse_reply

# 1. Store-time dedup inverted facts ---------------------------------------------------------------

PAIRS = [
    ("Allergic to peanuts", "Not allergic to peanuts"),
    ("Is vegan", "Is not vegan"),
    ("Likes cats", "Does not like cats"),
    ("C++ developer", "C developer"),
    ("Writes C# code", "Writes F# code"),
]


@pytest.mark.parametrize(("first", "second"), [
    *PAIRS,
    ("Costs 10\u00b2 dollars", "Costs 102 dollars"),  # a superscript is not a digit (NFKC made it one)
    ("Needs 3\u00bd cups of flour", "Needs 31\u20442 cups of flour"),  # nor a vulgar fraction
    ("Error rate is 10\u207b\u00b3", "Error rate is 10\u22123"),
    ("Height is 6'", 'Height is 6"'),  # a lone closing quote is a unit, not a wrapping quote
    ("Monitor is 27\"", "Monitor is 27"),
])
def test_dedup_never_merges_facts_that_differ(engine: MemoryEngine, first: str, second: str) -> None:
    a = engine.add(first, user_id="u0", dedupe=True)
    b = engine.add(second, user_id="u0", dedupe=True)
    assert a.id != b.id
    assert {m.content for m in engine.query(MemoryFilter(user_id="u0"))} == {first, second}


def test_with_memory_keeps_both_facts_of_each_pair(stub_llm: StubLLM, engine: MemoryEngine) -> None:
    client = with_memory(OpenAI(api_key="t", base_url=stub_llm.base_url, max_retries=0), user_id="u", memory=engine)
    for first, second in PAIRS:
        for fact in (first, second):
            stub_llm.reply(f'ok<memory>{{"memories": [{{"content": "{fact}"}}]}}</memory>')
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": fact}])
    engine.flush()
    assert {m.content for m in engine.query(MemoryFilter(user_id="u"))} == {f for pair in PAIRS for f in pair}


def test_true_repeats_are_still_merged(engine: MemoryEngine) -> None:
    first = engine.add("Prefers dark mode", user_id="u")
    for again in ("prefers dark mode.", "  Prefers   DARK mode!", '"Prefers dark mode"', '"Prefers dark mode".',
                  "\u00abPrefers dark mode\u00bb", "\uff30\uff52\uff45\uff46\uff45\uff52\uff53 dark mode\u3002"):
        assert engine.add(again, user_id="u", dedupe=True).id == first.id


# 2. Search hid distinct facts ----------------------------------------------------------------------


def test_search_returns_every_distinct_fact(engine: MemoryEngine) -> None:
    engine.add_batch([f"Invoice {1001 + i} paid on 2024-03-{i + 1:02d}" for i in range(30)], user_id="u1")
    assert len(engine.search("invoice paid", user_id="u1", top_k=30)) == 30
    engine.add_batch([f"Dentist appointment on 2025-0{m}-15" for m in range(1, 10)], user_id="u2")
    assert len(engine.search("dentist appointment", user_id="u2", top_k=9)) == 9
    engine.add_batch(["Moved to Lisbon in 2023", "Moved to Lisbon in 2024"], user_id="u3")
    for query in ("when did I move to Lisbon", "Lisbon", "moved in 2024"):
        assert {h.content for h in engine.search(query, user_id="u3", top_k=2)} == {
            "Moved to Lisbon in 2023", "Moved to Lisbon in 2024"}


def test_injection_carries_every_distinct_fact(stub_llm: StubLLM, engine: MemoryEngine) -> None:
    engine.add_batch([f"Dentist appointment on 2025-0{m}-15" for m in range(1, 6)], user_id="u")
    client = with_memory(OpenAI(api_key="t", base_url=stub_llm.base_url, max_retries=0), user_id="u",
                         memory=engine, top_k=5)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "dentist appointments?"}])
    sent = stub_llm.requests[0]["messages"][-1]["content"]
    assert all(f"2025-0{m}-15" in sent for m in range(1, 6))


def test_repeats_do_not_crowd_out_other_memories(engine: MemoryEngine) -> None:
    engine.add_batch(["Prefers Go"] * 30 + ["Prefers Rust for embedded work", "Prefers Python for scripts"],
                     user_id="u")
    hits = engine.search("prefers go", user_id="u", top_k=3)
    assert sorted(h.content for h in hits) == ["Prefers Go", "Prefers Python for scripts",
                                                 "Prefers Rust for embedded work"]


# 3. A deferred write of another process was missed by the next search ------------------------------


def test_next_search_sees_another_processes_deferred_write(db_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    import workers

    writer = context.Process(target=workers.deferred_writer, args=(str(db_path), child))
    writer.start()
    try:
        assert parent.recv() == "ready"
        with MemoryEngine(MemoryConfig(db_path=db_path)) as engine:
            for i in range(8):
                content = f"Has a cat named Tom number {i}"
                parent.send(content)
                assert parent.recv() == "added"
                hits = engine.search(content, user_id="alice", top_k=3)  # at once, while B still embeds
                assert content in [h.content for h in hits], i
        parent.send(None)
        assert parent.recv() == "closed"
    finally:
        writer.join(timeout=60)
        if writer.is_alive():
            writer.kill()


# 4. A streamed reply lost its last characters --------------------------------------------------------


@pytest.mark.parametrize("reply", ["hello <mem", "hello <", "a < b", "x </mem", "tail <memory", "ends ``"])
def test_streamed_and_whole_replies_show_the_same_text(reply: str) -> None:
    whole = parse_reply(reply).text
    assert whole == reply  # no block: nothing is taken away
    for size in range(1, len(reply) + 1):
        stream = StreamFilter()
        shown = "".join(stream.feed(reply[i : i + size]) for i in range(0, len(reply), size)) + stream.finish()
        assert shown == whole, size


def test_a_reply_cut_by_the_length_limit_drops_a_started_tag() -> None:
    assert parse_reply("Sure.\n\n<mem", cut=True).text == "Sure."
    assert parse_reply("Sure.\n\n<mem").text == "Sure.\n\n<mem"


def test_streamed_reply_through_the_sdk_keeps_its_end(stub_llm: StubLLM, engine: MemoryEngine) -> None:
    client = with_memory(OpenAI(api_key="t", base_url=stub_llm.base_url, max_retries=0), user_id="u", memory=engine)
    stub_llm.reply("hello <mem", chunks=["hel", "lo <", "mem"])
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    stub_llm.reply("hello <mem")
    whole = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert streamed == whole.choices[0].message.content == "hello <mem"


# 5. Deleting the current version orphaned the fact ----------------------------------------------------


def test_deleting_the_head_leaves_a_reachable_fact(engine: MemoryEngine) -> None:
    v1 = engine.add("Works at Google", user_id="u")
    v2 = engine.supersede(v1.id, "Works at Anthropic")
    v3 = engine.supersede(v2.id, "Works at OpenAI")
    assert engine.delete(v3.id)
    assert engine.search("where does the user work", user_id="u") == []  # the deleted fact is not shown
    assert [m.content for m in engine.get_history(v1.id)] == ["Works at Google", "Works at Anthropic"]
    with pytest.raises(MemoryAlreadySupersededError, match="rollback"):
        engine.supersede(v2.id, "Works at Meta")
    restored = engine.rollback(v1.id)  # a headless chain can be rolled back
    assert restored.is_current and restored.content == "Works at Google"
    assert restored.metadata["rolled_back_to"] == v1.id and restored.chain_id == v1.chain_id
    assert [h.id for h in engine.search("where does the user work", user_id="u")] == [restored.id]
    assert [m.is_current for m in engine.get_history(v1.id)] == [False, False, True]


def test_delete_all_versions_forgets_the_whole_fact(engine: MemoryEngine) -> None:
    v1 = engine.add("Lives in Paris", user_id="u")
    v2 = engine.supersede(v1.id, "Lives in Rome")
    keep = engine.add("Has a dog", user_id="u")
    assert engine.delete(v2.id, all_versions=True)
    assert engine.get(v1.id) is None and engine.get(v2.id) is None and engine.get(keep.id) is not None
    assert not engine.delete(v2.id)


# 6. client.memory.add widened scopes -----------------------------------------------------------------


def test_facade_add_follows_the_engine_scope_rules(stub_llm: StubLLM, engine: MemoryEngine) -> None:
    client = with_memory(OpenAI(api_key="t", base_url=stub_llm.base_url), user_id="u", session_id="s1", memory=engine)
    with pytest.raises(InvalidInputError, match="turn_id"):
        client.memory.add("Scratch note", scope="turn")
    with pytest.raises(InvalidInputError, match="agent_id"):
        client.memory.add("Agent note", scope="agent")
    note = client.memory.add("Scratch note", scope="turn", turn_id="t1")
    assert note.scope.value == "turn"
    other = with_memory(OpenAI(api_key="t", base_url=stub_llm.base_url), user_id="u", session_id="s2", memory=engine)
    assert other.memory.search("scratch note") == []
    no_session = with_memory(OpenAI(api_key="t", base_url=stub_llm.base_url), user_id="v", memory=engine)
    with pytest.raises(InvalidInputError, match="session_id"):
        no_session.memory.add("In a meeting", scope="session")
    assert no_session.memory.add("In a meeting", category="context").scope.value == "user"


# 7. A lone surrogate crashed everything that embeds ---------------------------------------------------


def test_lone_surrogates_are_text_like_any_other(engine: MemoryEngine) -> None:
    stored = engine.add("Likes \ud83d emoji", user_id="u")
    assert stored.content == "Likes \ufffd emoji"
    assert engine.search("bad \ud800 x", user_id="u") is not None
    assert engine.supersede(stored.id, "Likes \udc00 more").content == "Likes \ufffd more"
    assert engine.add("paired \ud83d\ude00", user_id="u").content == "paired \U0001f600"
    with pytest.raises(InvalidInputError, match="surrogate"):
        engine.add("x", user_id="user\ud800")  # ids are never repaired: two ids must not become one
    m = engine.add("with metadata", user_id="u", metadata={"raw": "a\ud800b"})
    assert engine.get(m.id).metadata == {"raw": "a\ud800b"}  # type: ignore[union-attr]


def test_with_memory_calls_the_llm_despite_a_surrogate(stub_llm: StubLLM, engine: MemoryEngine) -> None:
    client = with_memory(OpenAI(api_key="t", base_url=stub_llm.base_url, max_retries=0), user_id="u", memory=engine)
    engine.add("Prefers tea", user_id="u")
    stub_llm.reply("hi")
    reply = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello \ud83d tea?"}]
    )
    assert reply.choices[0].message.content == "hi" and stub_llm.count == 1


def test_adapters_retrieve_with_a_surrogate(engine: MemoryEngine) -> None:
    from llama_index.core.schema import QueryBundle

    from headroom_integrations.langchain import HeadroomMemoryRetriever
    from headroom_integrations.llama_index import HeadroomRetriever

    engine.add("Prefers tea", user_id="u")
    assert HeadroomMemoryRetriever(memory=engine, user_id="u").invoke("tea \ud800")
    assert HeadroomRetriever("u", memory=engine).retrieve(QueryBundle("tea \ud800"))


# 8. Storage errors leaked as raw sqlite3/SQLAlchemy exceptions ---------------------------------------


def _prepare_broken_stores(base: Path) -> None:
    for name in ("ro", "rodir"):
        with MemoryEngine(MemoryConfig(db_path=base / name / "memory.db")) as engine:
            engine.add("hello world", user_id="u")
    (base / "ro" / "memory.db").chmod(0o444)
    (base / "rodir").chmod(0o555)
    (base / "notes.txt").write_text("these are my notes, not a database\n" * 200)
    (base / "adir").mkdir()


EXPECTED = {
    "read-only file": "read-only",
    "read-only directory": "not writable",
    "new file in a read-only directory": "not writable",
    "not a SQLite file": "not a memory store",
    "a directory": "is a directory",
    "under a regular file": "is a file, not a directory",
}


def test_storage_errors_name_the_path_and_the_problem(tmp_path: Path) -> None:
    _prepare_broken_stores(tmp_path)
    try:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            import workers

            results = pool.apply(workers.storage_failures, (str(tmp_path),))
    finally:
        (tmp_path / "rodir").chmod(0o755)
    for label, needle in EXPECTED.items():
        kind, message, ours = results[label]
        assert ours and kind == "StorageError", (label, kind, message)
        assert needle in message and str(tmp_path) in message, (label, message)
    assert "\n" not in "".join(message for _, message, _ in results.values())


def test_cli_prints_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from headroom_integrations.cli import main

    (tmp_path / "notes.txt").write_text("not a database\n" * 100)
    assert main(["--db", str(tmp_path / "notes.txt"), "stats"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "not a memory store" in err


# 9. An empty query raised while the adapters returned [] ----------------------------------------------


def test_an_empty_query_finds_nothing_everywhere(engine: MemoryEngine) -> None:
    from llama_index.core.schema import QueryBundle

    from headroom_integrations.langchain import HeadroomMemoryRetriever
    from headroom_integrations.llama_index import HeadroomRetriever

    engine.add("Prefers tea", user_id="u")
    for query in ("", "   ", "\n\t"):
        assert engine.search(query, user_id="u") == []
        assert HeadroomMemoryRetriever(memory=engine, user_id="u").invoke(query) == []
        assert HeadroomRetriever("u", memory=engine).retrieve(QueryBundle(query)) == []


# 10. Wrong types: unclear errors or silent nonsense --------------------------------------------------


def test_obviously_intended_values_are_accepted(engine: MemoryEngine, tmp_path: Path) -> None:
    assert [m.content for m in engine.add_batch("hello", user_id="u")] == ["hello"]
    assert [m.content for m in engine.add_batch({"content": "one mapping"}, user_id="u")] == ["one mapping"]
    with MemoryEngine(str(tmp_path / "by-path.db")) as by_path:
        assert by_path.config.db_path == str(tmp_path / "by-path.db")
    for when in ("2099-01-01", "2099-01-01T00:00:00Z", date(2099, 1, 1), datetime(2099, 1, 1, tzinfo=timezone.utc)):
        assert [h.content for h in engine.search("hello", user_id="u", valid_at=when, top_k=1)] == ["hello"]
        assert len(engine.query(MemoryFilter(user_id="u", valid_at=when))) == 2
    assert engine.search("hello", user_id="u", categories="fact")


BAD_CALLS: list[tuple[str, Callable[[MemoryEngine], object]]] = [
    ("items", lambda e: e.add_batch(5, user_id="u")),  # type: ignore[arg-type]
    ("item 0", lambda e: e.add_batch([None], user_id="u")),  # type: ignore[list-item]
    ("valid_at", lambda e: e.search("x", user_id="u", valid_at="yesterday")),
    ("min_score", lambda e: e.search("x", user_id="u", min_score="high")),  # type: ignore[arg-type]
    ("min_score", lambda e: e.search("x", user_id="u", min_score=float("nan"))),
    ("min_importance", lambda e: e.query(MemoryFilter(min_importance="x"))),  # type: ignore[arg-type]
    ("user_id", lambda e: e.stats(5)),  # type: ignore[arg-type]
    ("top_k", lambda e: e.search("x", user_id="u", top_k=True)),
    ("importance", lambda e: e.add("x", user_id="u", importance=True)),
    ("metadata", lambda e: e.add("x", user_id="u", metadata={"score": float("nan")})),
    ("category", lambda e: e.search("x", user_id="u", categories=["nope"])),
    ("MemoryFilter", lambda e: e.query("alice")),  # type: ignore[arg-type]
    ("memory_id", lambda e: e.get(5)),  # type: ignore[arg-type]
    ("limit", lambda e: e.query(MemoryFilter(limit="3"))),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("needle", "call"), BAD_CALLS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD_CALLS)])
def test_wrong_types_get_a_clear_error(engine: MemoryEngine, needle: str, call: Callable[[MemoryEngine], object]) -> None:
    engine.add("kept", user_id="u")
    with pytest.raises(InvalidInputError, match=needle):
        call(engine)
    assert [m.content for m in engine.query(MemoryFilter(user_id="u"))] == ["kept"]  # nothing stored, nothing lost


def test_wrong_configurations_get_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="db_path"):
        MemoryConfig(db_path=None)  # type: ignore[arg-type]
    assert not (Path.cwd() / "None").exists()
    with pytest.raises(InvalidInputError, match="hnsw_m"):
        MemoryConfig(hnsw_m="16")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="not both"):
        HierarchicalMemory.open(MemoryConfig(db_path=tmp_path / "a.db"), db_path=tmp_path / "b.db")
    with pytest.raises(InvalidInputError, match="top_k"):
        HierarchicalMemory.open(db_path=tmp_path / "a.db", top_k=3)
    with pytest.raises(InvalidInputError, match="MemoryConfig"):
        MemoryEngine(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="OpenAI-compatible"):
        with_memory(None, user_id="u")


def test_adapters_check_their_arguments_at_construction(engine: MemoryEngine) -> None:
    from headroom_integrations.langchain import HeadroomMemoryRetriever
    from headroom_integrations.llama_index import HeadroomRetriever

    engine.add("Prefers tea", user_id="u", category="preference")
    retriever = HeadroomMemoryRetriever(memory=engine, user_id="u")
    with pytest.raises(InvalidInputError, match="string"):
        retriever.invoke(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="k must be"):
        retriever.invoke("tea", k=0)
    with pytest.raises(HeadroomError, match="user_id"):
        HeadroomMemoryRetriever(memory=engine, user_id="")
    with pytest.raises(HeadroomError, match="unknown category"):
        HeadroomMemoryRetriever(memory=engine, user_id="u", categories=["opinions"])
    assert HeadroomMemoryRetriever(memory=engine, user_id="u", categories="preference").invoke("tea")
    with pytest.raises(InvalidInputError, match="unknown category"):
        HeadroomRetriever("u", memory=engine, categories=["opinions"])
    assert HeadroomRetriever("u", memory=engine, categories="preference").categories is not None


def test_a_failed_recall_is_logged_and_the_call_goes_ahead(
    stub_llm: StubLLM, engine: MemoryEngine, caplog: pytest.LogCaptureFixture
) -> None:
    client = with_memory(OpenAI(api_key="t", base_url=stub_llm.base_url, max_retries=0), user_id="u", memory=engine)
    engine.close()  # every engine call now fails
    with caplog.at_level(logging.ERROR):
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "ok" and "retrieval failed" in caplog.text


# Found by the reliability suite: concurrent keyword indexing garbled stems -------------------------


def test_terms_are_the_same_from_many_threads() -> None:
    import random
    import threading

    import snowballstemmer

    from headroom_integrations.memory.text_query import terms

    rng = random.Random(7)
    texts = [" ".join("".join(rng.choice("abcdefghilmnoprstu") for _ in range(rng.randint(4, 11))) + rng.choice(
        ["ing", "ed", "s", "ations", "ness"]) for _ in range(40)) for _ in range(400)]
    reference = snowballstemmer.stemmer("english")
    expected = [[reference.stemWord(w) for w in text.split()] for text in texts]
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def run(offset: int) -> None:
        try:
            for i in range(offset, len(texts), 8):
                results[i] = terms(texts[i])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [results[i] for i in range(len(texts))] == expected


def test_a_store_written_by_an_earlier_version_is_brought_up_to_date(db_path: Path) -> None:
    import contextlib
    import sqlite3

    with MemoryEngine(MemoryConfig(db_path=db_path)) as engine:
        engine.add("Allergic to peanuts", user_id="u")
    with contextlib.closing(sqlite3.connect(db_path)) as raw, raw:  # as the previous version left it
        raw.execute("UPDATE memories SET fingerprint = 'old-fingerprint-dropping-not'")
        raw.execute("DELETE FROM meta WHERE key = 'fingerprint_version'")
        raw.execute("ALTER TABLE memory_tombstones DROP COLUMN scrub")
    with MemoryEngine(MemoryConfig(db_path=db_path)) as engine:
        negated = engine.add("Not allergic to peanuts", user_id="u", dedupe=True)
        assert len(engine.query(MemoryFilter(user_id="u"))) == 2 and negated.content == "Not allergic to peanuts"
        assert engine.add("allergic to peanuts.", user_id="u", dedupe=True).content == "Allergic to peanuts"
        assert engine.purge("u") == {"memories": 2, "messages": 0}


def test_an_engine_collected_while_another_opens_does_not_deadlock(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Garbage collection can run a dropped engine's finalizer inside ``acquire`` (opening a
    backend allocates): its release waited for the registry lock its own thread held, forever."""
    import threading

    from headroom_integrations.memory import registry

    dropped = MemoryEngine(MemoryConfig(db_path=tmp_path / "dropped.db"))
    real_open = registry.open_backend

    def opening(*args: object, **kwargs: object) -> object:
        dropped._finalizer()  # what the collector does, here, with the registry lock held
        return real_open(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(registry, "open_backend", opening)
    opened: list[MemoryEngine] = []
    worker = threading.Thread(target=lambda: opened.append(MemoryEngine(MemoryConfig(db_path=tmp_path / "new.db"))),
                              daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "deadlocked in the store registry"
    assert registry.backend_key(dropped.config) not in registry._OPEN  # the deferred release was carried out
    opened[0].close()
