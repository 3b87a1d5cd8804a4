"""Outbox sweep task (Celery beat, every minute): run :func:`pipeline.outbox.sweep_outbox`,
release budget reservations whose worker died, and hand stalled strategic analyses to the local
model."""

from __future__ import annotations

from typing import Any

from pipeline import budget
from pipeline.analysis import stale_analyses
from pipeline.dispatch import CeleryDispatcher
from pipeline.outbox import sweep_outbox
from workers import resources
from workers.app import app


@app.task(name="patterns.sweep_outbox", ignore_result=True)
def sweep_outbox_task() -> dict[str, Any]:
    """Re-publish stalled interactions, mark hopeless ones ``dead``, release stale
    reservations, re-queue stalled analyses locally; returns the counts."""
    db, settings = resources.db(), resources.settings()
    result = sweep_outbox(db=db, dispatcher=CeleryDispatcher(app), settings=settings)
    released = budget.release_stale(db, older_than_s=settings.budget_reservation_timeout_s)
    stalled = stale_analyses(
        db, older_than_s=settings.budget_reservation_timeout_s, limit=settings.outbox_sweep_limit
    )
    if stalled:
        from workers.extract import analyze_local_task

        analyze_local_task.delay(stalled, {str(i): "stalled analysis re-queued" for i in stalled})
    return {
        "examined": result.examined,
        "republished": len(result.republished) - len(result.publish_failed),
        "dead": len(result.dead),
        "skipped_locked": result.skipped_locked,
        "reservations_released": released,
        "analyses_requeued": len(stalled),
    }
