"""The one adapter between the library and Celery: publishing tasks.

Everything else in ``pipeline/`` is free of Celery; ``workers/`` holds the app and the tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from pipeline.errors import RetryableError


class Dispatcher(Protocol):
    """Publishes work. ``eager`` is true when publishing runs the work before returning."""

    eager: bool

    def extract(self, interaction_ids: Sequence[int], *, claude_mode: str = "sync") -> None:
        """Publish one extract task for a batch of interactions. ``claude_mode`` ``batch``: what
        is routed to Claude goes through the Message Batches API.

        Raises:
            RetryableError: the broker cannot be reached.
        """
        ...

    def claude(
        self, interaction_ids: Sequence[int], task_type: str, *, claude_mode: str = "sync"
    ) -> None:
        """Publish one Claude task (``task_type`` over the interactions) to the claude queue.

        Raises:
            RetryableError: the broker cannot be reached.
        """
        ...


class CeleryDispatcher:
    """Publishes through a Celery app (Redis when ``REDIS_URL`` is set, else in process).

    ``app``: a Celery app to publish with (``workers.app.make_celery(settings)``); default the
    process's ``workers.app.app``. An app that is not eager publishes by task name
    (``send_task``), so the publishing process needs no task code or models. ``retry``: let
    Celery retry a failed publish (its default policy: 3 retries within about a second); the
    HTTP request path turns it off and leaves the interaction to the outbox sweeper instead.
    """

    def __init__(self, app: Any = None, *, retry: bool = True) -> None:
        self._retry = retry
        if app is None:
            from workers.app import app as default_app

            app = default_app
        self._app = app
        self.eager = bool(app.conf.task_always_eager)

    def extract(self, interaction_ids: Sequence[int], *, claude_mode: str = "sync") -> None:
        """Send ``patterns.extract_batch`` with the ids (runs it now in eager mode).

        Raises:
            RetryableError: the broker cannot be reached.
        """
        from kombu.exceptions import OperationalError

        # The default mode is left out of the message, so it reads as before this option existed.
        kwargs = {} if claude_mode == "sync" else {"claude_mode": claude_mode}
        try:
            if self.eager:
                from workers.extract import extract_batch_task

                extract_batch_task.apply_async(args=[list(interaction_ids)], kwargs=kwargs)
            else:
                self._app.send_task(
                    "patterns.extract_batch",
                    args=[list(interaction_ids)],
                    kwargs=kwargs,
                    retry=self._retry,
                )
        except (OperationalError, ConnectionError, OSError) as exc:
            raise RetryableError(f"cannot publish to the broker: {exc}") from exc

    def claude(
        self, interaction_ids: Sequence[int], task_type: str, *, claude_mode: str = "sync"
    ) -> None:
        """Send ``patterns.claude_batch`` (runs it now in eager mode).

        Raises:
            RetryableError: the broker cannot be reached.
        """
        from kombu.exceptions import OperationalError

        args = [list(interaction_ids), task_type, claude_mode]
        try:
            if self.eager:
                from workers.claude import claude_batch_task

                claude_batch_task.apply_async(args=args)
            else:
                self._app.send_task("patterns.claude_batch", args=args, retry=self._retry)
        except (OperationalError, ConnectionError, OSError) as exc:
            raise RetryableError(f"cannot publish to the broker: {exc}") from exc
