"""Code that tests run in child processes (spawned, so each child opens the store on its own).

Every function here is importable by name from a spawned child (``tests/`` is on its path).
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def drop_file_privileges() -> None:
    """Make file permissions bind this process even when it runs as root (CI does): drop the
    capabilities that let root ignore them. Without root there is nothing to drop."""
    if os.geteuid() != 0:
        return

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    mask = ~((1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH)) & 0xFFFFFFFF
    data[0].effective &= mask
    data[0].permitted &= mask
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _engine(db: str, **options: Any) -> Any:
    from headroom_integrations import MemoryConfig, MemoryEngine

    where = {"db_url": db} if "://" in db else {"db_path": db}  # a SQLite file or a PostgreSQL URL
    return MemoryEngine(MemoryConfig(**where, **options))


def deferred_writer(db: str, conn: Connection) -> None:
    """Add what the parent sends with ``defer_embedding=True``; answer once each add returned."""
    engine = _engine(db)
    conn.send("ready")
    while True:
        content = conn.recv()
        if content is None:
            break
        engine.add(content, user_id="alice", defer_embedding=True)
        conn.send("added")
    engine.close()
    conn.send("closed")


def storage_failures(base: str) -> dict[str, tuple[str, str, bool]]:
    """Open stores that cannot work, as an unprivileged user would: per case, the error's type
    name, its message and whether the error is a HeadroomError (nothing but those may escape)."""
    from headroom_integrations import HeadroomError

    drop_file_privileges()
    root = Path(base)
    cases = {
        "read-only file": root / "ro" / "memory.db",
        "read-only directory": root / "rodir" / "memory.db",
        "new file in a read-only directory": root / "rodir" / "new.db",
        "not a SQLite file": root / "notes.txt",
        "a directory": root / "adir",
        "under a regular file": root / "notes.txt" / "memory.db",
    }
    out: dict[str, tuple[str, str, bool]] = {}
    for label, path in cases.items():
        try:
            engine = _engine(str(path))
            try:
                hits = engine.search("hello", user_id="u")
                engine.add("a new fact", user_id="u")
                out[label] = ("none", f"read {len(hits)}, wrote", True)
            finally:
                engine.close()
        except BaseException as exc:  # everything is reported, the parent decides
            out[label] = (type(exc).__name__, str(exc), isinstance(exc, HeadroomError))
    return out


def read_only_store(db: str) -> dict[str, Any]:
    """With the store's file read-only: reads work, a write fails clearly, nothing is lost."""
    from headroom_integrations import HeadroomError

    drop_file_privileges()
    report: dict[str, Any] = {}
    engine = _engine(db)
    try:
        report["found_before"] = [hit.content for hit in engine.search("durable fact", user_id="u", top_k=50)]
        try:
            engine.add("written while read-only", user_id="u")
            report["write"] = "succeeded"
        except HeadroomError as exc:
            report["write"] = f"{type(exc).__name__}: {exc}"
        report["found_after"] = [hit.content for hit in engine.search("durable fact", user_id="u", top_k=50)]
    finally:
        engine.close()
    return report


def full_disk_writer(db: str, headroom_bytes: int) -> dict[str, Any]:
    """Add memories under a file-size limit a little above the store's size (a disk that fills
    up), then lift the limit: which writes were acknowledged, which failed and how."""
    from headroom_integrations import HeadroomError

    engine = _engine(db)
    acknowledged: list[str] = []
    errors: list[str] = []
    try:
        sizes = [p.stat().st_size for p in Path(db).parent.iterdir() if p.is_file()]
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing us
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max(sizes) + headroom_bytes, hard))
        for i in range(400):
            content = f"Filler fact number {i} about the quartz garden " + "x" * 2000
            try:
                engine.add(content, user_id="u", defer_embedding=i % 2 == 0)
                acknowledged.append(content)
            except HeadroomError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        readable = len(engine.search("quartz garden", user_id="u", top_k=5))
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        engine.add("Written after the disk had room again", user_id="u")
        after = [hit.content for hit in engine.search("disk had room again", user_id="u", top_k=3)]
        engine.flush()
    except BaseException:
        return {"crash": traceback.format_exc()}
    finally:
        engine.close()
    return {"acknowledged": acknowledged, "errors": errors, "readable_hits": readable, "after": after}


# -- concurrency: several processes x threads on one store ------------------------------------------


def concurrent_worker(db: str, proc: int, threads: int, seconds: float, seed: int, conn: Connection) -> None:
    """One process of the concurrency check: ``threads`` threads add (deferred or not), supersede,
    delete and search for ``seconds``; then it searches for every memory the parent says is live.

    Sends ``("log", ops, errors)`` when the writers are done and ``("misses", missing)`` after
    the check; ops are ``(kind, user_id, memory_id, content, old_id)`` tuples of acknowledged writes.
    """
    import random
    import threading
    import time

    from headroom_integrations import MemoryAlreadySupersededError, MemoryFilter

    engine = _engine(db)
    conn.send("ready")
    assert conn.recv() == "go"
    ops: list[tuple[str, str, str, str, str | None]] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def run(thread: int) -> None:
        rng = random.Random(seed * 1000 + proc * 100 + thread)
        user = f"p{proc}t{thread}"
        live: dict[str, str] = {}
        n = 0
        while time.monotonic() < deadline:
            roll = rng.random()
            try:
                if roll < 0.45 or not live:
                    n += 1
                    content = f"{user} keeps note {n} about the {rng.choice(WORDS)} {rng.choice(WORDS)}"
                    memory = engine.add(content, user_id=user, defer_embedding=rng.random() < 0.5)
                    live[memory.id] = content
                    record = ("add", user, memory.id, content, None)
                    if content not in [h.content for h in engine.search(content, user_id=user, top_k=3)]:
                        errors.append(f"{user}: own write {content!r} not found by the next search")
                elif roll < 0.6:
                    old = rng.choice(sorted(live))
                    n += 1
                    content = f"{user} revised note {n} on the {rng.choice(WORDS)} {rng.choice(WORDS)}"
                    memory = engine.supersede(old, content, defer_embedding=rng.random() < 0.5)
                    del live[old]
                    live[memory.id] = content
                    record = ("supersede", user, memory.id, content, old)
                elif roll < 0.7:
                    old = rng.choice(sorted(live))
                    engine.delete(old, all_versions=True)
                    del live[old]
                    record = ("delete", user, old, "", None)
                elif roll < 0.8:
                    current = engine.query(MemoryFilter(user_id="shared"))
                    target = rng.choice(current)
                    n += 1
                    content = f"shared fact revised by {user} ({n})"
                    try:
                        memory = engine.supersede(target.id, content)
                    except MemoryAlreadySupersededError:
                        continue  # another writer won the race: the expected outcome, not an error
                    record = ("supersede", "shared", memory.id, content, target.id)
                else:
                    engine.search(rng.choice(WORDS), user_id=user, session_id="s", top_k=5)
                    continue
            except Exception as exc:
                errors.append(f"{user}: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-4)}")
                continue
            with lock:
                ops.append(record)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    conn.send(("log", ops, errors))
    expected: list[tuple[str, str, str]] = conn.recv()
    missing = []
    for user, memory_id, content in expected:  # this process's next searches, after every write
        if memory_id not in [h.id for h in engine.search(content, user_id=user, top_k=3)]:
            missing.append(memory_id)
    engine.close()
    conn.send(("misses", missing))


WORDS = [
    "garden", "violin", "harbour", "glacier", "lantern", "orchard", "compiler", "sparrow", "meadow", "canyon",
    "teapot", "bicycle", "monsoon", "archive", "quartz", "saffron", "ferry", "pepper", "kestrel", "basalt",
]


# -- crashes: kill -9 in the middle of writes ---------------------------------------------------------


def crash_writer(db: str, log: str, seed: int, conn: Connection) -> None:
    """Write until killed: add, add_batch, supersede (deferred or not) and index saves, appending
    one line per acknowledged write to ``log`` (after the call returned, so every line is durable)."""
    import json
    import random

    rng = random.Random(seed)
    engine = _engine(db)
    conn.send("ready")
    n = 0
    with open(log, "a", encoding="utf-8") as out:

        def ack(record: dict[str, Any]) -> None:
            out.write(json.dumps(record) + "\n")
            out.flush()

        live: list[tuple[str, str, str]] = []
        while True:
            roll = rng.random()
            n += 1
            user = f"u{rng.randrange(4)}"
            if roll < 0.35:
                content = f"crash {seed}-{n}: {user} likes the {rng.choice(WORDS)} {rng.choice(WORDS)}"
                memory = engine.add(content, user_id=user, defer_embedding=rng.random() < 0.5)
                live.append((user, memory.id, content))
                ack({"op": "add", "user": user, "id": memory.id, "content": content})
            elif roll < 0.55:
                contents = [f"crash {seed}-{n}.{i}: {user} saw a {rng.choice(WORDS)}" for i in range(rng.randint(2, 12))]
                stored = engine.add_batch(contents, user_id=user, defer_embedding=rng.random() < 0.5)
                live.extend((user, m.id, m.content) for m in stored)
                ack({"op": "batch", "user": user, "items": [[m.id, m.content] for m in stored]})
            elif roll < 0.8 and live:
                user, old, _ = live.pop(rng.randrange(len(live)))
                content = f"crash {seed}-{n}: {user} now prefers the {rng.choice(WORDS)}"
                memory = engine.supersede(old, content, defer_embedding=rng.random() < 0.5)
                live.append((user, memory.id, content))
                ack({"op": "supersede", "user": user, "old": old, "id": memory.id, "content": content})
            else:
                engine.save_index()


# -- erasure: another process holds the user's vectors when the purge happens -------------------------


def erasure_reader(db: str, queries: list[str], conn: Connection) -> None:
    """Open the store and search (its index now holds the vectors), wait, search again, close."""
    engine = _engine(db)
    for query in queries:
        engine.search(query, user_id="victim")
    conn.send("ready")
    assert conn.recv() == "go"
    engine.search(queries[0], user_id="keeper")  # the next search pulls the purge in
    engine.close()  # and the index this process saves holds none of the user's vectors
    conn.send("closed")


def open_error(db: str) -> str:
    """Open a store without the privilege to ignore file permissions: the error, or "opened"."""
    from headroom_integrations import HeadroomError

    drop_file_privileges()
    try:
        _engine(db).close()
    except HeadroomError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "opened"


def search_contents(db: str, query: str, user_id: str) -> list[str]:
    """Open a store without the privilege to ignore file permissions and search it: the contents found."""
    drop_file_privileges()
    engine = _engine(db)
    try:
        return [hit.content for hit in engine.search(query, user_id=user_id, top_k=3)]
    finally:
        engine.close()
