"""Every ```python block of README.md and docs/**/*.md runs (one test per document).

How a document runs:

* its ```python blocks (fenced, possibly indented inside a list) run in order, sharing one
  namespace (``__name__`` is ``"docs_snippet"``, so an ``if __name__ == "__main__":`` part is shown,
  not run), in a fresh temporary working directory; a block may use top-level ``await``,
  ``async for`` and ``async with`` (as in a notebook or ``python -m asyncio``): the document's
  blocks share one event loop. Other blocks (```bash, ```json, plain ```) are not run.
* OpenAI: ``OPENAI_BASE_URL`` / ``OPENAI_API_BASE`` point at a :class:`StubLLM` on loopback (the
  stand-in for a real server) and ``OPENAI_API_KEY`` is a dummy, so ``OpenAI()``, LangChain's
  ``init_chat_model("openai:...")`` and LlamaIndex's ``OpenAI(...)`` talk to it. Its replies are
  scripted per document in :data:`DOCS` (``"ok"`` once a script is used up), and a document's
  ``check`` then asserts what the text claims (memories stored, recalled, never shown).
* PostgreSQL: the placeholder URL :data:`PG_PLACEHOLDER` in a block is replaced by the URL of a
  fresh schema on the test run's PostgreSQL server (``pg_server_url``, pgserver); nothing else in a
  block is rewritten.
* Data files a document reads (``locomo_dev.json``) are written into its working directory by
  :data:`DOCS` (a small file of the same format).
* The network guard of conftest.py holds: anything but loopback fails.

A block is left out only by a marker on the line right before its fence, giving the reason::

    <!-- snippet: skip (needs a running Ollama server) -->

A marker without a reason, a malformed one, or one not followed by a ```python block fails the test.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import inspect
import json
import re
import sys
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from openai_stub import StubLLM
from stores import pg_schema_url

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PG_PLACEHOLDER = "postgresql://app:secret@db.internal:5432/app"
"""The database URL the documents use; replaced in their blocks by a schema of the test server."""

PYTHON = {"python", "py", "python3"}
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_MARKER = re.compile(r"^\s*<!--\s*snippet:\s*skip\s*\((?P<reason>.*)\)\s*-->\s*$")


@dataclass
class Block:
    """One fenced code block of a document."""

    line: int  # 1-based line of the first code line
    language: str
    code: str
    skip: str | None = None  # the marker's reason


def parse_blocks(text: str, name: str = "<doc>") -> list[Block]:
    """Every fenced code block of a Markdown text, with the skip marker right before it.

    Raises:
        ValueError: a ``<!-- snippet`` marker that is malformed, has no reason, or is not
            followed by a ```python block; or a fence that never closes.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<!-- snippet" in line:
            marker = _MARKER.match(line)
            if marker is None:
                raise ValueError(f"{name}:{i + 1}: malformed marker {line.strip()!r}; "
                                 "write <!-- snippet: skip (the reason) -->")
            if not marker["reason"].strip():
                raise ValueError(f"{name}:{i + 1}: a skip marker must give its reason: {line.strip()!r}")
            following = _FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
            if following is None or following["info"].strip().split(" ")[0].lower() not in PYTHON:
                raise ValueError(f"{name}:{i + 1}: a skip marker must be right before a ```python block")
        opening = _FENCE.match(line)
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = (opening["info"].strip().split(" ")[0] or "").lower()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence) and lines[j].strip().strip(fence[0]) == ""):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        if j == len(lines):
            raise ValueError(f"{name}:{i + 1}: the code block never closes")
        previous = _MARKER.match(lines[i - 1]) if i > 0 else None
        blocks.append(Block(i + 2, language, "\n".join(body) + "\n", previous["reason"].strip() if previous else None))
        i = j + 1
    return blocks


# -- what each document needs: scripted replies, data files, checks of what it claims -------------

GO_BLOCK = '<memory>{"memories": [{"content": "Prefers Go for performance-critical code", "category": "preference"}]}</memory>'
GO_REPLY = "Noted: Go it is.\n" + GO_BLOCK


def _tool_call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"function": {"name": name, "arguments": arguments}}]}


@dataclass
class Doc:
    """How to run one document: the stub's replies in call order, files to provide, a final check."""

    replies: list[str | dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    setup: Callable[[], None] | None = None  # runs in the working directory before the first block
    check: Callable[[dict[str, Any], StubLLM, str], None] | None = None  # (namespace, stub, printed output)


def _user_texts(stub: StubLLM, index: int) -> str:
    """Every user message's text of the stub's request ``index``."""
    texts = []
    for message in stub.requests[index]["messages"]:
        if message.get("role") == "user":
            content = message.get("content")
            texts.append(content if isinstance(content, str) else json.dumps(content))
    return "\n".join(texts)


def _all_text(stub: StubLLM, index: int) -> str:
    return json.dumps(stub.requests[index]["messages"])


def _check_readme(ns: dict[str, Any], stub: StubLLM, out: str) -> None:
    # with_memory: the preference learned in the morning session is injected in the afternoon one
    assert "Prefers Go for performance-critical code" in _user_texts(stub, 1)
    assert ns["client2"].memory.search("language preferences")[0].content == "Prefers Go for performance-critical code"


def _check_with_memory(ns: dict[str, Any], stub: StubLLM, out: str) -> None:
    assert "Prefers Go for performance-critical code" in _user_texts(stub, 1)
    assert stub.requests[2]["stream"] is True and "Prefers Go" in _user_texts(stub, 2)
    assert out == "Go again." and "<memory" not in out  # the streamed reply, block stripped in flight


def _memory_block(content: str, category: str = "fact") -> str:
    return "<memory>" + json.dumps({"memories": [{"content": content, "category": category}]}) + "</memory>"


def _contents(ns: dict[str, Any], user_id: str) -> list[str]:
    from headroom_integrations import MemoryEngine, MemoryFilter

    with MemoryEngine("memory.db") as engine:
        return [m.content for m in engine.query(MemoryFilter(user_id=user_id))]


def _check_langchain(ns: dict[str, Any], stub: StubLLM, out: str) -> None:
    # the agent's second thread recalls what its first thread learned
    assert "Prefers Go for performance-critical code" in _all_text(stub, 1)
    assert "Prefers Go for performance-critical code" in _contents(ns, "bob")
    assert "Builds backend services" in _contents(ns, "bob")  # the history stored the block ...
    assert all("<memory" not in str(m.content) for m in ns["history"].messages)  # ... and saved the reply without it
    assert _contents(ns, "carol") == ["Prefers Go for performance-critical code"]  # the callback handler
    assert out == "Go." and "<memory" not in out  # what the stripper let through while streaming


def _check_langgraph(ns: dict[str, Any], stub: StubLLM, out: str) -> None:
    from headroom_integrations.langgraph import HeadroomStore

    with HeadroomStore(db_path="memory.db") as store:
        assert store.get(("memories", "alice"), "Allergic to peanuts").value == {"content": "Allergic to peanuts"}
        assert store.search(("memories", "dana"), query="seat")[0].value["content"] == "Dana prefers aisle seats"
    assert "Allergic to peanuts" in _contents(ns, "alice")  # an item is a memory of its user


def _check_llama_index(ns: dict[str, Any], stub: StubLLM, out: str) -> None:
    assert "Prefers Go for performance-critical code" in _all_text(stub, 1)  # recalled in session s2
    assert str(ns["result"]).strip() == "2 + 3 = 5." and "Asked about sums" in _contents(ns, "alice")
    assert "Writes scripts in Python" in _contents(ns, "alice")  # the event handler stored the block
    assert out.endswith("Python, as before.") and "<memory" not in out


def _sqlite_store_to_migrate() -> None:
    """postgres.md moves ``memory.db`` to PostgreSQL: a store to move."""
    from headroom_integrations import MemoryEngine

    with MemoryEngine("memory.db") as engine:
        engine.add_batch(["Prefers Go for performance-critical code", "Lives in Lisbon"], user_id="bob")


def _check_engine(ns: dict[str, Any], stub: StubLLM, out: str) -> None:
    chain = ns["engine"].get_history(ns["old"].id)
    assert [(m.content, m.is_current) for m in chain] == [
        ("User works at Google", False), ("User now works at Anthropic", False), ("User works at Google", True)]
    assert ns["current"].id == chain[-1].id
    assert out.splitlines()[-6:] == [  # the versioning snippet's, "When a fact was stated", "Searching by time"
        "True", "['Adopted a dog named Rex']", "[m1] (2023-05-08) (fact) Adopted a dog named Rex", "2024-02-01",
        "2023-05-20 0.1", "['Booked a kayak tour', 'Went hiking in the Alps with Sam']"]


def _check_postgres(ns: dict[str, Any], stub: StubLLM, out: str) -> None:
    assert (ns["report"].memories, ns["report"].skipped) == (2, 0)


def _locomo_file() -> str:
    """A made-up conversation in LoCoMo's format, small enough for a docs test (the real file is
    not shipped, nor any of its text)."""
    turns = [
        ("Ana", "I joined a climbing club yesterday, it was great fun."),
        ("Ben", "Nice! I baked a lemon cake last weekend."),
        ("Ana", "I'm reading about sailing courses these days."),
        ("Ben", "We named our new kitten Pepper."),
    ]
    session = [{"speaker": s, "dia_id": f"D1:{i + 1}", "text": t} for i, (s, t) in enumerate(turns)]
    qa = [
        {"question": "What did Ben bake?", "answer": "A lemon cake", "evidence": ["D1:2"], "category": 1},
        {"question": "What is the name of Ben's kitten?", "answer": "Pepper", "evidence": ["D1:4"], "category": 1},
        {"question": "What is Ana reading about?", "answer": "Sailing courses", "evidence": ["D1:3"], "category": 1},
    ]
    return json.dumps([{"qa": qa, "conversation": {"speaker_a": "Ana", "speaker_b": "Ben",
                                                    "session_1_date_time": "1:56 pm on 8 May, 2023",
                                                    "session_1": session}}])


DOCS: dict[str, Doc] = {  # by path from the repository root
    "README.md": Doc(replies=[GO_REPLY, "Go: it fits performance-critical services."], check=_check_readme),
    "docs/with_memory.md": Doc(replies=[GO_REPLY, "Go.", "Go again. " + GO_BLOCK], check=_check_with_memory),
    "docs/langchain.md": Doc(
        replies=[GO_REPLY, "Go, as you prefer.", "I don't know yet.", "Good to know. " + _memory_block("Builds backend services"),
                 "Noted.", GO_REPLY, "Go.", "Go, still."],
        check=_check_langchain,
    ),
    "docs/engine.md": Doc(check=_check_engine),
    "docs/postgres.md": Doc(setup=_sqlite_store_to_migrate, check=_check_postgres),
    "docs/langgraph.md": Doc(
        replies=[_tool_call("remember", fact="Allergic to peanuts"), "Noted: no peanuts."], check=_check_langgraph,
    ),
    "docs/llama_index.md": Doc(
        replies=[GO_REPLY, "Go.", _tool_call("add", a=2, b=3), "2 + 3 = 5. " + _memory_block("Asked about sums", "context"),
                 "You prefer Go.", "Go.", "Noted. " + _memory_block("Writes scripts in Python"), "Python, as before."],
        files={"locomo_dev.json": _locomo_file()}, check=_check_llama_index,
    ),
}


# -- running ------------------------------------------------------------------------------------


def _close_everything(namespace: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
    """Close the stores and engines a document left open (its files are in a temporary directory)."""
    for value in list(namespace.values()):
        if isinstance(value, type) or not type(value).__module__.startswith("headroom_integrations"):
            continue
        close = getattr(value, "close", None)
        if callable(close):
            try:
                result = close()
                if inspect.isawaitable(result):
                    loop.run_until_complete(result)
            except Exception:  # closing is best effort: a document may have closed it itself
                pass


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> Iterator[Callable[[], str]]:
    """A function returning the URL of a fresh schema on the run's PostgreSQL server (started on first use)."""
    made: list[tuple[str, str]] = []

    def make() -> str:
        import sqlalchemy

        server = request.getfixturevalue("pg_server_url")
        schema = f"docs_{uuid.uuid4().hex[:12]}"
        admin = sqlalchemy.create_engine(server.replace("postgresql://", "postgresql+psycopg://", 1),
                                         poolclass=sqlalchemy.NullPool)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        admin.dispose()
        made.append((server, schema))
        return pg_schema_url(server, schema)

    yield make
    import sqlalchemy

    for server, schema in made:
        admin = sqlalchemy.create_engine(server.replace("postgresql://", "postgresql+psycopg://", 1),
                                         poolclass=sqlalchemy.NullPool)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")  # langchain.md says so
@pytest.mark.parametrize("path", DOCUMENTS, ids=[str(p.relative_to(ROOT)) for p in DOCUMENTS])
def test_snippets_run(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub_llm: StubLLM, pg_url: Callable[[], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    blocks = [b for b in parse_blocks(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
              if b.language in PYTHON]
    runnable = [b for b in blocks if b.skip is None]
    name = str(path.relative_to(ROOT))
    doc = DOCS.get(name, Doc())
    if not runnable:
        assert doc.check is None, f"{name} has a check but no block to run"
        return

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-docs-test")
    monkeypatch.setenv("OPENAI_BASE_URL", stub_llm.base_url)
    monkeypatch.setenv("OPENAI_API_BASE", stub_llm.base_url)  # what LlamaIndex's OpenAI reads
    for name, content in doc.files.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    if doc.setup is not None:
        doc.setup()
    for reply in doc.replies:
        if isinstance(reply, str):
            stub_llm.reply(reply)
        else:
            stub_llm.reply(**reply)

    database = pg_url() if any(PG_PLACEHOLDER in b.code for b in runnable) else None
    module = types.ModuleType("docs_snippet")  # a real module: dataclasses and pydantic look their names up there
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace: dict[str, Any] = module.__dict__
    loop = asyncio.new_event_loop()
    try:
        for block in runnable:
            code = block.code.replace(PG_PLACEHOLDER, database) if database else block.code
            # padded with blank lines so a traceback names the line in the document
            compiled = compile("\n" * (block.line - 1) + code, str(path), "exec",
                               flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            if compiled.co_flags & inspect.CO_COROUTINE:
                loop.run_until_complete(eval(compiled, namespace))
            else:
                exec(compiled, namespace)
        if doc.check is not None:
            doc.check(namespace, stub_llm, capsys.readouterr().out)
        assert stub_llm.pending == 0, f"{stub_llm.pending} scripted replies of {name} were never asked for"
    finally:
        _close_everything(namespace, loop)
        namespace.clear()
        gc.collect()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def test_markers_are_checked() -> None:
    """Markers must give a reason and sit right before a python block."""
    ok = parse_blocks("<!-- snippet: skip (needs a running Ollama server) -->\n```python\nx = 1\n```\n")
    assert [(b.line, b.skip, b.code) for b in ok] == [(3, "needs a running Ollama server", "x = 1\n")]
    indented = parse_blocks("1. step\n\n   ```python\n   y = 2\n   ```\n")
    assert indented[0].code == "y = 2\n"
    for bad in ("<!-- snippet: skip -->\n```python\nx\n```\n", "<!-- snippet: skip () -->\n```python\nx\n```\n",
                "<!-- snippet: skip (reason) -->\n\n```python\nx\n```\n",
                "<!-- snippet: skip (reason) -->\n```bash\nls\n```\n", "```python\nx = 1\n"):
        with pytest.raises(ValueError):
            parse_blocks(bad)
