"""The Celery runtime the ``patterns`` CLI needs (:class:`pipeline.cli.common.Runtime`):
dispatchers, in-process runs, and the worker, beat and Flower processes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.db.engine import Database
from pipeline.dispatch import Dispatcher
from pipeline.queues import Role
from pipeline.settings import Settings
from workers import resources


class CeleryRuntime:
    """Builds everything on the process's Celery app (``workers.app``)."""

    def dispatcher(self, settings: Settings, *, retry: bool = True) -> Dispatcher:
        """A :class:`~workers.dispatch.CeleryDispatcher` on ``settings``' broker (in process,
        eager, without ``REDIS_URL``)."""
        from workers.app import make_celery
        from workers.dispatch import CeleryDispatcher

        return CeleryDispatcher(make_celery(settings), retry=retry)

    @contextmanager
    def in_process(self, settings: Settings, db: Database) -> Iterator[resources.Resources]:
        """Install :class:`~workers.resources.Resources` on ``db`` for tasks that run in this
        process; the models they load are released at exit."""
        with resources.use(resources.Resources(settings, db=db)) as res:
            yield res

    def run_worker(self, role: Role, *, concurrency: int, loglevel: str) -> None:
        """:func:`workers.worker.run_worker`."""
        from workers.worker import run_worker

        run_worker(role, concurrency=concurrency, loglevel=loglevel)

    def run_beat(self, settings: Settings, *, schedule: Path, loglevel: str) -> None:
        """Celery beat on the process's app, its schedule state in ``schedule``."""
        from workers.app import app

        app.start(["beat", "--schedule", str(schedule), "--loglevel", loglevel])

    def run_flower(self, settings: Settings, argv: list[str]) -> int:
        """Flower (``celery flower``) on an app for ``settings``; ``argv`` stays in memory."""
        from workers.app import make_celery

        return int(make_celery(settings).start(argv=argv) or 0)
