"""LangChain adapters with real LangChain classes (fake chat models only at the LLM boundary)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_tests.integration_tests import RetrieversIntegrationTests
from pydantic import Field
from stores import Store

from headroom_integrations import MemoryConfig, MemoryEngine, MemoryFilter
from headroom_integrations.inline import MEMORY_INSTRUCTION
from headroom_integrations.langchain import (
    HeadroomChatMessageHistory,
    HeadroomMemoryCallbackHandler,
    HeadroomMemoryMiddleware,
    HeadroomMemoryRetriever,
)
from headroom_integrations.langchain.retriever import format_docs

GO = '<memory>{"memories": [{"content": "Prefers Go for performance-critical code", "category": "preference"}]}</memory>'


class RecordingChatModel(GenericFakeChatModel):
    """GenericFakeChatModel that also records the messages of every call."""

    seen: list[list[BaseMessage]] = Field(default_factory=list)

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def _model(*replies: str) -> RecordingChatModel:
    return RecordingChatModel(messages=iter([AIMessage(content=r) for r in replies]), seen=[])


# -- retriever ---------------------------------------------------------------------------------

_RETRIEVER_DB: dict[str, MemoryEngine] = {}


def _retriever_engine(tmp_path_factory: pytest.TempPathFactory) -> MemoryEngine:
    if "engine" not in _RETRIEVER_DB:
        engine = MemoryEngine(MemoryConfig(db_path=tmp_path_factory.mktemp("retriever") / "m.db"))
        engine.add_batch([f"Fact {i}: enjoys example hobby number {i}" for i in range(12)], user_id="u")
        _RETRIEVER_DB["engine"] = engine
    return _RETRIEVER_DB["engine"]


class TestHeadroomRetrieverStandard(RetrieversIntegrationTests):
    """LangChain's own retriever test suite, run in-process against a real store."""

    @pytest.fixture(autouse=True)
    def _store(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._engine = _retriever_engine(tmp_path_factory)

    @property
    def retriever_constructor(self) -> type[HeadroomMemoryRetriever]:
        return HeadroomMemoryRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"memory": self._engine, "user_id": "u"}

    @property
    def retriever_query_example(self) -> str:
        return "example hobby"


def test_retriever_documents_and_filters(engine: MemoryEngine) -> None:
    engine.add("Chose PostgreSQL over MySQL", user_id="u", category="decision", importance=0.8)
    engine.add("Prefers PostgreSQL for analytics", user_id="u", category="preference")
    engine.add("Someone else's database fact", user_id="v")
    retriever = HeadroomMemoryRetriever(memory=engine, user_id="u", k=5)
    docs = retriever.invoke("database")
    assert {d.page_content for d in docs} == {"Chose PostgreSQL over MySQL", "Prefers PostgreSQL for analytics"}
    meta = next(d.metadata for d in docs if d.page_content.startswith("Chose"))
    assert meta["category"] == "decision" and meta["scope"] == "user" and meta["importance"] == 0.8
    assert {"id", "created_at", "valid_from", "valid_to", "score"} <= set(meta)
    assert len(retriever.invoke("database", k=1)) == 1
    only = HeadroomMemoryRetriever(memory=engine, user_id="u", categories=["decision"])
    assert [d.page_content for d in only.invoke("database")] == ["Chose PostgreSQL over MySQL"]
    assert retriever.invoke("   ") == []


async def test_retriever_in_an_lcel_rag_chain(engine: MemoryEngine) -> None:
    engine.add("Lives in Lisbon", user_id="u")
    retriever = HeadroomMemoryRetriever(memory=engine, user_id="u", k=2)
    prompt = ChatPromptTemplate.from_messages([("system", "Known facts:\n{context}"), ("human", "{question}")])
    model = _model("You live in Lisbon.")
    chain = {"context": retriever | format_docs, "question": RunnablePassthrough()} | prompt | model
    answer = await chain.ainvoke("Where do I live?")
    assert answer.content == "You live in Lisbon."
    assert "- Lives in Lisbon" in model.seen[0][0].content


# -- chat message history ------------------------------------------------------------------------------


def test_history_round_trip_across_reopen(make_engine: Callable[..., MemoryEngine], store: Store) -> None:
    history = HeadroomChatMessageHistory("s1", user_id="alice", memory=make_engine())
    history.add_messages([HumanMessage("I prefer Go for performance-critical code"),
                          AIMessage("Noted, Go it is.\n" + GO)])
    HeadroomChatMessageHistory("s2", user_id="alice", memory=history.engine).add_messages([HumanMessage("other")])
    assert [m.content for m in history.messages] == ["I prefer Go for performance-critical code", "Noted, Go it is."]
    history.engine.close()
    reopened = HeadroomChatMessageHistory("s1", user_id="alice", **store.where)
    assert [type(m) for m in reopened.messages] == [HumanMessage, AIMessage]
    assert reopened.messages[1].content == "Noted, Go it is."
    assert [m.content for m in reopened.engine.query(MemoryFilter(user_id="alice"))] == [
        "Prefers Go for performance-critical code"]
    reopened.clear()
    assert reopened.messages == []
    assert len(HeadroomChatMessageHistory("s2", user_id="alice", memory=reopened.engine).messages) == 1
    reopened.engine.close()


async def test_history_native_async_and_compression(engine: MemoryEngine) -> None:
    engine.add("Has a golden retriever called Rex", user_id="bob", category="entity")
    history = HeadroomChatMessageHistory("s", user_id="bob", memory=engine, compress=True, recent_messages=2)
    await history.aadd_messages([HumanMessage(f"message {i}") for i in range(5)])
    await history.aadd_messages([HumanMessage("What is my dog called?")])
    messages = await history.aget_messages()
    assert isinstance(messages[0], SystemMessage) and "golden retriever called Rex" in messages[0].content
    assert [m.content for m in messages[1:]] == ["message 4", "What is my dog called?"]
    await history.aclear()
    assert await history.aget_messages() == []


def test_history_with_runnable_with_message_history(engine: MemoryEngine) -> None:
    from langchain_core.runnables.history import RunnableWithMessageHistory

    prompt = ChatPromptTemplate.from_messages([("placeholder", "{history}"), ("human", "{question}")])
    model = _model("Noted.\n" + GO, "Go, as you prefer.")
    chain = RunnableWithMessageHistory(
        prompt | model, lambda session_id: HeadroomChatMessageHistory(session_id, user_id="bob", memory=engine),
        input_messages_key="question", history_messages_key="history")
    config = {"configurable": {"session_id": "s1"}}
    chain.invoke({"question": "I prefer Go"}, config=config)
    chain.invoke({"question": "Which language?"}, config=config)
    second_call = model.seen[1]
    assert [m.content for m in second_call] == ["I prefer Go", "Noted.", "Which language?"]  # block never replayed
    assert [m.content for m in engine.query(MemoryFilter(user_id="bob"))] == ["Prefers Go for performance-critical code"]


# -- callback handler + companions -------------------------------------------------------------------


def _chain(handler: HeadroomMemoryCallbackHandler, model: GenericFakeChatModel) -> Any:
    prompt = ChatPromptTemplate.from_messages([
        ("system", "You are helpful.\n\n{memory_instruction}"),
        ("human", "{question}\n\nWhat you remember about me:\n{memories}"),
    ])
    return handler.injector() | prompt | model | handler.stripper()


def test_callback_on_a_chain(engine: MemoryEngine) -> None:
    handler = HeadroomMemoryCallbackHandler(user_id="carol", memory=engine, session_id="s1")
    model = _model("Great choice.\n" + GO, "Use Go.")
    chain = _chain(handler, model)
    first = chain.invoke({"question": "I prefer Go"}, config={"callbacks": [handler]})
    assert first.content == "Great choice."
    assert MEMORY_INSTRUCTION in model.seen[0][0].content
    second = chain.invoke({"question": "Which language for my service?"}, config={"callbacks": [handler]})
    assert second.content == "Use Go."
    assert re.search(r"\[m1\] \(\d{4}-\d\d-\d\d\) \(preference\) Prefers Go for performance-critical code",
                     model.seen[1][1].content)


def test_callback_with_streaming_strips_in_flight(engine: MemoryEngine) -> None:
    handler = HeadroomMemoryCallbackHandler(user_id="dan", memory=engine)
    chain = _chain(handler, _model("Sure thing, noted!\n" + GO))
    pieces = [chunk.content for chunk in chain.stream({"question": "I like Go"}, config={"callbacks": [handler]})]
    assert len(pieces) > 3 and "".join(pieces) == "Sure thing, noted!"
    assert [m.content for m in engine.query(MemoryFilter(user_id="dan"))] == ["Prefers Go for performance-critical code"]


async def test_async_callback_handler(engine: MemoryEngine) -> None:
    from headroom_integrations.langchain import AsyncHeadroomMemoryCallbackHandler

    handler = AsyncHeadroomMemoryCallbackHandler("erin", memory=engine)
    chain = _chain(handler.sync, _model("Okay.\n" + GO))
    reply = await chain.ainvoke({"question": "I like Go"}, config={"callbacks": [handler]})
    assert reply.content == "Okay."
    assert engine.stats("erin")["total"] == 1


# -- agent middleware -----------------------------------------------------------------------------------


@pytest.mark.parametrize("use_async", [False, True])
async def test_agent_remembers_across_threads(engine: MemoryEngine, use_async: bool) -> None:
    from langchain.agents import create_agent

    model = _model("Noted, Go it is.\n" + GO, "Go fits your preference.")
    agent = create_agent(model, tools=[], middleware=[HeadroomMemoryMiddleware(user_id="frank", memory=engine)])
    run = agent.ainvoke if use_async else agent.invoke

    async def ask(text: str, thread: str) -> dict[str, Any]:
        result = run({"messages": [{"role": "user", "content": text}]}, config={"configurable": {"thread_id": thread}})
        return await result if use_async else result  # type: ignore[misc]

    first = await ask("I prefer Go for performance-critical code", "t1")
    assert first["messages"][-1].content == "Noted, Go it is."  # the block is not kept in state
    second = await ask("What language for my new microservice?", "t2")
    assert second["messages"][-1].content == "Go fits your preference."
    seen = model.seen[1]
    assert MEMORY_INSTRUCTION in seen[0].content
    assert "Prefers Go for performance-critical code" in seen[-1].content
    stored = engine.query(MemoryFilter(user_id="frank"))
    assert [(m.content, m.session_id) for m in stored] == [("Prefers Go for performance-critical code", "t1")]


@pytest.mark.parametrize(("system_prompt", "instruct", "expected"), [
    (None, True, 1), ("Be brief.", True, 1), ("Be brief.\n\n" + MEMORY_INSTRUCTION, True, 1), ("Be brief.", False, 0),
])
def test_agent_instruction_policy(
    engine: MemoryEngine, system_prompt: str | None, instruct: bool, expected: int
) -> None:
    """The middleware adds the instruction like every adapter does: once, and only when asked."""
    from langchain.agents import create_agent

    model = _model("Okay.")
    middleware = HeadroomMemoryMiddleware(user_id="gail", memory=engine, instruct=instruct)
    agent = create_agent(model, tools=[], system_prompt=system_prompt, middleware=[middleware])
    agent.invoke({"messages": [{"role": "user", "content": "Hi"}]}, config={"configurable": {"thread_id": "t"}})
    system = [m.content for m in model.seen[0] if m.type == "system"]
    assert "".join(system).count(MEMORY_INSTRUCTION) == expected
    if system_prompt is not None:
        assert system[0].startswith("Be brief.")


def test_callback_with_a_completion_model(engine: MemoryEngine) -> None:
    from langchain_core.language_models.fake import FakeListLLM
    from langchain_core.prompts import PromptTemplate

    handler = HeadroomMemoryCallbackHandler(user_id="gina", memory=engine)
    prompt = PromptTemplate.from_template("{memory_instruction}\n\nKnown: {memories}\n\nQ: {question}\nA:")
    chain = handler.injector() | prompt | FakeListLLM(responses=["Sure.\n" + GO]) | handler.stripper()
    assert chain.invoke({"question": "I like Go"}, config={"callbacks": [handler]}) == "Sure."
    assert [m.content for m in engine.query(MemoryFilter(user_id="gina"))] == ["Prefers Go for performance-critical code"]


def test_memory_instruction_template_formats_to_the_instruction(engine: MemoryEngine) -> None:
    """MEMORY_INSTRUCTION's JSON braces break a ChatPromptTemplate; the escaped template formats back to it exactly,
    and a history chain prompted with it stores the block the model writes."""
    import headroom_integrations.langchain as lc
    from headroom_integrations.langchain import MEMORY_INSTRUCTION_TEMPLATE

    assert "MEMORY_INSTRUCTION_TEMPLATE" in lc.__all__
    with pytest.raises((KeyError, ValueError)):
        ChatPromptTemplate.from_messages([("system", MEMORY_INSTRUCTION), ("human", "{question}")]).invoke(
            {"question": "Hi"})
    prompt = ChatPromptTemplate.from_messages([("system", MEMORY_INSTRUCTION_TEMPLATE), ("human", "{question}")])
    assert prompt.input_variables == ["question"]
    assert prompt.invoke({"question": "Hi"}).messages[0].content == MEMORY_INSTRUCTION
    assert prompt.format_messages(question="Hi")[0].content == MEMORY_INSTRUCTION

    model = _model("Noted.\n" + GO)
    history = HeadroomChatMessageHistory("s-template", user_id="tess", memory=engine)
    reply = (prompt | model).invoke({"question": "I prefer Go"})
    assert model.seen[0][0].content == MEMORY_INSTRUCTION
    history.add_messages([HumanMessage("I prefer Go"), reply])
    assert [m.content for m in history.messages] == ["I prefer Go", "Noted."]
    assert [m.content for m in engine.query(MemoryFilter(user_id="tess"))] == ["Prefers Go for performance-critical code"]


def test_list_content_replies_lose_their_block_and_keep_their_facts(engine: MemoryEngine) -> None:
    """Anthropic models and OpenAI's Responses API give list content: the history, the stripper
    (whole and streamed) and so the middleware remove the block from it and store its fact (only
    string content was handled: the block was shown and the fact lost)."""
    reply = 'Sure.\n<memory>{"memories": [{"content": "Prefers oolong tea"}]}</memory>'
    content = [{"type": "text", "text": reply}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]
    history = HeadroomChatMessageHistory("s", user_id="alice", memory=engine)
    history.add_messages([HumanMessage("hi"), AIMessage(content)])
    saved = history.messages[-1].content
    assert saved == [{"type": "text", "text": "Sure."}, content[1]]
    engine.flush()
    assert [m.content for m in engine.query(MemoryFilter(user_id="alice"))] == ["Prefers oolong tea"]
    stripper = HeadroomMemoryCallbackHandler(user_id="alice", memory=engine).stripper()
    assert stripper.invoke(AIMessage(content)).content == saved
    pieces = [reply[i : i + 7] for i in range(0, len(reply), 7)]
    chunks = [AIMessageChunk(content=[{"type": "text", "text": p, "index": 0}]) for p in pieces]
    shown = "".join(block["text"] if isinstance(chunk.content, list) else chunk.content
                    for chunk in stripper.transform(iter(chunks))
                    for block in (chunk.content if isinstance(chunk.content, list) else [None]))
    assert shown.strip() == "Sure."
