"""Benchmark of the memory engine on this machine: search latency, writes, reopen and memory use.

One store is filled incrementally (for example 1k -> 10k -> 100k memories of one user, with real
``add_batch`` calls that embed every text) and measured at every checkpoint:

* search p50/p95 with a *fresh* query (never seen before, query cache cleared, so the query is
  embedded on every call), and the part of it that is not embedding;
* search p50/p95 with a *cached* query (the same query repeated after one warming call);
* single ``add`` p50/p95 (each one embeds, commits and indexes one memory);
* ``add_batch`` throughput while filling (memories/s, embedding included) and the embedding share;
* close (saves the HNSW sidecar) and reopen time of the store, the embedding model being cached
  per process (checked: the reopened engine reuses the same embedder object), then the first
  search after reopen, which must find a memory stored before the reopen;
* RSS of the process after each fill.

Optionally a second store holds 100 users and searches are restricted to one of them.

``--local-runtime`` picks how the local MiniLM runs (``MemoryConfig.local_runtime``; default
``auto``, i.e. the int8 ONNX copy for a new store); a run with another runtime (``onnx`` for full
precision) writes its own section of the page.

Usage::

    HF_HUB_OFFLINE=1 python benchmarks/bench_engine.py                       # 1k, 10k, 100k
    HF_HUB_OFFLINE=1 python benchmarks/bench_engine.py --quick               # tiny sizes, < 60 s
    HF_HUB_OFFLINE=1 python benchmarks/bench_engine.py --local-runtime onnx --sizes 100000
    HF_HUB_OFFLINE=1 python benchmarks/bench_engine.py --out docs/benchmarks.md \
        --json benchmarks/results/engine.json

The content is synthetic but varied (people, places, preferences, projects, dates...) and fully
deterministic for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import math
import os
import platform
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _report when imported from elsewhere
import _report
import numpy as np
import psutil
from tqdm import tqdm

from headroom_integrations import MemoryConfig, MemoryEngine
from headroom_integrations.memory.config import LOCAL_RUNTIMES
from headroom_integrations.memory.embedders import Embedder
from headroom_integrations.memory.onnx_embedder import OnnxEmbedder

DEFAULT_RUNTIME = "auto"
USER = "bench-user"
TOP_K = 5
TARGET_SIZE = 100_000

NEEDLE = "The spare key to the lighthouse cabin on Vlieland is hidden under the blue heron statue."
NEEDLE_QUERY = "where is the spare key of the lighthouse cabin hidden?"

# -- synthetic content ------------------------------------------------------------------------------

PEOPLE = [
    "Alice", "Bob", "Carmen", "Dmitri", "Esther", "Farid", "Greta", "Hiro", "Ingrid", "Jamal", "Keiko",
    "Lars", "Maya", "Nikolai", "Olivia", "Pedro", "Quinn", "Rosa", "Sanjay", "Tomas", "Uma", "Viktor",
    "Wen", "Ximena", "Yusuf", "Zofia", "Amara", "Bastien", "Chloe", "Diego", "Elif", "Finn", "Gabriela",
    "Hassan", "Isla", "Jonas", "Kavya", "Leon", "Mei", "Noah",
]
RELATIONS = ["sister", "brother", "mother", "father", "manager", "cofounder", "neighbour", "best friend",
             "daughter", "son", "partner", "mentor", "landlord", "dentist"]
CITIES = [
    "Lisbon", "Berlin", "Osaka", "Toronto", "Nairobi", "Melbourne", "Oaxaca", "Reykjavik", "Seoul", "Porto",
    "Krakow", "Montreal", "Cape Town", "Edinburgh", "Valparaiso", "Hanoi", "Tbilisi", "Bergen", "Austin",
    "Marrakesh", "Ljubljana", "Kyoto", "Bologna", "Dublin", "Vancouver", "Istanbul", "Taipei", "Helsinki",
]
FOODS = ["sushi", "ramen", "tacos al pastor", "falafel", "pho", "paella", "dumplings", "goulash", "risotto",
         "jollof rice", "pierogi", "shakshuka", "bibimbap", "ceviche", "lasagna", "pad thai", "moussaka"]
DRINKS = ["oat-milk flat whites", "green tea", "espresso", "rooibos", "cold brew", "chai", "matcha lattes",
          "sparkling water", "black coffee", "yerba mate"]
ALLERGENS = ["peanuts", "shellfish", "penicillin", "cat dander", "pollen", "gluten", "lactose", "sesame",
             "latex", "bee stings"]
HOBBIES = ["bouldering", "sourdough baking", "chess", "salsa dancing", "birdwatching", "pottery", "trail running",
           "watercolor painting", "sailing", "woodworking", "the cello", "Japanese calligraphy", "astrophotography"]
LANGUAGES = ["Go", "Rust", "Python", "TypeScript", "Kotlin", "Elixir", "C++", "Haskell", "Julia", "Swift"]
TASKS = ["performance-critical services", "data pipelines", "quick scripts", "frontend prototypes",
         "embedded firmware", "CLI tools", "numerical simulations", "mobile apps"]
TOOLS = ["Postgres", "Kafka", "Redis", "Terraform", "Kubernetes", "DuckDB", "Airflow", "Grafana", "SQLite",
         "RabbitMQ", "ClickHouse", "Nomad", "Prometheus", "Snowflake"]
COMPANIES = ["Globex", "Initech", "Umbrella Labs", "Stark Analytics", "Wayne Logistics", "Hooli", "Vandelay Imports",
             "Soylent Foods", "Tyrell Systems", "Cyberdyne", "Aperture Science", "Monarch Travel"]
ROLES = ["staff engineer", "product manager", "data scientist", "designer", "site reliability engineer",
         "engineering manager", "technical writer", "security analyst", "researcher", "sales lead"]
ADJECTIVES = ["Amber", "Silent", "Crimson", "Northern", "Electric", "Hidden", "Golden", "Frozen", "Rapid", "Lunar",
              "Copper", "Velvet", "Iron", "Coral", "Quantum"]
NOUNS = ["Falcon", "Harbor", "Lantern", "Orchid", "Comet", "Glacier", "Meadow", "Beacon", "Canyon", "Otter",
         "Summit", "Willow", "Prism", "Anchor", "Tundra"]
PETS = ["beagle", "tabby cat", "parrot", "corgi", "rabbit", "border collie", "tortoise", "ferret", "husky"]
PET_NAMES = ["Biscuit", "Pepper", "Mochi", "Ziggy", "Luna", "Waffles", "Socks", "Nugget", "Pixel", "Olive"]
CUISINES = ["Ethiopian", "Georgian", "Peruvian", "Sichuan", "Lebanese", "Basque", "Korean", "Oaxacan", "Thai"]
DOCUMENTS = ["passport", "driving licence", "car insurance", "gym membership", "domain name", "TLS certificate",
             "health insurance", "library card", "work visa"]
CAUSES = ["an expired certificate", "a full disk", "a bad config push", "a DNS misconfiguration",
          "a memory leak", "a race condition in the scheduler", "a missing database index", "clock skew"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
SURNAMES = ["Okafor", "Lindqvist", "Tanaka", "Moreau", "Kowalski", "Haddad", "Novak", "Fernandes", "Byrne",
            "Castellano", "Ivanova", "Mbeki", "Schneider", "Nakamura", "Oyelaran", "Petrov", "Quispe", "Rasmussen",
            "Sato", "Varga", "Whitfield", "Yilmaz", "Zhou", "Abernathy", "Delacroix", "Eriksen", "Gallagher"]
STREETS = ["Maple", "Harbour", "Linden", "Station", "Church", "Mill", "Orchard", "Canal", "Quarry", "Juniper",
           "Chestnut", "Foundry", "Beacon", "Rosemary", "Tannery"]
TICKET_PREFIXES = ["OPS", "ENG", "SEC", "DATA", "WEB", "INFRA", "MOB"]
AIRLINES = ["LH", "BA", "AF", "KL", "UA", "DL", "NH", "TP", "SK", "AY"]
TOPICS = ["remote work", "the new office", "code review", "their commute", "vegetarian food", "the quarterly plan",
          "public speaking", "electric cars", "open source", "the team offsite", "on-call duty", "jazz"]

MEMORY_TEMPLATES: list[tuple[str, str]] = [
    ("preference", "{person} prefers {drink} over {drink2} in the morning."),
    ("fact", "{person} is allergic to {allergen}."),
    ("fact", "{person}'s {relation} lives in {city}."),
    ("context", "The {project} project deadline moved to {date}."),
    ("fact", "{person} works at {company} as a {role}."),
    ("preference", "{person} wants meeting notes sent every {weekday} afternoon."),
    ("context", "{person} is planning a trip to {city} in {month} {year}."),
    ("preference", "{person} prefers {language} for {task}."),
    ("decision", "The {project} team decided to use {tool} instead of {tool2}."),
    ("fact", "{person} adopted a {pet} named {pet_name} in {year}."),
    ("decision", "The budget for {project} is {amount}k dollars for Q{quarter} {year}."),
    ("context", "{person} started learning {hobby} on {date}."),
    ("preference", "{person}'s favorite restaurant in {city} is a {cuisine} place called {restaurant}."),
    ("context", "Reminder: {person} must renew the {document} before {date}."),
    ("preference", "{person} dislikes {food} and never orders it."),
    ("insight", "The {project} outage on {date} was caused by {cause}."),
    ("entity", "{person} is the main contact for {project} at {company}."),
    ("fact", "{person} moved from {city} to {city2} in {year}."),
    ("insight", "{person} is most productive before {hour} am and avoids meetings then."),
    ("decision", "{person} chose {tool} for the {project} dashboards after a trial in {month}."),
    ("fact", "{person} has {count} kids and the youngest loves {hobby}."),
    ("entity", "{restaurant} in {city} is where {person} celebrates birthdays."),
    ("context", "{person} will be on parental leave from {date} until {date2}."),
    ("preference", "{person} likes {food} but only from the place near {city} station."),
    ("context", "Ticket {ticket} tracks the {project} migration to {tool}."),
    ("fact", "{person} {surname}'s flight {flight} lands in {city} at {time}."),
    ("fact", "{person} {surname} lives at {number} {street} Street in {city}."),
    ("entity", "{person} {surname} is the {role} on the {project} project."),
    ("context", "Order #{order} from {company} should arrive on {date}."),
    ("decision", "Per ticket {ticket}, {person} will own the {tool} upgrade for {project}."),
]

QUERY_TEMPLATES = [
    "What does {person} think about {topic}?",
    "Where does {person}'s {relation} live?",
    "Which language does {person} use for {task}?",
    "What is {person} allergic to?",
    "When is the {project} deadline?",
    "Who is the contact for {project}?",
    "Why did {project} go down in {month}?",
    "Is {person} travelling to {city} soon?",
    "What pet does {person} have?",
    "Which tool did the {project} team pick?",
    "What does {person} like to drink?",
    "Does {person} like {food}?",
    "What is {person} learning besides {hobby}?",
    "Where does {person} work these days?",
    "Good {cuisine} restaurant in {city}?",
    "What is ticket {ticket} about?",
    "When does flight {flight} land?",
    "What is the address of {person} {surname}?",
    "Has order #{order} arrived yet?",
]


class Corpus:
    """Deterministic stream of unique, realistic-looking memories and never-repeated queries."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._seen_memories: set[str] = set()
        self._seen_queries: set[str] = {NEEDLE_QUERY}

    def _values(self) -> dict[str, str]:
        r = self._rng
        day, year = r.randint(1, 28), r.randint(2019, 2027)
        people = r.sample(PEOPLE, 2)
        drinks, tools, cities = r.sample(DRINKS, 2), r.sample(TOOLS, 2), r.sample(CITIES, 2)
        return {
            "person": people[0], "person2": people[1], "relation": r.choice(RELATIONS), "city": cities[0],
            "city2": cities[1], "food": r.choice(FOODS), "drink": drinks[0], "drink2": drinks[1],
            "allergen": r.choice(ALLERGENS), "hobby": r.choice(HOBBIES), "language": r.choice(LANGUAGES),
            "task": r.choice(TASKS), "tool": tools[0], "tool2": tools[1], "company": r.choice(COMPANIES),
            "role": r.choice(ROLES), "project": f"{r.choice(ADJECTIVES)} {r.choice(NOUNS)}",
            "pet": r.choice(PETS), "pet_name": r.choice(PET_NAMES), "cuisine": r.choice(CUISINES),
            "restaurant": f"{r.choice(['Casa', 'Chez', 'The', 'Little', 'Old'])} {r.choice(NOUNS)}",
            "document": r.choice(DOCUMENTS), "cause": r.choice(CAUSES), "month": r.choice(MONTHS),
            "weekday": r.choice(WEEKDAYS), "topic": r.choice(TOPICS), "year": str(year),
            "date": f"{r.choice(MONTHS)} {day}, {year}", "date2": f"{r.choice(MONTHS)} {r.randint(1, 28)}, {year + 1}",
            "amount": str(r.randrange(5, 900, 5)), "quarter": str(r.randint(1, 4)), "hour": str(r.randint(6, 10)),
            "count": str(r.randint(1, 4)), "surname": r.choice(SURNAMES), "street": r.choice(STREETS),
            "number": str(r.randint(1, 240)), "ticket": f"{r.choice(TICKET_PREFIXES)}-{r.randint(100, 9999)}",
            "flight": f"{r.choice(AIRLINES)}{r.randint(100, 999)}", "order": str(r.randint(100_000, 999_999)),
            "time": f"{r.randint(6, 23):02d}:{r.choice(['00', '15', '30', '45'])}",
        }

    def memory(self) -> dict[str, Any]:
        """One new memory as ``add``'s keyword arguments (content never repeats)."""
        for _ in range(1000):
            category, template = self._rng.choice(MEMORY_TEMPLATES)
            content = template.format(**self._values())
            if content not in self._seen_memories:
                self._seen_memories.add(content)
                return {"content": content, "category": category, "importance": round(self._rng.random(), 2)}
        raise RuntimeError("the synthetic corpus is exhausted")  # pragma: no cover - ~10^9 combinations

    def memories(self, n: int) -> list[dict[str, Any]]:
        """``n`` new memories."""
        return [self.memory() for _ in range(n)]

    def queries(self, n: int) -> list[str]:
        """``n`` queries never returned before (so their embedding cannot be cached)."""
        out: list[str] = []
        attempts = 0
        while len(out) < n:
            attempts += 1
            if attempts > 1000 * (n + 1):
                raise RuntimeError("the synthetic query space is exhausted")
            query = self._rng.choice(QUERY_TEMPLATES).format(**self._values())
            if query not in self._seen_queries:
                self._seen_queries.add(query)
                out.append(query)
        return out


# -- measurement helpers ----------------------------------------------------------------------------


def summary_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/mean/min/max (milliseconds) of durations given in seconds."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1000.0
    p50, p95 = np.percentile(ms, [50, 95])
    return {"p50": float(p50), "p95": float(p95), "mean": float(ms.mean()), "min": float(ms.min()),
            "max": float(ms.max()), "n": len(ms)}


def rss_mb() -> float:
    """Resident set size of this process in MiB."""
    gc.collect()
    return float(psutil.Process().memory_info().rss) / 2**20


class EmbedTimer:
    """Counts the time spent inside an embedder's ``embed`` (wraps the method on that instance)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._wrapped: dict[int, Any] = {}

    def attach(self, engine: MemoryEngine) -> None:
        """Time every embedding ``engine`` computes (idempotent for the shared embedder)."""
        embedder = engine.embedder
        if id(embedder) in self._wrapped:
            return
        original: Callable[[Sequence[str]], np.ndarray] = embedder.embed

        def timed(texts: Sequence[str]) -> np.ndarray:
            start = time.perf_counter()
            try:
                return original(texts)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        embedder.embed = timed  # type: ignore[method-assign]
        self._wrapped[id(embedder)] = embedder

    @contextmanager
    def measure(self) -> Iterator[list[float]]:
        """Yield a one-item list that holds, on exit, the embedding seconds spent inside the block."""
        before = self.seconds
        box = [0.0]
        try:
            yield box
        finally:
            box[0] = self.seconds - before


def clear_query_cache(engine: MemoryEngine) -> None:
    """Forget the engine's cached query embeddings."""
    cache = getattr(engine, "_cache", None)
    if cache is not None:
        cache.clear()


def cache_counts(engine: MemoryEngine) -> tuple[int, int]:
    """(misses, hits) of the engine's query cache so far; (-1, -1) without a cache."""
    cache = getattr(engine, "_cache", None)
    if cache is None:
        return -1, -1
    return int(cache.misses), int(cache.hits)


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM and library versions of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
        if match:
            cpu = match.group(1).strip()
    except OSError:
        pass

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    import sqlite3

    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "hnswlib": version("hnswlib"),
        "sentence_transformers": version("sentence-transformers"),
        "sqlalchemy": version("sqlalchemy"),
        "sqlite": sqlite3.sqlite_version,
        "headroom_integrations": version("headroom-integrations"),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_avg_1m": round(load[0], 2),
    }


# -- the benchmark ---------------------------------------------------------------------------------


@dataclass
class Settings:
    """What to run."""

    sizes: list[int]
    queries: int
    cached_reps: int
    adds: int
    chunk: int
    recall_probes: int
    multi_user_size: int
    multi_users: int
    seed: int
    progress: bool
    quick: bool
    workdir: Path
    local_runtime: str = DEFAULT_RUNTIME


@dataclass
class Filler:
    """Fills one store in ``add_batch`` chunks and keeps the throughput books."""

    chunk: int
    progress: bool
    memories: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    probes: list[tuple[str, str]] = field(default_factory=list)  # (memory id, content) samples
    first_id: str = ""  # id of the very first memory stored

    def fill(
        self, engine: MemoryEngine, timer: EmbedTimer, items: Iterator[dict[str, Any]], n: int, desc: str,
        user_id: str | None = USER,
    ) -> dict[str, float]:
        """Add ``n`` items; return this segment's memories, seconds, memories/s and embedding share."""
        seconds = embed = 0.0
        done = 0
        with tqdm(total=n, desc=desc, unit="mem", disable=not self.progress, file=sys.stderr, leave=False) as bar:
            while done < n:
                batch = [next(items) for _ in range(min(self.chunk, n - done))]
                with timer.measure() as spent:
                    start = time.perf_counter()
                    stored = engine.add_batch(batch, user_id=user_id)
                    seconds += time.perf_counter() - start
                embed += spent[0]
                self.first_id = self.first_id or stored[0].id
                self.probes.extend((m.id, m.content) for m in stored[len(stored) // 8 :: max(1, len(stored) // 4)])
                done += len(batch)
                bar.update(len(batch))
        self.memories += n
        self.seconds += seconds
        self.embed_seconds += embed
        return {"memories": n, "seconds": seconds, "memories_per_s": n / seconds if seconds else math.inf,
                "embed_share": embed / seconds if seconds else 0.0}


def measure_search(
    engine: MemoryEngine, timer: EmbedTimer, corpus: Corpus, settings: Settings, user_id: str = USER
) -> dict[str, Any]:
    """Fresh-query and cached-query search latency (and the embedding part of the fresh one)."""
    for query in corpus.queries(3):  # warm the code paths; not counted
        engine.search(query, user_id=user_id, top_k=TOP_K)
    misses_before = cache_counts(engine)[0]
    fresh: list[float] = []
    fresh_rest: list[float] = []
    fresh_embed: list[float] = []
    hits = 0
    wrong_user = 0
    for query in corpus.queries(settings.queries):
        clear_query_cache(engine)
        with timer.measure() as spent:
            start = time.perf_counter()
            results = engine.search(query, user_id=user_id, top_k=TOP_K)
            elapsed = time.perf_counter() - start
        fresh.append(elapsed)
        fresh_embed.append(spent[0])
        fresh_rest.append(max(elapsed - spent[0], 1e-9))
        hits += len(results)
        wrong_user += sum(1 for r in results if r.memory.user_id != user_id)
    misses_fresh = cache_counts(engine)[0] - misses_before
    cached_query = corpus.queries(1)[0]
    engine.search(cached_query, user_id=user_id, top_k=TOP_K)  # warms the cache
    hits_before = cache_counts(engine)[1]
    cached: list[float] = []
    for _ in range(settings.cached_reps):
        start = time.perf_counter()
        engine.search(cached_query, user_id=user_id, top_k=TOP_K)
        cached.append(time.perf_counter() - start)
    return {
        "query_cache": {"misses_during_fresh": misses_fresh,
                        "hits_during_cached": cache_counts(engine)[1] - hits_before},
        "search_fresh_ms": summary_ms(fresh),
        "search_fresh_embed_ms": summary_ms(fresh_embed),
        "search_fresh_excl_embed_ms": summary_ms(fresh_rest),
        "search_cached_ms": summary_ms(cached),
        "mean_hits": hits / max(1, settings.queries),
        "hits_of_other_users": wrong_user,
    }


def measure_adds(engine: MemoryEngine, corpus: Corpus, n: int) -> dict[str, float]:
    """Latency of ``n`` single ``add`` calls."""
    samples: list[float] = []
    for item in corpus.memories(n):
        start = time.perf_counter()
        engine.add(item["content"], user_id=USER, category=item["category"], importance=item["importance"])
        samples.append(time.perf_counter() - start)
    return summary_ms(samples)


def reopen(
    engine: MemoryEngine, config: MemoryConfig, timer: EmbedTimer, needle_id: str, probes: list[tuple[str, str]],
    n_probes: int,
) -> tuple[MemoryEngine, dict[str, Any]]:
    """Close the engine, open the same file again and search it; return the new engine and the figures."""
    embedder_before = engine.embedder
    start = time.perf_counter()
    engine.close()
    close_s = time.perf_counter() - start
    start = time.perf_counter()
    engine = MemoryEngine(config)
    open_s = time.perf_counter() - start
    timer.attach(engine)
    start = time.perf_counter()
    hits = engine.search(NEEDLE_QUERY, user_id=USER, top_k=TOP_K)
    first_search_ms = (time.perf_counter() - start) * 1000.0
    found = any(hit.memory.id == needle_id for hit in hits)
    step = max(1, len(probes) // max(1, n_probes))
    sample = probes[::step][:n_probes]
    recalled = 0
    for memory_id, content in sample:
        recalled += any(hit.memory.id == memory_id for hit in engine.search(content, user_id=USER, top_k=TOP_K))
    return engine, {
        "close_s": close_s,
        "open_s": open_s,
        "first_search_ms": first_search_ms,
        "found": found,
        "model_reused": engine.embedder is embedder_before,
        "recall_at_k": recalled / len(sample) if sample else 1.0,
        "recall_probes": len(sample),
    }


def run_single_user(
    settings: Settings, corpus: Corpus, timer: EmbedTimer
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The main benchmark: one user's store filled to each size in turn."""
    db = settings.workdir / "engine_bench.db"
    remove_store(db)
    config = MemoryConfig(db_path=db, local_runtime=settings.local_runtime)
    baseline_rss = rss_mb()
    start = time.perf_counter()
    engine = MemoryEngine(config)
    cold_open_s = time.perf_counter() - start
    timer.attach(engine)
    # A fresh torch is 2-4x slower for its first few hundred batched texts (each new padded batch
    # shape is slow once): warm it up with batches of every length, and the single-text path too.
    warm = [item["content"] for item in Corpus(settings.seed + 99).memories(512)]
    engine.embedder.embed(warm)
    for text in warm[:16]:
        engine.embedder.embed([text])
    model_rss = rss_mb()

    def items() -> Iterator[dict[str, Any]]:
        yield {"content": NEEDLE, "category": "fact", "importance": 0.9}
        while True:
            yield corpus.memory()

    stream = items()
    filler = Filler(settings.chunk, settings.progress)
    results: list[dict[str, Any]] = []
    stored = 0
    try:
        for size in settings.sizes:
            segment = filler.fill(engine, timer, stream, size - stored, desc=f"fill to {size:,}")
            stored = size
            entry: dict[str, Any] = {"n": size, "batch_add": segment, "rss_mb": rss_mb()}
            entry.update(measure_search(engine, timer, corpus, settings))
            engine, entry["reopen"] = reopen(
                engine, config, timer, filler.first_id, filler.probes, settings.recall_probes
            )
            entry["add_ms"] = measure_adds(engine, corpus, settings.adds)
            stored += settings.adds
            entry["stats_total"] = engine.stats(USER)["total"]
            results.append(entry)
            print(f"  N={size:,}: fresh p50 {entry['search_fresh_ms']['p50']:.2f} ms, "
                  f"cached p50 {entry['search_cached_ms']['p50']:.2f} ms, "
                  f"{segment['memories_per_s']:.0f} mem/s, reopen {entry['reopen']['open_s']:.2f} s",
                  file=sys.stderr)
    finally:
        engine.close()
    overall = {
        "memories": filler.memories, "seconds": filler.seconds,
        "memories_per_s": filler.memories / filler.seconds if filler.seconds else math.inf,
        "embed_share": filler.embed_seconds / filler.seconds if filler.seconds else 0.0,
    }
    extra = {"cold_open_s": cold_open_s, "baseline_rss_mb": baseline_rss, "model_rss_mb": model_rss,
             "batch_add_overall": overall, "db_bytes": store_bytes(db), "embedder": describe(engine.embedder)}
    return extra, results


def describe(embedder: Embedder) -> str:
    """The embedder's name and how it runs, for the report."""
    if isinstance(embedder, OnnxEmbedder):
        precision = "int8" if embedder.name.endswith("-int8") else "fp32"
        return f"{embedder.name} on onnxruntime {metadata.version('onnxruntime')} ({precision})"
    return f"{embedder.name} on sentence-transformers/torch"


def markers(runtime: str) -> tuple[str, str]:
    """The page markers of a run's section: one section per local runtime."""
    name = "engine-bench" if runtime == DEFAULT_RUNTIME else f"engine-bench-{runtime}"
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def run_multi_user(settings: Settings, corpus: Corpus, timer: EmbedTimer) -> dict[str, Any] | None:
    """A store shared by many users; searches are restricted to one of them."""
    if settings.multi_user_size <= 0:
        return None
    db = settings.workdir / "engine_bench_multi.db"
    remove_store(db)
    users = [f"user-{i:03d}" for i in range(settings.multi_users)]
    rng = random.Random(settings.seed + 1)

    def items() -> Iterator[dict[str, Any]]:
        position = 0
        while True:
            yield {**corpus.memory(), "user_id": users[position % len(users)]}
            position += 1
            if position % len(users) == 0:
                rng.shuffle(users)

    engine = MemoryEngine(MemoryConfig(db_path=db, local_runtime=settings.local_runtime))
    timer.attach(engine)
    try:
        segment = Filler(settings.chunk, settings.progress).fill(
            engine, timer, items(), settings.multi_user_size, desc=f"fill {settings.multi_users} users", user_id=None
        )
        target = sorted(users)[len(users) // 2]
        entry: dict[str, Any] = {"n": settings.multi_user_size, "users": settings.multi_users, "searched_user": target,
                                 "per_user": engine.stats(target)["total"], "batch_add": segment}
        entry.update(measure_search(engine, timer, corpus, settings, user_id=target))
    finally:
        engine.close()
    return entry


def remove_store(db: Path) -> None:
    """Delete a database file and its WAL/HNSW companions."""
    for suffix in ("", "-wal", "-shm", "-journal", ".hnsw", ".hnsw.json", ".hnsw.rows"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def store_bytes(db: Path) -> int:
    """Bytes on disk of a database and its companions."""
    total = 0
    for suffix in ("", "-wal", ".hnsw", ".hnsw.json", ".hnsw.rows"):
        path = Path(f"{db}{suffix}")
        if path.exists():
            total += path.stat().st_size
    return total


# -- reporting -----------------------------------------------------------------------------------


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Compare the largest measured size with the targets (which are stated for a 100k store)."""
    last = results["sizes"][-1]
    n = last["n"]
    rows = [
        ("search p50, fresh query", "<= 5 ms", last["search_fresh_ms"]["p50"], 5.0, "le", "ms"),
        ("search p95, fresh query", "<= 10 ms", last["search_fresh_ms"]["p95"], 10.0, "le", "ms"),
        ("search p50, cached query", "<= 1 ms", last["search_cached_ms"]["p50"], 1.0, "le", "ms"),
        ("batch add throughput", ">= 300 memories/s", results["batch_add_overall"]["memories_per_s"], 300.0, "ge",
         "memories/s"),
        ("reopen of the store", "< 2 s", last["reopen"]["open_s"], 2.0, "lt", "s"),
    ]
    out = []
    for name, target, value, limit, op, unit in rows:
        ok = value <= limit if op == "le" else value >= limit if op == "ge" else value < limit
        out.append({"name": name, "target": target, "value": value, "unit": unit, "met": ok, "at_n": n,
                    "at_target_size": n >= TARGET_SIZE})
    return out


def fmt(value: float) -> str:
    """A latency or size with sensible precision."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def markdown(results: dict[str, Any]) -> str:
    """The report: main table, details, targets, multi-user setting and machine."""
    m = results["machine"]
    s = results["settings"]
    runtime = s.get("local_runtime", DEFAULT_RUNTIME)
    option = "" if runtime == DEFAULT_RUNTIME else f" --local-runtime {runtime}"
    lines = [
        "## Engine benchmark" + ("" if runtime == DEFAULT_RUNTIME else f', `local_runtime="{runtime}"`'),
        "",
        f"Measured {m['date']} with `python benchmarks/bench_engine.py"
        f"{' --quick' if results['quick'] else ''}{option} --sizes {','.join(str(x) for x in s['sizes'])}`"
        f" (one user; embedder {results['embedder']}; top_k={TOP_K}; {s['queries']} fresh queries, "
        f"{s['cached_reps']} cached repetitions and {s['adds']} single adds per size; "
        f"add_batch chunks of {s['chunk']}).",
        "",
        "| N | search fresh p50 / p95 (ms) | search cached p50 / p95 (ms) | add p50 / p95 (ms) "
        "| batch add (mem/s) | reopen (s) | first search after reopen (ms) | found after reopen | RSS (MiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|:---:|---:|",
    ]
    for e in results["sizes"]:
        lines.append(
            f"| {e['n']:,} | {fmt(e['search_fresh_ms']['p50'])} / {fmt(e['search_fresh_ms']['p95'])} "
            f"| {fmt(e['search_cached_ms']['p50'])} / {fmt(e['search_cached_ms']['p95'])} "
            f"| {fmt(e['add_ms']['p50'])} / {fmt(e['add_ms']['p95'])} | {e['batch_add']['memories_per_s']:,.0f} "
            f"| {fmt(e['reopen']['open_s'])} | {fmt(e['reopen']['first_search_ms'])} "
            f"| {'yes' if e['reopen']['found'] else 'NO'} | {e['rss_mb']:,.0f} |"
        )
    overall = results["batch_add_overall"]
    lines += [
        "",
        "<details><summary>Details</summary>",
        "",
        "| N | fresh search: embedding p50 (ms) | fresh search without embedding p50 / p95 (ms) "
        "| batch add embedding share | close + save index (s) | recall@5 of stored texts after reopen "
        "| model reused on reopen |",
        "|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for e in results["sizes"]:
        r = e["reopen"]
        lines.append(
            f"| {e['n']:,} | {fmt(e['search_fresh_embed_ms']['p50'])} "
            f"| {fmt(e['search_fresh_excl_embed_ms']['p50'])} / {fmt(e['search_fresh_excl_embed_ms']['p95'])} "
            f"| {e['batch_add']['embed_share']:.0%} | {fmt(r['close_s'])} "
            f"| {r['recall_at_k']:.0%} ({r['recall_probes']}) | {'yes' if r['model_reused'] else 'NO'} |"
        )
    lines += [
        "",
        f"Overall add_batch: {overall['memories']:,} memories in {overall['seconds']:.1f} s = "
        f"{overall['memories_per_s']:,.0f} memories/s ({overall['embed_share']:.0%} of it embedding). "
        f"First engine open including the model load: {results['cold_open_s']:.2f} s. "
        f"RSS after model load: {results['model_rss_mb']:,.0f} MiB. "
        f"Store on disk at the end: {results['db_bytes'] / 2**20:,.1f} MiB.",
        "",
        "</details>",
        "",
        "### Targets",
        "",
    ]
    at_size = results["targets"][0]["at_n"]
    if at_size < TARGET_SIZE:
        lines += [f"The targets are stated for a {TARGET_SIZE:,}-memory store; this run's largest store holds "
                  f"{at_size:,}, so the verdicts below are only indicative.", ""]
    lines += ["| target | measured | met |", "|---|---:|:---:|"]
    for t in results["targets"]:
        value = f"{t['value']:,.0f}" if t["unit"] == "memories/s" else fmt(t["value"])
        lines.append(f"| {t['name']} {t['target']} | {value} {t['unit']} (N={t['at_n']:,}) "
                     f"| {'yes' if t['met'] else 'NO'} |")
    multi = results.get("multi_user")
    if multi:
        lines += [
            "",
            f"### Many users in one store ({multi['users']} users, {multi['n']:,} memories, "
            f"search restricted to one user holding {multi['per_user']:,})",
            "",
            "| search fresh p50 / p95 (ms) | search cached p50 / p95 (ms) | batch add (mem/s) | hits of other users |",
            "|---:|---:|---:|---:|",
            f"| {fmt(multi['search_fresh_ms']['p50'])} / {fmt(multi['search_fresh_ms']['p95'])} "
            f"| {fmt(multi['search_cached_ms']['p50'])} / {fmt(multi['search_cached_ms']['p95'])} "
            f"| {multi['batch_add']['memories_per_s']:,.0f} | {multi['hits_of_other_users']} |",
        ]
    lines += [
        "",
        "### Machine",
        "",
        f"{m['cpu']}, {m['logical_cores']} logical cores ({m['physical_cores']} physical), "
        f"{m['ram_gib']} GiB RAM, {m['os']}; Python {m['python']}, torch {m['torch']} "
        f"({m['torch_threads']} threads), numpy {m['numpy']}, hnswlib {m['hnswlib']}, "
        f"sentence-transformers {m['sentence_transformers']}, SQLAlchemy {m['sqlalchemy']}, SQLite {m['sqlite']}. "
        f"Load average (1 min) before the run: {m['load_avg_1m']} (it lags by a minute or so, so it still "
        f"counts a run just finished). Other processes used {m.get('other_processes_cores', 0.0):.2f} cores on "
        "average during this run.",
    ]
    # The load average cannot tell: before the run it still counts the previous step of `make bench`,
    # at its end it counts this run. The CPU time of other processes during the run can.
    busy = m.get("other_processes_cores", 0.0)
    if busy >= 0.25:
        lines += ["", f"**Warning:** other processes kept {busy:.2f} of the {m['logical_cores']} cores busy during "
                  "the run; the embedding model suffers most, so these figures are pessimistic."]
    return "\n".join(lines) + "\n"



# -- command line ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", help="comma-separated store sizes, filled incrementally (default 1000,10000,100000;"
                        " with --quick 200,1000)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repetitions (< 60 s)")
    parser.add_argument("--out", type=Path, help="markdown file whose engine-bench section is written/replaced")
    parser.add_argument("--json", type=Path, help="write the raw results as JSON here")
    parser.add_argument("--workdir", type=Path, help="where the database files go (default: a temporary directory,"
                        " deleted afterwards)")
    parser.add_argument("--queries", type=int, help="fresh queries per size (default 200; quick 30)")
    parser.add_argument("--cached-reps", type=int, help="cached-query repetitions per size (default 200; quick 50)")
    parser.add_argument("--adds", type=int, help="single adds per size (default 100; quick 20)")
    parser.add_argument("--chunk", type=int, default=1000, help="add_batch chunk size (default 1000)")
    parser.add_argument("--recall-probes", type=int, help="stored texts searched after reopen (default 20; quick 5)")
    parser.add_argument("--multi-user-size", type=int,
                        help="memories in the many-users store, 0 to skip (default 10000; quick 300)")
    parser.add_argument("--multi-users", type=int, default=100, help="users in the many-users store (default 100)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic content")
    parser.add_argument("--local-runtime", default=DEFAULT_RUNTIME, choices=LOCAL_RUNTIMES,
                        help="how the local MiniLM runs (default auto: int8 ONNX for a new store); other runtimes "
                             "get their own section of the page")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace, workdir: Path) -> Settings:
    """Resolve defaults (which depend on ``--quick``) and validate."""
    quick = bool(args.quick)

    def pick(value: int | None, full: int, small: int) -> int:
        return value if value is not None else (small if quick else full)

    raw_sizes = args.sizes or ("200,1000" if quick else "1000,10000,100000")
    try:
        sizes = sorted({int(x.replace("_", "")) for x in raw_sizes.split(",") if x.strip()})
    except ValueError:
        raise SystemExit(f"--sizes must be comma-separated integers, got {raw_sizes!r}") from None
    if not sizes or sizes[0] < 2:
        raise SystemExit("--sizes must hold integers >= 2")
    settings = Settings(
        sizes=sizes, queries=pick(args.queries, 200, 30), cached_reps=pick(args.cached_reps, 200, 50),
        adds=pick(args.adds, 100, 20), chunk=args.chunk, recall_probes=pick(args.recall_probes, 20, 5),
        multi_user_size=pick(args.multi_user_size, 10_000, 300), multi_users=args.multi_users, seed=args.seed,
        progress=not args.no_progress, quick=quick, workdir=workdir, local_runtime=args.local_runtime,
    )
    for name in ("queries", "cached_reps", "adds", "chunk", "recall_probes", "multi_users"):
        if getattr(settings, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
    if any(b - a < settings.adds for a, b in itertools.pairwise(sizes)):
        raise SystemExit(f"consecutive sizes must differ by at least --adds ({settings.adds})")
    return settings


def run(settings: Settings) -> dict[str, Any]:
    """Run every measurement and return the results (JSON-serialisable)."""
    corpus = Corpus(settings.seed)
    timer = EmbedTimer()
    machine = machine_info()
    others = _report.OtherLoad()
    started = time.perf_counter()
    extra, sizes = run_single_user(settings, corpus, timer)
    multi = run_multi_user(settings, corpus, timer)
    machine["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else 0.0  # incl. us
    machine["other_processes_cores"] = others.cores()
    results: dict[str, Any] = {
        "schema": 1,
        "quick": settings.quick,
        "machine": machine,
        "settings": {"sizes": settings.sizes, "queries": settings.queries, "cached_reps": settings.cached_reps,
                     "adds": settings.adds, "chunk": settings.chunk, "recall_probes": settings.recall_probes,
                     "multi_user_size": settings.multi_user_size, "multi_users": settings.multi_users,
                     "seed": settings.seed, "top_k": TOP_K, "local_runtime": settings.local_runtime},
        **extra,
        "sizes": sizes,
        "multi_user": multi,
    }
    results["targets"] = targets(results)
    results["wall_s"] = time.perf_counter() - started
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as scratch:
        workdir = Path(args.workdir) if args.workdir else Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        settings = settings_from(args, workdir)
        results = run(settings)
    report = markdown(results)
    _report.publish(report, results, args.out, args.json, *markers(settings.local_runtime))
    return 0


if __name__ == "__main__":
    sys.exit(main())
