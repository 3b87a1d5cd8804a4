"""Extract tasks (``extract.local`` queue): route a batch, extract the local share with vLLM,
hand the rest to Claude, queue what follows; and strategic analysis on the local model.

``claude_mode`` travels with the work: ``sync`` (Messages API) or ``batch`` (Message Batches API,
``patterns run --claude-batch``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from celery import Task

from pipeline.extract.flow import analyze_locally, extract_routed
from pipeline.queues import TaskName
from pipeline.types import ClaudeMode
from workers import resources
from workers.app import RETRY_POLICY, app


@app.task(name=TaskName.EXTRACT.value, bind=True, **RETRY_POLICY)
def extract_batch_task(
    self: Task,
    interaction_ids: list[int],
    route: bool = True,
    claude_mode: str = ClaudeMode.SYNC.value,
) -> dict[str, Any]:
    """Run :func:`pipeline.extract.flow.extract_routed` on the batch, claimed under a lease
    held by this task's id (the same id when Celery delivers or retries it again)."""
    res = resources.current()
    summary = extract_routed(
        db=res.db(),
        engine=res.engine(),
        settings=res.settings,
        dispatcher=res.dispatcher(),
        interaction_ids=[int(i) for i in interaction_ids],
        route=bool(route),
        claude_mode=ClaudeMode(claude_mode),
        lease_owner=f"task:{self.request.id}",
    )
    return dataclasses.asdict(summary)


@app.task(name=TaskName.ANALYZE_LOCAL.value, **RETRY_POLICY)
def analyze_local_task(
    interaction_ids: list[int], route_reasons: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run :func:`pipeline.extract.flow.analyze_locally` (routed here, or deferred by Claude)."""
    res = resources.current()
    summary = analyze_locally(
        db=res.db(),
        engine=res.engine(),
        settings=res.settings,
        interaction_ids=[int(i) for i in interaction_ids],
        route_reasons={int(k): v for k, v in (route_reasons or {}).items()},
    )
    return dataclasses.asdict(summary)
