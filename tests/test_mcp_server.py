"""The MCP server as MCP clients run it: ``headroom-memory mcp`` in a subprocess, the real ``mcp``
client SDK over stdio (and once over streamable HTTP), on every backend."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from stores import Store  # tests/ is on sys.path

from headroom_integrations.mcp_server import TOOL_NAMES

ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _command(store: Store, *options: str) -> list[str]:
    where = ["--db-url", store.spec] if store.kind == "postgres" else ["--db", store.spec]
    return ["-m", "headroom_integrations.cli", "mcp", *where, *options]


@asynccontextmanager
async def _server(store: Store, *options: str) -> AsyncIterator[Client]:
    params = StdioServerParameters(command=sys.executable, args=_command(store, *options), env=ENV)
    async with Client(params, read_timeout_seconds=120) as client:
        yield client


async def _call(client: Client, tool: str, **arguments: Any) -> Any:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    content = result.structured_content
    return content["result"] if isinstance(content, dict) and set(content) == {"result"} else content


async def _error(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error
    return " ".join(getattr(part, "text", "") for part in result.content)


async def test_a_client_adds_searches_supersedes_and_deletes_over_stdio(store: Store) -> None:
    async with _server(store, "--user", "alice", "--session", "s1") as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) == set(TOOL_NAMES)
        assert all(tool.output_schema for tool in tools.values())  # structured results
        assert "user_id" not in str(tools["add_memory"].input_schema)  # the user is not a tool argument

        go = await _call(client, "add_memory", content="Prefers Go for performance-critical code",
                         category="preference", importance=0.8)
        assert (go["category"], go["scope"], go["is_current"]) == ("preference", "user", True)
        await _call(client, "add_memory", content="Works at Initech", category="fact")
        await _call(client, "add_memory", content="Debugging the billing service today", scope="session",
                    category="context")

        hits = await _call(client, "search_memories", query="Which language is preferred for performance-critical code?", top_k=2)
        assert hits[0]["id"] == go["id"] and hits[0]["score"] > 0.3
        assert [h["content"] for h in await _call(client, "search_memories", query="job", category="fact")] == [
            "Works at Initech"]

        rust = await _call(client, "supersede_memory", memory_id=go["id"],
                           new_content="Prefers Rust for performance-critical code")
        history = await _call(client, "memory_history", memory_id=rust["id"])
        assert [(h["content"], h["is_current"]) for h in history] == [
            ("Prefers Go for performance-critical code", False), ("Prefers Rust for performance-critical code", True)]
        current = await _call(client, "list_memories")
        assert len(current) == 3 and go["id"] not in {m["id"] for m in current}
        assert len(await _call(client, "list_memories", include_superseded=True)) == 4

        assert await _call(client, "delete_memory", memory_id=rust["id"]) == {"id": rust["id"], "deleted": True}
        assert "no memory" in await _error(client, "memory_history", memory_id="no-such-id")
        assert "category" in await _error(client, "add_memory", content="x", category="mood")
        assert "turn" in await _error(client, "add_memory", content="x", scope="turn")


async def test_another_users_server_sees_and_touches_nothing_of_the_first(store: Store) -> None:
    async with _server(store, "--user", "alice") as alice:
        secret = await _call(alice, "add_memory", content="Alice's locker code is 4711")
        async with _server(store, "--user", "mallory") as mallory:
            assert await _call(mallory, "search_memories", query="locker code") == []
            assert await _call(mallory, "list_memories", include_superseded=True) == []
            for tool, arguments in (("memory_history", {}), ("delete_memory", {}),
                                    ("supersede_memory", {"new_content": "mine now"})):
                assert "no memory" in await _error(mallory, tool, memory_id=secret["id"], **arguments)
            assert "no session" in await _error(mallory, "add_memory", content="x", scope="session")
        assert [m["content"] for m in await _call(alice, "list_memories")] == ["Alice's locker code is 4711"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.sqlite_only  # the transport, not the store, is under test here
async def test_streamable_http_on_loopback(store: Store) -> None:
    port = _free_port()
    process = subprocess.Popen([sys.executable, *_command(store, "--user", "alice", "--http", str(port))],
                               env={**os.environ, **ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:  # wait for the port (the model loads first)
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "the HTTP server did not start"
            time.sleep(0.2)
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            assert {tool.name for tool in (await client.list_tools()).tools} == set(TOOL_NAMES)
            added = await _call(client, "add_memory", content="Lives in Lisbon")
            assert [h["id"] for h in await _call(client, "search_memories", query="where does she live")] == [
                added["id"]]
    finally:
        process.terminate()
        process.wait(timeout=30)
