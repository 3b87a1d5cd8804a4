"""Embed task: decode pattern ids, run :func:`pipeline.embeddings.embed_patterns`."""

from __future__ import annotations

import uuid
from typing import Any

from pipeline.embeddings import embed_patterns
from pipeline.errors import RetryableError
from workers import resources
from workers.app import app


@app.task(
    name="patterns.embed_patterns",
    autoretry_for=(RetryableError,),
    retry_backoff=True,
    retry_backoff_max=600,
    max_retries=5,
)
def embed_patterns_task(pattern_ids: list[str]) -> dict[str, Any]:
    """Embed the given patterns (skipping any already embedded) and record recurrences."""
    result = embed_patterns(
        db=resources.db(),
        embedder=resources.embedder(),
        settings=resources.settings(),
        pattern_ids=[uuid.UUID(p) for p in pattern_ids],
    )
    return {"embedded": result.embedded, "validations": result.validations}
