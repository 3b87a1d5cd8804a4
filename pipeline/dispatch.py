"""The one adapter between the library and Celery: publishing tasks.

Everything else in ``pipeline/`` is free of Celery; ``workers/`` holds the app and the tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pipeline.errors import RetryableError


class Dispatcher(Protocol):
    """Publishes work. ``eager`` is true when publishing runs the work before returning."""

    eager: bool

    def extract(self, interaction_ids: Sequence[int]) -> None:
        """Publish one extract task for a batch of interactions.

        Raises:
            RetryableError: the broker cannot be reached.
        """
        ...


class CeleryDispatcher:
    """Publishes through the Celery app (Redis when ``REDIS_URL`` is set, else in process)."""

    def __init__(self) -> None:
        from workers.app import app

        self._app = app
        self.eager = bool(app.conf.task_always_eager)

    def extract(self, interaction_ids: Sequence[int]) -> None:
        """Send ``patterns.extract_batch`` with the ids (runs it now in eager mode)."""
        from kombu.exceptions import OperationalError

        from workers.extract import extract_batch_task

        try:
            extract_batch_task.apply_async(args=[list(interaction_ids)])
        except OperationalError as exc:
            raise RetryableError(f"cannot publish to the broker: {exc}") from exc
