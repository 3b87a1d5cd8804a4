"""Task log context through a real (eager) Celery app built by :func:`workers.app.make_celery`:
a task's log lines carry its ``task_id`` and name, and the context is gone after it."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import structlog

from pipeline.logging import configure_logging
from pipeline.settings import Settings
from workers.app import make_celery

pytestmark = pytest.mark.integration


def test_eager_task_logs_carry_task_id(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    # Configured in the test: the handlers keep the stderr of the moment (capsys's).
    configure_logging(json_logs=True, level="INFO")
    app = make_celery(Settings(redis_url=None, database_url=None))
    assert app.conf.task_always_eager

    @app.task(name="patterns.test_log_context")
    def log_something(interaction_id: int) -> None:
        structlog.get_logger("t").info(
            "task_work", interaction_id=interaction_id, content="prompt text", token="s3cret"
        )
        logging.getLogger("celery.test").warning("stdlib in task")

    capsys.readouterr()
    result = log_something.apply_async(args=[42])
    structlog.get_logger("t").info("after_task")
    lines: list[dict[str, Any]] = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()
    ]
    by_event = {line["event"]: line for line in lines}
    work = by_event["task_work"]
    assert work["task_id"] == result.id
    assert work["task"] == "patterns.test_log_context"
    assert work["interaction_id"] == 42
    assert work["token"] == "<redacted>" and work["content_chars"] == len("prompt text")
    assert by_event["stdlib in task"]["task_id"] == result.id
    assert "task_id" not in by_event["after_task"]
    assert "s3cret" not in json.dumps(lines)
