"""Export and import (JSON Lines), users, the doctor and score parts, on every backend."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stores import Store

from headroom_integrations.errors import InvalidInputError
from headroom_integrations.memory import Embedder, MemoryEngine, MemoryFilter, UserCounts
from headroom_integrations.memory.jsonl import from_mem0

Make = Callable[..., MemoryEngine]


class Letters(Embedder):
    """Another embedder (letter counts): a store made with it differs from MiniLM's."""

    name, dimension = "test/letters", 26

    def _embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 26), dtype=np.float32)
        for row, text in enumerate(texts):
            for ch in text.lower():
                if "a" <= ch <= "z":
                    out[row, ord(ch) - 97] += 1
            out[row, 0] += 1e-3
        return out


def fill(engine: MemoryEngine) -> None:
    """Memories of every kind: chains (with a rollback and a deleted version), scopes, items, odd text."""
    first = engine.add("Works at Google", user_id="alice", category="fact", metadata={"z": 1, "a": [1, "two"]})
    second = engine.supersede(first.id, "Works at Anthropic")
    engine.supersede(second.id, "Works at OpenAI")
    engine.rollback(second.id)
    doomed = engine.add("Lives in Paris", user_id="alice")
    engine.delete(engine.supersede(doomed.id, "Lives in Berlin").id)
    engine.add("Tabs\tand\nnewlines, quotes \" and émoji 🎉", user_id="bob", session_id="s1", importance=0.9)
    engine.add("Agent note", user_id="bob", session_id="s1", agent_id="planner", category="decision")
    engine.add("Turn note", user_id="bob", session_id="s1", turn_id="t9", category="context")
    engine.put_item("carol", ["prefs", "ui"], "theme", "dark mode", metadata={"value": {"theme": "dark"}})
    engine.put_item("carol", ["prefs", "ui"], "theme", "light mode")
    engine.put_item("carol", ["raw"], "blob", "not searchable", searchable=False)
    item = engine.put_item("carol", ["tmp"], "k", "expires soon")
    engine.set_expiry({item.id: datetime.now(timezone.utc) + timedelta(days=1)})


def exported(engine: MemoryEngine, **options: object) -> str:
    buffer = io.StringIO()
    engine.export(buffer, **options)  # type: ignore[arg-type]
    return buffer.getvalue()


def test_round_trip_keeps_every_field_and_chain(make_engine: Make, tmp_path: Path) -> None:
    source = make_engine()
    fill(source)
    text = exported(source, with_vectors=True)
    header, *lines = text.splitlines()
    assert json.loads(header)["vectors"] is True and len(lines) == source.stats()["total"]
    target = make_engine(db_path=tmp_path / "copy.db")
    report = target.import_(io.StringIO(text))
    assert (report.added, report.skipped, report.failed, report.embedded) == (len(lines), 0, 0, 0)
    assert exported(target, with_vectors=True) == text  # the same bytes back, vectors included
    again = target.import_(io.StringIO(text))
    assert (again.added, again.skipped) == (0, len(lines))  # idempotent
    chain = target.get_history(json.loads(lines[0])["id"])
    assert [m.content for m in chain] == ["Works at Google", "Works at Anthropic", "Works at OpenAI",
                                          "Works at Anthropic"]
    assert [m.is_current for m in chain] == [False, False, False, True]
    assert target.get_item("carol", ["prefs", "ui"], "theme").content == "light mode"  # type: ignore[union-attr]
    assert target.search("where does she work?", user_id="alice")[0].content == "Works at Anthropic"
    assert all(hit.content != "not searchable" for hit in target.search("not searchable", user_id="carol"))


def test_import_into_this_backend_from_a_file(make_engine: Make, tmp_path: Path) -> None:
    source = make_engine(db_path=tmp_path / "source.db")
    fill(source)
    path = tmp_path / "all.jsonl"
    assert source.export(path, with_vectors=True).memories == source.stats()["total"]
    target = make_engine()
    assert target.import_(path).added == source.stats()["total"]
    assert exported(target, with_vectors=True) == path.read_text(encoding="utf-8")
    assert target.users() == source.users()


def test_export_of_one_user_and_without_vectors(engine: MemoryEngine) -> None:
    fill(engine)
    text = exported(engine, user_id="bob")
    header, *lines = text.splitlines()
    assert json.loads(header)["user_id"] == "bob" and json.loads(header)["vectors"] is False
    assert {json.loads(line)["user_id"] for line in lines} == {"bob"} and len(lines) == 3
    assert all("vector" not in json.loads(line) for line in lines)


def test_another_embedders_file_is_embedded_again(make_engine: Make, tmp_path: Path) -> None:
    source = make_engine(db_path=tmp_path / "letters.db", embedder=Letters())
    source.add("Prefers Go for services", user_id="alice", category="preference")
    source.add("Allergic to peanuts", user_id="alice")
    text = exported(source, with_vectors=True)
    target = make_engine()
    report = target.import_(io.StringIO(text))
    assert (report.added, report.embedded) == (2, 2)
    assert target.search("which programming language?", user_id="alice")[0].content == "Prefers Go for services"


def test_minimal_and_mem0_lines(engine: MemoryEngine) -> None:
    lines = [
        '{"content": "Likes green tea", "user_id": "dana"}',
        '{"content": "Plans a trip to Kyoto", "user_id": "dana", "session_id": "s2", "category": "context"}',
        json.dumps({"id": "0b6f6a8e-mem0", "memory": "Prefers window seats", "user_id": "dana", "run_id": "r1",
                    "agent_id": "travel", "categories": ["preferences", "travel"], "hash": "abc",
                    "created_at": "2024-07-20T10:00:00-07:00", "metadata": {"source": "app"}}),
    ]
    report = engine.import_(lines)
    assert (report.added, report.failed, report.embedded) == (3, 0, 3)
    assert engine.import_(lines).added == 0  # minimal lines get ids from their text: idempotent
    seat = engine.get("0b6f6a8e-mem0")
    assert seat is not None and seat.content == "Prefers window seats" and seat.category.value == "preference"
    assert (seat.session_id, seat.agent_id, seat.scope.value) == ("r1", "travel", "agent")
    assert seat.created_at == datetime(2024, 7, 20, 17, 0, tzinfo=timezone.utc)
    assert seat.metadata == {"source": "app", "mem0_categories": ["preferences", "travel"], "mem0_hash": "abc"}
    kyoto = engine.query(MemoryFilter(user_id="dana", session_id="s2"))
    assert [m.content for m in kyoto] == ["Plans a trip to Kyoto"] and kyoto[0].scope.value == "session"


def test_mem0_agent_without_a_run_is_kept_in_metadata() -> None:
    line = from_mem0({"memory": "x", "user_id": "u", "agent_id": "a"})
    assert "agent_id" not in line and line["metadata"] == {"mem0_agent_id": "a"}


GOOD = st.builds(lambda text, user: json.dumps({"content": text, "user_id": user}),
                 st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1,
                         max_size=40).filter(str.strip),
                 st.sampled_from(["u1", "u2", "ü3"]))
BAD = st.one_of(
    st.text(max_size=30).filter(lambda s: s.strip() and not s.strip().startswith(("{", "[", '"')) and "\n" not in s
                                and "\r" not in s and not s.strip().lstrip("-").replace(".", "", 1).isdigit()),
    st.just('{"user_id": "u1"}'), st.just('{"content": "x"}'), st.just('{"content": "", "user_id": "u"}'),
    st.just('{"content": "x", "user_id": "u", "category": "opinion"}'),
    st.just('{"content": "x", "user_id": "u", "importance": 7}'),
    st.just('{"content": "x", "user_id": "u", "colour": "red"}'), st.just("[1, 2]"), st.just("null"),
    st.just('{"content": "x", "user_id": "u", "scope": "agent"}'),
    st.just('{"content": "x", "user_id": "u", "valid_from": "yesterday"}'),
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.booleans(), GOOD, BAD), min_size=1, max_size=12))
def test_a_bad_line_never_stops_the_rest(engine: MemoryEngine, picks: list[tuple[bool, str, str]]) -> None:
    lines = [good if keep else bad for keep, good, bad in picks]
    before = engine.stats()["total"]
    report = engine.import_(lines, batch_size=3)
    bad_numbers = [n for n, (keep, _, _) in enumerate(picks, start=1) if not keep]
    assert [n for n, _ in report.errors] == bad_numbers
    distinct_new = {line for line, (keep, _, _) in zip(lines, picks) if keep}
    assert report.added + report.skipped == sum(keep for keep, _, _ in picks)
    assert engine.stats()["total"] - before == report.added <= len(distinct_new)


def test_bad_sources_are_refused(engine: MemoryEngine, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no file"):
        engine.import_(tmp_path / "missing.jsonl")
    with pytest.raises(InvalidInputError, match="version 9"):
        engine.import_(['{"format": "headroom-memory", "version": 9}', '{"content": "x", "user_id": "u"}'])
    assert engine.stats()["total"] == 0
    with pytest.raises(InvalidInputError):
        engine.export(12)  # type: ignore[arg-type]
    report = engine.import_(['{"content": "x", "user_id": "u", "vector": "AAAA"}',
                             '{"format": "headroom-memory", "version": 1}'])
    assert report.added == 1 and [n for n, _ in report.errors] == [2]  # a header is only a header on line 1


def test_a_file_with_a_byte_order_mark_and_a_broken_line(engine: MemoryEngine, tmp_path: Path) -> None:
    path = tmp_path / "from-windows.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"content": "Likes tea", "user_id": "u"}\r\n'
                     b'{"content": "Caf\xe9", "user_id": "u"}\r\n{"content": "Plays chess", "user_id": "u"}\r\n')
    report = engine.import_(path)
    assert report.added == 2 and report.errors == ((2, "not UTF-8 text"),)
    assert sorted(m.content for m in engine.query(MemoryFilter(user_id="u"))) == ["Likes tea", "Plays chess"]


def test_a_file_export_is_whole_or_absent(engine: MemoryEngine, tmp_path: Path) -> None:
    engine.add("Likes tea", user_id="u")
    path = tmp_path / "out.jsonl"
    engine.export(path)
    assert len(path.read_text().splitlines()) == 2 and not (tmp_path / "out.jsonl.partial").exists()


def test_users_and_score_parts(engine: MemoryEngine) -> None:
    fill(engine)
    assert engine.users() == [UserCounts("alice", 5, 1), UserCounts("bob", 3, 3), UserCounts("carol", 4, 3)]
    for hit in engine.search("where does alice work now?", user_id="alice") + engine.search("note", user_id="bob",
                                                                                            session_id="s1"):
        assert hit.vector_part + hit.keyword_part + hit.context_part + hit.common_term_part + hit.time_part == (
            pytest.approx(hit.fused_score))
        assert hit.vector_part == pytest.approx(0.5 * hit.score, abs=1e-6)
        assert 0 <= hit.keyword_part <= 0.5 * hit.keyword_score + 1e-9 and hit.context_part >= 0


def test_doctor_finds_and_repairs(make_engine: Make, store: Store) -> None:
    engine = make_engine()
    fill(engine)
    healthy = engine.doctor()
    assert healthy and not any(healthy.values())
    damage = ["DROP INDEX ix_memories_chain"]
    expected = {"indexes_missing": 1}
    if store.kind == "sqlite":
        damage += ["DELETE FROM memories WHERE user_id = 'bob'",  # the change log the vector index follows is not told
                   "INSERT INTO memories_fts(memories_fts, rowid, search_text) SELECT 'delete', pk, search_text "
                   "FROM memories WHERE user_id = 'carol' LIMIT 1",
                   "UPDATE memories_terms SET docs = docs + 2 WHERE term IN ('work', 'mode')"]
        expected |= {"index_extra": 3, "keyword_index": 1, "term_counts": 2}
    store.execute(*damage)
    found = engine.doctor()
    assert {name: n for name, n in found.items() if n} == expected
    assert engine.doctor(repair=True) == found
    assert not any(engine.doctor().values())
    assert all(hit.memory.user_id == "alice" for hit in engine.search("note", user_id="alice"))


def test_doctor_embeds_rows_left_without_a_vector(make_engine: Make, store: Store) -> None:
    engine = make_engine()
    kept = engine.add("Likes green tea", user_id="u")
    engine.add("Plays the cello", user_id="u")
    store.execute(f"UPDATE memories SET embedding = NULL WHERE id = '{kept.id}'")
    assert engine.doctor()["rows_without_vector"] == 1
    engine.doctor(repair=True)
    assert not any(engine.doctor().values())
    assert engine.search("which drink?", user_id="u")[0].id == kept.id


def test_metadata_holding_a_lone_surrogate_round_trips(make_engine: Make, tmp_path: Path) -> None:
    """``add`` keeps such metadata exactly; the export wrote it raw and failed (UnicodeEncodeError),
    losing every memory of the file: it is written as a JSON escape instead."""
    source = make_engine(db_path=tmp_path / "source.db")
    kept = source.add("Has a cat", user_id="alice", metadata={"from_js": "half \ud83d emoji"})
    path = tmp_path / "odd.jsonl"
    assert source.export(path).memories == 1
    target = make_engine()
    assert target.import_(path).added == 1
    assert target.get(kept.id).metadata == {"from_js": "half \ud83d emoji"}


def test_a_line_with_an_over_long_id_is_refused_and_the_others_stored(engine: MemoryEngine) -> None:
    """Memory ids are UUID-sized on both backends: PostgreSQL's columns hold 36 characters and
    refused the whole batch (StorageError); the line is now refused on its own."""
    lines = [json.dumps({"id": "note-" + "x" * 40, "content": "Too long an id", "user_id": "alice"}),
             json.dumps({"id": "note-1", "content": "Likes tea", "user_id": "alice"})]
    report = engine.import_(lines)
    assert report.added == 1 and [number for number, _ in report.errors] == [1]
    assert "longer than 36 characters" in report.errors[0][1]
    assert [m.content for m in engine.query(MemoryFilter(user_id="alice"))] == ["Likes tea"]
