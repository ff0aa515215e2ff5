"""When a fact was stated (``Memory.observed_at``), on every backend: set on add, per item of a
batch, on new versions and edits; kept by rollbacks; filtered by ``query``; upgraded from
version-2 stores; exported and imported; shown in injected memories."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stores import Store  # tests/ is on sys.path

from headroom_integrations import HierarchicalMemory, MemoryEngine, MemoryFilter
from headroom_integrations.errors import InvalidInputError
from headroom_integrations.inline import format_memories
from headroom_integrations.memory.backends.schema import SCHEMA_VERSION

UTC = timezone.utc
MAY_8 = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)


def test_observed_at_defaults_to_the_time_of_adding(engine: MemoryEngine) -> None:
    memory = engine.add("Keeps bees", user_id="alice")
    assert memory.observed_at == memory.created_at and memory.observed_at.tzinfo is UTC
    assert engine.get(memory.id) == memory


@pytest.mark.parametrize("given_as", [
    MAY_8, MAY_8.replace(tzinfo=None), "2023-05-08T13:56:00Z", "2023-05-08T15:56:00+02:00",
    MAY_8.astimezone(timezone(timedelta(hours=-7))),
])
def test_observed_at_is_set_on_add_in_any_accepted_form(engine: MemoryEngine, given_as: object) -> None:
    memory = engine.add("Adopted a dog", user_id="alice", observed_at=given_as)  # type: ignore[arg-type]
    assert memory.observed_at == MAY_8 and memory.observed_at.tzinfo is UTC  # naive means UTC
    assert memory.created_at > MAY_8  # stored now, stated then
    assert engine.get(memory.id).observed_at == MAY_8  # type: ignore[union-attr]


def test_a_date_is_its_midnight_utc(engine: MemoryEngine) -> None:
    memory = engine.add("Ran a marathon", user_id="alice", observed_at=date(2023, 5, 8))
    assert engine.get(memory.id).observed_at == datetime(2023, 5, 8, tzinfo=UTC)  # type: ignore[union-attr]


def test_add_batch_takes_observed_at_per_item(engine: MemoryEngine) -> None:
    stated, default = engine.add_batch(
        [{"content": "Moved to Porto", "observed_at": "2022-01-15"}, "Likes tea"], user_id="alice"
    )
    assert stated.observed_at == datetime(2022, 1, 15, tzinfo=UTC)
    assert default.observed_at == default.created_at
    assert [m.observed_at for m in engine.query(MemoryFilter(user_id="alice"))] == [
        stated.observed_at, default.observed_at]


@pytest.mark.parametrize("bad", ["yesterday", "2023-13-01", 1683554160, 1.5, True, [2023, 5, 8], ""])
def test_bad_observed_at_is_refused_and_nothing_is_stored(engine: MemoryEngine, bad: object) -> None:
    with pytest.raises(InvalidInputError, match="observed_at must be a datetime, a date or an ISO 8601 string"):
        engine.add("x", user_id="alice", observed_at=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="item 1: observed_at must be"):
        engine.add_batch(["fine", {"content": "x", "observed_at": bad}], user_id="alice")
    assert engine.query(MemoryFilter(include_superseded=True)) == []
    kept = engine.add("Keeps bees", user_id="alice")
    for call in (lambda: engine.supersede(kept.id, "Keeps wasps", observed_at=bad),
                 lambda: engine.update(kept.id, observed_at=bad),
                 lambda: engine.query(MemoryFilter(observed_after=bad)),
                 lambda: engine.query(MemoryFilter(observed_before=bad))):
        with pytest.raises(InvalidInputError, match=r"observed_(at|after|before) must be"):
            call()  # type: ignore[no-untyped-call]
    assert engine.get_history(kept.id) == [kept]


def test_supersede_is_stated_now_unless_told(engine: MemoryEngine) -> None:
    old = engine.add("Works at Google", user_id="alice", observed_at="2021-03-01")
    now = engine.supersede(old.id, "Works at Anthropic")
    assert now.observed_at == now.created_at
    later = engine.supersede(now.id, "Works at home", observed_at=MAY_8)
    assert later.observed_at == MAY_8
    assert [m.observed_at for m in engine.get_history(later.id)] == [
        datetime(2021, 3, 1, tzinfo=UTC), now.observed_at, MAY_8]


def test_update_keeps_observed_at_unless_given(engine: MemoryEngine) -> None:
    memory = engine.add("Works at Gogle", user_id="alice", observed_at=MAY_8)
    fixed = engine.update(memory.id, content="Works at Google")
    assert fixed.observed_at == MAY_8 and fixed.id == memory.id  # a correction of the same statement
    moved = engine.update(memory.id, observed_at="2023-05-09")
    assert moved.observed_at == datetime(2023, 5, 9, tzinfo=UTC) and moved.content == "Works at Google"
    assert engine.get_history(memory.id) == [moved]


def test_rollback_restores_the_old_versions_observed_at(engine: MemoryEngine) -> None:
    old = engine.add("Lives in Porto", user_id="alice", observed_at=MAY_8)
    new = engine.supersede(old.id, "Lives in Lisbon")
    back = engine.rollback(old.id)
    assert back.content == "Lives in Porto" and back.observed_at == MAY_8 and back.created_at > new.created_at
    again = engine.rollback(new.id, observed_at="2024-01-01")
    assert again.content == "Lives in Lisbon" and again.observed_at == datetime(2024, 1, 1, tzinfo=UTC)


def test_items_are_stated_when_put(engine: MemoryEngine) -> None:
    first = engine.put_item("alice", ("prefs",), "food", "Likes tea")
    second = engine.put_item("alice", ("prefs",), "food", "Likes coffee")
    assert first.observed_at == first.created_at
    assert second.observed_at > first.observed_at and second.created_at == first.created_at  # the item's


def test_query_filters_on_when_facts_were_stated(engine: MemoryEngine) -> None:
    for day in (1, 8, 15):
        engine.add(f"Event on May {day}", user_id="alice", observed_at=date(2023, 5, day))
    engine.add("Stated now", user_id="alice")

    def contents(**bounds: object) -> list[str]:
        return [m.content for m in engine.query(MemoryFilter(user_id="alice", **bounds))]  # type: ignore[arg-type]

    assert contents(observed_after="2023-05-08", observed_before="2023-05-15") == ["Event on May 8"]  # [after, before)
    assert contents(observed_before=date(2023, 5, 9)) == ["Event on May 1", "Event on May 8"]
    assert contents(observed_after=MAY_8) == ["Event on May 15", "Stated now"]
    assert contents(observed_after="2030-01-01") == []


def test_old_versions_are_filtered_by_their_own_time(engine: MemoryEngine) -> None:
    old = engine.add("Works at Google", user_id="alice", observed_at="2021-03-01")
    engine.supersede(old.id, "Works at Anthropic", observed_at="2023-05-08")
    found = engine.query(MemoryFilter(user_id="alice", include_superseded=True, observed_before="2022-01-01"))
    assert [m.content for m in found] == ["Works at Google"]
    assert engine.query(MemoryFilter(user_id="alice", observed_before="2022-01-01")) == []  # not current


moments = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
                       timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                                  timezone(timedelta(hours=-8))]) | st.none())
forms = st.sampled_from(["datetime", "iso", "date"])


def _as(moment: datetime, form: str) -> object:
    if form == "iso":
        return moment.isoformat()
    if form == "date":
        return moment.date()
    return moment


def _expected(moment: datetime, form: str) -> datetime:
    if form == "date":
        return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC)


@given(moment=moments, form=forms, other=moments)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_accepted_date_round_trips_and_filters_exactly(engine: MemoryEngine, moment: datetime, form: str,
                                                           other: datetime) -> None:
    engine.clear("fuzz")
    expected = _expected(moment, form)
    stored = engine.add("A dated fact", user_id="fuzz", observed_at=_as(moment, form))  # type: ignore[arg-type]
    read = engine.get(stored.id)
    assert read is not None and read.observed_at == stored.observed_at
    assert abs(read.observed_at - expected) < timedelta(microseconds=1)  # stored to the microsecond
    bound = _expected(other, "datetime")
    after = engine.query(MemoryFilter(user_id="fuzz", observed_after=_as(other, "iso")))
    before = engine.query(MemoryFilter(user_id="fuzz", observed_before=other))
    assert [m.id for m in after] == ([stored.id] if read.observed_at >= bound else [])
    assert [m.id for m in before] == ([stored.id] if read.observed_at < bound else [])


# -- older stores -----------------------------------------------------------------------------------


def _to_version_2(engine: MemoryEngine) -> None:
    """Make the store look like one written before ``observed_at`` existed (schema 2)."""
    with engine.backend.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.exec_driver_sql("DROP INDEX ix_memories_user_observed")
        conn.exec_driver_sql("ALTER TABLE memories DROP COLUMN observed_at")
        conn.exec_driver_sql("UPDATE meta SET value = '2' WHERE key = 'schema_version'")


def test_a_version_2_store_is_upgraded_in_place(make_engine: Callable[..., MemoryEngine], store: Store) -> None:
    engine = make_engine()
    old = engine.add("Keeps bees", user_id="alice", observed_at=MAY_8)  # its time is lost with the column
    chain = engine.supersede(engine.add("Works at Google", user_id="alice").id, "Works at Anthropic")
    _to_version_2(engine)
    engine.close()
    engine = make_engine()
    assert engine.backend.meta()["schema_version"] == SCHEMA_VERSION == "3"
    upgraded = engine.get(old.id)
    assert upgraded is not None and upgraded.observed_at == upgraded.created_at == old.created_at  # backfilled
    assert all(m.observed_at == m.created_at for m in engine.get_history(chain.id))
    assert [h.content for h in engine.search("bees", user_id="alice", top_k=1)] == ["Keeps bees"]
    assert [m.content for m in engine.query(MemoryFilter(user_id="alice", observed_before=old.created_at
                                                         + timedelta(microseconds=1)))] == ["Keeps bees"]
    fresh = engine.add("Adopted a dog", user_id="alice", observed_at=MAY_8)
    assert engine.get(fresh.id).observed_at == MAY_8  # type: ignore[union-attr]


@pytest.mark.sqlite_only
def test_a_read_only_version_2_store_says_how_to_upgrade(make_engine: Callable[..., MemoryEngine],
                                                         store: Store) -> None:
    import multiprocessing
    import os

    import workers

    engine = make_engine()
    engine.add("Keeps bees", user_id="alice")
    _to_version_2(engine)
    engine.close()
    os.chmod(store.spec, 0o444)
    try:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            message = pool.apply(workers.open_error, (store.spec,))
    finally:
        os.chmod(store.spec, 0o644)
    assert message.startswith("StorageError") and "(schema 2) and is read-only: open it writable once" in message
    assert make_engine().query(MemoryFilter(user_id="alice"))[0].observed_at is not None  # writable: upgraded


# -- export and import ------------------------------------------------------------------------------


def test_export_writes_observed_at_and_import_reads_it(make_engine: Callable[..., MemoryEngine],
                                                       tmp_path: object) -> None:
    import io

    source = make_engine()
    memory = source.add("Adopted a dog", user_id="alice", observed_at=MAY_8)
    out = io.StringIO()
    source.export(out)
    header, line = [json.loads(text) for text in out.getvalue().splitlines()]
    assert header["version"] == 2 and line["observed_at"] == "2023-05-08T13:56:00+00:00"
    target = make_engine(db_path=str(tmp_path) + "/copy.db")  # type: ignore[operator]
    assert target.import_(io.StringIO(out.getvalue())).added == 1
    assert target.get(memory.id) == memory


def test_version_1_files_and_minimal_lines_are_stated_at_created_at(engine: MemoryEngine) -> None:
    lines = [
        '{"format": "headroom-memory", "version": 1, "embedder": null, "dimension": null}',
        '{"id": "m-1", "content": "Keeps bees", "user_id": "alice", "created_at": "2022-02-02T10:00:00+00:00"}',
        '{"content": "Likes tea", "user_id": "alice", "created_at": "2021-01-01",'
        ' "observed_at": "2020-06-01T08:00:00Z"}',
    ]
    assert engine.import_(lines).added == 2
    bees = engine.get("m-1")
    assert bees is not None and bees.observed_at == bees.created_at == datetime(2022, 2, 2, 10, tzinfo=UTC)
    tea = next(m for m in engine.query(MemoryFilter(user_id="alice")) if m.content == "Likes tea")
    assert tea.observed_at == datetime(2020, 6, 1, 8, tzinfo=UTC)
    bad = engine.import_(['{"content": "x", "user_id": "alice", "observed_at": 12}'])
    assert bad.failed == 1 and "observed_at must be" in bad.errors[0][1]


def test_mem0_lines_are_stated_when_mem0_stored_them(engine: MemoryEngine) -> None:
    line = {"id": "a1", "memory": "Likes tea", "user_id": "alice", "created_at": "2024-07-20T23:10:00-07:00"}
    assert engine.import_([json.dumps(line)]).added == 1
    memory = engine.get("a1")
    assert memory is not None and memory.observed_at == memory.created_at == datetime(2024, 7, 21, 6, 10, tzinfo=UTC)


# -- injection and the async face -------------------------------------------------------------------


def test_injected_memories_show_the_utc_date_they_were_stated(engine: MemoryEngine) -> None:
    late = datetime(2023, 5, 8, 23, 30, tzinfo=timezone(timedelta(hours=-5)))  # May 9, 04:30 UTC
    engine.add("Prefers Go", user_id="alice", category="preference", observed_at=late)
    hits = engine.search("which language does alice prefer", user_id="alice")
    assert format_memories(hits).text == "<memories>\n[m1] (2023-05-09) (preference) Prefers Go\n</memories>"


async def test_the_async_face_passes_observed_at_through(store: Store) -> None:
    async with await HierarchicalMemory.create(store.config()) as memory:
        first = await memory.add("Works at Google", user_id="alice", observed_at="2021-03-01")
        second = await memory.supersede(first.id, "Works at Anthropic", observed_at=MAY_8)
        [batch] = await memory.add_batch([{"content": "Likes tea", "observed_at": "2020-01-01"}], user_id="alice")
        assert (first.observed_at.year, second.observed_at, batch.observed_at.year) == (2021, MAY_8, 2020)
        edited = await memory.update(second.id, observed_at="2023-05-09")
        assert edited.observed_at == datetime(2023, 5, 9, tzinfo=UTC)
        back = await memory.rollback(first.id)
        assert back.observed_at == first.observed_at
        found = await memory.query(MemoryFilter(user_id="alice", observed_before="2021-01-01"))
        assert [m.content for m in found] == ["Likes tea"]
