"""A scripted, OpenAI-compatible HTTP server on loopback for tests (stdlib only).

Usage::

    stub = StubLLM()
    stub.reply("Hello there")                      # next chat completion answers this
    client = OpenAI(api_key="test", base_url=stub.base_url)
    client.chat.completions.create(model="m", messages=[...])
    assert stub.count == 1 and stub.requests[0]["messages"] == [...]
    stub.close()

Endpoints:

* ``POST /v1/chat/completions`` -- pops the next queued reply (``"ok"`` when the queue is empty);
  answers as a ``chat.completion`` JSON object, or as server-sent events of ``chat.completion.chunk``
  objects when the body has ``"stream": true``.
* ``GET /v1/models`` and ``GET /v1/models/{id}`` -- one model, ``stub-model``.
* ``POST /v1/embeddings`` -- deterministic 8-dimensional unit vectors (``float`` or ``base64``).
* anything else -- 404 with an OpenAI-style error body.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["STUB_MODEL", "StubLLM", "stub_llm"]

STUB_MODEL = "stub-model"
"""The single model id served by ``GET /v1/models``."""

EMBEDDING_DIM = 8
"""Dimension of the vectors returned by ``POST /v1/embeddings``."""

_DEFAULT_PIECE = 7
_ids = itertools.count(1)


@dataclass
class _Reply:
    """One queued chat-completion answer."""

    contents: tuple[str | None, ...] = ("ok",)
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    chunks: list[str] | None = None
    usage: bool = True
    fn: Callable[[dict[str, Any]], str | None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _ApiError(Exception):
    """An error to send back in OpenAI's error format."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code


def _tokens(text: str | None) -> int:
    """Crude, deterministic token count (whitespace-separated words)."""
    return len(text.split()) if text else 0


def _prompt_tokens(body: dict[str, Any]) -> int:
    """Token count of every textual part of the request's messages."""
    total = 0
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            total += _tokens(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += _tokens(part["text"])
    return total


def _split(text: str, size: int = _DEFAULT_PIECE) -> list[str]:
    """Split ``text`` into pieces of ``size`` characters (no pieces for an empty text)."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def _normalise_tool_calls(tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fill in ``id``/``type`` and JSON-encode non-string ``arguments`` of OpenAI tool calls."""
    result = []
    for i, call in enumerate(tool_calls):
        function = dict(call.get("function") or {})
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        result.append(
            {
                "id": call.get("id") or f"call_stub{next(_ids)}_{i}",
                "type": call.get("type", "function"),
                "function": {"name": function.get("name", ""), "arguments": arguments},
            }
        )
    return result


def _embedding(text: str) -> list[float]:
    """A deterministic unit vector of ``EMBEDDING_DIM`` floats derived from ``text``."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    raw = [(b - 127.5) / 127.5 for b in digest[:EMBEDDING_DIM]]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    # Round-trip through float32 so "float" and "base64" encodings give identical values.
    return list(struct.unpack(f"<{EMBEDDING_DIM}f", struct.pack(f"<{EMBEDDING_DIM}f", *(x / norm for x in raw))))


class StubLLM:
    """Scripted OpenAI-compatible server on ``127.0.0.1`` (random port), running in a daemon thread.

    Attributes:
        base_url: ``"http://127.0.0.1:PORT/v1"``, to pass as ``base_url`` to ``OpenAI``/``AsyncOpenAI``.
        requests: JSON bodies of every ``POST /v1/chat/completions``, in arrival order.
        embedding_requests: JSON bodies of every ``POST /v1/embeddings``, in arrival order.
    """

    def __init__(self) -> None:
        """Start the server; it serves until :meth:`close`."""
        self.requests: list[dict[str, Any]] = []
        self.embedding_requests: list[dict[str, Any]] = []
        self._queue: deque[_Reply] = deque()
        self._lock = threading.Lock()
        self._closed = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.base_url = f"http://{host}:{port}/v1"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="stub-llm", daemon=True
        )
        self._thread.start()

    # -- scripting -------------------------------------------------------------------------------

    def reply(
        self,
        *contents: str | None,
        tool_calls: list[dict[str, Any]] | None = None,
        finish_reason: str | None = None,
        chunks: list[str] | None = None,
        usage: bool = True,
    ) -> None:
        """Queue the next chat-completion response.

        Args:
            *contents: One message content per choice (several for ``n > 1``; ``None`` gives
                ``content: null``). A single content is repeated for the request's ``n``. Without any
                content: ``None`` when ``tool_calls`` is given, else ``"".join(chunks)`` or ``""``.
            tool_calls: OpenAI ``tool_calls`` for choice 0, e.g.
                ``[{"function": {"name": "f", "arguments": "{}"}}]``; missing ``id``/``type`` are filled
                in and non-string ``arguments`` are JSON-encoded.
            finish_reason: ``finish_reason`` of every choice; by default ``"tool_calls"`` when
                ``tool_calls`` is given, else ``"stop"``.
            chunks: For streaming, the exact content pieces sent as deltas for choice 0 (and for the
                repeats of a single content); their concatenation must equal that content. Other
                contents are split into pieces of 7 characters.
            usage: Whether to report ``usage`` (non-streaming always, streaming when the request asks for
                ``stream_options.include_usage``).

        Raises:
            ValueError: If ``chunks`` do not concatenate to the first content.
        """
        if not contents:
            contents = (None,) if tool_calls else ("".join(chunks) if chunks is not None else "",)
        if chunks is not None and "".join(chunks) != (contents[0] or ""):
            raise ValueError("chunks must concatenate to the first content")
        with self._lock:
            self._queue.append(
                _Reply(
                    contents=tuple(contents),
                    tool_calls=_normalise_tool_calls(tool_calls) if tool_calls else None,
                    finish_reason=finish_reason,
                    chunks=list(chunks) if chunks is not None else None,
                    usage=usage,
                )
            )

    def reply_fn(self, fn: Callable[[dict[str, Any]], str | None]) -> None:
        """Queue a reply whose content is computed from the request body (called in the server thread).

        Args:
            fn: Called with the parsed JSON body; returns the content of every choice. If it raises, the
                client receives a 500 error in OpenAI's format.
        """
        with self._lock:
            self._queue.append(_Reply(fn=fn))

    @property
    def count(self) -> int:
        """Number of chat-completion requests received so far."""
        with self._lock:
            return len(self.requests)

    @property
    def pending(self) -> int:
        """Number of queued replies not consumed yet."""
        with self._lock:
            return len(self._queue)

    def close(self) -> None:
        """Stop the server and release its socket (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> StubLLM:
        """Return the running server."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the server."""
        self.close()

    # -- request handling (server threads) ---------------------------------------------------------

    def _take(self, body: dict[str, Any]) -> _Reply:
        """Log ``body`` and pop the next queued reply (default ``"ok"``)."""
        with self._lock:
            self.requests.append(body)
            return self._queue.popleft() if self._queue else _Reply()

    def _choices(self, reply: _Reply, body: dict[str, Any]) -> list[dict[str, Any]]:
        """Resolve a reply into per-choice ``content``/``tool_calls``/``finish_reason``/``pieces``."""
        contents: tuple[str | None, ...] = reply.contents
        if reply.fn is not None:
            try:
                contents = (reply.fn(body),)
            except Exception as exc:
                raise _ApiError(500, f"reply_fn failed: {exc!r}", "server_error") from exc
        n = body.get("n") or 1
        repeated = len(contents) == 1 and isinstance(n, int) and n > 1
        if repeated:
            contents = contents * n
        choices = []
        for i, content in enumerate(contents):
            tool_calls = reply.tool_calls if i == 0 else None
            use_chunks = reply.chunks is not None and (i == 0 or repeated)
            pieces = list(reply.chunks or []) if use_chunks else _split(content or "")
            choices.append(
                {
                    "content": content,
                    "tool_calls": tool_calls,
                    "finish_reason": reply.finish_reason or ("tool_calls" if tool_calls else "stop"),
                    "pieces": pieces,
                }
            )
        return choices

    def _completion(self, body: dict[str, Any]) -> tuple[dict[str, Any] | None, list[dict[str, Any]] | None]:
        """Build the answer to a chat-completion request: ``(json, None)`` or ``(None, sse_events)``."""
        reply = self._take(body)
        choices = self._choices(reply, body)
        model = body.get("model") or STUB_MODEL
        ident = f"chatcmpl-stub{next(_ids)}"
        created = int(time.time())
        prompt_tokens = _prompt_tokens(body)
        completion_tokens = sum(_tokens(c["content"]) for c in choices)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if not body.get("stream"):
            out_choices = []
            for i, choice in enumerate(choices):
                message: dict[str, Any] = {"role": "assistant", "content": choice["content"], "refusal": None}
                if choice["tool_calls"]:
                    message["tool_calls"] = choice["tool_calls"]
                out_choices.append(
                    {"index": i, "message": message, "logprobs": None, "finish_reason": choice["finish_reason"]}
                )
            return {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_stub",
                "choices": out_choices,
                "usage": usage if reply.usage else None,
            }, None

        include_usage = bool((body.get("stream_options") or {}).get("include_usage")) and reply.usage

        def chunk(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            event: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_stub",
                "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                event["usage"] = None
            return event

        per_choice: list[list[dict[str, Any]]] = []
        for i, choice in enumerate(choices):
            content = choice["content"]
            events = [chunk(i, {"role": "assistant", "content": "" if content is not None else None})]
            if content is not None:
                events.extend(chunk(i, {"content": piece}) for piece in choice["pieces"])
            for t, call in enumerate(choice["tool_calls"] or []):
                head = {
                    "index": t,
                    "id": call["id"],
                    "type": call["type"],
                    "function": {"name": call["function"]["name"], "arguments": ""},
                }
                events.append(chunk(i, {"tool_calls": [head]}))
                for piece in _split(call["function"]["arguments"]):
                    events.append(chunk(i, {"tool_calls": [{"index": t, "function": {"arguments": piece}}]}))
            per_choice.append(events)
        stream = [e for group in itertools.zip_longest(*per_choice) for e in group if e is not None]
        stream.extend(chunk(i, {}, choice["finish_reason"]) for i, choice in enumerate(choices))
        if include_usage:
            stream.append(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_stub",
                    "choices": [],
                    "usage": usage,
                }
            )
        return None, stream

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        """Answer ``POST /v1/embeddings`` with deterministic vectors."""
        with self._lock:
            self.embedding_requests.append(body)
        raw = body.get("input")
        if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)):
            inputs: list[Any] = [raw]
        elif isinstance(raw, list) and raw:
            inputs = raw
        else:
            raise _ApiError(400, "'input' must be a non-empty string or array", code="invalid_value")
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, item in enumerate(inputs):
            vector = _embedding(item if isinstance(item, str) else json.dumps(item))
            encoded: Any = (
                base64.b64encode(struct.pack(f"<{EMBEDDING_DIM}f", *vector)).decode("ascii") if as_base64 else vector
            )
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        tokens = sum(_tokens(x) if isinstance(x, str) else len(x) for x in inputs)
        return {
            "object": "list",
            "data": data,
            "model": body.get("model") or STUB_MODEL,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def _model() -> dict[str, Any]:
    """The OpenAI ``model`` object of :data:`STUB_MODEL`."""
    return {"id": STUB_MODEL, "object": "model", "created": 0, "owned_by": "stub"}


def _make_handler(stub: StubLLM) -> type[BaseHTTPRequestHandler]:
    """Build the request-handler class bound to ``stub`` (HTTP/1.0: one request per connection)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "StubLLM/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the default stderr access log."""

        def _send_json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _send_error(self, err: _ApiError) -> None:
            self._send_json(
                err.status, {"error": {"message": err.message, "type": err.type, "param": None, "code": err.code}}
            )

        def _send_sse(self, events: list[dict[str, Any]]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            for event in events:
                self.wfile.write(b"data: " + json.dumps(event).encode("utf-8") + b"\n\n")
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

        def _path(self) -> str:
            return self.path.split("?", 1)[0].rstrip("/")

        def _body_bytes(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length > 0 else b""

        def _body(self) -> dict[str, Any]:
            raw = self._body_bytes()
            try:
                body = json.loads(raw or b"{}")
            except ValueError as exc:
                raise _ApiError(400, f"Invalid JSON body: {exc}") from exc
            if not isinstance(body, dict):
                raise _ApiError(400, "The request body must be a JSON object")
            return body

        def _not_found(self) -> _ApiError:
            return _ApiError(404, f"Invalid URL ({self.command} {self.path})")

        def _dispatch(self, action: Callable[[], None]) -> None:
            try:
                action()
            except _ApiError as err:
                self._send_error(err)
            except (BrokenPipeError, ConnectionResetError):
                pass
            except Exception as exc:
                self._send_error(_ApiError(500, f"stub server error: {exc!r}", "server_error"))

        def do_GET(self) -> None:
            def action() -> None:
                path = self._path()
                if path == "/v1/models":
                    self._send_json(200, {"object": "list", "data": [_model()]})
                elif path == f"/v1/models/{STUB_MODEL}":
                    self._send_json(200, _model())
                else:
                    raise self._not_found()

            self._dispatch(action)

        def do_POST(self) -> None:
            def action() -> None:
                path = self._path()
                if path.endswith("/chat/completions"):  # also Azure: /v1/deployments/{name}/chat/completions
                    payload, events = stub._completion(self._body())
                    if events is not None:
                        self._send_sse(events)
                    else:
                        assert payload is not None
                        self._send_json(200, payload)
                elif path == "/v1/embeddings":
                    self._send_json(200, stub._embeddings(self._body()))
                else:
                    self._body_bytes()  # drain, so closing the socket cannot reset the connection
                    raise self._not_found()

            self._dispatch(action)

        def _other(self) -> None:
            def action() -> None:
                self._body_bytes()
                raise self._not_found()

            self._dispatch(action)

        do_PUT = do_DELETE = do_PATCH = _other

    return Handler


def stub_llm() -> Iterator[StubLLM]:
    """Fixture body: yield a running :class:`StubLLM` and close it afterwards.

    Register with ``stub_llm_fixture = pytest.fixture(name="stub_llm")(stub_llm)`` in a conftest.

    Yields:
        The running stub server.
    """
    stub = StubLLM()
    try:
        yield stub
    finally:
        stub.close()
