"""The Celery app: queues, routing table and reliability settings.

With ``REDIS_URL`` set, tasks travel through Redis to ``patterns worker`` processes. Without it,
the same tasks run in the calling process (``task_always_eager``), which is how ``patterns run``
works on a machine with nothing but Python.

Monitoring: workers send task events and producers the ``task-sent`` event, for Flower
(``patterns flower``); the argument strings those events carry are redacted
(:mod:`workers.redaction`).

Reliability: ``acks_late`` with ``task_reject_on_worker_lost`` and prefetch 1, so a killed worker's
task goes back to the queue; Redis re-delivers an unacknowledged task after the visibility timeout,
which must exceed the longest task (an extract batch), or the task would run twice at once
(harmless, since writes are idempotent, but wasteful).
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue
from sqlalchemy.exc import InterfaceError, OperationalError

from pipeline.errors import RetryableError
from pipeline.queues import QUEUE_EXTRACT, QUEUES, TASK_QUEUES, TaskName
from pipeline.settings import Settings, get_settings
from workers import logcontext  # noqa: F401  (its task signals bind task_id; eager runs too)
from workers.redaction import RedactingAMQP

#: Task name → queue, in Celery's ``task_routes`` form (the names and queues are
#: :data:`pipeline.queues.TASK_QUEUES`).
TASK_ROUTES: dict[str, dict[str, str]] = {
    name.value: {"queue": queue} for name, queue in TASK_QUEUES.items()
}

#: The modules that define the tasks (imported by workers at start, and for in-process runs).
TASK_MODULES = (
    "workers.extract",
    "workers.claude",
    "workers.embed",
    "workers.sweep",
    "workers.feedback",
    "workers.errorfix",
    "workers.recover",
    "workers.verdicts",
)

#: What a task retries: the library's transient failures, and SQLAlchemy's connection-level
#: errors (Postgres restarted, the connection dropped, a deadlock or serialisation failure) that
#: reach the task without passing :meth:`pipeline.db.engine.Database.session`, which wraps them
#: as ``DatabaseUnavailableError`` (code using the engine directly: an advisory-lock connection).
RETRYABLE: tuple[type[Exception], ...] = (RetryableError, OperationalError, InterfaceError)

#: Retry policy of every task that can meet a passing outage (database, broker, model server):
#: Celery retries :data:`RETRYABLE` with exponential backoff, at most 600 s apart, 5 times.
RETRY_POLICY: dict[str, object] = {
    "autoretry_for": RETRYABLE,
    "retry_backoff": True,
    "retry_backoff_max": 600,
    "max_retries": 5,
}

#: Seconds between outbox sweeps (DESIGN.md: "the outbox sweeper every minute").
SWEEP_INTERVAL_S = 60.0
#: Seconds between TypeScript error-fix batches (issue: "every 10 minutes"). A batch that finds
#: another one running (advisory lock) returns at once.
ERRORFIX_INTERVAL_S = 600.0

#: Celery beat's schedule. One beat process per deployment; a second one would only send
#: duplicate sweeps, which the sweep's advisory lock turns into no-ops.
BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "sweep-outbox": {"task": TaskName.SWEEP_OUTBOX.value, "schedule": SWEEP_INTERVAL_S},
    "errorfix-batch": {"task": TaskName.ERRORFIX.value, "schedule": ERRORFIX_INTERVAL_S},
}


def beat_schedule(settings: Settings) -> dict[str, dict[str, object]]:
    """:data:`BEAT_SCHEDULE`, plus, with a GitHub token: the missed-delivery recovery every
    ``github_recover_interval_s`` seconds when hooks are configured, and the poll of people's
    verdicts on our feedback comments every ``verdicts_poll_interval_s`` seconds (GitHub sends
    no webhook for reactions); an interval of 0 disables either."""
    schedule = dict(BEAT_SCHEDULE)
    if settings.github_token is None:
        return schedule
    interval = settings.github_recover_interval_s
    if settings.github_hooks and interval > 0:
        schedule["github-recover"] = {
            "task": TaskName.GITHUB_RECOVER.value,
            "schedule": float(interval),
        }
    if settings.verdicts_poll_interval_s > 0:
        schedule["github-verdicts"] = {
            "task": TaskName.GITHUB_VERDICTS.value,
            "schedule": float(settings.verdicts_poll_interval_s),
        }
    return schedule


def make_celery(settings: Settings) -> Celery:
    """Build the Celery app for ``settings`` (Redis broker, or eager in-process execution)."""
    app = Celery(
        "patterns",
        # Task arguments shown by Flower, events and worker logs are redacted summaries.
        amqp=RedactingAMQP,
        include=list(TASK_MODULES),
    )
    eager = not settings.redis_url
    app.conf.update(
        broker_url=settings.redis_url or "memory://",
        task_always_eager=eager,
        task_eager_propagates=True,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue=QUEUE_EXTRACT,
        task_routes=TASK_ROUTES,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": settings.broker_visibility_timeout_s},
        beat_schedule=beat_schedule(settings),
    )
    return app


app = make_celery(get_settings())
