"""The Celery implementation of :class:`pipeline.dispatch.Dispatcher`.

With a broker, tasks are published by name (``send_task``): the publishing process needs no task
code or models. Without one (an eager app: ``patterns run`` with no ``REDIS_URL``), the task runs
here and now, in this process, before the call returns.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from celery import Celery

from pipeline.errors import RetryableError
from pipeline.queues import TaskName
from pipeline.types import ClaudeMode, TaskType


class CeleryDispatcher:
    """Publishes through a Celery app (Redis when ``REDIS_URL`` is set, else in process).

    ``app``: a Celery app to publish with (``workers.app.make_celery(settings)``); default the
    process's ``workers.app.app``. ``retry``: let Celery retry a failed publish (its default
    policy: 3 retries within about a second); the HTTP request path turns it off and leaves the
    interaction to the outbox sweeper instead.

    Message shapes (JSON): ``extract_batch(ids, route=True, claude_mode="sync")`` with the
    defaults left out, so a message reads as it did before those options existed;
    ``claude_batch(ids, task_type, claude_mode)``; ``analyze_local(ids, {str(id): reason})``;
    ``embed_patterns([str(uuid)])``; ``post_feedback(ids)``.
    """

    def __init__(self, app: Celery | None = None, *, retry: bool = True) -> None:
        self._retry = retry
        if app is None:
            from workers.app import app as default_app

            app = default_app
        self._app = app
        self.eager = bool(app.conf.task_always_eager)

    def _send(self, name: TaskName, args: list[Any], kwargs: dict[str, Any] | None = None) -> None:
        """Publish (or, eager, run now) one task.

        Raises:
            RetryableError: the broker cannot be reached.
        """
        from kombu.exceptions import OperationalError

        try:
            if self.eager:
                # The task objects live on the process's app (``workers.app.app``); an eager
                # call runs them here, whichever app this dispatcher was built on.
                from workers.app import TASK_MODULES
                from workers.app import app as task_app

                for module in TASK_MODULES:
                    __import__(module)
                task_app.tasks[name.value].apply(args=args, kwargs=kwargs or {}, throw=True)
            else:
                self._app.send_task(name.value, args=args, kwargs=kwargs, retry=self._retry)
        except (OperationalError, ConnectionError, OSError) as exc:
            raise RetryableError(f"cannot publish to the broker: {exc}") from exc

    def extract(
        self,
        interaction_ids: Sequence[int],
        *,
        route: bool = True,
        claude_mode: ClaudeMode = ClaudeMode.SYNC,
    ) -> None:
        """Send ``patterns.extract_batch`` with the ids (see the class docstring)."""
        kwargs: dict[str, Any] = {}
        if not route:
            kwargs["route"] = False
        if claude_mode is not ClaudeMode.SYNC:
            kwargs["claude_mode"] = claude_mode.value
        self._send(TaskName.EXTRACT, [list(interaction_ids)], kwargs)

    def claude(
        self,
        interaction_ids: Sequence[int],
        task_type: TaskType,
        *,
        claude_mode: ClaudeMode = ClaudeMode.SYNC,
    ) -> None:
        """Send ``patterns.claude_batch``."""
        self._send(TaskName.CLAUDE, [list(interaction_ids), task_type.value, claude_mode.value])

    def analyze_local(
        self, interaction_ids: Sequence[int], route_reasons: Mapping[int, str] | None = None
    ) -> None:
        """Send ``patterns.analyze_local`` (JSON keys are strings: the ids travel as such)."""
        reasons = {str(k): v for k, v in (route_reasons or {}).items()}
        self._send(TaskName.ANALYZE_LOCAL, [list(interaction_ids), reasons])

    def embed(self, pattern_ids: Sequence[uuid.UUID]) -> None:
        """Send ``patterns.embed_patterns``."""
        self._send(TaskName.EMBED, [[str(p) for p in pattern_ids]])

    def feedback(self, interaction_ids: Sequence[int]) -> None:
        """Send ``patterns.post_feedback``."""
        self._send(TaskName.FEEDBACK, [list(interaction_ids)])

    def cross_check(self, interaction_ids: Sequence[int]) -> None:
        """Send ``patterns.cross_check``."""
        self._send(TaskName.CROSS_CHECK, [list(interaction_ids)])
