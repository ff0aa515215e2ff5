"""An offline stand-in for an OpenAI-compatible chat model, for demos and notebooks.

It is **not** a language model: a few rules that answer like a polite assistant and, when the
user states a preference, a job or a fact, end the reply with a ``<memory>`` block exactly as the
extraction instruction asks (including ``supersedes`` when a remembered job changed). It serves
``POST /v1/chat/completions`` (plain and streamed) on 127.0.0.1, so the real ``openai`` SDK and
``with_memory`` run against it unchanged.

Example::

    with StandInLLM() as llm:
        client = with_memory(OpenAI(api_key="offline", base_url=llm.base_url), user_id="bob")
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["StandInLLM", "stand_in_reply"]

_HANDLE = re.compile(r"^\[(m\d+)\] (?:\([\d-]+\) )?\((\w+)\) (.+)$", re.MULTILINE)  # [m1] (2023-05-08) (fact) …
_RULES: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"\bI (?:now |just )?(?:work|started working) (?:at|for) ([^.,!?]+)", re.I), "fact", "Works at {}"),
    (re.compile(r"\bI (?:just )?moved to ([^.,!?]+) (?:as|to work)", re.I), "fact", "Works at {}"),
    (re.compile(r"\bI (?:prefer|love|like) ([^.!?]+)", re.I), "preference", "Prefers {}"),
    (re.compile(r"\bI(?:'m| am) (?:working on|debugging|migrating) ([^.!?]+)", re.I), "context", "Working on {}"),
    (re.compile(r"\bmy (\w+(?: \w+)?) is (?:called |named )?([^.,!?]+)", re.I), "entity", "{} is {}"),
]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def stand_in_reply(messages: list[dict[str, Any]]) -> str:
    """The stand-in's reply to a conversation (deterministic)."""
    users = [m for m in messages if m.get("role") == "user"]
    if not users:
        return "Hello! How can I help?"
    text = _text(users[-1].get("content"))
    asked, _, injected = text.partition("<memories>")
    remembered = [(h, cat, fact) for h, cat, fact in _HANDLE.findall(injected)]
    instructed = any(
        "<memory>" in _text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")
    )
    found = []
    for pattern, category, template in _RULES:
        match = pattern.search(asked)
        if match:
            groups = [g.strip() for g in match.groups()]
            groups[0] = groups[0][0].upper() + groups[0][1:] if category == "entity" else groups[0]
            memory: dict[str, Any] = {"content": template.format(*groups), "category": category,
                                      "importance": 0.8 if category != "context" else 0.5}
            if category == "fact":
                for handle, old_category, fact in remembered:
                    if old_category == "fact" and fact.startswith("Works at"):
                        memory["supersedes"] = handle
            found.append(memory)
    if found:
        reply = "Got it — I'll keep that in mind."
    elif remembered:
        facts = "; ".join(fact for _, _, fact in remembered[:3])
        reply = f"Based on what I remember about you ({facts}), here is my suggestion for: {asked.strip()}"
    else:
        reply = f"I don't know much about you yet. About '{asked.strip()}': tell me more?"
    if found and instructed:
        reply += "\n\n<memory>" + json.dumps({"memories": found}) + "</memory>"
    return reply


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args: Any) -> None:  # quiet
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            body = None
        if not self.path.rstrip("/").endswith("/chat/completions") or not isinstance(body, dict):
            self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
            return
        self.server.calls += 1  # type: ignore[attr-defined]
        reply = stand_in_reply(body.get("messages") or [])
        common = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "created": int(time.time()),
                  "model": body.get("model", "stand-in")}
        if not body.get("stream"):
            self._send(200, {**common, "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        pieces = [{"role": "assistant", "content": ""}]
        pieces += [{"content": reply[i : i + 6]} for i in range(0, len(reply), 6)]
        for position, delta in enumerate(pieces):
            finish = "stop" if position == len(pieces) - 1 else None
            chunk = {**common, "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class StandInLLM:
    """A running stand-in endpoint on 127.0.0.1 (see the module docstring). Context manager.

    Attributes:
        base_url: the OpenAI-style base URL to give a client.
        calls: chat completion requests served so far.

    Example::

        with StandInLLM() as llm:
            print(llm.base_url)   # http://127.0.0.1:PORT/v1
    """

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.calls = 0  # type: ignore[attr-defined]
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def calls(self) -> int:
        """Chat completion requests served so far."""
        return int(self._server.calls)  # type: ignore[attr-defined]

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> StandInLLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
