"""The scripted OpenAI-compatible stub server, exercised through the real ``openai`` SDK."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import pytest
from openai_stub import EMBEDDING_DIM, STUB_MODEL, StubLLM, stub_llm

openai = pytest.importorskip("openai")

MESSAGES = [{"role": "user", "content": "remember that I like tea"}]
TOOL_CALLS = [
    {"id": "call_1", "type": "function", "function": {"name": "remember", "arguments": '{"fact": "likes tea"}'}},
    {"function": {"name": "forget", "arguments": {"fact": "likes coffee"}}},
]


@pytest.fixture
def stub() -> Iterator[StubLLM]:
    """A running stub server (the module's fixture body)."""
    yield from stub_llm()


@pytest.fixture
def client(stub: StubLLM) -> Iterator[openai.OpenAI]:
    """A synchronous SDK client pointed at the stub, without retries."""
    with openai.OpenAI(api_key="test", base_url=stub.base_url, max_retries=0) as c:
        yield c


def test_non_stream_reply(stub: StubLLM, client: openai.OpenAI) -> None:
    stub.reply("Hello world")
    out = client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert out.object == "chat.completion"
    assert out.model == "gpt-test"
    assert len(out.choices) == 1
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == "Hello world"
    assert out.choices[0].finish_reason == "stop"
    assert out.usage is not None
    assert out.usage.completion_tokens == 2
    assert out.usage.prompt_tokens == 5
    assert out.usage.total_tokens == 7


def test_empty_queue_answers_ok(stub: StubLLM, client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model="m", messages=MESSAGES)
    assert out.choices[0].message.content == "ok"


def test_null_content_and_no_usage(stub: StubLLM, client: openai.OpenAI) -> None:
    stub.reply(None, finish_reason="length", usage=False)
    out = client.chat.completions.create(model="m", messages=MESSAGES)
    assert out.choices[0].message.content is None
    assert out.choices[0].finish_reason == "length"
    assert out.usage is None


def test_stream_reassembles_exact_chunks(stub: StubLLM, client: openai.OpenAI) -> None:
    pieces = ["Hel", "lo <mem", "ory>{", "}</memory>"]
    stub.reply(chunks=pieces)
    events = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert all(e.object == "chat.completion.chunk" for e in events)
    assert len({e.id for e in events}) == 1
    first = events[0].choices[0].delta
    assert (first.role, first.content) == ("assistant", "")
    content = [e.choices[0].delta.content for e in events[1:] if e.choices and e.choices[0].delta.content]
    assert content == pieces
    assert "".join(content) == "Hello <memory>{}</memory>"
    assert events[-1].choices[0].finish_reason == "stop"
    assert all(e.choices[0].finish_reason is None for e in events[:-1])
    assert all(e.usage is None for e in events)  # not asked for


def test_stream_default_pieces_of_seven(stub: StubLLM, client: openai.OpenAI) -> None:
    text = "The quick brown fox jumps"
    stub.reply(text)
    events = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    content = [e.choices[0].delta.content for e in events[1:-1]]
    assert content == [text[i : i + 7] for i in range(0, len(text), 7)]


def test_chunks_must_match_content(stub: StubLLM) -> None:
    with pytest.raises(ValueError):
        stub.reply("abc", chunks=["a", "b"])


def test_n_choices(stub: StubLLM, client: openai.OpenAI) -> None:
    stub.reply("first", "second")
    out = client.chat.completions.create(model="m", messages=MESSAGES, n=2)
    assert [c.index for c in out.choices] == [0, 1]
    assert [c.message.content for c in out.choices] == ["first", "second"]

    stub.reply("same")
    out = client.chat.completions.create(model="m", messages=MESSAGES, n=3)
    assert [c.message.content for c in out.choices] == ["same"] * 3


def test_n_choices_stream_interleaved(stub: StubLLM, client: openai.OpenAI) -> None:
    stub.reply("alpha beta gamma", "delta")
    events = list(client.chat.completions.create(model="m", messages=MESSAGES, n=2, stream=True))
    order = [e.choices[0].index for e in events]
    assert order[:4] == [0, 1, 0, 1]  # role chunks, then first pieces, interleaved
    texts = ["", ""]
    finish: dict[int, str | None] = {}
    for e in events:
        choice = e.choices[0]
        texts[choice.index] += choice.delta.content or ""
        if choice.finish_reason:
            finish[choice.index] = choice.finish_reason
    assert texts == ["alpha beta gamma", "delta"]
    assert finish == {0: "stop", 1: "stop"}


def test_tool_calls_non_stream(stub: StubLLM, client: openai.OpenAI) -> None:
    stub.reply(tool_calls=TOOL_CALLS)
    out = client.chat.completions.create(model="m", messages=MESSAGES, tools=[])
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 2
    assert calls[0].id == "call_1"
    assert calls[0].type == "function"
    assert calls[0].function.name == "remember"
    assert json.loads(calls[0].function.arguments) == {"fact": "likes tea"}
    assert calls[1].id.startswith("call_")
    assert calls[1].function.name == "forget"
    assert json.loads(calls[1].function.arguments) == {"fact": "likes coffee"}


def test_tool_calls_stream(stub: StubLLM, client: openai.OpenAI) -> None:
    stub.reply(tool_calls=TOOL_CALLS)
    events = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert events[0].choices[0].delta.content is None
    calls: dict[int, dict[str, str]] = {}
    for e in events:
        for delta in e.choices[0].delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            if delta.id:
                call["id"] = delta.id
                assert delta.type == "function"
            if delta.function and delta.function.name:
                call["name"] += delta.function.name
            if delta.function and delta.function.arguments:
                call["arguments"] += delta.function.arguments
    assert sorted(calls) == [0, 1]
    assert calls[0]["id"] == "call_1"
    assert calls[0]["name"] == "remember"
    assert json.loads(calls[0]["arguments"]) == {"fact": "likes tea"}
    assert calls[1]["name"] == "forget"
    assert json.loads(calls[1]["arguments"]) == {"fact": "likes coffee"}
    assert events[-1].choices[0].finish_reason == "tool_calls"


def test_stream_usage_chunk(stub: StubLLM, client: openai.OpenAI) -> None:
    stub.reply("one two three")
    events = list(
        client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    last = events[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (5, 3, 8)
    assert all(e.usage is None for e in events[:-1])
    assert events[-2].choices[0].finish_reason == "stop"


def test_stream_usage_suppressed(stub: StubLLM, client: openai.OpenAI) -> None:
    stub.reply("x", usage=False)
    events = list(
        client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(e.choices for e in events)


def test_stream_helper_final_completion(stub: StubLLM, client: openai.OpenAI) -> None:
    stub.reply(chunks=["Hel", "lo <mem", "ory>{", "}</memory>"])
    with client.chat.completions.stream(model="m", messages=MESSAGES) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "Hello <memory>{}</memory>"


def test_reply_fn(stub: StubLLM, client: openai.OpenAI) -> None:
    stub.reply_fn(lambda body: body["messages"][-1]["content"].upper())
    out = client.chat.completions.create(model="m", messages=MESSAGES)
    assert out.choices[0].message.content == "REMEMBER THAT I LIKE TEA"


def test_reply_fn_error_is_500(stub: StubLLM, client: openai.OpenAI) -> None:
    def boom(body: dict[str, object]) -> str:
        raise RuntimeError("boom")

    stub.reply_fn(boom)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=MESSAGES)


def test_models_list(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [STUB_MODEL]
    assert client.models.retrieve(STUB_MODEL).id == STUB_MODEL


def test_embeddings_deterministic(stub: StubLLM, client: openai.OpenAI) -> None:
    a = client.embeddings.create(model="emb", input=["tea", "coffee"])
    b = client.embeddings.create(model="emb", input="tea", encoding_format="float")
    assert [d.index for d in a.data] == [0, 1]
    assert all(len(d.embedding) == EMBEDDING_DIM for d in a.data)
    assert a.data[0].embedding == b.data[0].embedding
    assert a.data[0].embedding != a.data[1].embedding
    assert abs(sum(x * x for x in b.data[0].embedding) - 1.0) < 1e-5
    assert len(stub.embedding_requests) == 2
    assert stub.count == 0


def test_unknown_route_is_openai_404(stub: StubLLM, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.completions.create(model="m", prompt="hi")
    assert "Invalid URL" in str(info.value)
    response = httpx.get(stub.base_url + "/nope")
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"


def test_request_log_and_count(stub: StubLLM, client: openai.OpenAI) -> None:
    stub.reply("a")
    stub.reply("b")
    assert stub.pending == 2
    client.chat.completions.create(model="m1", messages=MESSAGES, temperature=0)
    client.chat.completions.create(model="m2", messages=MESSAGES, stream=True).close()
    assert stub.count == 2
    assert stub.pending == 0
    assert [r["model"] for r in stub.requests] == ["m1", "m2"]
    assert stub.requests[0]["messages"] == MESSAGES
    assert stub.requests[0]["temperature"] == 0
    assert stub.requests[1]["stream"] is True


def test_concurrent_requests_are_all_logged(stub: StubLLM, client: openai.OpenAI) -> None:
    results: list[str | None] = []

    def call() -> None:
        out = client.chat.completions.create(model="m", messages=MESSAGES)
        results.append(out.choices[0].message.content)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["ok"] * 4
    assert stub.count == 4


async def test_async_client(stub: StubLLM) -> None:
    stub.reply("async hello")
    stub.reply(chunks=["Hel", "lo <mem", "ory>{", "}</memory>"])
    stub.reply(tool_calls=TOOL_CALLS[:1])
    async with openai.AsyncOpenAI(api_key="test", base_url=stub.base_url, max_retries=0) as aclient:
        out = await aclient.chat.completions.create(model="m", messages=MESSAGES)
        assert out.choices[0].message.content == "async hello"

        stream = await aclient.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        pieces = []
        usage = None
        async for event in stream:
            if event.choices and event.choices[0].delta.content:
                pieces.append(event.choices[0].delta.content)
            usage = event.usage or usage
        assert pieces == ["Hel", "lo <mem", "ory>{", "}</memory>"]
        assert usage is not None and usage.total_tokens > 0

        out = await aclient.chat.completions.create(model="m", messages=MESSAGES)
        calls = out.choices[0].message.tool_calls
        assert calls is not None and calls[0].function.name == "remember"

        models = [m.id async for m in aclient.models.list()]
        assert models == [STUB_MODEL]
    assert stub.count == 3


def test_close_is_idempotent_and_frees_the_port() -> None:
    with StubLLM() as stub:
        base_url = stub.base_url
        assert httpx.get(base_url + "/models").status_code == 200
    stub.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(base_url + "/models", timeout=2)
