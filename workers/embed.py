"""Embed task: decode pattern ids, run :func:`pipeline.embeddings.embed_patterns`."""

from __future__ import annotations

import uuid
from typing import Any

from pipeline.embeddings import embed_patterns
from pipeline.feedback import feedback_candidates
from workers import resources
from workers.app import RETRY_POLICY, app


@app.task(
    name="patterns.embed_patterns",
    **RETRY_POLICY,
)
def embed_patterns_task(pattern_ids: list[str]) -> dict[str, Any]:
    """Embed the given patterns (skipping any already embedded) and record recurrences; with
    PATTERNS_GITHUB_TOKEN set, queue feedback comments for their webhook deliveries."""
    settings = resources.settings()
    ids = [uuid.UUID(p) for p in pattern_ids]
    result = embed_patterns(
        db=resources.db(), embedder=resources.embedder(), settings=settings, pattern_ids=ids
    )
    feedback: list[int] = []
    if settings.github_token is not None:
        feedback = feedback_candidates(resources.db(), ids)
        if feedback:
            from workers.feedback import post_feedback_task

            post_feedback_task.delay(feedback)
    return {
        "embedded": result.embedded,
        "validations": result.validations,
        "feedback": len(feedback),
    }
