"""Soak runs of the reliability suite (tests/reliability): the same nine checks with more work.

Runs ``pytest tests/reliability`` with ``HEADROOM_RELIABILITY_SCALE`` set (more kills, longer
concurrency, more generated inputs), collects what each check tried from its recorded properties
and writes a table into docs/reliability.md. At ``--scale 1`` it reproduces the CI run's figures.
A soak run draws new generated inputs (``HYPOTHESIS_PROFILE=explore``) unless ``--fixed``.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/soak_reliability.py --scale 1 --label ci --out docs/reliability.md
    HF_HUB_OFFLINE=1 python benchmarks/soak_reliability.py --scale 10 --label soak --out docs/reliability.md
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import publish

ROOT = Path(__file__).resolve().parent.parent

# check number, title, how to read the properties of its tests
CHECKS: dict[str, tuple[int, str]] = {
    "test_concurrency": (1, "Concurrency: 4 processes x 8 threads"),
    "test_crashes": (2, "Crashes: kill -9 mid-write"),
    "test_write_failures": (3, "Write failure: full disk, read-only file"),
    "test_hostile_text": (4, "Hostile text (hypothesis)"),
    "test_protocol_fuzz": (5, "Inline protocol fuzz"),
    "test_dedup_meaning": (6, "Meaning-preserving dedup"),
    "test_prompt_injection": (7, "Injection through memories"),
    "test_tenant_isolation": (8, "Tenant isolation"),
    "test_erasure": (9, "Right to erasure"),
}
UNITS = {
    "writes": "acknowledged writes", "seconds": "s of concurrent work", "kills": "kills",
    "acknowledged_live": "acknowledged memories checked", "failed_writes": "refused writes",
    "acknowledged": "writes acknowledged before the disk filled", "inputs": "generated inputs",
    "replies": "generated replies (whole + 2-3 chunkings each)", "different_pairs": "differing pairs (fingerprint)",
    "repeat_pairs": "true repeats (fingerprint)", "engine_pairs": "differing pairs stored and searched",
    "queries": "queries", "memories": "memories at the end", "files": "files read byte by byte",
    "contents": "stored texts injected", "sdk_calls": "replies through the SDK (streamed and whole)",
}


def run(scale: float, checks: list[str], fixed: bool) -> dict[str, dict[str, object]]:
    """Run the checks; per test module: outcome, seconds and recorded properties."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        env = {**os.environ, "HEADROOM_RELIABILITY_SCALE": str(scale), "HF_HUB_OFFLINE": "1"}
        if not fixed:
            env["HYPOTHESIS_PROFILE"] = "explore"
        paths = [str(ROOT / "tests" / "reliability" / f"{name}.py") for name in checks]
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "junit_family=legacy",
             f"--junitxml={report}", *paths],
            cwd=ROOT, env=env, check=False,
        )
        wall = time.perf_counter() - started
        tree = ET.parse(report)
    results: dict[str, dict[str, object]] = {}
    for case in tree.iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        name = case.get("name", "")  # the parametrised store, if the test has one
        backend = "PostgreSQL" if "[postgres" in name else "SQLite" if "[sqlite" in name else "any"
        entry = results.setdefault(f"{module}|{backend}", {"tests": 0, "failed": 0, "seconds": 0.0, "counts": {}})
        entry["tests"] += 1  # type: ignore[operator]
        entry["seconds"] += float(case.get("time", 0))  # type: ignore[operator]
        if case.find("failure") is not None or case.find("error") is not None:
            entry["failed"] += 1  # type: ignore[operator]
        for prop in case.iter("property"):
            name = prop.get("name", "")
            if name in UNITS:
                counts = entry["counts"]
                counts[name] = counts.get(name, 0) + float(prop.get("value", 0))  # type: ignore[union-attr]
    results["_run"] = {"scale": scale, "exit_code": done.returncode, "wall_seconds": round(wall, 1)}
    return results


def markdown(results: dict[str, dict[str, object]], label: str) -> str:
    meta = results["_run"]
    lines = [
        f"### {label} run (scale {meta['scale']:g}, {time.strftime('%Y-%m-%d', time.gmtime())}, "
        f"{meta['wall_seconds']:.0f} s)",
        "",
        "| # | check | store | what was tried | tests failed | lost or let through | time |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for module, (number, title) in CHECKS.items():
        for backend in ("any", "SQLite", "PostgreSQL"):
            entry = results.get(f"{module}|{backend}")
            if entry is None:
                continue
            counts = entry["counts"]
            tried = ", ".join(f"{v:,.0f} {UNITS[k]}" for k, v in counts.items()) or "fixed cases"  # type: ignore[union-attr]
            lost = "0" if not entry["failed"] else "see the failing test"
            lines.append(f"| {number} | {title} | {backend} | {tried} | {entry['failed']} of {entry['tests']} | "
                         f"{lost} | {entry['seconds']:.0f} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=10.0, help="work per check, times the CI run's")
    parser.add_argument("--label", default="soak", help="section name on the page (ci, soak, ...)")
    parser.add_argument("--checks", nargs="*", default=list(CHECKS), choices=list(CHECKS), help="modules to run")
    parser.add_argument("--fixed", action="store_true", help="the CI run's generated inputs, not new ones")
    parser.add_argument("--out", type=Path, help="markdown page to write the section into")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    args = parser.parse_args(argv)
    results = run(args.scale, args.checks, args.fixed or args.label == "ci")
    title = args.label.upper() if len(args.label) <= 3 else args.label.capitalize()
    publish(markdown(results, title), results, args.out, args.json,
            f"<!-- reliability:{args.label} start -->", f"<!-- reliability:{args.label} end -->")
    return int(results["_run"]["exit_code"])  # type: ignore[call-overload]


if __name__ == "__main__":
    raise SystemExit(main())
