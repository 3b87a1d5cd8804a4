"""What every command shares: the settings, logging, one way to open the database, the stderr
console, and the :class:`Runtime` that the entry point hands in for the commands that need Celery.

``pipeline/`` never imports ``workers/``: the ``patterns`` entry point (``workers.main``) builds a
runtime on the Celery app and passes it as the Typer context object; commands that start workers,
beat or Flower, or publish tasks, take it from there.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

import typer
from rich.console import Console

from pipeline.db.engine import Database
from pipeline.dispatch import Dispatcher
from pipeline.llm.base import StructuredLLM
from pipeline.queues import Role
from pipeline.settings import Settings, get_settings
from pipeline.store.embedder import Embedder

err = Console(stderr=True)


class LocalModels(Protocol):
    """The models of an in-process run, loaded on first use and released when the run ends."""

    def engine(self) -> StructuredLLM:
        """The local extraction engine (vLLM)."""
        ...

    def embedder(self) -> Embedder:
        """The embedding model."""
        ...


class Runtime(Protocol):
    """The Celery side, as the CLI needs it (built by ``workers.main``)."""

    def dispatcher(self, settings: Settings, *, retry: bool = True) -> Dispatcher:
        """A dispatcher on ``settings``' broker (in process without ``REDIS_URL``); ``retry``
        lets Celery retry a failed publish."""
        ...

    def in_process(self, settings: Settings, db: Database) -> AbstractContextManager[LocalModels]:
        """Run tasks in this process against ``db`` for the duration of the ``with`` block; the
        models it loads are released at exit."""
        ...

    def run_worker(self, role: Role, *, concurrency: int, loglevel: str) -> None:
        """Run a Celery worker for ``role`` in this process until it is stopped."""
        ...

    def run_beat(self, settings: Settings, *, schedule: Path, loglevel: str) -> None:
        """Run Celery beat with its schedule state in ``schedule``."""
        ...

    def run_flower(self, settings: Settings, argv: list[str]) -> int:
        """Run Flower (a ``celery`` sub-command) with ``argv``; returns its exit code."""
        ...


def runtime(ctx: typer.Context) -> Runtime:
    """The runtime the entry point passed in.

    Raises:
        typer.Exit: the CLI was started without one (not through the ``patterns`` command).
    """
    found = ctx.obj
    if found is None:
        err.print("[red]this command needs the Celery runtime: run it as `patterns`.[/red]")
        raise typer.Exit(2)
    return found  # type: ignore[return-value]


def load_settings() -> Settings:
    """The process's settings, with the environment made safe for offline model loading."""
    settings = get_settings()
    # Models are never fetched from a hub at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # pgserver asks platformdirs for a runtime folder; without XDG_RUNTIME_DIR (containers, CI)
    # platformdirs warns on every command and falls back to /tmp, which is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    return settings


def configure_logging(json_logs: bool, level: str = "WARNING") -> None:
    """structlog to stderr: key-value for people, JSON for machines (see
    :func:`pipeline.logging.configure_logging`)."""
    from pipeline.logging import configure_logging as configure

    configure(json_logs=json_logs, level=level)


def start(*, json_logs: bool, level: str = "WARNING") -> Settings:
    """A command's first step: settings, then logging."""
    settings = load_settings()
    configure_logging(json_logs=json_logs, level=level)
    return settings


@contextmanager
def open_db(settings: Settings) -> Iterator[Database]:
    """The configured database (the embedded one without ``DATABASE_URL``), migrated, disposed
    at exit."""
    db = Database.connect(settings)
    try:
        yield db
    finally:
        db.dispose()
