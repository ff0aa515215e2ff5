"""What the common-term and time lifts and the diversity step cost per search: the same store and
queries searched with them off and with the shipped defaults.

One SQLite store of ``--size`` memories of one user (the engine benchmark's synthetic corpus, each
memory stated on a random day of the two years before the reference time); ``--queries`` queries
of that corpus, a third of them naming a time ("last month", "in May", ...). Two engines over the
same file search every query in alternation (so both see the same machine load): one with
``common_term_weight = time_weight = diversity_weight = 0``, one with the shipped
:class:`MemoryConfig` defaults. Each
query is searched once untimed (its vector is then cached) and timed ``--reps`` times: the figures
are the search without the query embedding, which the lifts do not touch. p50 / p95 in ms.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/bench_lifts.py --out docs/benchmarks.md --json benchmarks/results/lifts.json
    HF_HUB_OFFLINE=1 python benchmarks/bench_lifts.py --quick
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import _report  # noqa: E402
from bench_engine import Corpus, summary_ms  # noqa: E402

from headroom_integrations import MemoryConfig, MemoryEngine  # noqa: E402

MARK_START = "<!-- lifts-bench:start -->"
MARK_END = "<!-- lifts-bench:end -->"
NOW = datetime(2024, 6, 15, 12, 0, tzinfo=timezone.utc)
TIMES = ("last month", "in May", "last week", "in March 2023", "two weeks ago", "this year", "yesterday")
TARGET_MS = 0.5  # the bound on what these steps may add to search p50 at 10k


def run(size: int, queries: int, reps: int, seed: int) -> dict[str, Any]:
    """Fill one store, then time both engines over the same queries (see the module doc)."""
    corpus, rng = Corpus(seed), random.Random(seed)
    asked = [q if i % 3 else f"{q.rstrip('?')} {rng.choice(TIMES)}?" for i, q in enumerate(corpus.queries(queries))]
    shipped = MemoryConfig(db_path=":memory:")
    with tempfile.TemporaryDirectory(prefix="bench-lifts-") as tmp:
        db = str(Path(tmp) / "lifts.db")
        with MemoryEngine(MemoryConfig(db_path=db)) as engine:
            for start in range(0, size, 1000):
                batch = corpus.memories(min(1000, size - start))
                for item in batch:
                    item["observed_at"] = NOW - timedelta(days=rng.uniform(0, 730))
                engine.add_batch(batch, user_id="u")
        engines = {
            "off": MemoryEngine(MemoryConfig(db_path=db, common_term_weight=0.0, time_weight=0.0,
                                             diversity_weight=0.0)),
            "shipped": MemoryEngine(MemoryConfig(db_path=db)),
        }
        timings: dict[str, list[float]] = {name: [] for name in engines}
        lifted = {"common": 0, "time": 0}
        try:
            for query in asked:
                for name, engine in engines.items():
                    hits = engine.search(query, "u", now=NOW)  # untimed: caches the query vector
                    if name == "shipped":
                        lifted["common"] += any(h.common_term_part for h in hits)
                        lifted["time"] += any(h.time_part for h in hits)
                for _ in range(reps):
                    for name, engine in engines.items():
                        started = time.perf_counter()
                        engine.search(query, "u", now=NOW)
                        timings[name].append(time.perf_counter() - started)
        finally:
            for engine in engines.values():
                engine.close()
    figures = {name: {key: round(value, 3) for key, value in summary_ms(t).items()} for name, t in timings.items()}
    return {
        "size": size, "queries": queries, "reps": reps, "figures": figures,
        "added_p50_ms": round(figures["shipped"]["p50"] - figures["off"]["p50"], 3),
        "queries_lifted": lifted, "queries_with_time": sum(1 for i in range(queries) if i % 3 == 0),
        "defaults": {"common_term_weight": shipped.common_term_weight, "time_weight": shipped.time_weight,
                     "diversity_weight": shipped.diversity_weight},
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU",
        "python": platform.python_version(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def markdown(r: dict[str, Any]) -> str:
    """The docs section."""
    off, on = r["figures"]["off"], r["figures"]["shipped"]
    met = "met" if r["added_p50_ms"] <= TARGET_MS else "NOT met"
    return "\n".join([
        "## What the lifts and the diversity step cost", "",
        f"Measured {r['when']} with `python benchmarks/bench_lifts.py`: {r['size']:,} memories of one user, "
        f"{r['queries']} queries ({r['queries_with_time']} naming a time), {r['reps']} timed searches each per "
        "engine, alternating; query vectors cached, so this is the search itself. Defaults "
        f"`common_term_weight={r['defaults']['common_term_weight']:g}`, "
        f"`time_weight={r['defaults']['time_weight']:g}`, `diversity_weight={r['defaults']['diversity_weight']:g}`; "
        f"a lift changed the hits' scores in {r['queries_lifted']['common']} (common terms) and "
        f"{r['queries_lifted']['time']} (time) of the queries.", "",
        "| engine | search p50 (ms) | search p95 (ms) |", "|---|---:|---:|",
        f"| lifts and diversity off | {off['p50']:.3f} | {off['p95']:.3f} |",
        f"| shipped defaults | {on['p50']:.3f} | {on['p95']:.3f} |", "",
        f"Added p50: {r['added_p50_ms']:+.3f} ms (target ≤ {TARGET_MS} ms: {met}); "
        f"{r['machine']}, Python {r['python']}.", "",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_000, help="memories in the store (default 10,000)")
    parser.add_argument("--queries", type=int, default=300, help="queries (default 300)")
    parser.add_argument("--reps", type=int, default=5, help="timed searches per query and engine (default 5)")
    parser.add_argument("--quick", action="store_true", help="500 memories, 30 queries, 2 reps")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, help="write/replace the marked section of this markdown file")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.queries, args.reps = 500, 30, 2
    results = run(args.size, args.queries, args.reps, args.seed)
    _report.publish(markdown(results), results, args.out, args.json, MARK_START, MARK_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
