"""The tasks' retry policy: a dropped database connection is a passing outage, retried.

Library code reaches Postgres through :meth:`pipeline.db.engine.Database.session`, which turns
SQLAlchemy's ``OperationalError``/``InterfaceError`` into ``DatabaseUnavailableError``; code that
uses the engine directly (an advisory-lock connection, a ``LISTEN``) meets the raw errors. The
task boundary retries both. Eager Celery app, no broker: no I/O.
"""

from __future__ import annotations

import pytest
from celery import Celery
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from pipeline.errors import DatabaseUnavailableError, PermanentError
from workers.app import RETRY_POLICY


def _dropped(kind: type[Exception]) -> Exception:
    """An error as SQLAlchemy raises it when Postgres went away mid-statement."""
    orig = Exception("server closed the connection unexpectedly")
    return kind("SELECT 1", {}, orig)


def _app() -> Celery:
    """An eager app: a retry runs again at once, in this process (propagating the task's error
    would stop at the first retry; ``get()`` raises the final one instead)."""
    app = Celery("retries", set_as_current=False)
    app.conf.update(task_always_eager=True, task_eager_propagates=False, broker_url="memory://")
    return app


@pytest.mark.parametrize(
    "error",
    [
        _dropped(OperationalError),
        _dropped(InterfaceError),
        DatabaseUnavailableError("database unavailable: connection refused"),
    ],
    ids=["OperationalError", "InterfaceError", "DatabaseUnavailableError"],
)
def test_a_lost_database_connection_is_retried(error: Exception) -> None:
    calls: list[int] = []
    app = _app()

    @app.task(name="test.flaky", **RETRY_POLICY)
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise error
        return "done"

    assert flaky.apply().get() == "done"
    assert len(calls) == 3


@pytest.mark.parametrize(
    "error",
    [IntegrityError("INSERT ...", {}, Exception("duplicate key")), PermanentError("bad input")],
    ids=["IntegrityError", "PermanentError"],
)
def test_other_failures_are_not_retried(error: Exception) -> None:
    calls: list[int] = []
    app = _app()

    @app.task(name="test.broken", **RETRY_POLICY)
    def broken() -> None:
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        broken.apply().get()
    assert len(calls) == 1


def test_retrying_stops_after_max_retries() -> None:
    calls: list[int] = []
    app = _app()

    @app.task(name="test.down", **RETRY_POLICY)
    def down() -> None:
        calls.append(1)
        raise _dropped(OperationalError)

    with pytest.raises(OperationalError):
        down.apply().get()
    assert len(calls) == 1 + int(RETRY_POLICY["max_retries"])  # type: ignore[call-overload]
