"""Check 3: a write that cannot happen (full disk, read-only file) fails with a clear
``HeadroomError``; the store stays readable, nothing acknowledged is lost, the next write works."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import workers

from headroom_integrations import MemoryConfig, MemoryEngine, MemoryFilter


def _run(function, *args):  # type: ignore[no-untyped-def]
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def test_a_full_disk_fails_clearly_and_loses_nothing(db_path: Path, record_property) -> None:  # type: ignore[no-untyped-def]
    with MemoryEngine(MemoryConfig(db_path=db_path)) as engine:
        engine.add_batch([f"Durable fact {i} about the quartz garden" for i in range(40)], user_id="u")
    report = _run(workers.full_disk_writer, str(db_path), 1024 * 1024)
    assert "crash" not in report, report.get("crash")
    assert report["errors"], "the file-size limit was never reached"
    assert all(e.startswith("StorageError: cannot write memory store") and "no space left" in e
               for e in report["errors"]), report["errors"][:3]
    assert len(report["acknowledged"]) > 0
    record_property("failed_writes", len(report["errors"]))
    record_property("acknowledged", len(report["acknowledged"]))
    assert report["readable_hits"] == 5  # searching went on while writes failed
    assert report["after"][:1] == ["Written after the disk had room again"]
    with MemoryEngine(MemoryConfig(db_path=db_path)) as engine:
        stored = {m.content for m in engine.query(MemoryFilter(user_id="u"))}
        assert set(report["acknowledged"]) <= stored
        assert len(stored) == 40 + len(report["acknowledged"]) + 1  # and nothing half-written
        for content in report["acknowledged"][::7]:
            assert content in [h.content for h in engine.search(content, user_id="u", top_k=3)]


def test_a_read_only_file_is_read_and_refuses_writes_clearly(db_path: Path) -> None:
    with MemoryEngine(MemoryConfig(db_path=db_path)) as engine:
        engine.add_batch([f"Durable fact {i}" for i in range(12)], user_id="u")
    db_path.chmod(0o444)
    report = _run(workers.read_only_store, str(db_path))
    db_path.chmod(0o644)
    assert report["write"].startswith("StorageError: cannot write memory store") and "read-only" in report["write"]
    assert len(report["found_before"]) == len(report["found_after"]) == 12
    with MemoryEngine(MemoryConfig(db_path=db_path)) as engine:  # writable again: the next write works
        engine.add("Written once the file was writable", user_id="u")
        assert engine.stats("u")["current"] == 13
