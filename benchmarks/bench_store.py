"""LangGraph store benchmark: HeadroomStore against LangGraph's own stores, same embedder, same run.

Stores compared (every one embeds with the engine's local MiniLM model, the LangGraph stores
through a LangChain ``Embeddings`` wrapper around the very same model instance):

* ``headroom (SQLite)``: ``HeadroomStore(db_path=...)``, the embedded default;
* ``headroom (PostgreSQL)``: ``HeadroomStore(db_url=...)`` on a throwaway pgserver (pgvector),
  ``shared_buffers`` 1GB as in the backends benchmark (skipped with ``--no-postgres``);
* ``InMemoryStore``: ``langgraph.store.memory.InMemoryStore(index={"dims", "embed", "fields"})``;
* ``SqliteStore``: ``langgraph.store.sqlite.SqliteStore`` (package langgraph-checkpoint-sqlite,
  sqlite-vec), when it installs and the interpreter's ``sqlite3`` (or ``pysqlite3``) can load
  extensions; otherwise reported as not run, with the reason.

At each ``--sizes`` point (items in the store, spread over ``--users`` namespaces
``("memories", user)``) every store is filled through ``batch`` (puts of 100 items, embedding
included: the fill rate), then, the stores alternating call by call so a busy machine slows all
alike, ``--reps`` timed calls of:

1. **put**: a new item into a user's namespace (embedding included);
2. **get**: an existing item by key;
3. **search**: a natural-language query (new text every call: no query cache can hit), top 5 of a
   user's namespace, embedding included;
4. **filter**: a search without a query, ``filter={"kind": ...}``, first 10 items.

Also checked, as a sanity check that every store ranks with the same model: **self@1**, the share
of 50 stored items that a search with the item's own text returns first.

Usage::

    python benchmarks/bench_store.py --out docs/benchmarks.md --json benchmarks/results/store.json
    python benchmarks/bench_store.py --quick   # 200 items, a few calls: a smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _report
from bench_engine import Corpus, fmt, machine_info, summary_ms
from langchain_core.embeddings import Embeddings
from langgraph.store.base import BaseStore, PutOp
from langgraph.store.memory import InMemoryStore

from headroom_integrations import MemoryConfig, MemoryEngine
from headroom_integrations.langgraph import HeadroomStore

START, END = "<!-- store-bench:start -->", "<!-- store-bench:end -->"
OPERATIONS = ("put", "get", "search", "filter")
KINDS = ("fact", "preference", "event")


class ModelEmbeddings(Embeddings):
    """The engine's embedder as LangChain ``Embeddings`` (for LangGraph's own stores)."""

    def __init__(self, engine: MemoryEngine) -> None:
        self.embedder = engine.embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[float(x) for x in vector] for vector in self.embedder.embed(texts)]

    def embed_query(self, text: str) -> list[float]:
        return [float(x) for x in self.embedder.embed_one(text)]


@dataclass
class Settings:
    """What to run."""

    sizes: list[int]
    users: int
    reps: int
    seed: int
    postgres: bool
    workdir: Path
    progress: bool = True


@dataclass
class Contender:
    """One store under test and what was measured on it."""

    name: str
    store: BaseStore
    close: Callable[[], None]
    samples: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in OPERATIONS})
    fill_s: float = 0.0


def _sqlite_module() -> Any:
    """A ``sqlite3`` module that can load extensions (sqlite-vec), or a reason why there is none."""
    import sqlite3

    if hasattr(sqlite3.connect(":memory:"), "enable_load_extension"):
        return sqlite3
    try:
        import pysqlite3.dbapi2 as pysqlite3  # type: ignore[import-not-found]
    except ImportError:
        return "this Python's sqlite3 cannot load extensions and pysqlite3 is not installed"
    return pysqlite3


def _langgraph_sqlite(path: Path, embeddings: Embeddings) -> tuple[BaseStore, Callable[[], None]] | str:
    try:
        from langgraph.store.sqlite import SqliteStore
    except ImportError:
        return "langgraph-checkpoint-sqlite is not installed"
    module = _sqlite_module()
    if isinstance(module, str):
        return module
    conn = module.connect(str(path), check_same_thread=False, isolation_level=None)
    store = SqliteStore(conn, index={"dims": 384, "embed": embeddings, "fields": ["content"]})
    store.setup()
    return store, conn.close


@contextlib.contextmanager
def contenders(settings: Settings, size: int, engine: MemoryEngine, pg_url: str | None
               ) -> Iterator[tuple[list[Contender], dict[str, str]]]:
    """Every store of one size point, empty; and the stores that could not run, with why."""
    embeddings = ModelEmbeddings(engine)
    tag = f"{size}-{uuid.uuid4().hex[:6]}"
    built: list[Contender] = []
    skipped: dict[str, str] = {}
    ours = HeadroomStore(db_path=str(settings.workdir / f"headroom-{tag}.db"))
    built.append(Contender("headroom (SQLite)", ours, ours.close))
    if pg_url is not None:
        theirs = HeadroomStore(db_url=pg_url)
        built.append(Contender("headroom (PostgreSQL)", theirs, theirs.close))
    memory = InMemoryStore(index={"dims": 384, "embed": embeddings, "fields": ["content"]})
    built.append(Contender("InMemoryStore", memory, lambda: None))
    lite = _langgraph_sqlite(settings.workdir / f"langgraph-{tag}.db", embeddings)
    if isinstance(lite, str):
        skipped["SqliteStore"] = lite
    else:
        built.append(Contender("SqliteStore", lite[0], lite[1]))
    try:
        yield built, skipped
    finally:
        for contender in built:
            contender.close()


def _value(memory: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    return {"content": memory["content"], "kind": rng.choice(KINDS)}


Entry = tuple[tuple[str, ...], str, dict[str, Any]]


def _calls(rep: int, items: list[Entry], extra: list[Entry], queries: list[str], users: list[str],
           rng: random.Random) -> dict[str, Callable[[BaseStore], Any]]:
    """The timed calls of one repetition, by operation."""
    ns, key, _ = items[rng.randrange(len(items))]
    user_ns = ("memories", users[rep % len(users)])
    return {
        "put": lambda s: s.put(*extra[rep]),
        "get": lambda s: s.get(ns, key),
        "search": lambda s: s.search(user_ns, query=queries[rep], limit=5),
        "filter": lambda s: s.search(user_ns, filter={"kind": KINDS[rep % 3]}, limit=10),
    }


def run_size(settings: Settings, size: int, engine: MemoryEngine, pg_url: str | None) -> dict[str, Any]:
    """Fill every store with ``size`` items and time the operations on all of them."""
    corpus, rng = Corpus(settings.seed + size), random.Random(settings.seed)
    users = [f"user{u:03d}" for u in range(settings.users)]
    items = [(("memories", users[i % len(users)]), f"k{i}", _value(m, rng))
             for i, m in enumerate(corpus.memories(size))]
    extra = [(("memories", rng.choice(users)), f"new{i}", _value(m, rng))
             for i, m in enumerate(corpus.memories(settings.reps))]
    queries = corpus.queries(settings.reps)
    probes = rng.sample(items, min(50, len(items)))
    with contenders(settings, size, engine, pg_url) as (stores, skipped):
        for contender in stores:
            start = time.perf_counter()
            for chunk in range(0, len(items), 100):
                contender.store.batch([PutOp(ns, key, value) for ns, key, value in items[chunk : chunk + 100]])
            contender.fill_s = time.perf_counter() - start
        for rep in range(settings.reps):
            for op, call in _calls(rep, items, extra, queries, users, rng).items():
                for contender in (stores if rep % 2 == 0 else stores[::-1]):
                    start = time.perf_counter()
                    call(contender.store)
                    contender.samples[op].append(time.perf_counter() - start)
        self_at_1 = {
            c.name: sum(1 for ns, key, value in probes
                        if [h.key for h in c.store.search(ns, query=value["content"], limit=1)] == [key]) / len(probes)
            for c in stores
        }
        return {
            "size": size,
            "skipped": skipped,
            "stores": {
                c.name: {
                    "fill_items_per_s": size / c.fill_s if c.fill_s > 0 else None,
                    **{op: summary_ms(samples) for op, samples in c.samples.items()},
                    "self_at_1": self_at_1[c.name],
                }
                for c in stores
            },
        }


def run(settings: Settings) -> dict[str, Any]:
    """Every size point (with a PostgreSQL server when asked)."""
    engine = MemoryEngine(MemoryConfig(db_path=":memory:"))  # the model every store shares
    results: dict[str, Any] = {"settings": {**settings.__dict__, "workdir": None}, "machine": machine_info(),
                               "sizes": []}
    results["machine"]["langgraph"] = metadata.version("langgraph")
    for name in ("langgraph-checkpoint-sqlite", "sqlite-vec"):
        try:
            results["machine"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            results["machine"][name] = "not installed"
    with contextlib.ExitStack() as stack:
        pg_urls: dict[str, str] = {}
        if settings.postgres:
            from bench_backends import postgres_server

            names = [f"store{size}" for size in settings.sizes]
            server = stack.enter_context(postgres_server(names))
            pg_urls = server.uris
            results["machine"]["postgres"] = server.info
        for size in settings.sizes:
            if settings.progress:
                print(f"size {size} ...", file=sys.stderr)
            results["sizes"].append(run_size(settings, size, engine, pg_urls.get(f"store{size}")))
    engine.close()
    return results


def markdown(results: dict[str, Any]) -> str:
    """The report section."""
    m, s = results["machine"], results["settings"]
    lines = [
        "## LangGraph store (`HeadroomStore` vs LangGraph's stores)",
        "",
        f"Run {m['date']} on {m['cpu']} ({m['logical_cores']} logical cores), Python {m['python']}, langgraph "
        f"{m['langgraph']}, langgraph-checkpoint-sqlite {m['langgraph-checkpoint-sqlite']} (sqlite-vec "
        f"{m['sqlite-vec']}): `python benchmarks/bench_store.py`. Every store embeds with the same local MiniLM "
        f"model (LangGraph's through a LangChain `Embeddings` wrapper of it); items spread over {s['users']} "
        f"namespaces `(\"memories\", user)`; {s['reps']} timed calls per operation, the stores alternating call "
        "by call. put: a new item (embedding included); get: by key; search: a new natural-language query, "
        "top 5 of one user's namespace (embedding included); filter: `filter={\"kind\": ...}`, first 10. "
        "self@1: share of 50 stored items a search with their own text returns first.",
        "",
        "| items | store | fill (items/s) | put p50 / p95 | get p50 / p95 | search p50 / p95 | filter p50 / p95 "
        "| self@1 |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for point in results["sizes"]:
        for name, r in point["stores"].items():
            cells = " | ".join(f"{fmt(r[op]['p50'])} / {fmt(r[op]['p95'])} ms" for op in OPERATIONS)
            lines.append(f"| {point['size']:,} | {name} | {r['fill_items_per_s']:,.0f} | {cells} | "
                         f"{r['self_at_1']:.2f} |")
        for name, why in point["skipped"].items():
            lines.append(f"| {point['size']:,} | {name} | not run: {why} | | | | | |")
    pg = m.get("postgres")
    if pg:
        lines += ["", f"PostgreSQL {pg['server_version']} with pgvector {pg['pgvector']} (pgserver, shared_buffers "
                      f"{pg['shared_buffers']}, Unix socket)."]
    lines += ["", "What the store does beyond LangGraph's: a put of an existing key is a new version "
                  "(`HeadroomStore.history`, point-in-time queries), and searches are the engine's hybrid "
                  "(vector + keyword) search rather than cosine alone."]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="200 items, 10 calls: a smoke test")
    parser.add_argument("--sizes", type=int, nargs="+", help="items per store (default 1000 10000; quick 200)")
    parser.add_argument("--users", type=int, default=10, help="namespaces the items spread over (default 10)")
    parser.add_argument("--reps", type=int, help="timed calls per operation (default 200; quick 10)")
    parser.add_argument("--seed", type=int, default=5, help="seed of the synthetic content")
    parser.add_argument("--no-postgres", action="store_true", help="leave out HeadroomStore on PostgreSQL")
    parser.add_argument("--out", type=Path, help="markdown file whose store-bench section is written/replaced")
    parser.add_argument("--json", type=Path, help="write the raw results as JSON here")
    parser.add_argument("--no-progress", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and publish its figures."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        settings = Settings(
            sizes=args.sizes or ([200] if args.quick else [1000, 10000]), users=args.users,
            reps=args.reps or (10 if args.quick else 200), seed=args.seed, postgres=not args.no_postgres,
            workdir=Path(tmp), progress=not args.no_progress,
        )
        results = run(settings)
    _report.publish(markdown(results), results, args.out, args.json, START, END)


if __name__ == "__main__":
    main()
