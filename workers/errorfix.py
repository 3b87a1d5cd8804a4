"""Error-fix task: one batch of TypeScript error fixes (beat runs it every 10 minutes)."""

from __future__ import annotations

from typing import Any

from pipeline.errorfix import process_batch
from workers import resources
from workers.app import RETRY_POLICY, app


@app.task(
    name="patterns.errorfix_batch",
    **{**RETRY_POLICY, "max_retries": 3},
)
def errorfix_batch_task(limit: int | None = None) -> dict[str, Any]:
    """Run one batch (a no-op when another batch holds the lock) and return its summary."""
    summary = process_batch(
        db=resources.db(),
        engine=resources.engine(),
        embedder=resources.embedder(),
        settings=resources.settings(),
        limit=limit,
    )
    return summary.as_dict()
