"""Check 9: right to erasure. After ``purge(user_id)`` no byte of that user's memories, their
versions, their logged messages, their keyword terms or their vectors is left in the database
file, its write-ahead log, its shared-memory file or the vector index and its sidecar, even when
another process had the user's vectors in its own index at the time."""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import sqlite3
from pathlib import Path

import pytest
import workers

from headroom_integrations import MemoryConfig, MemoryEngine
from headroom_integrations.memory.text_query import terms


def _marker(rng: random.Random) -> str:
    return "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(12))


def _files(db: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name)}


@pytest.mark.parametrize("kept", [10, 400], ids=["graph-rebuilt", "vectors-overwritten"])
def test_purge_leaves_no_trace_in_any_file(db_path: Path, kept: int, record_property) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(99)
    victim = [f"The victim's secret {_marker(rng)} is kept here" for _ in range(30)]
    keeper = [f"The keeper's note {_marker(rng)} stays" for _ in range(kept)]  # many: the few erased are overwritten
    spoken = f"my password is {_marker(rng)}"
    with MemoryEngine(MemoryConfig(db_path=db_path)) as engine:
        stored = engine.add_batch(victim[:20], user_id="victim", session_id="s1")
        for memory, text in zip(stored[:10], victim[20:]):
            engine.supersede(memory.id, text)  # older versions hold content too
        engine.add_batch(keeper, user_id="keeper")
        engine.append_messages("victim", "s1", [{"role": "user", "content": spoken}])
        engine.save_index()
    with contextlib.closing(sqlite3.connect(db_path)) as raw:  # the vectors exactly as stored
        rows = raw.execute("SELECT user_id, embedding FROM memories").fetchall()
    victim_vectors = [blob for user, blob in rows if user == "victim"]
    keeper_vectors = [blob for user, blob in rows if user == "keeper"]
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    reader = context.Process(target=workers.erasure_reader, args=(str(db_path), victim[:5], child))
    reader.start()
    try:
        assert parent.recv() == "ready"
        with MemoryEngine(MemoryConfig(db_path=db_path)) as engine:
            for text in victim:
                engine.search(text, user_id="victim", session_id="s1")
            assert engine.purge("victim") == {"memories": 30, "messages": 1}
            assert engine.search(victim[0], user_id="victim", session_id="s1") == []
            parent.send("go")
            assert parent.recv() == "closed"
    finally:
        reader.join(timeout=60)
    files = _files(db_path)
    assert {"memory.db", "memory.db.hnsw", "memory.db.hnsw.json"} <= set(files)
    record_property("files", len(files))
    secrets = [w for text in victim for w in text.split() if len(w) == 12] + [spoken.split()[-1]]
    for name, data in files.items():
        for secret in secrets:
            for form in {secret, *terms(secret)}:
                assert form.encode() not in data, (name, form)
        for blob in victim_vectors:
            assert blob[:32] not in data, name  # the 8 leading floats of each vector
    kept = [w for text in keeper for w in text.split() if len(w) == 12]
    assert all(w.encode() in files["memory.db"] for w in kept)  # the check can see content
    # small users' vectors live in the saved bucket matrices (.hnsw.rows), not in the graph
    index = files["memory.db.hnsw"] + files.get("memory.db.hnsw.rows", b"")
    assert len(victim_vectors) == 30 and all(blob[:32] in index for blob in keeper_vectors)  # and vectors
    wal = files.get("memory.db-wal", b"")
    assert len(wal) == 0 or not any(s.encode() in wal for s in secrets)
