"""Scale on one machine: a SQLite store of 1,000,000 memories, in two shapes (issue 17).

* **A**: 10,000 users x 100 memories each (every user owns 0.01% of the store);
* **B**: one user x 1,000,000 memories, plus a few small users (100 memories each) mixed in:
  a tiny share of a big store.

Vectors are precomputed but realistic: a few thousand varied corpus sentences
(``bench_engine.Corpus``) are embedded once with the engine's local model, and every memory's
vector is a normalised noisy mixture of two of them; its text is a new corpus sentence (so FTS5
indexes real words). Stores are filled through the documented bulk path, ``engine.import_`` of
JSON Lines with base64 float32 vectors (``memory_line``), in chunks of ``--chunk`` lines.

Each scenario runs in processes of its own, so resident memory is the scenario's alone:

1. **fill** (one process): the store built from empty; rows/s, the process's peak RSS; then the
   engine is closed (the vector index is saved beside the file);
2. **reopen and search** (a fresh process): the local model is loaded first (reported apart), then
   ``MemoryEngine(config)`` on the file until a first search has returned (*reopen*); RSS after the
   reopen, after every search, and the process's peak; ``engine.search(...)`` p50/p95 over
   ``--queries`` queries per case, each query text new to the engine (the query embedding, timed
   apart, is part of it), and the same searches again with the query vector cached (the storage
   part alone);
3. **reopen** again in ``--reopens`` - 1 more fresh processes: the reopen target is judged on the
   median of all (one reopen is a noisy figure on a VM whose host reclaims page cache and memory).

File sizes: the database (with its WAL) and the vector index files beside it (the HNSW graph of
the large buckets, and the ``.rows`` file: the index's bookkeeping and the small buckets' vectors). Targets (issue 17):
search p50 <= 6 ms for any user, reopen <= 5 s, RSS <= 3 GB.

Usage::

    python benchmarks/bench_scale.py --out docs/benchmarks.md --json benchmarks/results/scale.json
    python benchmarks/bench_scale.py --quick   # 20,000 memories in all, a shape-only smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _report
import numpy as np
import psutil
from bench_engine import Corpus, EmbedTimer, clear_query_cache, describe, machine_info, summary_ms

from headroom_integrations import MemoryConfig, MemoryEngine
from headroom_integrations.memory.jsonl import header_line, memory_line
from headroom_integrations.memory.validation import new_memory

START, END = "<!-- scale-bench:start -->", "<!-- scale-bench:end -->"
TOP_K = 5
TARGETS = {"search_p50_ms": 6.0, "reopen_s": 5.0, "rss_mb": 3 * 1024.0}


def rss_mb() -> float:
    """Resident set size of this process (MiB)."""
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """The largest resident set size this process has had (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scenario_shape(name: str, quick: bool) -> dict[str, Any]:
    """Users and memories of a scenario."""
    if name == "A":
        users, per_user = (100, 100) if quick else (10_000, 100)
        return {"name": "A", "main_users": users, "per_user": per_user, "small_users": 0, "small_size": 0,
                "total": users * per_user}
    main = 10_000 if quick else 1_000_000  # quick: still past brute_force_max, so the graph is searched
    return {"name": "B", "main_users": 1, "per_user": main, "small_users": 5, "small_size": 100,
            "total": main + 5 * 100}


def owners(shape: dict[str, Any], seed: int) -> list[str]:
    """The owner of each memory, in storing order (users interleaved, as in a live store)."""
    names = [f"user-{u:05d}" for u in range(shape["main_users"]) for _ in range(shape["per_user"])]
    names += [f"small-{u}" for u in range(shape["small_users"]) for _ in range(shape["small_size"])]
    random.Random(seed).shuffle(names)
    return names


def base_vectors(engine: MemoryEngine, count: int, seed: int) -> np.ndarray:
    """``count`` varied corpus sentences embedded by the engine's model (the mixtures' ingredients)."""
    texts = [m["content"] for m in Corpus(seed + 7).memories(count)]
    parts = [engine.embedder.embed(texts[i:i + 256]) for i in range(0, count, 256)]
    return np.concatenate(parts).astype(np.float32)


def mixtures(base: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit vectors, each two base vectors mixed with some noise."""
    a, b = rng.integers(0, len(base), n), rng.integers(0, len(base), n)
    weight = rng.uniform(0.2, 0.8, (n, 1)).astype(np.float32)
    mixed = base[a] + weight * base[b] + rng.normal(0, 0.03, (n, base.shape[1])).astype(np.float32)
    return (mixed / np.linalg.norm(mixed, axis=1, keepdims=True)).astype(np.float32)


STORE_SUFFIXES = ("", "-wal", ".hnsw", ".hnsw.json", ".hnsw.rows")  # a store's files: the database and beside it


def store_files(db: Path) -> dict[str, int]:
    """Bytes of the database (with its WAL) and of the vector index files beside it."""
    size = {suffix: Path(f"{db}{suffix}").stat().st_size
            for suffix in STORE_SUFFIXES if Path(f"{db}{suffix}").exists()}
    return {"db_bytes": size.get("", 0) + size.get("-wal", 0),
            "index_bytes": size.get(".hnsw", 0) + size.get(".hnsw.json", 0) + size.get(".hnsw.rows", 0),
            "graph_bytes": size.get(".hnsw", 0), "rows_file_bytes": size.get(".hnsw.rows", 0)}


# -- the two phases, each run in a process of its own --------------------------------------------------


def phase_fill(args: argparse.Namespace) -> dict[str, Any]:
    """Build the scenario's store from empty through ``engine.import_``; rows/s and peak RSS."""
    shape = scenario_shape(args.scenario, args.quick)
    db = Path(args.db)
    engine = MemoryEngine(MemoryConfig(db_path=db))
    base = base_vectors(engine, args.base, args.seed)
    rng = np.random.default_rng(args.seed)
    corpus = Corpus(args.seed)
    who = owners(shape, args.seed)
    header = header_line(engine.embedder.name, engine.embedder.dimension, True)
    limit = engine.config.max_content_chars
    np.save(db.with_name("base.npy"), base)
    seconds = build = 0.0
    added = 0
    for first in range(0, len(who), args.chunk):
        began = time.perf_counter()
        part = who[first:first + args.chunk]
        items = corpus.memories(len(part))
        vectors = mixtures(base, len(part), rng)
        lines = [header] + [
            memory_line(new_memory(limit, item["content"], owner, category=item["category"],
                                   importance=item["importance"]), vector)
            for item, owner, vector in zip(items, part, vectors)
        ]
        build += time.perf_counter() - began
        began = time.perf_counter()
        report = engine.import_(lines, batch_size=args.chunk)
        seconds += time.perf_counter() - began
        added += report.added
        if args.progress and (first // args.chunk) % 20 == 0:
            print(f"  fill {args.scenario}: {first + len(part):,} rows, {added / seconds:,.0f} rows/s, "
                  f"RSS {rss_mb():,.0f} MiB", file=sys.stderr, flush=True)
    began = time.perf_counter()
    engine.close()
    close_s = time.perf_counter() - began
    return {"rows": added, "seconds": seconds, "rows_per_s": added / seconds, "lines_built_s": build,
            "close_s": close_s, "rss_after_fill_mb": rss_mb(), "peak_rss_mb": peak_rss_mb(),
            "embedder": describe(engine.embedder), **store_files(db)}


def search_case(engine: MemoryEngine, timer: EmbedTimer, queries: list[str], users: Sequence[str],
                peak: list[float]) -> dict[str, Any]:
    """Fresh-query searches (one per query, user ``users[i % len(users)]``), then the same ones cached."""
    fresh, embed, rest, cached = [], [], [], []
    hits = wrong = 0
    for i, query in enumerate(queries):
        user = users[i % len(users)]
        clear_query_cache(engine)
        with timer.measure() as spent:
            began = time.perf_counter()
            results = engine.search(query, user_id=user, top_k=TOP_K)
            elapsed = time.perf_counter() - began
        fresh.append(elapsed)
        embed.append(spent[0])
        rest.append(max(elapsed - spent[0], 1e-9))
        hits += len(results)
        wrong += sum(1 for r in results if r.memory.user_id != user)
        began = time.perf_counter()
        engine.search(query, user_id=user, top_k=TOP_K)  # its vector is cached now
        cached.append(time.perf_counter() - began)
        peak[0] = max(peak[0], rss_mb())
    return {"queries": len(queries), "users": len(set(users)), "search_fresh_ms": summary_ms(fresh),
            "query_embedding_ms": summary_ms(embed), "search_fresh_minus_embedding_ms": summary_ms(rest),
            "search_cached_vector_ms": summary_ms(cached), "mean_hits": hits / max(1, len(queries)),
            "hits_of_other_users": wrong}


def read_into_cache(db: Path) -> float:
    """Read the store's files once (into the OS page cache, as on a machine that has been serving
    them); the seconds it took. This VM's host reclaims idle page cache, so without it the reopen
    and the first searches measure the disk."""
    began = time.perf_counter()
    for suffix in STORE_SUFFIXES:
        path = Path(f"{db}{suffix}")
        if path.exists():
            with path.open("rb", buffering=0) as source:
                while source.read(16 * 2**20):
                    pass
    return time.perf_counter() - began


def reopen(args: argparse.Namespace) -> tuple[MemoryEngine, MemoryEngine, dict[str, Any]]:
    """In this fresh process: the store's files read into the OS cache (unless ``--cold``), the
    model loaded, then the store opened until a first search returned. The engine, the model's
    engine and the figures."""
    db = Path(args.db)
    cache_s = None if args.cold else read_into_cache(db)
    rss_start = rss_mb()
    began = time.perf_counter()
    warm = MemoryEngine(MemoryConfig(db_path=":memory:"))  # loads the local model (shared in-process)
    warm.embedder.embed_one("warm up")
    model_s = time.perf_counter() - began
    rss_model = rss_mb()
    began = time.perf_counter()
    engine = MemoryEngine(MemoryConfig(db_path=db))
    open_s = time.perf_counter() - began
    engine.search(Corpus(args.seed + 1).queries(1)[0], user_id="user-00000", top_k=TOP_K)
    reopen_s = time.perf_counter() - began
    return engine, warm, {"cache_read_s": cache_s, "model_load_s": model_s, "open_s": open_s, "reopen_s": reopen_s,
                          "rss_start_mb": rss_start, "rss_model_mb": rss_model, "rss_after_reopen_mb": rss_mb()}


def phase_reopen(args: argparse.Namespace) -> dict[str, Any]:
    """Only the reopen (timed again in fresh processes: one reopen is a noisy figure)."""
    engine, warm, figures = reopen(args)
    engine.close()
    warm.close()
    return figures


def phase_search(args: argparse.Namespace) -> dict[str, Any]:
    """Reopen the filled store in this fresh process and time searches per case."""
    shape = scenario_shape(args.scenario, args.quick)
    engine, warm, opened = reopen(args)
    rss_reopen = opened["rss_after_reopen_mb"]
    corpus = Corpus(args.seed + 1)
    corpus.queries(1)  # the first query (the reopen's search)
    first_user = "user-00000"
    timer = EmbedTimer()
    timer.attach(engine)
    peak = [rss_reopen]
    for query in corpus.queries(20):  # warm the code paths; not counted
        engine.search(query, user_id=first_user, top_k=TOP_K)
    rng = random.Random(args.seed + 2)
    cases: dict[str, Any] = {}
    if shape["name"] == "A":
        users = [f"user-{rng.randrange(shape['main_users']):05d}" for _ in range(args.queries)]
        cases["random user (owns 0.01%)" if not args.quick else "random user"] = search_case(
            engine, timer, corpus.queries(args.queries), users, peak)
    else:
        cases["the single big user"] = search_case(engine, timer, corpus.queries(args.queries), ["user-00000"], peak)
        small = [f"small-{u}" for u in range(shape["small_users"])]
        cases["small user (owns 0.01%)"] = search_case(engine, timer, corpus.queries(args.queries), small, peak)
    rss_after = rss_mb()
    engine.close()
    warm.close()
    return {**opened, "rss_after_searches_mb": rss_after, "rss_sampled_max_mb": max(peak[0], rss_after),
            "peak_rss_mb": peak_rss_mb(), "cases": cases}


# -- the driver ------------------------------------------------------------------------------------------


def child(args: argparse.Namespace, phase: str, db: Path) -> dict[str, Any]:
    """Run one phase in a fresh process; its JSON result."""
    out = db.with_name(f"{phase}.json")
    command = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--scenario", args.scenario_now,
               "--db", str(db), "--result", str(out), "--seed", str(args.seed), "--queries", str(args.queries),
               "--chunk", str(args.chunk), "--base", str(args.base), "--reopens", str(args.reopens)]
    command += ["--quick"] * args.quick + ["--progress"] * args.progress + ["--cold"] * args.cold
    subprocess.run(command, check=True)
    return dict(json.loads(out.read_text()))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every scenario: fill in one process, reopen and search in another; the store is removed after
    (with ``--keep`` it stays in ``--workdir``, and a store kept by an earlier run is not filled again)."""
    results: dict[str, Any] = {"quick": args.quick, "cold": args.cold, "top_k": TOP_K, "targets": TARGETS,
                               "scenarios": {}}
    root = Path(args.workdir) if args.workdir else None
    for name in args.scenarios:
        if args.keep:  # a fixed folder per scenario: a store filled by an earlier run is searched again
            scratch = Path(args.workdir) / f"scale-{name}{'-quick' if args.quick else ''}"
            scratch.mkdir(parents=True, exist_ok=True)
        else:
            scratch = Path(tempfile.mkdtemp(prefix=f"scale-bench-{name}-", dir=root))
        try:
            args.scenario_now = name
            db = scratch / "scale.db"
            wall = time.perf_counter()
            kept = scratch / "fill.json"
            reused = args.keep and kept.exists() and db.exists()
            if not reused:  # a fill cut short leaves a partial store: start from empty
                for left in [*scratch.glob("scale.db*"), kept]:
                    left.unlink(missing_ok=True)
            fill = json.loads(kept.read_text()) if reused else child(args, "fill", db)
            search = child(args, "search", db)
            reopens = [search["reopen_s"]] + [child(args, "reopen", db)["reopen_s"] for _ in range(args.reopens - 1)]
            results["scenarios"][name] = {**scenario_shape(name, args.quick), "fill": fill, "search": search,
                                          "reopen_s": summary_s(reopens),
                                          "wall_s": time.perf_counter() - wall, "reused_fill": reused}
        finally:
            if not args.keep:
                shutil.rmtree(scratch, ignore_errors=True)
    results["machine"] = machine_info()
    return results


def verdicts(results: dict[str, Any]) -> list[tuple[str, str, float, bool]]:
    """(what, target, value, met) for every target, over every scenario measured."""
    out = []
    for name, s in results["scenarios"].items():
        for case, figures in s["search"]["cases"].items():
            p50 = figures["search_fresh_ms"]["p50"]
            out.append((f"{name}: search p50, {case}", "<= 6 ms", p50, p50 <= TARGETS["search_p50_ms"]))
        reopened = s["reopen_s"]["median"]
        out.append((f"{name}: reopen until the first search returned (median of {s['reopen_s']['n']})", "<= 5 s",
                    reopened, reopened <= TARGETS["reopen_s"]))
        rss = max(s["search"]["peak_rss_mb"], s["fill"]["peak_rss_mb"])
        out.append((f"{name}: peak RSS (fill and search processes)", "<= 3,072 MiB", rss, rss <= TARGETS["rss_mb"]))
    return out


def summary_s(values: list[float]) -> dict[str, float]:
    """Median, min, max and count of some timings (s)."""
    return {"median": float(np.median(values)), "min": min(values), "max": max(values), "n": len(values)}


def _spread(summary: dict[str, float]) -> str:
    if summary["n"] == 1:
        return f"{summary['median']:.2f}"
    return f"{summary['median']:.2f} ({summary['min']:.2f}-{summary['max']:.2f})"


def _ms(summary: dict[str, float]) -> str:
    return f"{summary['p50']:.2f} / {summary['p95']:.2f}"


def markdown(results: dict[str, Any]) -> str:
    """The report section."""
    m = results["machine"]
    scenarios = results["scenarios"]
    embedder = next(iter(scenarios.values()))["fill"]["embedder"] if scenarios else "?"
    lines = [
        "## Scale on one machine (1,000,000 memories, SQLite)" if not results["quick"] else
        "## Scale on one machine (quick run)",
        "",
        f"Measured {m['date']} with `python benchmarks/bench_scale.py`{' --quick' if results['quick'] else ''}: "
        f"one SQLite file and its hnswlib index per scenario, embedder {embedder}, top_k={results['top_k']}. "
        "**A**: 10,000 users x 100 memories; **B**: one user x 1,000,000 plus 5 small users x 100 mixed in. "
        "Vectors are precomputed (mixtures of embedded corpus sentences) and stored through the bulk path "
        "`engine.import_` (JSON Lines with vectors); texts are corpus sentences. Each scenario is filled in "
        "one process and reopened and searched in a fresh one"
        + (", its files read once into the OS cache first, as on a machine that has been serving them "
           "(this VM's host reclaims idle page cache; `--cold` skips that read and measures the disk too)."
           if not results.get("cold")
           else ", with a cold OS cache (`--cold`): reopen and first searches read the disk."),
        "",
        *([results["note"], ""] if results.get("note") else []),
        *([f"Scenario(s) {', '.join(reused)} were searched again on the stores an earlier run of this script "
           "built (`--keep`): their fill figures are that run's, the reopen and search figures this run's.", ""]
          if (reused := [name for name, s in scenarios.items() if s.get("reused_fill")]) else []),
        "### Fill, files and reopen",
        "",
        "| scenario | rows | fill (rows/s) | database (MB) | vector index (MB) | model load (s) "
        "| reopen, median (min-max) (s) "
        "| RSS after reopen (MiB) | RSS after searches (MiB) | peak RSS fill / search (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in scenarios.items():
        f, q = s["fill"], s["search"]
        lines.append(
            f"| {name} | {f['rows']:,} | {f['rows_per_s']:,.0f} | {f['db_bytes'] / 1e6:,.0f} | "
            f"{f['index_bytes'] / 1e6:,.0f} | {q['model_load_s']:.2f} | {_spread(s['reopen_s'])} | "
            f"{q['rss_after_reopen_mb']:,.0f} | {q['rss_after_searches_mb']:,.0f} | "
            f"{f['peak_rss_mb']:,.0f} / {q['peak_rss_mb']:,.0f} |")
    lines += [
        "",
        "*Reopen*: `MemoryEngine(config)` on the file until its first search has returned, the model "
        "already loaded (its load is the column before), in each of "
        f"{next(iter(scenarios.values()))['reopen_s']['n'] if scenarios else 0} fresh processes (the search "
        "process and ones that only reopen): on this VM one reopen can take twice another. RSS of the search "
        "process includes the model.",
        "",
        "### Search latency (p50 / p95, ms)",
        "",
        "Every query text is new to the engine: *fresh query* includes embedding it (timed apart in the "
        "next column); *cached vector* repeats the same search right after, its query vector then cached, "
        "so it is the storage and ranking part alone.",
        "",
        "| scenario | searching as | queries | fresh query | query embedding | fresh minus embedding "
        "| cached vector | hits of other users |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in scenarios.items():
        for case, c in s["search"]["cases"].items():
            lines.append(
                f"| {name} | {case} | {c['queries']} | {_ms(c['search_fresh_ms'])} | {_ms(c['query_embedding_ms'])} "
                f"| {_ms(c['search_fresh_minus_embedding_ms'])} | {_ms(c['search_cached_vector_ms'])} "
                f"| {c['hits_of_other_users']} |")
    lines += ["", "### Targets (issue 17)", "", "| target | goal | measured | met |", "|---|---|---:|---|"]
    for what, goal, value, met in verdicts(results):
        lines.append(f"| {what} | {goal} | {value:,.2f} | {'yes' if met else 'no'} |")
    lines += [
        "",
        "### Machine",
        "",
        f"{m['cpu']}, {m['logical_cores']} logical cores, {m['ram_gib']} GiB RAM; {m['os']}; Python {m['python']}, "
        f"numpy {m['numpy']}, hnswlib {m['hnswlib']}, SQLite {m['sqlite']}; load average "
        f"{m['load_avg_1m']} at the end.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 memories in all (a smoke test)")
    parser.add_argument("--scenarios", default="A,B", help="which scenarios, comma-separated (default A,B)")
    parser.add_argument("--queries", type=int, default=None, help="queries per case (default 300; quick: 30)")
    parser.add_argument("--chunk", type=int, default=5000, help="lines per import_ call and transaction")
    parser.add_argument("--base", type=int, default=None, help="sentences embedded for the mixtures (default 4000)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--workdir", default=None, help="where the temporary stores go (default: the system's)")
    parser.add_argument("--out", type=Path, default=None, help="markdown page to write the section into")
    parser.add_argument("--json", type=Path, default=None, help="raw results (JSON)")
    parser.add_argument("--progress", action="store_true", help="progress lines on stderr")
    parser.add_argument("--cold", action="store_true",
                        help="do not read the store's files into the OS cache before the reopen (see read_into_cache)")
    parser.add_argument("--keep", action="store_true",
                        help="keep each scenario's store in --workdir (scale-A/, scale-B/); a later run with "
                        "--keep searches the kept store again instead of filling a new one")
    parser.add_argument("--reopens", type=int, default=None,
                        help="reopens timed per scenario, each in a fresh process (default 5; quick: 2)")
    parser.add_argument("--phase", choices=["fill", "search", "reopen"], help=argparse.SUPPRESS)
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.scenarios = [s.strip().upper() for s in args.scenarios.split(",") if s.strip()]
    if args.keep and not args.workdir:
        parser.error("--keep needs --workdir")
    if args.queries is None:
        args.queries = 30 if args.quick else 300
    if args.base is None:
        args.base = 500 if args.quick else 4000
    if args.reopens is None:
        args.reopens = 2 if args.quick else 5
    if args.reopens < 1:
        parser.error("--reopens must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (also of the per-phase child processes)."""
    args = parse_args(argv)
    if args.phase is not None:
        figures = {"fill": phase_fill, "search": phase_search, "reopen": phase_reopen}[args.phase](args)
        Path(args.result).write_text(json.dumps(figures))
        return 0
    results = run(args)
    _report.publish(markdown(results), results, args.out, args.json, START, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
