"""Embed task (``embed`` queue): decode pattern ids, run
:func:`pipeline.store.embed.embed_and_hand_on`."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from pipeline.queues import TaskName
from pipeline.store.embed import embed_and_hand_on
from workers import resources
from workers.app import RETRY_POLICY, app


@app.task(name=TaskName.EMBED.value, **RETRY_POLICY)
def embed_patterns_task(pattern_ids: list[str]) -> dict[str, Any]:
    """Embed the given patterns (skipping any already embedded) and record recurrences; with
    PATTERNS_GITHUB_TOKEN set, queue feedback comments for their webhook deliveries."""
    res = resources.current()
    summary = embed_and_hand_on(
        db=res.db(),
        embedder=res.embedder(),
        settings=res.settings,
        dispatcher=res.dispatcher(),
        pattern_ids=[uuid.UUID(p) for p in pattern_ids],
    )
    return dataclasses.asdict(summary)
