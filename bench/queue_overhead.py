"""Queue overhead: the per-item cost of the Celery path for a task that does nothing.

The Celery app is the pipeline's own (:func:`workers.app.make_celery`: Redis broker, JSON,
``acks_late``, prefetch 1, task events on), with one extra task, ``bench.noop``, on a queue of its
own; its worker is ``celery worker --pool solo`` in a subprocess, as the extract worker runs.
The task adds the number of items it carried to a Redis counter, so the producer knows when all
are done. Redis: ``PATTERNS_BENCH_QUEUE_REDIS_URL`` (default ``redis://127.0.0.1:6379/13``),
flushed before and after.

Two runs of N items, each timed from the first publish until the counter reaches N:
``unbatched`` (one item per task, as a webhook delivery publishes) and ``batched`` (tasks of
``PATTERNS_EXTRACT_BATCH_SIZE`` items, as file ingest and topped-up extract batches run). The
baseline is the task's body called directly (``direct_us_per_item``). Prints
``queue_overhead_ms`` (batched, per item), ``queue_overhead_ms_unbatched`` and the publish cost.
Usage: ``python bench/queue_overhead.py [N]`` (default 2000).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
from benchlib import emit

REDIS_URL = os.environ.get("PATTERNS_BENCH_QUEUE_REDIS_URL", "redis://127.0.0.1:6379/13")
QUEUE = "bench.noop"
COUNTER = "bench:noop:items"


def _app() -> Any:
    from pipeline.settings import Settings
    from workers.app import make_celery

    app = make_celery(Settings(database_url=None, redis_url=REDIS_URL))
    app.conf.include = []  # the worker needs none of the pipeline's task modules
    return app


app = _app()
_counter = redis.Redis.from_url(REDIS_URL)


def body(items: list[int]) -> int:
    """The task's work: count the items (one Redis INCRBY)."""
    return int(_counter.incrby(COUNTER, len(items)))


@app.task(name="bench.noop", acks_late=True)
def noop(items: list[int]) -> int:
    """Count ``items`` and return."""
    return body(items)


def _run(n: int, per_task: int, broker: redis.Redis) -> dict[str, Any]:
    broker.set(COUNTER, 0)
    started = time.perf_counter()
    for start in range(0, n, per_task):
        noop.apply_async((list(range(start, min(n, start + per_task))),), queue=QUEUE)
    published = time.perf_counter() - started
    deadline = time.monotonic() + 600
    while int(broker.get(COUNTER) or 0) < n:
        if time.monotonic() > deadline:
            raise SystemExit("the worker did not finish within 600 s")
        time.sleep(0.002)
    seconds = time.perf_counter() - started
    tasks = -(-n // per_task)
    return {
        "items": n,
        "items_per_task": per_task,
        "tasks": tasks,
        "seconds": round(seconds, 3),
        "ms_per_item": round(seconds * 1000 / n, 4),
        "ms_per_task": round(seconds * 1000 / tasks, 3),
        "publish_ms_per_task": round(published * 1000 / tasks, 3),
    }


def main() -> None:
    """Start the worker, run both modes, print the figures."""
    from pipeline.settings import Settings

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    batch = Settings(database_url=None, redis_url=None).extract_batch_size
    broker = redis.Redis.from_url(REDIS_URL)
    broker.flushdb()
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": f"{here}:{here.parent}"}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "queue_overhead",
            "worker",
            "--pool",
            "solo",
            "-Q",
            QUEUE,
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "warning",
        ],
        cwd=here,
        env=env,
        start_new_session=True,
    )
    try:
        _run(50, 1, broker)  # warm-up: the worker is up once these are done
        unbatched = _run(n, 1, broker)
        batched = _run(n, batch, broker)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        broker.flushdb()
    reps = 20000
    started = time.perf_counter()
    for i in range(reps // 100):
        body(list(range(i, i + 100)))
    direct_us = (time.perf_counter() - started) * 1e6 / reps
    emit(
        {
            "unbatched": unbatched,
            "batched": batched,
            "direct_us_per_item": round(direct_us, 3),
            "queue_overhead_ms": batched["ms_per_item"],
            "queue_overhead_ms_unbatched": unbatched["ms_per_item"],
        }
    )


if __name__ == "__main__":
    main()
