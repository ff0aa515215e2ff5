"""Answer-level LoCoMo: a model answers each question with the memories injected vs with the whole history.

Needs a model: without ``OPENAI_API_KEY`` the script prints one ``skipped: ...`` line and exits 0.
With a key (``OPENAI_BASE_URL`` honoured, so any OpenAI-compatible server works) every question
of categories 1-4 is asked twice through the real ``openai`` SDK, at temperature 0:

* **memory**: a short answer instruction as the system message and the question as the user's
  message, with the memories appended to it exactly as the adapters do it: the adapter core's
  search at the shipped ``top_k`` and ``format_memories`` at the shipped ``token_budget``
  (:func:`locomo_compression.recall`), then :func:`headroom_integrations.inline.inject_memories`;
* **full history**: the whole conversation as chat history (:func:`locomo_compression.history_messages`:
  one message per turn, one line with each session's date), then the question.

Both answers are scored with LoCoMo's answer F1 (:func:`answer_f1`, as ``task_eval/evaluation.py``
of the LoCoMo release scores them), per category; the prompt tokens each request sent are counted
with tiktoken's ``o200k_base`` and taken from the API's ``usage`` too.

The data (CC BY-NC 4.0) is read from its path and never copied.

Usage::

    OPENAI_API_KEY=sk-... python benchmarks/locomo_answers.py --limit 100 --json results.json
    OPENAI_API_KEY=sk-... python benchmarks/locomo_answers.py --quick --limit 10      # 2 short conversations
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import string
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

MARK_START = "<!-- locomo-answers:start -->"
MARK_END = "<!-- locomo-answers:end -->"
DEFAULT_MODEL = "gpt-4o-mini"
MAX_ANSWER_TOKENS = 64
MEMORY_SYSTEM = (
    "You answer questions about a long conversation between two people. Turns of that conversation that may be "
    "relevant appear at the end of the question inside <memories>…</memories>, each with the date of its session. "
    "Write an answer in the form of a short phrase. Answer with exact words from the memories whenever possible."
)
HISTORY_SYSTEM = (
    "Below is a conversation between two people over several sessions; a line before each session gives its "
    "date. Then you are asked a question about it."
)
HISTORY_QUESTION = (
    "Based on the above conversation, write an answer in the form of a short phrase for the following question. "
    "Answer with exact words from the conversation whenever possible.\n\nQuestion: {question} Short answer:"
)
_ARTICLES = re.compile(r"\b(a|an|the|and)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


# -- LoCoMo's answer F1 -------------------------------------------------------------------------------


@cache
def _stemmer() -> Callable[[str], str]:
    """NLTK's Porter stemmer, as LoCoMo uses it; snowball's Porter (a dependency of the package) without NLTK."""
    try:
        from nltk.stem import PorterStemmer
    except ImportError:  # pragma: no cover - NLTK comes with llama-index-core in the dev extra
        import snowballstemmer

        return snowballstemmer.stemmer("porter").stemWord
    return PorterStemmer().stem


def stemmer_name() -> str:
    """Which Porter stemmer :func:`token_f1` uses."""
    return "nltk" if "nltk" in getattr(_stemmer(), "__module__", "") else "snowballstemmer"


def normalize_answer(text: str) -> str:
    """LoCoMo's normalisation: commas dropped, lower case, punctuation removed, articles (and "and")
    removed, white space collapsed.

    >>> normalize_answer("The Sunflowers, and a Painting!")
    'sunflowers painting'
    """
    text = text.replace(",", "").lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, truth: str) -> float:
    """Token F1 of two answers after :func:`normalize_answer`, every word Porter-stemmed (0 when
    they share no word, so also when either is empty after normalisation).

    >>> token_f1("she went hiking", "Hiking")
    0.5
    """
    stem = _stemmer()
    predicted = [stem(w) for w in normalize_answer(prediction).split()]
    expected = [stem(w) for w in normalize_answer(truth).split()]
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)


def answer_f1(prediction: str, answer: object, category: int) -> float:
    """LoCoMo's score of a predicted answer for a question of ``category`` (1-4), in [0, 1].

    As in LoCoMo's ``eval_question_answering``: the gold answer is read as text; for category 3
    only its part before the first ``;`` counts; category 1 (multi-hop) answers are lists: both
    sides are split on ``,`` and each gold part gets the best F1 of any predicted part, averaged;
    the other categories use :func:`token_f1` on the whole answers.

    >>> answer_f1("7 May 2023", "7 May 2023", 2)
    1.0
    >>> answer_f1("painting, hiking", "hiking, swimming", 1)
    0.5
    >>> answer_f1("Likely yes", "Likely yes; she enjoys it", 3)
    1.0
    """
    truth = str(answer)
    if category == 3:
        truth = truth.split(";")[0].strip()
    if category == 1:
        predicted = [p.strip() for p in prediction.split(",")]
        parts = [g.strip() for g in truth.split(",")]
        return statistics.fmean(max(token_f1(p, g) for p in predicted) for g in parts)
    return token_f1(prediction, truth)


# -- asking -------------------------------------------------------------------------------------------


def spread(items: Sequence[Any], limit: int | None) -> list[Any]:
    """``limit`` items spread evenly over ``items`` (all of them without a limit), in order.

    >>> spread(list(range(10)), 3)
    [0, 4, 9]
    """
    if limit is None or limit >= len(items):
        return list(items)
    if limit <= 1:
        return list(items[:limit])
    step = (len(items) - 1) / (limit - 1)
    return [items[round(i * step)] for i in range(limit)]


def ask(client: Any, model: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """One chat completion: the answer text and the prompt tokens the API reported (or the error)."""
    import openai

    try:
        reply = client.chat.completions.create(model=model, messages=messages, temperature=0,
                                               max_tokens=MAX_ANSWER_TOKENS)
    except openai.OpenAIError as exc:
        return {"answer": "", "error": f"{type(exc).__name__}: {exc}"[:300], "usage_prompt_tokens": None}
    usage = getattr(reply, "usage", None)
    text = (reply.choices[0].message.content or "").strip() if reply.choices else ""
    return {"answer": text, "usage_prompt_tokens": getattr(usage, "prompt_tokens", None)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Store the conversations, ask every chosen question both ways, score the answers."""
    import openai
    from locomo_compression import (
        ENCODING,
        chat_tokens,
        history_messages,
        injected_dias,
        openai_encoding,
        recall,
        samples,
        tokenizer_source,
    )
    from locomo_eval import CATEGORY_NAMES, EMBEDDERS, embedder_config, load, store_conversation

    from headroom_integrations import MemoryEngine
    from headroom_integrations.adapter_core import AdapterCore
    from headroom_integrations.inline import inject_memories

    path = Path(args.data)
    encoding = openai_encoding(ENCODING)
    raw = samples(path)
    conversations = load(path, args.quick)
    chosen = set(spread([(c["id"], q["index"]) for c in conversations for q in c["questions"]], args.limit))
    client = openai.OpenAI(max_retries=args.retries)  # OPENAI_API_KEY / OPENAI_BASE_URL from the environment
    rows: list[dict[str, Any]] = []
    defaults: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="locomo-answers-") as tmp:
        for conv in conversations:
            questions = [q for q in conv["questions"] if (conv["id"], q["index"]) in chosen]
            if not questions:
                continue
            sample = raw[conv["id"]]
            history = history_messages(sample, args.quick)
            config = embedder_config(EMBEDDERS[0], Path(tmp) / f"{conv['id']}.db")
            store_conversation(config, conv)
            with MemoryEngine(config) as engine:
                core = AdapterCore(conv["id"], memory=engine, instruct=False)
                defaults = {"top_k": core.memory.top_k, "token_budget": core.memory.token_budget}
                for q in questions:
                    qa = sample["qa"][q["index"]]
                    hits, injection = recall(core, q["question"])
                    with_memory = inject_memories(
                        [{"role": "system", "content": MEMORY_SYSTEM}, {"role": "user", "content": q["question"]}],
                        injection)
                    full = [{"role": "system", "content": HISTORY_SYSTEM}, *history,
                            {"role": "user", "content": HISTORY_QUESTION.format(question=q["question"])}]
                    row: dict[str, Any] = {"conversation": conv["id"], "qa_index": q["index"],
                                           "category": q["category"], "question": q["question"],
                                           "gold": str(qa.get("answer", "")),
                                           "evidence_injected": any(e in injected_dias(hits, injection)
                                                                    for e in q["evidence"])}
                    for name, messages in (("memory", with_memory), ("history", full)):
                        result = ask(client, args.model, messages)
                        result["tokens"] = chat_tokens(encoding, messages)
                        result["f1"] = answer_f1(result["answer"], qa.get("answer", ""), q["category"])
                        row[name] = result
                    rows.append(row)
                    print(f"{conv['id']} q{q['index']} cat {q['category']}: memory F1 {row['memory']['f1']:.2f}, "
                          f"history F1 {row['history']['f1']:.2f}", file=sys.stderr)
    per_category = {str(c): summarise([r for r in rows if r["category"] == c]) for c in CATEGORY_NAMES}
    return {
        "settings": {
            "data": str(path), "quick": args.quick, "limit": args.limit, "model": args.model,
            "base_url": "custom" if os.environ.get("OPENAI_BASE_URL") else "default", **defaults,
            "questions": len(rows), "encoding": ENCODING, "tokenizer": tokenizer_source(),
            "stemmer": stemmer_name(), "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU",
            "python": platform.python_version(),
        },
        "summary": {"overall": summarise(rows), "per_category": per_category},
        "rows": rows,
    }


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean F1, mean prompt tokens and errors of both ways over some questions."""
    out: dict[str, Any] = {"n": len(rows), "evidence_injected": round(
        sum(r["evidence_injected"] for r in rows) / len(rows), 3) if rows else None}
    for name in ("memory", "history"):
        if not rows:
            out[name] = {"f1": None, "tokens_mean": None, "errors": 0}
            continue
        usage = [r[name]["usage_prompt_tokens"] for r in rows if r[name].get("usage_prompt_tokens")]
        out[name] = {
            "f1": round(statistics.fmean(r[name]["f1"] for r in rows), 3),
            "tokens_mean": round(statistics.fmean(r[name]["tokens"] for r in rows), 1),
            "usage_prompt_tokens_mean": round(statistics.fmean(usage), 1) if usage else None,
            "errors": sum(1 for r in rows if "error" in r[name]),
        }
    return out


# -- report -------------------------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    """The markdown section (without the markers)."""
    from locomo_eval import CATEGORY_NAMES

    s, summary = results["settings"], results["summary"]

    def cells(block: dict[str, Any]) -> str:
        m, h = block["memory"], block["history"]
        if m["f1"] is None:
            return "| - | - | - | - | - |"
        return (f"| {m['f1']:.3f} | {h['f1']:.3f} | {block['evidence_injected']:.3f} | {m['tokens_mean']:,.0f} | "
                f"{h['tokens_mean']:,.0f} |")

    lines = [
        "## LoCoMo answers: memory vs full history" + (" (quick run)" if s["quick"] else ""),
        "",
        f"`{s['model']}` answered {s['questions']} questions of categories 1-4 twice: with the memories the package "
        f"injects (`top_k={s.get('top_k')}`, `token_budget={s.get('token_budget')}`) and with the whole conversation "
        f"as chat history. LoCoMo's answer F1 (Porter stemming: {s['stemmer']}); prompt tokens counted with "
        f"`{s['encoding']}`.",
        "",
        "| category | questions | F1, memory | F1, full history | evidence injected | prompt tokens, memory | "
        "prompt tokens, history |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c, name in CATEGORY_NAMES.items():
        block = summary["per_category"][str(c)]
        if block["n"]:
            lines.append(f"| {c} ({name}) | {block['n']} " + cells(block))
    lines.append(f"| **all** | **{summary['overall']['n']}** " + cells(summary["overall"]))
    errors = summary["overall"]["memory"]["errors"] + summary["overall"]["history"]["errors"]
    lines += ["", f"Failed requests (scored 0): {errors}. Time: {results['time_s']:.0f} s.", ""]
    return "\n".join(lines)


# -- command line -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("data", nargs="?", default=None,
                        help="LoCoMo json (default: the one benchmarks/locomo_eval.py reads)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"chat model (default {DEFAULT_MODEL})")
    parser.add_argument("--limit", type=int, default=None, help="ask this many questions, spread over the data")
    parser.add_argument("--quick", action="store_true", help="2 conversations, 3 sessions, 30 questions each")
    parser.add_argument("--retries", type=int, default=4, help="the SDK's retries per request (default 4)")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--out", type=Path, help="write/replace the marked markdown section of this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not os.environ.get("OPENAI_API_KEY"):
        print("skipped: OPENAI_API_KEY is not set (answer-level LoCoMo needs a model; set it, and OPENAI_BASE_URL "
              "for another OpenAI-compatible server, to run it)")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.data is None:
        from locomo_eval import DEFAULT_DATA

        args.data = str(DEFAULT_DATA)
    if not Path(args.data).is_file():
        print(f"LoCoMo data not found: {args.data}", file=sys.stderr)
        return 2
    import _report

    started = time.perf_counter()
    results = run(args)
    results["time_s"] = round(time.perf_counter() - started, 2)
    _report.publish(markdown(results), results, args.out, args.json, MARK_START, MARK_END)
    overall = results["summary"]["overall"]
    if overall["n"] and overall["memory"]["errors"] == overall["n"] and overall["history"]["errors"] == overall["n"]:
        print("every request failed; see the errors in the rows", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
