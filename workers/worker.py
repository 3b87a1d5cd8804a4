"""Starting a worker for one role: its queues, its pool, its resources built at start-up."""

from __future__ import annotations

import os
from typing import Any

import structlog
from celery.signals import worker_init, worker_shutdown

from pipeline.errors import InvalidValueError
from pipeline.queues import ROLE_QUEUES, Role
from pipeline.settings import get_settings
from workers import resources
from workers.app import app

log = structlog.get_logger(__name__)

#: Pool per role. vLLM and torch models live in the worker process itself and the engine spawns
#: processes of its own, which Celery's prefork children (daemonic) may not do: ``solo``.
ROLE_POOL: dict[Role, str] = {
    Role.EXTRACT: "solo",
    Role.EMBED: "solo",
    Role.CLAUDE: "threads",
    Role.ERRORFIX: "solo",
    Role.ALL: "solo",
}
ROLE_ENV = "PATTERNS_WORKER_ROLE"


@worker_init.connect
def _preload(**_: Any) -> None:
    """Stop orphaned vLLM engine processes of this user (:func:`pipeline.llm.reaper.reap_orphans`),
    build the worker's :class:`~workers.resources.Resources` and load what its role needs."""
    settings = get_settings()
    role = os.environ.get(ROLE_ENV)
    # Engine processes a killed worker of this user left behind hold memory a new engine needs.
    from pipeline.llm.reaper import reap_orphans

    reaped = reap_orphans()
    if reaped:
        log.warning("reaped_orphaned_engine_processes", pids=reaped)
    res = resources.Resources(settings)
    resources.install(res)
    # Models first: the vLLM engine starts processes of its own, which must not inherit the
    # metrics server's thread (a fork with a running thread can deadlock).
    if role:
        res.preload(Role(role))
    port = settings.worker_metrics_port
    if port is not None:
        # Imported here: the module connects its signal handlers on import.
        from workers.metrics import WORKER_READY, start_metrics_server

        start_metrics_server(port)
        WORKER_READY.labels(role=role or "unknown").set(1)
        log.info("worker_metrics_serving", port=port)


@worker_shutdown.connect
def _release(**_: Any) -> None:
    """Close the worker's resources at shutdown (a SIGTERM's warm shutdown included): the vLLM
    engine's processes are stopped and waited for (:meth:`VLLMEngine.close`)."""
    previous = resources.install(None)
    if previous is not None:
        previous.close()


def run_worker(role: Role | str, *, concurrency: int = 1, loglevel: str = "INFO") -> None:
    """Run a Celery worker for ``role`` in this process until it is stopped.

    Raises:
        InvalidValueError: unknown role.
    """
    try:
        role = Role(role)
    except ValueError as exc:
        known = ", ".join(r.value for r in Role)
        raise InvalidValueError(f"unknown role {role!r}; choose from {known}") from exc
    os.environ[ROLE_ENV] = role.value
    argv = [
        "worker",
        "--queues", ",".join(ROLE_QUEUES[role]),
        "--pool", ROLE_POOL[role],
        "--concurrency", str(concurrency),
        "--hostname", f"{role.value}@%h",
        "--loglevel", loglevel,
        "--task-events",
    ]  # fmt: skip
    app.worker_main(argv)
