"""HeadroomStore against LangGraph's own InMemoryStore (a differential test of every
non-semantic operation), plus semantic search, versions, TTL, errors, a real ``create_agent``
run and LangMem's tools, on every backend."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain.tools import ToolRuntime, tool
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.store.base import GetOp, InvalidNamespaceError, PutOp, SearchOp
from langgraph.store.memory import InMemoryStore
from stores import Store  # tests/ is on sys.path

from headroom_integrations import MemoryEngine, MemoryFilter
from headroom_integrations.errors import InvalidInputError
from headroom_integrations.langgraph import HeadroomStore


@pytest.fixture(scope="module")
def shared(module_store: Store) -> Iterator[HeadroomStore]:
    """One store for the differential examples (each example works under a root label of its own)."""
    with HeadroomStore(**module_store.where) as store:  # type: ignore[arg-type]
        yield store


@pytest.fixture
def hs(store: Store) -> Iterator[HeadroomStore]:
    with HeadroomStore(**store.where) as fresh:  # type: ignore[arg-type]
        yield fresh


# -- the differential test ---------------------------------------------------------------------------

SUB = st.lists(st.sampled_from(["a", "b"]), max_size=2).map(tuple)
KEYS = st.sampled_from(["k1", "k2", "k3"])
VALUES = st.fixed_dictionaries(
    {"n": st.integers(-2, 2), "kind": st.sampled_from(["x", "y"])},
    optional={"meta": st.fixed_dictionaries({"k": st.integers(0, 1)}), "tags": st.lists(st.sampled_from(["t", "u"]), max_size=2),
              "text": st.sampled_from(["Likes tea", "Plays chess", "Has a dog"])},
)
FILTERS = st.none() | st.sampled_from([
    {"n": 1}, {"n": {"$gt": 0}}, {"n": {"$gte": 0, "$lt": 2}}, {"n": {"$lte": -1}}, {"kind": "x"},
    {"kind": {"$ne": "x"}}, {"kind": {"$eq": "y"}, "n": {"$ne": 0}}, {"meta": {"k": 1}}, {"tags": ["t"]},
    {"tags": ["t", "u"]}, {"missing": None},
])
PATHS = st.lists(st.sampled_from(["a", "b", "*"]), min_size=1, max_size=2).map(tuple)
OPS = st.lists(st.one_of(
    st.tuples(st.just("put"), SUB, KEYS, VALUES),
    st.tuples(st.just("delete"), SUB, KEYS),
    st.tuples(st.just("get"), SUB, KEYS),
    st.tuples(st.just("search"), SUB, FILTERS, st.integers(1, 12), st.integers(0, 3)),
    st.tuples(st.just("list"), st.none() | PATHS, st.none() | PATHS, st.none() | st.integers(1, 3),
              st.integers(1, 12), st.integers(0, 2)),
    st.tuples(st.just("batch"), SUB, KEYS, VALUES),
), min_size=1, max_size=14)


def _rows(items: list[Any]) -> list[tuple[Any, ...]]:
    return sorted((i.namespace, i.key, json.dumps(i.value, sort_keys=True)) for i in items)


def _listed(mem: InMemoryStore, root: str, op: tuple[Any, ...]) -> list[tuple[str, ...]]:
    """InMemoryStore's listing, without the namespaces it keeps after their last item went (it
    lists those, LangGraph's database stores do not)."""
    _, prefix, suffix, depth, limit, offset = op
    every = mem.list_namespaces(prefix=(root, *prefix) if prefix else (root,), suffix=suffix, limit=10**6)
    alive = [ns for ns in every if any(i.namespace == ns for i in mem.search(ns, limit=10**6))]
    if depth is not None:
        alive = sorted({ns[:depth] for ns in alive})
    return alive[offset : offset + limit]


@given(ops=OPS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_non_semantic_operation_behaves_as_in_langgraphs_in_memory_store(
    shared: HeadroomStore, ops: list[tuple[Any, ...]]
) -> None:
    root = f"r{uuid.uuid4().hex[:8]}"  # this example's own namespaces
    mem = InMemoryStore()
    for op in ops:
        kind, sub = op[0], op[1]
        ns = (root, *sub) if kind != "list" else None
        if kind == "put":
            for store in (mem, shared):
                store.put(ns, op[2], op[3])
        elif kind == "delete":
            for store in (mem, shared):
                store.delete(ns, op[2])
        elif kind == "get":
            expected, got = mem.get(ns, op[2]), shared.get(ns, op[2])
            assert (got is None) == (expected is None), op
            if got is not None:
                assert (got.namespace, got.key, got.value) == (expected.namespace, expected.key, expected.value)
        elif kind == "search":
            _, _, flt, limit, offset = op
            every = _rows(mem.search(ns, filter=flt, limit=10**6))
            page = shared.search(ns, filter=flt, limit=limit, offset=offset)
            assert len(page) == len(every[offset : offset + limit]), op
            assert set(_rows(page)) <= set(every), op  # pages hold matching items (order: newest first)
            if offset == 0 and limit >= len(every):
                assert _rows(page) == every, op
        elif kind == "list":
            _, prefix, suffix, depth, limit, offset = op
            got = shared.list_namespaces(prefix=(root, *prefix) if prefix else (root,), suffix=suffix,
                                         max_depth=depth, limit=limit, offset=offset)
            assert got == _listed(mem, root, op), op
        else:  # one batch: reads see the store as before it, the last put of a key wins
            _, _, key, value = op
            batch = [GetOp(ns, key), PutOp(ns, key, value), PutOp(ns, key, {**value, "n": 9}),
                     SearchOp(ns, filter={"n": 9}), GetOp(ns, key)]
            expected, got = mem.batch(batch), shared.batch(batch)
            assert [None if r is None else getattr(r, "value", None) for r in (got[0], got[4])] == \
                   [None if r is None else r.value for r in (expected[0], expected[4])]
            assert _rows(got[3]) == _rows(expected[3]) and got[1:3] == expected[1:3] == [None, None]
    assert _rows(shared.search((root,), limit=10**6)) == _rows(mem.search((root,), limit=10**6))


def test_pages_of_a_search_are_newest_first_and_cover_every_item_once(hs: HeadroomStore) -> None:
    for i in range(7):
        hs.put(("docs",), f"k{i}", {"n": i})
    hs.put(("docs",), "k2", {"n": 20})  # updated: now the newest
    pages = [hs.search(("docs",), limit=3, offset=offset) for offset in (0, 3, 6)]
    keys = [item.key for page in pages for item in page]
    assert keys[0] == "k2" and sorted(keys) == sorted(f"k{i}" for i in range(7))
    updated = [item.updated_at for page in pages for item in page]
    assert updated == sorted(updated, reverse=True)


def test_filtered_pages_read_past_the_first_chunk(hs: HeadroomStore) -> None:
    hs.batch([PutOp(("docs", "u", str(i % 2)), f"k{i:03d}", {"n": i, "kind": "xyz"[i % 3]}, index=False)
              for i in range(300)])
    expected = [f"k{i:03d}" for i in reversed(range(300)) if i % 3 == 1]  # one batch: newest is the last put
    got = [item.key for offset in range(0, 100, 25)
           for item in hs.search(("docs",), filter={"kind": "y"}, limit=25, offset=offset)]
    assert sorted(got) == sorted(expected) and len(got) == 100 == len(set(got))
    assert [i.key for i in hs.search(("docs", "u"), filter={"n": {"$gte": 290}}, limit=100)] != []
    assert len(hs.search(("docs",), filter={"kind": "y"}, limit=7, offset=95)) == 5


@pytest.mark.parametrize("namespace", [(), ("",), ("a.b",), ("ok", 3), ("langgraph", "x")])
def test_invalid_namespaces_raise_as_in_langgraph(hs: HeadroomStore, namespace: tuple[Any, ...]) -> None:
    mem = InMemoryStore()
    with pytest.raises(InvalidNamespaceError) as expected:
        mem.put(namespace, "k", {"v": 1})
    with pytest.raises(InvalidNamespaceError) as got:
        hs.put(namespace, "k", {"v": 1})
    assert str(got.value) == str(expected.value)
    assert hs.search((), limit=100) == []


def test_bad_values_filters_and_configuration_get_clear_errors(hs: HeadroomStore, store: Store) -> None:
    with pytest.raises(InvalidInputError, match="JSON-serialisable"):
        hs.put(("docs",), "k", {"when": object()})
    with pytest.raises(InvalidInputError, match="must be a mapping"):
        hs.batch([PutOp(("docs",), "k", ["not", "a", "dict"])])  # type: ignore[arg-type]
    hs.put(("docs",), "k", {"n": 1})
    for store_ in (InMemoryStore(), hs):
        store_.put(("docs",), "k", {"n": 1})
        with pytest.raises(ValueError, match="Unsupported operator: \\$in"):
            store_.search(("docs",), filter={"n": {"$in": [1]}})
    assert hs.search(("docs",), filter={"n": {"$gt": "one"}}) == []  # not a number: no match (no TypeError)
    with pytest.raises(InvalidInputError, match="remove index\\['embed'\\]"):
        HeadroomStore(**store.where, index={"embed": "openai:text-embedding-3-small", "dims": 384})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="index\\['dims'\\] is 1536"):
        HeadroomStore(**store.where, index={"dims": 1536, "fields": ["text"]})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="user_label"):
        HeadroomStore(**store.where, user_label=-1)  # type: ignore[arg-type]
    assert [i.value for i in hs.search(("docs",))] == [{"n": 1}]  # nothing else was stored


# -- semantic search, fields, versions, users ---------------------------------------------------------

FACTS = {"tea": "Drinks green tea every morning", "chess": "Plays chess on weekends",
         "dog": "Has a dog named Rex", "job": "Works as a nurse in Lyon"}


def test_a_query_ranks_by_meaning_and_unembedded_items_fill_the_page(hs: HeadroomStore) -> None:
    for key, text in FACTS.items():
        hs.put(("memories", "alice"), key, {"content": text, "kind": "fact"})
    hs.put(("memories", "alice"), "raw", {"content": "Drinks coffee too"}, index=False)
    hits = hs.search(("memories", "alice"), query="what does she drink in the morning?", limit=3)
    assert hits[0].key == "tea" and all(h.score is not None for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)  # type: ignore[misc]
    every = hs.search(("memories", "alice"), query="what does she drink?", limit=10)
    assert [h.key for h in every][-1] == "raw" and every[-1].score is None  # after the scored ones, like LangGraph
    assert len(every) == 5
    assert [h.key for h in hs.search(("memories",), query="pet animal", limit=1)] == ["dog"]
    assert hs.search(("memories", "alice"), query="drinks", filter={"kind": "none"}) == []
    paged = [h.key for offset in (0, 2) for h in hs.search(("memories", "alice"), query="tea", limit=2, offset=offset)]
    assert sorted(paged) == sorted(h.key for h in hs.search(("memories", "alice"), query="tea", limit=4))


def test_index_fields_choose_what_is_embedded(store: Store) -> None:
    with HeadroomStore(**store.where, index={"fields": ["summary"]}) as hs:  # type: ignore[arg-type]
        hs.put(("docs", "u"), "a", {"summary": "A recipe for lemon cake", "body": "volcanoes and lava"})
        hs.put(("docs", "u"), "b", {"summary": "Notes on volcanoes", "body": "lemon cake"})
        hs.put(("docs", "u"), "c", {"summary": "ignored", "body": "A recipe for lemon cake"}, index=["body"])
        assert hs.search(("docs",), query="lemon cake recipe", limit=2)[0].key in {"a", "c"}
        assert hs.search(("docs",), query="volcano eruption", limit=1)[0].key == "b"
        texts = {m.key: m.content for m in hs.engine.query(MemoryFilter(namespace_prefix=("docs",)))}
        assert texts == {"a": "A recipe for lemon cake", "b": "Notes on volcanoes", "c": "A recipe for lemon cake"}


def test_puts_are_versions_and_the_users_other_adapters_see_them(hs: HeadroomStore, store: Store) -> None:
    ns = ("memories", "alice")
    hs.put(ns, "job", {"content": "Works at Google"})
    first = hs.get(ns, "job")
    hs.put(ns, "job", {"content": "Works at Anthropic"})
    item = hs.get(ns, "job")
    assert item is not None and item.value == {"content": "Works at Anthropic"}
    assert item.created_at == first.created_at and item.updated_at > first.updated_at  # type: ignore[union-attr]
    chain = hs.history(ns, "job")
    assert [m.metadata["value"]["content"] for m in chain] == ["Works at Google", "Works at Anthropic"]
    assert [m.is_current for m in chain] == [False, True]
    assert hs.history(ns, "never-put") == []
    with MemoryEngine(store.config()) as engine:  # with_memory, LangChain, LlamaIndex, MCP: the same user
        assert [h.content for h in engine.search("employer", user_id="alice")] == ["Works at Anthropic"]
        engine.add("Prefers window seats", user_id="alice")
    with HeadroomStore(**store.where) as again:  # type: ignore[arg-type]
        assert again.get(ns, "job").value == {"content": "Works at Anthropic"}  # type: ignore[union-attr]
        assert [i.key for i in again.search(ns)] == ["job"]  # plain memories are not items
    hs.delete(ns, "job")
    assert hs.get(ns, "job") is None and hs.search(ns, query="employer") == []
    hs.put(ns, "job", {"content": "Works at a startup"})
    assert [m.metadata["value"]["content"] for m in hs.history(ns, "job")] == ["Works at Google", "Works at a startup"]


def test_user_label_maps_namespaces_to_users(store: Store) -> None:
    with HeadroomStore(**store.where, user_label=0) as hs:  # type: ignore[arg-type]
        hs.put(("bob", "memories"), "k", {"content": "Bob keeps bees"})
        assert hs.user_of(("bob", "memories")) == "bob"
        assert [h.content for h in hs.engine.search("bees", user_id="bob")] == ["Bob keeps bees"]
    with HeadroomStore(**store.where, user_label=lambda ns: f"team-{ns[-1]}") as hs:  # type: ignore[arg-type]
        hs.put(("x", "red"), "k", {"content": "Red team ships on Fridays"})
        assert hs.engine.query(MemoryFilter(user_id="team-red", namespace_prefix=()))[0].key == "k"
        assert [h.key for h in hs.search(("x",), query="shipping day")] == ["k"]


# -- TTL ----------------------------------------------------------------------------------------------

def _expiry(hs: HeadroomStore, ns: tuple[str, ...], key: str) -> datetime:
    found = hs.engine.query(MemoryFilter(namespace=ns, key=key))
    assert found and found[0].expires_at is not None
    return found[0].expires_at


def test_ttl_expires_refreshes_and_sweeps(store: Store) -> None:
    with HeadroomStore(**store.where, ttl={"default_ttl": 10, "refresh_on_read": True}) as hs:  # type: ignore[arg-type]
        assert hs.supports_ttl
        ns = ("memories", "alice")
        hs.put(ns, "short", {"content": "Parked on level 3"})
        hs.put(ns, "kept", {"content": "Allergic to nuts"}, ttl=None)
        start = _expiry(hs, ns, "short")
        assert timedelta(minutes=9) < start - datetime.now(timezone.utc) <= timedelta(minutes=10)
        hs.get(ns, "short", refresh_ttl=False)
        assert _expiry(hs, ns, "short") == start
        hs.search(ns, query="parking")  # read: refreshed
        assert _expiry(hs, ns, "short") > start
        item = hs.engine.get_item("alice", ns, "short")
        hs.engine.set_expiry({item.id: datetime.now(timezone.utc) - timedelta(seconds=1)})  # type: ignore[union-attr]
        assert hs.get(ns, "short") is None  # expired: never returned
        assert [i.key for i in hs.search(ns)] == ["kept"] and hs.search(ns, query="parking level")[0].key == "kept"
        assert hs.sweep_ttl() == 1 and hs.sweep_ttl() == 0
        assert hs.list_namespaces() == [ns]
        assert hs.start_ttl_sweeper(0.001).done() is False and hs.stop_ttl_sweeper(5)


# -- async, agents, LangMem ---------------------------------------------------------------------------

async def test_the_async_face_runs_the_same_operations(hs: HeadroomStore) -> None:
    ns = ("memories", "carol")
    await hs.aput(ns, "city", {"content": "Lives in Porto"})
    await asyncio.gather(*(hs.aput(ns, f"k{i}", {"content": f"Fact number {i}"}) for i in range(5)))
    assert (await hs.aget(ns, "city")).value == {"content": "Lives in Porto"}  # type: ignore[union-attr]
    assert (await hs.asearch(ns, query="which city?", limit=1))[0].key == "city"
    assert await hs.alist_namespaces() == [ns]
    await hs.adelete(ns, "city")
    assert await hs.aget(ns, "city") is None


class ScriptedModel(GenericFakeChatModel):
    """A chat model that answers from a script, and takes tools like a real one."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:
        return self


def _call(name: str, **args: Any) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"call-{uuid.uuid4().hex[:6]}"}])


@dataclass
class UserContext:
    user_id: str


def _agent_tools() -> list[Any]:
    @tool
    def remember(fact: str, runtime: ToolRuntime[UserContext]) -> str:
        """Remember a fact about the user."""
        runtime.store.put(("memories", runtime.context.user_id), uuid.uuid4().hex, {"content": fact})  # type: ignore[union-attr]
        return "saved"

    @tool
    def recall(question: str, runtime: ToolRuntime[UserContext]) -> str:
        """Look up what is known about the user."""
        hits = runtime.store.search(("memories", runtime.context.user_id), query=question, limit=3)  # type: ignore[union-attr]
        return "\n".join(h.value["content"] for h in hits) or "nothing"

    return [remember, recall]


def test_create_agent_stores_and_later_recalls_through_the_store(hs: HeadroomStore) -> None:
    from langchain.agents import create_agent

    script = iter([
        _call("remember", fact="Alice is allergic to peanuts"), AIMessage(content="Noted."),
        _call("recall", question="does alice have allergies?"), AIMessage(content="Yes: peanuts."),
    ])
    agent = create_agent(ScriptedModel(messages=script), tools=_agent_tools(), store=hs, context_schema=UserContext)
    agent.invoke({"messages": [("user", "I'm allergic to peanuts")]}, context=UserContext("alice"))
    assert [i.value["content"] for i in hs.search(("memories", "alice"))] == ["Alice is allergic to peanuts"]
    later = asyncio.run(agent.ainvoke({"messages": [("user", "What am I allergic to?")]}, context=UserContext("alice")))
    tool_messages = [m for m in later["messages"] if isinstance(m, ToolMessage)]
    assert tool_messages and "peanuts" in str(tool_messages[0].content)
    assert later["messages"][-1].content == "Yes: peanuts."
    assert hs.search(("memories", "bob")) == []


def test_langmem_tools_manage_and_search_memories_on_the_store(hs: HeadroomStore) -> None:
    from langmem import create_manage_memory_tool, create_search_memory_tool

    manage = create_manage_memory_tool(namespace=("memories", "{langgraph_user_id}"), store=hs)
    search = create_search_memory_tool(namespace=("memories", "{langgraph_user_id}"), store=hs)
    config = {"configurable": {"langgraph_user_id": "dana"}}
    created = manage.invoke({"content": "Dana prefers aisle seats", "action": "create"}, config)
    memory_id = created.split()[-1]
    manage.invoke({"content": "Dana runs marathons", "action": "create"}, config)
    found = search.invoke({"query": "seat preference on flights"}, config)
    results = json.loads(found) if isinstance(found, str) else found[0]
    assert results[0]["value"]["content"] == "Dana prefers aisle seats"
    manage.invoke({"content": "Dana now prefers window seats", "action": "update", "id": memory_id}, config)
    assert hs.get(("memories", "dana"), memory_id).value == {"content": "Dana now prefers window seats"}  # type: ignore[union-attr]
    assert len(hs.history(("memories", "dana"), memory_id)) == 2  # the update is a new version
    manage.invoke({"action": "delete", "id": memory_id}, config)
    assert [i.value["content"] for i in hs.search(("memories", "dana"))] == ["Dana runs marathons"]
    assert asyncio.run(manage.ainvoke({"content": "Dana has a cat", "action": "create"}, config)).startswith("created")


@pytest.mark.parametrize("label", [" ", "\t", "\u00a0", "x" * 300])
def test_a_user_label_langgraph_accepts_holds_items(hs: HeadroomStore, label: str) -> None:
    """A label LangGraph accepts in the user position (blank, very long) holds items as in
    InMemoryStore; it raised InvalidInputError as a user id, even on reads."""
    reference = InMemoryStore()
    for store in (reference, hs):
        assert store.get(("memories", label), "k") is None
        store.put(("memories", label), "k", {"content": "Likes green tea"})
    assert hs.get(("memories", label), "k").value == reference.get(("memories", label), "k").value  # type: ignore[union-attr]
    assert [h.key for h in hs.search(("memories", label), query="tea")] == ["k"]
    assert hs.list_namespaces(prefix=("memories",)) == reference.list_namespaces(prefix=("memories",))


def test_a_batch_that_fails_changes_nothing(hs: HeadroomStore) -> None:
    """The deletes of a batch ran before its puts were checked: a refused value lost the deleted item."""
    ns = ("memories", "alice")
    hs.put(ns, "a", {"content": "keep me"})
    with pytest.raises(InvalidInputError):
        hs.batch([PutOp(ns, "a", None), PutOp(ns, "b", {"x": float("nan")})])
    assert hs.get(ns, "a") is not None and hs.get(ns, "b") is None


def test_items_with_the_same_text_are_each_ranked(hs: HeadroomStore) -> None:
    """Two keys holding the same words are two items: search ranks both (one was collapsed as a
    repeat of the other and came back unscored, or not at all)."""
    ns = ("memories", "alice")
    for key, text in (("d1", "Likes green tea"), ("d2", "likes green tea."), ("other", "Plays chess")):
        hs.put(ns, key, {"content": text})
    hits = {h.key: h.score for h in hs.search(ns, query="green tea", limit=3)}
    assert hits["d1"] is not None and hits["d2"] is not None and hits["d1"] == pytest.approx(hits["d2"], abs=0.05)


def test_a_users_order_is_the_same_when_other_users_are_searched_too(hs: HeadroomStore) -> None:
    """Hits of several users are merged by the score the engine ranked them by, so one user's items
    keep the order a search of that user alone gives (they were re-sorted by cosine)."""
    texts = ["Drinks green tea every morning", "Tea ceremony in Kyoto was memorable", "Owns a cat called Tea",
             "Prefers coffee over tea", "Green smoothies for breakfast", "Tea tea tea", "Reads science fiction"]
    for i, text in enumerate(texts):
        hs.put(("memories", "alice"), f"k{i}", {"content": text})
    hs.put(("memories", "zed"), "z", {"content": "Drinks black tea"})
    alone = [h.key for h in hs.search(("memories", "alice"), query="tea", limit=20)]
    merged = [h.key for h in hs.search(("memories",), query="tea", limit=20) if h.namespace[1] == "alice"]
    assert merged == alone
