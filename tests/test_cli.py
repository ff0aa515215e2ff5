"""``headroom-memory`` as a user runs it, on every backend: each command, its output forms
(plain, JSON), its exit codes (0 done, 1 not found, 2 bad input) and one-line errors on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from stores import Store

from headroom_integrations.cli import main
from headroom_integrations.memory import MemoryConfig, MemoryEngine


class Cli:
    """Runs the command line in this process (the model stays loaded) on one store."""

    def __init__(self, store: Store, capsys: pytest.CaptureFixture[str]) -> None:
        self.where = ["--db-url", store.spec] if store.kind == "postgres" else ["--db", store.spec]
        self.capsys = capsys

    def __call__(self, *args: str, code: int = 0) -> str:
        self.capsys.readouterr()
        try:
            returned = main([*self.where, *args])
        except SystemExit as exc:  # argparse's usage errors
            returned = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        assert returned == code, f"{args}: exit {returned}, stderr {err!r}"
        self.err = err
        if code and err:
            assert err.startswith(("error: ", "usage: ")) or "line " in err, err
        return out

    def json(self, *args: str) -> object:
        return json.loads(self("--json", *args))


@pytest.fixture
def cli(store: Store, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(store, capsys)


@pytest.mark.parametrize("command", [["users"], ["list", "alice"], ["search", "alice", "tea"], ["stats"],
                                     ["show", "x"], ["history", "x"], ["export"], ["doctor"],
                                     ["forget", "x", "--yes"], ["rollback", "x"]])
def test_reading_a_missing_store_says_so_and_creates_nothing(cli: Cli, store: Store, command: list[str]) -> None:
    cli(*command, code=1)
    assert "there is no memory store" in cli.err and cli.err.count("\n") == 1
    if store.kind == "sqlite":
        assert not Path(store.spec).exists()
    cli("add", "alice", "Likes tea")  # a writing command creates it
    assert cli.json("users") == [{"user_id": "alice", "current": 1, "total": 1}]


def test_add_list_search_show_history(cli: Cli) -> None:
    go = cli("add", "alice", "Prefers Go\tfor services\nand tools", "--category", "preference").strip()
    cli("add", "alice", "Debugging a flaky test", "--session", "s1", "--category", "context")
    cli("add", "alice", "Plans the sprint", "--session", "s1", "--agent", "planner", "--category", "decision")
    cli("add", "bob", "Prefers Python", "--metadata", '{"source": "chat"}')
    listed = cli("list", "alice").splitlines()
    assert listed[0].split("\t") == ["id", "category", "scope", "session", "agent", "valid_from", "current", "content",
                                     "observed"]
    assert len(listed) == 4 and all(len(line.split("\t")) == 9 for line in listed)  # tabs and newlines escaped
    assert listed[1].split("\t")[7] == "Prefers Go\\tfor services\\nand tools"
    assert [m["content"] for m in cli.json("list", "alice", "--session", "s1")] == ["Debugging a flaky test",
                                                                                     "Plans the sprint"]
    assert [m["scope"] for m in cli.json("list", "alice", "--scope", "agent")] == ["agent"]
    assert [m["category"] for m in cli.json("list", "alice", "--category", "context", "--category", "decision")] == [
        "context", "decision"]
    hits = cli.json("search", "alice", "which language?", "--session", "s1", "--agent", "planner", "--top-k", "3")
    assert go in [hit["memory"]["id"] for hit in hits] and len(hits) == 3
    parts = hits[0]["parts"]
    assert sum(parts.values()) == pytest.approx(hits[0]["score"])
    explained = cli("search", "alice", "which language?", "--explain").splitlines()
    assert explained[0].split("\t") == ["score", "vector", "keyword", "context", "terms", "time", "diversity",
                                        "cosine", "id", "category", "content"]
    assert all(len(line.split("\t")) == 11 for line in explained)
    assert cli.json("search", "alice", "language", "--observed-after", "2999-01-01") == []
    rust = cli("add", "alice", "Switched the parser to Rust", "--observed-at", "2024-03-05").strip()
    dated = {hit["memory"]["id"]: hit["parts"]["time"] for hit in
             cli.json("search", "alice", "which language did I pick last week?", "--now", "2024-03-13")}
    assert dated.pop(rust) == pytest.approx(0.1) and set(dated.values()) == {0.0}  # only it was stated then
    assert [h["memory"]["id"] for h in cli.json("search", "alice", "language", "--observed-after", "2024-03-01",
                                                "--observed-before", "2024-03-06")] == [rust]
    cli("search", "alice", "language", "--now", "someday", code=2)
    shown = dict(line.split("\t", 1) for line in cli("show", go).splitlines()[1:])
    assert shown["category"] == "preference" and shown["content"] == "Prefers Go\\tfor services\\nand tools"
    assert cli.json("show", go)["content"] == "Prefers Go\tfor services\nand tools"
    assert cli.json("list", "bob")[0]["metadata"] == {"source": "chat"}
    cli("show", "no-such-id", code=1)
    assert cli.err == "error: no memory with id 'no-such-id'\n"


def test_versions_supersede_rollback_and_as_of(cli: Cli) -> None:
    first = cli("add", "alice", "Works at Google").strip()
    second = cli("supersede", first, "Works at Anthropic").strip()
    cli("supersede", second, "Works at OpenAI")
    middle = cli.json("history", first)
    assert [m["content"] for m in middle] == ["Works at Google", "Works at Anthropic", "Works at OpenAI"]
    cli("rollback", first)
    assert [m["content"] for m in cli.json("list", "alice")] == ["Works at Google"]
    assert len(cli.json("list", "alice", "--all-versions")) == 4
    assert [m["content"] for m in cli.json("list", "alice", "--as-of", middle[1]["valid_from"])] == [
        "Works at Anthropic"]
    cli("rollback", cli.json("list", "alice")[0]["id"], code=2)  # already current: bad input
    assert "already the current version" in cli.err


def test_forget_asks_unless_yes(cli: Cli) -> None:
    keep = cli("add", "alice", "Likes tea").strip()
    doomed = cli("add", "alice", "Lives in Paris").strip()
    cli("add", "alice", "Session note", "--session", "s1")
    cli("add", "alice", "Other session", "--session", "s2")
    cli("forget", doomed, code=2)  # stdin is not a terminal: refused, nothing deleted
    assert "--yes" in cli.err and len(cli.json("list", "alice")) == 4
    assert cli.json("forget", doomed, "--yes") == {"memories": 1}
    assert cli.json("forget", "--user", "alice", "--session", "s1", "--yes") == {"memories": 1}
    assert [m["id"] for m in cli.json("list", "alice", "--session", "s2")] and cli.json("show", keep)
    cli("forget", doomed, "--user", "alice", "--yes", code=2)
    cli("forget", "--user", "alice", "--session", "s2", "--purge", "--yes", code=2)
    assert cli.json("forget", "--user", "alice", "--purge", "--yes")["memories"] == 2
    assert cli.json("users") == []


def test_stats_export_import_doctor(cli: Cli, tmp_path: Path, store: Store) -> None:
    first = cli("add", "alice", "Works at Google").strip()
    cli("supersede", first, "Works at Anthropic")
    cli("add", "bob", "Prefers Python", "--category", "preference")
    counts = cli.json("stats", "--user", "alice")
    assert (counts["total"], counts["current"], counts["superseded"]) == (2, 1, 1)
    assert "category preference\t1" in cli("stats")
    whole = cli("export", "--with-vectors")
    assert len(whole.splitlines()) == 4 and json.loads(whole.splitlines()[0])["vectors"] is True
    path = tmp_path / "alice.jsonl"
    cli("export", "--user", "alice", "--output", str(path))
    assert len(path.read_text().splitlines()) == 3
    other = tmp_path / "other.db"
    assert main(["--db", str(other), "--json", "import", str(path)]) == 0
    assert main(["--db", str(other), "import", str(path)]) == 0  # again: skipped
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"content": "Likes tea", "user_id": "carol"}\nnot json\n{"user_id": "carol"}\n'
                   '{"content": "Likes cake", "user_id": "carol"}\n')
    cli("import", str(bad), code=2)
    assert cli.err.splitlines() == ["line 2: not JSON (Expecting value: line 1 column 1 (char 0))",
                                    "line 3: content is required"]
    assert [m["content"] for m in cli.json("list", "carol")] == ["Likes tea", "Likes cake"]
    assert cli("doctor", "--dry-run").splitlines()[-1] == "the store is healthy"
    store.execute(f"UPDATE memories SET embedding = NULL WHERE id = '{first}'")  # as an embedder outage leaves it
    assert "problems remain: rows_without_vector" in cli("doctor", "--dry-run", code=1)
    assert not any(cli.json("doctor")["remaining"].values())
    assert cli("doctor", "--dry-run").splitlines()[-1] == "the store is healthy"


def test_bad_input_exits_2(cli: Cli) -> None:
    cli("add", "alice", "x", "--category", "opinion", code=2)
    cli("add", "alice", "   ", code=2)
    cli("add", "alice", "x", "--metadata", "[1]", code=2)
    cli("add", "alice", "x", "--scope", "session", code=2)  # a session memory needs --session
    cli("add", "alice", "Likes tea")
    cli("search", "alice", "tea", "--top-k", "0", code=2)
    cli("list", "alice", "--as-of", "yesterday", code=2)
    cli("ui", "--port", "0", code=2)
    cli("frobnicate", code=2)


def test_a_store_made_with_another_embedder(tmp_path: Path, stub_llm: object, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    db = str(tmp_path / "openai.db")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    base = stub_llm.base_url  # type: ignore[attr-defined]
    with MemoryEngine(MemoryConfig(db_path=db, embedder_backend="openai", embedder_model="text-embedding-3-small",
                                   vector_dimension=8, openai_api_key="test", openai_base_url=base)) as engine:
        engine.add("Prefers Go", user_id="alice")
    assert main(["--db", db, "--json", "stats"]) == 0  # no key needed: nothing is embedded
    assert json.loads(capsys.readouterr().out)["total"] == 1
    assert main(["--db", db, "search", "alice", "language"]) == 2
    assert "OPENAI_API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    assert main(["--db", db, "--embedder-url", base, "search", "alice", "language"]) == 0
    assert "Prefers Go" in capsys.readouterr().out
    assert main(["--db", db, "--embedder", "local", "search", "alice", "language"]) == 1
    assert "embedder" in capsys.readouterr().err


def test_environment_and_options_after_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADROOM_DB", str(tmp_path / "env.db"))
    assert main(["add", "alice", "Likes tea"]) == 0
    assert (tmp_path / "env.db").exists()
    assert main(["users", "--json"]) == 0 and "alice" in capsys.readouterr().out
    assert main(["users", "--db", str(tmp_path / "nope.db")]) == 1


def test_the_installed_command_pipes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "HEADROOM_"))} | {"HF_HUB_OFFLINE": "1"}
    db = str(tmp_path / "pipe.db")
    command = [str(Path(sys.executable).with_name("headroom-memory")), "--db", db]
    for fact in ("Likes tea", "Plays the cello"):
        subprocess.run([*command, "add", "alice", fact], check=True, capture_output=True, env=env, timeout=120)
    done = subprocess.run(f"{' '.join(command)} export | head -1", shell=True, capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0 and json.loads(done.stdout)["format"] == "headroom-memory" and done.stderr == ""
    missing = subprocess.run([*command[:-1], str(tmp_path / "none.db"), "stats"], capture_output=True, text=True,
                             env=env, timeout=120)
    assert missing.returncode == 1 and missing.stderr.startswith("error: there is no memory store")


def test_the_tour_in_the_docs_runs(tmp_path: Path) -> None:
    """Every command of docs/cli.md's shell blocks runs as written, in order, and succeeds."""
    import re
    import shlex

    doc = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    lines = [line for block in re.findall(r"```bash\n(.*?)```", doc, re.S) for line in block.splitlines()
             if line.startswith("headroom-memory ")]
    assert len(lines) >= 10
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "HEADROOM_"))} | {"HF_HUB_OFFLINE": "1"}
    executable = str(Path(sys.executable).with_name("headroom-memory"))
    for line in lines:
        done = subprocess.run([executable, *shlex.split(line)[1:]], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=120)
        assert done.returncode == 0, (line, done.stderr)
    assert (tmp_path / "alice.jsonl").exists() and (tmp_path / "copy.db").exists()


def test_ui_serves_the_inspector_on_loopback(tmp_path: Path) -> None:
    import socket
    import time

    import httpx

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "HEADROOM_"))} | {"HF_HUB_OFFLINE": "1"}
    db = tmp_path / "ui.db"
    assert main(["--db", str(db), "add", "alice", "Likes tea"]) == 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).with_name("headroom-memory")), "--db", str(db), "ui",
                               "--port", str(port), "--read-only"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read() if server.stderr else ""
                time.sleep(0.3)
        assert page.status_code == 200 and "alice" in page.text
        assert httpx.post(f"http://127.0.0.1:{port}/memories/x/forget", timeout=5).status_code == 403
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert main(["--db", str(tmp_path / "none.db"), "ui"]) == 1


def test_a_terminal_gets_a_table(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from headroom_integrations.cli.output import Output

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    Output(as_json=False).table(["id", "content"], [["m1", "Prefers Go\tfor services"], ["m2", "[bold]x[/bold]"]])
    text = screen.getvalue()
    assert "┃" in text and "Prefers Go\\tfor services" in text and "[bold]x[/bold]" in text


def test_an_unreachable_database_server_is_not_a_missing_store(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["--db-url", f"postgresql://app:secret@127.0.0.1:{port}/app", "stats"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot connect to postgresql://app:***@127.0.0.1") and err.count("\n") == 1
    assert "secret" not in err


def test_add_observed_at_and_list_by_when_facts_were_stated(cli: Cli) -> None:
    dog = cli("add", "alice", "Adopted a dog", "--observed-at", "2023-05-08T13:56:00+02:00").strip()
    cli("add", "alice", "Ran a marathon", "--observed-at", "2023-06-01")
    cli("add", "alice", "Likes tea")  # stated now
    shown = dict(line.split("\t", 1) for line in cli("show", dog).splitlines()[1:])
    assert shown["observed_at"] == "2023-05-08T11:56:00+00:00"
    assert cli.json("show", dog)["observed_at"] == "2023-05-08T11:56:00+00:00"
    listed = [line.split("\t") for line in cli("list", "alice").splitlines()]
    assert listed[0][-1] == "observed" and listed[1][-1] == "2023-05-08T11:56:00+00:00"
    window = cli.json("list", "alice", "--observed-after", "2023-05-01", "--observed-before", "2023-06-01")
    assert [m["content"] for m in window] == ["Adopted a dog"]
    assert [m["content"] for m in cli.json("list", "alice", "--observed-after", "2023-06-01")] == [
        "Ran a marathon", "Likes tea"]
    cli("add", "alice", "x", "--observed-at", "last tuesday", code=2)
    assert "observed_at must be a datetime, a date or an ISO 8601 string" in cli.err
    cli("list", "alice", "--observed-before", "soon", code=2)
    assert "observed_before must be" in cli.err


def test_json_output_and_an_unwritable_export_never_print_a_traceback(cli: Cli, tmp_path: Path) -> None:
    """Metadata ``add`` keeps exactly (a lone surrogate) made ``--json`` crash on writing; an export
    to a missing folder or onto a directory printed a traceback and left a ``.partial`` file."""
    shown = cli.json("add", "alice", "Likes tea", "--metadata", '{"note": "half \\ud83d emoji"}')
    memory_id = shown["id"] if isinstance(shown, dict) else shown[0]["id"]  # type: ignore[index]
    assert cli.json("show", memory_id)["metadata"] == {"note": "half \ud83d emoji"}  # type: ignore[index]
    cli("export", "--output", str(tmp_path / "missing" / "x.jsonl"), code=1)
    assert "cannot write the export" in cli.err
    (tmp_path / "folder").mkdir()
    cli("export", "--output", str(tmp_path / "folder"), code=1)
    assert not (tmp_path / "folder.partial").exists()
