"""Claude tasks (``claude`` queue): extraction or strategic analysis under the day's budget,
and the quality cross-check of local extractions.

What Claude defers (the budget cannot admit it, or Claude stays unavailable through its retries)
goes back to the local queue, so no work fails because the budget ran out.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pipeline.extract.flow import run_on_claude
from pipeline.queues import TaskName
from pipeline.types import ClaudeMode, TaskType
from workers import resources
from workers.app import RETRY_POLICY, app


@app.task(name=TaskName.CLAUDE.value, **RETRY_POLICY)
def claude_batch_task(
    interaction_ids: list[int], task_type: str, claude_mode: str = ClaudeMode.SYNC.value
) -> dict[str, Any]:
    """Run ``task_type`` (``pattern_extraction`` or ``strategic_analysis``) on Claude for the
    given interactions; ``claude_mode`` ``batch`` uses the Message Batches API."""
    res = resources.current()
    mode = ClaudeMode(claude_mode)
    summary = run_on_claude(
        db=res.db(),
        engine=res.claude_engine(batch=mode is ClaudeMode.BATCH),
        settings=res.settings,
        dispatcher=res.dispatcher(),
        interaction_ids=[int(i) for i in interaction_ids],
        task_type=TaskType(task_type),
        claude_mode=mode,
    )
    return dataclasses.asdict(summary)


@app.task(name=TaskName.CROSS_CHECK.value, **RETRY_POLICY)
def cross_check_task(interaction_ids: list[int]) -> dict[str, Any]:
    """Cross-check the local extractions of the interactions on Claude, under the budget."""
    from pipeline.quality.crosscheck import cross_check_batch

    res = resources.current()
    result = cross_check_batch(
        db=res.db(),
        engine=res.claude_engine(),
        embedder=res.embedder(),
        settings=res.settings,
        interaction_ids=[int(i) for i in interaction_ids],
    )
    return {"checked": len(result.checked), "deferred": len(result.deferred),
            "confirmed": result.confirmed, "uncertain": result.uncertain}  # fmt: skip
