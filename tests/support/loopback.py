"""A plain HTTP server on loopback for fakes of remote APIs written as
``http.server`` handlers: serve one in a daemon thread, answer JSON."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``with serve(Handler) as base_url:`` serves on 127.0.0.1 (a free port) in a daemon
    thread; ``base_url`` is ``http://127.0.0.1:PORT``. Stops and closes the socket at exit."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def reply_json(handler: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
    """Answer ``payload`` as JSON with ``status`` and a Content-Length."""
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
