"""The periodic sweep task (Celery beat, every minute): :func:`pipeline.ops.housekeeping.sweep`
re-publishes stalled interactions, releases reservations whose worker died, re-queues stalled
analyses locally and re-publishes the embedding of active patterns left without one."""

from __future__ import annotations

import dataclasses
from typing import Any

from pipeline.ops.housekeeping import sweep
from pipeline.queues import TaskName
from workers import resources
from workers.app import app


@app.task(name=TaskName.SWEEP_OUTBOX.value, ignore_result=True)
def sweep_outbox_task() -> dict[str, Any]:
    """Run one sweep and return its counts."""
    res = resources.current()
    summary = sweep(db=res.db(), dispatcher=res.dispatcher(), settings=res.settings)
    return dataclasses.asdict(summary)
