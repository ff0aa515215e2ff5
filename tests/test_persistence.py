"""Durability: reopen in a new process and two live processes on one store (every backend); the
SQLite vector index's sidecar: sharing, loss and staleness (SQLite alone)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from stores import Store

from headroom_integrations import MemoryConfig, MemoryEngine


def _open_code(spec: str) -> str:
    """Python that opens ``engine`` on a store given as a file path or a database URL."""
    where = f"db_url={spec!r}" if "://" in spec else f"db_path={spec!r}"
    return f"from headroom_integrations import MemoryConfig, MemoryEngine\nengine = MemoryEngine(MemoryConfig({where}))\n"


def _run(code: str, db: Path | str) -> str:
    """Run ``code`` in a fresh interpreter with ``engine`` open on ``db``; return its stdout."""
    script = _open_code(str(db)) + textwrap.dedent(code) + "\nengine.close()\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_reopen_in_a_new_process_finds_everything(store: Store) -> None:
    _run(
        """
        engine.add_batch([f"Fact number {i} about topic {i % 7}" for i in range(300)], user_id="u")
        engine.add("Keeps bees on the roof", user_id="u", category="fact")
        """,
        store.spec,
    )
    if store.kind == "sqlite":
        assert Path(store.spec + ".hnsw").exists()
    out = _run(
        """
        hits = engine.search("beekeeping", user_id="u", top_k=1)
        print(hits[0].content, engine.stats("u")["total"])
        """,
        store.spec,
    )
    assert out.strip() == "Keeps bees on the roof 301"


def test_two_live_processes_see_each_others_writes(make_engine: Callable[..., MemoryEngine], store: Store) -> None:
    parent = make_engine()
    parent.add("Parent wrote: likes sailing", user_id="u")
    child_code = "import sys\n" + _open_code(store.spec) + textwrap.dedent(
        """
        print("ready", flush=True)
        sys.stdin.readline()
        print("|".join(sorted(h.content for h in engine.search("hobby", user_id="u", top_k=5))), flush=True)
        engine.add("Child wrote: likes climbing", user_id="u")
        print("added", flush=True)
        sys.stdin.readline()
        print("|".join(sorted(h.content for h in engine.search("hobby", user_id="u", top_k=5))), flush=True)
        engine.close()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", child_code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "ready"
        parent.add("Parent wrote after the child opened: likes chess", user_id="u")
        old = parent.add("Parent wrote: likes golf", user_id="u")
        parent.delete(old.id)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == (
            "Parent wrote after the child opened: likes chess|Parent wrote: likes sailing")
        assert child.stdout.readline().strip() == "added"
        seen = {h.content for h in parent.search("hobby", user_id="u", top_k=5)}
        assert seen == {"Parent wrote: likes sailing", "Parent wrote after the child opened: likes chess",
                        "Child wrote: likes climbing"}
        chess = next(h for h in parent.search("chess", user_id="u") if "chess" in h.content)
        parent.supersede(chess.id, "Parent changed: now likes checkers")
        child.stdin.write("go\n")
        child.stdin.flush()
        assert "chess" not in child.stdout.readline()
    finally:
        child.stdin.close()
        assert child.wait(timeout=120) == 0


@pytest.mark.sqlite_only
def test_engines_on_one_file_share_one_index(make_engine: Callable[..., MemoryEngine], tmp_path: Path) -> None:
    first, second = make_engine(), make_engine()
    assert first.backend.index is second.backend.index
    first.add("Shared fact", user_id="u")
    assert [h.content for h in second.search("shared", user_id="u")] == ["Shared fact"]
    other = make_engine(db_path=tmp_path / "other.db")
    assert other.backend.index is not first.backend.index
    first.close()
    assert [h.content for h in second.search("shared", user_id="u")] == ["Shared fact"]


def _fill_and_close(db_path: Path, n: int = 50) -> list[str]:
    with MemoryEngine(MemoryConfig(db_path=db_path)) as engine:
        stored = engine.add_batch([f"Memory {i}: enjoys activity number {i}" for i in range(n)], user_id="u")
        engine.add("Keeps bees on the roof", user_id="u")
    return [m.id for m in stored]


@pytest.mark.sqlite_only
@pytest.mark.parametrize("damage", ["delete", "corrupt", "truncate", "sidecar-garbage", "sidecar-missing"])
def test_damaged_index_is_rebuilt_with_nothing_lost(db_path: Path, damage: str) -> None:
    _fill_and_close(db_path)
    index = db_path.with_name(db_path.name + ".hnsw")
    sidecar = index.with_name(index.name + ".json")
    if damage == "delete":
        index.unlink()
    elif damage == "corrupt":
        index.write_bytes(os.urandom(index.stat().st_size))
    elif damage == "truncate":
        index.write_bytes(index.read_bytes()[:100])
    elif damage == "sidecar-garbage":
        sidecar.write_text("{not json")
    else:
        sidecar.unlink()
    with MemoryEngine(MemoryConfig(db_path=db_path)) as engine:
        assert len(engine.backend.index) == 51
        assert engine.search("beekeeping", user_id="u", top_k=1)[0].content == "Keeps bees on the roof"
    info = json.loads(sidecar.read_text())
    assert info["size"] == index.stat().st_size


@pytest.mark.sqlite_only
def test_stale_index_catches_up_from_newer_rows(db_path: Path, tmp_path: Path) -> None:
    ids = _fill_and_close(db_path)
    index = db_path.with_name(db_path.name + ".hnsw")
    saved = tmp_path / "saved"
    saved.mkdir()
    for suffix in ("", ".json"):
        shutil.copy(str(index) + suffix, saved / ("idx" + suffix))
    with MemoryEngine(MemoryConfig(db_path=db_path)) as engine:
        engine.add("Plays the theremin", user_id="u")
        engine.delete(ids[0])
        engine.supersede(ids[1], "Memory 1: now enjoys knitting")
    for suffix in ("", ".json"):  # put the older sidecar back, as if the last save was lost
        shutil.copy(saved / ("idx" + suffix), str(index) + suffix)
    with MemoryEngine(MemoryConfig(db_path=db_path)) as engine:
        assert engine.search("electronic musical instrument", user_id="u", top_k=1)[0].content == "Plays the theremin"
        contents = {h.content for h in engine.search("enjoys activity", user_id="u", top_k=50, min_score=-1)}
        assert "Memory 0: enjoys activity number 0" not in contents
        assert "Memory 1: enjoys activity number 1" not in contents
        assert len(engine.backend.index) == 51


@pytest.mark.sqlite_only
def test_in_memory_database(make_engine: Callable[..., MemoryEngine]) -> None:
    engine = make_engine(db_path=":memory:")
    engine.add("Ephemeral fact", user_id="u")
    assert engine.search("ephemeral", user_id="u")[0].content == "Ephemeral fact"
    other = make_engine(db_path=":memory:")
    assert other.stats()["total"] == 0
