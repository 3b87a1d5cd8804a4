"""Extract task: decode ids, run :func:`pipeline.extraction.extract_batch`, hand new patterns on."""

from __future__ import annotations

from typing import Any

from pipeline.errors import RetryableError
from pipeline.extraction import extract_batch
from workers import resources
from workers.app import app


@app.task(
    name="patterns.extract_batch",
    autoretry_for=(RetryableError,),
    retry_backoff=True,
    retry_backoff_max=600,
    max_retries=5,
)
def extract_batch_task(interaction_ids: list[int]) -> dict[str, Any]:
    """Extract a batch of interactions (one vLLM call per attempt), then queue their embedding."""
    result = extract_batch(
        db=resources.db(),
        engine=resources.engine(),
        settings=resources.settings(),
        interaction_ids=[int(i) for i in interaction_ids],
    )
    if result.pattern_ids:
        from workers.embed import embed_patterns_task

        embed_patterns_task.delay([str(p) for p in result.pattern_ids])
    return {
        "extracted": len(result.extracted),
        "failed": len(result.failed),
        "patterns": len(result.pattern_ids),
    }
