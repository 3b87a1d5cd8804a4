"""Helpers of the integration tests: a real uvicorn server on loopback in a thread, a look at what
was published to Redis, and stored interactions to work on."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from support.asgi_server import serve_asgi

from pipeline.db.engine import ALL_PROJECTS


@pytest.fixture()
def live_server() -> Callable[[Any], AbstractContextManager[str]]:
    """``with live_server(app) as base_url:`` runs an ASGI app under uvicorn on 127.0.0.1."""
    return serve_asgi


def _queued_tasks(redis_url: str, queue: str = "extract.local") -> list[tuple[str, list[Any]]]:
    """``(task name, args)`` of every message waiting in a Celery queue on Redis, oldest first.

    kombu's Redis transport LPUSHes JSON envelopes whose ``body`` is base64 JSON
    ``[args, kwargs, embed]`` (Celery message protocol 2).
    """
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.lrange(queue, 0, -1)
    finally:
        client.close()
    out = []
    for item in reversed(raw):
        envelope = json.loads(item)
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        out.append((envelope["headers"]["task"], args))
    return out


@pytest.fixture()
def queued_tasks(redis_url: str) -> Callable[..., list[tuple[str, list[Any]]]]:
    """``queued_tasks(queue="extract.local")``: the messages waiting on the test Redis."""
    return lambda queue="extract.local": _queued_tasks(redis_url, queue)


@pytest.fixture()
def stored_interactions(db: Any) -> Callable[..., list[int]]:
    """``stored_interactions(n, kind=..., content="... {i} ...", key="prefix-{i}")`` stores ``n``
    interactions of project ``acme/widgets`` (``received``) and returns their ids in order."""
    from pipeline.intake.normalize import NormalizedInteraction
    from pipeline.intake.store import store

    def make(
        n: int, *, kind: str = "conversation", content: str = "conversation {i} about retries",
        key: str = "test-{i}", project: str = "acme/widgets",
    ) -> list[int]:  # fmt: skip
        records = [
            NormalizedInteraction(
                project=project,
                source="api",
                kind=kind,
                content=content.format(i=i),
                idempotency_key=key.format(i=i),
            )
            for i in range(n)
        ]
        with db.session(ALL_PROJECTS) as s:
            return store(s, records).interaction_ids

    return make
