"""Periodic housekeeping runs off the GPU extract queue (issue 14): every task Celery beat
schedules routes to a queue that a CPU role consumes, never to ``extract.local``."""

from __future__ import annotations

import pytest

from pipeline.queues import (
    QUEUE_EXTRACT,
    QUEUE_HOUSEKEEPING,
    ROLE_QUEUES,
    TASK_QUEUES,
    Role,
    TaskName,
)
from pipeline.settings import Settings
from workers.app import BEAT_SCHEDULE, make_celery


def _beat_routes(redis_url: str | None) -> dict[str, str]:
    """Beat entry's task name → the queue the app's router sends it to."""
    app = make_celery(Settings(redis_url=redis_url))  # type: ignore[call-arg]
    schedule = app.conf.beat_schedule
    assert schedule, "beat schedules nothing"
    return {
        entry["task"]: app.amqp.router.route({}, entry["task"], (), {})["queue"].name
        for entry in schedule.values()
    }


@pytest.mark.parametrize("redis_url", [None, "redis://cache:6379/0"])
def test_no_beat_scheduled_task_routes_to_the_extract_queue(
    clean_env: pytest.MonkeyPatch, redis_url: str | None
) -> None:
    routes = _beat_routes(redis_url)
    assert QUEUE_EXTRACT not in routes.values(), routes
    extract_queues = set(ROLE_QUEUES[Role.EXTRACT])
    for task, queue in routes.items():
        consumers = {r for r, qs in ROLE_QUEUES.items() if queue in qs} - {Role.ALL}
        assert consumers and Role.EXTRACT not in consumers, (task, queue)
        assert queue not in extract_queues


def test_the_module_schedule_names_only_routed_tasks_off_extract() -> None:
    for entry in BEAT_SCHEDULE.values():
        task = TaskName(entry["task"])
        assert TASK_QUEUES[task] != QUEUE_EXTRACT, task


def test_the_outbox_sweep_runs_on_the_housekeeping_queue_of_the_cpu_roles(
    clean_env: pytest.MonkeyPatch,
) -> None:
    assert _beat_routes("redis://cache:6379/0")[TaskName.SWEEP_OUTBOX.value] == QUEUE_HOUSEKEEPING
    assert QUEUE_HOUSEKEEPING in ROLE_QUEUES[Role.EMBED]
    assert QUEUE_HOUSEKEEPING in ROLE_QUEUES[Role.ALL]
    assert QUEUE_HOUSEKEEPING not in ROLE_QUEUES[Role.EXTRACT]
