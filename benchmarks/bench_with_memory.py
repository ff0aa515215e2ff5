"""Benchmark of ``with_memory``'s own cost per call, the LLM left out, on this machine.

One user's store is filled with N synthetic memories (``add_batch``, 10,000 by default), then a
:class:`~headroom_integrations.openai.MemorySession` (what ``with_memory`` builds) serves R calls,
each with a user message never seen before. For every call it times:

* **prepare**: ``session.prepare(kwargs)``: retrieval (query embedding with the local MiniLM +
  hybrid search), injection of the memories into the last user message and the instruction
  appended to the system prompt; the retrieval and the query embedding inside it are timed too;
* **finish**: ``session.finish_response(response, state)`` on a real
  ``openai.types.chat.ChatCompletion`` whose reply ends with a ``<memory>`` block holding one
  memory: parsing, stripping and storing;
* **store**: the ``session.store(found, state)`` call inside that finish (committed row; the
  embedding runs in a background thread);
* **total** = prepare + finish of the same call.

Variants: fresh messages (the main figures), one message repeated (cached query embedding),
replies whose memory supersedes an injected one, fresh messages without ``engine.flush()``
between calls (so a call starts while the previous call's background embedding may still run),
and fresh messages with an idle pause between calls (``--pause-ms``, as an LLM round trip leaves:
the CPU and the model's threads go cold). ``engine.flush()`` runs between calls, outside the timed
region, in every variant but ``no_flush``; how long it waited is reported as the background
embedding time still running after ``finish`` returned.

The CPU time other processes used during the timed calls is measured (system CPU time minus this
process's) and reported next to the load average, since the query embedding suffers most from a
busy machine.

Last, an end-to-end sanity run sends a few calls through ``with_memory(OpenAI(base_url=stub))``
against the loopback ``StubLLM`` of ``tests/openai_stub.py`` and checks that the wrapper made no
extra HTTP request.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/bench_with_memory.py                  # 10k memories, 200 calls
    HF_HUB_OFFLINE=1 python benchmarks/bench_with_memory.py --quick          # 500 memories, few calls
    HF_HUB_OFFLINE=1 python benchmarks/bench_with_memory.py --out docs/benchmarks.md \
        --json benchmarks/results/with_memory.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # bench_engine (synthetic corpus, machine info, formatting)
sys.path.insert(0, str(ROOT / "tests"))  # openai_stub (loopback OpenAI-compatible server)

import _report  # noqa: E402  (benchmarks/ was put on sys.path above)
from bench_engine import Corpus, fmt, machine_info, remove_store, summary_ms  # noqa: E402
from openai.types.chat import ChatCompletion  # noqa: E402
from tqdm import tqdm  # noqa: E402

from headroom_integrations import MemoryConfig, MemoryEngine, with_memory  # noqa: E402
from headroom_integrations.inline import MEMORY_INSTRUCTION, ExtractedMemory  # noqa: E402
from headroom_integrations.memory import Memory, SearchResult  # noqa: E402
from headroom_integrations.openai import CallState, MemorySession  # noqa: E402

MARK_START = "<!-- with-memory-bench:start -->"
MARK_END = "<!-- with-memory-bench:end -->"
USER = "bench-user"
SESSION = "bench-session"
MODEL = "gpt-4o-mini"
TARGET_SIZE = 10_000
TARGET_TOTAL_MS = 15.0
TARGET_STORE_MS = 2.0
WARMUP_CALLS = 5

SYSTEM_PROMPT = (
    "You are a helpful personal assistant. Answer concisely and accurately; ask a clarifying question "
    "when a request is ambiguous. Use the user's preferences when you know them."
)
EARLIER_TURNS: list[dict[str, str]] = [
    {"role": "user", "content": "Morning! I have a busy week ahead, can you help me keep track of things?"},
    {"role": "assistant", "content": "Of course. Tell me what is on your plate and I will help you sort it out."},
]
ANSWER = (
    "Good question. From what you told me before, the short answer is yes, but it depends on the details: "
    "{topic} came up a few times, and the last thing I noted is what I would go by. If anything changed "
    "since then, tell me and I will update my notes. Do you want me to draft a short plan for the week, "
    "with reminders for the deadlines and the people you mentioned?"
)

VARIANTS: dict[str, str] = {
    "fresh": "fresh message, new memory",
    "cached": "repeated message (cached query embedding), new memory",
    "supersede": "fresh message, memory supersedes [m1]",
    "no_flush": "fresh message, new memory, no flush between calls",
    "pause": "fresh message, new memory, idle pause between calls",
}


# -- one call -------------------------------------------------------------------------------------


def request_kwargs(message: str) -> dict[str, Any]:
    """What an application passes to ``chat.completions.create``: a system prompt, history, a message."""
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT}, *EARLIER_TURNS, {"role": "user", "content": message},
        ],
        "temperature": 0.3,
    }


def reply_text(message: str, memory: Mapping[str, Any], supersedes: str | None = None) -> tuple[str, str]:
    """A realistic reply ending with a block of one memory; returns (raw reply, what the user should see)."""
    visible = ANSWER.format(topic=message.rstrip("?").lower())
    item: dict[str, Any] = {"content": memory["content"], "category": memory["category"], "scope": "user",
                            "importance": memory["importance"]}
    if supersedes is not None:
        item["supersedes"] = supersedes
    block = "<memory>" + json.dumps({"memories": [item]}) + "</memory>"
    return f"{visible}\n\n{block}", visible


def chat_completion(content: str) -> ChatCompletion:
    """A real SDK response object, as ``OpenAI().chat.completions.create`` returns it."""
    return ChatCompletion.model_validate({
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": content, "refusal": None}}],
        "usage": {"prompt_tokens": 420, "completion_tokens": 96, "total_tokens": 516},
    })


@dataclass
class Lap:
    """What the instrumented pieces measured during one call (seconds)."""

    retrieve: float = 0.0
    embed: float = 0.0
    store: float = 0.0
    stored: list[Memory] = field(default_factory=list)
    retrieved: int = 0


class Probe:
    """Times ``session.retrieve``, ``session.store`` and the query embedding, by wrapping them on the
    instances (``finish_response`` and ``engine.search`` call them through ``self``).

    Background embeddings call ``embedder.embed``, not ``embed_one``, so they are not counted.
    """

    def __init__(self, session: MemorySession) -> None:
        self.lap = Lap()
        retrieve = session.retrieve
        store = session.store
        embedder = session.engine.embedder
        embed_one = embedder.embed_one

        def timed_retrieve(query: str, now: Any = None) -> list[SearchResult]:
            start = time.perf_counter()
            try:
                hits = retrieve(query, now)
            finally:
                self.lap.retrieve += time.perf_counter() - start
            self.lap.retrieved += len(hits)
            return hits

        def timed_store(found: list[ExtractedMemory], state: CallState) -> list[Memory]:
            start = time.perf_counter()
            try:
                stored = store(found, state)
            finally:
                self.lap.store += time.perf_counter() - start
            self.lap.stored.extend(stored)
            return stored

        def timed_embed_one(text: str) -> Any:
            start = time.perf_counter()
            try:
                return embed_one(text)
            finally:
                self.lap.embed += time.perf_counter() - start

        session.retrieve = timed_retrieve  # type: ignore[method-assign]
        session.store = timed_store  # type: ignore[method-assign]
        embedder.embed_one = timed_embed_one  # type: ignore[method-assign]

    def reset(self) -> Lap:
        """Start a new call; return the previous call's lap."""
        lap, self.lap = self.lap, Lap()
        return lap


# -- the benchmark ----------------------------------------------------------------------------------


@dataclass
class Settings:
    """What to run."""

    n: int
    reps: int
    cached_reps: int
    e2e_calls: int
    pause_reps: int
    pause_ms: float
    chunk: int
    seed: int
    progress: bool
    quick: bool
    workdir: Path


def embedder_info(engine: MemoryEngine) -> str:
    """Which embedder (and runtime) the engine uses, e.g. ``local/all-MiniLM-L6-v2 on onnxruntime 1.20.1``."""
    embedder = engine.embedder
    kind = type(embedder).__name__
    runtime = {"OnnxEmbedder": "onnxruntime", "LocalEmbedder": "sentence-transformers"}.get(kind)
    if runtime is None:
        return f"{embedder.name} ({kind})"
    try:
        version = metadata.version(runtime)
    except metadata.PackageNotFoundError:
        version = "?"
    return f"{embedder.name} on {runtime} {version}"


def fill(engine: MemoryEngine, corpus: Corpus, n: int, chunk: int, progress: bool) -> dict[str, float]:
    """Store ``n`` memories of one user with ``add_batch`` (each embedded); return count, seconds, rate."""
    start = time.perf_counter()
    done = 0
    with tqdm(total=n, desc=f"fill {n:,} memories", unit="mem", disable=not progress, file=sys.stderr,
              leave=False) as bar:
        while done < n:
            batch = corpus.memories(min(chunk, n - done))
            engine.add_batch(batch, user_id=USER)
            done += len(batch)
            bar.update(len(batch))
    seconds = time.perf_counter() - start
    return {"memories": n, "seconds": seconds, "memories_per_s": n / seconds if seconds > 0 else 0.0}


def run_variant(
    name: str, session: MemorySession, probe: Probe, corpus: Corpus, reps: int, flush: bool, pause_s: float = 0.0,
) -> dict[str, Any]:
    """``reps`` timed calls (after a few untimed ones) of one variant; summaries, samples and checks.

    ``pause_s`` is an idle pause before each call (after the flush), outside the timed region.
    """
    engine = session.engine
    repeated = corpus.queries(1)[0]
    supersede = name == "supersede"
    samples: dict[str, list[float]] = {key: [] for key in (
        "prepare", "retrieve", "query_embed", "inject_instruct", "finish", "parse_strip", "store", "total",
        "background_wait")}
    injected = stored = superseded = 0
    stripped = True
    added_chars: list[int] = []
    engine.flush()
    for position in range(WARMUP_CALLS + reps):
        message = repeated if name == "cached" else corpus.queries(1)[0]
        kwargs = request_kwargs(message)
        raw, visible = reply_text(message, corpus.memory(), supersedes="m1" if supersede else None)
        response = chat_completion(raw)  # built outside the timed region
        probe.reset()
        start = time.perf_counter()
        request, state = session.prepare(kwargs)
        prepared = time.perf_counter()
        out = session.finish_response(response, state)
        finished = time.perf_counter()
        lap = probe.reset()
        if lap.retrieve <= 0 or lap.store <= 0:
            raise RuntimeError("the timing probes saw no retrieve/store call: has MemorySession changed its calls?")
        wait = 0.0
        if flush:
            wait_start = time.perf_counter()
            engine.flush()
            wait = time.perf_counter() - wait_start
        if pause_s > 0:
            time.sleep(pause_s)
        if position < WARMUP_CALLS:
            continue
        prepare_s, finish_s = prepared - start, finished - prepared
        samples["prepare"].append(prepare_s)
        samples["retrieve"].append(lap.retrieve)
        samples["query_embed"].append(lap.embed)
        samples["inject_instruct"].append(max(prepare_s - lap.retrieve, 1e-9))
        samples["finish"].append(finish_s)
        samples["parse_strip"].append(max(finish_s - lap.store, 1e-9))
        samples["store"].append(lap.store)
        samples["total"].append(prepare_s + finish_s)
        if flush:
            samples["background_wait"].append(max(wait, 1e-9))
        injected += len(state.handles)
        stored += len(lap.stored)
        superseded += sum(1 for m in lap.stored if m.supersedes)
        stripped = stripped and out.choices[0].message.content == visible
        sent = request["messages"]
        added_chars.append(sum(len(m["content"]) for m in sent) - sum(len(m["content"]) for m in kwargs["messages"]))
        if name == "cached" and lap.embed > 0:
            raise RuntimeError("the repeated message was embedded again: the query cache did not serve it")
    engine.flush()
    result: dict[str, Any] = {
        "variant": name, "description": VARIANTS[name], "calls": reps, "flush_between_calls": flush,
        "pause_ms": pause_s * 1000.0,
        **{f"{key}_ms": summary_ms(values) for key, values in samples.items() if values},
        "mean_injected": injected / reps, "stored": stored, "superseded": superseded,
        "replies_stripped": stripped, "mean_prompt_chars_added": sum(added_chars) / len(added_chars),
        "samples_ms": {key: [round(v * 1000.0, 4) for v in values] for key, values in samples.items() if values},
    }
    return result


def run_end_to_end(engine: MemoryEngine, corpus: Corpus, calls: int) -> dict[str, Any]:
    """``calls`` requests through ``with_memory(OpenAI(base_url=stub))``; counts the HTTP requests."""
    from openai import OpenAI
    from openai_stub import StubLLM

    before = engine.stats(USER)["total"]
    walls: list[float] = []
    stripped = injected = instructed = True
    with StubLLM() as stub:
        client = with_memory(OpenAI(api_key="bench", base_url=stub.base_url, max_retries=0), user_id=USER,
                             session_id=SESSION, memory=engine)
        for _ in range(calls):
            message = corpus.queries(1)[0]
            raw, visible = reply_text(message, corpus.memory())
            stub.reply(raw)
            start = time.perf_counter()
            response = client.chat.completions.create(**request_kwargs(message))
            walls.append(time.perf_counter() - start)
            engine.flush()
            stripped = stripped and response.choices[0].message.content == visible
            sent = stub.requests[-1]["messages"]
            injected = injected and "<memories>" in sent[-1]["content"]
            instructed = instructed and sent[0]["content"].endswith(MEMORY_INSTRUCTION)
        http_requests = stub.count
        embedding_requests = len(stub.embedding_requests)
    stored = engine.stats(USER)["total"] - before
    return {
        "calls": calls, "http_requests": http_requests, "extra_requests": http_requests - calls,
        "embedding_requests": embedding_requests, "memories_stored": stored, "replies_stripped": stripped,
        "memories_injected": injected, "instruction_added": instructed, "wall_ms": summary_ms(walls),
    }


def run(settings: Settings) -> dict[str, Any]:
    """Fill the store, measure every variant and the end-to-end run; return the results (JSON-serialisable)."""
    machine = machine_info()  # before the run: the load average tells whether others used the CPUs
    started = time.perf_counter()
    corpus = Corpus(settings.seed)
    db = settings.workdir / "with_memory_bench.db"
    remove_store(db)
    start = time.perf_counter()
    engine = MemoryEngine(MemoryConfig(db_path=db))
    open_s = time.perf_counter() - start
    machine["embedder"] = embedder_info(engine)
    try:
        # A fresh torch is slow for its first batch shapes: warm the batched and the one-text paths.
        warm = [item["content"] for item in Corpus(settings.seed + 99).memories(256)]
        engine.embedder.embed(warm)
        for text in warm[:16]:
            engine.embedder.embed_one(text)
        filled = fill(engine, corpus, settings.n, settings.chunk, settings.progress)
        session = MemorySession(engine, USER, SESSION)  # with_memory's defaults: top_k=5, token_budget=400
        probe = Probe(session)
        variants = []
        plan = [("fresh", settings.reps, True, 0.0), ("cached", settings.cached_reps, True, 0.0),
                ("supersede", settings.reps, True, 0.0), ("no_flush", settings.reps, False, 0.0),
                ("pause", settings.pause_reps, True, settings.pause_ms / 1000.0)]
        others = _report.OtherLoad()
        for name, reps, flush, pause_s in plan:
            mine = _report.OtherLoad()
            entry = run_variant(name, session, probe, corpus, reps, flush, pause_s)
            entry["other_processes_cores"] = mine.cores()
            variants.append(entry)
            print(f"  {name}: prepare p50 {entry['prepare_ms']['p50']:.2f} ms, finish p50 "
                  f"{entry['finish_ms']['p50']:.2f} ms, store p50 {entry['store_ms']['p50']:.2f} ms, "
                  f"total p50 {entry['total_ms']['p50']:.2f} ms", file=sys.stderr)
        machine["other_processes_cores"] = others.cores()
        end_to_end = run_end_to_end(engine, corpus, settings.e2e_calls)
        print(f"  end to end: {end_to_end['calls']} calls, {end_to_end['http_requests']} HTTP requests",
              file=sys.stderr)
        stats = engine.stats(USER)
    finally:
        engine.close()
    machine["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else 0.0
    results: dict[str, Any] = {
        "schema": 1,
        "quick": settings.quick,
        "machine": machine,
        "settings": {"n": settings.n, "reps": settings.reps, "cached_reps": settings.cached_reps,
                     "e2e_calls": settings.e2e_calls, "pause_reps": settings.pause_reps,
                     "pause_ms": settings.pause_ms, "chunk": settings.chunk, "seed": settings.seed,
                     "warmup_calls": WARMUP_CALLS, "top_k": session.top_k, "token_budget": session.token_budget,
                     "user_id": USER, "session_id": SESSION},
        "open_s": open_s,
        "fill": filled,
        "variants": variants,
        "end_to_end": end_to_end,
        "final_stats": {"total": stats["total"], "current": stats["current"], "superseded": stats["superseded"]},
    }
    results["targets"] = targets(results)
    results["wall_s"] = time.perf_counter() - started
    return results


# -- reporting -----------------------------------------------------------------------------------


def variant(results: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The entry of one variant."""
    return next(v for v in results["variants"] if v["variant"] == name)


def targets(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The main (fresh-message) figures against the targets, which are stated for a 10k store."""
    fresh = variant(results, "fresh")
    n = results["settings"]["n"]
    rows = [
        (f"total overhead p50 (prepare + finish) <= {TARGET_TOTAL_MS:g} ms", fresh["total_ms"]["p50"],
         TARGET_TOTAL_MS),
        (f"store step p50 <= {TARGET_STORE_MS:g} ms", fresh["store_ms"]["p50"], TARGET_STORE_MS),
    ]
    return [{"name": name, "value": value, "limit": limit, "unit": "ms", "met": value <= limit, "at_n": n,
             "at_target_size": n >= TARGET_SIZE} for name, value, limit in rows]


def pair(summary: Mapping[str, float]) -> str:
    """``p50 / p95`` of a latency summary."""
    return f"{fmt(summary['p50'])} / {fmt(summary['p95'])}"


def markdown(results: Mapping[str, Any]) -> str:
    """The report: main table, breakdown, targets, end-to-end check and machine."""
    m, s = results["machine"], results["settings"]
    quick = " --quick" if results["quick"] else ""
    lines = [
        "## with_memory overhead benchmark",
        "",
        f"Measured {m['date']} with `python benchmarks/bench_with_memory.py{quick}`: the wrapper's own work per "
        f"call, the LLM left out, over a store of {s['n']:,} memories of one user (embedder {m['embedder']}; "
        f"top_k={s['top_k']}, token budget {s['token_budget']}; a system prompt, two earlier turns and the new "
        f"message; the reply is a real `ChatCompletion` of about 450 characters ending with a one-memory block). "
        f"{s['reps']} timed calls per variant ({s['cached_reps']} for the repeated message) after "
        f"{s['warmup_calls']} untimed ones ({s['pause_reps']} after a {s['pause_ms']:g} ms idle pause each in the last "
        f"row); `engine.flush()` between calls, outside the timed region, except where it says otherwise. "
        f"Figures are p50 / p95 in ms.",
        "",
        "| variant | prepare (retrieve + inject + instruct) | finish_response (parse + strip + store) "
        "| store step | **total** |",
        "|---|---:|---:|---:|---:|",
    ]
    for v in results["variants"]:
        lines.append(f"| {v['description']} | {pair(v['prepare_ms'])} | {pair(v['finish_ms'])} "
                     f"| {pair(v['store_ms'])} | **{pair(v['total_ms'])}** |")
    lines += [
        "",
        "<details><summary>Breakdown</summary>",
        "",
        "| variant | retrieve | of which query embedding | inject + instruct | parse + strip "
        "| background embedding still running after finish (flush wait) | memories injected per call "
        "| stored / superseded | replies stripped | cores used by other processes meanwhile |",
        "|---|---:|---:|---:|---:|---:|---:|---:|:---:|---:|",
    ]
    for v in results["variants"]:
        wait = pair(v["background_wait_ms"]) if "background_wait_ms" in v else "not flushed"
        lines.append(
            f"| {v['description']} | {pair(v['retrieve_ms'])} | {pair(v['query_embed_ms'])} "
            f"| {pair(v['inject_instruct_ms'])} | {pair(v['parse_strip_ms'])} | {wait} "
            f"| {v['mean_injected']:.1f} | {v['stored']} / {v['superseded']} "
            f"| {'yes' if v['replies_stripped'] else 'NO'} | {v['other_processes_cores']:.2f} |"
        )
    fill_ = results["fill"]
    fresh, no_flush = variant(results, "fresh"), variant(results, "no_flush")
    pause = variant(results, "pause")
    lines += [
        "",
        f"With an idle pause of {s['pause_ms']:g} ms before each call (an LLM round trip leaves one; caches and "
        f"threads may have gone cold), the query embedding p50 is {fmt(pause['query_embed_ms']['p50'])} ms "
        f"({fmt(fresh['query_embed_ms']['p50'])} ms back to back) and the total p50 "
        f"{fmt(pause['total_ms']['p50'])} ms ({fmt(fresh['total_ms']['p50'])} ms back to back): the closer figure "
        f"to what an application sees per call.",
        "",
        f"Without `flush()` between back-to-back calls, prepare p50 goes from {fmt(fresh['prepare_ms']['p50'])} to "
        f"{fmt(no_flush['prepare_ms']['p50'])} ms: `search` waits for the previous call's background embedding "
        f"(`MemoryEngine.search` calls `wait_pending()`), so that cost moves to the next call unless an LLM "
        f"round trip (or any pause longer than one embedding) separates them. The store step itself never waits. "
        f"The prompt grows by {fresh['mean_prompt_chars_added']:,.0f} characters per call on average "
        f"(memories block + instruction).",
        "",
        f"Fill: {fill_['memories']:,} memories with `add_batch` in {fill_['seconds']:.1f} s "
        f"({fill_['memories_per_s']:,.0f} memories/s). Engine open with the model load: {results['open_s']:.2f} s.",
        "",
        "</details>",
        "",
        "### Targets",
        "",
    ]
    if s["n"] < TARGET_SIZE:
        lines += [f"The targets are stated for a {TARGET_SIZE:,}-memory store; this run's store holds {s['n']:,}, "
                  f"so the verdicts below are only indicative.", ""]
    lines += ["| target (fresh message) | measured | met |", "|---|---:|:---:|"]
    for t in results["targets"]:
        lines.append(f"| {t['name']} | {fmt(t['value'])} ms (N={t['at_n']:,}) | {'yes' if t['met'] else 'NO'} |")
    e = results["end_to_end"]
    ok = e["extra_requests"] == 0 and e["embedding_requests"] == 0
    lines += [
        "",
        "### End to end through the SDK",
        "",
        f"{e['calls']} calls through `with_memory(OpenAI(base_url=<loopback StubLLM>))`: "
        f"**{e['http_requests']} HTTP requests for {e['calls']} calls ({e['extra_requests']} extra)**, "
        f"{e['embedding_requests']} embedding requests; {e['memories_stored']} memories stored; memories injected "
        f"{'yes' if e['memories_injected'] else 'NO'}, instruction added {'yes' if e['instruction_added'] else 'NO'}, "
        f"blocks stripped from the replies {'yes' if e['replies_stripped'] else 'NO'}. Wall time per call including "
        f"the loopback HTTP round trip: p50 {fmt(e['wall_ms']['p50'])} ms. "
        f"{'No extra request.' if ok else '**The wrapper made extra requests.**'}",
        "",
        "### Machine",
        "",
        f"{m['cpu']}, {m['logical_cores']} logical cores ({m['physical_cores']} physical), {m['ram_gib']} GiB RAM, "
        f"{m['os']}; Python {m['python']}, embedder {m['embedder']}, SQLite {m['sqlite']}. Load average (1 min): "
        f"{m['load_avg_1m']} before the run (it lags by a minute or so), {m['load_avg_1m_at_end']} at its end "
        f"(that one includes this run). Other processes used {m['other_processes_cores']:.2f} cores on average "
        f"during the timed calls.",
    ]
    busy = m["other_processes_cores"]
    if busy >= 0.25:
        lines += ["", f"**Warning:** other processes kept {busy:.2f} of the {m['logical_cores']} cores busy during "
                  f"the timed calls; the query embedding suffers most, so these figures are pessimistic."]
    return "\n".join(lines) + "\n"



def finite(value: Any) -> bool:
    """Whether every number inside ``value`` is finite (JSON has no NaN or infinity)."""
    if isinstance(value, Mapping):
        return all(finite(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return all(finite(item) for item in value)
    return not isinstance(value, float) or math.isfinite(value)


# -- command line ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="500 memories and few calls (well under a minute)")
    parser.add_argument("--n", type=int, help="memories in the store (default 10000; quick 500)")
    parser.add_argument("--reps", type=int, help="timed calls per variant (default 200; quick 20)")
    parser.add_argument("--cached-reps", type=int, help="timed calls with the repeated message (default 200;"
                        " quick 20)")
    parser.add_argument("--e2e-calls", type=int, default=20, help="calls of the end-to-end run (default 20)")
    parser.add_argument("--pause-reps", type=int, help="timed calls after an idle pause (default 50; quick 5)")
    parser.add_argument("--pause-ms", type=float, default=300.0, help="idle pause before each of those calls"
                        " (default 300 ms)")
    parser.add_argument("--chunk", type=int, default=1000, help="add_batch chunk size while filling (default 1000)")
    parser.add_argument("--seed", type=int, default=11, help="seed of the synthetic content")
    parser.add_argument("--out", type=Path, help="markdown file whose with-memory-bench section is written/replaced")
    parser.add_argument("--json", type=Path, help="write the raw results as JSON here")
    parser.add_argument("--workdir", type=Path, help="where the database goes (default: a temporary directory,"
                        " deleted afterwards)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace, workdir: Path) -> Settings:
    """Resolve defaults (which depend on ``--quick``) and validate."""
    quick = bool(args.quick)

    def pick(value: int | None, full: int, small: int) -> int:
        return value if value is not None else (small if quick else full)

    settings = Settings(
        n=pick(args.n, 10_000, 500), reps=pick(args.reps, 200, 20), cached_reps=pick(args.cached_reps, 200, 20),
        e2e_calls=args.e2e_calls, pause_reps=pick(args.pause_reps, 50, 5), pause_ms=args.pause_ms,
        chunk=args.chunk, seed=args.seed, progress=not args.no_progress, quick=quick,
        workdir=workdir,
    )
    for name in ("n", "reps", "cached_reps", "e2e_calls", "pause_reps", "chunk"):
        if getattr(settings, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
    if not settings.pause_ms > 0 or not math.isfinite(settings.pause_ms):
        raise SystemExit("--pause-ms must be a positive number")
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run, print the markdown, write ``--out`` and ``--json``."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="with-memory-bench-") as scratch:
        workdir = Path(args.workdir) if args.workdir else Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        results = run(settings_from(args, workdir))
    if not finite(results):
        raise SystemExit("a measurement came out as NaN or infinity")
    report = markdown(results)
    _report.publish(report, results, args.out, args.json, MARK_START, MARK_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
