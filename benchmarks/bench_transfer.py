"""Export / import benchmark: JSON Lines round trips of a store with version chains, both backends.

The store: ``--size`` memories (default 10,000) of ``--users`` users written with ``add_batch``
(local MiniLM), then one memory in ten superseded twice, so a fifth of the rows are older versions
of a chain. Per backend (SQLite file; PostgreSQL on a throwaway pgserver unless ``--no-postgres``),
``--reps`` times each (median and spread reported):

1. **export**: ``engine.export(path)`` without and with vectors (rows/s, file size);
2. **import, vectors in the file**: into an empty store of the same backend (no embedding);
3. **import, embedded here**: the file without vectors into an empty store (every row embedded);
4. **re-import**: the same file again (every row skipped);
5. **round trip**: export of the imported store == the file (byte for byte), and the peak RSS
   growth of the process during an export (streaming: one batch in memory).

Usage::

    python benchmarks/bench_transfer.py --out docs/benchmarks.md --json benchmarks/results/transfer.json
    python benchmarks/bench_transfer.py --quick   # 300 memories, one rep: a smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _report
import psutil
from bench_engine import Corpus, machine_info

from headroom_integrations import MemoryConfig, MemoryEngine

START, END = "<!-- transfer-bench:start -->", "<!-- transfer-bench:end -->"


def fill(engine: MemoryEngine, size: int, users: int, seed: int) -> None:
    """``size`` rows: base memories by ``add_batch``, then one in ten superseded twice."""
    corpus = Corpus(seed)
    base = size * 5 // 6
    texts = [m["content"] for m in corpus.memories(base)]
    ids: list[str] = []
    per_user = -(-base // users)
    for u in range(users):
        chunk = texts[u * per_user:(u + 1) * per_user]
        if chunk:
            ids += [m.id for m in engine.add_batch(chunk, user_id=f"user-{u:04d}")]
    for memory_id in ids[: (size - base) // 2]:
        newer = engine.supersede(memory_id, corpus.memory()["content"])
        engine.supersede(newer.id, corpus.memory()["content"])


class PeakRss:
    """The largest resident set size growth of this process while the block runs (sampled every 5 ms)."""

    def __enter__(self) -> PeakRss:
        self._process, self._stop = psutil.Process(), threading.Event()
        self.start = self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


@contextlib.contextmanager
def stores(backend: str, workdir: Path) -> Iterator[Callable[[str], MemoryConfig]]:
    """A factory of fresh store configurations on one backend."""
    if backend == "sqlite":
        yield lambda name: MemoryConfig(db_path=workdir / f"{name}.db")
        return
    import pgserver
    import sqlalchemy

    pgdata = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    admin = sqlalchemy.create_engine(server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1),
                                     poolclass=sqlalchemy.NullPool, isolation_level="AUTOCOMMIT")

    def make(name: str) -> MemoryConfig:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        return MemoryConfig(db_url=server.get_uri(name))

    try:
        yield make
    finally:
        admin.dispose()
        server.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)


def run_backend(backend: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"export": [], "export_vectors": [], "import_vectors": [], "import_embed": [],
                                     "reimport": []}
    same, rss = [], []
    with stores(backend, workdir / backend) as new_store:
        (workdir / backend).mkdir(exist_ok=True)
        with MemoryEngine(new_store("source")) as source:
            fill(source, args.size, args.users, args.seed)
            rows = int(source.stats()["total"])
            plain, full = workdir / f"{backend}.jsonl", workdir / f"{backend}-vectors.jsonl"
            for rep in range(args.reps):
                with PeakRss() as peak:
                    seconds, _ = timed(lambda: source.export(plain))
                rates["export"].append(rows / seconds)
                rss.append(peak.growth_mb)
                seconds, _ = timed(lambda: source.export(full, with_vectors=True))
                rates["export_vectors"].append(rows / seconds)
                with MemoryEngine(new_store(f"vectors{rep}")) as target:
                    seconds, report = timed(lambda t=target: t.import_(full))
                    assert (report.added, report.failed, report.embedded) == (rows, 0, 0), report
                    rates["import_vectors"].append(rows / seconds)
                    seconds, report = timed(lambda t=target: t.import_(full))
                    assert report.skipped == rows, report
                    rates["reimport"].append(rows / seconds)
                    again = workdir / f"{backend}-again.jsonl"
                    target.export(again, with_vectors=True)
                    same.append(again.read_bytes() == full.read_bytes())
                with MemoryEngine(new_store(f"embed{rep}")) as target:
                    seconds, report = timed(lambda t=target: t.import_(plain))
                    assert (report.added, report.embedded) == (rows, rows), report
                    rates["import_embed"].append(rows / seconds)
            sizes = {"plain_mb": plain.stat().st_size / 2**20, "vectors_mb": full.stat().st_size / 2**20}
    return {"rows": rows, "superseded": rows - args.size * 5 // 6,
            "rows_per_s": {k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in rates.items()},
            "round_trip_identical": all(same), "export_rss_growth_mb": max(rss), **sizes}


def report(results: dict[str, Any]) -> str:
    lines = [
        "## Export and import (JSON Lines)", "",
        f"A store of {results['size']:,} memories ({results['users']} users; one in ten superseded twice, so "
        "a fifth of the rows are older versions) exported with `engine.export` and imported into an empty "
        f"store with `engine.import_`; median of {results['reps']} runs (min-max), rows per second. "
        f"Run {results['when']} on {results['machine']['cpu']} ({results['machine']['logical_cores']} cores).", "",
        "| backend | export | export + vectors | import (vectors in file) | import (embedded here) | re-import "
        "(all skipped) | round trip identical | export RSS growth | file (plain / vectors) |",
        "|---|---:|---:|---:|---:|---:|:---:|---:|---:|",
    ]
    for name, r in results["backends"].items():
        def cell(key: str, r: dict[str, Any] = r) -> str:
            s = r["rows_per_s"][key]
            return f"{s['median']:,.0f} ({s['min']:,.0f}-{s['max']:,.0f})"

        lines.append(f"| {name} | {cell('export')} | {cell('export_vectors')} | {cell('import_vectors')} | "
                     f"{cell('import_embed')} | {cell('reimport')} | {'yes' if r['round_trip_identical'] else 'NO'} | "
                     f"{r['export_rss_growth_mb']:.0f} MB | {r['plain_mb']:.1f} / {r['vectors_mb']:.1f} MB |")
    lines += ["", "Importing a file with vectors of the store's own embedder skips embedding; a file without "
              "them (or from another embedder) is embedded batch by batch, which sets that column's pace. "
              "The export's RSS growth stays one batch (1,000 rows) whatever the store size.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--quick", action="store_true", help="300 memories, one run")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.size, args.users, args.reps = 300, 10, 1
    backends = ["sqlite"] + ([] if args.no_postgres else ["postgres"])
    workdir = Path(tempfile.mkdtemp(prefix="bench-transfer-"))
    try:
        results = {"size": args.size, "users": args.users, "reps": args.reps, "machine": machine_info(),
                   "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "backends": {name: run_backend(name, args, workdir) for name in backends}}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    names = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
    results["backends"] = {names[k]: v for k, v in results["backends"].items()}
    _report.publish(report(results), results, args.out, args.json, START, END)


if __name__ == "__main__":
    main()
