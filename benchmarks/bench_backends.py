"""Benchmark of the two storage backends side by side: SQLite (+ hnswlib) and PostgreSQL (+ pgvector).

Same machine, same run, same memories, same vectors and same queries for both backends. The
PostgreSQL server is a throwaway one started by ``pgserver`` (pgvector included, default settings
except ``shared_buffers``, raised from 128MB to ``--pg-shared-buffers`` (1GB) so the 100k store's
HNSW index and table (about 430 MB) stay in the server's cache, as pgvector's docs advise;
reached over a Unix socket on this machine); every store is a SQLite file or a database of its own.

The synthetic corpus (``bench_engine.Corpus``) is embedded once with the engine's local model and
the vectors are cached under ``benchmarks/.cache/`` (keyed by embedder, seed, size and a digest of
the texts), so reruns skip that step. Stores are filled through the backend's bulk path with those
precomputed vectors (``backend.insert(memories, vectors)`` in chunks), both backends receiving the
very same ``Memory`` values (same ids), so their answers can be compared.

Measured for ``sqlite`` and ``postgres``:

1. **search** p50/p95 (ms) with a fresh query (every query text new to the engine, so its query
   cache never hits; checked with the cache's counters), embedding included, and the part of it that
   is not embedding; at every ``--sizes`` point for one user owning every memory and for 100 users
   sharing the store (searching as one of them). The backends alternate query by query, so a busy
   machine slows both alike. Also: how many of the top-k hits the two backends have in common.
2. **add_batch** throughput, embedding included: 2,000 new memories in batches of 100 into a store
   of the smallest size shared by 100 users (memories/s), the backends alternating batch by batch.
3. **single add** on the response path: p50/p95 of ``engine.add(..., defer_embedding=True)`` (what
   ``with_memory`` does), 200 calls; ``engine.flush()`` (waiting for the background embedding) runs
   between calls, outside the timed region, and its wait is reported too.
4. **concurrent load**: 4 processes x 4 threads on that store for 20 s (``spawn`` processes, one
   ``MemoryEngine`` each); every thread owns some of the 100 users and loops doing a search (70%) or
   an ``add`` (30%) as one of them. Operations, errors (any exception), hits of another user,
   p50/p95 per operation, throughput; then every acknowledged add is looked up
   (``engine.get(id)``): the ones missing are **lost writes**.
5. **reopen**: a fresh process loads the model, opens the largest one-user store and searches it
   (open time and first-search latency, the model load reported apart).

Also reported: the bulk fill rate of each backend (precomputed vectors, no embedding).

Targets (stated for a 100k store): PostgreSQL search p50 <= 2x SQLite's in the same run; add_batch
>= 250 memories/s; 0 errors and 0 lost writes under the concurrent load.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/bench_backends.py                     # 10k and 100k memories
    HF_HUB_OFFLINE=1 python benchmarks/bench_backends.py --quick             # 1k and 3k, < 3 minutes
    HF_HUB_OFFLINE=1 python benchmarks/bench_backends.py --out docs/benchmarks.md \
        --json benchmarks/results/backends.json
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import queue
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # _report and bench_engine (synthetic corpus, machine info, formatting)

import _report  # noqa: E402  (benchmarks/ was put on sys.path above)
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import sqlalchemy  # noqa: E402
from bench_engine import (  # noqa: E402
    Corpus,
    EmbedTimer,
    cache_counts,
    describe,
    fmt,
    machine_info,
    remove_store,
    summary_ms,
)
from tqdm import tqdm  # noqa: E402

from headroom_integrations import MemoryConfig, MemoryEngine  # noqa: E402
from headroom_integrations.memory.embedders import Embedder  # noqa: E402
from headroom_integrations.memory.models import Memory  # noqa: E402
from headroom_integrations.memory.validation import new_memory  # noqa: E402

MARK_START = "<!-- backends-bench:start -->"
MARK_END = "<!-- backends-bench:end -->"
BACKENDS: tuple[str, ...] = ("sqlite", "postgres")
LABELS = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
USER = "bench-user"
TOP_K = 5
TARGET_SIZE = 100_000
TARGET_PG_RATIO = 2.0
TARGET_BATCH_RATE = 250.0
TARGET_LOCOMO_GAP = 0.01  # PostgreSQL's LoCoMo any@5 within this of SQLite's
DEFAULT_CACHE = HERE / ".cache"
DEFAULT_LOCOMO = HERE.parent.parent / "shared" / "data" / "locomo" / "locomo_dev.json"


# -- settings --------------------------------------------------------------------------------------


@dataclass
class Settings:
    """What to run (see :func:`parse_args` for the meaning of each field)."""

    sizes: list[int]
    queries: int
    warmup: int
    users: int
    batch_memories: int
    batch_size: int
    single_adds: int
    load_seconds: float
    processes: int
    threads: int
    search_share: float
    fill_chunk: int
    seed: int
    progress: bool
    quick: bool
    workdir: Path
    cache_dir: Path
    reopen: bool = True
    analyze: bool = True
    locomo: Path | None = None
    pg_shared_buffers: str = "1GB"


# -- the PostgreSQL server and the stores --------------------------------------------------------------


@dataclass
class PgServer:
    """The throwaway PostgreSQL server: how to reach each of its databases and what it runs."""

    uris: dict[str, str]
    info: dict[str, Any]
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time the server used so far: the postmaster, its finished children and its live ones.

        The server is not a child of this process, so its work would otherwise be counted as the
        load of *other* processes.
        """
        try:
            postmaster = psutil.Process(self.pid)
            t = postmaster.cpu_times()
            total = t.user + t.system + t.children_user + t.children_system
            children = postmaster.children(recursive=True)
        except psutil.Error:
            return 0.0
        for child in children:
            with contextlib.suppress(psutil.Error):  # a backend that just exited is in children_* soon
                c = child.cpu_times()
                total += c.user + c.system
        return total


@contextlib.contextmanager
def postgres_server(databases: Sequence[str], shared_buffers: str = "1GB") -> Iterator[PgServer]:
    """Start a fresh pgserver in its own temporary data directory with ``shared_buffers`` (the
    server restarts once to apply it) and create the given databases.

    Yields:
        The URL of every database and the server's version and settings. The server is stopped
        and its data directory deleted on exit.
    """
    import pgserver

    pgdata = Path(tempfile.mkdtemp(prefix="bench-pg-"))  # short: the Unix socket lives there
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    server.psql(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}';")
    server.cleanup()  # stops it; the next handle starts it with the new setting
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        admin = sqlalchemy.create_engine(
            server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1),
            poolclass=sqlalchemy.NullPool, isolation_level="AUTOCOMMIT",
        )
        try:
            with admin.connect() as conn:
                for name in databases:
                    conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
                info = {
                    "server_version": str(conn.exec_driver_sql("SHOW server_version").scalar()),
                    "pgvector": str(conn.exec_driver_sql(
                        "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'").scalar()),
                    **{key: str(conn.exec_driver_sql(f"SHOW {key}").scalar())
                       for key in ("shared_buffers", "work_mem", "max_connections")},
                }
        finally:
            admin.dispose()
        yield PgServer({name: server.get_uri(name) for name in databases}, info,
                       server.get_postmaster_info().pid)
    finally:
        server.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)


@dataclass
class Stores:
    """Where each named store lives on each backend."""

    workdir: Path
    pg: PgServer

    def where(self, backend: str, name: str) -> dict[str, str]:
        """The ``MemoryConfig`` keyword naming the store (plain strings: a child process is given it)."""
        if backend == "sqlite":
            return {"db_path": str(self.workdir / f"{name}.db")}
        return {"db_url": self.pg.uris[name]}

    def open(self, backend: str, name: str) -> MemoryEngine:
        """A new engine on the store."""
        return MemoryEngine(MemoryConfig(**self.where(backend, name)))  # type: ignore[arg-type]


# -- corpus and vectors -------------------------------------------------------------------------------


def corpus_vectors(
    embedder: Embedder, texts: Sequence[str], seed: int, cache_dir: Path, progress: bool
) -> tuple[np.ndarray, dict[str, Any]]:
    """The embeddings of ``texts``: from the cache when they were computed before, else computed and cached.

    Returns:
        The ``(len(texts), dimension)`` float32 vectors and how they were obtained.
    """
    digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", embedder.name)
    path = cache_dir / f"backends_{name}_seed{seed}_n{len(texts)}_{digest}.npy"
    if path.exists():
        with contextlib.suppress(OSError, ValueError):
            vectors = np.load(path)
            if vectors.shape == (len(texts), embedder.dimension) and vectors.dtype == np.float32:
                return vectors, {"source": "cache", "path": str(path), "seconds": 0.0}
    start = time.perf_counter()
    parts: list[np.ndarray] = []
    step = 256
    with tqdm(total=len(texts), desc="embed corpus", unit="text", disable=not progress, file=sys.stderr,
              leave=False) as bar:
        for first in range(0, len(texts), step):
            chunk = texts[first : first + step]
            parts.append(np.asarray(embedder.embed(list(chunk)), dtype=np.float32))
            bar.update(len(chunk))
    vectors = np.concatenate(parts) if parts else np.zeros((0, embedder.dimension), dtype=np.float32)
    seconds = time.perf_counter() - start
    with contextlib.suppress(OSError):  # a read-only checkout only loses the cache
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npy")
        np.save(partial, vectors)
        os.replace(partial, path)
    return vectors, {"source": "computed", "path": str(path), "seconds": seconds,
                     "texts_per_s": len(texts) / seconds if seconds > 0 else 0.0}


def many_owners(n: int, users: Sequence[str], seed: int) -> list[str]:
    """Owners of ``n`` memories shared by ``users``: every user once per round, in a shuffled order."""
    rng = random.Random(seed + 1)
    order = list(users)
    out: list[str] = []
    while len(out) < n:
        out.extend(order)
        rng.shuffle(order)
    return out[:n]


def build_memories(items: Sequence[Mapping[str, Any]], owners: Sequence[str]) -> list[Memory]:
    """``Memory`` values (new ids) for corpus items and their owners, exactly as ``add`` would build them."""
    limit = MemoryConfig().max_content_chars
    return [new_memory(limit, item["content"], owner, category=item["category"], importance=item["importance"])
            for item, owner in zip(items, owners)]


def bulk_fill(engine: MemoryEngine, memories: Sequence[Memory], vectors: np.ndarray, start: int, stop: int,
              chunk: int, desc: str, progress: bool, analyze: bool = True) -> float:
    """Insert ``memories[start:stop]`` with their precomputed vectors; the seconds it took.

    With ``analyze``, PostgreSQL's planner statistics are refreshed afterwards (not timed), as
    autovacuum does a while after a bulk load: without it the planner still believes the table
    nearly empty and may pick plans that scan every row of the user.
    """
    began = time.perf_counter()
    with tqdm(total=stop - start, desc=desc, unit="mem", disable=not progress, file=sys.stderr,
              leave=False) as bar:
        for first in range(start, stop, chunk):
            last = min(stop, first + chunk)
            engine.backend.insert(list(memories[first:last]), list(vectors[first:last]), dedupe=False)
            bar.update(last - first)
    engine.backend.refresh()
    seconds = time.perf_counter() - began
    if analyze and engine.config.backend == "postgres":
        with engine.backend.engine.connect() as conn:  # type: ignore[attr-defined]
            conn.execute(sqlalchemy.text("ANALYZE memories"))
            conn.commit()
    return seconds


def warm_embedder(embedder: Embedder, seed: int) -> None:
    """Run the model over batches of every length and single texts once (first calls are slow)."""
    texts = [item["content"] for item in Corpus(seed + 99).memories(256)]
    for first in range(0, len(texts), 64):
        embedder.embed(texts[first : first + 64])
    for text in texts[:16]:
        embedder.embed([text])


# -- 1. search ----------------------------------------------------------------------------------------


def layout_label(users: int) -> str:
    """How a layout is named in the report."""
    return "one user" if users == 1 else f"{users} users"


def alternating(position: int) -> tuple[str, ...]:
    """The backends in the order the ``position``-th operation runs them (alternating first)."""
    return BACKENDS if position % 2 == 0 else BACKENDS[::-1]


def measure_search(
    engines: Mapping[str, MemoryEngine], timer: EmbedTimer, corpus: Corpus, user: str, queries: int, warmup: int
) -> dict[str, Any]:
    """Fresh-query search latency of both backends on one layout and size, query by query alternately."""
    for position, query in enumerate(corpus.queries(warmup)):
        for backend in alternating(position):
            engines[backend].search(query, user_id=user, top_k=TOP_K)
    before = {b: cache_counts(engines[b]) for b in BACKENDS}
    total: dict[str, list[float]] = {b: [] for b in BACKENDS}
    embed: dict[str, list[float]] = {b: [] for b in BACKENDS}
    rest: dict[str, list[float]] = {b: [] for b in BACKENDS}
    hits = dict.fromkeys(BACKENDS, 0)
    foreign = dict.fromkeys(BACKENDS, 0)
    overlap: list[float] = []
    for position, query in enumerate(corpus.queries(queries)):
        top: dict[str, list[str]] = {}
        for backend in alternating(position):
            with timer.measure() as spent:
                start = time.perf_counter()
                results = engines[backend].search(query, user_id=user, top_k=TOP_K)
                elapsed = time.perf_counter() - start
            total[backend].append(elapsed)
            embed[backend].append(spent[0])
            rest[backend].append(max(elapsed - spent[0], 1e-9))
            hits[backend] += len(results)
            foreign[backend] += sum(1 for r in results if r.memory.user_id != user)
            top[backend] = [r.memory.id for r in results]
        a, b = (set(top[name]) for name in BACKENDS)
        overlap.append(len(a & b) / max(1, len(a), len(b)))
    out: dict[str, Any] = {"top_k_agreement": float(np.mean(overlap)) if overlap else 0.0}
    for backend in BACKENDS:
        misses, cached = cache_counts(engines[backend])
        out[backend] = {
            "search_ms": summary_ms(total[backend]),
            "embed_ms": summary_ms(embed[backend]),
            "excl_embed_ms": summary_ms(rest[backend]),
            "mean_hits": hits[backend] / max(1, queries),
            "hits_of_other_users": foreign[backend],
            "query_cache": {"misses": misses - before[backend][0], "hits": cached - before[backend][1]},
        }
    return out


def run_search(settings: Settings, stores: Stores, timer: EmbedTimer, items: list[dict[str, Any]],
               vectors: np.ndarray) -> tuple[list[dict[str, Any]], dict[str, Any], list[Memory]]:
    """Fill the one-user and the many-users stores of both backends size by size and measure search there.

    Returns:
        The search points, the fill figures per backend and the many-users memories (reused for the
        store the write and load measurements run on).
    """
    users = [f"user-{i:03d}" for i in range(settings.users)]
    target = sorted(users)[len(users) // 2]
    layouts = {
        "one_user": build_memories(items, [USER] * len(items)),
        "many_users": build_memories(items, many_owners(len(items), users, settings.seed)),
    }
    queries = Corpus(settings.seed + 5)
    fill = {b: {"memories": 0, "seconds": 0.0} for b in BACKENDS}
    points: list[dict[str, Any]] = []
    engines: dict[str, dict[str, MemoryEngine]] = {layout: {} for layout in layouts}
    try:
        for layout in layouts:
            for backend in BACKENDS:
                engines[layout][backend] = stores.open(backend, layout)
                timer.attach(engines[layout][backend])
        stored = 0
        for size in settings.sizes:
            for layout, memories in layouts.items():
                for backend in BACKENDS:
                    seconds = bulk_fill(engines[layout][backend], memories, vectors, stored, size,
                                        settings.fill_chunk, f"fill {LABELS[backend]} {layout} to {size:,}",
                                        settings.progress, settings.analyze)
                    fill[backend]["memories"] += size - stored
                    fill[backend]["seconds"] += seconds
            stored = size
            for layout in layouts:
                user = USER if layout == "one_user" else target
                point: dict[str, Any] = {
                    "n": size, "layout": layout, "users": 1 if layout == "one_user" else settings.users,
                    "searched_user": user, "per_user": engines[layout]["sqlite"].stats(user)["total"],
                }
                point["stored"] = {b: engines[layout][b].stats()["total"] for b in BACKENDS}
                point.update(measure_search(engines[layout], timer, queries, user, settings.queries,
                                            settings.warmup))
                points.append(point)
                print(f"  search N={size:,} {layout_label(point['users'])}: " + ", ".join(
                    f"{LABELS[b]} p50 {point[b]['search_ms']['p50']:.2f} ms" for b in BACKENDS), file=sys.stderr)
    finally:
        for by_backend in engines.values():
            for engine in by_backend.values():
                engine.close()
    for figures in fill.values():
        figures["memories_per_s"] = figures["memories"] / figures["seconds"] if figures["seconds"] > 0 else 0.0
    return points, fill, layouts["many_users"]


# -- 2. and 3. writes ------------------------------------------------------------------------------------


def measure_batch_add(engines: Mapping[str, MemoryEngine], timer: EmbedTimer, corpus: Corpus, users: Sequence[str],
                      total: int, batch_size: int) -> dict[str, Any]:
    """``add_batch`` throughput (embedding included) of both backends, batch by batch alternately."""
    seconds = dict.fromkeys(BACKENDS, 0.0)
    embedding = dict.fromkeys(BACKENDS, 0.0)
    stored = dict.fromkeys(BACKENDS, 0)
    batches = [corpus.memories(min(batch_size, total - first)) for first in range(0, total, batch_size)]
    for position, batch in enumerate(batches):
        user = users[position % len(users)]
        for backend in alternating(position):
            with timer.measure() as spent:
                start = time.perf_counter()
                added = engines[backend].add_batch(batch, user_id=user)
                seconds[backend] += time.perf_counter() - start
            embedding[backend] += spent[0]
            stored[backend] += len(added)
    return {b: {"memories": stored[b], "batches": len(batches), "batch_size": batch_size, "seconds": seconds[b],
                "memories_per_s": stored[b] / seconds[b] if seconds[b] > 0 else 0.0,
                "embed_share": embedding[b] / seconds[b] if seconds[b] > 0 else 0.0} for b in BACKENDS}


def measure_single_adds(engines: Mapping[str, MemoryEngine], corpus: Corpus, users: Sequence[str], n: int,
                        warmup: int = 5) -> dict[str, Any]:
    """``add(..., defer_embedding=True)`` latency; ``flush()`` between calls is timed apart."""
    add: dict[str, list[float]] = {b: [] for b in BACKENDS}
    flush: dict[str, list[float]] = {b: [] for b in BACKENDS}
    for position, item in enumerate(corpus.memories(warmup + n)):
        user = users[position % len(users)]
        for backend in alternating(position):
            engine = engines[backend]
            start = time.perf_counter()
            engine.add(item["content"], user_id=user, category=item["category"], importance=item["importance"],
                       defer_embedding=True)
            middle = time.perf_counter()
            engine.flush()
            end = time.perf_counter()
            if position >= warmup:
                add[backend].append(middle - start)
                flush[backend].append(end - middle)
    return {b: {"add_ms": summary_ms(add[b]), "flush_ms": summary_ms(flush[b])} for b in BACKENDS}


# -- 4. concurrent load ------------------------------------------------------------------------------------


def load_worker(where: dict[str, str], process: int, threads: int, processes: int, users: list[str],
                seconds: float, search_share: float, seed: int, ready: Any, go: Any, results: Any) -> None:
    """One process of the concurrent load: one engine, ``threads`` threads searching and adding.

    Puts one dict on ``results``: latencies per operation, error count and samples, hits of another
    user, the ids of every acknowledged add and the process's measured duration.
    """
    lock = threading.Lock()
    out: dict[str, Any] = {"process": process, "latencies": {"search": [], "add": []}, "errors": 0,
                           "error_samples": [], "foreign_hits": 0, "acked": [], "elapsed_s": 0.0}

    def failed(what: str, exc: BaseException) -> None:
        with lock:
            out["errors"] += 1
            message = f"{what}: {type(exc).__name__}: {exc}"[:300]
            if len(out["error_samples"]) < 5 and message not in out["error_samples"]:
                out["error_samples"].append(message)

    try:
        engine = MemoryEngine(MemoryConfig(**where))  # type: ignore[arg-type]
        engine.search("warm-up query of the load test", user_id=users[0], top_k=TOP_K)
    except Exception as exc:
        failed("open", exc)
        ready.put(process)
        results.put(out)
        return

    def loop(slot: int) -> None:
        worker = process * threads + slot
        own = users[worker :: processes * threads] or [f"load-user-{worker}"]
        rng = random.Random(seed * 1000 + worker)
        corpus = Corpus(seed * 1000 + worker + 17)
        latencies: dict[str, list[float]] = {"search": [], "add": []}
        acked: list[str] = []
        foreign = 0
        go.wait(900)  # set by the parent once every process is ready (or gave up waiting)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            user = rng.choice(own)
            kind = "search" if rng.random() < search_share else "add"
            if kind == "search":
                query = corpus.queries(1)[0]
            else:
                item = corpus.memory()
            start = time.perf_counter()
            try:
                if kind == "search":
                    hits = engine.search(query, user_id=user, top_k=TOP_K)
                    foreign += sum(1 for hit in hits if hit.memory.user_id != user)
                else:
                    memory = engine.add(item["content"], user_id=user, category=item["category"],
                                        importance=item["importance"])
                    acked.append(memory.id)
            except Exception as exc:
                failed(kind, exc)
                continue
            latencies[kind].append(time.perf_counter() - start)
        with lock:
            for name, samples in latencies.items():
                out["latencies"][name].extend(samples)
            out["acked"].extend(acked)
            out["foreign_hits"] += foreign

    pool = [threading.Thread(target=loop, args=(slot,), name=f"load-{process}-{slot}") for slot in range(threads)]
    for thread in pool:
        thread.start()
    ready.put(process)
    go.wait(900)
    began = time.perf_counter()
    for thread in pool:
        thread.join()
    out["elapsed_s"] = time.perf_counter() - began
    try:
        engine.close()
    except Exception as exc:
        failed("close", exc)
    results.put(out)


def run_load(where: dict[str, str], users: list[str], settings: Settings) -> tuple[dict[str, Any], list[str]]:
    """The concurrent load on one store; its figures and the ids of the acknowledged adds."""
    ctx = multiprocessing.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=load_worker, name=f"bench-load-{p}", daemon=True,
                    args=(where, p, settings.threads, settings.processes, users, settings.load_seconds,
                          settings.search_share, settings.seed, ready, go, results))
        for p in range(settings.processes)
    ]
    for proc in procs:
        proc.start()
    setup_errors: list[str] = []
    for _ in procs:
        try:
            ready.get(timeout=300)
        except queue.Empty:
            setup_errors.append("the load processes were not all ready after 300 s")
            break
    go.set()
    collected: list[dict[str, Any]] = []
    deadline = time.monotonic() + settings.load_seconds + 300
    while len(collected) < len(procs) and time.monotonic() < deadline:
        try:
            collected.append(results.get(timeout=5))
        except queue.Empty:
            if not any(proc.is_alive() for proc in procs):
                break
    for proc in procs:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=10)
    crashed = len(procs) - len(collected)  # each counts as one error (its operations are unknown)
    if crashed:
        setup_errors.append(f"{crashed} load process(es) returned no result (exit codes "
                            f"{[proc.exitcode for proc in procs]})")
    latencies: dict[str, list[float]] = {"search": [], "add": []}
    acked: list[str] = []
    errors = crashed + (1 if setup_errors and not crashed else 0)
    samples, foreign = list(setup_errors), 0
    elapsed = 0.0
    for part in collected:
        for name in latencies:
            latencies[name].extend(part["latencies"][name])
        acked.extend(part["acked"])
        errors += part["errors"]
        samples.extend(s for s in part["error_samples"] if s not in samples)
        foreign += part["foreign_hits"]
        elapsed = max(elapsed, part["elapsed_s"])
    ops = sum(len(v) for v in latencies.values())
    figures: dict[str, Any] = {
        "processes": settings.processes, "threads_per_process": settings.threads,
        "seconds": settings.load_seconds, "elapsed_s": elapsed, "search_share": settings.search_share,
        "ops": ops, "ops_per_s": ops / elapsed if elapsed > 0 else 0.0, "errors": errors,
        "error_samples": samples[:5], "hits_of_other_users": foreign, "acknowledged_adds": len(acked),
    }
    for name, values in latencies.items():
        figures[name] = {"count": len(values), **(summary_ms(values) if values else {})}
    return figures, acked


def run_writes_and_load(settings: Settings, stores: Stores, timer: EmbedTimer, memories: list[Memory],
                        vectors: np.ndarray) -> dict[str, Any]:
    """Measurements 2 to 4 on a store of the smallest size shared by the users, on both backends."""
    size = settings.sizes[0]
    users = [f"user-{i:03d}" for i in range(settings.users)]
    corpus = Corpus(settings.seed + 11)
    engines: dict[str, MemoryEngine] = {}
    out: dict[str, Any] = {"n": size, "users": settings.users}
    try:
        for backend in BACKENDS:
            engines[backend] = stores.open(backend, "work")
            timer.attach(engines[backend])
            bulk_fill(engines[backend], memories, vectors, 0, size, settings.fill_chunk,
                      f"fill {LABELS[backend]} work store", settings.progress, settings.analyze)
        out["batch_add"] = measure_batch_add(engines, timer, corpus, users, settings.batch_memories,
                                             settings.batch_size)
        print("  add_batch: " + ", ".join(f"{LABELS[b]} {out['batch_add'][b]['memories_per_s']:.0f} mem/s"
                                          for b in BACKENDS), file=sys.stderr)
        out["single_add"] = measure_single_adds(engines, corpus, users, settings.single_adds)
        print("  add(defer_embedding=True): " + ", ".join(
            f"{LABELS[b]} p50 {out['single_add'][b]['add_ms']['p50']:.2f} ms" for b in BACKENDS), file=sys.stderr)
        out["load"] = {}
        for backend in BACKENDS:
            before = engines[backend].stats()["total"]
            figures, acked = run_load(stores.where(backend, "work"), users, settings)
            engines[backend].flush()
            figures["stored_before"] = before
            figures["lost_writes"] = sum(1 for memory_id in acked if engines[backend].get(memory_id) is None)
            figures["stored_after"] = engines[backend].stats()["total"]
            out["load"][backend] = figures
            print(f"  load {LABELS[backend]}: {figures['ops']:,} ops ({figures['ops_per_s']:.1f}/s), "
                  f"{figures['errors']} errors, {figures['lost_writes']} lost of {figures['acknowledged_adds']}",
                  file=sys.stderr)
    finally:
        for engine in engines.values():
            engine.close()
    return out


# -- 5. reopen -------------------------------------------------------------------------------------------


def reopen_worker(where: dict[str, str], queries: list[str], user: str, results: Any) -> None:
    """In a fresh process: load the model, then open the store and search it twice; put the timings."""
    try:
        start = time.perf_counter()
        model = MemoryEngine(MemoryConfig(db_path=":memory:"))  # loads the local model alone
        model_s = time.perf_counter() - start
        start = time.perf_counter()
        engine = MemoryEngine(MemoryConfig(**where))  # type: ignore[arg-type]
        open_s = time.perf_counter() - start
        start = time.perf_counter()
        hits = engine.search(queries[0], user_id=user, top_k=TOP_K)
        first_ms = (time.perf_counter() - start) * 1000.0
        start = time.perf_counter()
        engine.search(queries[1], user_id=user, top_k=TOP_K)
        second_ms = (time.perf_counter() - start) * 1000.0
        model_reused = engine.embedder is model.embedder
        engine.close()
        model.close()
        results.put({"model_load_s": model_s, "open_s": open_s, "first_search_ms": first_ms,
                     "second_search_ms": second_ms, "hits": len(hits), "model_reused": model_reused})
    except Exception as exc:
        results.put({"error": f"{type(exc).__name__}: {exc}"[:300]})


def run_reopen(stores: Stores, n: int, seed: int) -> dict[str, Any]:
    """Reopen the largest one-user store of each backend in a fresh process."""
    ctx = multiprocessing.get_context("spawn")
    corpus = Corpus(seed + 23)
    out: dict[str, Any] = {}
    for backend in BACKENDS:
        results = ctx.Queue()
        proc = ctx.Process(target=reopen_worker, name=f"bench-reopen-{backend}", daemon=True,
                           args=(stores.where(backend, "one_user"), corpus.queries(2), USER, results))
        started = time.perf_counter()
        proc.start()
        try:
            figures = results.get(timeout=300)
        except queue.Empty:
            figures = {"error": "no result after 300 s"}
        proc.join(timeout=30)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=10)
        figures["process_s"] = time.perf_counter() - started
        figures["n"] = n
        out[backend] = figures
        if "error" in figures:
            print(f"  reopen {LABELS[backend]}: {figures['error']}", file=sys.stderr)
        else:
            print(f"  reopen {LABELS[backend]}: open {figures['open_s']:.2f} s, "
                  f"first search {figures['first_search_ms']:.1f} ms", file=sys.stderr)
    return out


# -- the run ---------------------------------------------------------------------------------------------


def run_locomo(data: Path) -> dict[str, Any]:
    """LoCoMo evidence recall of the engine's search (int8 MiniLM, shipped fusion) on each backend,
    through ``locomo_eval`` (it stores each conversation in a fresh store of that backend)."""
    import locomo_eval

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="backends-locomo-") as tmp:
        for backend in BACKENDS:
            raw = Path(tmp) / f"{backend}.json"
            code = locomo_eval.main([str(data), "--embedders", "int8", "--no-ablation", "--no-progress",
                                     "--backend", backend, "--json", str(raw)])
            if code != 0:
                raise SystemExit(f"locomo_eval failed on {backend}")
            found = json.loads(raw.read_text())
            overall = found["summary"]["hybrid"]["overall"]
            out[backend] = {k: overall[k] for k in ("any@1", "any@5", "any@10", "all@10") if k in overall}
            out["questions"] = found["settings"]["questions"]
    return out


def run(settings: Settings) -> dict[str, Any]:
    """Run every measurement and return the results (JSON-serialisable)."""
    machine = machine_info()  # before the run: the load average tells whether others used the CPUs
    machine["psycopg"] = metadata.version("psycopg")
    machine["pgserver"] = metadata.version("pgserver")
    started = time.perf_counter()
    timer = EmbedTimer()
    with postgres_server(["one_user", "many_users", "work"], settings.pg_shared_buffers) as pg:
        machine["postgres"] = pg.info
        others, pg_cpu, pg_began = _report.OtherLoad(), pg.cpu_seconds(), time.perf_counter()
        stores = Stores(settings.workdir, pg)
        for name in ("one_user", "many_users", "work"):
            remove_store(settings.workdir / f"{name}.db")  # a --workdir reused from an earlier run
        items = Corpus(settings.seed).memories(settings.sizes[-1])
        probe = MemoryEngine(MemoryConfig(db_path=":memory:"))  # loads the model (shared by every engine here)
        try:
            embedder = probe.embedder
            vectors, source = corpus_vectors(embedder, [item["content"] for item in items], settings.seed,
                                             settings.cache_dir, settings.progress)
            print(f"  corpus vectors: {source['source']} ({len(items):,})", file=sys.stderr)
            warm_embedder(embedder, settings.seed)
            embedder_name = describe(embedder)
        finally:
            probe.close()
        search, fill, many = run_search(settings, stores, timer, items, vectors)
        work = run_writes_and_load(settings, stores, timer, many, vectors)
        reopen = run_reopen(stores, settings.sizes[-1], settings.seed) if settings.reopen else None
        server_cores = (pg.cpu_seconds() - pg_cpu) / max(1e-9, time.perf_counter() - pg_began)
        machine["postgres_server_cores"] = round(server_cores, 2)
        machine["other_processes_cores"] = round(max(0.0, others.cores() - server_cores), 2)
    machine["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else 0.0
    results: dict[str, Any] = {
        "schema": 1,
        "quick": settings.quick,
        "machine": machine,
        "embedder": embedder_name,
        "backends": list(BACKENDS),
        "settings": {
            "sizes": settings.sizes, "queries": settings.queries, "warmup": settings.warmup, "users": settings.users,
            "batch_memories": settings.batch_memories, "batch_size": settings.batch_size,
            "single_adds": settings.single_adds, "load_seconds": settings.load_seconds,
            "processes": settings.processes, "threads": settings.threads, "search_share": settings.search_share,
            "fill_chunk": settings.fill_chunk, "seed": settings.seed, "top_k": TOP_K,
            "analyze_after_fill": settings.analyze,
        },
        "corpus_vectors": source,
        "fill": fill,
        "search": search,
        "writes": {"n": work["n"], "users": work["users"], "batch_add": work["batch_add"],
                   "single_add": work["single_add"]},
        "load": work["load"],
        "reopen": reopen,
        "locomo": run_locomo(settings.locomo) if settings.locomo is not None else None,
    }
    results["targets"] = targets(results)
    results["wall_s"] = time.perf_counter() - started
    return results


# -- reporting ---------------------------------------------------------------------------------------------


def targets(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Compare the figures with the targets (stated for a 100k store; the largest size measured stands in)."""
    n = results["settings"]["sizes"][-1]
    out: list[dict[str, Any]] = []
    for point in results["search"]:
        if point["n"] != n:
            continue
        sqlite, postgres = point["sqlite"]["search_ms"]["p50"], point["postgres"]["search_ms"]["p50"]
        ratio = postgres / sqlite if sqlite > 0 else math.inf
        out.append({"name": f"PostgreSQL search p50 <= {TARGET_PG_RATIO:g}x SQLite's ({layout_label(point['users'])})",
                    "backend": "postgres", "value": ratio, "unit": "x",
                    "detail": f"{fmt(postgres)} vs {fmt(sqlite)} ms", "met": ratio <= TARGET_PG_RATIO, "at_n": n})
    for backend in BACKENDS:
        rate = results["writes"]["batch_add"][backend]["memories_per_s"]
        out.append({"name": f"{LABELS[backend]} add_batch >= {TARGET_BATCH_RATE:g} memories/s", "backend": backend,
                    "value": rate, "unit": "memories/s", "detail": "", "met": rate >= TARGET_BATCH_RATE,
                    "at_n": results["writes"]["n"]})
    for backend in BACKENDS:
        load = results["load"][backend]
        bad = load["errors"] + load["lost_writes"]
        out.append({"name": f"{LABELS[backend]}: 0 errors and 0 lost writes under concurrent load",
                    "backend": backend, "value": bad, "unit": "errors + lost writes",
                    "detail": f"{load['errors']} errors, {load['lost_writes']} lost of {load['acknowledged_adds']:,}",
                    "met": bad == 0, "at_n": results["writes"]["n"]})
    locomo = results.get("locomo")
    if locomo:
        gap = abs(locomo["postgres"]["any@5"] - locomo["sqlite"]["any@5"])
        out.append({"name": f"LoCoMo any@5 on PostgreSQL within {TARGET_LOCOMO_GAP:g} of SQLite's",
                    "backend": "postgres", "value": gap, "unit": "any@5 gap",
                    "detail": f"{locomo['postgres']['any@5']:.3f} vs {locomo['sqlite']['any@5']:.3f}",
                    "met": gap <= TARGET_LOCOMO_GAP, "at_n": locomo["questions"]})
    return out


def pair(summary: Mapping[str, Any]) -> str:
    """``p50 / p95`` of a latency summary."""
    if "p50" not in summary:
        return "-"
    return f"{fmt(summary['p50'])} / {fmt(summary['p95'])}"


def markdown(results: Mapping[str, Any]) -> str:
    """The report: a table per measurement, the targets and the machine."""
    m, s = results["machine"], results["settings"]
    pg = m["postgres"]
    sizes = ",".join(str(x) for x in s["sizes"])
    lines = [
        "## Storage backends: SQLite vs PostgreSQL",
        "",
        f"Measured {m['date']} with `python benchmarks/bench_backends.py{' --quick' if results['quick'] else ''} "
        f"--sizes {sizes}`: both backends in the same run on the same machine, with the same memories, vectors "
        f"and queries (embedder {results['embedder']}; top_k={s['top_k']}). SQLite: a file with its hnswlib index "
        f"(SQLite {m['sqlite']}, hnswlib {m['hnswlib']}); PostgreSQL {pg['server_version']} with pgvector "
        f"{pg['pgvector']} started by pgserver {m['pgserver']} on this machine with its default settings but "
        f"shared_buffers {pg['shared_buffers']} (pgserver's default 128MB is too small to cache the 100k store's "
        f"HNSW index and table, about 430 MB), reached over a Unix socket with psycopg {m['psycopg']}"
        + ("; its planner statistics refreshed (`ANALYZE`) after each bulk fill, as autovacuum would."
           if s["analyze_after_fill"] else "; planner statistics left as they were after the bulk fills."),
        "",
        f"### Search latency, fresh query ({s['queries']} queries per point after {s['warmup']} warm-up ones)",
        "",
        "Every query text is new to the engine (its query cache never hits), so each search embeds its query; "
        "the backends alternate query by query. *Without embedding*: the search's time minus the query "
        "embedding's (keyword search runs beside the embedding). *Same top-5*: the share of hits both "
        "backends returned.",
        "",
        "| N | users (searched user holds) | SQLite p50 / p95 (ms) | PostgreSQL p50 / p95 (ms) | PG / SQLite p50 "
        "| SQLite without embedding (ms) | PostgreSQL without embedding (ms) | same top-5 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in results["search"]:
        sq, po = p["sqlite"], p["postgres"]
        ratio = po["search_ms"]["p50"] / sq["search_ms"]["p50"] if sq["search_ms"]["p50"] > 0 else math.inf
        lines.append(
            f"| {p['n']:,} | {p['users']} ({p['per_user']:,}) | {pair(sq['search_ms'])} | {pair(po['search_ms'])} "
            f"| {ratio:.2f}x | {pair(sq['excl_embed_ms'])} | {pair(po['excl_embed_ms'])} "
            f"| {p['top_k_agreement']:.0%} |"
        )
    w = results["writes"]
    lines += [
        "",
        f"### Writes (store of {w['n']:,} memories shared by {w['users']} users)",
        "",
        f"*add_batch*: {w['batch_add']['sqlite']['memories']:,} new memories in batches of "
        f"{w['batch_add']['sqlite']['batch_size']}, embedding included. *add on the response path*: "
        f"`add(..., defer_embedding=True)` ({s['single_adds']} calls), the background embedding awaited by "
        "`flush()` between calls, outside the timed region. *Bulk fill*: precomputed vectors through the "
        "backend's insert (how the search stores were filled; no embedding).",
        "",
        "| backend | add_batch (memories/s) | embedding share | add, deferred embedding p50 / p95 (ms) "
        "| then flush p50 / p95 (ms) | bulk fill (memories/s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for b in BACKENDS:
        batch, single = w["batch_add"][b], w["single_add"][b]
        lines.append(f"| {LABELS[b]} | {batch['memories_per_s']:,.0f} | {batch['embed_share']:.0%} "
                     f"| {pair(single['add_ms'])} | {pair(single['flush_ms'])} "
                     f"| {results['fill'][b]['memories_per_s']:,.0f} |")
    load = results["load"]
    first = load[BACKENDS[0]]
    lines += [
        "",
        f"### Concurrent load ({first['processes']} processes x {first['threads_per_process']} threads, "
        f"{first['seconds']:g} s, on that store)",
        "",
        f"Every thread owns some of the {w['users']} users and loops: a search ({first['search_share']:.0%}) or an "
        "`add` (embedding included) as one of them. Lost writes: acknowledged adds that `get(id)` no longer "
        "finds afterwards.",
        "",
        "| backend | operations | ops/s | search p50 / p95 (ms) | add p50 / p95 (ms) | errors | hits of other users "
        "| acknowledged adds | lost writes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in BACKENDS:
        f = load[b]
        lines.append(f"| {LABELS[b]} | {f['ops']:,} | {f['ops_per_s']:,.1f} | {pair(f['search'])} | {pair(f['add'])} "
                     f"| {f['errors']} | {f['hits_of_other_users']} | {f['acknowledged_adds']:,} "
                     f"| {f['lost_writes']} |")
    samples = [f"{LABELS[b]}: {sample}" for b in BACKENDS for sample in load[b]["error_samples"]]
    if samples:
        lines += ["", "Errors seen: " + "; ".join(f"`{sample}`" for sample in samples) + "."]
    reopen = results.get("reopen")
    if reopen:
        lines += [
            "",
            f"### Reopen in a fresh process (one-user store of {reopen[BACKENDS[0]]['n']:,} memories)",
            "",
            "| backend | model load (s) | open (s) | first search (ms) | second search (ms) |",
            "|---|---:|---:|---:|---:|",
        ]
        for b in BACKENDS:
            r = reopen[b]
            if "error" in r:
                lines.append(f"| {LABELS[b]} | failed: `{r['error']}` | | | |")
            else:
                lines.append(f"| {LABELS[b]} | {fmt(r['model_load_s'])} | {fmt(r['open_s'])} "
                             f"| {fmt(r['first_search_ms'])} | {fmt(r['second_search_ms'])} |")
    locomo = results.get("locomo")
    if locomo:
        lines += [
            "",
            f"### Retrieval quality on each backend (LoCoMo dev, {locomo['questions']} questions)",
            "",
            "`benchmarks/locomo_eval.py --backend sqlite|postgres --embedders int8`: every conversation stored "
            "in a fresh store of that backend, the engine's search as shipped (see the LoCoMo section above).",
            "",
            "| backend | any@1 | any@5 | any@10 |",
            "|---|---:|---:|---:|",
        ]
        for b in BACKENDS:
            q = locomo[b]
            lines.append(f"| {LABELS[b]} | {q['any@1']:.3f} | {q['any@5']:.3f} | {q['any@10']:.3f} |")
    lines += ["", "### Targets", ""]
    largest = s["sizes"][-1]
    if largest < TARGET_SIZE:
        lines += [f"The search target is stated for a {TARGET_SIZE:,}-memory store; this run's largest store "
                  f"holds {largest:,}, so its verdict is only indicative.", ""]
    lines += ["| target | measured | met |", "|---|---:|:---:|"]
    for t in results["targets"]:
        if t["unit"] == "x":
            value = f"{t['value']:.2f}x ({t['detail']}, N={t['at_n']:,})"
        elif t["unit"] == "any@5 gap":
            value = f"{t['detail']} (gap {t['value']:.3f})"
        elif t["unit"] == "memories/s":
            value = f"{t['value']:,.0f} memories/s"
        else:
            value = t["detail"]
        lines.append(f"| {t['name']} | {value} | {'yes' if t['met'] else 'NO'} |")
    lines += [
        "",
        "### Machine",
        "",
        f"{m['cpu']}, {m['logical_cores']} logical cores ({m['physical_cores']} physical), {m['ram_gib']} GiB RAM, "
        f"{m['os']}; Python {m['python']}, numpy {m['numpy']}, SQLAlchemy {m['sqlalchemy']}. The PostgreSQL "
        f"server ran on the same cores as the benchmark and used {m['postgres_server_cores']:.2f} cores on average. "
        f"Load average (1 min) before the run: {m['load_avg_1m']}. Other processes (neither the benchmark nor "
        f"its PostgreSQL server) used {m['other_processes_cores']:.2f} cores on average during this run.",
    ]
    busy = m["other_processes_cores"]
    if busy >= 0.25:
        lines += ["", f"**Warning:** other processes kept {busy:.2f} of the {m['logical_cores']} cores busy during "
                  "the run; absolute figures are pessimistic (both backends suffered alike where they alternated)."]
    return "\n".join(lines) + "\n"


def finite(value: Any) -> bool:
    """Whether every number inside ``value`` is finite (JSON has no NaN or infinity)."""
    if isinstance(value, Mapping):
        return all(finite(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return all(finite(item) for item in value)
    return not isinstance(value, float) or math.isfinite(value)


# -- command line ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", help="comma-separated store sizes, filled incrementally (default 10000,100000;"
                        " with --quick 1000,3000)")
    parser.add_argument("--quick", action="store_true", help="small sizes, few repetitions, 5 s of load (< 3 min)")
    parser.add_argument("--queries", type=int, help="timed queries per point and backend (default 200; quick 40)")
    parser.add_argument("--warmup", type=int, help="untimed queries before them (default 20; quick 5)")
    parser.add_argument("--users", type=int, default=100, help="users sharing the many-users stores (default 100)")
    parser.add_argument("--batch-memories", type=int, help="memories add_batch stores (default 2000; quick 500)")
    parser.add_argument("--batch-size", type=int, default=100, help="memories per add_batch call (default 100)")
    parser.add_argument("--single-adds", type=int, help="timed add(defer_embedding=True) calls (default 200;"
                        " quick 40)")
    parser.add_argument("--load-seconds", type=float, help="duration of the concurrent load (default 20; quick 5)")
    parser.add_argument("--processes", type=int, default=4, help="processes of the concurrent load (default 4)")
    parser.add_argument("--threads", type=int, default=4, help="threads per load process (default 4)")
    parser.add_argument("--search-share", type=float, default=0.7, help="share of searches in the load (default 0.7)")
    parser.add_argument("--fill-chunk", type=int, default=2000, help="memories per bulk insert (default 2000)")
    parser.add_argument("--seed", type=int, default=13, help="seed of the synthetic content")
    parser.add_argument("--no-reopen", action="store_true", help="skip the reopen-in-a-fresh-process measurement")
    parser.add_argument("--no-analyze", action="store_true", help="do not refresh PostgreSQL's planner statistics"
                        " after the bulk fills (searches then run with the statistics of a nearly empty table)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help="where the corpus embeddings are cached (default benchmarks/.cache)")
    parser.add_argument("--workdir", type=Path, help="where the SQLite files go (default: a temporary directory,"
                        " deleted afterwards)")
    parser.add_argument("--locomo", default=str(DEFAULT_LOCOMO),
                        help="LoCoMo data for the retrieval-quality comparison ('none' to skip; skipped with --quick)")
    parser.add_argument("--pg-shared-buffers", default="1GB", help="the PostgreSQL server's shared_buffers"
                        " (default 1GB; pgserver's own default is 128MB)")
    parser.add_argument("--out", type=Path, help="markdown file whose backends-bench section is written/replaced")
    parser.add_argument("--json", type=Path, help="write the raw results as JSON here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace, workdir: Path) -> Settings:
    """Resolve defaults (which depend on ``--quick``) and validate."""
    quick = bool(args.quick)

    def pick(value: Any, full: Any, small: Any) -> Any:
        return value if value is not None else (small if quick else full)

    raw_sizes = args.sizes or ("1000,3000" if quick else "10000,100000")
    try:
        sizes = sorted({int(x.replace("_", "")) for x in raw_sizes.split(",") if x.strip()})
    except ValueError:
        raise SystemExit(f"--sizes must be comma-separated integers, got {raw_sizes!r}") from None
    settings = Settings(
        sizes=sizes, queries=pick(args.queries, 200, 40), warmup=pick(args.warmup, 20, 5), users=args.users,
        batch_memories=pick(args.batch_memories, 2000, 500), batch_size=args.batch_size,
        single_adds=pick(args.single_adds, 200, 40), load_seconds=float(pick(args.load_seconds, 20.0, 5.0)),
        processes=args.processes, threads=args.threads, search_share=args.search_share,
        fill_chunk=args.fill_chunk, seed=args.seed, progress=not args.no_progress, quick=quick, workdir=workdir,
        cache_dir=args.cache_dir, reopen=not args.no_reopen, analyze=not args.no_analyze,
        locomo=None if quick or args.locomo in (None, "none") or not Path(args.locomo).is_file() else Path(args.locomo),
        pg_shared_buffers=args.pg_shared_buffers,
    )
    if not re.fullmatch(r"\d+(kB|MB|GB)", settings.pg_shared_buffers):
        raise SystemExit("--pg-shared-buffers must be a size such as 512MB or 1GB")
    if not sizes or sizes[0] < settings.users:
        raise SystemExit(f"--sizes must hold integers >= --users ({settings.users})")
    for name in ("queries", "users", "batch_memories", "batch_size", "single_adds", "processes", "threads",
                 "fill_chunk"):
        if getattr(settings, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
    if settings.warmup < 0:
        raise SystemExit("--warmup must be at least 0")
    if not (math.isfinite(settings.load_seconds) and settings.load_seconds > 0):
        raise SystemExit("--load-seconds must be a positive number")
    if not 0.0 <= settings.search_share <= 1.0:
        raise SystemExit("--search-share must be between 0 and 1")
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run, print the markdown, write ``--out`` and ``--json``."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="backends-bench-") as scratch:
        workdir = Path(args.workdir) if args.workdir else Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        results = run(settings_from(args, workdir))
    if not finite(results):
        raise SystemExit("a measurement came out as NaN or infinity")
    _report.publish(markdown(results), results, args.out, args.json, MARK_START, MARK_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
