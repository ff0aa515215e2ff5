"""The adapters store a reply's memories stated at the turn's time: the time the user's message
carries (real LangChain / LlamaIndex message classes), else the time the request was made
(taken before the model call, not after the reply)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatResult
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse, LLMMetadata
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from openai import OpenAI
from openai_stub import StubLLM
from pydantic import Field

from headroom_integrations import MemoryEngine, MemoryFilter, with_memory
from headroom_integrations.adapter_core import message_time, stated_at

UTC = timezone.utc
MAY_8 = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
GO = '<memory>{"memories": [{"content": "Prefers Go for performance-critical code", "category": "preference"}]}</memory>'


def _now() -> datetime:
    return datetime.now(UTC)


def _stored(engine: MemoryEngine, user_id: str) -> list[tuple[str, datetime, datetime]]:
    return [(m.content, m.observed_at, m.created_at) for m in engine.query(MemoryFilter(user_id=user_id))]


# -- the shared helpers ------------------------------------------------------------------------------


def test_message_time_reads_the_real_message_classes() -> None:
    assert message_time(HumanMessage("hi", additional_kwargs={"timestamp": "2023-05-08T13:56:00Z"})) == MAY_8
    assert message_time(HumanMessage("hi", response_metadata={"created_at": MAY_8})) == MAY_8
    assert message_time(ChatMessage(role="user", content="hi", additional_kwargs={"observed_at": MAY_8})) == MAY_8
    assert message_time(HumanMessage("hi", additional_kwargs={"timestamp": 1683554160})) is None  # not a date: ignored
    assert message_time(HumanMessage("hi", additional_kwargs={"timestamp": "soon", "created_at": "2023-05-08"})) == (
        datetime(2023, 5, 8, tzinfo=UTC))  # the next key that holds a date
    assert message_time({"role": "user", "content": "hi"}) is None and message_time(object()) is None


def test_stated_at_takes_the_last_user_message_else_the_default() -> None:
    old = HumanMessage("earlier", additional_kwargs={"timestamp": "2020-01-01"})
    dated = ChatMessage(role="user", content="hi", additional_kwargs={"timestamp": MAY_8})
    assert stated_at([old, AIMessage("ok"), HumanMessage("now", additional_kwargs={"timestamp": MAY_8})]) == MAY_8
    assert stated_at([dated, ChatMessage(role="assistant", content="ok")]) == MAY_8
    before = _now()
    assert before <= stated_at([old, AIMessage("ok"), HumanMessage("undated")]) <= _now()  # not the older message's
    assert stated_at([], default=MAY_8) == MAY_8


# -- OpenAI (real SDK against the loopback stub) ------------------------------------------------------


def test_with_memory_stores_the_time_of_the_request(stub_llm: StubLLM, engine: MemoryEngine) -> None:
    received: list[datetime] = []

    def reply(body: dict[str, Any]) -> str:
        received.append(_now())
        time.sleep(0.05)  # a slow model: the reply comes well after the request
        return "Noted.\n" + GO

    stub_llm.reply_fn(reply)
    client = with_memory(OpenAI(api_key="test", base_url=stub_llm.base_url, max_retries=0), user_id="bob",
                         memory=engine)
    sent = _now()
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "I prefer Go"}])
    [(content, observed, created)] = _stored(engine, "bob")
    assert content == "Prefers Go for performance-critical code"
    assert sent <= observed <= received[0] < created  # taken before the call, not after the reply


# -- LangChain ---------------------------------------------------------------------------------------


class TimedChatModel(GenericFakeChatModel):
    """A fake chat model that notes when it was called."""

    called: list[datetime] = Field(default_factory=list)
    seen: list[list[BaseMessage]] = Field(default_factory=list)

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.called.append(_now())
        self.seen.append(list(messages))
        time.sleep(0.02)
        return super()._generate(messages, *args, **kwargs)


def _model(*replies: str) -> TimedChatModel:
    return TimedChatModel(messages=iter([AIMessage(content=r) for r in replies]))


def test_agent_middleware_uses_the_human_messages_time(engine: MemoryEngine) -> None:
    from langchain.agents import create_agent

    from headroom_integrations.langchain import HeadroomMemoryMiddleware

    model = _model("Noted.\n" + GO, "Noted again.\n" + GO.replace("Go for", "Rust for"))
    agent = create_agent(model, tools=[], middleware=[HeadroomMemoryMiddleware(user_id="frank", memory=engine)])
    said = HumanMessage("I prefer Go", additional_kwargs={"timestamp": "2023-05-08T13:56:00Z"})
    agent.invoke({"messages": [said]}, config={"configurable": {"thread_id": "t1"}})
    agent.invoke({"messages": [HumanMessage("Actually Rust")]}, config={"configurable": {"thread_id": "t2"}})
    go, rust = _stored(engine, "frank")
    assert go[1] == MAY_8
    assert rust[1] <= model.called[1] < rust[2]  # undated: the time of the request


def test_agent_middleware_reads_last_week_against_the_human_messages_time(engine: MemoryEngine) -> None:
    from langchain.agents import create_agent

    from headroom_integrations.langchain import HeadroomMemoryMiddleware

    engine.add("Went kayaking on the lake with Ana", "gia", observed_at="2023-05-03")
    engine.add("Went kayaking on the lake with Ben", "gia", observed_at="2023-09-20")
    model = _model("The lake, with Ben.")
    agent = create_agent(model, tools=[], middleware=[HeadroomMemoryMiddleware(user_id="gia", memory=engine)])
    asked = HumanMessage("Who did I go kayaking with last week?", additional_kwargs={"timestamp": "2023-09-27"})
    agent.invoke({"messages": [asked]}, config={"configurable": {"thread_id": "t1"}})
    injected = next(m.text for m in model.seen[0] if isinstance(m, HumanMessage))
    lines = [line for line in injected.splitlines() if line.startswith("[m")]
    # read against now, Ana's trip would come first; the week before 2023-09-27 was Ben's
    assert lines[0] == "[m1] (2023-09-20) (fact) Went kayaking on the lake with Ben"


def test_callback_handler_uses_the_time_the_model_call_started(engine: MemoryEngine) -> None:
    from langchain_core.prompts import ChatPromptTemplate

    from headroom_integrations.langchain import HeadroomMemoryCallbackHandler

    handler = HeadroomMemoryCallbackHandler(user_id="carol", memory=engine)
    model = _model("Okay.\n" + GO)
    prompt = ChatPromptTemplate.from_messages([("system", "{memory_instruction}"), ("human", "{question} {memories}")])
    chain = handler.injector() | prompt | model | handler.stripper()
    assert chain.invoke({"question": "I prefer Go"}, config={"callbacks": [handler]}).content == "Okay."
    [(_, observed, created)] = _stored(engine, "carol")
    assert observed <= model.called[0] < created
    assert handler._started == {}  # nothing left behind


def test_chat_history_uses_the_time_of_the_human_message_before_the_reply(engine: MemoryEngine) -> None:
    from headroom_integrations.langchain import HeadroomChatMessageHistory

    history = HeadroomChatMessageHistory("s1", user_id="dana", memory=engine)
    history.add_messages([HumanMessage("I prefer Go", additional_kwargs={"created_at": "2023-05-08T13:56:00Z"}),
                          AIMessage("Noted.\n" + GO)])
    assert _stored(engine, "dana")[0][1] == MAY_8


# -- LlamaIndex --------------------------------------------------------------------------------------


class TimedLLM(CustomLLM):
    """Replies with one memory block and notes when it was called."""

    reply: str = "Noted.\n" + GO
    called: list[datetime] = Field(default_factory=list)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="timed")

    def _answer(self) -> str:
        self.called.append(_now())
        time.sleep(0.02)
        return self.reply

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._answer())

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        yield CompletionResponse(text=self._answer(), delta=self.reply)

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return ChatResponse(message=ChatMessage(role="assistant", content=self._answer()))


def test_wrapped_llama_index_llm_uses_the_user_messages_time(engine: MemoryEngine) -> None:
    from headroom_integrations.llama_index import with_memory_llm

    llm = TimedLLM()
    wrapped = with_memory_llm(llm, "erin", memory=engine)
    wrapped.chat([ChatMessage(role="user", content="I prefer Go", additional_kwargs={"timestamp": MAY_8})])
    assert _stored(engine, "erin")[0][1] == MAY_8
    llm.reply = "Noted.\n" + GO.replace("Go for", "Rust for")
    wrapped.complete("Actually Rust")
    rust = _stored(engine, "erin")[1]
    assert rust[1] <= llm.called[1] < rust[2]


def test_llama_index_chat_memory_uses_the_time_of_the_user_message(engine: MemoryEngine) -> None:
    from headroom_integrations.llama_index import HeadroomMemory

    memory = HeadroomMemory(user_id="gail", session_id="s1", memory=engine)
    memory.put(ChatMessage(role="user", content="I prefer Go", additional_kwargs={"timestamp": "2023-05-08T13:56Z"}))
    memory.put(ChatMessage(role="assistant", content="Noted.\n" + GO))
    assert _stored(engine, "gail")[0][1] == MAY_8


def test_event_handler_uses_the_start_events_time(engine: MemoryEngine) -> None:
    from llama_index.core.instrumentation import get_dispatcher

    from headroom_integrations.llama_index import HeadroomMemoryEventHandler

    handler = HeadroomMemoryEventHandler(user_id="ivan", memory=engine)
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(handler)
    try:
        llm = TimedLLM()
        llm.chat([ChatMessage(role="user", content="I prefer Go", additional_kwargs={"timestamp": MAY_8})])
        llm.reply = "Noted.\n" + GO.replace("Go for", "Rust for")
        llm.complete("Actually Rust")
    finally:
        dispatcher.event_handlers.remove(handler)
    go, rust = _stored(engine, "ivan")
    assert go[1] == MAY_8
    assert rust[1] <= llm.called[1] < rust[2]


# -- MCP -----------------------------------------------------------------------------------------------


def test_mcp_add_memory_takes_observed_at(engine: MemoryEngine) -> None:
    import pytest

    from headroom_integrations.errors import InvalidInputError
    from headroom_integrations.mcp_server import MemoryTools

    tools = MemoryTools(engine, "alice")
    added = tools.add_memory("Adopted a dog", observed_at="2023-05-08T13:56:00Z")
    assert added["observed_at"] == "2023-05-08T13:56:00+00:00"
    moved = tools.supersede_memory(added["id"], "Adopted two dogs", observed_at="2023-06-01")
    assert moved["observed_at"] == "2023-06-01T00:00:00+00:00"
    assert tools.add_memory("Likes tea")["observed_at"][:4] == str(_now().year)
    with pytest.raises(InvalidInputError, match="observed_at must be"):
        tools.add_memory("x", observed_at="last week")
