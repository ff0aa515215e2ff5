"""How far re-ordering the engine's own signals can take LoCoMo recall, on held-out conversations.

Each LoCoMo conversation is stored as :mod:`locomo_eval` stores it (one memory per turn, default
embedder). For every question of categories 1-4 the engine returns its best 40 candidates with
the diversity step off, so each hit carries the fusion's own parts (:class:`SearchResult`: cosine,
keyword score, context part, common-term and time lifts, vector and keyword ranks, fused score,
position), plus three traits of its text (it ends with a question mark, its length, it shares an
image).

Leave one conversation out: a model fitted on the other conversations' candidates (label: the
candidate is one of the question's evidence turns) re-orders the held-out conversation's
candidates. Two models from scikit-learn: a logistic regression and gradient-boosted trees.
Against them: the engine's own order of the same candidates, and the engine as shipped (diversity
step on). A learned order over the same signals shows how much better those signals could be
weighed; *candidate recall* (an evidence turn among the 40: *any*; every one: *all*) bounds what
any re-ordering of them can reach.

The data (CC BY-NC 4.0) is read from its path and never copied.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/locomo_ceiling.py
    HF_HUB_OFFLINE=1 python benchmarks/locomo_ceiling.py --quick        # 2 convs, 3 sessions, 30 questions each
    HF_HUB_OFFLINE=1 python benchmarks/locomo_ceiling.py --json results.json --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import _report  # noqa: E402
import numpy as np  # noqa: E402
from locomo_eval import CATEGORIES, CATEGORY_NAMES, embedder_config, load, locomo_parser, ranks  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from headroom_integrations import MemoryEngine  # noqa: E402
from headroom_integrations.memory.models import SearchResult  # noqa: E402

MARK_START = "<!-- locomo-ceiling:start -->"
MARK_END = "<!-- locomo-ceiling:end -->"
CANDIDATES = 40
SHIPPED_TOP_K = 10
FEATURES = ("fused score", "cosine", "keyword score", "context part", "common-term part", "time part",
            "1 / vector rank", "1 / keyword rank", "1 / position", "gap to the best fused score",
            "ends with '?'", "log length", "shares an image")
_QUESTION = re.compile(r"\?\s*(\[shares an image:[^\]]*\])?\s*$")
# name -> a fresh model; fitted on other conversations' candidates, it scores a candidate's chance of being evidence
MODELS: dict[str, Callable[[], Any]] = {
    "logistic regression": lambda: LogisticRegression(C=1.0, max_iter=2000),
    "gradient-boosted trees": lambda: HistGradientBoostingClassifier(
        max_iter=150, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=50, random_state=0),
}
SYSTEMS = ("engine as shipped", "engine order, diversity off", *MODELS)


def features(position: int, hit: SearchResult, best: float) -> list[float]:
    """One candidate's features, in the order of :data:`FEATURES`."""
    text = hit.memory.content
    return [hit.fused_score, hit.score, hit.keyword_score, hit.context_part, hit.common_term_part, hit.time_part,
            1 / (hit.vector_rank or 1000), 1 / (hit.text_rank or 1000), 1 / position, hit.fused_score - best,
            float(bool(_QUESTION.search(text))), math.log(len(text)), float("[shares an image:" in text)]


def collect(conv: dict[str, Any], workdir: Path) -> tuple[list[dict[str, Any]], str]:
    """Store one conversation; per question its category, evidence, the shipped engine's ranking
    and the diversity-off candidates with their features; and the embedder's name."""
    config = embedder_config("int8", workdir / f"{conv['id']}.db")
    with MemoryEngine(config) as engine:
        engine.add_batch([{"content": content, "metadata": {"dia_id": dia},
                           **({"observed_at": conv["observed"][dia]} if dia in conv["observed"] else {})}
                          for dia, content in conv["turns"]], user_id=conv["id"])
        engine.flush()
        embedder = str(getattr(engine.embedder, "name", type(engine.embedder).__name__))
    out = []
    with MemoryEngine(config) as shipped, MemoryEngine(replace(config, diversity_weight=0.0)) as plain:
        for q in conv["questions"]:
            ask = {"user_id": conv["id"], "now": conv["now"]}
            top = shipped.search(q["question"], top_k=SHIPPED_TOP_K, **ask)
            hits = plain.search(q["question"], top_k=CANDIDATES, **ask)
            best = hits[0].fused_score if hits else 0.0
            out.append({"conversation": conv["id"], "category": q["category"], "evidence": q["evidence"],
                        "shipped": [str(h.memory.metadata.get("dia_id")) for h in top],
                        "candidates": [str(h.memory.metadata.get("dia_id")) for h in hits],
                        "features": [features(i, h, best) for i, h in enumerate(hits, start=1)]})
    return out, embedder


def held_out_orders(questions: list[dict[str, Any]], make: Callable[[], Any]) -> list[list[str]]:
    """Each question's candidates re-ordered by a model fitted on the other conversations'
    questions (the engine's order kept where the training side holds a single class)."""
    orders: list[list[str]] = []
    models: dict[str, Any] = {}
    for q in questions:
        held = q["conversation"]
        if held not in models:
            train = [t for t in questions if t["conversation"] != held]
            x = [f for t in train for f in t["features"]]
            y = [dia in t["evidence"] for t in train for dia in t["candidates"]]
            models[held] = make().fit(np.array(x), np.array(y)) if len(set(y)) == 2 else None
        model = models[held]
        if model is None or not q["candidates"]:
            orders.append(list(q["candidates"]))
            continue
        chance = model.predict_proba(np.array(q["features"]))[:, 1]
        orders.append([q["candidates"][i] for i in np.argsort(-chance, kind="stable")])
    return orders


def scores(questions: list[dict[str, Any]], orders: Sequence[Sequence[str]]) -> dict[str, dict[str, float | int]]:
    """any@5, any@10 and all@10 per category ("1".."4") and over all questions ("all")."""
    out: dict[str, dict[str, float | int]] = {}
    for key in [*map(str, CATEGORIES), "all"]:
        picked = [(q, o) for q, o in zip(questions, orders) if key == "all" or str(q["category"]) == key]
        firsts = [ranks(o, q["evidence"]) for q, o in picked]
        n = max(len(picked), 1)
        out[key] = {"questions": len(picked),
                    "any@5": round(sum(1 for f, _ in firsts if f is not None and f <= 5) / n, 3),
                    "any@10": round(sum(1 for f, _ in firsts if f is not None and f <= 10) / n, 3),
                    "all@10": round(sum(1 for _, last in firsts if last is not None and last <= 10) / n, 3)}
    return out


def candidate_recall(questions: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per category and overall: an evidence turn among the candidates (any), all of them (all)."""
    out = {}
    for key in [*map(str, CATEGORIES), "all"]:
        picked = [q for q in questions if key == "all" or str(q["category"]) == key]
        n = max(len(picked), 1)
        out[key] = {"any": round(sum(1 for q in picked if set(q["evidence"]) & set(q["candidates"])) / n, 3),
                    "all": round(sum(1 for q in picked if set(q["evidence"]) <= set(q["candidates"])) / n, 3)}
    return out


def markdown(results: dict[str, Any]) -> str:
    """The docs section."""
    s = results["settings"]
    lines = [
        "## How far re-ordering the engine's signals goes" + (" (quick run)" if s["quick"] else ""),
        "",
        f"Measured with `python benchmarks/locomo_ceiling.py`: {s['conversations']} conversation(s), "
        f"{s['questions']} questions of categories 1-4, stored as in the retrieval benchmark above. For each "
        f"question the engine's best {CANDIDATES} candidates (diversity step off) are re-ordered by a model "
        "fitted on the *other* conversations' candidates (leave one conversation out; label: the candidate is "
        f"an evidence turn) from {len(FEATURES)} features: the parts the engine scores by ("
        + ", ".join(FEATURES[:10]) + ") and three traits of the text (" + ", ".join(FEATURES[10:]) + ").",
        "",
        "| order | " + " | ".join(f"cat {c} ({CATEGORY_NAMES[c]}) any@5" for c in CATEGORIES)
        + " | any@5 | any@10 | multi-hop all@10 |",
        "|---|" + "---:|" * (len(CATEGORIES) + 3),
    ]
    for system in SYSTEMS:
        r = results["systems"][system]
        lines.append(f"| {system} | " + " | ".join(f"{r[str(c)]['any@5']:.3f}" for c in CATEGORIES)
                     + f" | {r['all']['any@5']:.3f} | {r['all']['any@10']:.3f} | {r['1']['all@10']:.3f} |")
    recall = results["candidate_recall"]
    lines.append(f"| *candidate recall@{CANDIDATES} (any; last column: all)* | " + " | ".join(
        f"*{recall[str(c)]['any']:.3f}*" for c in CATEGORIES) + f" | *{recall['all']['any']:.3f}* | | "
        f"*{recall['1']['all']:.3f}* |")
    lines += [
        "",
        "The learned orders use exactly what the engine already computes for its candidates. What they gain "
        "over the engine's own order is what better weighing of those signals could still buy; the candidate "
        "recall row is the most any re-ordering of them could reach.",
        "",
        f"Time: {results['time_s']:.0f} s on {s['machine']}, Python {s['python']}; embedder {s['embedder']}.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    return locomo_parser(__doc__).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the probe and publish it."""
    args = parse_args(argv)
    path = Path(args.data)
    if not path.is_file():
        print(f"LoCoMo data not found: {path}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    questions: list[dict[str, Any]] = []
    embedder = ""
    with tempfile.TemporaryDirectory(prefix="locomo-ceiling-") as tmp:
        conversations = load(path, args.quick)
        for conv in conversations:
            asked, embedder = collect(conv, Path(tmp))
            questions += asked
            print(f"{conv['id']}: {len(asked)} questions", file=sys.stderr)
    orders = {"engine as shipped": [q["shipped"] for q in questions],
              "engine order, diversity off": [q["candidates"] for q in questions]}
    for name, make in MODELS.items():
        orders[name] = held_out_orders(questions, make)
    results = {
        "settings": {"data": str(path), "quick": args.quick, "conversations": len(conversations),
                     "questions": len(questions), "candidates": CANDIDATES, "features": list(FEATURES),
                     "embedder": embedder, "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU",
                     "python": platform.python_version()},
        "systems": {name: scores(questions, order) for name, order in orders.items()},
        "candidate_recall": candidate_recall(questions),
        "time_s": round(time.perf_counter() - started, 1),
    }
    _report.publish(markdown(results), results, args.out, args.json, MARK_START, MARK_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
