"""Evidence-retrieval evaluation on LoCoMo through the engine's own search.

For each LoCoMo conversation a fresh :class:`~headroom_integrations.MemoryEngine` (temporary SQLite
file) stores every dialogue turn as one memory of that conversation's user (``user_id`` = the
conversation id), as ``"[<session date>] <speaker>: <text>"`` plus the shared image's caption when
there is one, with ``metadata={"dia_id": ...}``, in one ``add_batch`` call.

Every question of categories 1-4 (category 5, adversarial, has no answer in the conversation) is
then asked over the same stored turns by:

* **engine hybrid**: ``engine.search(question, user_id=conv, top_k=25)``, the engine as shipped
  (vector + BM25 candidates, score fusion, neighbouring-turn context, near-duplicate removal);
* **BM25-only**: the engine's SQLite FTS5 ``bm25`` ranking over the same full-text index, with the
  engine's query normalisation (:func:`headroom_integrations.memory.text_query.query_terms`) and
  every query term kept (no postings budget, no common-term filter);
* **dense-only**: exact cosine between the question and the vectors the engine stored;
* **embedder variants**: engine hybrid and dense-only again with the local MiniLM on
  the full-precision (fp32) ONNX export (``local_runtime="onnx"``) and on sentence-transformers/torch;
  the default is the int8 (dynamically quantised, per-channel) copy of the ONNX export, which a new
  store gets (``local_runtime="auto"``);
* **fusion ablation**: engine hybrid with parts of the fusion switched off (equal weights, no
  neighbouring-turn context, no common-term filter), each through a config option;
* **held-out validation** of every tuned retrieval knob (:data:`GRID`: ``vector_weight`` with
  ``text_weight = 1 - vector_weight``, ``context_weight``, ``context_span``, ``common_term_weight``,
  ``time_weight``, ``diversity_weight``):
  for each conversation the grid point that does best on
  the *other four* (any@5 + any@10) is scored on that conversation; the pooled figures show what
  the defaults are worth on data they were not chosen on.

Hits are mapped back to ``dia_id`` and scored against the question's evidence ids:
``recall_any@k`` (at least one evidence turn in the top k) and ``recall_all@k`` (every evidence turn
in the top k), k = 1, 5, 10, 25, overall and per category. Evidence lists are normalised (``"D8:6;
D9:17"`` is split, ``"D:11:26"`` read as ``D11:26``); ids that name no turn are dropped and a
question left without evidence is skipped (both counted in the output).

The data (CC BY-NC 4.0) is read from its path and never copied.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/locomo_eval.py                       # everything above
    HF_HUB_OFFLINE=1 python benchmarks/locomo_eval.py --quick               # 2 convs, 3 sessions, 30 questions each
    HF_HUB_OFFLINE=1 python benchmarks/locomo_eval.py --json results.json --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tqdm import tqdm  # noqa: E402

from headroom_integrations import MemoryConfig, MemoryEngine  # noqa: E402
from headroom_integrations.memory.backends import MemoryBackend, SearchScope  # noqa: E402
from headroom_integrations.memory.text_query import query_terms  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "locomo" / "locomo_dev.json"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _report when imported from elsewhere
import _report  # noqa: E402

MARK_START = "<!-- locomo:start -->"
MARK_END = "<!-- locomo:end -->"
KS = (1, 5, 10, 25)
TOP_K = max(KS)
CATEGORIES = (1, 2, 3, 4)
# The category numbers as the LoCoMo release uses them (names as commonly read from the data).
CATEGORY_NAMES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
TARGETS = {"any@5": 0.65, "any@10": 0.75}
REFERENCE = "MiniLM, measured elsewhere on this data: plain BM25 any@5 0.502, dense 0.470, plain RRF 0.549"
QUICK_CONVERSATIONS = 2
QUICK_SESSIONS = 3
QUICK_QUESTIONS = 30
EMBEDDERS = ("int8", "fp32", "torch")  # the first one is the default
EMBEDDER_LABELS = {"int8": "ONNX int8 (default)", "fp32": "ONNX fp32", "torch": "sentence-transformers (torch)"}
RUNTIMES = {"int8": "onnx-int8", "fp32": "onnx", "torch": "torch"}  # variant -> MemoryConfig.local_runtime
# Fusion ablation: (label, config overrides) over the default embedder; the last one is the default.
ABLATION = (
    ("no neighbouring-memory context", {"context_weight": 0.0}),
    ("one neighbour on each side (context_span 1)", {"context_span": 1}),
    ("vector 0.6 / text 0.4", {"vector_weight": 0.6, "text_weight": 0.4}),
    ("without the common-term filter", {"text_max_share": 1.0}),
    ("no common-term lift", {"common_term_weight": 0.0}),
    ("no time lift", {"time_weight": 0.0}),
    ("no diversity step", {"diversity_weight": 0.0}),
    ("defaults (vector 0.5 / text 0.5, context 0.5 over two neighbours each side, common-term lift 0.2, "
     "time lift 0.1, diversity 0.1)", {}),
)
# The held-out grid: every tuned retrieval knob, as MemoryConfig fields (text_weight = 1 - vector_weight).
# (vector_weight 0.6/0.7 and context_weight 0/0.25 were never chosen by a fold in earlier runs; the lifts'
# middle values, common_term_weight 0.1 and diversity_weight 0.2, were left out when context_span joined,
# to keep the grid at 64 points.)
GRID = {
    "vector_weight": (0.4, 0.5),
    "context_weight": (0.5, 0.75),
    "context_span": (1, 2),
    "common_term_weight": (0.0, 0.2),
    "time_weight": (0.0, 0.1),
    "diversity_weight": (0.0, 0.1),
}
GRID_SHORT = {"vector_weight": "vw", "context_weight": "cw", "context_span": "cs", "common_term_weight": "ctw",
              "time_weight": "tw", "diversity_weight": "dw"}
# What each new knob bought on the held-out folds: the folds choose within a part of the grid.
GRID_STEPS = (
    ("fusion weights and context only (the knobs before issue 17)",
     {"context_span": 1, "common_term_weight": 0.0, "time_weight": 0.0, "diversity_weight": 0.0}),
    ("+ common-term lift", {"context_span": 1, "time_weight": 0.0, "diversity_weight": 0.0}),
    ("+ time lift", {"context_span": 1, "diversity_weight": 0.0}),
    ("+ diversity step", {"context_span": 1}),
    ("+ two neighbours on each side as context (every knob)", {}),
)
# Earlier engine versions, measured with this script on the same data (git history of this file's
# results); kept so the table shows what each change bought.
HISTORY = (
    ("reciprocal-rank fusion (k=60, equal weights), normalised + stemmed BM25", 0.624, 0.705),
    ("+ query terms found in more than half of the memories left out of BM25", 0.636, 0.722),
    ("+ score fusion with neighbouring-turn context (the engine before the two lifts)", 0.720, 0.816),
)

_EVIDENCE = re.compile(r"D:?(\d+):(\d+)")


# -- data ----------------------------------------------------------------------------------------------


def sessions(conversation: dict[str, Any]) -> list[int]:
    """The session numbers of a conversation, in order."""
    found = []
    for key, value in conversation.items():
        match = re.fullmatch(r"session_(\d+)", key)
        if match and isinstance(value, list):
            found.append(int(match.group(1)))
    return sorted(found)


def turn_text(turn: dict[str, Any], date: str) -> str:
    """What is stored for one turn."""
    text = f"[{date}] {turn['speaker']}: {turn.get('text', '')}".rstrip()
    caption = turn.get("blip_caption")
    if caption:
        text += f" [shares an image: {caption}]"
    return text


def evidence_ids(raw: Sequence[str]) -> list[str]:
    """Normalised evidence ids (``"D8:6; D9:17"`` -> two ids, ``"D:11:26"`` -> ``D11:26``), in order."""
    out: list[str] = []
    for item in raw:
        for session, turn in _EVIDENCE.findall(str(item)):
            dia = f"D{int(session)}:{int(turn)}"
            if dia not in out:
                out.append(dia)
    return out


def session_time(text: str) -> datetime | None:
    """A LoCoMo session date (``"1:56 pm on 8 May, 2023"``) as a UTC time; None if it reads otherwise."""
    try:
        return datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def load(path: Path, quick: bool) -> list[dict[str, Any]]:
    """Conversations as ``{"id", "turns": [(dia_id, content)], "observed": {dia_id: time}, "now": time,
    "questions": [...], "dropped": {...}}`` (``now``: the day after the last session, when the
    questions are asked)."""
    data = json.loads(path.read_text())
    if quick:
        data = data[:QUICK_CONVERSATIONS]
    out = []
    for sample in data:
        conv = sample["conversation"]
        numbers = sessions(conv)[:QUICK_SESSIONS] if quick else sessions(conv)
        turns, observed = [], {}
        for n in numbers:
            date = conv.get(f"session_{n}_date_time", "")
            turns.extend((t["dia_id"], turn_text(t, date)) for t in conv[f"session_{n}"])
            when = session_time(date)
            if when is not None:
                observed.update((t["dia_id"], when) for t in conv[f"session_{n}"])
        known = {dia for dia, _ in turns}
        questions, dropped_ids, no_evidence = [], 0, 0
        for index, qa in enumerate(sample["qa"]):
            if qa.get("category") not in CATEGORIES:
                continue
            ids = evidence_ids(qa.get("evidence", []))
            kept = [i for i in ids if i in known]
            dropped_ids += len(ids) - len(kept) + sum(1 for e in qa.get("evidence", []) if not _EVIDENCE.search(e))
            if not kept:
                no_evidence += 1
                continue
            questions.append({"index": index, "question": qa["question"], "category": qa["category"],
                              "evidence": kept})
        if quick:
            questions = questions[:QUICK_QUESTIONS]
        last = max(observed.values(), default=datetime.now(timezone.utc))
        out.append({"id": sample["sample_id"], "turns": turns, "observed": observed, "questions": questions,
                    "now": (last + timedelta(days=1)).replace(hour=0, minute=0),
                    "dropped": {"evidence_ids": dropped_ids, "questions_without_evidence": no_evidence}})
    return out


# -- embedders ----------------------------------------------------------------------------------------


POSTGRES: dict[str, Any] = {}  # with --backend postgres: the server's URL ("url") and the schemas made


def embedder_config(name: str, db: Path, **overrides: Any) -> MemoryConfig:
    """The engine config of one embedder variant (``overrides`` are fusion settings): a SQLite file
    ``db``, or with ``--backend postgres`` a fresh PostgreSQL schema named after it."""
    if "url" not in POSTGRES:
        return MemoryConfig(db_path=str(db), local_runtime=RUNTIMES[name], **overrides)
    import sqlalchemy

    schema = "l_" + re.sub(r"\W", "_", db.stem).lower()
    if schema not in POSTGRES.setdefault("schemas", set()):
        admin = sqlalchemy.create_engine(POSTGRES["url"].replace("postgresql://", "postgresql+psycopg://", 1),
                                         poolclass=sqlalchemy.NullPool)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        admin.dispose()
        POSTGRES["schemas"].add(schema)
    url = POSTGRES["url"] + ("&" if "?" in POSTGRES["url"] else "?") + f"options=-csearch_path%3D{schema}%2Cpublic"
    return MemoryConfig(db_url=url, local_runtime=RUNTIMES[name], **overrides)


# -- evaluation ---------------------------------------------------------------------------------------


def ranks(ranked: Sequence[str], evidence: Sequence[str]) -> tuple[int | None, int | None]:
    """1-based rank of the first evidence turn found and of the last one (None if any is missing)."""
    position: dict[str, int] = {}
    for rank, dia in enumerate(ranked, start=1):
        position.setdefault(dia, rank)
    found = [position[e] for e in evidence if e in position]
    first = min(found) if found else None
    last = max(found) if len(found) == len(evidence) else None
    return first, last


def grid_points(quick: bool = False) -> list[dict[str, float]]:
    """Every point of the held-out grid as config overrides (``quick``: the first two values of each knob)."""
    values = [options[:2] if quick else options for options in GRID.values()]
    return [dict(zip(GRID, point)) for point in itertools.product(*values)]


def grid_key(point: dict[str, float]) -> str:
    """The name of one validation grid point (``vw=0.5,cw=0.5,ctw=0.1,tw=0``)."""
    return ",".join(f"{GRID_SHORT[name]}={point[name]:g}" for name in GRID)


def grid_value(key: str, name: str) -> float:
    """One knob's value in a grid point's name."""
    return float(dict(part.split("=") for part in key.split(","))[GRID_SHORT[name]])


def hybrid_rankings(config: MemoryConfig, conv: dict[str, Any], progress: bool, desc: str) -> list[list[str]]:
    """``engine.search`` over a stored conversation with this config: ranked dia ids per question."""
    out = []
    with MemoryEngine(config) as engine:
        for q in tqdm(conv["questions"], desc=desc, unit="q", leave=False, disable=not progress, file=sys.stderr):
            hits = engine.search(q["question"], user_id=conv["id"], top_k=TOP_K, now=conv["now"])
            out.append([str(h.memory.metadata.get("dia_id")) for h in hits])
    return out


def store_conversation(config: MemoryConfig, conv: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """Store every turn; return the time it took and the baselines' rankings (BM25, dense)."""
    user = conv["id"]
    started = time.perf_counter()
    with MemoryEngine(config) as engine:
        engine.add_batch(
            [{"content": content, "metadata": {"dia_id": dia},
              **({"observed_at": conv["observed"][dia]} if dia in conv["observed"] else {})}
             for dia, content in conv["turns"]], user_id=user
        )
        engine.flush()
        add_s = time.perf_counter() - started
        backend = engine.backend
        stored = [(m.metadata.get("dia_id"), vector) for batch in backend.dump() for m, vector in batch
                  if m.user_id == user and vector is not None]
        dias = [dia for dia, _ in stored]
        matrix = np.stack([vector for _, vector in stored])
        questions = [q["question"] for q in conv["questions"]]
        query_vectors = engine.embedder.embed(questions) if questions else np.zeros((0, matrix.shape[1]))
        dense = [[dias[i] for i in np.argsort(-(matrix @ np.asarray(v)), kind="stable")[:TOP_K]]
                 for v in query_vectors]
        bm25 = []
        for question in questions:
            ranked = [pk for pk, _ in keyword_ranking(backend, user, question)]
            rows = backend.rows(ranked)
            bm25.append([rows[pk].memory.metadata.get("dia_id") for pk in ranked if pk in rows])
        name = str(getattr(engine.embedder, "name", type(engine.embedder).__name__))
    return add_s, {"dense": dense, "bm25": bm25, "embedder": name}


def keyword_ranking(backend: MemoryBackend, user: str, question: str) -> list[tuple[int, float]]:
    """The BM25-only baseline: every query term kept (no postings budget, no common-term filter)."""
    query = backend.keyword_query(query_terms(question), postings_budget=10**9, max_share=1.0)
    return backend.keyword_search(query, SearchScope(user), TOP_K) if query is not None else []


def evaluate_conversation(
    conv: dict[str, Any], workdir: Path, embedders: Sequence[str], full: bool, progress: bool, quick: bool = False
) -> dict[str, Any]:
    """Every system of the module doc over one conversation: per-question ranks and grid counts."""
    rankings: dict[str, list[list[str]]] = {}
    timings: dict[str, float] = {}
    grid: dict[str, dict[str, int]] = {}
    embedder_names = {}
    for variant in embedders:
        db = workdir / f"{conv['id']}-{variant}.db"
        add_s, base = store_conversation(embedder_config(variant, db), conv)
        timings[f"add@{variant}"] = round(add_s, 3)
        embedder_names[variant] = base["embedder"]
        suffix = "" if variant == embedders[0] else f"@{variant}"
        rankings["dense" + suffix] = base["dense"]
        if not suffix:
            rankings["bm25"] = base["bm25"]
        t0 = time.perf_counter()
        desc = f"{conv['id']} {variant}"
        rankings["hybrid" + suffix] = hybrid_rankings(embedder_config(variant, db), conv, progress, desc)
        timings[f"search@{variant}"] = round(time.perf_counter() - t0, 3)
        if suffix or not full:
            continue
        for label, overrides in ABLATION[:-1]:
            config = embedder_config(variant, db, **overrides)
            rankings[f"ablation:{label}"] = hybrid_rankings(config, conv, progress, label)
        for point in grid_points(quick):
            config = embedder_config(variant, db, text_weight=round(1 - point["vector_weight"], 6), **point)
            ranked = hybrid_rankings(config, conv, progress, grid_key(point))
            # per question: (rank of the first evidence turn, rank by which every one was found)
            grid[grid_key(point)] = [list(ranks(r, q["evidence"])) for r, q in zip(ranked, conv["questions"])]
    rows = []
    for i, q in enumerate(conv["questions"]):
        row = {"conversation": conv["id"], "qa_index": q["index"], "category": q["category"], "evidence": q["evidence"]}
        for system, ranked in rankings.items():
            first, last = ranks(ranked[i], q["evidence"])
            row[system] = {"first_rank": first, "all_rank": last, "hits": len(ranked[i])}
        rows.append(row)
    return {
        "conversation": conv["id"], "embedders": embedder_names, "turns": len(conv["turns"]), "questions": len(rows),
        "dropped": conv["dropped"], "timings_s": timings, "grid": grid, "rows": rows,
    }


def recall(rows: Sequence[dict[str, Any]], system: str) -> dict[str, float | int]:
    """recall_any@k and recall_all@k over some questions."""
    n = len(rows)
    out: dict[str, float | int] = {"n": n}
    for k in KS:
        any_hits = sum(1 for r in rows if r[system]["first_rank"] is not None and r[system]["first_rank"] <= k)
        all_hits = sum(1 for r in rows if r[system]["all_rank"] is not None and r[system]["all_rank"] <= k)
        out[f"any@{k}"] = any_hits / n if n else 0.0
        out[f"all@{k}"] = all_hits / n if n else 0.0
    return out


def _order(system: str) -> tuple[int, int, int]:
    """Table order: the three main systems, then the embedder variants, then the ablation rows."""
    if system.startswith("ablation:"):
        labels = [label for label, _ in ABLATION]
        return 2, labels.index(system.split(":", 1)[1]), 0
    base, _, variant = system.partition("@")
    main = ("hybrid", "bm25", "dense")
    return (1 if variant else 0), (EMBEDDERS.index(variant) if variant else 0), main.index(base)


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Overall and per-category recall of every system."""
    systems = sorted((key for key in rows[0] if isinstance(rows[0][key], dict)), key=_order) if rows else []
    return {
        system: {
            "overall": recall(rows, system),
            "per_category": {str(c): recall([r for r in rows if r["category"] == c], system) for c in CATEGORIES},
        }
        for system in systems
    }


HELD_OUT_METRICS = ("any@5", "any@10", "all@10")


def _hits(pairs: Sequence[Sequence[int | None]], metric: str) -> int:
    """How many questions meet ``metric`` (``any@k``: first evidence rank <= k; ``all@k``: every one)."""
    kind, k = metric.split("@")
    position = 0 if kind == "any" else 1
    return sum(1 for pair in pairs if pair[position] is not None and pair[position] <= int(k))


def held_out(per_conv: Sequence[dict[str, Any]], fixed: dict[str, float] | None = None) -> dict[str, Any] | None:
    """Leave-one-conversation-out choice of the retrieval knobs (see the module doc): each
    conversation is scored at the grid point that did best (any@5 + any@10) on the other four,
    overall and per category (any@5, any@10, all@10). ``fixed``: choose only among the points with
    these knob values (what the folds get without a knob)."""
    if len(per_conv) < 2 or not all(c["grid"] for c in per_conv):
        return None
    keys = [key for key in per_conv[0]["grid"]
            if all(grid_value(key, name) == value for name, value in (fixed or {}).items())]
    folds, chosen_pairs = [], []  # chosen_pairs: (category, (first, all)) of every held-out question
    for held in per_conv:
        train = [c for c in per_conv if c is not held]

        def score(key: str, train: list[dict[str, Any]] = train) -> int:
            return sum(_hits(c["grid"][key], "any@5") + _hits(c["grid"][key], "any@10") for c in train)

        best = max(keys, key=score)
        got = held["grid"][best]
        categories = [row["category"] for row in held["rows"]]
        chosen_pairs += list(zip(categories, got))
        folds.append({"held_out": held["conversation"], "chosen": best, "questions": held["questions"],
                      **{m: _hits(got, m) / held["questions"] for m in HELD_OUT_METRICS}})

    def pooled(pairs: list[tuple[int, Sequence[int | None]]]) -> dict[str, float | int]:
        ranked = [pair for _, pair in pairs]
        return {"n": len(ranked), **{m: _hits(ranked, m) / len(ranked) if ranked else 0.0 for m in HELD_OUT_METRICS}}

    n = sum(c["questions"] for c in per_conv)
    grid_all = {key: {m: sum(_hits(c["grid"][key], m) for c in per_conv) / n for m in HELD_OUT_METRICS}
                for key in keys}
    result = {"folds": folds, "pooled": pooled(chosen_pairs),
              "per_category": {str(c): pooled([p for p in chosen_pairs if p[0] == c]) for c in CATEGORIES},
              "grid": grid_all}
    if fixed is None:
        steps = [(label, held_out(per_conv, part)) for label, part in GRID_STEPS]
        result["steps"] = [{"label": label, "pooled": step["pooled"], "per_category": step["per_category"]}
                           for label, step in steps if step is not None]
    return result


# -- report -------------------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def system_label(system: str) -> str:
    """How a system key reads in the tables."""
    base, _, variant = system.partition("@")
    label = {"hybrid": "engine hybrid", "bm25": "BM25-only", "dense": "dense-only"}.get(base, base)
    return f"{label} ({variant})" if variant else label


def chart(results: dict[str, Any], path: Path) -> None:
    """A bar chart of recall_any@k per system (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [s for s in results["summary"] if not s.startswith("ablation:")]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(systems)
    for i, system in enumerate(systems):
        values = [results["summary"][system]["overall"][f"any@{k}"] for k in KS]
        ax.bar([x + i * width for x in range(len(KS))], values, width, label=system_label(system))
    for key, goal in TARGETS.items():
        x = KS.index(int(key.split("@")[1]))
        ax.hlines(goal, x - 0.1, x + 0.9, colors="black", linestyles="dashed", linewidth=1)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(KS))], [f"any@{k}" for k in KS])
    ax.set_ylim(0, 1)
    ax.set_ylabel("recall (share of questions)")
    ax.set_title(f"LoCoMo evidence retrieval, {results['settings']['questions']} questions (dashed: targets)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _recall_table(results: dict[str, Any], systems: Sequence[str]) -> list[str]:
    summary = results["summary"]
    counts = {str(c): summary["hybrid"]["per_category"][str(c)]["n"] for c in CATEGORIES}
    cat_heads = [f"cat {c} any@5 (n={counts[str(c)]})" for c in CATEGORIES]
    heads = ["system", "any@1", "any@5", "any@10", "any@25", "all@5", "all@10", *cat_heads]
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join(["---"] + ["---:"] * (len(heads) - 1)) + "|"]
    for system in systems:
        o = summary[system]["overall"]
        cells = [system_label(system), *(_fmt(o[f"any@{k}"]) for k in KS), _fmt(o["all@5"]), _fmt(o["all@10"])]
        cells += [_fmt(summary[system]["per_category"][str(c)]["any@5"]) for c in CATEGORIES]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(results: dict[str, Any], chart_link: str | None = None) -> str:
    """The markdown section (without the markers)."""
    s = results["settings"]
    summary = results["summary"]
    main = [k for k in summary if k in ("hybrid", "bm25", "dense")]
    variants = [k for k in summary if "@" in k]
    lines = [
        "## LoCoMo evidence retrieval" + (" (quick run)" if s["quick"] else ""),
        "",
        f"{s['conversations']} conversation(s) ({', '.join(s['conversation_ids'])}), {s['turns']} turns stored, "
        f"{s['questions']} questions of categories 1-4 (category 5 left out; "
        f"{s['questions_without_evidence']} without evidence among the stored turns skipped). Each turn is one memory "
        f"`\"[<session date>] <speaker>: <text>\"` (+ image caption) of the conversation's user; main embedder "
        f"`{s['embedder']}` ({EMBEDDER_LABELS[s['embedders'][0]]}). A question counts for *any@k* when at least "
        "one of its evidence turns is in the top k, for *all@k* when every one is.",
        "",
        *_recall_table(results, main + variants),
    ]
    hybrid = summary["hybrid"]["overall"]
    verdicts = ", ".join(
        f"{key} ≥ {goal:.2f}: {_fmt(hybrid[key])} ({'met' if hybrid[key] >= goal else 'not met'})"
        for key, goal in TARGETS.items()
    )
    lines += [
        "",
        "Categories: " + ", ".join(f"{c} = {name}" for c, name in CATEGORY_NAMES.items()) + ".",
        "",
        f"Targets (engine hybrid): {verdicts}. Reference ({REFERENCE}).",
        "",
        "- *engine hybrid*: `engine.search(question, user_id=conv, top_k=25)` as shipped.",
        "- *BM25-only*: SQLite FTS5 `bm25` over the engine's full-text index, the engine's query "
        "normalisation, every query term.",
        "- *dense-only*: exact cosine over the engine's stored turn vectors.",
    ]
    if variants:
        lines.append("- *(fp32)*, *(torch)*: the same with the local MiniLM in full precision: its ONNX export "
                     "(`local_runtime=\"onnx\"`) and sentence-transformers/torch. The default is the int8 copy "
                     "of the ONNX export (weights quantised per channel), which every new store gets.")
    if chart_link:
        lines += ["", f"![LoCoMo recall per system]({chart_link})"]
    ablation = [k for k in summary if k.startswith("ablation:")]
    if ablation:
        lines += [
            "", "### What each retrieval change bought (engine hybrid)", "",
            "| engine | any@5 | any@10 |", "|---|---:|---:|",
            *(f"| {label} (earlier version) | {a5:.3f} | {a10:.3f} |" for label, a5, a10 in HISTORY),
        ]
        for key in ablation:
            o = summary[key]["overall"]
            lines.append(f"| score fusion: {key.split(':', 1)[1]} | {_fmt(o['any@5'])} | {_fmt(o['any@10'])} |")
        lines.append(f"| score fusion: {ABLATION[-1][0]} | {_fmt(hybrid['any@5'])} | {_fmt(hybrid['any@10'])} |")
    validation = results.get("held_out")
    if validation:
        pooled = validation["pooled"]
        lines += [
            "", "### Held-out check of the retrieval knobs", "",
            "Grid: " + ", ".join(f"`{name}` in {list(values)}" for name, values in GRID.items())
            + " (`text_weight = 1 - vector_weight`). For each conversation, the grid point with the best "
            "any@5 + any@10 on the other four is scored on it:", "",
            "| held-out conversation | chosen on the other four | any@5 | any@10 |", "|---|---|---:|---:|",
            *(f"| {f['held_out']} | `{f['chosen']}` | {_fmt(f['any@5'])} | {_fmt(f['any@10'])} |"
              for f in validation["folds"]),
            f"| **pooled ({pooled['n']} questions)** | | **{_fmt(pooled['any@5'])}** | **{_fmt(pooled['any@10'])}** |",
            "",
            "Per category on the held-out folds (each question scored with the settings chosen without its "
            "conversation):", "",
            "| category | questions | any@5 | any@10 | all@10 |", "|---|---:|---:|---:|---:|",
            *(f"| {c} ({CATEGORY_NAMES[int(c)]}) | {v['n']} | {_fmt(v['any@5'])} | {_fmt(v['any@10'])} | "
              f"{_fmt(v['all@10'])} |" for c, v in validation["per_category"].items()),
            f"| all | {pooled['n']} | {_fmt(pooled['any@5'])} | {_fmt(pooled['any@10'])} | {_fmt(pooled['all@10'])} |",
            "",
            "What each knob bought on the held-out folds (the folds choose only within that part of the grid), "
            "any@5 overall and per category, all@10 of multi-hop:", "",
            "| knobs the folds may tune | any@5 | " + " | ".join(f"{CATEGORY_NAMES[c]} any@5" for c in CATEGORIES)
            + " | multi-hop all@10 |",
            "|---|" + "---:|" * (len(CATEGORIES) + 2),
            *(f"| {step['label']} | {_fmt(step['pooled']['any@5'])} | "
              + " | ".join(_fmt(step["per_category"][str(c)]["any@5"]) for c in CATEGORIES)
              + f" | {_fmt(step['per_category']['1']['all@10'])} |" for step in validation.get("steps", [])),
            "",
            "Best grid points on all five conversations (any@5 / any@10 / all@10):", "",
            "| grid point | any@5 | any@10 | all@10 |", "|---|---:|---:|---:|",
        ]
        best = sorted(validation["grid"].items(), key=lambda kv: -(kv[1]["any@5"] + kv[1]["any@10"]))[:8]
        lines += [f"| `{key}` | {_fmt(v['any@5'])} | {_fmt(v['any@10'])} | {_fmt(v['all@10'])} |" for key, v in best]
    t, main = results["timings_s"], s["embedders"][0]
    lines += [
        "",
        f"Time: {results['time_s']:.1f} s in all (storing the turns with the main embedder "
        f"{t.get(f'add@{main}', 0.0):.1f} s, its {s['questions']} hybrid searches "
        f"{t.get(f'search@{main}', 0.0):.1f} s) "
        f"on {s['machine']}, Python {s['python']}.",
        "",
    ]
    return "\n".join(lines)


# -- command line -------------------------------------------------------------------------------------


DATASET_FIELDS = ("category", "evidence")
"""Per-question fields that are the dataset's own annotations: the raw results written to a file
(which may be committed) leave them out, keeping ``conversation`` and ``qa_index`` to find them in
the data (CC BY-NC 4.0, read from its path, never copied)."""


def without_dataset_fields(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-question rows without :data:`DATASET_FIELDS`.

    Example:
        >>> without_dataset_fields([{"conversation": "conv-1", "qa_index": 3, "category": 2, "evidence": ["D1:3"]}])
        [{'conversation': 'conv-1', 'qa_index': 3}]
    """
    return [{k: v for k, v in row.items() if k not in DATASET_FIELDS} for row in rows]


def locomo_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every LoCoMo script shares: the data path, ``--quick``, ``--json`` and
    ``--out`` (``doc``: the script's docstring, whose first paragraph describes it)."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("data", nargs="?", default=str(DEFAULT_DATA), help=f"LoCoMo json (default {DEFAULT_DATA})")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_CONVERSATIONS} conversations, {QUICK_SESSIONS} sessions, "
                        f"{QUICK_QUESTIONS} questions each")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--out", type=Path, help="write/replace the marked markdown section of this file")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("data", nargs="?", default=str(DEFAULT_DATA), help=f"LoCoMo json (default {DEFAULT_DATA})")
    parser.add_argument("--quick", action="store_true",
                        help=f"first {QUICK_CONVERSATIONS} conversations only: their first {QUICK_SESSIONS} sessions "
                        f"and the first {QUICK_QUESTIONS} questions whose evidence lies in them; default embedder")
    parser.add_argument("--embedders", default=None,
                        help=f"comma-separated embedder variants among {', '.join(EMBEDDERS)} "
                        f"(default: all; --quick: {EMBEDDERS[0]}); the first one is the main one")
    parser.add_argument("--no-ablation", action="store_true", help="skip the fusion ablation and held-out grid")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--out", type=Path, help="write/replace the marked markdown section of this file")
    parser.add_argument("--chart", type=Path, help="the PNG chart (default: img/locomo_recall.png beside --out)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite",
                        help="store the conversations on SQLite files (default) or on a PostgreSQL from pgserver")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    path = Path(args.data)
    if not path.is_file():
        print(f"LoCoMo data not found: {path}", file=sys.stderr)
        return 2
    embedders = tuple((args.embedders or (EMBEDDERS[0] if args.quick else ",".join(EMBEDDERS))).split(","))
    unknown = [e for e in embedders if e not in EMBEDDERS]
    if unknown:
        print(f"unknown embedder variant(s) {unknown}; expected some of {EMBEDDERS}", file=sys.stderr)
        return 2
    full = not args.no_ablation
    started = time.perf_counter()
    conversations = load(path, args.quick)
    per_conv = []
    with tempfile.TemporaryDirectory(prefix="locomo-") as tmp:
        if args.backend == "postgres":
            import pgserver

            server = pgserver.get_server(Path(tmp) / "pg", cleanup_mode="stop")
            server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
            POSTGRES["url"] = server.get_uri()
        for conv in conversations:
            result = evaluate_conversation(conv, Path(tmp), embedders, full, not args.no_progress, args.quick)
            per_conv.append(result)
            print(f"{result['conversation']}: {result['turns']} turns, {result['questions']} questions, "
                  f"timings {result['timings_s']}", file=sys.stderr)
        if "url" in POSTGRES:
            server.cleanup()
            POSTGRES.clear()
    elapsed = time.perf_counter() - started
    rows = [row for c in per_conv for row in c["rows"]]
    timings: dict[str, float] = {}
    for c in per_conv:
        for key, value in c["timings_s"].items():
            timings[key] = round(timings.get(key, 0.0) + value, 3)
    results = {
        "settings": {
            "data": str(path), "quick": args.quick, "top_k": TOP_K, "ks": list(KS), "embedders": list(embedders),
            "conversations": len(per_conv), "conversation_ids": [c["conversation"] for c in per_conv],
            "turns": sum(c["turns"] for c in per_conv), "questions": len(rows),
            "questions_without_evidence": sum(c["dropped"]["questions_without_evidence"] for c in per_conv),
            "evidence_ids_dropped": sum(c["dropped"]["evidence_ids"] for c in per_conv),
            "embedder": per_conv[0]["embedders"][embedders[0]] if per_conv else "",
            "backend": args.backend,
            "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU",
            "python": platform.python_version(),
        },
        "targets": TARGETS,
        "reference": REFERENCE,
        "summary": summarise(rows),
        "held_out": held_out(per_conv),
        "time_s": round(elapsed, 2),
        "timings_s": timings,
        # each conversation without its rows and grid (their figures are in summary and held_out)
        "conversations": [{k: v for k, v in c.items() if k not in ("rows", "grid")} for c in per_conv],
        "rows": without_dataset_fields(rows),
    }
    chart_path = args.chart or (args.out.parent / "img" / "locomo_recall.png" if args.out else None)
    link = None
    if chart_path is not None:
        chart(results, chart_path)
        print(f"wrote {chart_path}", file=sys.stderr)
        if args.out is not None:
            link = os.path.relpath(chart_path, args.out.parent)
    _report.publish(markdown(results, link), results, args.out, args.json, MARK_START, MARK_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
