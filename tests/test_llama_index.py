"""LlamaIndex adapters with real LlamaIndex classes (a scripted LLM only at the LLM boundary)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.chat_engine import CondensePlusContextChatEngine, ContextChatEngine, SimpleChatEngine
from llama_index.core.evaluation import RetrieverEvaluator
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.memory import Memory
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.tools import FunctionTool
from pydantic import Field

from headroom_integrations import MemoryEngine, MemoryFilter
from headroom_integrations.inline import MEMORY_INSTRUCTION
from headroom_integrations.llama_index import (
    HeadroomFunctionCallingLLM,
    HeadroomMemory,
    HeadroomMemoryBlock,
    HeadroomMemoryEventHandler,
    HeadroomRetriever,
    with_memory_llm,
)

GO = '<memory>{"memories":[{"content": "Prefers Go for performance-critical code", "category": "preference"}]}</memory>'
REPLY = "Go is a solid choice for that.\n\n" + GO
FACT = "Prefers Go for performance-critical code"
LOCOMO = Path("/work/shared/data/locomo/locomo_dev.json")


class ScriptedLLM(CustomLLM):
    """Replies from a script (then ``default``), records every prompt, streams in pieces.

    A script item is a reply string, or a list of strings: the pieces a stream is cut into
    (otherwise streams are cut every ``chunk_size`` characters).
    """

    script: list[Any] = Field(default_factory=list)
    default: str = "Noted."
    chunk_size: int = 7
    prompts: list[str] = Field(default_factory=list)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="scripted")

    def _pieces(self, prompt: str) -> list[str]:
        self.prompts.append(prompt)
        item = self.script.pop(0) if self.script else self.default
        if isinstance(item, list):
            return item
        return [item[i : i + self.chunk_size] for i in range(0, len(item), self.chunk_size)] or [""]

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="".join(self._pieces(prompt)))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        pieces = self._pieces(prompt)

        def gen() -> CompletionResponseGen:
            text = ""
            for piece in pieces:
                text += piece
                yield CompletionResponse(text=text, delta=piece)

        return gen()


class ScriptedToolLLM(ScriptedLLM, FunctionCallingLLM):
    """The scripted LLM as a function-calling model; a reply ``CALL name {json}`` is a tool call."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="scripted-tools", is_function_calling_model=True)

    def _prepare_chat_with_tools(
        self, tools: Sequence[Any], user_msg: Any = None, chat_history: list[ChatMessage] | None = None,
        verbose: bool = False, allow_parallel_tool_calls: bool = False, tool_required: bool = False, **kwargs: Any,
    ) -> dict[str, Any]:
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(ChatMessage(role="user", content=user_msg) if isinstance(user_msg, str) else user_msg)
        return {"messages": messages, **kwargs}

    def get_tool_calls_from_response(
        self, response: Any, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        parts = (response.message.content or "").strip().split(" ", 2)
        if len(parts) < 3 or parts[0] != "CALL":
            return []
        try:  # a streamed call is only complete in the last chunk
            arguments = json.loads(parts[2])
        except ValueError:
            return []
        return [ToolSelection(tool_id="call-1", tool_name=parts[1], tool_kwargs=arguments)]


def _memories(engine: MemoryEngine, user_id: str) -> list[str]:
    engine.flush()
    return [m.content for m in engine.query(MemoryFilter(user_id=user_id))]


# -- HeadroomMemory ------------------------------------------------------------------------------


def test_simple_chat_engine_recalls_across_sessions_of_one_user_only(engine: MemoryEngine) -> None:
    llm = ScriptedLLM(script=[REPLY])
    memory_a = HeadroomMemory.from_defaults(user_id="alice", session_id="A", memory=engine)
    first = SimpleChatEngine.from_defaults(llm=llm, memory=memory_a).chat("I write services; I like Go a lot.")
    assert first.response.startswith("Go is a solid choice")  # unwrapped LLM: the user sees its raw reply
    stored = memory_a.get_all()
    assert [m.role for m in stored] == [MessageRole.USER, MessageRole.ASSISTANT]
    assert "<memory>" not in (stored[1].content or "") and stored[1].content == "Go is a solid choice for that."
    assert _memories(engine, "alice") == [FACT]

    memory_b = HeadroomMemory.from_defaults(user_id="alice", session_id="B", memory=engine)
    SimpleChatEngine.from_defaults(llm=llm, memory=memory_b).chat("Which language for my new performance-critical API?")
    assert FACT in llm.prompts[-1]
    assert "Go is a solid choice" not in llm.prompts[-1]  # session A's history stays in session A

    memory_bob = HeadroomMemory.from_defaults(user_id="bob", session_id="B", memory=engine)
    SimpleChatEngine.from_defaults(llm=llm, memory=memory_bob).chat("Which language for my new performance-critical API?")
    assert FACT not in llm.prompts[-1]
    assert _memories(engine, "bob") == []


def test_history_round_trip_trim_set_reset_and_reopen(make_engine: Callable[..., MemoryEngine]) -> None:
    engine = make_engine()
    memory = HeadroomMemory.from_defaults(user_id="u", session_id="s", memory=engine, token_limit=60, recall=False)
    tool_call = ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": [{"id": "c1", "n": 2}]})
    messages = [
        ChatMessage(role="user", content="first question " * 10),
        ChatMessage(role="assistant", content="first answer " * 10),
        ChatMessage(role="user", content="second question"),
        tool_call,
        ChatMessage(role="tool", content="42", additional_kwargs={"tool_call_id": "c1"}),
        ChatMessage(role="assistant", content="It is 42.\n" + GO),
    ]
    memory.put_messages(messages)
    everything = memory.get_all()
    assert everything[:5] == messages[:5]  # lossless, additional_kwargs included
    assert everything[5].content == "It is 42."
    window = memory.get()
    assert window[0].role == MessageRole.USER and window[0].content == "second question"
    assert window[-1].content == "It is 42."

    reopened = HeadroomMemory.from_defaults(user_id="u", session_id="s", memory=make_engine())
    assert reopened.get_all() == everything
    assert FACT in (reopened.get(input="what language for fast code?")[0].content or "")

    reopened.set([ChatMessage(role="user", content="only this")])
    assert [m.content for m in memory.get_all()] == ["only this"]
    asyncio.run(reopened.areset())
    assert asyncio.run(memory.aget_all()) == [] and _memories(engine, "u") == [FACT]


def test_async_chat_engine_and_stream_with_wrapped_llm(engine: MemoryEngine) -> None:
    llm = ScriptedLLM(script=[REPLY, REPLY], chunk_size=3)
    memory = HeadroomMemory.from_defaults(user_id="carol", session_id="s1", memory=engine)
    wrapped = with_memory_llm(llm, "carol", "s1", memory=engine, inject=False)
    chat_engine = SimpleChatEngine.from_defaults(llm=wrapped, memory=memory)

    async def run() -> tuple[str, str]:
        answer = await chat_engine.achat("Hello, I code in Go.")
        streamed = await chat_engine.astream_chat("And for scripts?")
        tokens = [token async for token in streamed.async_response_gen()]
        return answer.response, "".join(tokens)

    answer, streamed = asyncio.run(run())
    assert answer == "Go is a solid choice for that."
    assert streamed == "Go is a solid choice for that."
    assert MEMORY_INSTRUCTION in llm.prompts[0]
    assert all("<memory>" not in (m.content or "") for m in memory.get_all())
    assert len(memory.get_all()) == 4
    assert _memories(engine, "carol") == [FACT]


# -- with_memory_llm -------------------------------------------------------------------------------


def _splits(text: str) -> list[list[str]]:
    return [[text[:k], text[k:]] for k in range(1, len(text))] + [list(text)]


def test_streaming_never_shows_the_block_at_any_split(engine: MemoryEngine) -> None:
    splits = _splits(REPLY)
    llm = ScriptedLLM(script=list(splits))
    wrapped = with_memory_llm(llm, "dave", "s1", memory=engine)
    for _ in splits:
        chunks = list(wrapped.stream_chat([ChatMessage(role="user", content="Go or Rust for a fast service?")]))
        for chunk in chunks:
            assert "<" not in (chunk.delta or "") and "memor" not in (chunk.message.content or "")
        assert "".join(c.delta or "" for c in chunks) == "Go is a solid choice for that."
        assert chunks[-1].message.content == "Go is a solid choice for that."
    assert _memories(engine, "dave") == [FACT]

    # through a chat engine: the streamed tokens and the response kept in memory are clean too
    llm.script = [["Sure thing.\n<mem", "ory>{\"memories\": [{\"content\": \"Has a dog named Rex\"}]}</me", "mory>"]]
    chat_engine = SimpleChatEngine.from_defaults(llm=wrapped)
    response = chat_engine.stream_chat("I have a dog called Rex")
    assert "".join(response.response_gen) == "Sure thing."
    assert all("memor" not in (m.content or "") for m in chat_engine.chat_history)
    assert "Has a dog named Rex" in _memories(engine, "dave")


def test_wrapped_llm_injects_instructs_and_strips(engine: MemoryEngine) -> None:
    engine.add(FACT, user_id="erin", category="preference")
    llm = ScriptedLLM(script=[REPLY, REPLY, [REPLY[:40], REPLY[40:]]])
    wrapped = with_memory_llm(llm, "erin", "s1", memory=engine)
    response = wrapped.chat([
        ChatMessage(role="system", content="You are terse."),
        ChatMessage(role="user", content="Which language for performance-critical code?"),
    ])
    assert response.message.content == "Go is a solid choice for that."
    prompt = llm.prompts[-1]
    assert prompt.index("You are terse.") < prompt.index(MEMORY_INSTRUCTION) < prompt.index(f"(preference) {FACT}")
    completion = wrapped.complete("Which language for performance-critical code?")
    assert completion.text == "Go is a solid choice for that." and FACT in llm.prompts[-1]
    pieces = list(wrapped.stream_complete("hello"))
    assert pieces[-1].text == "Go is a solid choice for that." and all("<" not in p.text for p in pieces)
    assert _memories(engine, "erin") == [FACT]  # the repeated fact is not stored twice


def test_wrapped_llm_follows_its_inject_and_instruct_fields_as_they_change(engine: MemoryEngine) -> None:
    """The policy every adapter shares, with the fields read at each call: the instruction once,
    none when turned off; memories only while ``inject`` is on."""
    engine.add(FACT, user_id="gus", category="preference")
    llm = ScriptedLLM(script=[REPLY, REPLY, REPLY])
    wrapped = with_memory_llm(llm, "gus", "s1", memory=engine)
    system = ChatMessage(role="system", content="You are terse.\n\n" + MEMORY_INSTRUCTION)
    question = ChatMessage(role="user", content="Which language for performance-critical code?")
    wrapped.chat([system, question])
    assert llm.prompts[-1].count(MEMORY_INSTRUCTION) == 1 and FACT in llm.prompts[-1]
    wrapped.instruct, wrapped.inject = False, False
    wrapped.chat([ChatMessage(role="system", content="You are terse."), question])
    assert MEMORY_INSTRUCTION not in llm.prompts[-1] and FACT not in llm.prompts[-1]


def test_function_agent_with_memory_and_wrapped_llm(engine: MemoryEngine) -> None:
    engine.add(FACT, user_id="fay", category="preference")
    calls: list[int] = []

    def add(a: int, b: int) -> int:
        """Add two numbers."""
        calls.append(a + b)
        return a + b

    llm = ScriptedToolLLM(script=['CALL add {"a": 2, "b": 3}', "It is 5. Go would do it fast.\n" + GO])
    wrapped = with_memory_llm(llm, "fay", "t1", memory=engine, inject=False)
    assert isinstance(wrapped, HeadroomFunctionCallingLLM)
    memory = HeadroomMemory.from_defaults(user_id="fay", session_id="t1", memory=engine)
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(add)], llm=wrapped, system_prompt="You add numbers.")

    async def run() -> Any:
        handler = agent.run(user_msg="What is 2 + 3? Performance-critical code, of course.", memory=memory)
        deltas = [ev.delta async for ev in handler.stream_events() if hasattr(ev, "delta")]
        return await handler, deltas

    result, deltas = asyncio.run(run())
    assert calls == [5]
    assert str(result.response.content) == "It is 5. Go would do it fast."
    assert "memor" not in "".join(deltas)
    assert FACT in llm.prompts[0] and MEMORY_INSTRUCTION in llm.prompts[0]
    roles = [m.role for m in memory.get_all()]
    assert roles == [MessageRole.USER, MessageRole.ASSISTANT, MessageRole.TOOL, MessageRole.ASSISTANT]
    assert all("<memory>" not in (m.content or "") for m in memory.get_all())
    assert _memories(engine, "fay") == [FACT]


# -- retriever ---------------------------------------------------------------------------------


def test_retriever_nodes_query_engine_and_condense_plus_context(engine: MemoryEngine) -> None:
    stored = engine.add(FACT, user_id="gus", category="preference", importance=0.9)
    engine.add("Has a cat called Miso", user_id="gus")
    engine.add("Prefers Rust for everything", user_id="other")
    retriever = HeadroomRetriever("gus", memory=engine, similarity_top_k=1)
    [hit] = retriever.retrieve("which programming language for fast code?")
    assert hit.node.node_id == stored.id and hit.node.get_content() == FACT
    assert hit.node.metadata["category"] == "preference" and hit.node.metadata["importance"] == 0.9
    assert hit.score is not None
    assert [n.node.node_id for n in asyncio.run(retriever.aretrieve("cat"))] != []

    llm = ScriptedLLM(default="Go.")
    answer = RetrieverQueryEngine.from_args(retriever, llm=llm).query("Which language does the user like?")
    assert str(answer) == "Go." and FACT in llm.prompts[-1] and "Rust" not in llm.prompts[-1]

    memory = HeadroomMemory.from_defaults(user_id="gus", session_id="c1", memory=engine, recall=False)
    chat_engine = CondensePlusContextChatEngine.from_defaults(retriever, llm=llm, memory=memory)
    assert chat_engine.chat("What language should I use for performance-critical work?").response == "Go."
    assert FACT in llm.prompts[-1]
    assert chat_engine.chat("And why?").response == "Go."  # second turn: condense call, then answer
    assert len(memory.get_all()) == 4

    context_memory = HeadroomMemory.from_defaults(user_id="gus", session_id="c2", memory=engine)
    context_engine = ContextChatEngine.from_defaults(retriever, llm=llm, memory=context_memory)
    assert context_engine.chat("Which language for performance-critical work?").response == "Go."
    assert llm.prompts[-1].count(FACT) == 2  # once as retrieved context, once as recalled memory
    assert len(context_memory.get_all()) == 2


# -- HeadroomMemoryBlock ----------------------------------------------------------------------------


def test_memory_block_in_llama_index_memory(engine: MemoryEngine) -> None:
    block = HeadroomMemoryBlock(user_id="hana", memory=engine)
    memory = Memory.from_defaults(
        session_id="m1", memory_blocks=[block], token_limit=120, chat_history_token_ratio=0.5, token_flush_size=40,
    )
    llm = ScriptedLLM(script=[REPLY], default="Okay, noted that for you.")
    chat_engine = SimpleChatEngine.from_defaults(llm=llm, memory=memory)
    chat_engine.chat("I mostly write backend services in Go these days.")
    for text in ("Tell me more about channels please.", "And goroutines as well?", "What about generics?"):
        chat_engine.chat(text)  # pushes the first turn out of the short-term queue into the block
    assert _memories(engine, "hana") == [FACT]

    messages = asyncio.run(memory.aget(input="Which language for performance-critical code?"))
    assert messages[0].role == MessageRole.SYSTEM and FACT in (messages[0].content or "")
    assert "<headroom_memories>" in (messages[0].content or "")


# -- event handler --------------------------------------------------------------------------------


def test_event_handler_stores_memories_from_a_plain_llm_call(engine: MemoryEngine) -> None:
    handler = HeadroomMemoryEventHandler(user_id="ivan", session_id="s1", memory=engine)
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(handler)
    try:
        llm = ScriptedLLM(script=[REPLY, "Nothing to remember here."])
        assert llm.complete("I like Go").text == REPLY  # the handler only observes
        llm.chat([ChatMessage(role="user", content="hi")])
    finally:
        dispatcher.event_handlers.remove(handler)
    assert _memories(engine, "ivan") == [FACT]


# -- retrieval quality on LoCoMo ----------------------------------------------------------------------


@pytest.mark.skipif(not LOCOMO.exists(), reason="LoCoMo dev data not available")
def test_retriever_evaluator_on_locomo(engine: MemoryEngine) -> None:
    conversation = json.loads(LOCOMO.read_text())[0]
    turns = [
        turn
        for key, value in conversation["conversation"].items()
        if key.startswith("session_") and isinstance(value, list) and int(key.split("_")[1]) <= 4
        for turn in value
    ]
    stored = engine.add_batch(
        [{"content": f"{t['speaker']}: {t['text']}", "metadata": {"dia_id": t["dia_id"]}} for t in turns],
        user_id="locomo",
    )
    ids = {t["dia_id"]: m.id for t, m in zip(turns, stored, strict=True)}
    questions = [q for q in conversation["qa"] if q.get("evidence") and all(e in ids for e in q["evidence"])][:20]
    assert len(questions) >= 10

    retriever = HeadroomRetriever("locomo", memory=engine, similarity_top_k=5)
    evaluator = RetrieverEvaluator.from_metric_names(["hit_rate", "mrr"], retriever=retriever)
    results = [evaluator.evaluate(q["question"], [ids[e] for e in q["evidence"]]) for q in questions]
    hit_rate = sum(r.metric_vals_dict["hit_rate"] for r in results) / len(results)
    mrr = sum(r.metric_vals_dict["mrr"] for r in results) / len(results)
    print(f"LoCoMo hit_rate={hit_rate:.2f} mrr={mrr:.2f} over {len(results)} questions")
    assert hit_rate > 0.3, (hit_rate, mrr)
    assert mrr > 0.15, (hit_rate, mrr)


def test_react_agent_with_memory_and_wrapped_llm(engine: MemoryEngine) -> None:
    from llama_index.core.agent.workflow import ReActAgent

    engine.add("Has a cat called Miso", user_id="hal", category="entity")
    llm = ScriptedLLM(script=["Thought: I can answer from memory.\nAnswer: Your cat is Miso. Go suits you.\n\n" + GO])
    wrapped = with_memory_llm(llm, "hal", "r1", memory=engine)
    memory = HeadroomMemory.from_defaults(user_id="hal", session_id="r1", memory=engine, recall=False)
    agent = ReActAgent(tools=[], llm=wrapped)

    async def run() -> Any:
        return await agent.run(user_msg="What is my cat called? I prefer Go by the way.", memory=memory)

    result = asyncio.run(run())
    assert str(result.response.content) == "Your cat is Miso. Go suits you."
    assert "Has a cat called Miso" in llm.prompts[0]
    assert all("<memory>" not in (m.content or "") for m in memory.get_all())
    assert FACT in _memories(engine, "hal")


def test_text_blocks_around_an_image_keep_their_places() -> None:
    """Only the memory block leaves an assistant message with several text blocks: the text after
    an image stays after it (all text was merged into the first block)."""
    from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock

    from headroom_integrations.llama_index.memory import strip_blocks

    image = ImageBlock(url="https://example.com/cat.png")
    message = ChatMessage(role=MessageRole.ASSISTANT, blocks=[
        TextBlock(text="Part one."), image,
        TextBlock(text='Part two.\n<memory>{"memories": [{"content": "Has a cat"}]}</memory>')])
    cleaned, found = strip_blocks(message)
    assert [type(b).__name__ for b in cleaned.blocks] == ["TextBlock", "ImageBlock", "TextBlock"]
    assert (cleaned.blocks[0].text, cleaned.blocks[2].text.strip()) == ("Part one.", "Part two.")
    assert [m.content for m in found] == ["Has a cat"]
