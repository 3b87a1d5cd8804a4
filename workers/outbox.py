"""Outbox sweep task (Celery beat, every minute): run :func:`pipeline.outbox.sweep_outbox`."""

from __future__ import annotations

from typing import Any

from pipeline.dispatch import CeleryDispatcher
from pipeline.outbox import sweep_outbox
from workers import resources
from workers.app import app


@app.task(name="patterns.sweep_outbox", ignore_result=True)
def sweep_outbox_task() -> dict[str, Any]:
    """Re-publish stalled interactions, mark hopeless ones ``dead``; returns the counts."""
    result = sweep_outbox(
        db=resources.db(), dispatcher=CeleryDispatcher(app), settings=resources.settings()
    )
    return {
        "examined": result.examined,
        "republished": len(result.republished) - len(result.publish_failed),
        "dead": len(result.dead),
        "skipped_locked": result.skipped_locked,
    }
