"""Check 5: the inline protocol under fuzzing.

A seeded fuzzer builds replies from visible text and memory blocks of every shape (bare, fenced,
a nested or duplicated opening tag, stray closing tags, bad JSON, trailing commas, a block left
open by the end of the reply, a reply cut by ``max_tokens``). An independent oracle knows what the
caller must see: the reply minus its blocks (whitespace before a block goes with it; once a block
was removed, leading and trailing whitespace goes too). Every reply is checked whole and streamed
in random pieces (and one character at a time): 0 exceptions, 0 block characters shown, shown
text = the oracle's, streamed = whole. A sample also goes through the real SDK as SSE streams.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field

import pytest
from openai import OpenAI
from openai_stub import StubLLM
from scale import scaled

from headroom_integrations import MemoryEngine, MemoryFilter, with_memory
from headroom_integrations.blocks import StreamFilter, parse_reply

REPLIES = scaled(10_000)
SDK_STREAMS = scaled(250)
_FULL_TAG = re.compile(r"<[ \t\r\n]{0,8}/?[ \t\r\n]{0,8}memory[ \t\r\n]{0,8}>", re.IGNORECASE)
_ANY_TAG = re.compile(r"<\s*/?\s*memory\s*>", re.IGNORECASE)
_FENCE_END = re.compile(r"(^|\n)[ \t]{0,3}`+[\w+.-]*[ \t]*$")

VISIBLE = ["Sure.", "Go is a fine choice", " ", "\n", "\n\n", "\t", "a < b", "<b>bold</b>", "<mem", "< memo",
           "memory>", "<memories>", "x", "🚀", "naïve", "```python\nprint(1)\n```", "`code`", "``", "-->",
           "</mem", "1 < 2 > 0", "<", "> quote", "日本語", "\u202e", "{\"json\": 1}", "memories", "<br/>"]
OPEN_TAGS = ["<memory>", "<MEMORY>", "< memory >", "<Memory >", "<memory\n>"]
CLOSE_TAGS = ["</memory>", "</MEMORY>", "< / memory >", "</memory >"]


@dataclass
class Reply:
    """A generated reply: its text, what must be shown and the memories of its closed blocks."""

    text: str
    shown: str
    contents: list[str] = field(default_factory=list)
    cut: bool = False


def _body(rng: random.Random, marker: str) -> tuple[str, list[str]]:
    """A block body and the contents it must yield."""
    contents = [f"{marker} fact {i} {rng.choice(['likes tea', 'is not vegan', 'uses C++', ''])}".strip()
                for i in range(rng.randint(1, 3))]
    items = [{"content": c, "category": rng.choice(["fact", "preference", "opinion", None])} for c in contents]
    shape = rng.randrange(8)
    if shape == 0:
        return json.dumps({"memories": items}), contents
    if shape == 1:
        return json.dumps(items), contents
    if shape == 2:
        return json.dumps(items[0]), contents[:1]
    if shape == 3:  # trailing commas
        return json.dumps({"memories": items})[:-2] + ",],}", contents
    if shape == 4:  # a fence inside the block
        return "```json\n" + json.dumps({"memories": items}, indent=1) + "\n```", contents
    if shape == 5:  # bad JSON: dropped, never raised
        return "{" + marker + " not json at all: [}", []
    if shape == 6:  # an opening tag repeated inside (tags do not nest): the objects are still read
        return rng.choice(OPEN_TAGS) + json.dumps({"memories": items}), contents
    return " \n" + json.dumps({"memories": items}) + "\n", contents


def _visible(rng: random.Random) -> str:
    return "".join(rng.choice(VISIBLE) for _ in range(rng.randint(0, 4)))


def generate(rng: random.Random, serial: int) -> Reply | None:
    """A reply with its oracle; None when the visible text happened to form a tag or a fence line
    right before a block (the oracle does not model those: they are not visible text)."""
    marker = f"zqblock{serial}"
    text, shown, contents, blocked = "", "", [], False
    fences, run, run_starts_line = 0, "", True  # code fences of the visible text, by raw position
    for _ in range(rng.randint(1, 5)):
        visible = _visible(rng)
        run += visible
        if blocked and not shown.strip():
            shown += visible.lstrip()
        else:
            shown += visible
        text += visible
        kind = rng.randrange(10)
        if kind < 2:
            continue
        if _FENCE_END.search(text.rstrip()):
            return None
        shown = shown.rstrip()
        blocked = True
        fences += sum(1 for m in re.finditer(r"^[ \t]{0,3}```", run, re.MULTILINE) if m.start() > 0 or run_starts_line)
        run, run_starts_line = "", False  # the next visible text follows a tag
        if kind == 2:  # a closing tag with no block: removed like an empty block
            text += rng.choice(CLOSE_TAGS)
            continue
        body, found = _body(rng, marker)
        fenced = kind == 3 and fences % 2 == 0  # a block's own fence only outside a code block
        opening = rng.choice(OPEN_TAGS)
        gap = rng.choice(["\n", "\n\n"]) if fenced else rng.choice(["", " ", "\n\n"])  # a fence starts a line
        text += gap + ("```json\n" if fenced else "") + opening + body
        text += rng.choice(CLOSE_TAGS) + ("\n```" if fenced else "")
        contents += found
    if rng.random() < 0.15:  # the reply ends inside a block that never closes
        if _FENCE_END.search(text.rstrip()):
            return None
        text += rng.choice(["", "\n"]) + rng.choice(OPEN_TAGS) + '{"memories": [{"content": "' + marker + " cut"
        shown = shown.rstrip()
        blocked = True
    if blocked:
        shown = shown.rstrip()
    if len(_ANY_TAG.findall(text)) != len(_FULL_TAG.findall(text)) or _FULL_TAG.search(shown):
        return None
    return Reply(text, shown, contents)


def cut_reply(rng: random.Random, reply: Reply) -> Reply | None:
    """A reply without blocks, stopped by ``max_tokens`` inside an opening tag at its very end:
    the beginning of the tag (and whitespace before it) is not shown."""
    if reply.text != reply.shown or _FENCE_END.search(reply.text.rstrip()):
        return None
    tag = rng.choice(OPEN_TAGS)
    text = reply.text + rng.choice(["", "\n"]) + tag[: rng.randint(1, len(tag) - 1)]
    return Reply(text, reply.text.rstrip(), [], cut=True)


def _streamed(text: str, sizes: list[int], cut: bool) -> tuple[str, StreamFilter]:
    stream, out, at = StreamFilter(), [], 0
    for size in sizes:
        out.append(stream.feed(text[at : at + size]))
        at += size
    out.append(stream.feed(text[at:]))
    out.append(stream.finish(cut))
    return "".join(out), stream


def _replies(seed: int, count: int) -> list[Reply]:
    rng, out, serial = random.Random(seed), [], 0
    while len(out) < count:
        serial += 1
        reply = generate(rng, serial)
        if reply is None:
            continue
        if rng.random() < 0.2:
            reply = cut_reply(rng, reply) or reply
        out.append(reply)
    return out


def test_replies_whole_and_streamed_show_the_oracles_text(record_property) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(5)
    replies = _replies(2026, REPLIES)
    checked = 0
    for reply in replies:
        parsed = parse_reply(reply.text, cut=reply.cut)
        assert parsed.text == reply.shown, (reply.text, parsed.text, reply.shown)
        assert not _FULL_TAG.search(parsed.text) and "zqblock" not in parsed.text
        assert [m.content for m in parsed.memories if " cut" not in m.content] == reply.contents, reply.text
        chunkings = [[rng.randint(1, 9) for _ in range(len(reply.text) // 3 + 1)] for _ in range(2)]
        if checked % 10 == 0:
            chunkings.append([1] * len(reply.text))
        for sizes in chunkings:
            shown, stream = _streamed(reply.text, sizes, reply.cut)
            assert shown == parsed.text, (reply.text, sizes)
            assert stream.text == reply.text
            assert [m.content for m in stream.memories()] == [m.content for m in parsed.memories]
        checked += 1
    record_property("replies", checked)
    assert checked == REPLIES


@pytest.mark.parametrize("stream", [True, False])
def test_replies_through_the_sdk(stub_llm: StubLLM, engine: MemoryEngine, stream: bool, record_property) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(11)
    client = with_memory(OpenAI(api_key="t", base_url=stub_llm.base_url, max_retries=0), user_id="u", memory=engine)
    expected: set[str] = set()
    for reply in _replies(7, SDK_STREAMS if stream else SDK_STREAMS // 5):
        reason = "length" if reply.cut else "stop"
        cuts = sorted(rng.sample(range(1, len(reply.text)), k=max(0, min(len(reply.text) - 1, rng.randint(0, 12)))))
        pieces = [reply.text[a:b] for a, b in zip([0, *cuts], [*cuts, len(reply.text)])]
        stub_llm.reply(reply.text, chunks=pieces, finish_reason=reason)
        request = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
        if stream:
            shown = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
                **request, stream=True) if c.choices)
        else:
            shown = client.chat.completions.create(**request).choices[0].message.content or ""
        assert shown == reply.shown, (reply.text, pieces)
        expected |= set(reply.contents)
    record_property("sdk_calls", SDK_STREAMS if stream else SDK_STREAMS // 5)
    engine.flush()
    stored = {m.content for m in engine.query(MemoryFilter(user_id="u"))}
    assert expected <= stored
    assert all("zqblock" in content for content in stored)
