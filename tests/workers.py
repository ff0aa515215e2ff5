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

    return MemoryEngine(MemoryConfig(db_path=db, **options))


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
