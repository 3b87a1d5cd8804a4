"""A loopback HTTP server that speaks the OpenAI chat-completions wire format
(``POST /v1/chat/completions``), for testing the OpenAI-compatible engine with the real ``openai``
SDK where no model server can run: each request is answered by a script keyed on its last user
message, and the server records what it received and how many requests it held at once."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from support.loopback import reply_json, serve

#: An answer: ``(HTTP status, message content or error text, finish_reason)``.
Answer = tuple[int, str, str]


@dataclass
class ChatServer:
    """What the server saw: every request body, and the most requests in flight at once."""

    script: Callable[[str, int], Answer]
    delay_s: float = 0.0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    max_in_flight: int = 0
    _in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def in_flight(self) -> int:
        """Requests being answered now."""
        with self._lock:
            return self._in_flight

    def answer(self, body: dict[str, Any]) -> Answer:
        """Record ``body`` and answer it (``script(last user message, times seen before)``)."""
        prompt = body["messages"][-1]["content"]
        with self._lock:
            self.bodies.append(body)
            n = self.seen.get(prompt, 0)
            self.seen[prompt] = n + 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            time.sleep(self.delay_s)
            return self.script(prompt, n)
        finally:
            with self._lock:
                self._in_flight -= 1


def _handler(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/v1/chat/completions":
                reply_json(self, 404, {"error": {"message": "no such route", "type": "not_found"}})
                return
            status, text, finish = server.answer(body)
            if status != 200:
                reply_json(
                    self, status, {"error": {"message": text, "type": "error", "code": status}}
                )
                return
            reply_json(self, 200, {
                "id": "chatcmpl-test", "object": "chat.completion", "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": finish,
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": len(json.dumps(body["messages"])) // 4,
                          "completion_tokens": max(1, len(text) // 4),
                          "total_tokens": 0},
            })  # fmt: skip

    return Handler


@contextmanager
def chat_server(
    script: Callable[[str, int], Answer], delay_s: float = 0.0
) -> Iterator[tuple[str, ChatServer]]:
    """``with chat_server(script) as (base_url, seen):`` serves on 127.0.0.1 (a free port) in a
    thread; ``base_url`` ends in ``/v1``."""
    state = ChatServer(script, delay_s)
    with serve(_handler(state)) as url:
        yield f"{url}/v1", state
