"""A LangChain message's content without its ``<memory>`` blocks, whether it is a string or a
list of content blocks (as Anthropic models and OpenAI's Responses API return it)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from headroom_integrations.blocks import StreamFilter, parse_parts, parse_reply
from headroom_integrations.session import InlineMemory

__all__ = ["feed_content", "remember_content", "strip_content"]


def _texts(content: list[Any]) -> list[tuple[int, str]]:
    """(position, text) of the text blocks of a list content: plain strings and ``type: text`` dicts."""
    out = []
    for position, block in enumerate(content):
        if isinstance(block, str):
            out.append((position, block))
        elif isinstance(block, Mapping) and block.get("type") == "text" and isinstance(block.get("text"), str):
            out.append((position, block["text"]))
    return out


def _replaced(content: list[Any], texts: list[tuple[int, str]], shown: list[str]) -> list[Any]:
    out = list(content)
    for (position, _), text in zip(texts, shown):
        out[position] = text if isinstance(out[position], str) else {**out[position], "text": text}
    return out


def remember_content(
    memory: InlineMemory, content: Any, handles: Mapping[str, str] | None = None, observed_at: datetime | None = None
) -> Any:
    """Store the memories of a reply's content and return the content without its blocks (a list
    keeps every block in its place; only the text blocks' text changes).

    Example:
        >>> from headroom_integrations.session import InlineMemory
        >>> from headroom_integrations.memory import MemoryEngine, MemoryConfig
        >>> memory = InlineMemory(MemoryEngine(MemoryConfig(db_path=":memory:")), "u")
        >>> remember_content(memory, [{"type": "text", "text": 'Ok <memory>{"content": "Likes tea"}</memory>'}])
        [{'type': 'text', 'text': 'Ok'}]
    """
    if isinstance(content, str):
        return memory.remember_reply(content, handles, observed_at)
    if not isinstance(content, list):
        return content
    texts = _texts(content)
    if not texts:
        return content
    return _replaced(content, texts, memory.remember_parts([text for _, text in texts], handles, observed_at))


def strip_content(content: Any) -> Any:
    """A whole reply's content without its blocks (nothing stored)."""
    if isinstance(content, str):
        return parse_reply(content).text
    if not isinstance(content, list):
        return content
    texts = _texts(content)
    return _replaced(content, texts, parse_parts([text for _, text in texts])[0]) if texts else content


def feed_content(stream: StreamFilter, content: Any) -> Any:
    """A streamed chunk's content through the stream's filter (what may be shown of it so far)."""
    if isinstance(content, str):
        return stream.feed(content)
    if not isinstance(content, list):
        return content
    texts = _texts(content)
    return _replaced(content, texts, [stream.feed(text) for _, text in texts]) if texts else content
