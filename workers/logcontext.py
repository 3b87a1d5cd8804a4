"""Log context of a running task: ``task_id`` and ``task`` (its name) are bound with
:mod:`structlog.contextvars` before the task runs and reset after it, so every line the task logs
(structlog or stdlib, see :mod:`pipeline.logging`) names it.

Connected on import; :func:`workers.app.make_celery` lists this module in ``include``. Reset, not
cleared: an eager task run inside another task (or inside ``patterns run``) gives back the
caller's context when it ends.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Any

import structlog
from celery.signals import task_postrun, task_prerun

#: Reset tokens of the tasks running now, by task id (a thread pool runs several at once).
_tokens: dict[str, Mapping[str, contextvars.Token[Any]]] = {}


@task_prerun.connect
def bind_task(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    """Bind ``task_id`` and ``task`` for the task about to run."""
    if task_id is None:
        return
    name = getattr(task, "name", None)
    _tokens[task_id] = structlog.contextvars.bind_contextvars(task_id=task_id, task=name)


@task_postrun.connect
def unbind_task(task_id: str | None = None, **_: Any) -> None:
    """Give back the context from before the task ran."""
    tokens = _tokens.pop(task_id, None) if task_id is not None else None
    if tokens is None:
        structlog.contextvars.unbind_contextvars("task_id", "task")
        return
    try:
        structlog.contextvars.reset_contextvars(**tokens)
    except ValueError:
        # A token made in another context (the signal ran elsewhere): unbind instead.
        structlog.contextvars.unbind_contextvars("task_id", "task")
