"""Error-fix task (``errorfix`` queue): one batch of TypeScript error fixes (beat runs it every
10 minutes)."""

from __future__ import annotations

from typing import Any

from pipeline.errorfix.batch import process_batch
from pipeline.queues import TaskName
from workers import resources
from workers.app import RETRY_POLICY, app


@app.task(name=TaskName.ERRORFIX.value, **{**RETRY_POLICY, "max_retries": 3})
def errorfix_batch_task(limit: int | None = None) -> dict[str, Any]:
    """Run one batch (a no-op when another batch holds the lock) and return its summary."""
    res = resources.current()
    summary = process_batch(
        db=res.db(),
        engine=res.engine(),
        embedder=res.embedder(),
        settings=res.settings,
        limit=limit,
    )
    return summary.as_dict()
