"""Claude tasks (``claude`` queue): extraction or strategic analysis under the day's budget.

What Claude defers (the budget cannot admit it, or Claude stays unavailable through its retries)
goes back to the local queue, so no work fails because the budget ran out.
"""

from __future__ import annotations

from typing import Any

from pipeline.analysis import analyze_batch
from pipeline.extraction import extract_batch
from pipeline.settings import TaskType
from workers import resources
from workers.app import RETRY_POLICY, app


@app.task(
    name="patterns.claude_batch",
    **RETRY_POLICY,
)
def claude_batch_task(
    interaction_ids: list[int], task_type: str, claude_mode: str = "sync"
) -> dict[str, Any]:
    """Run ``task_type`` (``pattern_extraction`` or ``strategic_analysis``) on Claude for the
    given interactions; ``claude_mode`` ``batch`` uses the Message Batches API."""
    from workers.extract import after_extraction, analyze_local_task, extract_batch_task

    db, settings = resources.db(), resources.settings()
    engine = resources.claude_engine(batch=claude_mode == "batch")
    ids = [int(i) for i in interaction_ids]
    kind = TaskType(task_type)
    if kind is TaskType.PATTERN_EXTRACTION:
        result = extract_batch(db=db, engine=engine, settings=settings, interaction_ids=ids)
        if result.deferred:
            extract_batch_task.delay(sorted(result.deferred), False, claude_mode)
        after_extraction(result, claude_mode)
        return {
            "extracted": len(result.extracted),
            "failed": len(result.failed),
            "deferred": len(result.deferred),
        }
    if kind is TaskType.STRATEGIC_ANALYSIS:
        analysis = analyze_batch(db=db, engine=engine, settings=settings, interaction_ids=ids)
        if analysis.deferred:
            analyze_local_task.delay(
                sorted(analysis.deferred),
                {str(k): f"deferred by Claude: {v}" for k, v in analysis.deferred.items()},
            )
        return {
            "done": len(analysis.done),
            "failed": len(analysis.failed),
            "deferred": len(analysis.deferred),
        }
    raise ValueError(f"task type {task_type!r} has no Claude task")
