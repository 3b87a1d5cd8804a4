"""An ASGI application under a real uvicorn on loopback, in a daemon thread (the integration
tests' ``live_server`` fixture and the browser tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """``with serve_asgi(app) as base_url:`` runs ``app`` (lifespan included) on 127.0.0.1, a
    free port; ``base_url`` is ``http://127.0.0.1:PORT``. Stops the server at exit."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
