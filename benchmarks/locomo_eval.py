"""Evidence-retrieval evaluation on LoCoMo through the engine's own search.

For each LoCoMo conversation a fresh :class:`~headroom_integrations.MemoryEngine` (temporary SQLite
file, default local MiniLM embedder) stores every dialogue turn as one memory of that conversation's
user (``user_id`` = the conversation id), as ``"[<session date>] <speaker>: <text>"`` plus the shared
image's caption when there is one, with ``metadata={"dia_id": ...}``, in one ``add_batch`` call.

Every question of categories 1-4 (category 5, adversarial, has no answer in the conversation) is
then asked three ways over the same stored turns:

* **engine hybrid**: ``engine.search(question, user_id=conv, top_k=25)``, the engine as shipped
  (vector + BM25 candidates, reciprocal-rank fusion, near-duplicate removal);
* **BM25-only**: the engine's SQLite FTS5 ``bm25`` ranking over the same full-text index, with the
  engine's query normalisation (:func:`headroom_integrations.memory.text_query.query_terms`) and
  every query term kept (no postings budget);
* **dense-only**: exact cosine between the question (``engine.embedder.embed``) and the vectors the
  engine stored for the turns (the same embedder's output).

Hits are mapped back to ``dia_id`` and scored against the question's evidence ids:
``recall_any@k`` (at least one evidence turn in the top k) and ``recall_all@k`` (every evidence turn
in the top k), k = 1, 5, 10, 25, overall and per category. Evidence lists are normalised (``"D8:6;
D9:17"`` is split, ``"D:11:26"`` read as ``D11:26``); ids that name no turn are dropped and a
question left without evidence is skipped (both counted in the output).

Only the figures are reported; the engine is not tuned here. The data (CC BY-NC 4.0) is read from
its path and never copied.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/locomo_eval.py                       # all conversations
    HF_HUB_OFFLINE=1 python benchmarks/locomo_eval.py --quick               # conv 1, 3 sessions, 30 questions
    HF_HUB_OFFLINE=1 python benchmarks/locomo_eval.py --json results.json --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from headroom_integrations import MemoryConfig, MemoryEngine  # noqa: E402
from headroom_integrations.memory.schema import memories  # noqa: E402
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
SYSTEMS = ("hybrid", "bm25", "dense")
SYSTEM_LABELS = {"hybrid": "engine hybrid", "bm25": "BM25-only", "dense": "dense-only"}
TARGETS = {"any@5": 0.65, "any@10": 0.75}
REFERENCE = "MiniLM, measured elsewhere on this data: plain BM25 any@5 0.502, dense 0.470, plain RRF 0.549"
QUICK_SESSIONS = 3
QUICK_QUESTIONS = 30

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


def load(path: Path, quick: bool) -> list[dict[str, Any]]:
    """Conversations as ``{"id", "turns": [(dia_id, content)], "questions": [...], "dropped": {...}}``."""
    data = json.loads(path.read_text())
    if quick:
        data = data[:1]
    out = []
    for sample in data:
        conv = sample["conversation"]
        numbers = sessions(conv)[:QUICK_SESSIONS] if quick else sessions(conv)
        turns = []
        for n in numbers:
            date = conv.get(f"session_{n}_date_time", "")
            turns.extend((t["dia_id"], turn_text(t, date)) for t in conv[f"session_{n}"])
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
        out.append({"id": sample["sample_id"], "turns": turns, "questions": questions,
                    "dropped": {"evidence_ids": dropped_ids, "questions_without_evidence": no_evidence}})
    return out


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


def evaluate_conversation(conv: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Store one conversation in a fresh engine and rank every question with the three systems."""
    user = conv["id"]
    db = workdir / f"{user}.db"
    started = time.perf_counter()
    with MemoryEngine(MemoryConfig(db_path=str(db))) as engine:
        engine.add_batch(
            [{"content": content, "metadata": {"dia_id": dia}} for dia, content in conv["turns"]], user_id=user
        )
        engine.flush()
        added = time.perf_counter()
        store = engine._store
        with store.engine.connect() as connection:
            pk_to_dia = {
                pk: json.loads(meta).get("dia_id")
                for pk, meta in connection.execute(
                    memories.select().with_only_columns(memories.c.pk, memories.c.meta_json)
                    .where(memories.c.user_id == user)
                ).all()
            }
        pks, matrix = store.vectors_where(memories.c.user_id == user)
        dense_ids = [pk_to_dia[pk] for pk in pks]
        questions = [q["question"] for q in conv["questions"]]
        query_vectors = engine.embedder.embed(questions) if questions else np.zeros((0, matrix.shape[1]))
        rows = []
        timings = {s: 0.0 for s in SYSTEMS}
        for q, qvec in zip(conv["questions"], query_vectors):
            t0 = time.perf_counter()
            hits = engine.search(q["question"], user_id=user, top_k=TOP_K)
            t1 = time.perf_counter()
            bm25 = store.text_search(query_terms(q["question"]), None, TOP_K, 10**9, 0)
            t2 = time.perf_counter()
            scores = matrix @ np.asarray(qvec, dtype=np.float32)
            order = np.argsort(-scores, kind="stable")[:TOP_K]
            t3 = time.perf_counter()
            timings["hybrid"] += t1 - t0
            timings["bm25"] += t2 - t1
            timings["dense"] += t3 - t2
            ranked = {
                "hybrid": [str(h.memory.metadata.get("dia_id")) for h in hits],
                "bm25": [pk_to_dia[pk] for pk in bm25 if pk in pk_to_dia],
                "dense": [dense_ids[i] for i in order],
            }
            row = {"conversation": user, "qa_index": q["index"], "category": q["category"],
                   "evidence": q["evidence"]}
            for system in SYSTEMS:
                first, last = ranks(ranked[system], q["evidence"])
                row[system] = {"first_rank": first, "all_rank": last, "hits": len(ranked[system])}
            rows.append(row)
        embedder = str(getattr(engine.embedder, "name", type(engine.embedder).__name__))
    return {
        "conversation": user, "embedder": embedder, "turns": len(conv["turns"]), "questions": len(rows),
        "dropped": conv["dropped"],
        "add_s": round(added - started, 3), "search_s": {s: round(v, 3) for s, v in timings.items()},
        "rows": rows,
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


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Overall and per-category recall of every system."""
    summary: dict[str, Any] = {}
    for system in SYSTEMS:
        summary[system] = {
            "overall": recall(rows, system),
            "per_category": {str(c): recall([r for r in rows if r["category"] == c], system) for c in CATEGORIES},
        }
    return summary


# -- report -------------------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def markdown(results: dict[str, Any]) -> str:
    """The markdown section (without the markers)."""
    s = results["settings"]
    summary = results["summary"]
    counts = {str(c): summary["hybrid"]["per_category"][str(c)]["n"] for c in CATEGORIES}
    cat_heads = [f"cat {c} any@5 (n={counts[str(c)]})" for c in CATEGORIES]
    heads = ["system", "any@1", "any@5", "any@10", "any@25", "all@5", "all@10", *cat_heads]
    lines = [
        "## LoCoMo evidence retrieval" + (" (quick run)" if s["quick"] else ""),
        "",
        f"{s['conversations']} conversation(s) ({', '.join(s['conversation_ids'])}), {s['turns']} turns stored, "
        f"{s['questions']} questions of categories 1-4 (category 5 left out; "
        f"{s['questions_without_evidence']} without evidence among the stored turns skipped). Each turn is one memory "
        f"`\"[<session date>] <speaker>: <text>\"` (+ image caption) of the conversation's user; embedder "
        f"`{s['embedder']}`. A question counts for *any@k* when at least one of its evidence turns is in the "
        "top k, for *all@k* when every one is.",
        "",
        "| " + " | ".join(heads) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(heads) - 1)) + "|",
    ]
    for system in SYSTEMS:
        o = summary[system]["overall"]
        cells = [SYSTEM_LABELS[system], *(_fmt(o[f"any@{k}"]) for k in KS), _fmt(o["all@5"]), _fmt(o["all@10"])]
        cells += [_fmt(summary[system]["per_category"][str(c)]["any@5"]) for c in CATEGORIES]
        lines.append("| " + " | ".join(cells) + " |")
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
        "",
        f"Time: {results['time_s']:.1f} s in all (storing the turns {results['add_s']:.1f} s; searching: hybrid "
        f"{results['search_s']['hybrid']:.1f} s, BM25 {results['search_s']['bm25']:.1f} s, dense "
        f"{results['search_s']['dense']:.2f} s) on {s['machine']}, Python {s['python']}.",
        "",
    ]
    return "\n".join(lines)



# -- command line -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("data", nargs="?", default=str(DEFAULT_DATA), help=f"LoCoMo json (default {DEFAULT_DATA})")
    parser.add_argument("--quick", action="store_true",
                        help=f"first conversation only: its first {QUICK_SESSIONS} sessions and the first "
                        f"{QUICK_QUESTIONS} questions whose evidence lies in them")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--out", type=Path, help="write/replace the marked markdown section of this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    path = Path(args.data)
    if not path.is_file():
        print(f"LoCoMo data not found: {path}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    conversations = load(path, args.quick)
    per_conv = []
    with tempfile.TemporaryDirectory(prefix="locomo-") as tmp:
        for conv in conversations:
            result = evaluate_conversation(conv, Path(tmp))
            per_conv.append(result)
            print(f"{result['conversation']}: {result['turns']} turns, {result['questions']} questions, "
                  f"add {result['add_s']:.1f} s, hybrid search {result['search_s']['hybrid']:.1f} s", file=sys.stderr)
    elapsed = time.perf_counter() - started
    rows = [row for c in per_conv for row in c["rows"]]
    results = {
        "settings": {
            "data": str(path), "quick": args.quick, "top_k": TOP_K, "ks": list(KS),
            "conversations": len(per_conv), "conversation_ids": [c["conversation"] for c in per_conv],
            "turns": sum(c["turns"] for c in per_conv), "questions": len(rows),
            "questions_without_evidence": sum(c["dropped"]["questions_without_evidence"] for c in per_conv),
            "evidence_ids_dropped": sum(c["dropped"]["evidence_ids"] for c in per_conv),
            "embedder": ", ".join(sorted({c["embedder"] for c in per_conv})),
            "machine": f"{platform.machine()} {platform.system()}",
            "python": platform.python_version(),
        },
        "targets": TARGETS,
        "reference": REFERENCE,
        "summary": summarise(rows),
        "time_s": round(elapsed, 2),
        "add_s": round(sum(c["add_s"] for c in per_conv), 2),
        "search_s": {s: round(sum(c["search_s"][s] for c in per_conv), 3) for s in SYSTEMS},
        "conversations": [{k: v for k, v in c.items() if k != "rows"} for c in per_conv],
        "rows": rows,
    }
    section = markdown(results)
    _report.publish(section, results, args.out, args.json, MARK_START, MARK_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
