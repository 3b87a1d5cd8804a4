"""Task metrics of a worker process, for Prometheus: Celery signal handlers and an HTTP endpoint.

Importing this module connects the handlers (``task_prerun``, ``task_postrun``, ``task_failure``,
``task_retry``); they update metrics in ``prometheus_client``'s default registry:

- ``celery_task_runtime_seconds{name}`` (histogram): wall time of each task run, in seconds,
  from ``task_prerun`` to ``task_postrun`` (a retried run counts as a run of its own);
- ``celery_tasks_total{name,state}`` (counter): finished runs, ``state`` ``succeeded``,
  ``failed`` or ``retried`` (the task-succeeded/failed/retried events of
  danihodovic/celery-exporter);
- ``patterns_worker_ready{role}`` (gauge): 1 once the worker has loaded what its role needs (the
  "model loaded" readiness of a worker, which has no HTTP API of its own). The endpoint itself
  starts only after loading (the vLLM engine's processes must not inherit its thread), so a
  readiness probe on the metrics port fails until the models are loaded.

:func:`start_metrics_server` serves them, with the process metrics ``prometheus_client`` adds,
at ``http://<addr>:<port>/metrics``; ``patterns worker`` starts it when
``settings.worker_metrics_port`` is set. Each worker process needs a port of its own: run several
workers on one host (or in one pod) with distinct ``PATTERNS_WORKER_METRICS_PORT`` values.
The counters live in the process that runs the tasks: the ``solo`` and ``threads`` pools of
:data:`workers.worker.ROLE_POOL` run them in the worker process itself (a ``prefork`` pool would
need ``prometheus_client``'s multiprocess mode). The pipeline's own metrics (queues, budget,
LLM spend) are the API's ``GET /metrics``, so N workers do not repeat its database queries.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from celery import states
from celery.signals import task_failure, task_postrun, task_prerun, task_retry
from prometheus_client import Counter, Gauge, Histogram, start_http_server

#: Histogram buckets in seconds: from quick bookkeeping tasks to hour-long extract batches.
RUNTIME_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

TASK_RUNTIME = Histogram(
    "celery_task_runtime_seconds",
    "Wall time of a Celery task run, in seconds (task_prerun to task_postrun).",
    ["name"],
    buckets=RUNTIME_BUCKETS,
)
TASKS = Counter(
    "celery_tasks",
    "Finished Celery task runs by state: succeeded, failed or retried.",
    ["name", "state"],
)

WORKER_READY = Gauge(
    "patterns_worker_ready",
    "1 once the worker has built what its role needs (database, vLLM engine, embedding model).",
    ["role"],
)

#: task id → perf_counter() at task_prerun; ``threads`` pools run tasks concurrently.
_started: dict[str, float] = {}
_lock = threading.Lock()


def _name(sender: Any) -> str:
    return str(getattr(sender, "name", None) or sender or "unknown")


@task_prerun.connect(dispatch_uid="patterns.metrics.prerun")
def _on_prerun(task_id: str | None = None, **_: Any) -> None:
    if task_id is not None:
        with _lock:
            _started[task_id] = time.perf_counter()


@task_postrun.connect(dispatch_uid="patterns.metrics.postrun")
def _on_postrun(
    sender: Any = None, task_id: str | None = None, state: str | None = None, **_: Any
) -> None:
    with _lock:
        started = _started.pop(task_id, None) if task_id is not None else None
    if started is not None:
        TASK_RUNTIME.labels(name=_name(sender)).observe(time.perf_counter() - started)
    # Failures and retries are counted by their own signals, which carry the task in every case.
    if state == states.SUCCESS:
        TASKS.labels(name=_name(sender), state="succeeded").inc()


@task_failure.connect(dispatch_uid="patterns.metrics.failure")
def _on_failure(sender: Any = None, **_: Any) -> None:
    TASKS.labels(name=_name(sender), state="failed").inc()


@task_retry.connect(dispatch_uid="patterns.metrics.retry")
def _on_retry(sender: Any = None, **_: Any) -> None:
    TASKS.labels(name=_name(sender), state="retried").inc()


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> None:
    """Serve the default registry (these task metrics, process metrics) on ``addr:port`` from a
    daemon thread. All interfaces by default: Prometheus scrapes from another host or pod.

    Raises:
        OSError: the port is taken (another worker on this host uses it) or not allowed.
    """
    start_http_server(port, addr=addr)
